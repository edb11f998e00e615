# Evaluation: IS / IC-LPIPS of every generated method; one segmentation model per (model, method) for all products
# of the dataset, trained on that method's pairs + the normal training images, scored on the held-out real
# anomalies + good images; the tables (the paper's comparisons, as CSV).


rule gen_metrics:
    """IS (torch-fidelity) and IC-LPIPS of one method's pairs of one product."""
    input:
        split=f"{RUN}/split/{{product}}.json",
        pairs=lambda wc: pairs_of_product(wc.method, wc.product),
    output:
        f"{RUN}/gen_metrics/{{method}}/{{product}}.json",
    params:
        cfg=stage_params("seas.gen_metrics"),
        config=RESOLVED_CONFIG,
        pairs=lambda wc: f"{pairs_root(wc.method)}/{wc.product}",
        method=lambda wc: wc.method,
    log:
        f"{RUN}/logs/gen_metrics/{{method}}/{{product}}.log",
    benchmark:
        f"{RUN}/benchmarks/gen_metrics/{{method}}/{{product}}.tsv"
    threads: 2
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
    """Train one segmentation model on one method's pairs of every product."""
    input:
        splits=all_splits,
        pairs=lambda wc: [f for p in products() for f in pairs_of_product(wc.method, p)],
    output:
        model=f"{RUN}/segmentation/{{model}}/{{method}}/model.safetensors",
        info=f"{RUN}/segmentation/{{model}}/{{method}}/train.json",
    params:
        cfg=lambda wc: stage_params("downstream.train", model=wc.model),
        config=RESOLVED_CONFIG,
        pairs_root=lambda wc: pairs_root(wc.method),
        outdir=lambda wc, output: str(Path(output[0]).parent),
    log:
        f"{RUN}/logs/train_seg/{{model}}/{{method}}.log",
    benchmark:
        f"{RUN}/benchmarks/train_seg/{{model}}/{{method}}.tsv"
    threads: 4
    resources:
        gpu=GPUS,
        mem_mb=32000,
        runtime=lambda wc: wflib.seg_train_minutes(CFG, wc.model),
    conda:
        "../../envs/downstream.yaml"
    shell:
        "OMP_NUM_THREADS={threads} seas_python_gpu {resources.gpu} -m downstream.train --config {params.config:q} --model {wildcards.model:q}"
        " --pairs-root {params.pairs_root:q} --splits {input.splits:q} --method {wildcards.method:q} --out {params.outdir:q}"
        " > {log:q} 2>&1"


rule evaluate:
    """Pixel- and image-level scores of one trained segmentation model on every product's test set."""
    input:
        splits=all_splits,
        model=f"{RUN}/segmentation/{{model}}/{{method}}/model.safetensors",
    output:
        f"{RUN}/segmentation/{{model}}/{{method}}/scores.csv",
    params:
        cfg=stage_params("downstream.evaluate"),
        config=RESOLVED_CONFIG,
        ckpt=lambda wc, input: str(Path(input.model).parent),
    log:
        f"{RUN}/logs/evaluate/{{model}}/{{method}}.log",
    benchmark:
        f"{RUN}/benchmarks/evaluate/{{model}}/{{method}}.tsv"
    threads: 2
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
        "seas_python -m downstream.tables --config {params.config:q} --run-dir {params.run_dir:q} --out-dir {params.out_dir:q}"
        " --gen-methods {params.gen_methods} > {log:q} 2>&1"
