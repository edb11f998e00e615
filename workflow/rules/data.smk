# Data: the demo dataset and the tiny model (only when the config asks the workflow to build them),
# and the few-shot split manifest of every product.

if IS_DEMO:

    checkpoint demo_data:
        """The procedurally generated demo dataset (MVTec layout). A checkpoint: its products and anomaly
        types are read from the tree once it exists."""
        output:
            directory(ROOT),
        params:
            cfg=stage_params("demo_data"),
            config=RESOLVED_CONFIG,
        log:
            f"{RUN}/logs/demo_data.log",
        benchmark:
            f"{RUN}/benchmarks/demo_data.tsv"
        threads: job_threads(1)
        resources:
            mem_mb=2000,
            runtime=STAGES["demo_data"].minutes(CFG),
        conda:
            "../../envs/base.yaml"
        shell:
            "seas_python -m seas.data.demo_data --config {params.config:q} --out {output:q} > {log:q} 2>&1"


if TINY:

    TINY_PRIOR = CFG["model"]["tiny_prior"]

    rule tiny_sd:
        """A tiny model with Stable Diffusion v1-4's structure (NOT Stable Diffusion: tables say so): assembled from
        the pretrained prior model.tiny_prior (hash-checked; `python -m seas.models.tiny_prior` regenerates it), or random
        weights when that is null."""
        input:
            [] if TINY_PRIOR is None else [TINY_PRIOR, str(Path(TINY_PRIOR).with_suffix(".json"))],
        output:
            directory(PRETRAINED),
        params:
            cfg=stage_params("tiny_sd"),
            config=RESOLVED_CONFIG,
        log:
            f"{RUN}/logs/tiny_sd.log",
        benchmark:
            f"{RUN}/benchmarks/tiny_sd.tsv"
        threads: job_threads(1)
        resources:
            mem_mb=4000,
            runtime=STAGES["tiny_sd"].minutes(CFG),
        conda:
            "../../envs/seas.yaml"
        shell:
            "seas_python -m seas.models.tiny_sd --config {params.config:q} --out {output:q} > {log:q} 2>&1"


rule split:
    """Few-shot split manifest of one product: training anomalies per type, normal images, test set, and the sha256
    of every file it selected. Reruns when one of those files changes (params.dataset: rules/common.smk), and with
    it every stage that reads the split."""
    input:
        dataset_input,
    output:
        PAT.split("{product}"),
    params:
        cfg=stage_cfg("split"),
        config=stage_config_file("split"),
        dataset=split_dataset_digest,
        manifest=split_manifest_file,
    log:
        job_file(RUN, "logs", "split"),
    threads: job_threads(1)
    resources:
        mem_mb=1000,
        runtime=stage_runtime("split"),
    conda:
        "../../envs/base.yaml"
    shell:
        "seas_python -m seas.data.split --config {params.config:q} --product {wildcards.product:q}"
        " --dataset-manifest {params.manifest:q} --out {output:q} > {log:q} 2>&1"
