"""seas.run.stages: the stage registry is the one list (layout keys, cost jobs, GPU rules, fingerprints all follow
it), every resumable stage refuses to resume under a changed declared key, and the packages keep their floors."""
from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest

from downstream.report import cost
from helpers import REPO, set_dotted
from seas.run import stages as stages_mod
from seas.run.config import validate_config
from seas.run.layout import Layout
from seas.run.resume import StaleStateError, check_fingerprint
from seas.run.stages import RESULT_FREE, STAGES, Stage, fingerprint, gpu_rules, stage_values

BASE = {"dataset": {"name": "demo", "root": "data"}, "model": {"pretrained": "sd", "tiny": True},
        "downstream": {"models": ["lfd"], "methods": ["seas", "cutpaste"]}}


def _cfg(**dotted):
    raw = copy.deepcopy(BASE)
    for k, v in dotted.items():
        set_dotted(raw, k, v)
    return validate_config(raw, source="<test>")


# ----------------------------------------------------------------------------- the registry is the only list
def test_a_new_registry_entry_reaches_layout_cost_and_fingerprint(monkeypatch):
    extra = Stage("train_extra", "seas.method.train_extra", ("seed", "generation.guidance_scale"),
                  upstream=("split",), folder="extra", parts=("k", "product"), gpu=True, cost_stage="extra")
    monkeypatch.setitem(STAGES, "train_extra", extra)
    a, b = _cfg(), _cfg(**{"generation.guidance_scale": 9.0})
    la, lb = Layout("r", a), Layout("r", b)
    # layout: a keyed folder, listed among the run's stage folders, moved by its declared key
    assert ("train_extra", "", f"r/extra/{la.key('train_extra')}") in list(la.stage_folders())
    assert la.key("train_extra") != lb.key("train_extra")
    assert la.key("train_extra") != Layout("r", _cfg(**{"split.shots": 2})).key("train_extra")  # upstream split
    # cost: one job per product, counted as a GPU rule
    jobs = [j for j in cost.expected_jobs(a, {"weave": ["tear"], "washer": ["dent"]}) if j.rule == "train_extra"]
    assert sorted(j.keys["product"] for j in jobs) == ["washer", "weave"] and {j.stage for j in jobs} == {"extra"}
    assert jobs[0].benchmark == f"benchmarks/train_extra/{la.key('train_extra')}/{jobs[0].keys['product']}.tsv"
    assert "train_extra" in gpu_rules()
    # fingerprint: exactly its declared keys
    assert set(fingerprint(a, "train_extra")["config"]) == {"seed", "generation.guidance_scale"}
    assert fingerprint(a, "train_extra") != fingerprint(b, "train_extra")


def test_cost_jobs_match_a_real_dry_run(tmp_path):
    """cost.expected_jobs, per rule, against the jobs of a real ``snakemake -n`` of the MVTec preset on a synthetic
    tree (the reference is the DAG, not the function under test)."""
    import yaml

    from helpers import dry_run, job_counts, write_tree

    types = {"bottle": ["broken", "crack"], "cable": ["bent"]}
    root = write_tree(tmp_path / "data", types)
    raw = yaml.safe_load((REPO / "config" / "mvtec_ad.yaml").read_text())
    raw.update({"results_dir": str(tmp_path / "res"), "studies": {}})
    raw["dataset"].update({"root": str(root), "products": sorted(types)})
    raw["downstream"].update({"methods": ["seas", "cutpaste", "real"], "models": ["lfd", "bisenetv2"],
                              "detectors": ["draem", "draem_pairs"]})
    c = tmp_path / "c.yaml"
    c.write_text(yaml.safe_dump(raw))
    counts = job_counts(dry_run(c, cwd=tmp_path).stdout)
    jobs = cost.expected_jobs(validate_config(raw), types)
    per_rule = {}
    for j in jobs:
        per_rule[j.rule] = per_rule.get(j.rule, 0) + 1
    assert per_rule == {r: n for r, n in counts.items() if STAGES.get(r) and STAGES[r].cost_stage}
    assert set(per_rule) == {s.name for s in STAGES.values() if s.cost_stage}


# ----------------------------------------------------------------------------- fingerprints
def _leaves(value, prefix=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else k)
    else:
        yield prefix, value


def _perturbed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return value + value[:1] if value else [1]
    return "changed"


