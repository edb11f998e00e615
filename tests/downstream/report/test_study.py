"""downstream.report.study: the rows of a study table (per_model, Tab. 19) and its printed precision (digits)."""
from __future__ import annotations

import pandas as pd

from downstream.report import study as study_mod
from downstream.report.tables import AVERAGE, write_tables
from seas.run.config import validate_config
from seas.run.labels import method_label
from seas.run.studies import load_studies, variant_config

MODELS = ["bisenetv2", "upernet", "lfd"]


def _fake_summary(cfg, loaded, models, methods, columns):
    """Per model x method, value = 10 x the model's position + 0.12345 (average: the mean of those)."""
    rows = [{"dataset": "demo", "generator_model": "g", "protocol": "p", "model": m, "method": method_label("seas"),
             **{c: 10.0 * i + 0.12345 for c in columns}} for i, m in enumerate(models)]
    rows.append({**rows[0], "model": AVERAGE, **{c: 10.0 * (len(models) - 1) / 2 + 0.12345 for c in columns}})
    return pd.DataFrame(rows)


def _rows(monkeypatch, raw_study):
    monkeypatch.setattr(study_mod, "_load_scores", lambda *a, **k: {})
    monkeypatch.setattr(study_mod, "summary_table", _fake_summary)
    base = validate_config({"dataset": {"name": "demo", "root": "data"}, "model": {"pretrained": "sd", "tiny": True},
                            "downstream": {"models": MODELS}, "gen_metrics": {"enabled": False}}, source="<test>")
    st = load_studies({"studies": {"s": raw_study}}, folder="/nonexistent")["s"]
    return st, pd.DataFrame(study_mod.variant_rows(st, "a", variant_config(base, st, "a"), "run"))


def test_per_model_rows_and_average(monkeypatch):
    st, df = _rows(monkeypatch, {"per_model": True, "variants": {"a": {}}})
    assert st.per_model and list(df.models) == MODELS + [AVERAGE]
    assert list(df.pixel_auroc) == [0.12345, 10.12345, 20.12345, 10.12345]
    _, one = _rows(monkeypatch, {"variants": {"a": {}}})
    assert list(one.models) == ["bisenetv2+upernet+lfd (mean)"] and list(one.pixel_auroc) == [10.12345]


def test_study_digits_round_the_written_table(tmp_path, monkeypatch):
    st, df = _rows(monkeypatch, {"digits": 3, "variants": {"a": {}}})
    assert st.digits == 3
    three = pd.read_csv(write_tables({"s.csv": df}, tmp_path / "3", digits=st.digits)[0])
    two = pd.read_csv(write_tables({"s.csv": df}, tmp_path / "2")[0])
    assert three.pixel_auroc.iloc[0] == 10.123 and two.pixel_auroc.iloc[0] == 10.12


def test_shipped_studies_print_as_the_paper():
    """Tab. 22 prints 3 decimals (its rows differ in the third), every other shipped study 2; Tab. 19 per model."""
    studies = load_studies({})
    assert {n: s.digits for n, s in studies.items() if s.digits != 2} == {"tab22_shots": 3}
    assert [n for n, s in studies.items() if s.per_model] == ["tab11_detectors", "tab12_detectors",
                                                             "tab19_segmentation_protocol"]
