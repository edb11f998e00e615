"""Diffusion models: the SD loader, the tiny SD-shaped model, its pretrained prior, the CLIP vocabulary.
Floor 2: imports seas.run and seas.data."""
