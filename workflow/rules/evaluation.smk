# Evaluation: IS / IC-LPIPS of every generated method; one segmentation model per (model, method) for all products
# of the dataset, trained on that method's pairs + the normal training images, scored on the held-out real
# anomalies + good images; the tables (the paper's comparisons, as CSV).


rule gen_metrics:
    """IS (torch-fidelity), IC-LPIPS and KID of one method's pairs of one product."""
    input:
        unpack(gen_metrics_inputs),
    output:
        PAT.gen_metrics("{method}", "{product}"),
    params:
        cfg=stage_cfg("gen_metrics"),
        config=stage_config_file("gen_metrics"),
        pairs=gen_metrics_pairs,
        method=job_method("gen_metrics"),
    log:
        job_file(RUN, "logs", "gen_metrics"),
    benchmark:
        job_file(RUN, "benchmarks", "gen_metrics")
    threads: job_threads(2)
    resources:
        gpu=GPUS,
        mem_mb=16000,
        runtime=stage_runtime("gen_metrics"),
    conda:
        "../../envs/seas.yaml"
    shell:
        "OMP_NUM_THREADS={threads} seas_python_gpu {resources.gpu} -m downstream.gen_metrics --config {params.config:q} --split {input.split:q}"
        " --pairs {params.pairs:q} --method {params.method:q} --out {output:q} > {log:q} 2>&1"


rule train_seg:
    """Train one segmentation model on one method's pairs of every product (or of one: downstream.protocol
    per_product, scope product-<P>)."""
    input:
        unpack(seg_inputs),
    output:
        model=PAT.seg_model("{model}", "{method}", "{scope}"),
        info=PAT.seg_info("{model}", "{method}", "{scope}"),
    params:
        cfg=stage_cfg("train_seg"),
        config=stage_config_file("train_seg"),
        pairs_root=seg_pairs_root,
        method=job_method("train_seg"),
        allow=allow_test_copies_arg,
        outdir=lambda wc, output: str(Path(output[0]).parent),
    log:
        job_file(RUN, "logs", "train_seg"),
    benchmark:
        job_file(RUN, "benchmarks", "train_seg")
    threads: job_threads(4)
    resources:
        gpu=GPUS,
        mem_mb=32000,
        runtime=stage_runtime("train_seg"),
    conda:
        "../../envs/downstream.yaml"
    shell:
        "OMP_NUM_THREADS={threads} seas_python_gpu {resources.gpu} -m downstream.train_seg --config {params.config:q} --model {wildcards.model:q}"
        " --pairs-root {params.pairs_root:q} --splits {input.splits:q} --method {params.method:q} --out {params.outdir:q}"
        " {params.allow} > {log:q} 2>&1"


rule evaluate:
    """Pixel- and image-level scores of one trained segmentation model on every product's test set (or its
    product's, per-product protocol)."""
    input:
        unpack(eval_inputs),
    output:
        PAT.scores("{model}", "{method}", "{scope}"),
    params:
        cfg=stage_cfg("evaluate"),
        config=stage_config_file("evaluate"),
        ckpt=lambda wc, input: str(Path(input.model).parent),
    log:
        job_file(RUN, "logs", "evaluate"),
    benchmark:
        job_file(RUN, "benchmarks", "evaluate")
    threads: job_threads(2)
    resources:
        gpu=GPUS,
        mem_mb=16000,
        runtime=stage_runtime("evaluate"),
    conda:
        "../../envs/downstream.yaml"
    shell:
        "OMP_NUM_THREADS={threads} seas_python_gpu {resources.gpu} -m downstream.evaluate --config {params.config:q} --model {wildcards.model:q}"
        " --checkpoint {params.ckpt:q} --splits {input.splits:q} --out {output:q} > {log:q} 2>&1"