@pytest.mark.parametrize("name", ["train_generator", "train_rmp", "train_seg", "train_prior"])
def test_every_declared_key_of_a_resumable_stage_is_in_its_fingerprint(name):
    """Change each declared leaf in turn: the saved state is refused (resume_free / result-free leaves resume)."""
    cfg = _cfg()
    fields = {"model": "lfd"} if name == "train_seg" else {}
    saved = fingerprint(cfg, name, fields)
    s = STAGES[name]
    checked = 0
    for key in s.keys(**fields):
        top = stage_values(cfg, name, frozenset(), **fields)[key]
        for leaf, value in (_leaves(top, key) if isinstance(top, dict) else [(key, top)]):
            changed = copy.deepcopy(cfg)
            set_dotted(changed, leaf, _perturbed(value))
            now = fingerprint(changed, name, fields)
            free = leaf.rsplit(".", 1)[-1] in RESULT_FREE | s.resume_free
            if free:
                check_fingerprint("state", saved, now)  # resumes
            else:
                with pytest.raises(StaleStateError, match="refusing to mix"):
                    check_fingerprint("state", saved, now)
                checked += 1
    assert checked >= len(s.config_keys) - 2


def test_image_policy_is_in_the_generator_and_rmp_fingerprints():
    a, b = _cfg(), _cfg(**{"dataset.image_policy": "resize"})
    for name in ("train_generator", "train_rmp"):
        with pytest.raises(StaleStateError, match="dataset.image_policy"):
            check_fingerprint("state", fingerprint(a, name), fingerprint(b, name))


def test_interrupted_generator_refuses_another_image_policy(make_cfg, split_path, tmp_path):
    """The CLI-level case of the issue: seas.method.train_generator interrupted, rerun with another image policy."""
    from seas.data.split import Split
    from seas.method.train_generator import train_generator

    cfg = make_cfg({"generator.steps_per_type": 1, "generator.checkpoint_every": 1})
    split = Split.load(split_path("weave"))
    out = tmp_path / "g" / "weave"
    assert train_generator(cfg, split, out, stop_after=1, progress=False) is None
    other = copy.deepcopy(cfg)
    other["dataset"]["image_policy"] = "resize" if cfg["dataset"]["image_policy"] != "resize" else \
        "shorter_side_center_crop"
    with pytest.raises(StaleStateError, match="dataset.image_policy"):
        train_generator(other, split, out, progress=False)
    assert out.with_name("weave.work").is_dir()  # the interrupted state is kept


# ----------------------------------------------------------------------------- floors
#: bottom -> top; a package may import its own floor and those below it, never one above
FLOORS = ["seas.run", "seas.data", "seas.models", "seas.method", "downstream"]


def _floor(module: str) -> int | None:
    for i, f in enumerate(FLOORS):
        if module == f or module.startswith(f + "."):
            return i
    return None


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


def test_no_lower_floor_imports_a_higher_one():
    bad = []
    for pkg in ("seas", "downstream"):
        for path in (REPO / pkg).rglob("*.py"):
            mod = ".".join(path.relative_to(REPO).with_suffix("").parts)
            me = _floor(mod)
            if me is None:
                continue
            for imp in _imports(path):
                f = _floor(imp)
                if f is not None and f > me:
                    bad.append(f"{mod} imports {imp}")
    assert not bad, "\n".join(sorted(bad))
    # the workflow's parse-time helper reads only the run floor
    assert all(_floor(i) in (None, 0) for i in _imports(REPO / "workflow/scripts/wflib.py"))


def test_the_floor_check_sees_a_violation(tmp_path):
    """The check above can fail: a data module importing the method floor is caught."""
    p = tmp_path / "x.py"
    p.write_text("def f():\n    from seas.method.losses import eps_mse\n")
    assert any(_floor(i) == 3 for i in _imports(p)) and _floor("seas.data.images") == 1


def test_registry_modules_exist_and_upstreams_are_stages():
    for s in STAGES.values():
        assert (REPO / (s.module.replace(".", "/") + ".py")).is_file(), s.module
        assert all(u == "pairs" or u in STAGES for u in s.upstream), s.name
    assert stages_mod.COST_ORDER == ("generator", "rmp", "generation", "gen_metrics", "baselines", "segmentation",
                                     "evaluation", "detection")
