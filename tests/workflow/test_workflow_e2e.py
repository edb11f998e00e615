"""The whole workflow end-to-end on the trimmed demo (config/test_e2e.yaml): 1 product, a few steps per stage,
2 segmentation models x 2 methods, 64 px, tiny random SD-shaped model. A few minutes on 2 CPU cores.

Also checks, on the same run directory: a run killed (SIGKILL) in the middle of a stage leaves that stage's output
untrusted (Snakemake's incomplete marker; the profile reruns it), a finished run has nothing left to do, a changed
generation parameter reruns exactly generation and what depends on it, and `snakemake --report` writes the report.
"""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from helpers import REPO, job_counts, snakemake_exe
from seas.run.config import validate_config
from seas.run.layout import Layout

SNAKEFILE = REPO / "workflow" / "Snakefile"

pytestmark = pytest.mark.slow


def _cmd(workdir: Path, *extra: str) -> list[str]:
    return [snakemake_exe(), "--snakefile", str(SNAKEFILE), "--directory", str(workdir),
            "--configfile", str(REPO / "config" / "test_e2e.yaml"), "--cores", "2", *extra]


def _env() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "SEAS_GPU_IDS": ""}  # never claim a GPU here, whatever the machine has
    env.pop("SLURM_JOB_ID", None)
    return env


def _run(workdir: Path, *extra: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    res = subprocess.run(_cmd(workdir, *extra), capture_output=True, text=True, env=_env(), timeout=timeout)
    if check and res.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in sorted(workdir.glob("results/e2e/e2e/logs/**/*.log")))
        raise AssertionError(f"snakemake {' '.join(extra)} failed ({res.returncode}):\n{res.stderr[-6000:]}\n{logs}")
    return res


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _kill_tree(pid: int) -> None:
    for p in reversed(_descendants(pid)):  # only processes this test started
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _layout(cfg: dict, workdir: Path) -> Layout:
    """The stage folders of a config run in workdir (results_dir relative, as in config/test_e2e.yaml)."""
    cfg = validate_config(cfg, source="<test>")
    return Layout(workdir / cfg["results_dir"] / cfg["run_name"], cfg)


