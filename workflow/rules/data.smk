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

    # which prior the tiny model is assembled from (seas.models.prior_choice): model.tiny_prior null = random weights,
    # a file = that prior (warned about here when it never saw some of the run's products), auto = the committed
    # demo prior where its manifest covers the run, else the one the stage train_prior pretrains on the run's own
    # train/good images
    PRIOR_CHOICE = run_prior_choice()
    if PRIOR_CHOICE.mode == "train":
        TINY_PRIOR = LAYOUT.prior()
        print(f"model.tiny_prior auto: the committed demo prior does not cover this dataset; the stage "
              f"train_prior pretrains one on its products' train/good images ({TINY_PRIOR})", file=sys.stderr)
    else:
        TINY_PRIOR = PRIOR_CHOICE.path
    _PRIOR_WARNING = prior_warning(PRIOR_CHOICE)
    if _PRIOR_WARNING:
        print(f"WARNING: {_PRIOR_WARNING}", file=sys.stderr)

    rule train_prior:
        """The tiny prior pretrained on the run's own normal training images: every train/good image of the
        selected products as their splits list them (never a test image or an anomaly), under the 8
        flips/rotations (seas.models.train_prior; recipe model.prior). Resumable from <out>.work/."""
        input:
            splits=lambda wc: [layout_of("train_prior", wc.k).split(p) for p in products()],
        output:
            weights=PAT.prior(),
            manifest=PAT.prior_manifest(),
        params:
            cfg=stage_cfg("train_prior"),
            config=stage_config_file("train_prior"),
        log:
            job_file(RUN, "logs", "train_prior"),
        benchmark:
            job_file(RUN, "benchmarks", "train_prior")
        threads: job_threads(4)
        resources:
            gpu=GPUS,
            mem_mb=8000,
            runtime=stage_runtime("train_prior"),
        conda:
            "../../envs/seas.yaml"
        shell:
            "OMP_NUM_THREADS={threads} seas_python_gpu {resources.gpu} -m seas.models.train_prior --config {params.config:q}"
            " --splits {input.splits:q} --out {output.weights:q} > {log:q} 2>&1"

    rule tiny_sd:
        """A tiny model with Stable Diffusion v1-4's structure (NOT Stable Diffusion: tables say so): assembled from
        the pretrained prior (model.tiny_prior; auto: the committed demo prior or the one train_prior pretrains;
        hash-checked; `python -m seas.models.tiny_prior` regenerates the committed one), or random weights when that
        is null."""
        input:
            [] if TINY_PRIOR is None else [TINY_PRIOR, str(Path(TINY_PRIOR).with_suffix(".json"))],
        output:
            directory(PRETRAINED),
        params:
            cfg=stage_params("tiny_sd"),
            config=RESOLVED_CONFIG,
            prior="" if TINY_PRIOR is None else f"--prior {shlex.quote(str(TINY_PRIOR))}",
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
            "seas_python -m seas.models.tiny_sd --config {params.config:q} {params.prior} --out {output:q} > {log:q} 2>&1"


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
