"""Per-stage config keys: the stage registry (seas.run.stages) declares each stage's config keys (its folder key,
the rule's ``params: cfg``, its resume fingerprint); running each stage's CLI entry point on a config that records
its reads must read nothing outside that declaration."""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import yaml

import seas.run.config
from helpers import RecordingConfig, allowed
from seas.run.config import validate_config
from seas.run.stages import STAGES, stage_keys
from seas.run.layout import Layout

def _external_tree(root: Path) -> Path:
    """A peer's folder in the SeaS release layout (<product>/<type>/{image,mask}/000.png), for import_pairs."""
    import numpy as np
    from PIL import Image

    for sub in ("image", "mask"):
        (root / "weave" / "scratch" / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16), 255 if sub == "mask" else 90, np.uint8)).save(
            root / "weave" / "scratch" / sub / "000.png")
    return root


# (module, argv builder) in pipeline order; every stage writes into its folder of the run `w/run` (seas.run.layout), so
# that the tables and the study find them
def _argv(w, c, cfg):
    lay = Layout(w / "run", validate_config(cfg))
    s, gen, rmp = lay.split("weave"), lay.generator("weave", "all"), lay.rmp("weave", "all")
    cfg = ["--config", str(c)]
    return [
        ("seas.data.demo_data", [*cfg, "--out", str(w / "demo")]),
        ("seas.models.tiny_sd", [*cfg, "--out", str(w / "tiny")]),
        ("seas.data.split", [*cfg, "--product", "weave", "--out", s]),
        ("seas.models.train_prior", [*cfg, "--splits", s, "--out", lay.prior()]),
        ("seas.method.train_generator", [*cfg, "--split", s, "--anomaly-type", "scratch", "--out", gen, "--no-progress"]),
        ("seas.method.train_rmp", [*cfg, "--split", s, "--generator", gen, "--out", rmp]),
        ("seas.method.generate", [*cfg, "--split", s, "--generator", gen, "--rmp", rmp, "--type", "scratch",
                           "--out", str(Path(lay.generation_manifest("weave", "scratch")).parent)]),
        ("seas.data.import_pairs", [*cfg, "--method", f"external:{_external_tree(w / 'ext')}", "--product", "weave",
                                    "--out", str(w / "imported" / "weave")]),
        ("downstream.baselines", [*cfg, "--method", "cutpaste", "--split", s, "--out", lay.pairs_dir("cutpaste", "weave")]),
        ("downstream.gen_metrics", [*cfg, "--split", s, "--pairs", lay.pairs_dir("seas", "weave"), "--method", "seas",
                              "--out", lay.gen_metrics("seas", "weave")]),
        ("downstream.train_seg", [*cfg, "--model", "lfd", "--pairs-root", lay.pairs_root("seas"), "--splits", s,
                              "--out", lay.seg_dir("lfd", "seas")]),
        ("downstream.evaluate", [*cfg, "--model", "lfd", "--checkpoint", lay.seg_dir("lfd", "seas"),
                                 "--splits", s, "--out", lay.scores("lfd", "seas")]),
        ("downstream.train_detector", [*cfg, "--model", "draem", "--splits", s, "--out", lay.detector_dir("draem")]),
        ("downstream.report.tables", [*cfg, "--run-dir", str(w / "run"), "--out-dir", str(w / "tables")]),
        ("downstream.report.study", [*cfg, "--run-dir", str(w / "run"), "--study", "keys",
                              "--out", str(w / "tables" / "study_keys.csv")]),
        ("downstream.report.front_page", [*cfg, "--run-dir", str(w / "run"), "--tables-dir", str(w / "tables"),
                                          "--out", str(w / "report" / "front_page.html")]),
    ]


def _model(module: str) -> str:
    """The {model} of a stage's keys here: a detector for train_detector, else a segmenter."""
    return "draem" if module == "downstream.train_detector" else "lfd"


def test_every_stage_reads_only_its_declared_keys(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg({"dataset.products": ["weave"], "downstream.models": ["lfd"], "downstream.methods": ["seas"],
                    "generator.steps_per_type": 1, "generator.batch_abnormal": 1, "generator.batch_normal": 1,
                    "rmp": {"steps_per_type": 1, "batch_abnormal": 1, "batch_normal": 1, "gradient_accumulation": 1,
                            "reduce_channels": [16, 8], "num_heads": 1, "head_dim": 24, "norm_num_groups": 8,
                            "num_layers": 1},
                    "generation.num_images_per_type": 2, "generation.mask_steps": 1, "generation.num_inference_steps": 2,
                    "dataset.demo": {"image_size": 32, "num_train_good": 3, "num_test_good": 1, "num_per_type": 3},
                    "downstream.train.lfd": {"iterations": 2, "batch_size": 2, "num_workers": 0},
                    "model.prior": {"vae_steps": 1, "vae_batch": 1, "vae_crop": 16, "unet_steps": 1, "unet_batch": 1,
                                    "unet_crop_steps": 0, "warmup": 1},
                    "downstream.evaluation.num_workers": 0, "downstream.detectors": ["draem"],
                    "downstream.detector_train.draem": {"iterations": 1, "batch_size": 2},
                    "studies": {"keys": {"models": ["lfd"], "variants": {"base": {}}}}})
    c = tmp_path / "config.yaml"
    c.write_text(yaml.safe_dump(cfg))
    reads: set[str] = set()
    orig = seas.run.config.load_config
    monkeypatch.setattr(seas.run.config, "load_config", lambda *a, **k: RecordingConfig(orig(*a, **k), reads))
    stages = _argv(tmp_path / "w", c, cfg)
    # every stage that reads the config is run here (sample_grid reads none)
    assert sorted(m for m, _ in stages) == sorted(s.module for s in STAGES.values() if s.config_keys)
    failures = {}
    for module, argv in stages:
        reads.clear()
        mod = importlib.import_module(module)
        assert mod.main(argv) == 0, module
        declared = next(s for s in STAGES.values() if s.module == module).keys(model=_model(module))
        outside = sorted(r for r in reads if not allowed(r, declared))
        if outside:
            failures[module] = outside
    assert not failures, f"reads outside CONFIG_KEYS: {json.dumps(failures, indent=1)}"


@pytest.mark.parametrize("name", list(STAGES))
def test_one_name_per_stage_and_declared_keys_exist(name):
    """The stage, its rule and its CLI module carry one name (the module's file is named for the stage); the
    module's CONFIG_KEYS is the registry's; every declared key exists in the schema."""
    s = STAGES[name]
    assert s.module.rsplit(".", 1)[-1] == name
    mod = importlib.import_module(s.module)
    if s.config_keys:
        assert mod.CONFIG_KEYS == s.config_keys
    schema = seas.run.config.load_schema()
    for key in s.keys(model=_model(s.module)):
        node = schema
        for part in key.split("."):
            props = node.get("properties") or {}
            if "$ref" in node:
                node = schema["definitions"][node["$ref"].split("/")[-1]]
                props = node["properties"]
            assert part in props, f"{name}: {key} is not a schema key"
            node = props[part]


def test_rerun_triggers_of_the_review():
    """The two wrong hand-kept lists the review found: a generation-time RMP switch no longer retrains the RMP, and
    segmentation training is rerun when its autocast precision changes."""
    assert "rmp.bn_train_mode_at_inference" in stage_keys("generate")
    assert not allowed("rmp.bn_train_mode_at_inference", stage_keys("train_rmp"))
    assert "model.mixed_precision" in stage_keys("train_seg", model="lfd")
