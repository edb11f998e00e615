"""downstream.report.front_page: the report's front page says what the run loaded and did, from its records."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from test_tables import _cfg, fabricate  # noqa: E402 (pytest puts this folder on sys.path)

from downstream.report import front_page, tables
from seas.method.checkpoint import _base_info
from seas.models.tiny_sd import TINY_MARKER, _marker
from seas.run.labels import TINY_PRETRAINED_LABEL, TINY_RANDOM_LABEL
from seas.run.layout import Layout
from helpers import REPO

PRIOR = REPO / "priors" / "tiny_prior.safetensors"


def _model_folder(tmp_path: Path, prior) -> Path:
    """A tiny model folder's marker exactly as seas.models.tiny_sd writes it (the prior's hash checked)."""
    folder = tmp_path / ("tiny_pretrained" if prior else "tiny_random")
    folder.mkdir()
    (folder / TINY_MARKER).write_text(json.dumps(_marker(0, 64, prior)))
    return folder


def _run(tmp_path, base: dict, cfg=None):
    """A fabricated run (scores, gen metrics, splits with types) whose generator recorded ``base``."""
    cfg = cfg or _cfg(tmp_path)
    run = fabricate(tmp_path / "results" / "r", cfg)
    lay = Layout(run, cfg)
    for p in ("washer", "weave"):
        Path(lay.split(p)).write_text(json.dumps({"product": p, "anomaly_types": ["crack", "stain"],
                                                  "train_anomalies": {"crack": [{}], "stain": [{}, {}]},
                                                  "test": [{}] * 7}))
        g = Path(lay.generator(p, "all"))
        g.mkdir(parents=True)
        (g / "tokens.json").write_text(json.dumps({"format": 1, "base": base}))
    tables.write_tables(tables.build_tables(cfg, run), run / "tables")
    return cfg, run


@pytest.mark.parametrize("prior", [PRIOR, None], ids=["tiny_prior", "tiny_prior_null"])
def test_front_page_names_the_model_actually_loaded(tmp_path, prior):
    folder = _model_folder(tmp_path, prior)
    # the config says model.tiny: true either way; only the generator's record tells prior from random
    cfg, run = _run(tmp_path, _base_info(str(folder), None, True))
    facts = front_page.run_facts(cfg, run, run / "tables")
    page = front_page.render(facts)
    [model] = facts["models"]
    if prior is not None:
        sha = json.loads(PRIOR.with_suffix(".json").read_text())["sha256"]
        assert model["label"] == TINY_PRETRAINED_LABEL and sha in model["detail"] and sha in page
        assert "tiny_prior.safetensors" in page and TINY_RANDOM_LABEL not in page
    else:
        assert model["label"] == TINY_RANDOM_LABEL and TINY_RANDOM_LABEL in page
        assert TINY_PRETRAINED_LABEL not in page and "sha256" not in model["detail"]


def test_an_sd_checkpoint_and_the_rest_of_the_facts(tmp_path):
    cfg, run = _run(tmp_path, {"pretrained": "CompVis/stable-diffusion-v1-4", "resolved": None, "revision": "main",
                               "tiny": False})
    # a measured total in cost.csv
    cost = pd.read_csv(run / "tables" / "cost.csv")
    cost.loc[cost.stage == "total", ["seconds_total", "gpu_hours", "jobs", "measured_jobs"]] = [7200.0, 1.5, 9, 9]
    cost.to_csv(run / "tables" / "cost.csv", index=False)
    facts = front_page.run_facts(cfg, run, run / "tables")
    page = front_page.render(facts)
    assert facts["models"] == [{"label": "CompVis/stable-diffusion-v1-4",
                                "detail": "Stable Diffusion checkpoint CompVis/stable-diffusion-v1-4, revision main"}]
    assert facts["products"]["weave"] == {"types": ["crack", "stain"], "train": {"crack": 1, "stain": 2}, "test": 7}
    assert facts["protocols"] == ["seas-unified (split floor 1/3)"] and "seas-unified (split floor 1/3)" in page
    assert "lfd: random-init" in facts["backbones"]
    # seas used real Inception weights, cutpaste random ones: both are said
    assert facts["weights"]["Inception (IS, KID)"] == ("seas: weights pt_inception.pth; cutpaste: random network, no "
                                                      "number reported; external:anomalydiffusion: weights inc.pth")
    assert "2 h wall time (sum of the jobs), 1.5 GPU-hours; 9 of 9 jobs measured" in page
    for cat in ("Run", "Tables", "Plots", "Samples", "CSV"):
        assert f"<b>{cat}</b>" in page


def test_cli(tmp_path, capsys):
    folder = _model_folder(tmp_path, None)
    cfg, run = _run(tmp_path, _base_info(str(folder), None, True))
    c = tmp_path / "c.yaml"
    c.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "front.html"
    argv = ["--config", str(c), "--run-dir", str(run), "--tables-dir", str(run / "tables"), "--out", str(out)]
    assert front_page.main(argv) == 0 and TINY_RANDOM_LABEL in out.read_text()
    (Path(Layout(run, cfg).generator("weave", "all")) / "tokens.json").write_text("{")
    assert front_page.main(argv) == 2 and "tokens.json is not valid JSON" in capsys.readouterr().err


def test_the_report_front_text_shows_the_page_and_keys_on_nothing_stale(tmp_path):
    """workflow/report/workflow.rst rendered as Snakemake's report renders it (jinja2 with its `snakemake.config` and
    `files` records, then docutils): the front page's body appears in it; no sentence keys on model.tiny."""
    from types import SimpleNamespace

    import jinja2
    from docutils.core import publish_parts

    text = (REPO / "workflow" / "report" / "workflow.rst").read_text()
    assert 'model"]["tiny"' not in text and "plumbing check" not in text
    page = tmp_path / "front_page.html"
    page.write_text(front_page.render({**_minimal_facts(), "models": [{"label": TINY_PRETRAINED_LABEL, "detail": "d"}]}))
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    snakemake = SimpleNamespace(config={"run_name": "r", "dataset": {"name": "demo"}})
    links = "\n\n" + "\n".join(f".. _{c}: javascript:void(0)" for c in front_page.CATEGORIES) + "\n"
    for files, want in (([SimpleNamespace(target="front_page.html", path=page)], "What run r did"),
                        ([], "not written yet")):
        rst = env.from_string(text + links).render(snakemake=snakemake, files=files, categories={})
        html = publish_parts(rst, writer="html", settings_overrides={"report_level": 2})["html_body"]
        assert want in html and "System Message" not in html
        assert (TINY_PRETRAINED_LABEL in html) == bool(files)


def _minimal_facts() -> dict:
    return {"run_name": "r", "dataset": "demo", "dataset_root": "d", "products": {"p": {"types": ["t"], "train": {"t": 1},
            "test": 2}}, "methods": ["seas"], "seg_models": ["lfd"], "models": [], "generator_labels": [],
            "protocols": ["seas-unified (split floor 1/3)"], "backbones": [], "weights": {}, "total": None,
            "studies": [], "categories": dict(front_page.CATEGORIES)}
