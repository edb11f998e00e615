# Methods: the SeaS stages per product (or per anomaly type, generator.scope: type -- the {group} wildcard, see
# seas.run.layout.group_of): fine-tune the generator -> train the RMP branch -> generate per anomaly type;
# and the built-in baselines (real / cutpaste / draem) per product.
# Outputs are the cached artifacts, in folders keyed by the config values each stage reads ({k}, seas.run.layout).
# Long stages resume from their own work state (seas.run.resume: generator/<k>/<P>/<G>.work/, rmp/<k>/<P>/<G>.work/,
# the images already written of a type folder) after a crash; a folder is complete only once its CLI has renamed
# it into place (generator/, rmp/, baselines) or written manifest.csv last (generation).


rule train_generator:
    """Fine-tune the U-Net + the <ob>/<df> token embeddings on one product's few-shot anomalies and normals."""
    input:
        split=split_input("train_generator"),
        base=base_model_input,
    output:
        directory(PAT.generator("{product}", "{group}")),
    params:
        cfg=stage_cfg("train_generator"),
        config=stage_config_file("train_generator"),
        types=group_type_args,
    log:
        job_file(RUN, "logs", "train_generator"),
    benchmark:
        job_file(RUN, "benchmarks", "train_generator")
    threads: job_threads(4)
    resources:
        gpu=GPUS,
        mem_mb=32000,
        runtime=stage_runtime("train_generator"),
    conda:
        "../../envs/seas.yaml"
    shell:
        "OMP_NUM_THREADS={threads} seas_python_gpu {resources.gpu} -m seas.method.train_generator --config {params.config:q} --split {input.split:q}"
        " {params.types} --out {output:q} > {log:q} 2>&1"


rule train_rmp:
    """Train the Refined Mask Prediction branch on the frozen fine-tuned generator."""
    input:
        unpack(rmp_inputs),
    output:
        directory(PAT.rmp("{product}", "{group}")),
    params:
        cfg=stage_cfg("train_rmp"),
        config=stage_config_file("train_rmp"),
    log:
        job_file(RUN, "logs", "train_rmp"),
    benchmark:
        job_file(RUN, "benchmarks", "train_rmp")
    threads: job_threads(4)
    resources:
        gpu=GPUS,
        mem_mb=32000,
        runtime=stage_runtime("train_rmp"),
    conda:
        "../../envs/seas.yaml"
    shell:
        "OMP_NUM_THREADS={threads} seas_python_gpu {resources.gpu} -m seas.method.train_rmp --config {params.config:q} --split {input.split:q}"
        " --generator {input.generator:q} --out {output:q} > {log:q} 2>&1"


rule generate:
    """Image-mask pairs of one anomaly type (resumable: images persist, manifest.csv is written last)."""
    input:
        unpack(generation_inputs),
    output:
        PAT.generation_manifest("{product}", "{atype}"),
    params:
        cfg=stage_cfg("generate"),
        config=stage_config_file("generate"),
        outdir=lambda wc, output: str(Path(output[0]).parent),
    log:
        job_file(RUN, "logs", "generate"),
    benchmark:
        job_file(RUN, "benchmarks", "generate")
    threads: job_threads(4)
    resources:
        gpu=GPUS,
        mem_mb=16000,
        runtime=stage_runtime("generate"),
    conda:
        "../../envs/seas.yaml"
    shell:
        "OMP_NUM_THREADS={threads} seas_python_gpu {resources.gpu} -m seas.method.generate --config {params.config:q} --split {input.split:q}"
        " --generator {input.generator:q} --rmp {input.rmp:q} --type {wildcards.atype:q} --out {params.outdir:q} > {log:q} 2>&1"


rule baselines:
    """Built-in comparison pairs (real / cutpaste / draem) for every anomaly type of one product."""
    input:
        split=split_input("baselines"),
    output:
        directory(PAT.pairs_dir("{method}", "{product}")),
    wildcard_constraints:
        method="|".join(BASELINE_METHODS),
    params:
        cfg=stage_cfg("baselines"),
        config=stage_config_file("baselines"),
    log:
        job_file(RUN, "logs", "baselines"),
    benchmark:
        job_file(RUN, "benchmarks", "baselines")
    threads: job_threads(1)
    resources:
        mem_mb=4000,
        runtime=stage_runtime("baselines"),
    conda:
        "../../envs/base.yaml"
    shell:
        "OMP_NUM_THREADS={threads} seas_python -m downstream.baselines --config {params.config:q} --method {wildcards.method:q}"
        " --split {input.split:q} --out {output:q} > {log:q} 2>&1"


rule import_pairs:
    """One product of an external folder (external:<path>: a peer's released or generated pairs, in its own
    layout) rewritten into the pairs layout at the run's size; rerun when the folder's content changes."""
    output:
        directory(PAT.pairs_dir("{method}", "{product}")),
    wildcard_constraints:
        method=r"external-[^/]+",
    params:
        cfg=stage_cfg("import_pairs"),
        config=stage_config_file("import_pairs"),
        method=job_method("import_pairs"),
        source=external_digest,
        types=import_types_args,
    log:
        job_file(RUN, "logs", "import_pairs"),
    benchmark:
        job_file(RUN, "benchmarks", "import_pairs")
    threads: job_threads(1)
    resources:
        mem_mb=4000,
        runtime=stage_runtime("import_pairs"),
    conda:
        "../../envs/base.yaml"
    shell:
        "OMP_NUM_THREADS={threads} seas_python -m seas.data.import_pairs --config {params.config:q} --method {params.method:q}"
        " --product {wildcards.product:q} {params.types} --out {output:q} > {log:q} 2>&1"
