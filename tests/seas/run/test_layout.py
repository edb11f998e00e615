"""seas.run.layout: stage folders keyed by the config values each stage reads, and seas.run.studies: variant configs."""
from __future__ import annotations

import copy

import pytest
import yaml

from seas.run.config import ConfigError, validate_config
from seas.run.layout import Layout, job_file, pattern, seg_scopes
from seas.run.stages import RESULT_FREE, stage_keys, stage_values
from seas.run.studies import FIXED_KEYS, load_studies, shipped_study_files, variant_config, variant_configs
from helpers import set_dotted

BASE = {"dataset": {"name": "demo", "root": "data"}, "model": {"pretrained": "sd", "tiny": True},
        "downstream": {"models": ["lfd", "bisenetv2"], "methods": ["seas", "cutpaste", "real"]}}


def _cfg(**dotted):
    raw = copy.deepcopy(BASE)
    for k, v in dotted.items():
        set_dotted(raw, k, v)
    return validate_config(raw, source="<test>")


def _keys(lay: Layout) -> dict:
    return {"split": lay.key("split"), "generator": lay.key("train_generator"), "rmp": lay.key("train_rmp"),
            "generation": lay.key("generate"), "cutpaste": lay.key("baselines", method="cutpaste"),
            "gm_seas": lay.key("gen_metrics", method="seas"), "gm_cutpaste": lay.key("gen_metrics", method="cutpaste"),
            "seg_lfd_seas": lay.key("train_seg", model="lfd", method="seas"), "seg_lfd_cutpaste": lay.key("train_seg", model="lfd", method="cutpaste"),
            "seg_bisenetv2_seas": lay.key("train_seg", model="bisenetv2", method="seas"), "eval_lfd_seas": lay.key("evaluate", model="lfd", method="seas")}


def _changed(a, b) -> set:
    ka, kb = _keys(Layout("r", a)), _keys(Layout("r", b))
    return {k for k in ka if ka[k] != kb[k]}


SEAS_CHAIN = {"generation", "gm_seas", "seg_lfd_seas", "seg_bisenetv2_seas", "eval_lfd_seas"}


@pytest.mark.parametrize("dotted, value, expected", [
    # a change reaches its stage and everything reading from it, nothing else
    ("generation.mask_threshold", 0.4, SEAS_CHAIN),
    ("rmp.mrm", False, {"rmp"} | SEAS_CHAIN),
    ("rmp.bn_train_mode_at_inference", True, SEAS_CHAIN),  # read by generation, not by the RMP's training
    ("generator.na_loss", False, {"generator", "rmp"} | SEAS_CHAIN),
    ("split.shots", 2, {"split", "generator", "rmp", "cutpaste", "gm_cutpaste", "seg_lfd_cutpaste"} | SEAS_CHAIN),
    ("downstream.train.lfd", {"iterations": 7}, {"seg_lfd_seas", "seg_lfd_cutpaste", "eval_lfd_seas"}),
    ("downstream.iou_threshold", 0.3, {"eval_lfd_seas"}),
    ("downstream.num_baseline_images_per_type", 5, {"cutpaste", "gm_cutpaste", "seg_lfd_cutpaste"}),
    ("gen_metrics.kid_subsets", 10, {"gm_seas", "gm_cutpaste"}),
    # leaves that change how a stage runs, not what it computes: no new folder (a rerun resumes)
    ("generator.checkpoint_every", 7, set()),
    ("rmp.log_every", 3, set()),
    ("downstream.train.lfd", {"num_workers": 0, "checkpoint_every": 3}, set()),
    # keys no stage folder depends on
    ("downstream.models", ["lfd"], set()),
    ("resources.gpus_per_job", 2, set()),
    ("resources.threads_per_job", 1, set()),
])
def test_a_change_moves_exactly_the_stages_that_read_it(dotted, value, expected):
    assert _changed(_cfg(), _cfg(**{dotted: value})) == expected


def test_keys_are_stable_values_not_identities():
    a, b = _cfg(), _cfg()
    assert _keys(Layout("r", a)) == _keys(Layout("elsewhere", b))  # not the run dir, not the object
    assert len(Layout("r", a).key("train_generator")) == 10
    values = stage_values(a, "train_generator")
    assert set(values) == set(stage_keys("train_generator"))  # every declared key, each once
    assert values["generator"]["steps_per_type"] == a["generator"]["steps_per_type"]
    assert "checkpoint_every" not in values["generator"] and "log_every" not in values["generator"]
    assert set(stage_values(a, "train_seg", model="lfd")) == set(stage_keys("train_seg", model="lfd"))
    assert "num_workers" not in stage_values(a, "train_seg", model="lfd")["downstream.train.lfd"]
    assert RESULT_FREE == {"checkpoint_every", "log_every", "num_workers"}


