# Methods: the SeaS stages per product (or per anomaly type, generator.scope: type -- the {group} wildcard, see
# seas.layout.group_of): fine-tune the generator -> train the RMP branch -> generate per anomaly type;
# and the built-in baselines (real / cutpaste / draem) per product.
# Outputs are the cached artifacts, in folders keyed by the config values each stage reads ({k}, seas.layout).
# Long stages resume from their own work state (seas.resume: generator/<k>/<P>/<G>.work/, rmp/<k>/<P>/<G>.work/,
# the images already written of a type folder) after a crash; a folder is complete only once its CLI has renamed
# it into place (generator/, rmp/, baselines) or written manifest.csv last (generation).


rule train_generator:
    """Fine-tune the U-Net + the <ob>/<df> token embeddings on one product's few-shot anomalies and normals."""
    input:
        split=lambda wc: layout_of("generator", wc.k).split(wc.product),
        base=base_model_input,
    output:
        directory(PAT.generator("{product}", "{group}")),
    params:
        cfg=lambda wc: stage_json("generator", wc.k),
        config=lambda wc: stage_config("generator", wc.k),
        types=group_type_args,
    log:
        job_file(RUN, "logs", "train_generator"),
    benchmark:
        job_file(RUN, "benchmarks", "train_generator")
    threads: job_threads(4)
    resources:
        gpu=GPUS,
        mem_mb=32000,
        runtime=lambda wc: wflib.generator_minutes(layout_of("generator", wc.k).cfg,
                                                   len(types_of(wc.product)) if wc.group == "all" else 1),
    conda:
        "../../envs/seas.yaml"
    shell:
        "OMP_NUM_THREADS={threads} seas_python_gpu {resources.gpu} -m seas.train --config {params.config:q} --split {input.split:q}"
        " {params.types} --out {output:q} > {log:q} 2>&1"


rule train_rmp:
    """Train the Refined Mask Prediction branch on the frozen fine-tuned generator."""
    input:
        split=lambda wc: layout_of("rmp", wc.k).split(wc.product),
        generator=lambda wc: layout_of("rmp", wc.k).generator(wc.product, wc.group),
    output:
        directory(PAT.rmp("{product}", "{group}")),
    params:
        cfg=lambda wc: stage_json("rmp", wc.k),
        config=lambda wc: stage_config("rmp", wc.k),
    log:
        job_file(RUN, "logs", "train_rmp"),
    benchmark:
        job_file(RUN, "benchmarks", "train_rmp")
    threads: job_threads(4)
    resources:
        gpu=GPUS,
        mem_mb=32000,
        runtime=lambda wc: wflib.rmp_minutes(layout_of("rmp", wc.k).cfg,
                                             len(types_of(wc.product)) if wc.group == "all" else 1),
    conda:
        "../../envs/seas.yaml"
    shell:
        "OMP_NUM_THREADS={threads} seas_python_gpu {resources.gpu} -m seas.train_rmp --config {params.config:q} --split {input.split:q}"
        " --generator {input.generator:q} --out {output:q} > {log:q} 2>&1"


rule generate:
    """Image-mask pairs of one anomaly type (resumable: images persist, manifest.csv is written last)."""
    input:
        unpack(generation_inputs),
    output:
        PAT.generation_manifest("{product}", "{atype}"),
    params:
        cfg=lambda wc: stage_json("generation", wc.k),
        config=lambda wc: stage_config("generation", wc.k),
        outdir=lambda wc, output: str(Path(output[0]).parent),
    log:
        job_file(RUN, "logs", "generate"),
    benchmark:
        job_file(RUN, "benchmarks", "generate")
    threads: job_threads(4)
    resources:
        gpu=GPUS,
        mem_mb=16000,
        runtime=lambda wc: wflib.generate_minutes(layout_of("generation", wc.k).cfg),
    conda:
        "../../envs/seas.yaml"
    shell:
        "OMP_NUM_THREADS={threads} seas_python_gpu {resources.gpu} -m seas.generate --config {params.config:q} --split {input.split:q}"
        " --generator {input.generator:q} --rmp {input.rmp:q} --type {wildcards.atype:q} --out {params.outdir:q} > {log:q} 2>&1"


rule baselines:
    """Built-in comparison pairs (real / cutpaste / draem) for every anomaly type of one product."""
    input:
        split=lambda wc: layout_of("baselines", wc.k).split(wc.product),
    output:
        directory(PAT.pairs_dir("{method}", "{product}")),
    wildcard_constraints:
        method="|".join(BASELINE_METHODS),
    params:
        cfg=lambda wc: stage_json("baselines", wc.k),
        config=lambda wc: stage_config("baselines", wc.k),
    log:
        job_file(RUN, "logs", "baselines"),
    benchmark:
        job_file(RUN, "benchmarks", "baselines")
    threads: job_threads(1)
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/base.yaml"
    shell:
        "OMP_NUM_THREADS={threads} seas_python -m downstream.baselines --config {params.config:q} --method {wildcards.method:q}"
        " --split {input.split:q} --out {output:q} > {log:q} 2>&1"
