"""Shared fixtures: a small demo dataset, the tiny SD model, and validated configs pointing at them.

Everything here is built once per test session (seconds) and is deterministic by seed.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from helpers import set_dotted

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n N: N workers share the cores; one thread each, as do their subprocesses
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


# small settings for every test; stages' own tests override what they need
TEST_RESOLUTION = 64
DEMO_KW = dict(seed=0, image_size=64, num_train_good=8, num_test_good=3, num_per_type=6)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A small demo dataset in MVTec layout: products weave (scratch, stain) and washer (hole, scratch), 64 px."""
    from seas.data.demo_data import generate_demo_dataset

    return Path(generate_demo_dataset(tmp_path_factory.mktemp("demo") / "data", **DEMO_KW))


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory) -> Path:
    """The tiny random Stable-Diffusion-shaped model (diffusers layout)."""
    from seas.models.tiny_sd import write_tiny_sd

    return Path(write_tiny_sd(tmp_path_factory.mktemp("models") / "tiny_sd", seed=0, sample_size=TEST_RESOLUTION))


@pytest.fixture(scope="session")
def tiny_sd(tiny_sd_dir):
    """The tiny model loaded (seas.models.sd.load_sd): tokenizer, text encoder, VAE, U-Net, scheduler."""
    from seas.models.sd import load_sd

    return load_sd(tiny_sd_dir)


@pytest.fixture(scope="session")
def generator_ckpt(tiny_sd_dir, tmp_path_factory):
    """A generator checkpoint of 'weave' (the untrained tiny model + its registered tokens): RMP and generation
    tests start from it."""
    from seas.method.checkpoint import save_generator
    from seas.method.prompt import TokenMap, register_tokens
    from seas.models.sd import load_sd

    sd = load_sd(tiny_sd_dir)
    tm = TokenMap.build("weave", ["scratch", "stain"])
    register_tokens(tm, sd.tokenizer, sd.text_encoder)
    return save_generator(tmp_path_factory.mktemp("gen") / "weave", sd.unet, sd.text_encoder, sd.tokenizer, tm,
                          str(tiny_sd_dir), tiny=True)


@pytest.fixture
def make_cfg(demo_root, tiny_sd_dir, tmp_path):
    """``make_cfg({"generator.steps_per_type": 2}, rmp__lr=1e-3)`` -> validated config dict (results in tmp_path)."""
    from seas.run.config import validate_config

    base = {
        "run_name": "test",
        "results_dir": str(tmp_path / "results"),
        "seed": 0,
        "device": "cpu",
        "dataset": {"name": "demo", "root": str(demo_root)},
        "split": {"shots": "1/3", "num_normal_images": 8},
        "model": {"pretrained": str(tiny_sd_dir), "tiny": True, "resolution": TEST_RESOLUTION},
        "generator": {"steps_per_type": 2, "checkpoint_every": 2, "log_every": 1},
        "rmp": {"steps_per_type": 2, "checkpoint_every": 2, "log_every": 1},
        "generation": {"num_images_per_type": 2, "batch_size": 2, "num_inference_steps": 3},
        "gen_metrics": {"image_size": 64},
        "downstream": {"image_size": 64, "num_baseline_images_per_type": 2,
                       "pretrained_backbones": {"resnet50": "random", "resnet18": "random"}},
    }

    def factory(overrides: dict | None = None, **kw) -> dict:
        raw = copy.deepcopy(base)
        for k, v in {**(overrides or {}), **{k.replace("__", "."): v for k, v in kw.items()}}.items():
            set_dotted(raw, k, v)
        return validate_config(raw, source="<test config>")

    return factory


@pytest.fixture
def write_cfg(make_cfg, tmp_path):
    """Like make_cfg, but writes the YAML file the CLIs take and returns (path, cfg)."""
    import yaml

    def factory(overrides: dict | None = None, **kw):
        cfg = make_cfg(overrides, **kw)
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path, cfg

    return factory


@pytest.fixture
def split_path(make_cfg, tmp_path):
    """``split_path("weave")`` -> path of that product's split manifest (written on first use)."""
    from seas.data.split import build_split

    cfg = make_cfg()

    def factory(product: str, **kw) -> Path:
        out = tmp_path / "split" / f"{product}.json"
        if not out.exists():
            build_split(cfg["dataset"]["root"], product, cfg["split"]["shots"], cfg["split"]["num_normal_images"], **kw).save(out)
        return out

    return factory
