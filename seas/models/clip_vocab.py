"""CLIP's byte-level BPE vocabulary for the tiny model's tokenizer (the first 48,894 merges of CLIP's 16e6
vocabulary file, as SD v1-4's tokenizer uses them), written as a diffusers/transformers ``CLIPTokenizer`` folder.

The merges ship with this package (``clip_bpe_merges.txt.gz``: the header line and the first 48,894 merges of
``bpe_simple_vocab_16e6.txt.gz`` from OpenAI's CLIP, MIT licence, https://github.com/openai/CLIP), so the tiny
model is built by the SeaS rules' own environment (envs/seas.yaml) with nothing else installed; its content hash is
checked on every read.
"""
from __future__ import annotations

import gzip
import hashlib
import json
from functools import lru_cache
from pathlib import Path

from seas.run.errors import CheckpointError


BPE_MERGES = 49152 - 256 - 2  # CLIP's BPE uses the first 48,894 merges of the 16e6 vocabulary file


def _bytes_to_unicode() -> dict[int, str]:
    """The reversible byte -> printable-unicode table of GPT-2/CLIP byte-level BPE.

    Order matters (it fixes the token ids): printable bytes first, in byte order, then the others,
    mapped to code points 256, 257, … in byte order.
    """
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table = {b: chr(b) for b in keep}
    for extra, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + extra)
    return table


MERGES_FILE = Path(__file__).with_name("clip_bpe_merges.txt.gz")
#: sha256 of the uncompressed merges text
MERGES_SHA256 = "685491abbdad36159d094ecdc23bebc0dd53f8d1df35c4d74ef6036db2ba7572"


@lru_cache(maxsize=1)
def clip_bpe_file() -> Path:
    """CLIP's BPE merges, as shipped with this package (hash-checked)."""
    if not MERGES_FILE.is_file():
        raise CheckpointError(f"CLIP BPE merges not found at {MERGES_FILE} (part of the checkout: git checkout it)")
    text = gzip.open(MERGES_FILE, "rb").read()
    if hashlib.sha256(text).hexdigest() != MERGES_SHA256:
        raise CheckpointError(f"{MERGES_FILE}: content hash differs from CLIP's merges; restore it from git")
    return MERGES_FILE


def write_clip_tokenizer_files(out_dir: Path) -> tuple[Path, Path]:
    """vocab.json + merges.txt of the real CLIP tokenizer (49,408 tokens), built from the BPE merges."""
    lines = gzip.open(clip_bpe_file(), "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : BPE_MERGES + 1]]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408, len(vocab)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = out_dir / "vocab.json", out_dir / "merges.txt"
    vocab_file.write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    merges_file.write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    return vocab_file, merges_file


def make_clip_tokenizer(work_dir: Path):
    """The real CLIP tokenizer (49,408 tokens), its vocab/merges files written under ``work_dir``."""
    from transformers import CLIPTokenizer

    vocab, merges = write_clip_tokenizer_files(Path(work_dir))
    return CLIPTokenizer(str(vocab), str(merges), model_max_length=77, bos_token="<|startoftext|>",
                         eos_token="<|endoftext|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>")
