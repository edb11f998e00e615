"""The one config schema: defaults filled, wrong/missing/unknown keys named in the error."""
from __future__ import annotations

import copy
import math
import re
import subprocess
import sys

import pytest
import yaml

from seas.run.config import (check_backbones, load_config, load_schema, read_yaml, resolve_backbone,
                              torch_hub_checkpoints, validate_config)
from seas.run.errors import ConfigError

from helpers import REPO, set_dotted

MINIMAL = {"dataset": {"name": "mvtec_ad", "root": "/data/mvtec"}, "model": {"pretrained": "CompVis/stable-diffusion-v1-4"}}


def test_defaults_filled():
    cfg = validate_config(MINIMAL)
    assert cfg["generator"]["lr_unet"] == 4e-6 and cfg["generator"]["lr_embeddings"] == 4e-5
    assert cfg["generator"]["num_df_tokens"] == 4 and cfg["generator"]["da_resolutions"] == [32, 16]
    assert cfg["split"] == {"shots": "1/3", "rule": "floor", "num_normal_images": 60,
                            "test_set": "one_third"}
    assert cfg["generation"]["mask_threshold"] == 0.2 and cfg["generation"]["num_inference_steps"] == 25
    assert validate_config({**MINIMAL, "generation": {"mask_threshold": 0.999}})["generation"]["mask_threshold"] == 0.999
    assert cfg["downstream"]["train"]["upernet"]["iterations"] > 0  # defaults through $ref'd definitions
    assert cfg["model"]["resolution"] == 512 and cfg["dataset"]["products"] == "all"
    assert MINIMAL["dataset"] == {"name": "mvtec_ad", "root": "/data/mvtec"}  # input not mutated


@pytest.mark.parametrize("raw, message", [
    ({**MINIMAL, "generatr": {}}, r"<top level>: Additional properties are not allowed \('generatr' was unexpected\)"),
    ({**MINIMAL, "generator": {"lr_unet": "fast"}}, r"generator.lr_unet: 'fast' is not of type 'number'"),
    ({**MINIMAL, "generator": {"steps_per_type": 0}}, r"generator.steps_per_type: 0 is less than the minimum of 1"),
    ({"model": {"pretrained": "x/y"}}, r"'dataset' is a required property"),
    ({**MINIMAL, "dataset": {"name": "mvtec_ad"}}, r"dataset: 'root' is a required property"),
    ({**MINIMAL, "dataset": {"name": "kitti", "root": "/x"}}, r"dataset.name: 'kitti' is not one of"),
    ({**MINIMAL, "split": {"shots": "1/2"}}, r"split.shots: '1/2' is not valid"),
    ({**MINIMAL, "downstream": {"methods": ["seas", "gan"]}}, r"downstream.methods.1: 'gan' does not match"),
    ({**MINIMAL, "downstream": {"train": {"lfd": {"iters": 3}}}}, r"downstream.train.lfd: Additional properties"),
    ({**MINIMAL, "model": {"pretrained": "x/y", "resolution": 100}}, r"model.resolution: 100 is not a multiple of 8"),
    # tau at the bounds: 0 marks nearly every pixel anomalous, 1 makes every mask empty
    ({**MINIMAL, "generation": {"mask_threshold": 0}}, r"generation.mask_threshold: 0 is less than or equal to the minimum of 0"),
    ({**MINIMAL, "generation": {"mask_threshold": 1}}, r"generation.mask_threshold: 1 is greater than or equal to the maximum of 1"),
    ({**MINIMAL, "generation": {"mask_threshold": 1.0}}, r"generation.mask_threshold: 1.0 is greater than or equal"),
    # semantic checks at parse time (issue 12.6): before any stage runs, `snakemake -n` included
    ({**MINIMAL, "rmp": {"num_heads": 5}}, r"rmp.num_heads x rmp.head_dim = 5 x 24 must equal"),
    ({**MINIMAL, "downstream": {"train": {"lfd": {"lr": 1e-3, "min_lr": 1e-2}}}}, r"downstream.train.lfd: min_lr"),
    ({**MINIMAL, "downstream": {"train": {"upernet": {"batch_size": 1}}}}, r"downstream.train.upernet.batch_size"),
])
def test_errors_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(raw, source="my.yaml")