def test_trimmed_demo_end_to_end(tmp_path):
    run = tmp_path / "results" / "e2e" / "e2e"  # <results_dir>/<run_name>
    lay = _layout(yaml.safe_load((REPO / "config" / "test_e2e.yaml").read_text()), tmp_path)
    gen_rel = Path(lay.generator("weave", "all")).relative_to(tmp_path)

    # 1. start the run and kill it hard (SIGKILL, like a crash or a lost node) while the generator trains
    proc = subprocess.Popen(_cmd(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    marker = run / "logs" / "train_generator" / lay.key("train_generator") / "weave" / "all.log"
    t0 = time.monotonic()
    while not marker.exists():
        assert proc.poll() is None, "the run ended before the generator started"
        assert time.monotonic() - t0 < 600, "the generator did not start within 10 minutes"
        time.sleep(0.05)
    time.sleep(0.5)
    _kill_tree(proc.pid)
    proc.wait(timeout=30)
    out = Path(lay.generator("weave", "all"))
    assert not (out / "unet").exists(), "the generator finished before it could be interrupted"
    # a half-written output under the final name (what a non-atomic writer would leave) must not be trusted
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokens.json").write_text("{")
    _run(tmp_path, "--unlock")
    res = _run(tmp_path, "-n", "--workflow-profile", "none", check=False)
    assert res.returncode != 0 and "incomplete" in (res.stdout + res.stderr).lower()
    assert str(gen_rel) in res.stdout + res.stderr
    res = _run(tmp_path, "-n")  # the workstation profile (rerun-incomplete) forces the killed job to run again
    assert job_counts(res.stdout)["train_generator"] == 1
    assert re.search(r"rule train_generator:\n(?:    .*\n)*?    reason: Forced execution", res.stdout)

    # 2. the whole run
    t0 = time.monotonic()
    _run(tmp_path)
    wall = time.monotonic() - t0
    print(f"trimmed demo run: {wall:.0f} s")
    assert (out / "tokens.json").read_text() != "{"

    tables = tmp_path / "results" / "e2e" / "e2e" / "tables"  # <results_dir>/<run_name>/tables
    base = ["generation.csv", "segmentation.csv", "detection.csv", "segmentation_per_product.csv",
            "detection_per_product.csv", "cost.csv", "cost_per_job.csv", "study_e2e_tau.csv"]
    from downstream.report.paper import COMPARED_TABLES

    companions = [f"{Path(n).stem}_vs_paper.csv" for n in base if n in COMPARED_TABLES or n.startswith("study_")]
    assert companions and sorted(p.name for p in tables.glob("*.csv")) == sorted(base + companions)
    seg = _read_csv(tables / "segmentation.csv")
    assert list(seg[0]) == ["dataset", "generator_model", "protocol", "model", "family", "parameters",
                            "backbone_init", "method", "pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_iou_best", "pixel_iou_pooled", "pixel_iou_fixed"]
    # the CPU run departs from the authors' settings in these (its fp32 comes from the run records: not named)
    assert {r["protocol"] for r in seg} == {
        "seas-unified (split floor 1/3; seg without real anomalies; generator accumulation 1; torch AdamW; RMP torch AdamW)"}
    assert sorted((r["model"], r["method"]) for r in seg) == sorted(
        (m, k) for m in ("lfd", "bisenetv2", "average") for k in ("seas", "cutpaste"))
    assert {r["generator_model"] for r in seg} == {"tiny-random (not SD v1-4)"} and {r["dataset"] for r in seg} == {"demo"}
    for r in seg:
        assert 0 <= float(r["pixel_auroc"]) <= 100
    det = _read_csv(tables / "detection.csv")
    assert len(det) == 6 and "image_auroc" in det[0]
    gen = _read_csv(tables / "generation.csv")
    assert sorted((r["method"], r["product"]) for r in gen) == sorted(
        (m, p) for m in ("seas", "cutpaste") for p in ("weave", "mean"))
    # no Inception / LPIPS weights configured: the metrics ran (plumbing) but the table prints no number
    assert {(r["is"], r["kid"], r["ic_lpips"]) for r in gen} == {
        ("n/a (no Inception weights)", "n/a (no Inception weights)", "n/a (no LPIPS weights)")}
    # the measured cost of this very run, from its benchmark files and run records
    cost = {(r["stage"], r["model"]): r for r in _read_csv(tables / "cost.csv")}
    assert {"generator", "rmp", "generation", "segmentation", "evaluation", "total"} <= {k[0] for k in cost}
    assert {r["source"] for r in cost.values()} == {"measured"}
    g = cost["generator", ""]
    assert float(g["seconds_per_type"]) > 0 and g["jobs"] == g["measured_jobs"] == "1" and int(g["steps"]) > 0
    assert g["machine"].startswith("cpu (") and g["peak_memory_kind"] == "max_rss"
    assert float(cost["generation", ""]["ms_per_image"]) > 0 and cost["generation", ""]["images"] == "8"
    assert float(cost["total", ""]["gpu_hours"]) > 0
    per = _read_csv(tables / "segmentation_per_product.csv")
    assert {r["product"] for r in per} == {"weave", "mean"}
    assert {"lfd/seas", "bisenetv2/cutpaste"} <= set(per[0])
    # the seas pairs exist for both anomaly types of weave, with their manifests
    for t in ("scratch", "stain"):
        rows = _read_csv(Path(lay.generation_manifest("weave", t)))
        assert len(rows) == 4
    assert (run / "report" / "samples" / "seas" / "weave.png").stat().st_size > 0
    # the study: a row per variant; its variants shared the run's generator and RMP (one folder each), the base
    # variant shared everything, tau=0.5 generated its own pairs and trained its own LFD
    study = _read_csv(tables / "study_e2e_tau.csv")
    assert [(r["variant"], r["method"], r["models"]) for r in study] == [("tau=0.2 (SeaS)", "seas", "lfd"),
                                                                          ("tau=0.5", "seas", "lfd")]
    assert {r["paper_table"] for r in study} == {"Tab. 29"} and study[1]["overrides"] == '{"generation": {"mask_threshold": 0.5}}'
    assert all(0 <= float(r["pixel_auroc"]) <= 100 for r in study)
    lfd_seas = next(r for r in seg if (r["model"], r["method"]) == ("lfd", "seas"))
    assert study[0]["pixel_ap"] == lfd_seas["pixel_ap"]  # the same folders as the run's own lfd/seas
    assert [p.name for p in (run / "generator").iterdir()] == [lay.key("train_generator")]
    assert [p.name for p in (run / "rmp").iterdir()] == [lay.key("train_rmp")]
    assert len(list((run / "methods" / "seas").iterdir())) == 2  # one per tau
    assert len(list((run / "segmentation" / "lfd" / "seas").iterdir())) == 2

    # 3. nothing left to do
    res = _run(tmp_path, "-n")
    assert "Nothing to be done" in res.stdout + res.stderr

    # 4. a changed generation parameter gives generation and what depends on it new folders, nothing upstream: the
    # run's 2 types + the tau=0.5 variant's 2 (it inherits the scale), their models (run: lfd + bisenetv2, study: lfd)
    res = _run(tmp_path, "-n", "--config", "generation={guidance_scale: 3.0}")
    counts = job_counts(res.stdout)
    assert counts == {"generate": 4, "gen_metrics": 2, "sample_grid": 1, "train_seg": 3, "evaluate": 3,
                      "tables": 1, "study": 1, "all": 1, "compare_grid": 1, "html_table": 1, "plots": 1,
                      "front_page": 1, "total": 20}, counts
    assert "reason: Missing output files" in res.stdout and "train_generator" not in counts
    # ... and switching back finds the old folders: nothing to do
    res = _run(tmp_path, "-n")
    assert "Nothing to be done" in res.stdout + res.stderr

    # 5. the HTML report
    _run(tmp_path, "--report", str(tmp_path / "report.html"), timeout=300)
    html = (tmp_path / "report.html").read_text(errors="replace")
    assert "segmentation.csv" in html and "weave.png" in html
    check_report_pages(html, tables, lay.cfg)
    # ... and as a browser shows it (the report is a script-rendered page): its menu names the categories
    import shutil

    from browser import BROWSERS, dump_dom  # tests/browser.py

    exe = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    assert exe or os.environ.get("SEAS_REQUIRE_BROWSER") != "1", "SEAS_REQUIRE_BROWSER=1 but no browser installed"
    if exe:
        dom = dump_dom(exe, (tmp_path / "report.html").as_uri(), tmp_path)
        text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style).*?</\1>", "", dom, flags=re.S)))
        assert all(c in text for c in ("Run", "Tables", "Plots", "Samples", "CSV")), text[:3000]
        # the first screen states what was run: the model the run loaded, its protocol (from segmentation.csv)
        assert "What run e2e did" in text and "tiny-random (not SD v1-4)" in text, text[:3000]
        assert next(iter(_read_csv(tables / "segmentation.csv")))["protocol"] in text


def check_report_pages(html: str, tables: Path, cfg: dict) -> None:
    """The report shows the numbers (issue 22): each table's page holds every number of its CSV as a table cell, each
    plot is an embedded PNG, the front page names the model the run loaded (tiny random here: config/test_e2e.yaml)."""
    from downstream.report.html_table import format_cell, read_table, table_digits
    from downstream.report.plot_specs import plot_names

    from seas.run.studies import load_studies

    study_digits = {f"study_{k}": s.digits for k, s in load_studies(cfg).items()}
    items = embedded_items(html)
    assert items, "no embedded result in the report"
    pages = {k: v for k, v in items.items() if k.endswith(".html")}
    for csv_path in sorted(tables.glob("*.csv")):
        page = pages.get(f"{csv_path.stem}.html")
        assert page is not None, f"{csv_path.name}: no table page in the report"
        cells = {m.strip() for m in re.findall(r"<td[^>]*>(.*?)</td>", page.decode(), flags=re.S)}
        df, digits = read_table(csv_path), table_digits(csv_path.name, study_digits)
        for col in df.columns:
            for v in df[col]:
                assert format_cell(v, digits) in cells, (csv_path.name, col, v)
    names = plot_names(p.stem for p in tables.glob("*.csv"))
    assert {"segmentation_methods", "segmentation_heatmap", "generation", "study_e2e_tau"} <= set(names)
    for name in names:
        png = items.get(f"{name}.png")
        assert png is not None and png.startswith(b"\x89PNG"), f"plot {name} is not an embedded PNG"
    assert items["weave.png"].startswith(b"\x89PNG")  # a sample grid / the compare grid (both named weave.png)
    assert "What run e2e did" in html  # the front text shows the front page's body (workflow/report/workflow.rst)
    front = pages["front_page.html"].decode()
    assert "tiny-random (not SD v1-4)" in front and "tiny-pretrained" not in front
    assert "scratch" in front and "stain" in front and "GPU-hours" in front


def embedded_items(html: str) -> dict[str, bytes]:
    """{file name: content} of every result embedded in a Snakemake HTML report (its base64 data URIs,
    ``data:<mime>;charset=<enc>;filename=<name>;base64,<data>``; of several with one name, the largest)."""
    import base64

    out: dict[str, bytes] = {}
    for m in re.finditer(r"data:[\w/+.-]+;charset=[^;\"]*;filename=([^;\"]+);base64,([A-Za-z0-9+/=]+)", html):
        data = base64.b64decode(m.group(2))
        if len(data) > len(out.get(m.group(1), b"")):
            out[m.group(1)] = data
    return out


# ----------------------------------------------------------------------------- users' own names (issue 14)
PRODUCT, TYPES = "métal nut", {"stain": "big stain", "scratch": "o'ring scratch"}


def _renamed_tree(demo: Path, dst: Path) -> Path:
    """The demo's `weave` as product `métal nut` with types `big stain` / `o'ring scratch` and files
    `kratzer ä 000.png` (masks `kratzer ä 000_mask.png`): spaces, non-ASCII letters and an apostrophe."""
    import shutil

    src = demo / "weave"
    shutil.copytree(src / "train", dst / PRODUCT / "train")
    shutil.copytree(src / "test" / "good", dst / PRODUCT / "test" / "good")
    for old, new in TYPES.items():
        for sub, suffix in (("test", ".png"), ("ground_truth", "_mask.png")):
            (dst / PRODUCT / sub / new).mkdir(parents=True)
            for f in sorted((src / sub / old).glob("*.png")):
                shutil.copy(f, dst / PRODUCT / sub / new / f"kratzer ä {f.name}")
    return dst


def test_names_with_spaces_accents_and_apostrophes(tmp_path, demo_root, tiny_sd_dir):
    """A user's tree named in their language runs through the rules that pass names to a shell: split
    (--product), generator, RMP, generation of the type with the apostrophe (--type), the cutpaste baseline and its
    report grid (--title); the whole DAG (segmentation, evaluation, tables) builds, every shell line quoted.
    Not `dataset.name: demo`: the tree and the model exist already (fewer jobs)."""
    root = _renamed_tree(demo_root, tmp_path / "Meine Daten")
    cfg = yaml.safe_load((REPO / "config" / "test_e2e.yaml").read_text())
    cfg["dataset"] = {"name": "custom", "root": str(root)}
    cfg["model"] = {"pretrained": str(tiny_sd_dir), "tiny": False, "resolution": 64}
    cfg["generator"]["steps_per_type"] = cfg["rmp"]["steps_per_type"] = 1
    cfg["rmp"].update({"reduce_channels": [16, 8], "num_heads": 2, "head_dim": 12, "num_layers": 1,
                       "norm_num_groups": 8})
    cfg["generation"].update({"num_images_per_type": 2, "num_inference_steps": 2, "num_reference_images": 2})
    cfg["downstream"].update({"models": ["lfd"], "num_baseline_images_per_type": 2})
    cfg["gen_metrics"]["enabled"] = False
    cfg["studies"] = {}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
    run = "results/e2e/e2e"
    lay = _layout(cfg, tmp_path)

    def snake(*extra: str) -> subprocess.CompletedProcess:
        res = subprocess.run([snakemake_exe(), "--snakefile", str(SNAKEFILE), "--directory", str(tmp_path),
                              "--configfile", str(tmp_path / "cfg.yaml"), "--cores", "2", *extra],
                             capture_output=True, text=True, env=_env(), timeout=600)
        if res.returncode != 0:
            logs = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in sorted((tmp_path / run / "logs").rglob("*.log")))
            raise AssertionError(f"snakemake {' '.join(extra)} failed:\n{res.stderr[-4000:]}\n{logs}")
        return res

    res = snake("-n", "-p")  # the whole DAG, with every shell line printed
    assert "--product 'métal nut'" in res.stdout and "--type 'big stain'" in res.stdout
    assert "--type 'o'\"'\"'ring scratch'" in res.stdout and "--title 'seas / métal nut'" in res.stdout
    assert job_counts(res.stdout)["generate"] == 2 and job_counts(res.stdout)["train_seg"] == 2

    t0 = time.monotonic()
    seas_pairs = Path(lay.generation_manifest(PRODUCT, "o'ring scratch")).parent
    snake(f"{run}/report/samples/cutpaste/{PRODUCT}.png", str(seas_pairs.relative_to(tmp_path) / "manifest.csv"))
    print(f"quoted-names slice: {time.monotonic() - t0:.0f} s")
    split = json.loads(Path(lay.split(PRODUCT)).read_text())
    assert split["product"] == PRODUCT and split["anomaly_types"] == ["big stain", "o'ring scratch"]
    assert Path(split["train_anomalies"]["big stain"][0]["image"]).name == "kratzer ä 000.png"
    rows = _read_csv(seas_pairs / "manifest.csv")
    assert len(rows) == 2 and {r["type"] for r in rows} == {"o'ring scratch"}
    for t in TYPES.values():
        assert len(list((Path(lay.pairs_dir("cutpaste", PRODUCT)) / t / "images").glob("*.png"))) == 2
    assert (tmp_path / run / "report" / "samples" / "cutpaste" / f"{PRODUCT}.png").stat().st_size > 0