def test_paths_and_patterns_agree():
    lay = Layout("R", _cfg())
    pat = pattern("R")
    k = lay.key("train_generator")
    assert lay.generator("washer", "all") == f"R/generator/{k}/washer/all"
    assert pat.generator("{product}", "{group}") == "R/generator/{k}/{product}/{group}"
    assert lay.generation_manifest("w", "hole") == f"R/methods/seas/{lay.key('generate')}/w/hole/manifest.csv"
    assert pat.generation_manifest("{product}", "{atype}") == "R/methods/seas/{k}/{product}/{atype}/manifest.csv"
    # an external folder is read through its import (seas.data.import_pairs), keyed by its spec and the import's keys
    ext = "external:/data/x/pairs"
    k_imp = lay.key("import_pairs", method=ext)
    assert lay.pairs_root(ext) == f"R/methods/external-pairs/{k_imp}" and lay.pairs_key(ext) == k_imp
    assert lay.pairs_dir(ext, "w") == f"R/methods/external-pairs/{k_imp}/w"
    assert lay.key("import_pairs", method=ext + "?mask_threshold=0.3") != k_imp  # the options key the import
    assert lay.key("import_pairs", method="external:/data/y/pairs") != k_imp
    assert lay.scores("lfd", "seas") == f"R/evaluation/lfd/seas/{lay.key('evaluate', model='lfd', method='seas')}/all/scores.csv"
    assert pat.seg_dir("{model}", "{method}", "{scope}") == "R/segmentation/{model}/{method}/{k}/{scope}"
    assert job_file("R", "benchmarks", "train_seg") == "R/benchmarks/train_seg/{model}/{method}/{k}/{scope}.tsv"
    assert job_file("", "logs", "generate", k="ab", product="p q", atype="t") == "logs/generate/ab/p q/t.log"
    assert Layout("", _cfg()).split("w") == f"split/{lay.key('split')}/w.json"
    assert seg_scopes(_cfg(), ["a", "b"]) == ["all"]
    assert seg_scopes(_cfg(**{"downstream.protocol": "per_product"}), ["a", "b"]) == ["product-a", "product-b"]


# ----------------------------------------------------------------------------- studies
def _base_twins(cfg, base):
    """cfg with the base run's generation.reference_images (the twins are extra files, the pairs are the same)."""
    return {**cfg, "generation": {**cfg["generation"], "reference_images": base["generation"]["reference_images"]}}


def test_shipped_studies_validate_and_differ_from_the_base_run():
    base = _cfg()
    studies = load_studies(base)
    assert set(studies) == set(shipped_study_files()) and len(studies) >= 13
    for name, study in studies.items():
        cfgs = variant_configs(base, study)
        assert study.paper_table.startswith("Tab. ") and study.title, name
        # every variant is a distinct configuration of the stages (else two rows would be one experiment) ...
        keys = [tuple(sorted(_keys(Layout("r", c)).items())) for c in cfgs.values()]
        distinct = {(c["downstream"]["protocol"],) + tuple(ks) for ks, c in zip(keys, cfgs.values())}
        assert len(distinct) == len(cfgs), f"{name}: two variants compute the same thing"
        # ... and exactly one of them is the method as published (the run's own configuration)
        # (generation.reference_images adds the normal-prompt twins beside the same pairs: Tab. 33's DRAEM targets)
        same_as_base = [v for v, c in cfgs.items() if Layout("r", c).key("train_generator") == Layout("r", base).key("train_generator")
                        and Layout("r", _base_twins(c, base)).key("generate") == Layout("r", base).key("generate")
                        and c["downstream"]["protocol"] == base["downstream"]["protocol"]]
        assert len(same_as_base) == 1, f"{name}: variants equal to SeaS's own settings: {same_as_base}"


def test_variant_config_merges_overrides_and_sets_the_study_models():
    base = _cfg(**{"generation.guidance_scale": 3.0})
    raw = {"models": ["lfd"], "variants": {"a": {"generation": {"mask_threshold": 0.4}}, "b": {}}}
    study = load_studies({"studies": {"mine": raw}})["mine"]
    a = variant_config(base, study, "a")
    assert a["generation"]["mask_threshold"] == 0.4 and a["generation"]["guidance_scale"] == 3.0  # merged, not replaced
    assert a["downstream"]["models"] == ["lfd"] and a["downstream"]["methods"] == ["seas"] and a["studies"] == {}
    assert variant_config(base, study, "b")["generation"] == base["generation"]


@pytest.mark.parametrize("raw, match", [
    ({"variants": {"x": {"dataset": {"root": "elsewhere"}}}}, r"studies.bad: variants.x: may not override dataset"),
    ({"variants": {"x": {"run_name": "other"}}}, r"may not override run_name"),
    ({"variants": {}}, r"studies.bad: invalid study\n  variants: \{\} should be non-empty"),
    ({"variants": {"x": {}}, "models": ["resnet"]}, r"models.0: 'resnet' is not one of"),
    ({"variant": {"x": {}}}, r"'variants' is a required property"),
])
def test_bad_studies_name_the_study_and_key(raw, match):
    with pytest.raises(ConfigError, match=match):
        load_studies({"studies": {"bad": raw}})
    assert set(FIXED_KEYS) >= {"dataset", "model", "run_name", "results_dir"}


def test_a_variant_with_an_invalid_value_names_the_variant():
    study = load_studies({"studies": {"s": {"variants": {"tau=2": {"generation": {"mask_threshold": 2}}}}}})["s"]
    with pytest.raises(ConfigError, match=r"studies.s: variant 'tau=2': invalid configuration\n  "
                                          r"generation.mask_threshold: 2 is greater than or equal to"):
        variant_config(_cfg(), study, "tau=2")


def test_inline_study_may_not_shadow_a_shipped_one(tmp_path):
    (tmp_path / "x.yaml").write_text(yaml.safe_dump({"variants": {"a": {}}}))
    with pytest.raises(ConfigError, match=r"studies.x: a shipped study has that name"):
        load_studies({"studies": {"x": {"variants": {"a": {}}}}}, folder=tmp_path)
    (tmp_path / "y.yaml").write_text("variants: [")
    with pytest.raises(ConfigError, match=r"y.yaml: not valid YAML"):
        load_studies({}, folder=tmp_path)
