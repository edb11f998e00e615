"""TokenMap: token names, prompts, registration in the real CLIP tokenizer + tiny text encoder, positions."""
import pytest
import torch

from seas.run.errors import CheckpointError, ConfigError
from seas.method.prompt import TokenMap, encode_prompts, find_positions, register_tokens, tokenize

BASE_VOCAB = 49408


@pytest.fixture
def clip(tiny_sd_dir):
    from transformers import CLIPTextModel, CLIPTokenizer

    return (CLIPTokenizer.from_pretrained(tiny_sd_dir / "tokenizer"),
            CLIPTextModel.from_pretrained(tiny_sd_dir / "text_encoder"))


def test_token_names_and_prompts():
    tm = TokenMap.build("weave", ["scratch", "stain"])
    assert tm.ob_tokens == ["<ob>"]
    assert tm.df_tokens == {"scratch": ["<df1>", "<df2>", "<df3>", "<df4>"],
                            "stain": ["<df5>", "<df6>", "<df7>", "<df8>"]}
    assert tm.prompt("scratch") == "a <ob> with <df1> <df2> <df3> <df4>"
    assert tm.prompt("stain") == "a <ob> with <df5> <df6> <df7> <df8>"
    assert tm.normal_prompt() == "a <ob>"
    assert tm.new_tokens == ["<ob>"] + [f"<df{i}>" for i in range(1, 9)]
    with pytest.raises(ConfigError, match="hole"):
        tm.prompt("hole")
    # N' = 2 normal tokens, N = 2 anomaly tokens (ablation)
    tm2 = TokenMap.build("washer", ["hole", "scratch"], num_ob=2, num_df=2)
    assert tm2.prompt("scratch") == "a <ob1> <ob2> with <df3> <df4>"
    assert tm2.normal_prompt() == "a <ob1> <ob2>"


def test_typical_prompt_ablation_and_roundtrip():
    tm = TokenMap.build("metal_nut", ["bent", "color"], mode="typical")
    assert tm.prompt("bent") == tm.prompt("color") == "a photo of a metal nut with defect"
    assert tm.normal_prompt() == "a photo of a metal nut"
    assert tm.new_tokens == []
    again = TokenMap.from_dict(tm.to_dict())
    assert again == tm
    with pytest.raises(ConfigError):
        TokenMap.build("x", ["a"], mode="fancy")
    with pytest.raises(ConfigError):
        TokenMap.build("x", [])


def test_register_tokens_initialises_from_words_and_leaves_other_rows(clip):
    tok, te = clip
    before = te.get_input_embeddings().weight.detach().clone()
    tm = TokenMap.build("weave", ["scratch", "stain"])
    ids = register_tokens(tm, tok, te)
    assert len(tok) == BASE_VOCAB + 9
    assert sorted(ids.values()) == list(range(BASE_VOCAB, BASE_VOCAB + 9))
    assert tm.token_ids == ids
    emb = te.get_input_embeddings().weight.detach()
    assert emb.shape[0] == BASE_VOCAB + 9
    assert torch.equal(emb[:BASE_VOCAB], before)
    obj = tok("object", add_special_tokens=False).input_ids
    dfc = tok("defect", add_special_tokens=False).input_ids
    assert len(obj) == 1 and len(dfc) == 1  # single CLIP tokens
    assert torch.equal(emb[ids["<ob>"]], before[obj[0]])
    for t in tm.df_tokens["stain"]:
        assert torch.equal(emb[ids[t]], before[dfc[0]])
    with pytest.raises(CheckpointError):  # registering again is an error
        register_tokens(tm, tok, te)


def test_positions_come_from_the_tokenized_prompt(clip, tiny_sd_dir):
    from transformers import CLIPTextModel, CLIPTokenizer

    tok, te = clip
    tm = TokenMap.build("weave", ["scratch", "stain"])
    ids = register_tokens(tm, tok, te)
    input_ids = tokenize(tok, [tm.prompt("stain")])[0]
    assert input_ids.shape == (77,)
    assert input_ids[0].item() == tok.bos_token_id
    df, ob = tm.positions(tok, "stain")
    assert df == [4, 5, 6, 7] and ob == [2]
    assert [input_ids[p].item() for p in df] == [ids[f"<df{i}>"] for i in range(5, 9)]
    assert input_ids[2].item() == ids["<ob>"]
    # N' = 2, N = 3: positions shift
    tok2 = CLIPTokenizer.from_pretrained(tiny_sd_dir / "tokenizer")
    tm2 = TokenMap.build("weave", ["scratch"], num_ob=2, num_df=3)
    register_tokens(tm2, tok2, CLIPTextModel.from_pretrained(tiny_sd_dir / "text_encoder"))
    assert tm2.positions(tok2, "scratch") == ([5, 6, 7], [2, 3])
    with pytest.raises(ValueError, match="does not occur"):
        find_positions(tok, tm.prompt("stain"), "<df1>")


def test_typical_positions_and_encoding(clip):
    tok, te = clip
    tm = TokenMap.build("metal_nut", ["bent"], mode="typical")
    assert register_tokens(tm, tok, te) == {}
    df, ob = tm.positions(tok, "bent")
    ids = tokenize(tok, [tm.prompt("bent")])[0].tolist()
    assert [ids[p] for p in df] == tok("defect", add_special_tokens=False).input_ids
    assert [ids[p] for p in ob] == tok("metal nut", add_special_tokens=False).input_ids
    assert ob == [5, 6] and df == [8]  # <sot> a photo of a metal nut with defect
    h = encode_prompts(tok, te, [tm.prompt("bent"), tm.normal_prompt()])
    assert h.shape == (2, 77, te.config.hidden_size)
