"""Generation: reference noising, DPM-Solver++ schedule, pairs on disk, resume, bit-identical regeneration."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import SMALL_RMP as BASE_RMP

SMALL_RMP = {**BASE_RMP, "rmp.steps_per_type": 1, "rmp.batch_abnormal": 1, "rmp.batch_normal": 1}
GEN = {"generation.num_images_per_type": 5, "generation.batch_size": 2, "generation.num_inference_steps": 4,
       "generation.mask_steps": 3}


@pytest.fixture
def setup(make_cfg, split_path, generator_ckpt, tmp_path):
    """(cfg, split path, generator dir, rmp dir) with a 2-step-trained small RMP."""
    from seas.method.train_rmp import train_rmp

    cfg = make_cfg({**SMALL_RMP, **GEN})
    sp = split_path("weave")
    rmp = train_rmp(cfg, sp, generator_ckpt, tmp_path / "rmp")
    return cfg, sp, generator_ckpt, rmp


# ----------------------------------------------------------------------------- pure pieces
def test_init_noise_coefficients_of_the_stretched_schedule():
    from seas.method.generate import init_noise_coefficients

    conf = {"beta_start": 0.00085, "beta_end": 0.012}
    for steps in (1000, 1500):
        betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, steps, dtype=np.float64) ** 2
        acp = np.prod(1 - betas)
        a, b = init_noise_coefficients(conf, steps)
        assert a == pytest.approx(acp ** 0.5, rel=1e-4)
        assert b == pytest.approx((1 - acp) ** 0.5, rel=1e-6)
    a, b = init_noise_coefficients(conf, 1500)
    assert a == pytest.approx(0.01784, abs=2e-5) and b == pytest.approx(0.99984, abs=2e-5)
    # in units of the scaled latent (0.18215·z): ≈ 0.098, the figure quoted in the method doc
    assert a / 0.18215 == pytest.approx(0.098, abs=1e-3)


def test_dpm_scheduler_starts_at_999_with_25_steps(tiny_sd_dir):
    from diffusers import DDPMScheduler

    from seas.method.generate import make_dpm_scheduler

    base = DDPMScheduler.from_pretrained(tiny_sd_dir, subfolder="scheduler").config
    s = make_dpm_scheduler(base, 25)
    assert len(s.timesteps) == 25 and int(s.timesteps[0]) == 999
    assert s.config.algorithm_type == "dpmsolver++" and s.config.final_sigmas_type == "sigma_min"


def test_threshold_and_uint8_conversion():
    from seas.method.generate import threshold_masks, to_uint8_images

    m = threshold_masks(torch.tensor([[[0.1, 0.2, 0.21, 0.9]]]), 0.2)
    assert m.tolist() == [[[0, 0, 255, 255]]] and m.dtype == np.uint8
    img = to_uint8_images(torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 1, 4).expand(1, 3, 1, 4))
    assert img.shape == (1, 1, 4, 3) and img[0, 0, :, 0].tolist() == [0, 128, 255, 255]


# ----------------------------------------------------------------------------- end to end on the tiny model
def _read(out: Path, j: int):
    return (np.asarray(Image.open(out / "images" / f"{j:06d}.png")),
            np.asarray(Image.open(out / "masks" / f"{j:06d}.png")))


def test_pairs_resume_and_regeneration(setup, tmp_path):
    from seas.method.generate import first_missing, generate, read_manifest, regenerate

    cfg, sp, gen, rmp = setup
    from seas.data.split import Split

    normals = Split.load(sp).train_normals[:10]
    whole = generate(cfg, sp, gen, rmp, "scratch", tmp_path / "seas" / "weave" / "scratch")
    rows = read_manifest(whole)
    from seas.data.pairs import iter_pairs  # the shared layout reader accepts the folder (sizes checked)

    assert len(iter_pairs(tmp_path / "seas", ["weave"])) == 5
    assert [int(r["index"]) for r in rows] == list(range(5))
    for j, r in enumerate(rows):
        img, mask = _read(whole, j)
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}  # binary, aligned with the image
        assert Path(r["image"]).name == Path(r["mask"]).name == f"{j:06d}.png"
        assert r["reference"] == normals[j % len(normals)]  # image j starts from normal j mod 10
    assert len({r["seed"] for r in rows}) == 5

    # interruption after the first batch (indices 0, 1), plus a half-written leftover and an image without mask
    part = tmp_path / "part"
    assert generate(cfg, sp, gen, rmp, "scratch", part, stop_after=1) is None
    assert not (part / "manifest.csv").exists() and first_missing(part, 5) == 2
    (part / "images" / ".000002.png.tmp999").write_bytes(b"\x89PNG half")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(part / "images" / "000003.png")
    assert generate(cfg, sp, gen, rmp, "scratch", part) == part
    assert not list((part / "images").glob(".*tmp*"))
    for j in range(5):
        a, b = _read(whole, j), _read(part, j)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]), j

    ref0 = _read(whole, 0)[0]
    # the manifest regenerates a pair bit for bit (CPU)
    img, mask = regenerate(cfg, sp, whole, 3)
    ref_img, ref_mask = _read(whole, 3)
    assert np.array_equal(img, ref_img) and np.array_equal(mask, ref_mask)

    # rerun on a complete folder: nothing to do (files untouched)
    mtime = (whole / "images" / "000000.png").stat().st_mtime_ns
    assert generate(cfg, sp, gen, rmp, "scratch", whole) == whole
    assert (whole / "images" / "000000.png").stat().st_mtime_ns == mtime
    # a smaller count: the folder shrinks to match its manifest
    generate(cfg, sp, gen, rmp, "scratch", whole, count=3)
    assert len(read_manifest(whole)) == 3 and len(list((whole / "masks").glob("*.png"))) == 3
    # other parameters: the folder starts over, never mixing two settings
    cfg2 = dict(cfg, generation=dict(cfg["generation"], guidance_scale=2.0, num_images_per_type=2))
    generate(cfg2, sp, gen, rmp, "scratch", whole)
    rows2 = read_manifest(whole)
    assert len(rows2) == 2 and {r["guidance_scale"] for r in rows2} == {"2.0"}
    assert sorted(p.name for p in (whole / "images").iterdir()) == ["000000.png", "000001.png"]
    assert not np.array_equal(_read(whole, 0)[0], ref0)
    # a folder that seas.method.generate did not write is refused
    from seas.run.errors import DataError

    alien = tmp_path / "alien"
    alien.mkdir()
    (alien / "x.txt").write_text("x")
    with pytest.raises(DataError, match="restart"):
        generate(cfg, sp, gen, rmp, "scratch", alien)
    # an interrupted folder is continued with its own parameters only (seas.run.resume's one policy)
    from seas.run.resume import StaleStateError

    assert generate(cfg, sp, gen, rmp, "scratch", tmp_path / "int", stop_after=1) is None
    with pytest.raises(StaleStateError, match="guidance_scale"):
        generate(cfg2, sp, gen, rmp, "scratch", tmp_path / "int")
    assert generate(cfg2, sp, gen, rmp, "scratch", tmp_path / "int", restart=True) == tmp_path / "int"


def test_normal_images_have_empty_masks(make_cfg, split_path, generator_ckpt, tmp_path):
    from seas.method.generate import generate, read_manifest

    cfg = make_cfg({**GEN, "generation.num_inference_steps": 2})
    out = generate(cfg, split_path("weave"), generator_ckpt, None, "good", tmp_path / "good", count=2)
    rows = read_manifest(out)
    assert len(rows) == 2 and rows[0]["prompt"] == "a <ob>" and rows[0]["rmp"] == ""
    for j in range(2):
        _, mask = _read(out, j)
        assert mask.shape == (64, 64) and not mask.any()


def test_generate_cli(write_cfg, split_path, generator_ckpt, tmp_path):
    from seas.method.generate import main

    path, _ = write_cfg(GEN)
    out = tmp_path / "cli"
    rc = main(["--config", str(path), "--split", str(split_path("weave")), "--generator", str(generator_ckpt),
               "--type", "stain", "--out", str(out)])
    assert rc == 2  # no --rmp for an anomaly type: a clear error, not a traceback
    rc = main(["--config", str(path), "--split", str(split_path("weave")), "--generator", str(generator_ckpt),
               "--type", "good", "--out", str(out), "--count", "1", "--set", "generation.num_inference_steps=1"])
    assert rc == 0
    with open(out / "manifest.csv") as f:
        assert len(list(csv.DictReader(f))) == 1


def test_generate_cli_help(capsys):
    from seas.method.generate import main

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "--type" in capsys.readouterr().out


def test_disk_full_mid_generation_then_rerun(write_cfg, split_path, generator_ckpt, tmp_path, monkeypatch, capsys):
    """ENOSPC while writing pair 3: one error line naming the folder, exit 2, no temporary file left behind; the
    rerun after freeing space keeps the pairs already written and completes the folder."""
    import errno
    import os

    from seas.method.generate import main, read_manifest

    path, _ = write_cfg(GEN)
    out = tmp_path / "good"
    args = ["--config", str(path), "--split", str(split_path("weave")), "--generator", str(generator_ckpt),
            "--type", "good", "--out", str(out), "--count", "4", "--set", "generation.num_inference_steps=1"]
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst).name == "000003.png" and Path(dst).parent.name == "images":
            raise OSError(errno.ENOSPC, "No space left on device", str(src))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: cannot write to {out / 'images'}: No space left on device [Errno 28]; "
                              "free space there")
    assert not [p for p in out.rglob("*") if ".tmp" in p.name], "temporary files left behind"
    assert not (out / "manifest.csv").exists()
    written = {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.png")}
    assert sorted(written) == ["000000.png", "000001.png", "000002.png"]
    monkeypatch.undo()
    assert main(args) == 0
    assert len(read_manifest(out)) == 4
    assert {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.png") if p.name in written} == written


def test_normal_twins_share_noise_latent_and_scheduler(setup, tmp_path):
    """generation.reference_images: each pair's twin is the same generation (x_T, seed, scheduler, guidance) with the
    normal prompt -- bit for bit what generate_indices gives with the prompt swapped -- and it resumes with the pairs."""
    import dataclasses

    from seas.method.generate import (first_missing, generate, generate_references, generate_indices, prepare, read_manifest)
    from seas.data.split import Split

    cfg, sp, gen, rmp = setup
    cfg = dict(cfg, generation=dict(cfg["generation"], reference_images=True, num_images_per_type=3))
    out = generate(cfg, sp, gen, rmp, "scratch", tmp_path / "twins")
    rows = read_manifest(out)
    assert [r["normal_twin"] for r in rows] == [f"references/{j:06d}.png" for j in range(3)]
    twins = [np.asarray(Image.open(out / r["normal_twin"])) for r in rows]
    ctx = prepare(cfg, Split.load(sp), gen, rmp, "scratch")
    assert ctx.ref_cond is not None and ctx.params["reference_images"]
    swapped = dataclasses.replace(ctx, cond=ctx.ref_cond, rmp=None)
    want = generate_indices(swapped, [0, 1])[0]
    assert np.array_equal(want[0], twins[0]) and np.array_equal(want[1], twins[1])
    assert np.array_equal(generate_references(ctx, [2])[0], twins[2])  # a batch of one: same twin
    assert not np.array_equal(twins[0], _read(out, 0)[0])  # the anomaly prompt changes the image
    # a missing twin is a missing index: the run resumes there and restores it bit for bit
    (out / "references" / "000001.png").unlink()
    (out / ".params.json").write_text((out / ".params.json").read_text().replace('"complete": true', '"complete": false'))
    assert first_missing(out, 3, with_reference=True) == 1 and first_missing(out, 3) == 3
    generate(cfg, sp, gen, rmp, "scratch", out)
    assert np.array_equal(np.asarray(Image.open(out / "references" / "000001.png")), twins[1])
    # off (the default) and for normal images: no twins
    plain = generate(dict(cfg, generation=dict(cfg["generation"], reference_images=False)), sp, gen, rmp, "scratch",
                     tmp_path / "plain")
    assert not (plain / "references").exists() and {r["normal_twin"] for r in read_manifest(plain)} == {""}
