"""Run configuration: one schema (workflow/schemas/config.schema.yaml), validated once, defaults from it.

    cfg = load_config("config.yaml")          # dict with every default filled in
    cfg = validate_config(raw_dict, source="…")  # same, for an already-parsed dict (Snakefile)

Errors are :class:`ConfigError` naming the file and the dotted key.
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any, Mapping

import yaml
from jsonschema import Draft7Validator, validators

from seas.run.errors import ConfigError
from seas.run.labels import check_methods

__all__ = ["ConfigError", "load_config", "read_yaml", "validate_config", "deep_update", "parse_override", "run_dir",
           "SCHEMA_PATH", "add_config_arguments", "config_from_args", "BACKBONES", "RANDOM_BACKBONE",
           "torch_hub_checkpoints", "resolve_backbone", "check_backbones"]

REPO = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"


def _with_defaults(cls):
    validate_properties = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(cls, {"properties": set_defaults})


_DefaultingValidator = _with_defaults(Draft7Validator)


@functools.lru_cache(maxsize=1)
def _parsed_schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return yaml.safe_load(f)


def load_schema() -> dict:
    """The schema as a fresh dict (parsed once per process: the Snakefile validates every study variant with it)."""
    return copy.deepcopy(_parsed_schema())


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def validate_config(raw: Mapping[str, Any], source: str = "<config>") -> dict:
    """Validate ``raw`` against the schema and return a deep copy with all defaults filled in."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: the configuration must be a mapping, got {type(raw).__name__}")
    cfg = copy.deepcopy(dict(raw))
    validator = _DefaultingValidator(load_schema())
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        lines = [f"  {_key(e.absolute_path)}: {e.message}" for e in errors[:20]]
        raise ConfigError(f"{source}: invalid configuration\n" + "\n".join(lines))
    # semantic checks the schema cannot express
    res = cfg["model"]["resolution"]
    if res % 8:
        raise ConfigError(f"{source}: model.resolution: {res} is not a multiple of 8")
    r = cfg["rmp"]
    try:
        check_rmp_features(r["unet_features"], r["reduce_channels"])
        check_rmp_widths(r["reduce_channels"], r["num_heads"], r["head_dim"], r["norm_num_groups"])
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    if r["mrm_variant"] != "full" and not r["mrm"]:
        raise ConfigError(f"{source}: rmp.mrm_variant: {r['mrm_variant']} changes the Mask Refinement Modules, which "
                          "rmp.mrm: false removes; set rmp.mrm: true or rmp.mrm_variant: full")
    for model, t in cfg["downstream"]["train"].items():
        if "min_lr" in t and t["min_lr"] > t["lr"]:  # draem_unet's schedule (peer_unet_train) has none
            raise ConfigError(f"{source}: downstream.train.{model}: min_lr {t['min_lr']} > lr {t['lr']}")
        if t["batch_size"] < 2:
            raise ConfigError(f"{source}: downstream.train.{model}.batch_size: BatchNorm training needs at least 2 "
                              f"samples per batch, got {t['batch_size']}")
    d = cfg["downstream"]  # issue 21: the peers' protocol trains the peers' model, and only that one
    peer = d["protocol"] == "peer_per_product_unet"
    if peer and d["models"] != ["draem_unet"]:
        raise ConfigError(f"{source}: downstream.protocol: peer_per_product_unet trains DRAEM's U-Net per product, as "
                          f"AnomalyDiffusion's script does; set downstream.models: [draem_unet] (got {d['models']})")
    if "draem_unet" in d["models"] and not peer:
        raise ConfigError(f"{source}: downstream.models: draem_unet is the model of downstream.protocol: "
                          "peer_per_product_unet (set that protocol, or drop draem_unet)")
    stray = [m for m in d["leakage"]["allow"] if m not in d["methods"]]
    if stray:
        raise ConfigError(f"{source}: downstream.leakage.allow: {stray} not in downstream.methods {d['methods']}")
    for name in BACKBONES:
        if cfg["downstream"]["pretrained_backbones"][name] == "":
            raise ConfigError(f"{source}: downstream.pretrained_backbones.{name}: empty; give the weights file or "
                              f"`{RANDOM_BACKBONE}`")
    g = cfg["generator"]
    if g["training_order"] != "mixed" and not (g["na_loss"] and g["batch_normal"] > 0):
        raise ConfigError(f"{source}: generator.training_order: {g['training_order']} trains on normal images in "
                          "its own phase; it needs generator.na_loss: true and generator.batch_normal > 0")
    try:  # the method lists' cross-key checks (external specs' options, generation_only)
        check_methods(cfg)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return cfg


