# Data: the demo dataset and the tiny model (only when the config asks the workflow to build them),
# and the few-shot split manifest of every product.

if IS_DEMO:

    checkpoint demo_data:
        """The procedurally generated demo dataset (MVTec layout). A checkpoint: its products and anomaly
        types are read from the tree once it exists."""
        output:
            directory(ROOT),
        params:
            cfg=stage_params("seas.demo_data"),
            config=RESOLVED_CONFIG,
        log:
            f"{RUN}/logs/demo_data.log",
        benchmark:
            f"{RUN}/benchmarks/demo_data.tsv"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=15,
        conda:
            "../../envs/base.yaml"
        shell:
            "seas_python -m seas.demo_data --config {params.config:q} --out {output:q} > {log:q} 2>&1"


if TINY:

    rule tiny_sd:
        """A tiny random model with Stable Diffusion v1-4's structure (NOT Stable Diffusion: tables say so)."""
        output:
            directory(PRETRAINED),
        params:
            cfg=stage_params("seas.tiny_sd"),
            config=RESOLVED_CONFIG,
        log:
            f"{RUN}/logs/tiny_sd.log",
        benchmark:
            f"{RUN}/benchmarks/tiny_sd.tsv"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=15,
        conda:
            "../../envs/seas.yaml"
        shell:
            "seas_python -m seas.tiny_sd --config {params.config:q} --out {output:q} > {log:q} 2>&1"


rule split:
    """Few-shot split manifest of one product: training anomalies per type, normal images, test set."""
    input:
        dataset_input,
    output:
        f"{RUN}/split/{{product}}.json",
    params:
        cfg=stage_params("seas.data"),
        config=RESOLVED_CONFIG,
    log:
        f"{RUN}/logs/split/{{product}}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/base.yaml"
    shell:
        "seas_python -m seas.data split --config {params.config:q} --product {wildcards.product:q} --out {output:q} > {log:q} 2>&1"