rule train_detector:
    """One anomaly detector (anomalib: downstream.detectors) per product of the dataset, trained on its normal
    training images (+ the method's pairs: draem_pairs) and scored on its held-out test split by our metrics."""
    input:
        unpack(detector_inputs),
    output:
        scores=PAT.detector_scores("{model}", "{method}"),
    params:
        cfg=stage_cfg("train_detector"),
        config=stage_config_file("train_detector"),
        pairs=detector_pairs_args,
        outdir=lambda wc, output: str(Path(output.scores).parent),
    wildcard_constraints:
        model="patchcore|stfpm|draem|draem_pairs|glass|glass_pairs",
        method="|".join(re.escape(m) for m in _ALL_METHODS + [NO_METHOD]),
    log:
        job_file(RUN, "logs", "train_detector"),
    benchmark:
        job_file(RUN, "benchmarks", "train_detector")
    threads: job_threads(4)
    resources:
        gpu=GPUS,
        mem_mb=32000,
        runtime=stage_runtime("train_detector"),
    conda:
        "../../envs/downstream.yaml"
    shell:
        "OMP_NUM_THREADS={threads} seas_python_gpu {resources.gpu} -m downstream.train_detector --config {params.config:q} --model {wildcards.model:q}"
        " --splits {input.splits:q} {params.pairs} --out {params.outdir:q} > {log:q} 2>&1"


rule tables:
    """Collect every score into <results_dir>/<run_name>/tables/*.csv (labelled with dataset, generator model and protocol),
    and the jobs' benchmark files into cost.csv (measured cost of this run)."""
    input:
        _table_inputs,
        benchmarks=_cost_inputs,
    output:
        [
            report(
                f"{TABLES}/{name}.csv",
                category="CSV",
                subcategory="this run",
                caption="../report/tables.rst",
                labels={"table": name},
            )
            for name in TABLE_NAMES
        ],
        # the paper's numbers beside ours (downstream.report.paper; header only without a paper table)
        vs_paper=[f"{TABLES}/{name}_vs_paper.csv" for name in TABLE_NAMES if f"{name}.csv" in COMPARED_TABLES],
    params:
        cfg=stage_params("tables"),
        config=RESOLVED_CONFIG,
        run_dir=lambda wc, output: str(Path(output[0]).parent.parent),  # <run>: the tables live in <run>/tables
        out_dir=lambda wc, output: str(Path(output[0]).parent),
        gen_methods=" ".join(shlex.quote(m) for m in LAYOUT.gen_metrics_methods()),
    log:
        f"{RUN}/logs/tables.log",
    threads: job_threads(1)
    resources:
        mem_mb=2000,
        runtime=STAGES["tables"].minutes(CFG),
    conda:
        "../../envs/base.yaml"
    shell:
        "seas_python -m downstream.report.tables --config {params.config:q} --run-dir {params.run_dir:q} --out-dir {params.out_dir:q}"
        " --gen-methods {params.gen_methods} > {log:q} 2>&1"


rule study:
    """One study's table (seas.run.studies): a row per variant x method, from the variants' scores and generation
    metrics; every stage a variant does not change is shared with the others (seas.run.layout)."""
    input:
        study_inputs,
    output:
        table=report(f"{TABLES}/study_{{study}}.csv", category="CSV", subcategory="studies", caption="../report/tables.rst",
                     labels={"study": "{study}"}),
        vs_paper=f"{TABLES}/study_{{study}}_vs_paper.csv",
    params:
        cfg=study_json,
        config=RESOLVED_CONFIG,
        run_dir=lambda wc, output: str(Path(output[0]).parent.parent),  # <run>: the tables live in <run>/tables
    log:
        f"{RUN}/logs/study/{{study}}.log",
    threads: job_threads(1)
    resources:
        mem_mb=2000,
        runtime=STAGES["study"].minutes(CFG),
    conda:
        "../../envs/base.yaml"
    shell:
        "seas_python -m downstream.report.study --config {params.config:q} --run-dir {params.run_dir:q} --study {wildcards.study:q}"
        " --out {output.table:q} > {log:q} 2>&1"


for _name in STUDIES:

    rule:
        name:
            f"study_{_name}"
        input:
            f"{TABLES}/study_{_name}.csv",
        localrule: True
