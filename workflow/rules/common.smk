# Common code of the workflow (included first by the Snakefile): configuration, product / type discovery, input
# functions, the shell prefix of the jobs.
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
from seas.config import run_dir, stage_keys, validate_config  # noqa: E402
from seas.errors import SeasError  # noqa: E402
from seas.pairs import BASELINE_METHODS, external_path, is_external  # noqa: E402


# --config values: Snakemake hands nested ones over as strings; read them as YAML like the CLIs' --set
wflib.deep_update(config, wflib.typed_overrides(dict(workflow.config_settings.config or {})))
_SOURCE = " and ".join(str(p) for p in workflow.overwrite_configfiles) or "config.yaml"
if workflow.config_settings.config:
    _SOURCE = f"{_SOURCE} (with --config overrides)"
try:
    CFG = validate_config(config, source=_SOURCE)
    METHODS = wflib.method_table(CFG["downstream"]["methods"])
except (SeasError, wflib.WorkflowConfigError) as _e:
    raise WorkflowError(str(_e))

RUN = str(run_dir(CFG))
RESOLVED_CONFIG = f"{RUN}/config.yaml"
try:
    wflib.write_if_changed(RESOLVED_CONFIG, yaml.safe_dump(CFG, sort_keys=True))
except OSError as _e:  # a full or read-only results_dir: one line naming the folder, not a traceback
    from seas.runtime import io_error_message

    raise WorkflowError(io_error_message(_e) or str(_e))
TABLES = f"{CFG['results_dir']}/tables"

ROOT = CFG["dataset"]["root"]
IS_DEMO = CFG["dataset"]["name"] == "demo"
PRETRAINED = CFG["model"]["pretrained"]
TINY = CFG["model"]["tiny"]
MODELS = list(CFG["downstream"]["models"])
GPUS = CFG["resources"]["gpus_per_job"]


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


def stage_params(module, **fields):
    """JSON of the config keys stage `module` reads (its CONFIG_KEYS): the rule's `params: cfg`, the params rerun
    trigger."""
    return wflib.section_json(CFG, *stage_keys(module, **fields))


# ----------------------------------------------------------------------------- products and types
@lru_cache(maxsize=None)
def _discover_products():
    from seas.data import selected_products

    try:
        return tuple(selected_products(CFG))
    except SeasError as e:
        raise WorkflowError(str(e))


@lru_cache(maxsize=None)
def _discover_types(product):
    from seas.data import discover_types

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


def split_file(product):
    return f"{RUN}/split/{product}.json"


def all_splits(wildcards=None):
    return [split_file(p) for p in products()]


def dataset_input(wildcards=None):
    """The dataset tree as an input where the DAG builds it (demo), nothing for an existing tree."""
    return [ROOT] if IS_DEMO else []


def base_model_input(wildcards=None):
    return [PRETRAINED] if TINY else []


def generator_group(product, atype):
    """The generator (and RMP) of one anomaly type: `all` (one per product, SeaS) or `type-<T>` (generator.scope:
    type, the paper's 'w/o Mixed' ablation: one per anomaly type)."""
    return f"type-{atype}" if CFG["generator"]["scope"] == "type" else "all"


def group_type_args(wildcards):
    """The CLI option restricting a generator to its group's anomaly type (nothing for `all`)."""
    g = wildcards.group
    return "" if g == "all" else f"--anomaly-type {shlex.quote(g[len('type-'):])}"


def pairs_root(method_id):
    """Where a method's pairs live: <run>/methods/<id>, or the folder of an external method."""
    spec = METHODS[method_id]
    return external_path(spec) if is_external(spec) else f"{RUN}/methods/{method_id}"


def pairs_of_product(method_id, product):
    """The DAG files that mark a method's pairs of one product as complete ([] for external methods)."""
    spec = METHODS[method_id]
    if spec == "seas":
        return [f"{RUN}/methods/seas/{product}/{t}/manifest.csv" for t in types_of(product)]
    if spec in BASELINE_METHODS:
        return [f"{RUN}/methods/{method_id}/{product}"]
    return []


def generated_method_ids():
    """Methods that get IS / IC-LPIPS: every method that generates pairs (not `real`, the real images)."""
    return [m for m, spec in METHODS.items() if spec != "real"]


# ----------------------------------------------------------------------------- tables
TABLE_NAMES = ["segmentation", "detection", "segmentation_per_product", "detection_per_product", "cost",
               "cost_per_job"]
if CFG["gen_metrics"]["enabled"]:
    TABLE_NAMES.insert(0, "generation")


def _cost_inputs(wildcards=None):
    """The benchmark files of every job the cost table reads (downstream.cost.expected_jobs): the table is rebuilt
    when a stage reruns. (The stage CLIs' run_record.json files live inside those jobs' outputs.)"""
    from downstream.cost import benchmark_files

    return benchmark_files(CFG, {p: types_of(p) for p in products()}, RUN)


def _table_inputs(wildcards=None):
    scores = expand(f"{RUN}/segmentation/{{model}}/{{method}}/scores.csv", model=MODELS, method=list(METHODS))
    gen = []
    if CFG["gen_metrics"]["enabled"]:
        gen = expand(f"{RUN}/gen_metrics/{{method}}/{{product}}.json", method=generated_method_ids(), product=products())
    return all_splits() + scores + gen


wildcard_constraints:
    product=r"[^/]+",
    atype=r"[^/]+",
    group=r"all|type-[^/]+",
    method="|".join(re.escape(m) for m in METHODS),
    model="|".join(MODELS),
