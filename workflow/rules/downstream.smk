# Downstream: baseline pair generators per product; one segmentation model per (model, method) for all
# products of the dataset, trained on that method's pairs + the normal training images; evaluation on the
# held-out real anomalies + good images.


rule baselines:
    """Built-in comparison pairs (real / cutpaste / draem) for every anomaly type of one product."""
    input:
        split=f"{RUN}/split/{{product}}.json",
    output:
        directory(f"{RUN}/methods/{{method}}/{{product}}"),
    wildcard_constraints:
        method="|".join(BASELINE_METHODS),
    params:
        cfg=stage_params("downstream.baselines"),
        config=RESOLVED_CONFIG,
    log:
        f"{RUN}/logs/baselines/{{method}}/{{product}}.log",
    benchmark:
        f"{RUN}/benchmarks/baselines/{{method}}/{{product}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/base.yaml"
    shell:
        "{JOBENV} OMP_NUM_THREADS={threads} {PY} -m downstream.baselines --config {params.config:q} --method {wildcards.method:q}"
        " --split {input.split:q} --out {output:q} > {log:q} 2>&1"


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
        "{JOBENV} OMP_NUM_THREADS={threads} {CLAIM} {PY} -m downstream.train --config {params.config:q} --model {wildcards.model}"
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
        "{JOBENV} OMP_NUM_THREADS={threads} {CLAIM} {PY} -m downstream.evaluate --config {params.config:q} --model {wildcards.model}"
        " --checkpoint {params.ckpt:q} --splits {input.splits:q} --out {output:q} > {log:q} 2>&1"
