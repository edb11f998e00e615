"""Generator fine-tuning on the demo data with the tiny SD-shaped model (CPU, a few steps)."""
import csv
import json

import pytest
import torch

from seas.method.attention import AttentionStore, install_capture
from seas.data.split import Split
from seas.method.train_generator import (GeneratorTrainer, forward_backward, load_train_data, sample_batch, train_generator)

BASE_VOCAB = 49408


def _trainer(make_cfg, split_path, tmp_path, product="weave", **gen):
    cfg = make_cfg({f"generator.{k}": v for k, v in gen.items()})
    tr = GeneratorTrainer(cfg, Split.load(split_path(product)), tmp_path / "generator" / product, device="cpu")
    tr.data = load_train_data(tr.split, cfg["model"]["resolution"], cfg["dataset"]["image_policy"])
    return tr


def _eval_da(tr, n_batches=3):
    """DA loss on fixed abnormal batches, fixed noise and timesteps (no gradient)."""
    gen = torch.Generator().manual_seed(123)
    noise = torch.Generator().manual_seed(7)
    total = 0.0
    for _ in range(n_batches):
        b = sample_batch(tr.data, tr.prompts, gen, 2, 0, tr.rotate90, tr.flip, latents=tr.latents())
        terms = forward_backward(tr.unet, tr.vae, tr.text_encoder, tr.noise_scheduler, b, tr.g, tr.store, noise,
                                 backward=False)
        total += terms["da_term1"] + terms["da_term2"]
    return total / n_batches


def test_training_lowers_da_loss_and_keeps_text_encoder_frozen(make_cfg, split_path, tmp_path, tiny_sd_dir):
    from transformers import CLIPTextModel

    # a tiny random model tolerates (and needs) much larger learning rates than SD's 4e-6 / 4e-5
    tr = _trainer(make_cfg, split_path, tmp_path, lr_unet=3e-3, lr_embeddings=1e-2, steps_per_type=100)
    init_rows = tr.embedding.weight.detach()[tr.new_ids].clone()
    before = _eval_da(tr)
    for _ in range(8):
        terms = tr.train_step()
        assert set(terms) == {"loss", "l_sd", "l_na", "da_term1", "da_term2"} and terms["l_na"] > 0
    after = _eval_da(tr)
    assert after < 0.9 * before, (before, after)  # measured 1.168 -> 0.946 (pixel-softmax maps)
    # control: the same 8 steps without the DA loss leave it clearly higher (measured 1.309)
    ctl = _trainer(make_cfg, split_path, tmp_path / "ctl", lr_unet=3e-3, lr_embeddings=1e-2, steps_per_type=100,
                   da_loss=False)
    for _ in range(8):
        ctl.train_step()
    ctl.store = AttentionStore()
    install_capture(ctl.unet, ctl.store, ctl.g["da_resolutions"])
    ctl.g = dict(ctl.g, da_loss=True)
    assert after < 0.85 * _eval_da(ctl)

    # every text-encoder weight except the new embedding rows is bit-identical to the base model's
    base = CLIPTextModel.from_pretrained(tiny_sd_dir / "text_encoder")
    ref = dict(base.named_parameters())
    for name, p in tr.text_encoder.named_parameters():
        if name.endswith("token_embedding.weight"):
            assert torch.equal(p.detach()[:BASE_VOCAB], ref[name].detach())
            assert p.shape[0] == BASE_VOCAB + len(tr.new_ids)
        else:
            assert torch.equal(p.detach(), ref[name].detach()), name
    assert not torch.equal(tr.embedding.weight.detach()[tr.new_ids], init_rows)  # the new tokens did learn
    assert tr.step == 8


