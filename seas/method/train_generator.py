"""Fine-tune the SeaS generator of one product (Separation and Sharing fine-tuning).

    python -m seas.method.train_generator --config config.yaml --split results/demo/split/weave.json --out results/demo/generator/weave

One U-Net per product, all its anomaly types. Each optimizer step sees ``gradient_accumulation`` batches of
``batch_abnormal`` anomaly images (any type, with masks) + ``batch_normal`` normal images, augmented
(rotation by k·90°, flip; ``augmentation`` in the config); their latents are sampled from VAE posteriors encoded
once per image and augmentation (seas.method.latents), and each distinct prompt is encoded once per step. Loss = ε-MSE on the abnormal images with their type's
prompt + NA loss (ε-MSE on the normal images with ``a <ob>``) + DA loss on the cross-attention probabilities of the
down-path layers at ``generator.da_resolutions``. Trains the whole U-Net (``lr_unet``) and only the new token
embeddings of the text encoder (``lr_embeddings``; every other text-encoder weight is restored bit-exactly after
each step), AdamW (``generator.optimizer``: bitsandbytes' 8-bit AdamW on CUDA as the authors, else torch's AdamW,
logged), constant learning rate. Autocast per ``model.mixed_precision`` (the authors: fp32; auto = bf16 on CUDA),
fp32 on CPU.

Resumable (seas.run.resume: one policy for every stage): the training state (U-Net, embeddings, optimizer, step, RNG
states, log) is saved every ``generator.checkpoint_every`` steps in ``<out>.work/``; re-running the same command
continues from it; a state of other settings is refused (``--restart`` starts over). The
finished generator is written atomically to ``<out>/`` (see seas.method.checkpoint) and the work folder removed.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from seas.run.errors import DataError, SeasError
from seas.method.losses import da_loss, eps_mse, na_loss
from seas.method.prompt import TokenMap, register_tokens, tokenize
from seas.run.resume import StaleStateError, add_resume_arguments, check_fingerprint, discard, work_dir
from seas.method.attention import AttentionStore, install_capture, restore_default_processors
from seas.method.checkpoint import save_generator, TOKENS_JSON
from seas.run.config import add_config_arguments, config_from_args
from seas.data.augment import augmentation_for
from seas.data.integrity import check_split_files
from seas.data.split import Split
from seas.method.training_data import TrainData, draw_keys, load_train_data
from seas.method.latents import sample_posterior, training_set_cache
from seas.run.runtime import (RUN_RECORD, atomic_dir, autocast_dtype, cli, derive_seed, get_device, run_record, seed_everything, setup_logging)
from seas.models.sd import load_sd
from seas.method.optim import optimizer_class
from seas.run.stages import STAGES, fingerprint
# Lazy imports: safetensors is imported where a state is loaded or saved (heavy optional import).

log = logging.getLogger(__name__)

#: the config keys this stage reads: declared once, in the stage registry (seas.run.stages)
CONFIG_KEYS = STAGES["train_generator"].config_keys

__all__ = ["TrainData", "Batch", "load_train_data", "sample_batch", "forward_backward", "FrozenRows",
           "setup_training", "GeneratorTrainer", "train_generator", "main"]

LOG_COLUMNS = ["step", "loss", "l_sd", "l_na", "da_term1", "da_term2", "seconds"]
# generator keys that may change between an interrupted run and its resumption


# ----------------------------------------------------------------------------- data
@dataclass
class Batch:
    latent_mean: torch.Tensor  # [Ba + Bn, C, h, w] VAE posterior means, abnormal images first (seas.method.latents)
    latent_std: torch.Tensor   # [Ba + Bn, C, h, w] VAE posterior standard deviations
    masks: torch.Tensor       # [Ba, 1, H, W]
    input_ids: torch.Tensor   # [Ba + Bn, 77]
    df_pos: torch.Tensor      # [Ba, N]
    ob_pos: torch.Tensor      # [Ba, N']
    n_abnormal: int
    types: list[str]

    def to(self, device) -> "Batch":
        return Batch(self.latent_mean.to(device), self.latent_std.to(device), self.masks.to(device),
                     self.input_ids.to(device), self.df_pos.to(device), self.ob_pos.to(device), self.n_abnormal,
                     self.types)


def latent_cache(data: TrainData, vae, device, amp_dtype=None):
    """The :class:`seas.method.latents.LatentCache` of the training images (keys ("a", i) / ("n", i))."""
    return training_set_cache(vae, [img for img, _, _ in data.anomalies], data.normals, device, amp_dtype)


class _PromptCache:
    def __init__(self, token_map: TokenMap, tokenizer) -> None:
        self.token_map, self.tokenizer = token_map, tokenizer
        self._ids: dict[str | None, torch.Tensor] = {}
        self._pos: dict[str, tuple[list[int], list[int]]] = {}

    def ids(self, typ: str | None) -> torch.Tensor:
        if typ not in self._ids:
            prompt = self.token_map.normal_prompt() if typ is None else self.token_map.prompt(typ)
            self._ids[typ] = tokenize(self.tokenizer, [prompt])[0]
        return self._ids[typ]

    def positions(self, typ: str) -> tuple[list[int], list[int]]:
        if typ not in self._pos:
            self._pos[typ] = self.token_map.positions(self.tokenizer, typ)
        return self._pos[typ]


def sample_batch(data: TrainData, prompts: _PromptCache, gen: torch.Generator, n_abnormal: int, n_normal: int,
                 rotate90: bool = True, flip: bool = True, *, latents) -> Batch:
    """Draw a batch: images, augmentations (``gen``), and their VAE posteriors from ``latents`` (a LatentCache of
    ``data``, see :func:`latent_cache`; the posteriors are encoded there once per image and augmentation)."""
    try:
        keys, masks, types = draw_keys(data, n_abnormal, n_normal, gen, rotate90, flip)
    except DataError as e:
        raise DataError(f"generator: {e}") from None
    ids = [prompts.ids(typ) for typ in types] + [prompts.ids(None)] * (len(keys) - len(types))
    positions = [prompts.positions(typ) for typ in types]
    dfp, obp = [d for d, _ in positions], [o for _, o in positions]
    mean, std = latents.dist(keys)
    h, w = data.anomalies[0][1].shape[-2:]
    mask_t = torch.stack(masks).contiguous() if masks else torch.zeros(0, 1, h, w)
    # no anomalies (a sequential training_order's normal phase): empty positions, the DA loss is skipped
    pos = (torch.tensor(dfp, dtype=torch.long), torch.tensor(obp, dtype=torch.long)) if masks else \
        (torch.zeros(0, 1, dtype=torch.long), torch.zeros(0, 1, dtype=torch.long))
    return Batch(mean, std, mask_t, torch.stack(ids), *pos, len(masks), types)


# ----------------------------------------------------------------------------- one step
def _autocast(device: torch.device, amp_dtype):
    return torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)


def encode_prompt_ids(text_encoder, input_ids: torch.Tensor, grad: bool, cache: dict | None = None) -> torch.Tensor:
    """Text-encoder outputs ``[B, 77, D]`` of ``input_ids``, each distinct prompt encoded once (the rows of a batch
    are independent in CLIP's text encoder). Without ``grad`` (no trainable token in the prompts) the outputs are
    also kept in ``cache`` across steps."""
    uniq, inverse = torch.unique(input_ids, dim=0, return_inverse=True)
    if grad:
        return text_encoder(uniq)[0][inverse]
    with torch.no_grad():
        if cache is None:
            return text_encoder(uniq)[0][inverse]
        rows = [tuple(r.tolist()) for r in uniq]
        missing = [i for i, r in enumerate(rows) if r not in cache]
        if missing:
            out = text_encoder(uniq[missing])[0]
            cache.update({rows[i]: out[j] for j, i in enumerate(missing)})
        return torch.stack([cache[r] for r in rows])[inverse]


def forward_backward(unet, vae, text_encoder, noise_scheduler, batch: Batch, gcfg: Mapping[str, Any], store,
                     noise_gen: torch.Generator, *, amp_dtype=None, loss_scale: float = 1.0,
                     text_grad: bool = True, backward: bool = True, text_cache: dict | None = None) -> dict[str, float]:
    """Forward the batch, compute L_SD + L_NA + L_DA, backpropagate ``loss * loss_scale``; returns the loss terms.

    ``backward=False`` evaluates the losses only (no graph, no gradients). The latents are sampled from the batch's
    cached VAE posteriors with ``noise_gen`` (then the noise and the timesteps, in that order).

    The abnormal and normal images share one U-Net call; either half may be empty (the sequential
    ``generator.training_order`` ablations).
    """
    device = batch.latent_mean.device
    ba, b = batch.n_abnormal, batch.latent_mean.shape[0]
    use_da = bool(gcfg["da_loss"]) and store is not None and ba > 0
    latents = sample_posterior(batch.latent_mean, batch.latent_std, noise_gen) * vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=noise_gen, device=device, dtype=latents.dtype)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (b,), generator=noise_gen, device=device)
    noisy = noise_scheduler.add_noise(latents, noise, t)
    pred_type = noise_scheduler.config.prediction_type
    if pred_type == "epsilon":
        target = noise
    elif pred_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, t)
    else:
        raise SeasError(f"noise scheduler prediction_type {pred_type!r} is not supported (epsilon, v_prediction)")
    latent_hw = tuple(latents.shape[-2:])
    zero = torch.zeros((), device=device)
    terms = {"l_sd": zero, "l_na": zero, "da_term1": zero, "da_term2": zero}
    try:
        with torch.set_grad_enabled(backward and torch.is_grad_enabled()):
            ehs = encode_prompt_ids(text_encoder, batch.input_ids, text_grad and torch.is_grad_enabled(),
                                    text_cache)
            if store is not None:
                store.begin(ba if use_da else 0, latent_hw)
            with _autocast(device, amp_dtype):
                pred = unet(noisy, t, encoder_hidden_states=ehs).sample.float()
            loss = torch.zeros((), device=device)
            if ba:
                terms["l_sd"] = eps_mse(pred[:ba], target[:ba])
                loss = loss + terms["l_sd"]
            if use_da:
                maps = store.maps()
                store.freeze()  # gradient-checkpoint re-runs must not record again
                res = da_loss(maps, batch.df_pos, batch.ob_pos, batch.masks, base_size=latent_hw[-1],
                              normalize=gcfg["da_normalize"], ob_region=gcfg["da_ob_region"],
                              ob_term=gcfg["da_ob_term"])
                terms["da_term1"], terms["da_term2"] = res.term1, res.term2
                loss = loss + res.term1 + res.term2
            if b > ba:
                terms["l_na"] = na_loss(pred[ba:], target[ba:])
                loss = loss + terms["l_na"]
        if not torch.isfinite(loss):
            raise SeasError(f"non-finite generator loss ({ {k: float(v) for k, v in terms.items()} })")
        if backward:
            (loss * loss_scale).backward()
    finally:
        if store is not None:
            store.end()
    out = {k: float(v.detach()) for k, v in terms.items()}
    out["loss"] = out["l_sd"] + out["l_na"] + out["da_term1"] + out["da_term2"]
    return out


# ----------------------------------------------------------------------------- trainable parameters
class FrozenRows:
    """Holds every embedding row except ``trainable_ids`` at its value at construction (restored bit-exactly).

    AdamW's decoupled weight decay and the gradients of ordinary words in the prompts would otherwise move them.
    """

    def __init__(self, weight: torch.nn.Parameter, trainable_ids: Sequence[int]) -> None:
        self.weight = weight
        self.keep = torch.ones(weight.shape[0], dtype=torch.bool, device=weight.device)
        self.keep[list(trainable_ids)] = False
        self.values = weight.detach()[self.keep].clone()

    def restore(self) -> None:
        with torch.no_grad():
            self.weight[self.keep] = self.values


def setup_training(unet, vae, text_encoder, new_token_ids: Sequence[int], g: Mapping[str, Any], device="cpu"):
    """Freeze/unfreeze per SeaS and build the optimizer (``generator.optimizer``, :func:`optimizer_class` on
    ``device``): -> (optimizer, FrozenRows | None); ``optimizer.seas_kind`` is what is used.

    The whole U-Net trains at ``lr_unet``; the token-embedding matrix joins at ``lr_embeddings`` when there are new
    tokens (only their rows may change: restore the others with ``FrozenRows.restore()`` after every step) or when
    ``train_full_embedding`` is on (the authors' quirk: every row trains). VAE and the rest of the text encoder
    are frozen.
    """
    vae.requires_grad_(False).eval()
    text_encoder.requires_grad_(False).eval()
    unet.requires_grad_(True).train()
    if g["gradient_checkpointing"]:
        unet.enable_gradient_checkpointing()
    emb = text_encoder.get_input_embeddings().weight
    full = bool(g["train_full_embedding"])
    frozen = None
    groups = [{"params": [p for p in unet.parameters() if p.requires_grad], "lr": g["lr_unet"]}]
    if full or new_token_ids:
        emb.requires_grad_(True)
        if not full:
            frozen = FrozenRows(emb, new_token_ids)
        groups.append({"params": [emb], "lr": g["lr_embeddings"]})
    cls, kind = optimizer_class(g["optimizer"], device)
    opt = cls(groups, betas=(g["adam_beta1"], g["adam_beta2"]), weight_decay=g["adam_weight_decay"],
              eps=g["adam_epsilon"])
    opt.seas_kind = kind
    return opt, frozen


# ----------------------------------------------------------------------------- trainer
class GeneratorTrainer:
    """Holds models, optimizer and RNGs of one product's generator training; resumable."""

    def __init__(self, cfg: Mapping[str, Any], split, out_dir, *, device=None, restart: bool = False) -> None:
        self.cfg, self.split, self.out_dir = cfg, split, Path(out_dir)
        self.work_dir = work_dir(self.out_dir)
        if restart:
            discard(self.work_dir)
        self.g = g = cfg["generator"]
        self.device = torch.device(device) if device is not None else get_device(cfg)
        self.amp_dtype = autocast_dtype(cfg, self.device)
        self.product = split.product
        self.order = g["training_order"]
        self.phase_steps = int(g["steps_per_type"]) * len(split.anomaly_types)
        self.total_steps = self.phase_steps * (1 if self.order == "mixed" else 2)
        self.n_abnormal = int(g["batch_abnormal"])
        self.n_normal = int(g["batch_normal"]) if g["na_loss"] else 0
        self.rotate90, self.flip = augmentation_for(cfg, self.product)

        m = cfg["model"]
        sd = load_sd(m["pretrained"], m["revision"], device=self.device, dtype=torch.float32)
        self.sd = sd
        self.tokenizer, self.text_encoder, self.vae, self.unet = sd.tokenizer, sd.text_encoder, sd.vae, sd.unet
        self.noise_scheduler = sd.noise_scheduler
        self.token_map = TokenMap.from_config(cfg, self.product, split.anomaly_types)
        register_tokens(self.token_map, self.tokenizer, self.text_encoder, initialize=True)
        self.prompts = _PromptCache(self.token_map, self.tokenizer)

        self.embedding = self.text_encoder.get_input_embeddings()
        self.train_full = bool(g["train_full_embedding"])
        self.new_ids = sorted(self.token_map.token_ids.values())
        self.optimizer, self.frozen_rows = setup_training(self.unet, self.vae, self.text_encoder, self.new_ids, g,
                                                          self.device)
        self.train_text = len(self.optimizer.param_groups) > 1

        self.store = None
        if g["da_loss"]:
            self.store = AttentionStore()
            self.captured_layers = install_capture(self.unet, self.store, g["da_resolutions"], mode=g["da_map"])
        else:
            restore_default_processors(self.unet)
            self.captured_layers = []

        seed = int(cfg["seed"])
        self.data_gen = torch.Generator().manual_seed(derive_seed(seed, "generator-data", self.product) % 2**63)
        self.noise_gen = torch.Generator(device=self.device).manual_seed(
            derive_seed(seed, "generator-noise", self.product) % 2**63)
        self.step = 0
        self.log_rows: list[dict] = []
        self.data: TrainData | None = None
        self._latents, self._latents_of = None, None
        self.text_cache: dict = {}  # text-encoder outputs of prompts without trainable tokens (typical prompt)

    # -------------------------------------------------------------- helpers
    def fingerprint(self) -> dict:
        """The stage's declared config keys (seas.run.stages; generator.steps_per_type may change: a longer run
        continues a shorter one) + what it trains on."""
        return fingerprint(self.cfg, "train_generator", product=self.product,
                           anomaly_types=list(self.split.anomaly_types), train_anomalies=self.split.train_anomalies,
                           train_normals=list(self.split.train_normals), augmentation=[self.rotate90, self.flip],
                           tokens=self.token_map.token_ids, optimizer=self.optimizer.seas_kind)

    def restore_frozen_rows(self) -> None:
        if self.frozen_rows is not None:
            self.frozen_rows.restore()

    def embedding_tensors(self) -> dict[str, torch.Tensor]:
        w = self.embedding.weight.detach()
        if self.train_full:
            return {"full": w}
        return {f"id{i}": w[i] for i in self.new_ids}

    def log_csv(self) -> str:
        buf = io.StringIO()
        wr = csv.DictWriter(buf, fieldnames=LOG_COLUMNS)
        wr.writeheader()
        for row in self.log_rows:
            wr.writerow({k: row.get(k, "") for k in LOG_COLUMNS})
        return buf.getvalue()

    # -------------------------------------------------------------- resumable state
    def save_state(self) -> Path:
        from safetensors.torch import save_file

        with atomic_dir(self.work_dir / "state") as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in self.unet.state_dict().items()},
                      str(tmp / "unet.safetensors"))
            save_file({k: v.contiguous().cpu() for k, v in self.embedding_tensors().items()},
                      str(tmp / "embeddings.safetensors"))
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            rng = {"data": self.data_gen.get_state(), "noise": self.noise_gen.get_state(),
                   "torch": torch.get_rng_state()}
            if self.device.type == "cuda":
                rng["cuda"] = torch.cuda.get_rng_state(self.device)
            torch.save(rng, tmp / "rng.pt")
            (tmp / "train_log.csv").write_text(self.log_csv())
            (tmp / "state.json").write_text(json.dumps({"step": self.step, "total_steps": self.total_steps,
                                                        "fingerprint": self.fingerprint()}, indent=1))
        log.info("saved training state at step %d to %s", self.step, self.work_dir / "state")
        return self.work_dir / "state"

    def try_resume(self) -> bool:
        from safetensors.torch import load_file

        state = self.work_dir / "state"
        if not (state / "state.json").is_file():
            return False
        meta = json.loads((state / "state.json").read_text())
        check_fingerprint(state, meta.get("fingerprint"), self.fingerprint())
        try:
            self.unet.load_state_dict(load_file(str(state / "unet.safetensors"), device=str(self.device)))
            emb = load_file(str(state / "embeddings.safetensors"), device=str(self.device))
            with torch.no_grad():
                if self.train_full:
                    self.embedding.weight.copy_(emb["full"])
                else:
                    for i in self.new_ids:
                        self.embedding.weight[i] = emb[f"id{i}"]
            self.optimizer.load_state_dict(torch.load(state / "optimizer.pt", map_location=self.device,
                                                      weights_only=True))
            rng = torch.load(state / "rng.pt", weights_only=True)
        except (OSError, KeyError, RuntimeError, ValueError) as e:
            raise StaleStateError(f"cannot resume from {state}: {e}") from e
        self.data_gen.set_state(rng["data"])
        self.noise_gen.set_state(rng["noise"])
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        with open(state / "train_log.csv", newline="") as f:
            self.log_rows = [dict(r) for r in csv.DictReader(f)]
        self.step = int(meta["step"])
        log.info("resumed %s from step %d/%d (%s)", self.product, self.step, self.total_steps, state)
        return True

    # -------------------------------------------------------------- training
    def latents(self):
        """The LatentCache of ``self.data`` (built on first use; rebuilt if the data is replaced)."""
        if self._latents is None or self._latents_of is not self.data:
            self._latents, self._latents_of = latent_cache(self.data, self.vae, self.device, self.amp_dtype), self.data
        return self._latents

    def batch_sizes(self, step: int) -> tuple[int, int]:
        """(abnormal, normal) images of each batch of optimizer step ``step`` under ``generator.training_order``."""
        if self.order == "mixed":
            return self.n_abnormal, self.n_normal
        first = step < self.phase_steps
        abnormal_phase = first if self.order == "abnormal_first" else not first
        return (self.n_abnormal, 0) if abnormal_phase else (0, self.n_normal)

    def train_step(self) -> dict[str, float]:
        """One optimizer step (``gradient_accumulation`` batches). Returns the averaged loss terms."""
        accum = int(self.g["gradient_accumulation"])
        totals: dict[str, float] = {}
        n_ab, n_norm = self.batch_sizes(self.step)
        for _ in range(accum):
            batch = sample_batch(self.data, self.prompts, self.data_gen, n_ab, n_norm,
                                 self.rotate90, self.flip, latents=self.latents()).to(self.device)
            terms = forward_backward(self.unet, self.vae, self.text_encoder, self.noise_scheduler, batch, self.g,
                                     self.store, self.noise_gen, amp_dtype=self.amp_dtype, loss_scale=1.0 / accum,
                                     text_grad=self.train_text, text_cache=self.text_cache)
            for k, v in terms.items():
                totals[k] = totals.get(k, 0.0) + v / accum
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.restore_frozen_rows()
        self.step += 1
        return totals

    def run(self, stop_after: int | None = None, progress: bool = True) -> Path | None:
        """Train to the end (-> the checkpoint folder) or for at most ``stop_after`` more steps (-> None)."""
        self.try_resume()
        if self.data is None:
            m = self.cfg["model"]
            self.data = load_train_data(self.split, m["resolution"], self.cfg["dataset"]["image_policy"])
        log.info("generator %s: %d types, %d steps (x%d accumulation), batch %d+%d, prompts %r / %r, "
                 "device %s, autocast %s, DA layers %d", self.product, len(self.split.anomaly_types),
                 self.total_steps, self.g["gradient_accumulation"], self.n_abnormal, self.n_normal,
                 self.token_map.prompt(self.split.anomaly_types[0]), self.token_map.normal_prompt(),
                 self.device, self.amp_dtype, len(self.captured_layers))
        stop = self.total_steps if stop_after is None else min(self.total_steps, self.step + int(stop_after))
        every, log_every = int(self.g["checkpoint_every"]), int(self.g["log_every"])
        bar = tqdm(total=self.total_steps, initial=self.step, desc=f"generator {self.product}", disable=not progress,
                   dynamic_ncols=True)
        t0 = time.perf_counter() - (float(self.log_rows[-1]["seconds"]) if self.log_rows else 0.0)
        try:
            while self.step < stop:
                terms = self.train_step()
                bar.update(1)
                bar.set_postfix({k: f"{v:.4f}" for k, v in terms.items() if k != "loss"}, refresh=False)
                if self.step % log_every == 0 or self.step in (1, self.total_steps):
                    self.log_rows.append({"step": self.step, **{k: f"{v:.6g}" for k, v in terms.items()},
                                          "seconds": f"{time.perf_counter() - t0:.3f}"})
                if self.step % every == 0 and self.step < self.total_steps:
                    self.save_state()
        finally:
            bar.close()
        if self.step < self.total_steps:
            self.save_state()
            return None
        m = self.cfg["model"]
        out = save_generator(self.out_dir, self.unet, self.text_encoder, self.tokenizer, self.token_map,
                             m["pretrained"], revision=m["revision"], tiny=bool(self.sd.is_tiny or m["tiny"]),
                             train_full_embedding=self.train_full, train_log_csv=self.log_csv(),
                             extra={"steps": self.total_steps, "generator_config": dict(self.g),
                                    "optimizer": self.optimizer.seas_kind,
                                    "precision": {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.amp_dtype,
                                                                                                   "fp32"),
                                    "captured_layers": self.captured_layers, "resolution": m["resolution"]})
        shutil.rmtree(self.work_dir, ignore_errors=True)
        return out


