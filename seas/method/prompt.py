"""The Unbalanced Abnormal (UA) text prompt: learnable tokens, prompt strings, token positions.

One product gets N' normal tokens (``<ob>``, or ``<ob1>…`` when N' > 1) and N anomaly tokens per anomaly type
(type g, 0-based in sorted order, uses ``<df{N·g+1}>…<df{N·g+N}>``). Prompts::

    a <ob> with <df1> <df2> <df3> <df4>      (anomaly type 0)
    a <ob>                                    (normal images)

The ``typical`` ablation adds no tokens and uses ``a photo of a <product> with defect`` / ``a photo of a
<product>``; its "df" positions are the word ``defect`` and its "ob" positions the product words.

A :class:`TokenMap` is saved with the generator checkpoint (``tokens.json``) and never re-derived.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from seas.run.errors import CheckpointError, ConfigError
# Lazy imports: torch is imported inside the functions that use it (heavy; the token bookkeeping is pure Python).

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

__all__ = ["TokenMap", "register_tokens", "find_positions", "tokenize", "encode_prompts", "token_embedding_rows",
           "set_token_embedding_rows"]

PROMPT_MODES = ("ua", "typical")


@dataclass
class TokenMap:
    product: str
    anomaly_types: list[str]
    mode: str = "ua"
    ob_tokens: list[str] = field(default_factory=list)
    df_tokens: dict[str, list[str]] = field(default_factory=dict)
    ob_init_word: str = "object"
    df_init_word: str = "defect"
    product_words: str = ""
    token_ids: dict[str, int] = field(default_factory=dict)  # filled by register_tokens, checked on load

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, product: str, anomaly_types: Sequence[str], *, num_ob: int = 1, num_df: int = 4,
              mode: str = "ua", ob_init_word: str = "object", df_init_word: str = "defect") -> "TokenMap":
        if mode not in PROMPT_MODES:
            raise ConfigError(f"generator.prompt: unknown prompt mode {mode!r} ({', '.join(PROMPT_MODES)})")
        if not anomaly_types:
            raise ConfigError(f"product {product!r}: no anomaly types to build prompts for")
        if len(set(anomaly_types)) != len(anomaly_types):
            raise ConfigError(f"product {product!r}: duplicate anomaly types {list(anomaly_types)}")
        if num_ob < 1 or num_df < 1:
            raise ConfigError("generator.num_ob_tokens / num_df_tokens must be >= 1")
        types = list(anomaly_types)
        ob: list[str] = []
        df: dict[str, list[str]] = {t: [] for t in types}
        if mode == "ua":
            ob = ["<ob>"] if num_ob == 1 else [f"<ob{i + 1}>" for i in range(num_ob)]
            df = {t: [f"<df{num_df * g + i + 1}>" for i in range(num_df)] for g, t in enumerate(types)}
        return cls(product=product, anomaly_types=types, mode=mode, ob_tokens=ob, df_tokens=df,
                   ob_init_word=ob_init_word, df_init_word=df_init_word,
                   product_words=product.replace("_", " ").strip())

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], product: str, anomaly_types: Sequence[str]) -> "TokenMap":
        g = cfg["generator"]
        return cls.build(product, anomaly_types, num_ob=g["num_ob_tokens"], num_df=g["num_df_tokens"],
                         mode=g["prompt"], ob_init_word=g["ob_init_word"], df_init_word=g["df_init_word"])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TokenMap":
        try:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except TypeError as e:
            raise CheckpointError(f"token map: {e}") from e

    # ------------------------------------------------------------------ prompts
    @property
    def new_tokens(self) -> list[str]:
        """Tokens to add to the tokenizer, in registration order (``<ob>``s, then ``<df>``s by type)."""
        return list(self.ob_tokens) + [tok for t in self.anomaly_types for tok in self.df_tokens[t]]

    def _check_type(self, anomaly_type: str) -> None:
        if anomaly_type not in self.df_tokens:
            raise ConfigError(f"product {self.product!r} has no anomaly type {anomaly_type!r} "
                              f"(known: {', '.join(self.anomaly_types)})")

    def prompt(self, anomaly_type: str) -> str:
        self._check_type(anomaly_type)
        if self.mode == "typical":
            return f"a photo of a {self.product_words} with defect"
        return f"a {' '.join(self.ob_tokens)} with {' '.join(self.df_tokens[anomaly_type])}"

    def normal_prompt(self) -> str:
        if self.mode == "typical":
            return f"a photo of a {self.product_words}"
        return f"a {' '.join(self.ob_tokens)}"

    def df_pieces(self, anomaly_type: str) -> list[str]:
        self._check_type(anomaly_type)
        return ["defect"] if self.mode == "typical" else list(self.df_tokens[anomaly_type])

    def ob_pieces(self) -> list[str]:
        return [self.product_words] if self.mode == "typical" else list(self.ob_tokens)

    def positions(self, tokenizer, anomaly_type: str) -> tuple[list[int], list[int]]:
        """(df positions, ob positions) in the tokenized prompt of ``anomaly_type`` (start token = position 0)."""
        prompt = self.prompt(anomaly_type)
        df = [p for piece in self.df_pieces(anomaly_type) for p in find_positions(tokenizer, prompt, piece)]
        ob = [p for piece in self.ob_pieces() for p in find_positions(tokenizer, prompt, piece)]
        return df, ob


# ----------------------------------------------------------------------------- tokenizer / text encoder
def tokenize(tokenizer, prompts: Sequence[str]):
    """Input ids ``[B, 77]`` (padded to the tokenizer's max length, truncated)."""
    return tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def find_positions(tokenizer, prompt: str, piece: str) -> list[int]:
    """Positions of ``piece``'s token(s) in the tokenized ``prompt`` (first occurrence of the id sequence)."""
    ids = tokenize(tokenizer, [prompt])[0].tolist()
    sub = tokenizer(piece, add_special_tokens=False).input_ids
    if not sub:
        raise ValueError(f"{piece!r} tokenizes to nothing")
    for i in range(len(ids) - len(sub) + 1):
        if ids[i : i + len(sub)] == sub:
            return list(range(i, i + len(sub)))
    raise ValueError(f"{piece!r} (ids {sub}) does not occur in the tokenized prompt {prompt!r} (ids {ids[:16]}…); "
                     "was the token registered in this tokenizer, and is the prompt within 77 tokens?")


def _resize(text_encoder, n: int) -> None:
    try:  # transformers >= 4.46 initialises new rows from the embedding statistics unless told not to
        text_encoder.resize_token_embeddings(n, mean_resizing=False)
    except TypeError:  # pragma: no cover - older transformers
        text_encoder.resize_token_embeddings(n)


def register_tokens(token_map: TokenMap, tokenizer, text_encoder, initialize: bool = True) -> dict[str, int]:
    """Add ``token_map``'s new tokens to the tokenizer and the text encoder's embedding matrix.

    With ``initialize`` each ``<ob>`` row starts as the embedding of ``ob_init_word`` and each ``<df>`` row as that
    of ``df_init_word`` (mean over its pieces if a word splits into several tokens). Returns and records
    ``token_map.token_ids``. When ``token_map.token_ids`` is already set (a loaded checkpoint), the ids must match.
    """
    import torch

    new = token_map.new_tokens
    if not new:
        token_map.token_ids = {}
        return {}
    vocab = tokenizer.get_vocab()
    clash = [t for t in new if t in vocab]
    if clash:
        raise CheckpointError(f"tokens {clash} are already in the tokenizer (registered twice?)")
    added = tokenizer.add_tokens(new)
    if added != len(new):
        raise CheckpointError(f"the tokenizer added {added} of the {len(new)} tokens {new}")
    ids = {t: int(tokenizer.convert_tokens_to_ids(t)) for t in new}
    if token_map.token_ids and token_map.token_ids != ids:
        raise CheckpointError(f"token ids {ids} differ from the recorded {token_map.token_ids}: "
                              "the base tokenizer is not the one the generator was trained with")
    _resize(text_encoder, len(tokenizer))
    if initialize:
        emb = text_encoder.get_input_embeddings().weight
        with torch.no_grad():
            for word, toks in ((token_map.ob_init_word, token_map.ob_tokens),
                               (token_map.df_init_word, [t for ty in token_map.anomaly_types for t in token_map.df_tokens[ty]])):
                src = tokenizer(word, add_special_tokens=False).input_ids
                if not src:
                    raise ConfigError(f"initialisation word {word!r} tokenizes to nothing")
                if len(src) > 1:
                    log.warning("initialisation word %r is %d tokens; using the mean of their embeddings", word, len(src))
                row = emb[src].mean(dim=0)
                for t in toks:
                    emb[ids[t]] = row
    token_map.token_ids = ids
    return ids


def token_embedding_rows(token_map: TokenMap, text_encoder) -> dict[str, "torch.Tensor"]:
    """{token string: embedding row (cloned)} of the learned tokens."""
    emb = text_encoder.get_input_embeddings().weight
    return {t: emb[i].detach().clone() for t, i in token_map.token_ids.items()}


def set_token_embedding_rows(token_map: TokenMap, text_encoder, rows: Mapping[str, "torch.Tensor"]) -> None:
    import torch

    emb = text_encoder.get_input_embeddings().weight
    missing = [t for t in token_map.token_ids if t not in rows]
    if missing:
        raise CheckpointError(f"learned embeddings lack tokens {missing}")
    with torch.no_grad():
        for t, i in token_map.token_ids.items():
            r = rows[t]
            if r.shape != emb[i].shape:
                raise CheckpointError(f"embedding of {t} has shape {tuple(r.shape)}, the text encoder wants "
                                      f"{tuple(emb[i].shape)}: a different base model?")
            emb[i] = r.to(emb.device, emb.dtype)


def encode_prompts(tokenizer, text_encoder, prompts: Sequence[str], device=None):
    """Text-encoder hidden states ``[B, 77, D]`` of ``prompts`` (the U-Net's ``encoder_hidden_states``)."""
    ids = tokenize(tokenizer, prompts).to(device or text_encoder.device)
    return text_encoder(ids)[0]
