"""The fine-tuned generator on disk: save what training changed, load it back on top of the base model.

Layout of ``generator/<product>/`` (written in one atomic rename)::

    unet/                        diffusers ``save_pretrained`` of the fine-tuned U-Net (safetensors)
    learned_embeds.safetensors   {token string: embedding row} of the added tokens
                                 (+ ``__full_token_embedding__`` when generator.train_full_embedding is on)
    tokens.json                  the TokenMap (type -> tokens, prompts' mode, token ids), the base model, flags
    train_log.csv                loss terms during training (optional)

:func:`load_generator` is the one loader for RMP training, generation and benchmarks: it loads the base model with
:func:`seas.models.sd.load_sd`, registers the recorded tokens (ids are checked), loads the embeddings and the U-Net.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from seas.run.errors import CheckpointError
from seas.data.integrity import check_checkpoint_dir
from seas.data.pairs import GOOD
from seas.method.prompt import (TokenMap, encode_prompts, register_tokens, set_token_embedding_rows, token_embedding_rows)
from seas.run.runtime import atomic_dir, save_safetensors_atomic
from seas.models.sd import load_sd
from seas.models.tiny_sd import read_marker
from seas.run.labels import tiny_label
# Lazy imports: torch / diffusers / safetensors are imported inside the functions that use them (heavy; loaded only to read or write a generator).

log = logging.getLogger(__name__)

__all__ = ["GeneratorBundle", "save_generator", "load_generator", "read_tokens_json", "FULL_EMBEDDING_KEY",
           "FORMAT_VERSION"]

FORMAT_VERSION = 1
FULL_EMBEDDING_KEY = "__full_token_embedding__"
TOKENS_JSON = "tokens.json"
EMBEDS_FILE = "learned_embeds.safetensors"


@dataclass
class GeneratorBundle:
    tokenizer: Any
    text_encoder: Any
    unet: Any
    vae: Any
    noise_scheduler: Any  # the base model's DDPMScheduler (training schedule)
    token_map: TokenMap
    base: dict  # {"pretrained", "resolved", "revision", "tiny", "label", ...} as recorded at training time

    @property
    def is_tiny(self) -> bool:
        return bool(self.base.get("tiny"))

    @property
    def label(self) -> str:
        if self.is_tiny:
            return tiny_label({"weights": self.base.get("tiny_weights", "random")})
        return str(self.base.get("pretrained"))

    def prompt(self, anomaly_type: str | None) -> str:
        """The prompt of an anomaly type, or the normal prompt for ``None``/``"good"``."""
        if anomaly_type in (None, GOOD):
            return self.token_map.normal_prompt()
        return self.token_map.prompt(anomaly_type)

    def encode(self, prompts):
        """Text-encoder hidden states ``[B, 77, D]`` for a list of prompt strings."""
        return encode_prompts(self.tokenizer, self.text_encoder, prompts)


def _base_info(base_source: str, revision: str | None, tiny: bool) -> dict:
    p = Path(str(base_source)).expanduser()
    info = {"pretrained": str(base_source), "resolved": str(p.resolve()) if p.is_dir() else None,
            "revision": revision, "tiny": bool(tiny)}
    if tiny:
        marker = (read_marker(p) or {}) if p.is_dir() else {}
        info["tiny_weights"] = marker.get("weights", "random")
        if marker.get("weights") == "pretrained":  # which prior was loaded (the report's front page says it)
            info["tiny_prior"], info["tiny_prior_sha256"] = marker.get("prior"), marker.get("prior_sha256")
    return info


def save_generator(out_dir, unet, text_encoder, tokenizer, token_map: TokenMap, base_source: str, *,
                   revision: str | None = None, tiny: bool = False, train_full_embedding: bool = False,
                   train_log_csv: str | None = None, extra: Mapping[str, Any] | None = None) -> Path:
    """Write the generator checkpoint to ``out_dir`` atomically (an existing one is replaced only on success)."""
    out_dir = Path(out_dir)
    if token_map.new_tokens and set(token_map.token_ids) != set(token_map.new_tokens):
        raise CheckpointError("save_generator: the token map's tokens were not registered (no token ids)")
    for t, i in token_map.token_ids.items():
        if tokenizer.convert_tokens_to_ids(t) != i:
            raise CheckpointError(f"save_generator: token {t} has id {tokenizer.convert_tokens_to_ids(t)} in the "
                                  f"tokenizer but {i} in the token map")
    tensors = token_embedding_rows(token_map, text_encoder)
    if train_full_embedding:
        tensors[FULL_EMBEDDING_KEY] = text_encoder.get_input_embeddings().weight.detach().clone()
    meta = {
        "format": FORMAT_VERSION,
        "token_map": token_map.to_dict(),
        "prompts": {**{t: token_map.prompt(t) for t in token_map.anomaly_types}, "good": token_map.normal_prompt()},
        "base": _base_info(base_source, revision, tiny),
        "train_full_embedding": bool(train_full_embedding),
        "tokenizer_size": len(tokenizer),
        **dict(extra or {}),
    }
    with atomic_dir(out_dir) as tmp:
        unet.save_pretrained(tmp / "unet", safe_serialization=True)
        save_safetensors_atomic({k: v.float() for k, v in tensors.items()}, tmp / EMBEDS_FILE,
                                metadata={"format": str(FORMAT_VERSION)})
        if train_log_csv is not None:
            (tmp / "train_log.csv").write_text(train_log_csv)
        (tmp / TOKENS_JSON).write_text(json.dumps(meta, indent=1))
    log.info("saved generator checkpoint to %s", out_dir)
    return out_dir


def read_tokens_json(ckpt_dir) -> dict:
    path = Path(ckpt_dir) / TOKENS_JSON
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found: {ckpt_dir} is not a (complete) generator checkpoint; "
                              "run `python -m seas.method.train_generator` first") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format')!r}, this code reads {FORMAT_VERSION}")
    for key in ("token_map", "base"):
        if key not in meta:
            raise CheckpointError(f"{path} lacks {key!r}")
    return meta


def _pick_base(meta: dict, override: str | None) -> str:
    if override is not None:
        return str(override)
    base = meta["base"]
    given = base["pretrained"]
    if Path(given).expanduser().is_dir() or not base.get("resolved"):
        return given
    if Path(base["resolved"]).is_dir():
        return base["resolved"]
    raise CheckpointError(f"the generator's base model {given!r} (resolved {base['resolved']!r} at training time) "
                          "is not there; pass base= to load_generator")


def load_generator(ckpt_dir, device="cpu", dtype=None, base: str | None = None) -> GeneratorBundle:
    """Load a generator checkpoint (frozen: eval mode, no gradients) onto ``device`` in ``dtype``.

    ``base`` overrides the recorded base model location (e.g. after moving the results folder).
    """
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    dtype = dtype or torch.float32
    ckpt_dir = Path(ckpt_dir)
    meta = read_tokens_json(ckpt_dir)
    for need in ("unet", EMBEDS_FILE):
        if not (ckpt_dir / need).exists():
            raise CheckpointError(f"{ckpt_dir / need} not found: incomplete generator checkpoint")
    check_checkpoint_dir(ckpt_dir)  # every weights file against its header, every JSON file parses
    src = _pick_base(meta, base)
    sd = load_sd(src, meta["base"].get("revision"), device="cpu", dtype=torch.float32)
    token_map = TokenMap.from_dict(meta["token_map"])
    register_tokens(token_map, sd.tokenizer, sd.text_encoder, initialize=False)
    if len(sd.tokenizer) != meta.get("tokenizer_size", len(sd.tokenizer)):
        raise CheckpointError(f"{ckpt_dir}: tokenizer has {len(sd.tokenizer)} tokens after registration, "
                              f"the checkpoint was trained with {meta['tokenizer_size']}")
    rows = load_file(str(ckpt_dir / EMBEDS_FILE))
    if meta.get("train_full_embedding"):
        full = rows.get(FULL_EMBEDDING_KEY)
        if full is None:
            raise CheckpointError(f"{ckpt_dir / EMBEDS_FILE} lacks {FULL_EMBEDDING_KEY}")
        emb = sd.text_encoder.get_input_embeddings().weight
        if full.shape != emb.shape:
            raise CheckpointError(f"{ckpt_dir / EMBEDS_FILE}: full embedding {tuple(full.shape)} vs text encoder "
                                  f"{tuple(emb.shape)}")
        with torch.no_grad():
            emb.copy_(full)
    else:
        set_token_embedding_rows(token_map, sd.text_encoder, rows)
    try:
        unet = UNet2DConditionModel.from_pretrained(ckpt_dir / "unet")
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot load the fine-tuned U-Net from {ckpt_dir / 'unet'}: {e}") from e
    del sd.unet
    for m in (unet, sd.text_encoder, sd.vae):
        m.to(device=device, dtype=dtype)
        m.eval()
        m.requires_grad_(False)
    info = dict(meta["base"], loaded_from=src)
    return GeneratorBundle(sd.tokenizer, sd.text_encoder, unet, sd.vae, sd.noise_scheduler, token_map, info)