def test_load_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: [unclosed")
    with pytest.raises(ConfigError, match=r"bad.yaml, line 1, column \d+: not valid YAML"):
        load_config(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n")
    with pytest.raises(ConfigError, match=r"list.yaml: the configuration must be a mapping of keys, got list"):
        load_config(listed)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(MINIMAL))
    cfg = load_config(good, {"generator.steps_per_type": 3})
    assert cfg["generator"]["steps_per_type"] == 3


@pytest.mark.parametrize("name", ["config.yaml", "config/mvtec_ad.yaml", "config/visa.yaml", "config/mvtec_3d.yaml"])
def test_shipped_configs_validate(name):
    cfg = load_config(REPO / name)
    if name != "config.yaml":  # the presets carry the paper's settings
        assert cfg["model"]["resolution"] == 512 and cfg["generator"]["steps_per_type"] == 800
        assert cfg["generation"]["num_images_per_type"] == 1000 and cfg["generator"]["lr_unet"] == 4e-6
        # the authors' training settings (HUST-SLOW/SeaS configs/seas.yaml; HUST-SLOW/LFD datasets/*.py)
        assert cfg["model"]["mixed_precision"] == "no" and cfg["generator"]["gradient_accumulation"] == 2
        assert cfg["generator"]["optimizer"] == "adamw8bit"
        d = cfg["downstream"]
        assert d["normal_images"] == "all" and d["include_real_anomalies"] is True
        assert d["pretrained_backbones"] == {"resnet50": "resnet50_v1c-2cccc1ad.pth",
                                             "resnet18": "resnet18-f37072fd.pth"}
    else:  # the demo: no ImageNet weights, random backbones said explicitly
        assert cfg["downstream"]["pretrained_backbones"] == {"resnet50": "random", "resnet18": "random"}


def _bb(**values):
    return validate_config({**MINIMAL, "downstream": {"pretrained_backbones": values}})


def test_backbone_random_path_and_torch_hub_name(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert torch_hub_checkpoints() == tmp_path / "th" / "hub" / "checkpoints"
    assert check_backbones(_bb(resnet50="random", resnet18="random")) == {"resnet50": None, "resnet18": None}
    own = tmp_path / "r18.pth"
    own.write_bytes(b"x")
    assert resolve_backbone(_bb(resnet18=str(own)), "resnet18") == own
    hub = tmp_path / "th" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "resnet18-f37072fd.pth").write_bytes(b"x")
    assert resolve_backbone(_bb(resnet18="resnet18-f37072fd.pth"), "resnet18") == hub / "resnet18-f37072fd.pth"
    # only the configured models' backbones are needed
    assert check_backbones({**_bb(), "downstream": {**_bb()["downstream"], "models": ["bisenetv2"]}}) == {}


def test_missing_or_unset_backbone_names_the_file_and_its_origin(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with pytest.raises(ConfigError, match=r"cfg.yaml: downstream.pretrained_backbones.resnet50: weights file "
                                          r"resnet50_v1c-2cccc1ad.pth not found \(looked for resnet50_v1c-2cccc1ad.pth "
                                          r"and .*th/hub/checkpoints/resnet50_v1c-2cccc1ad.pth\); it is mmseg's "
                                          r"ImageNet ResNet-50-V1c, open-mmlab://resnet50_v1c"):
        check_backbones(_bb(resnet50="resnet50_v1c-2cccc1ad.pth", resnet18="random"), source="cfg.yaml")
    with pytest.raises(ConfigError, match=r"resnet18: weights file /no/such.pth not found .*torchvision's "
                                          r"ImageNet ResNet-18 \(.*resnet18-f37072fd.pth.*`random`"):
        resolve_backbone(_bb(resnet18="/no/such.pth"), "resnet18")
    with pytest.raises(ConfigError, match=r"resnet18 is not set but lfd uses it: .*resnet18-f37072fd.pth.*`random`"):
        resolve_backbone(_bb(), "resnet18")
    with pytest.raises(ConfigError, match="resnet50: empty"):
        _bb(resnet50="")


# --- every numeric key of the schema is bounded (issue 25.3) --------------------------------------------------------
#: integer keys that may be 0 (seeds, "no normal images in the batch", "no loader workers", "no warm-up", "no GPU",
#: the U-Net up-block index 0); every other integer key is a count, a size or a step number: >= 1
ZERO_OK = {"seed", "batch_normal", "num_workers", "warmup_iters", "gpus_per_job", "unet_features",
           "normal_images",  # normal_images 0: the segmenters train on the pairs alone
           "warmup", "unet_crop_steps",
           "pre_projection"}  # GLASS pre_projection 0: no feature adaptor (anomalib's option)  # model.prior: no LR warm-up / no crop phase (seas.models.tiny_prior)
#: keys that are thresholds, probabilities, false-positive rates or Adam/SGD betas: at most 1
UNIT = re.compile(r"threshold|fpr|beta|momentum|prob")


def numeric_keys(node: dict, path: tuple = (), schema: dict | None = None):
    """(dotted key, schema node) of every numeric leaf of the schema: through properties, $ref'd definitions,
    oneOf branches and array items (an item is named ``<key>.0``)."""
    schema = schema or node
    if "$ref" in node:
        node = {**schema["definitions"][node["$ref"].rsplit("/", 1)[1]], **{k: v for k, v in node.items() if k != "$ref"}}
    types = node.get("type", [])
    types = [types] if isinstance(types, str) else types
    if {"integer", "number"} & set(types):
        yield ".".join(path), node
    for name, sub in node.get("properties", {}).items():
        yield from numeric_keys(sub, path + (name,), schema)
    for sub in node.get("oneOf", []):
        yield from numeric_keys(sub, path, schema)
    if isinstance(node.get("items"), dict):
        yield from numeric_keys(node["items"], path + ("0",), schema)


NUMERIC = dict(numeric_keys(load_schema()))


def out_of_range(node: dict) -> list:
    """Values just outside each declared bound of a numeric schema node."""
    integer = "integer" in ([node["type"]] if isinstance(node["type"], str) else node["type"])
    if "enum" in node:  # a closed list of values: one below them all, and 0 / -1 where not listed
        return sorted({min(node["enum"]) - 1, *({0, -1} - set(node["enum"]))})
    bad = []
    if "minimum" in node:
        bad.append(node["minimum"] - 1 if integer else math.nextafter(node["minimum"], -math.inf))
    if "exclusiveMinimum" in node:
        bad.append(node["exclusiveMinimum"])
    if "maximum" in node:
        bad.append(node["maximum"] + 1 if integer else math.nextafter(node["maximum"], math.inf))
    if "exclusiveMaximum" in node:
        bad.append(node["exclusiveMaximum"])
    return bad


def test_numeric_keys_found():
    """The walk reaches the nested, $ref'd, oneOf and array-item keys (else the property tests below are vacuous)."""
    for key in ("seed", "dataset.demo.image_size", "split.shots", "generation.mask_threshold",
                "downstream.train.lfd.iterations", "downstream.evaluation.pro_max_fpr", "rmp.reduce_channels.0",
                "resources.threads_per_job"):
        assert key in NUMERIC
    assert len(NUMERIC) > 60


@pytest.mark.parametrize("key", sorted(NUMERIC))
def test_numeric_key_bounded(key):
    """Counts, sizes and steps >= 1 (>= 0 where 0 means none); thresholds, probabilities and betas in [0, 1];
    every number bounded below."""
    node, leaf = NUMERIC[key], [p for p in key.split(".") if p != "0"][-1]
    low = min(node["enum"]) if "enum" in node else node.get("minimum", node.get("exclusiveMinimum"))
    assert low is not None, f"{key}: no minimum in the schema"
    if node["type"] == "integer" or "integer" in node["type"]:
        assert low >= (0 if leaf in ZERO_OK else 1), f"{key}: a count, size or step number must be >= 1"
    if UNIT.search(leaf):
        assert low >= 0 and min(node.get("maximum", math.inf), node.get("exclusiveMaximum", math.inf)) <= 1, \
            f"{key}: a threshold / probability must lie in [0, 1]"


@pytest.mark.parametrize("key", sorted(NUMERIC))
def test_out_of_range_refused_naming_the_key(key):
    bad_values = out_of_range(NUMERIC[key])
    assert bad_values
    for bad in bad_values:
        raw = copy.deepcopy(MINIMAL)
        if key.endswith(".0"):
            set_dotted(raw, key[:-2], [bad])
        else:
            set_dotted(raw, key, bad)
        with pytest.raises(ConfigError) as exc:
            validate_config(raw, source="my.yaml")
        assert f"  {key}: " in str(exc.value), (bad, str(exc.value))


# --- a YAML syntax error names the file and the line (issue 25.7) ---------------------------------------------------
@pytest.mark.parametrize("text, line, column, what", [
    # an unclosed flow list: found at the next key, opened two lines up
    ("run_name: x\ndataset:\n  name: demo\n  root: [unclosed\nmodel: {pretrained: a}\n", 5, 6,
     r"expected ',' or ']', but got ':' \(while parsing a flow sequence at line 4, column 9\)"),
    ("seed: 0\n\tdevice: cpu\n", 2, 1, r"found character '\\t' that cannot start any token"),  # a tab indent
    ("generator:\n  steps_per_type: 3\n lr_unet: 1\n", 3, 2, r"expected <block end>"),  # indentation off by one
])
def test_yaml_syntax_error_names_file_line_and_column(tmp_path, text, line, column, what):
    bad = tmp_path / "my run.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=rf"my run.yaml, line {line}, column {column}: not valid YAML: {what}"):
        read_yaml(bad)


def test_cli_names_the_yaml_line(tmp_path):
    """As a user hits it: a CLI's --config with a syntax error is one `error:` line with file and line, exit 2."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset:\n  name: demo\n  root: [unclosed\nmodel: {pretrained: a}\n")
    res = subprocess.run([sys.executable, "-m", "seas.run.layout", "--config", str(bad)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [f"error: {bad}, line 4, column 6: not valid YAML: expected ',' or ']', "
                                                "but got ':' (while parsing a flow sequence at line 3, column 9)"]
