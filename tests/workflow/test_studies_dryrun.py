"""Every shipped study (config/studies/*.yaml) dry-runs on the paper preset with the expected sharing: jobs per rule
counted by hand from what each variant changes (a tau study trains one generator and one RMP per product and
generates once per tau; an RMP ablation shares the generators; a protocol change shares all generation).

Tree: 2 products, 5 anomaly types (a: x y z, b: w x); config/mvtec_ad.yaml pointed at it (3 segmentation models).
"""
from __future__ import annotations

import pytest
import yaml

from helpers import REPO, dry_run, job_counts, write_tree
from seas.run.studies import shipped_study_files

TREE = {"a": ["x", "y", "z"], "b": ["w", "x"]}
P, T = 2, 5  # products, anomaly types


def _seas(variants, generators, rmps, generations, seg_models, splits=1, scopes=1, gm=None):
    """Job counts of a study of seas-only variants: `generators` / `rmps` / `generations` distinct instances (each
    a job per product, or per type for a per-type generator), `seg_models` segmentation models (x scopes)."""
    return {"split": splits * P, "train_generator": generators, "train_rmp": rmps, "generate": generations * T,
            "gen_metrics": (gm if gm is not None else generations) * P, "train_seg": seg_models * scopes,
            "evaluate": seg_models * scopes, "study": 1}


EXPECTED = {
    # 4 generators per product + 1 per type (w/o Mixed); everything below them per variant
    "tab4_components": _seas(5, 4 * P + T, 4 * P + T, 5, 5),
    # one generator per product shared by all; an RMP per variant (cumulative: none, MRM, MRM+PM, MRM+PM+CMS)
    "tab5_rmp": _seas(4, P, 4 * P, 4, 4),
    "tab5_extra": None,  # RMP-only: w/o MRM, w/o PM, Ours
    # generation shared; 3 models for all products + 3 x 2 per-product models
    "tab19_segmentation_protocol": _seas(2, P, P, 1, 1, gm=1) | {"train_seg": 3 + 3 * P, "evaluate": 3 + 3 * P},
    "tab20_tokens": _seas(3, 3 * P, 3 * P, 3, 3),  # N'=1,N=1; Ours; N'=4,N=4
    "tab20_extra": _seas(4, 4 * P, 4 * P, 4, 4),
    "tab21_second_term": _seas(3, 3 * P, 3 * P, 3, 3),
    # the split moves: every stage per variant
    "tab22_shots": _seas(3, 3 * P, 3 * P, 3, 3, splits=3),
    "tab23_training_order": _seas(3, 3 * P, 3 * P, 3, 3),
    "tab24_da_layers": _seas(3, 3 * P, 3 * P, 3, 3),  # l = 1,2,3; l = 2,3,4 (A^4 = mid block); Ours
    "tab24_extra": _seas(5, 5 * P, 5 * P, 5, 5),
    "tab25_unet_features": None,  # filled below (RMP-only variants: 3)
    "tab25_extra": None,
    "tab26_vae_features": _seas(2, P, 2 * P, 2, 2),
    "tab27_normal_supervision": _seas(2, P, 2 * P, 2, 2),
    "tab28_mrm_variants": None,  # (a), (b), (c)
    "tab28_extra": None,
    # one generator and one RMP per product; generation, its metrics and a model per tau
    "tab29_tau": _seas(5, P, P, 5, 5),
    # issue 23: the run's generation + 3 segmenters, and one job per detector (patchcore, stfpm, draem: method none)
    "tab11_detectors": _seas(1, P, P, 1, 3) | {"train_detector": 3},
    "tab12_detectors": _seas(1, P, P, 1, 3) | {"train_detector": 3},
    # generation with the normal-prompt twins (reference_images), LFD on it, DRAEM (none) and DRAEM + SeaS pairs
    "tab33_draem_pairs": _seas(1, P, P, 1, 1) | {"train_detector": 2},
    # the same twin-generation + LFD, GLASS (none) and GLASS + SeaS pairs
    "tabR11_glass_pairs": _seas(1, P, P, 1, 1) | {"train_detector": 2},
}


def _rmp_only(study: str) -> dict:
    n = len(yaml.safe_load((REPO / "config" / "studies" / f"{study}.yaml").read_text())["variants"])
    return _seas(n, P, n * P, n, n)


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("studies")
    root = write_tree(tmp / "tree", TREE)
    cfg = yaml.safe_load((REPO / "config" / "mvtec_ad.yaml").read_text())
    cfg["dataset"]["root"] = str(root)
    cfg["results_dir"] = str(tmp / "results")
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_every_shipped_study_is_counted_here():
    assert set(shipped_study_files()) == set(EXPECTED)


@pytest.mark.parametrize("study", sorted(EXPECTED))
def test_study_dag_shares_the_stages_its_variants_do_not_change(config, study):
    expected = EXPECTED[study] or _rmp_only(study)
    res = dry_run(config, f"study_{study}")
    counts = job_counts(res.stdout)
    expected = {**{k: v for k, v in expected.items() if v}, f"study_{study}": 1}
    expected["total"] = sum(expected.values())
    assert counts == expected


def test_a_study_that_does_not_fit_the_config_says_why(config, tmp_path):
    """A shipped study is parsed with every run; one whose variants are invalid for this config is an error only
    when requested, naming the study, the variant and the key."""
    studies = tmp_path / "cfg.yaml"
    cfg = yaml.safe_load(config.read_text())
    cfg["generator"] = {**cfg.get("generator", {}), "na_loss": False}  # valid; the sequential orders need it
    studies.write_text(yaml.safe_dump(cfg))
    res = dry_run(studies, "study_tab23_training_order", check=False)
    assert res.returncode != 0
    assert "study tab23_training_order does not apply to this configuration" in res.stdout + res.stderr
    assert "generator.training_order" in res.stdout + res.stderr
