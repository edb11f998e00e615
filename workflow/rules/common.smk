# Common code of the workflow (included first by the Snakefile): configuration, product / type discovery, input
# functions, the shell prefix of the jobs.
import json
import re
import shlex
import sys
from functools import lru_cache
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError

# workflow/ from this file's folder (workflow/rules), not from workflow.basedir: that is the folder of the *main*
# Snakefile, the deploying one's when this workflow runs as a module (snakedeploy, see README "Deploying").
_HERE = workflow.current_basedir.get_path_or_uri(secret_free=True)
if "://" in _HERE:
    raise WorkflowError(
        f"seas-bench runs from a local checkout only (its jobs import the checkout's Python packages), not from "
        f"{_HERE}: clone the repository at the tag and point the module's snakefile at <clone>/workflow/Snakefile"
    )
WORKFLOW_DIR = Path(_HERE).parent
REPO = WORKFLOW_DIR.parent
for _p in (str(REPO), str(WORKFLOW_DIR / "scripts")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import wflib  # noqa: E402  (workflow/scripts/wflib.py)
from seas.run.config import check_backbones, read_yaml, run_dir, validate_config  # noqa: E402
from seas.run.stages import STAGES, stage_keys, stage_values  # noqa: E402
from seas.run.errors import SeasError  # noqa: E402
from seas.run.layout import KEY_LEN, Layout, group_of, job_file, pattern, scope_product, seg_scopes  # noqa: E402
from seas.run.layout import NO_METHOD, detector_instances  # noqa: E402
from downstream.detection.backbones import check_detector_backbones  # noqa: E402  (pure Python)
from seas.run.labels import BASELINE_METHODS, all_methods, generation_only, is_external, method_dir  # noqa: E402
from seas.run.studies import load_studies, variant_configs  # noqa: E402


# --configfile replaces the default config, it is not merged over it: run as a module (snakedeploy), the deploying
# workflow's `configfile: "config/config.yaml"` (the demo) is loaded before the --configfile presets, and Snakemake
# merges them -- the demo's keys (its studies, learning rates, ...) would leak into a paper run. Rebuild from the
# --configfile files alone (on their own the Snakefile reads no config.yaml, so this changes nothing there).
if workflow.overwrite_configfiles:
    _fresh = {}
    for _f in workflow.overwrite_configfiles:
        try:  # a syntax error names the file, line and column (seas.run.config.read_yaml)
            _content = read_yaml(_f) or {}
        except SeasError as _e:
            raise WorkflowError(str(_e))
        if not isinstance(_content, dict):
            raise WorkflowError(f"{_f}: the configuration must be a mapping of keys, got {type(_content).__name__}")
        wflib.deep_update(_fresh, _content)
    config.clear()
    config.update(_fresh)
# --config values: Snakemake hands nested ones over as strings; read them as YAML like the CLIs' --set
wflib.deep_update(config, wflib.typed_overrides(dict(workflow.config_settings.config or {})))
_SOURCE = " and ".join(str(p) for p in workflow.overwrite_configfiles) or "config.yaml"
if workflow.config_settings.config:
    _SOURCE = f"{_SOURCE} (with --config overrides)"
try:
    CFG = validate_config(config, source=_SOURCE)
    # the segmenters' pretrained backbones (downstream.pretrained_backbones), of the run's models and its studies':
    # a missing weights file stops the run here, before any job, naming the file and where it comes from
    _seg_models = set(CFG["downstream"]["models"]).union(*(s["models"] or [] for s in CFG["studies"].values()))
    check_backbones({**CFG, "downstream": {**CFG["downstream"], "models": sorted(_seg_models)}}, source=_SOURCE)
    METHODS = wflib.method_table(all_methods(CFG))  # downstream.methods + downstream.generation_only
except (SeasError, wflib.WorkflowConfigError) as _e:
    raise WorkflowError(str(_e))

RUN = str(run_dir(CFG))
RESOLVED_CONFIG = f"{RUN}/config.yaml"


def _planning_only():
    """True under `snakemake -n`, `--lint`, `--summary`, `--dag`, ...: the DAG is planned and nothing runs, so the
    workflow writes nothing (the config files below are written only when jobs may run)."""
    try:
        if workflow.dryrun:
            return True
    except AttributeError:
        pass
    return wflib.planning_only(sys.argv[1:])


PLANNING_ONLY = _planning_only()
if not PLANNING_ONLY:
    try:
        wflib.write_if_changed(RESOLVED_CONFIG, yaml.safe_dump(CFG, sort_keys=True))
    except OSError as _e:  # a full or read-only results_dir: one line naming the folder, not a traceback
        from seas.run.runtime import io_error_message

        raise WorkflowError(io_error_message(_e) or str(_e))
# the run's tables: <results_dir>/<run_name>/tables/, so runs with different run_name never overwrite each other's
TABLES = f"{RUN}/tables"

ROOT = CFG["dataset"]["root"]
IS_DEMO = CFG["dataset"]["name"] == "demo"
PRETRAINED = CFG["model"]["pretrained"]
TINY = CFG["model"]["tiny"]
MODELS = list(CFG["downstream"]["models"])
GPUS = CFG["resources"]["gpus_per_job"]


def job_threads(declared):
    """A rule's threads: config resources.threads_per_job if set, else what the rule declares."""
    return CFG["resources"]["threads_per_job"] or declared


def _interpreter():
    """The venv's Python for a pip install; `python` of the job's env under --software-deployment-method conda."""
    try:
        from snakemake_interface_executor_plugins.settings import DeploymentMethod

        if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
            return "python"
    except (ImportError, AttributeError):
        pass
    return sys.executable


# ----------------------------------------------------------------------------- the jobs' shell
# Every shell command starts with this prefix (wflib.shell_prefix), in the shell that runs the job (on the node
# under SLURM): strict mode, this checkout on PYTHONPATH, and the functions the rules call:
#   seas_python ARGS          the interpreter
#   seas_python_gpu N ARGS    the same through workflow/scripts/gpu_claim.py (N free GPUs -> CUDA_VISIBLE_DEVICES;
#                             a no-op under SLURM and on CPU-only machines)
#   seas_script NAME ARGS     workflow/scripts/NAME run by that interpreter
# A prefix and not params: params are a rerun trigger, and moving the venv or the checkout must not rerun every
# job (the code trigger compares the rules' own shell text, without the prefix).
_PREFIX = wflib.shell_prefix(REPO, _interpreter(), WORKFLOW_DIR / "scripts")
shell.prefix(_PREFIX.replace("{", "{{").replace("}", "}}"))  # shell.prefix formats its text: braces doubled


def stage_params(name, **fields):
    """JSON of the config keys stage `name` reads (seas.run.stages): the rule's `params: cfg`, the params rerun
    trigger (for the stages that are not keyed: the demo tree, the tiny model, the tables)."""
    return wflib.section_json(CFG, *stage_keys(name, **fields))


def stage_runtime(name):
    """resources.runtime of a keyed stage's jobs: the registry's time estimate under the job's configuration
    (a generator / RMP group trains all its product's types, or one)."""

    def runtime(wc):
        fields = dict(wc.items())
        extra = {}
        if "group" in fields:
            extra["n_types"] = len(types_of(wc.product)) if wc.group == "all" else 1
        if "model" in fields:
            extra["model"] = wc.model
        return STAGES[name].minutes(layout_of(name, wc.k).cfg, **extra)

    return runtime


# ----------------------------------------------------------------------------- products and types
@lru_cache(maxsize=None)
def _discover_products():
    from seas.data.dataset import selected_products

    try:
        return tuple(selected_products(CFG))
    except SeasError as e:
        raise WorkflowError(str(e))


@lru_cache(maxsize=None)
def _discover_types(product):
    from seas.data.dataset import discover_types

    try:
        return tuple(discover_types(ROOT, product))
    except SeasError as e:
        raise WorkflowError(str(e))


def _wait_for_tree():
    """The demo tree is built by the DAG: until it exists, products come from the checkpoint.

    Once it exists (its marker file is written last, atomically) it is read directly, so that every job is in the
    DAG from the start: Snakemake checks for incomplete outputs (a job killed half-way) only among the jobs of the
    initial DAG, not among those a checkpoint adds later (measured with Snakemake 9.27).
    """
    if IS_DEMO and not (Path(ROOT) / "demo_dataset.json").is_file():
        checkpoints.demo_data.get()


def products():
    _wait_for_tree()
    return list(_discover_products())


def types_of(product):
    _wait_for_tree()
    return list(_discover_types(product))


def dataset_input(wildcards=None):
    """The dataset tree as an input where the DAG builds it (demo), nothing for an existing tree."""
    return [ROOT] if IS_DEMO else []


def base_model_input(wildcards=None):
    return [PRETRAINED] if TINY else []


# ----------------------------------------------------------------------------- stage instances (seas.run.layout)
# Every stage output lives in a folder keyed by the config values its CLI reads (+ its upstream stages' keys):
# the {k} wildcard. The run's own configuration and every variant of every study (seas.run.studies) register their
# keys; a key shared by several configurations is one job. A rule finds the configuration behind its job's key
# with layout_of(stage, k) and passes that configuration's file, written on first use (stage_config).
try:
    STUDIES = load_studies(CFG)
except SeasError as _e:
    raise WorkflowError(str(_e))
STUDY_CONFIGS, STUDY_ERRORS = {}, {}  # name -> {variant: validated config} / name -> why it does not apply
for _name, _study in STUDIES.items():
    try:
        STUDY_CONFIGS[_name] = variant_configs(CFG, _study)
    except SeasError as _e:
        if _name in CFG["studies"]:  # the run's own study: its error is the run's
            raise WorkflowError(str(_e))
        STUDY_ERRORS[_name] = str(_e)  # a shipped study that does not fit this config: an error only if requested
# the detectors' backbones (downstream.detector_backbones): the run's detectors stop the run at parse time naming the
# missing file; a shipped study whose detectors lack theirs is an error only when requested
try:
    check_detector_backbones(CFG, source=_SOURCE)
except SeasError as _e:
    raise WorkflowError(str(_e))
for _name, _variants in list(STUDY_CONFIGS.items()):
    try:
        for _vcfg in _variants.values():
            check_detector_backbones(_vcfg, source=STUDIES[_name].source)
    except SeasError as _e:
        if _name in CFG["studies"]:
            raise WorkflowError(str(_e))
        STUDY_ERRORS[_name] = str(_e)
        del STUDY_CONFIGS[_name]
LAYOUT = Layout(RUN, CFG)
PAT = pattern(RUN)
STUDY_LAYOUTS = {name: [Layout(RUN, c) for c in vs.values()] for name, vs in STUDY_CONFIGS.items()}
LAYOUTS = [LAYOUT] + [lay for lays in STUDY_LAYOUTS.values() for lay in lays]


@lru_cache(maxsize=None)
def _by_key(stage):
    table = {}
    for lay in LAYOUTS:
        for key in lay.instance_keys(stage):
            table.setdefault(key, lay)
    return table


def layout_of(stage, key):
    """The configuration (a seas.run.layout.Layout) behind stage instance `key`."""
    try:
        return _by_key(stage)[key]
    except KeyError:
        raise WorkflowError(f"no configuration of this run (its config or its studies) has a {stage} folder {key!r}; "
                            f"request the run's targets (or study_<name>) rather than a folder of an older config")


def stage_config(stage, key):
    """The config file a stage instance's CLI reads: <run>/configs/<stage>/<key>.yaml, written the first time the
    DAG needs it (only that path is a param: which of the configurations sharing the key wrote it does not matter,
    the CLI reads only the keys the key covers)."""
    path = f"{RUN}/configs/{stage}/{key}.yaml"
    if PLANNING_ONLY:
        return path
    try:
        wflib.write_if_changed(path, yaml.safe_dump(layout_of(stage, key).cfg, sort_keys=True))
    except OSError as e:
        from seas.run.runtime import io_error_message

        raise WorkflowError(io_error_message(e) or str(e))
    return path


def stage_json(stage, key, **fields):
    """The rule's `params: cfg`: the values behind the key (what the job computes with), for logs and --summary."""
    return json.dumps(stage_values(layout_of(stage, key).cfg, stage, **fields), sort_keys=True, separators=(",", ":"))


def method_spec(lay, method_id):
    """The configured method (seas, cutpaste, external:/path) behind a {method} folder name, in configuration lay."""
    return wflib.method_table(all_methods(lay.cfg))[method_id]


def group_type_args(wildcards):
    """The CLI option restricting a generator to its group's anomaly type (nothing for `all`)."""
    g = wildcards.group
    return "" if g == "all" else f"--anomaly-type {shlex.quote(g[len('type-'):])}"


def pairs_of_product(lay, method, product):
    """The DAG files that mark a method's pairs of one product as complete, in configuration lay (an external
    method's: its import, seas.data.import_pairs). `method`: the configured spec."""
    if method == "seas":
        return [intact(lay.generation_manifest(product, t)) for t in types_of(product)]
    if method in BASELINE_METHODS or is_external(method):
        return [intact(lay.pairs_dir(method, product))]  # an external folder's own files: refused by its import
    return []


def scope_products(scope):
    """The products a segmentation model of `scope` trains and is tested on (all, or one: per-product protocol)."""
    p = scope_product(scope)
    return [p] if p is not None else products()


# ----------------------------------------------------------------------------- the dataset's content (issue 25)
# A changed dataset reruns the split and what reads it, by content. Every product's tree is scanned when the DAG is
# built (seas.data.dataset_manifest: stat only, a file re-hashed only when its size or mtime changed) and the
# manifest kept in <run>/dataset/<product>.json (not under -n / --lint). The split rule's `dataset` param is the
# digest of the content of the files its split selects: Snakemake's params trigger reruns the split when one of them
# changes (and -n says so), and every stage downstream of that split with it; a touched but unchanged file, another
# product or a file the split does not select reruns nothing. Why not a job writing the manifest: Snakemake deletes
# a job's outputs before running it and reruns every job downstream of one that runs, so a manifest job run on
# every invocation would rerun everything every time.
def dataset_manifest_file(root, product):
    """<run>/dataset/<product>.json (a study variant with another dataset.root: under a folder named for it)."""
    if str(root) == str(ROOT):
        return f"{RUN}/dataset/{product}.json"
    import hashlib

    return f"{RUN}/dataset/root-{hashlib.sha256(str(root).encode()).hexdigest()[:8]}/{product}.json"


@lru_cache(maxsize=None)
def _dataset_manifest(root, product):
    from seas.data.dataset_manifest import load_manifest, scan, to_json

    path = dataset_manifest_file(root, product)
    manifest = scan(Path(root) / product, product, load_manifest(path))
    if not PLANNING_ONLY:
        try:
            wflib.write_if_changed(path, to_json(manifest))
        except OSError as e:
            from seas.run.runtime import io_error_message

            raise WorkflowError(io_error_message(e) or str(e))
    return manifest


def split_dataset_digest(wc):
    """params.dataset of a split job: the digest of the content of every file its split selects. A tree the split
    cannot read gives the error's text (the split job then fails naming the file, as without this param)."""
    from seas.data.dataset_manifest import file_hashes, selection_digest
    from seas.data.split import split_from_config

    cfg = layout_of("split", wc.k).cfg
    try:
        manifest = _dataset_manifest(cfg["dataset"]["root"], wc.product)
        selected = split_from_config(cfg, wc.product, validate=False).files()
        return selection_digest(file_hashes(selected, manifest))
    except SeasError as e:
        return f"unreadable: {e}"


def split_manifest_file(wc):
    """params.manifest of a split job: its product's dataset manifest (the split reuses its hashes)."""
    return dataset_manifest_file(layout_of("split", wc.k).cfg["dataset"]["root"], wc.product)


# ----------------------------------------------------------------------------- external folders (issue 21)
# An external:<path> method is imported per product (rule import_pairs, seas.data.import_pairs) into the pairs layout;
# its consumers read the import. The folder is a DAG input by content, as the dataset is: the import rule's `source`
# param is the digest of the files the import reads (their names relative to <path> + sha256, hashed by
# seas.data.dataset_manifest.scan, cached in <run>/external/<method>/<product>.json by size and mtime; not written
# under -n / --lint). A changed, added or removed file reruns that product's import and what reads it. The folder is
# listed and paired here, when the DAG is built: a half-copied folder (an image without its mask, a mask without
# its image) stops the workflow naming the file; a truncated file stops its import job, naming it.
def external_source_file(method, product):
    return f"{RUN}/external/{method_dir(method)}/{product}.json"


def import_types_args(wc):
    """The import's --types (the product's anomaly types) and --images-only (a generation-only method)."""
    lay = layout_of("import_pairs", wc.k)
    spec = method_spec(lay, wc.method)
    args = "--types " + " ".join(shlex.quote(t) for t in types_of(wc.product))
    return args + (" --images-only" if spec in generation_only(lay.cfg) else "")


@lru_cache(maxsize=None)
def _external_digest(spec, product, images_only, types):
    from seas.data.dataset_manifest import load_manifest, to_json
    from seas.data.peers import read_product, source_digest
    from seas.run.labels import external_options, external_path

    path = external_source_file(spec, product)
    try:
        root = external_path(spec)
        source = read_product(root, product, external_options(spec)["format"], types=list(types),
                              images_only=images_only)
        digest, manifest = source_digest(root, source, load_manifest(path))
    except SeasError as e:
        raise WorkflowError(f"external method {spec}: {e}")
    if not PLANNING_ONLY:
        try:
            wflib.write_if_changed(path, to_json(manifest))
        except OSError as e:
            from seas.run.runtime import io_error_message

            raise WorkflowError(io_error_message(e) or str(e))
    return digest


def external_digest(wc):
    """params.source of an import job: the digest of the external files it reads."""
    lay = layout_of("import_pairs", wc.k)
    spec = method_spec(lay, wc.method)
    return _external_digest(spec, wc.product, spec in generation_only(lay.cfg), tuple(types_of(wc.product)))


def split_input(stage):
    """Input function: the split manifest of the job's product, in the configuration of `stage`'s key."""
    return lambda wc: intact(layout_of(stage, wc.k).split(wc.product), "split")


def stage_cfg(stage):
    """params.cfg of `stage`'s jobs: the values behind their key (seas.run.stages config keys)."""
    return lambda wc: stage_json(stage, wc.k, **({"model": wc.model} if "model" in wc.keys() else {}))


def stage_config_file(stage):
    """params.config of `stage`'s jobs: <run>/configs/<stage>/<k>.yaml, the configuration the CLI reads."""
    return lambda wc: stage_config(stage, wc.k)


def job_method(stage):
    """params.method: the configured method (seas, cutpaste, external:/path) behind the job's {method}."""
    return lambda wc: method_spec(layout_of(stage, wc.k), wc.method)


def rmp_inputs(wc):
    """The split and the fine-tuned generator an RMP job trains on."""
    lay = layout_of("train_rmp", wc.k)
    return {"split": intact(lay.split(wc.product), "split"), "generator": intact(lay.generator(wc.product, wc.group))}


def gen_metrics_inputs(wc):
    """The split and the DAG files marking the method's pairs of the product as complete."""
    lay = layout_of("gen_metrics", wc.k)
    return {"split": intact(lay.split(wc.product), "split"),
            "pairs": pairs_of_product(lay, method_spec(lay, wc.method), wc.product)}


def gen_metrics_pairs(wc):
    """The folder of the method's pairs of the product (an external folder is read in place)."""
    lay = layout_of("gen_metrics", wc.k)
    return lay.pairs_dir(method_spec(lay, wc.method), wc.product)


def seg_pairs_root(wc):
    """The folder holding the method's <product>/<type>/ pairs."""
    lay = layout_of("train_seg", wc.k)
    return lay.pairs_root(method_spec(lay, wc.method))


def allow_test_copies_arg(wc):
    """params.allow of a train_seg job: --allow-test-copies where downstream.leakage.allow names its method (a
    param, not a key: changing the list reruns that method's segmentation jobs only)."""
    lay = layout_of("train_seg", wc.k)
    return "--allow-test-copies" if method_spec(lay, wc.method) in lay.cfg["downstream"]["leakage"]["allow"] else ""


def generation_inputs(wc):
    """The split, generator and RMP a generation job reads (its type's group)."""
    lay = layout_of("generate", wc.k)
    group = group_of(lay.cfg, wc.atype)
    return {"split": intact(lay.split(wc.product), "split"), "generator": intact(lay.generator(wc.product, group)),
            "rmp": intact(lay.rmp(wc.product, group))}


def seg_inputs(wc):
    """The splits and pairs a segmentation model trains on (every product, or its scope's product)."""
    lay = layout_of("train_seg", wc.k)
    spec = method_spec(lay, wc.method)
    prods = scope_products(wc.scope)
    return {"splits": [intact(lay.split(p), "split") for p in prods],
            "pairs": [f for p in prods for f in pairs_of_product(lay, spec, p)]}


def detector_inputs(wc):
    """The splits a detector trains and is tested on (every product) and, for a + pairs detector, the DAG files
    marking the method's pairs as complete."""
    lay = layout_of("train_detector", wc.k)
    prods = products()
    pairs = []
    if wc.method != NO_METHOD:
        spec = method_spec(lay, wc.method)
        pairs = [f for p in prods for f in pairs_of_product(lay, spec, p)]
    return {"splits": [lay.split(p) for p in prods], "pairs": pairs}


def detector_pairs_args(wc):
    """--pairs-root ROOT --method SPEC of a + pairs detector; nothing for an unsupervised one."""
    if wc.method == NO_METHOD:
        return ""
    lay = layout_of("train_detector", wc.k)
    spec = method_spec(lay, wc.method)
    return f"--pairs-root {shlex.quote(lay.pairs_root(spec))} --method {shlex.quote(spec)}"


def eval_inputs(wc):
    """The splits a model is tested on and the model."""
    lay = layout_of("evaluate", wc.k)
    spec = method_spec(lay, wc.method)
    return {"splits": [intact(lay.split(p), "split") for p in scope_products(wc.scope)],
            "model": intact(lay.seg_model(wc.model, spec, wc.scope))}


def run_outputs(lay):
    """What the tables of configuration lay read: splits, every score file, generation metrics."""
    d = lay.cfg["downstream"]
    scores = [intact(lay.scores(model, m, scope), "scores") for model in d["models"] for m in d["methods"]
              for scope in seg_scopes(lay.cfg, products())]
    scores += [lay.detector_scores(i["model"], i["method"]) for i in detector_instances(lay.cfg)]
    gen = []
    if lay.cfg["gen_metrics"]["enabled"]:
        gen = [intact(lay.gen_metrics(m, p)) for m in lay.gen_metrics_methods() for p in products()]
    return [intact(lay.split(p), "split") for p in products()] + scores + gen


# ----------------------------------------------------------------------------- damaged outputs (issue 25)
# Damage is found at the stage boundary: every input function above passes the run's own outputs a later stage
# trusts through intact(). When the DAG is built, an existing output that is damaged -- a pairs file whose size
# differs from what its manifest recorded or whose manifest is cut, a weights file shorter than its safetensors
# header says, a split manifest or JSON that does not parse, a scores file cut mid-row -- is forced to run again
# (Snakemake's forcefiles: what --forcerun adds), so `snakemake -n` plans its job and every job downstream of it
# ("reason: Forced execution"), naming the file. Cheap: a stat per pair file, headers of weights, parses of JSON /
# CSV (seas.data.integrity.output_damage). External folders are not the workflow's to regenerate: the jobs that
# read them check every file before they start (images complete, masks binary) and fail naming the first bad one.
#: a complete scores file (downstream.evaluate.SCORES_CHECK, less the metric names: the workflow imports no sklearn)
_SCORES_CHECK = {"columns": ["product"], "last_row": {"product": "mean"}}


@lru_cache(maxsize=None)
def _damage(path, kind):
    from seas.data.integrity import output_damage

    if kind == "scores":
        return output_damage(path, "csv", **_SCORES_CHECK)
    return output_damage(path, kind)


def intact(path, kind=None):
    """`path` (one of the run's outputs, as an input of another job); when it exists damaged, its job is forced to
    run again (and with it everything downstream). `kind`: "split" (seas.data.split.Split.load), "scores", or None
    (by the path: a folder, manifest.csv, *.safetensors, *.json)."""
    reason = _damage(str(path), kind)
    dag = getattr(workflow, "dag", None)
    if reason and dag is not None and str(path) not in dag.forcefiles:
        from snakemake.logging import logger

        logger.warning(f"damaged output: {reason}\n  -> the job that wrote {path} runs again (and what depends on it)")
        dag.forcefiles.add(str(path))
    return path


# ----------------------------------------------------------------------------- the tiny prior (issue 24)
# model.tiny_prior (seas.models.prior_choice): null = random weights; a file = that prior (a warning here when it never
# saw some of the run's products, and the tables say so); auto = the committed demo prior where its manifest covers
# the run, else the prior the stage train_prior pretrains on the run's own train/good images (rules/data.smk).
def _train_good_hashes(product):
    """sha256 of a product's train/good images (its dataset manifest), None where the tree is not built yet."""
    if IS_DEMO and not (Path(ROOT) / "demo_dataset.json").is_file():
        return None
    good = str((Path(ROOT) / product / "train" / "good").resolve()) + "/"
    files = _dataset_manifest(ROOT, product)["files"]
    return [f["sha256"] for path, f in sorted(files.items()) if path.startswith(good)]


def _prior_choice_products():
    """The run's products as far as they are known when the workflow is parsed (the demo's before it is built:
    the config's list, or none -- a demo prior is checked against the demo parameters)."""
    if IS_DEMO and not (Path(ROOT) / "demo_dataset.json").is_file():
        want = CFG["dataset"]["products"]
        return [] if want == "all" else list(want)
    return list(_discover_products())


def run_prior_choice():
    """The run's seas.models.prior_choice.PriorChoice (random / file / train)."""
    from seas.models.prior_choice import choose

    try:
        return choose(CFG, _prior_choice_products(), _train_good_hashes)
    except SeasError as e:
        raise WorkflowError(str(e))


def prior_warning(choice):
    """The parse-time warning of a pinned prior that never saw some of the run's products (or None)."""
    from seas.models.prior_choice import warning_text

    return warning_text(choice)


# ----------------------------------------------------------------------------- tables
#: tables with a `_vs_paper` companion: downstream.report.paper.COMPARED_TABLES (kept equal by
#: tests/downstream/report/test_paper.py; not imported here, so parsing the workflow needs no pandas)
COMPARED_TABLES = ["generation.csv", "segmentation.csv", "detection.csv", "segmentation_per_product.csv",
                   "detection_per_product.csv"]
TABLE_NAMES = ["segmentation", "detection", "segmentation_per_product", "detection_per_product", "cost",
               "cost_per_job"]
if CFG["gen_metrics"]["enabled"]:
    TABLE_NAMES.insert(0, "generation")


def _cost_inputs(wildcards=None):
    """The benchmark files of every job the cost table reads (downstream.report.cost.expected_jobs): the table is rebuilt
    when a stage reruns. (The stage CLIs' run_record.json files live inside those jobs' outputs.)"""
    from downstream.report.cost import benchmark_files

    return benchmark_files(CFG, {p: types_of(p) for p in products()}, RUN)


def _table_inputs(wildcards=None):
    return run_outputs(LAYOUT)


def study_inputs(wildcards):
    """Every variant's table inputs: a study table is rebuilt when any variant's scores change."""
    if wildcards.study in STUDY_ERRORS:
        raise WorkflowError(f"study {wildcards.study} does not apply to this configuration ({_SOURCE}):\n"
                            f"{STUDY_ERRORS[wildcards.study]}")
    return sorted({f for lay in STUDY_LAYOUTS[wildcards.study] for f in run_outputs(lay)})


def study_json(wildcards):
    """The study's definition and its variants' stage keys: the study rule's params (rerun trigger)."""
    s = STUDIES[wildcards.study]
    return json.dumps({"study": {"title": s.title, "paper_table": s.paper_table, "models": s.models,
                                 "methods": s.methods, "variants": s.variants}}, sort_keys=True, default=list)


_ALL_METHODS = sorted({method_dir(m) for lay in LAYOUTS for m in all_methods(lay.cfg)})
_ALL_MODELS = sorted({m for lay in LAYOUTS for m in lay.cfg["downstream"]["models"]})


wildcard_constraints:
    k=r"[0-9a-f]{%d}" % KEY_LEN,
    product=r"[^/]+",
    atype=r"[^/]+",
    group=r"all|type-[^/]+",
    scope=r"all|product-[^/]+",
    method="|".join(re.escape(m) for m in _ALL_METHODS),
    model="|".join(_ALL_MODELS),
    study="|".join(re.escape(s) for s in STUDIES) or "NO_STUDY",


# ----------------------------------------------------------------------------- the report's pages (rules/report.smk)
from downstream.report.plot_specs import plot_names  # noqa: E402  (pure Python: which plot from which table)

#: every table of the run as an HTML page: the run's tables, their _vs_paper companions, the studies'
RUN_STUDIES = list(CFG["studies"])
REPORT_TABLES = (TABLE_NAMES + [f"{n}_vs_paper" for n in TABLE_NAMES if f"{n}.csv" in COMPARED_TABLES]
                 + [f"study_{s}" for s in RUN_STUDIES] + [f"study_{s}_vs_paper" for s in RUN_STUDIES])
PLOT_NAMES = plot_names(TABLE_NAMES + [f"study_{s}" for s in RUN_STUDIES])


def _table_page_group(name):
    if name.startswith("study_"):
        return "studies"
    return "the paper beside ours" if name.endswith("_vs_paper") else "this run"
