"""The optimizer the authors train with, and what stands in for it where it cannot run.

The authors' code (HUST-SLOW/SeaS ``models/seas.py`` for the generator, ``models/seas_mask.py`` for the RMP) trains
with bitsandbytes' 8-bit AdamW; it needs CUDA. ``generator.optimizer`` and ``rmp.optimizer`` choose between it
(``adamw8bit``) and torch's AdamW (``adamw``). Asked for ``adamw8bit`` where it cannot run (the CPU, or CUDA
without bitsandbytes), torch's AdamW trains instead, with a warning; what was used goes into the stage's
checkpoint and run record, and ``seas.run.labels.setting_deviations`` names it in the tables' ``protocol`` column.
"""
from __future__ import annotations

import logging

import torch

from seas.run.errors import SeasError

__all__ = ["ADAMW8BIT_NEEDS", "OPTIMIZERS", "optimizer_class"]

log = logging.getLogger(__name__)

#: 8-bit AdamW needs these; elsewhere torch's AdamW stands in (logged, recorded, named in the tables' protocol)
ADAMW8BIT_NEEDS = "CUDA and bitsandbytes"
OPTIMIZERS = ("adamw8bit", "adamw")


def optimizer_class(kind: str, device, key: str = "generator.optimizer") -> tuple[type, str]:
    """(optimizer class, what is used) for the config value ``kind`` of ``key``: ``adamw8bit`` -> bitsandbytes'
    AdamW8bit on CUDA (the authors' setting), else torch's AdamW with a warning saying why (on the CPU, or without
    bitsandbytes); ``adamw`` -> torch's AdamW. The second element ("adamw8bit" | "adamw") is what the stage
    records."""
    if kind == "adamw":
        return torch.optim.AdamW, "adamw"
    if kind != "adamw8bit":
        raise SeasError(f"{key}: unknown optimizer {kind!r} ({', '.join(OPTIMIZERS)})")
    dev = getattr(device, "type", str(device))
    if dev != "cuda":
        log.warning("%s: adamw8bit (the authors' 8-bit AdamW) needs %s; on %s torch.optim.AdamW "
                    "(32-bit states) is used instead: the tables' protocol column says so", key, ADAMW8BIT_NEEDS, dev)
        return torch.optim.AdamW, "adamw"
    try:
        import bitsandbytes as bnb
    except ImportError:
        log.warning("%s: adamw8bit (the authors' 8-bit AdamW) needs %s, but bitsandbytes is not "
                    "installed (pip install bitsandbytes); torch.optim.AdamW (32-bit states) is used instead: the "
                    "tables' protocol column says so", key, ADAMW8BIT_NEEDS)
        return torch.optim.AdamW, "adamw"
    log.info("%s: bitsandbytes AdamW8bit (the authors' setting)", key)
    return bnb.optim.AdamW8bit, "adamw8bit"