def train_generator(cfg: Mapping[str, Any], split, out_dir, *, stop_after: int | None = None, device=None,
                    progress: bool = True, restart: bool = False) -> Path | None:
    """Train (or resume, seas.run.resume) the generator of ``split.product``; see :class:`GeneratorTrainer`.

    A complete checkpoint already at ``out_dir`` is kept (returned) unless ``restart``.
    """
    if not isinstance(split, Split):
        split = Split.load(split)
    if not restart and (Path(out_dir) / TOKENS_JSON).is_file():
        log.info("%s already holds a trained generator; keeping it (--restart to retrain)", out_dir)
        return Path(out_dir)
    return GeneratorTrainer(cfg, split, out_dir, device=device, restart=restart).run(stop_after=stop_after,
                                                                                      progress=progress)


# ----------------------------------------------------------------------------- CLI
@cli
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m seas.method.train_generator", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(ap)
    ap.add_argument("--split", required=True, help="split manifest of the product (split/<product>.json)")
    ap.add_argument("--out", required=True, help="output checkpoint folder (generator/<product>/all)")
    ap.add_argument("--anomaly-type", default=None, metavar="TYPE",
                    help="train on this anomaly type only (generator.scope: type, the 'w/o Mixed' ablation); "
                         "default: all types of the product")
    add_resume_arguments(ap, "steps")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    setup_logging(args.verbose)
    cfg = config_from_args(args)
    seed_everything(int(cfg["seed"]))
    split = Split.load(args.split)
    if args.anomaly_type is not None:
        split = split.restricted([args.anomaly_type])
    check_split_files(split, ("train",))  # before the first step: a damaged image is named, not met mid-training
    out = train_generator(cfg, split, args.out, stop_after=args.stop_after,
                          progress=not args.no_progress, restart=args.restart)
    if out is None:
        log.info("stopped before the end; re-run the same command to resume")
    if out is not None:  # what this stage cost (tables/cost.csv)
        tokens = json.loads((Path(out) / "tokens.json").read_text())
        run_record(Path(out) / RUN_RECORD, stage="generator", anomaly_types=split.anomaly_types,
                   steps=tokens.get("steps"), optimizer=tokens.get("optimizer"), precision=tokens.get("precision"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
