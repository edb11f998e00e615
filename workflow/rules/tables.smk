# Tables (the paper's comparisons, as CSV) and the report's sample grids.

TABLE_NAMES = ["segmentation", "detection", "segmentation_per_product", "detection_per_product", "cost",
               "cost_per_job"]
if CFG["gen_metrics"]["enabled"]:
    TABLE_NAMES.insert(0, "generation")


def _table_inputs(wildcards=None):
    scores = expand(f"{RUN}/segmentation/{{model}}/{{method}}/scores.csv", model=MODELS, method=list(METHODS))
    gen = []
    if CFG["gen_metrics"]["enabled"]:
        gen = expand(f"{RUN}/gen_metrics/{{method}}/{{product}}.json", method=generated_method_ids(), product=products())
    return all_splits() + scores + gen


def _cost_inputs(wildcards=None):
    """The benchmark files of every job the cost table reads (downstream.cost.expected_jobs): the table is rebuilt
    when a stage reruns. (The stage CLIs' run_record.json files live inside those jobs' outputs.)"""
    from downstream.cost import benchmark_files

    return benchmark_files(CFG, {p: types_of(p) for p in products()}, RUN)


rule tables:
    """Collect every score into <results_dir>/tables/*.csv (labelled with dataset, generator model and protocol),
    and the jobs' benchmark files into cost.csv (measured cost of this run)."""
    input:
        _table_inputs,
        benchmarks=_cost_inputs,
    output:
        [
            report(
                f"{TABLES}/{name}.csv",
                category="Tables",
                caption="../report/tables.rst",
                labels={"table": name},
            )
            for name in TABLE_NAMES
        ],
    params:
        cfg=cfg_params("dataset.name", "model.pretrained", "model.tiny", "downstream.models", "downstream.methods",
                       "gen_metrics.enabled", "split.shots", "split.rule", "generator.scope",
                       "resources.gpus_per_job"),
        config=RESOLVED_CONFIG,
        run_dir=RUN,
        out_dir=TABLES,
        gen_methods=" ".join(shlex.quote(METHODS[m]) for m in generated_method_ids()),
    log:
        f"{RUN}/logs/tables.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/base.yaml"
    shell:
        "{JOBENV} {PY} -m downstream.tables --config {params.config:q} --run-dir {params.run_dir:q} --out-dir {params.out_dir:q}"
        " --gen-methods {params.gen_methods} > {log:q} 2>&1"


rule sample_grid:
    """A grid of sample image-mask pairs of one method and product, for the report."""
    input:
        lambda wc: pairs_of_product(wc.method, wc.product),
    output:
        report(
            f"{RUN}/report/samples/{{method}}/{{product}}.png",
            category="Samples",
            subcategory="{method}",
            caption="../report/samples.rst",
            labels={"method": "{method}", "product": "{product}"},
        ),
    params:
        pairs=lambda wc: f"{pairs_root(wc.method)}/{wc.product}",
        per_type=4,
        title=lambda wc: f"{wc.method} / {wc.product}",
    log:
        f"{RUN}/logs/sample_grid/{{method}}/{{product}}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/base.yaml"
    shell:
        "{JOBENV} {PY} {GRID_SCRIPT} --pairs {params.pairs:q} --per-type {params.per_type}"
        " --title {params.title:q} --out {output:q} > {log:q} 2>&1"