def _read_log(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def test_interrupted_run_resumes_bit_identically_and_checkpoint_loads(make_cfg, split_path, tmp_path):
    from safetensors.torch import load_file

    from seas.method.checkpoint import load_generator

    cfg = make_cfg({"generator.steps_per_type": 2, "generator.checkpoint_every": 2, "generator.log_every": 1})
    split = Split.load(split_path("weave"))
    out_a, out_b = tmp_path / "a" / "weave", tmp_path / "b" / "weave"
    assert train_generator(cfg, split, out_a, stop_after=3, progress=False) is None  # "interrupted" at 3 of 4
    work = out_a.with_name("weave.work")
    assert (work / "state" / "state.json").is_file() and not out_a.exists()
    assert train_generator(cfg, split, out_a, progress=False) == out_a            # resumes 3 -> 4
    assert not work.exists()
    assert train_generator(cfg, split, out_b, progress=False) == out_b            # uninterrupted reference
    stamp = (out_a / "tokens.json").stat().st_mtime_ns
    assert train_generator(cfg, split, out_a, progress=False) == out_a            # complete: kept, not retrained
    assert (out_a / "tokens.json").stat().st_mtime_ns == stamp
    meta = json.loads((out_a / "tokens.json").read_text())
    assert meta["prompts"] == {"scratch": "a <ob> with <df1> <df2> <df3> <df4>",
                               "stain": "a <ob> with <df5> <df6> <df7> <df8>", "good": "a <ob>"}
    assert meta["base"]["tiny"] is True and meta["token_map"]["token_ids"]["<ob>"] == BASE_VOCAB

    ua = load_file(str(out_a / "unet" / "diffusion_pytorch_model.safetensors"))
    ub = load_file(str(out_b / "unet" / "diffusion_pytorch_model.safetensors"))
    assert ua.keys() == ub.keys() and all(torch.equal(ua[k], ub[k]) for k in ua)
    ea, eb = (load_file(str(o / "learned_embeds.safetensors")) for o in (out_a, out_b))
    assert set(ea) == {"<ob>"} | {f"<df{i}>" for i in range(1, 9)}
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    log_a, log_b = _read_log(out_a / "train_log.csv"), _read_log(out_b / "train_log.csv")
    assert [r["step"] for r in log_a] == ["1", "2", "3", "4"] and log_a == log_b

    bundle = load_generator(out_a)
    assert bundle.token_map.prompt("stain") == "a <ob> with <df5> <df6> <df7> <df8>"
    assert bundle.is_tiny and "tiny" in bundle.label
    emb = bundle.text_encoder.get_input_embeddings().weight
    for tok, row in ea.items():
        assert torch.equal(emb[bundle.tokenizer.convert_tokens_to_ids(tok)], row)
    sd = bundle.unet.state_dict()
    assert all(torch.equal(sd[k], ua[k]) for k in ua)
    assert not any(p.requires_grad for p in bundle.unet.parameters())


def test_gradient_checkpointing_gives_the_same_gradients(make_cfg, split_path, tmp_path):
    tr = _trainer(make_cfg, split_path, tmp_path)
    batch = sample_batch(tr.data, tr.prompts, torch.Generator().manual_seed(0), 2, 2, True, True, latents=tr.latents())
    params = [p for p in tr.unet.parameters()] + [tr.embedding.weight]

    def grads(**over):
        g = dict(tr.g, **over)
        tr.optimizer.zero_grad(set_to_none=True)
        terms = forward_backward(tr.unet, tr.vae, tr.text_encoder, tr.noise_scheduler, batch, g, tr.store,
                                 torch.Generator().manual_seed(5))
        return terms, [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]

    t_mixed, g_mixed = grads()
    tr.unet.enable_gradient_checkpointing()
    t_ckpt, g_ckpt = grads()
    for k in t_mixed:
        assert t_ckpt[k] == pytest.approx(t_mixed[k], rel=1e-4, abs=1e-6)
    assert t_mixed["da_term1"] > 0 and t_mixed["l_na"] > 0
    assert any(g.abs().sum() > 0 for g in g_mixed)
    for a, c in zip(g_mixed, g_ckpt):
        torch.testing.assert_close(c, a, atol=1e-6, rtol=1e-3)


def test_ablation_switches(make_cfg, split_path, tmp_path):
    from diffusers.models.attention_processor import AttnProcessor2_0

    # typical prompt: no new tokens, the text encoder is entirely frozen (not in the optimizer)
    tr = _trainer(make_cfg, split_path, tmp_path, prompt="typical")
    assert tr.token_map.new_tokens == [] and not tr.train_text and len(tr.optimizer.param_groups) == 1
    assert tr.prompts.positions("scratch") == ([7], [5])  # <sot> a photo of a weave with defect
    terms = tr.train_step()
    assert terms["da_term1"] > 0

    # no NA loss: no normal images at all; no second DA term
    tr = _trainer(make_cfg, split_path, tmp_path / "b", na_loss=False, da_ob_term="none")
    assert tr.n_normal == 0
    terms = tr.train_step()
    assert terms["l_na"] == 0.0 and terms["da_term2"] == 0.0 and terms["da_term1"] > 0

    # no DA loss: no capture processor anywhere (all fused), DA terms 0
    tr = _trainer(make_cfg, split_path, tmp_path / "c", da_loss=False)
    assert all(type(p) is AttnProcessor2_0 for p in tr.unet.attn_processors.values())
    terms = tr.train_step()
    assert terms["da_term1"] == terms["da_term2"] == 0.0 and terms["l_sd"] > 0

    # one resolution only, per-image normalisation, N = 2: captured layers and positions follow
    tr = _trainer(make_cfg, split_path, tmp_path / "d", da_resolutions=[16], num_df_tokens=2, da_normalize="image")
    assert len(tr.captured_layers) == 2 and all(n.startswith("down_blocks.2.") for n in tr.captured_layers)
    assert tr.prompts.positions("stain") == ([4, 5], [2])
    tr.train_step()


def test_train_full_embedding_switch(make_cfg, split_path, tmp_path):
    from safetensors.torch import load_file

    from seas.method.checkpoint import FULL_EMBEDDING_KEY, load_generator

    tr = _trainer(make_cfg, split_path, tmp_path, train_full_embedding=True, lr_embeddings=1e-2)
    before = tr.embedding.weight.detach().clone()
    tr.train_step()
    after = tr.embedding.weight.detach()
    a_id = tr.tokenizer("a", add_special_tokens=False).input_ids[0]
    assert not torch.equal(after[a_id], before[a_id])  # the authors' quirk: ordinary words move too
    out = train_generator(tr.cfg, tr.split, tmp_path / "full" / "weave", progress=False)
    full = load_file(str(out / "learned_embeds.safetensors"))[FULL_EMBEDDING_KEY]
    bundle = load_generator(out)
    emb = bundle.text_encoder.get_input_embeddings().weight
    assert emb.shape[0] == BASE_VOCAB + 9 and torch.equal(emb, full)
    assert not torch.equal(emb[a_id], before[a_id])


def test_cli_help_and_errors(capsys, write_cfg, tmp_path):
    from seas.method.train_generator import main

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "resum" in capsys.readouterr().out
    path, _ = write_cfg()
    assert main(["--config", str(path), "--split", str(tmp_path / "missing.json"), "--out", str(tmp_path / "g")]) == 2
    assert "missing.json" in capsys.readouterr().err


def test_8bit_adamw_on_cuda_else_torch_adamw_logged(monkeypatch, caplog):
    """generator.optimizer adamw8bit: bitsandbytes' AdamW8bit on CUDA (the authors'); on the CPU, or on CUDA without
    bitsandbytes, torch's AdamW, with a warning naming what is used and why."""
    import logging
    import sys
    import types

    from seas.method.optim import optimizer_class

    with caplog.at_level(logging.WARNING, logger="seas.method.optim"):
        assert optimizer_class("adamw8bit", torch.device("cpu")) == (torch.optim.AdamW, "adamw")
    assert "generator.optimizer: adamw8bit (the authors' 8-bit AdamW) needs CUDA and bitsandbytes; on cpu torch.optim.AdamW" in caplog.text
    caplog.clear()
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # not installed
    with caplog.at_level(logging.WARNING, logger="seas.method.optim"):
        assert optimizer_class("adamw8bit", "cuda") == (torch.optim.AdamW, "adamw")
    assert "bitsandbytes is not installed" in caplog.text and "torch.optim.AdamW (32-bit states) is used" in caplog.text
    fake = types.ModuleType("bitsandbytes")
    fake.optim = types.SimpleNamespace(AdamW8bit=type("AdamW8bit", (torch.optim.AdamW,), {}))
    monkeypatch.setitem(sys.modules, "bitsandbytes", fake)
    assert optimizer_class("adamw8bit", "cuda") == (fake.optim.AdamW8bit, "adamw8bit")
    assert optimizer_class("adamw", "cuda") == (torch.optim.AdamW, "adamw")


def test_optimizer_used_is_recorded(make_cfg, split_path, tmp_path, caplog):
    """A CPU run asked for the authors' 8-bit AdamW: torch's AdamW trains, the checkpoint and run record say so."""
    import logging

    from seas.method.train_generator import main

    cfg = make_cfg({"generator.optimizer": "adamw8bit", "generator.steps_per_type": 1, "dataset.products": ["weave"]})
    import yaml
    c = tmp_path / "c.yaml"
    c.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "gen"
    with caplog.at_level(logging.WARNING, logger="seas.method.train_generator"):
        assert main(["--config", str(c), "--split", str(split_path("weave")), "--out", str(out)]) == 0
    assert "torch.optim.AdamW (32-bit states) is used instead" in caplog.text
    rec = json.loads((out / "run_record.json").read_text())
    assert rec["optimizer"] == "adamw" and rec["precision"] == "fp32"
    assert json.loads((out / "tokens.json").read_text())["optimizer"] == "adamw"
