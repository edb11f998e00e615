# Evaluation: IS / IC-LPIPS of every generated method; one segmentation model per (model, method) for all products
# of the dataset, trained on that method's pairs + the normal training images, scored on the held-out real
# anomalies + good images; the tables (the paper's comparisons, as CSV).


rule gen_metrics:
    """IS (torch-fidelity), IC-LPIPS and KID of one method's pairs of one product."""
    input:
        split=lambda wc: layout_of("gen_metrics", wc.k).split(wc.product),
        pairs=lambda wc: pairs_of_product(layout_of("gen_metrics", wc.k),
                                          method_spec(layout_of("gen_metrics", wc.k), wc.method), wc.product),
    output:
        PAT.gen_metrics("{method}", "{product}"),
    params:
        cfg=lambda wc: stage_json("gen_metrics", wc.k),
        config=lambda wc: stage_config("gen_metrics", wc.k),
        pairs=lambda wc: layout_of("gen_metrics", wc.k).pairs_dir(method_spec(layout_of("gen_metrics", wc.k), wc.method),
                                                                   wc.product),
        method=lambda wc: method_spec(layout_of("gen_metrics", wc.k), wc.method),
    log:
        job_file(RUN, "logs", "gen_metrics"),
    benchmark:
        job_file(RUN, "benchmarks", "gen_metrics")
    threads: job_threads(2)
    resources:
        gpu=GPUS,
        mem_mb=16000,
        runtime=60,
    conda:
        "../../envs/seas.yaml"
    shell:
        "OMP_NUM_THREADS={threads} seas_python_gpu {resources.gpu} -m seas.gen_metrics --config {params.config:q} --split {input.split:q}"
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
        cfg=lambda wc: stage_json("segmentation", wc.k, model=wc.model),
        config=lambda wc: stage_config("segmentation", wc.k),
        pairs_root=lambda wc: layout_of("segmentation", wc.k).pairs_root(method_spec(layout_of("segmentation", wc.k),
                                                                                      wc.method)),
        method=lambda wc: method_spec(layout_of("segmentation", wc.k), wc.method),
        outdir=lambda wc, output: str(Path(output[0]).parent),
    log:
        job_file(RUN, "logs", "train_seg"),
    benchmark:
        job_file(RUN, "benchmarks", "train_seg")
    threads: job_threads(4)
    resources:
        gpu=GPUS,
        mem_mb=32000,
        runtime=lambda wc: wflib.seg_train_minutes(layout_of("segmentation", wc.k).cfg, wc.model),
    conda:
        "../../envs/downstream.yaml"
    shell:
        "OMP_NUM_THREADS={threads} seas_python_gpu {resources.gpu} -m downstream.train --config {params.config:q} --model {wildcards.model:q}"
        " --pairs-root {params.pairs_root:q} --splits {input.splits:q} --method {params.method:q} --out {params.outdir:q}"
        " > {log:q} 2>&1"


rule evaluate:
    """Pixel- and image-level scores of one trained segmentation model on every product's test set (or its
    product's, per-product protocol)."""
    input:
        unpack(eval_inputs),
    output:
        PAT.scores("{model}", "{method}", "{scope}"),
    params:
        cfg=lambda wc: stage_json("evaluation", wc.k),
        config=lambda wc: stage_config("evaluation", wc.k),
        ckpt=lambda wc, input: str(Path(input.model).parent),
    log:
        job_file(RUN, "logs", "evaluate"),
    benchmark:
        job_file(RUN, "benchmarks", "evaluate")
    threads: job_threads(2)
    resources:
        gpu=GPUS,
        mem_mb=16000,
        runtime=60,
    conda:
        "../../envs/downstream.yaml"
    shell:
        "OMP_NUM_THREADS={threads} seas_python_gpu {resources.gpu} -m downstream.evaluate --config {params.config:q} --model {wildcards.model:q}"
        " --checkpoint {params.ckpt:q} --splits {input.splits:q} --out {output:q} > {log:q} 2>&1"


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
        cfg=stage_params("downstream.tables"),
        config=RESOLVED_CONFIG,
        run_dir=RUN,
        out_dir=lambda wc, output: str(Path(output[0]).parent),
        gen_methods=" ".join(shlex.quote(m) for m in LAYOUT.gen_metrics_methods()),
    log:
        f"{RUN}/logs/tables.log",
    threads: job_threads(1)
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/base.yaml"
    shell:
        "seas_python -m downstream.tables --config {params.config:q} --run-dir {params.run_dir:q} --out-dir {params.out_dir:q}"
        " --gen-methods {params.gen_methods} > {log:q} 2>&1"


rule study:
    """One study's table (seas.studies): a row per variant x method, from the variants' scores and generation
    metrics; every stage a variant does not change is shared with the others (seas.layout)."""
    input:
        study_inputs,
    output:
        report(f"{TABLES}/study_{{study}}.csv", category="Studies", caption="../report/tables.rst",
               labels={"study": "{study}"}),
    params:
        cfg=study_json,
        config=RESOLVED_CONFIG,
        run_dir=RUN,
    log:
        f"{RUN}/logs/study/{{study}}.log",
    threads: job_threads(1)
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/base.yaml"
    shell:
        "seas_python -m downstream.study --config {params.config:q} --run-dir {params.run_dir:q} --study {wildcards.study:q}"
        " --out {output:q} > {log:q} 2>&1"


for _name in STUDIES:

    rule:
        name:
            f"study_{_name}"
        input:
            f"{TABLES}/study_{_name}.csv",
        localrule: True