# ----------------------------------------------------------------------------- segmentation backbones
#: the value that asks for a randomly initialised backbone (said explicitly; the tables' backbone_init: random-init)
RANDOM_BACKBONE = "random"
#: downstream.pretrained_backbones key -> (segmentation models using it, the paper's file, where it comes from)
BACKBONES = {
    "resnet50": (("upernet",), "resnet50_v1c-2cccc1ad.pth",
                 "mmseg's ImageNet ResNet-50-V1c, open-mmlab://resnet50_v1c: "
                 "https://download.openmmlab.com/pretrain/third_party/resnet50_v1c-2cccc1ad.pth"),
    "resnet18": (("lfd",), "resnet18-f37072fd.pth",
                 "torchvision's ImageNet ResNet-18 (resnet18(weights='IMAGENET1K_V1')): "
                 "https://download.pytorch.org/models/resnet18-f37072fd.pth"),
}


def torch_hub_checkpoints() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` as torch.hub resolves it ($TORCH_HOME, else $XDG_CACHE_HOME/torch, else
    ~/.cache/torch): where torchvision and mmengine keep the weights they downloaded."""
    import os

    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                         os.path.expanduser("~/.cache"), "torch")
    return Path(home) / "hub" / "checkpoints"


def resolve_backbone(cfg: Mapping[str, Any], name: str) -> Path | None:
    """The weights file of ``downstream.pretrained_backbones.<name>``: the value as a path if it is a file, else (a
    bare file name) that name under :func:`torch_hub_checkpoints`; None for ``random``. ConfigError naming the key,
    the file, the folders looked in and where the weights come from when it is not set (null) or not found."""
    models, paper_file, origin = BACKBONES[name]
    key = f"downstream.pretrained_backbones.{name}"
    value = cfg["downstream"]["pretrained_backbones"][name]
    if value == RANDOM_BACKBONE:
        return None
    if value is None:
        raise ConfigError(f"{key} is not set but {'/'.join(models)} uses it: give the ImageNet weights the paper's "
                          f"model starts from ({paper_file}, {origin}) as a path or a file name under "
                          f"{torch_hub_checkpoints()}, or `{RANDOM_BACKBONE}` for a randomly initialised backbone")
    path = Path(str(value)).expanduser()
    if path.is_file():
        return path
    looked = [str(path)]
    if path.name == str(value):  # a bare file name: also torch.hub's checkpoint folder
        hub = torch_hub_checkpoints() / path.name
        if hub.is_file():
            return hub
        looked.append(str(hub))
    what = origin if path.name == paper_file else f"the backbone of {'/'.join(models)} (the paper's: {paper_file}, {origin})"
    raise ConfigError(f"{key}: weights file {value} not found (looked for {' and '.join(looked)}); it is {what}. "
                      f"Put it there, give its path, or set `{RANDOM_BACKBONE}` for a randomly initialised backbone")


def check_backbones(cfg: Mapping[str, Any], source: str = "<config>") -> dict[str, Path | None]:
    """Resolve the backbones of the configured segmentation models (``downstream.models``), before any job runs
    (the workflow calls it at parse time): ConfigError naming ``source`` and the missing file."""
    out = {}
    for name, (models, _, _) in BACKBONES.items():
        if any(m in cfg["downstream"]["models"] for m in models):
            try:
                out[name] = resolve_backbone(cfg, name)
            except ConfigError as e:
                raise ConfigError(f"{source}: {e}") from None
    return out


def check_rmp_features(unet_features, reduce_channels) -> None:
    """ConfigError unless the U-Net blocks the RMP fuses are given coarse -> fine (strictly increasing up-block
    indices) with one 1x1-reduction width each (paper Tab. 25)."""
    blocks = [int(i) for i in unet_features]
    if any(b <= a for a, b in zip(blocks, blocks[1:])):
        raise ConfigError(f"rmp.unet_features = {blocks}: list the U-Net up-block indices in increasing order "
                          "(coarse -> fine), each once")
    if len(reduce_channels) != len(blocks):
        raise ConfigError(f"rmp.reduce_channels = {list(reduce_channels)} has {len(reduce_channels)} widths for "
                          f"{len(blocks)} U-Net features rmp.unet_features = {blocks}: give one width per feature")


def check_rmp_widths(reduce_channels, num_heads: int, head_dim: int, norm_num_groups: int) -> None:
    """ConfigError unless heads x head_dim == sum(reduce_channels) and the GroupNorm groups divide it (the RMP's
    transformer block)."""
    dim = sum(int(c) for c in reduce_channels)
    if num_heads * head_dim != dim:
        raise ConfigError(f"rmp.num_heads x rmp.head_dim = {num_heads} x {head_dim} must equal "
                          f"sum(rmp.reduce_channels) = {dim}")
    if dim % norm_num_groups:
        raise ConfigError(f"rmp.norm_num_groups = {norm_num_groups} must divide sum(rmp.reduce_channels) = {dim} "
                          "(the GroupNorm of the RMP's transformer block)")


def deep_update(base: dict, new: Mapping) -> dict:
    """Merge ``new`` into ``base`` in place (mappings merged key by key, anything else replaced by a copy): how
    ``--config`` overrides (the Snakefile) and a study's variant overrides (seas.run.studies) apply."""
    for k, v in new.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            deep_update(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


def schema_default(dotted: str) -> Any:
    """The schema's default of a dotted key (for CLIs that also run without a config file)."""
    node = load_schema()
    for part in dotted.split("."):
        node = node["properties"][part]
    return copy.deepcopy(node["default"])


def read_yaml(path: str | Path) -> Any:
    """The content of a YAML file; a syntax error is a ConfigError naming the file, the line and the column
    (``config.yaml, line 4, column 9: not valid YAML: ...``), as is a file that is not UTF-8 text. The one reader
    of config files: :func:`load_config` (the CLIs) and the workflow (workflow/Snakefile, rules/common.smk)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text file (byte {e.start} is not UTF-8)") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        def at(mark) -> str:
            return f"line {mark.line + 1}, column {mark.column + 1}"

        mark = e.problem_mark or e.context_mark
        what = e.problem or str(e)
        if e.context and e.context_mark is not None and e.problem_mark is not None:
            what += f" ({e.context} at {at(e.context_mark)})"  # e.g. where the unclosed [ was opened
        raise ConfigError(f"{path}, {at(mark)}: not valid YAML: {what}" if mark else f"{path}: not valid YAML: {what}") \
            from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> dict:
    """Read a YAML config file, apply ``overrides`` ({"generator.steps_per_type": 2, …}), validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the configuration must be a mapping of keys, got {type(raw).__name__}")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return validate_config(raw, source=str(path))


def parse_override(text: str) -> tuple[str, Any]:
    """``key.sub=value`` (value parsed as YAML) -> (key, value); used by the CLIs' --set option."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def add_config_arguments(parser, required: bool = True,
                         help: str = "run configuration (YAML; schema: workflow/schemas/config.schema.yaml)") -> None:
    """The ``--config FILE`` and repeated ``--set KEY=VALUE`` options every CLI takes (``required=False``: the CLIs
    that also run on their own defaults; read them with :func:`optional_config_from_args`)."""
    parser.add_argument("--config", required=required, default=None, help=help)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. generator.steps_per_type=10 (value read as YAML); repeatable")


def config_from_args(args) -> dict:
    """The validated config of a CLI's parsed ``--config`` / ``--set`` options."""
    return load_config(args.config, dict(parse_override(s) for s in args.set))


def optional_config_from_args(args) -> dict | None:
    """:func:`config_from_args` for an optional ``--config``: None without one (``--set`` alone is an error)."""
    if args.config is not None:
        return config_from_args(args)
    if args.set:
        raise ConfigError("--set needs --config")
    return None


def run_dir(cfg: Mapping[str, Any]) -> Path:
    return Path(cfg["results_dir"]) / cfg["run_name"]
