# Methods: the SeaS stages per product (or per anomaly type, generator.scope: type -- the {group} wildcard, see
# generator_group in common.smk): fine-tune the generator -> train the RMP branch -> generate per anomaly type;
# and the built-in baselines (real / cutpaste / draem) per product.
# Outputs are the cached artifacts. Long stages resume from their own work state (seas.resume: generator/<P>/<G>.work/,
# rmp/<P>/<G>.work/, the images already written of a type folder) after a crash; a folder is complete only once
# its CLI has renamed it into place (generator/, rmp/, baselines) or written manifest.csv last (generation).


rule train_generator:
    """Fine-tune the U-Net + the <ob>/<df> token embeddings on one product's few-shot anomalies and normals."""
    input:
        split=f"{RUN}/split/{{product}}.json",
        base=base_model_input,
    output:
        directory(f"{RUN}/generator/{{product}}/{{group}}"),
    params:
        cfg=stage_params("seas.train"),
        config=RESOLVED_CONFIG,
        types=group_type_args,
    log:
        f"{RUN}/logs/train_generator/{{product}}/{{group}}.log",
    benchmark:
        f"{RUN}/benchmarks/train_generator/{{product}}/{{group}}.tsv"
    threads: 4
    resources:
        gpu=GPUS,
        mem_mb=32000,
        runtime=lambda wc: wflib.generator_minutes(CFG, len(types_of(wc.product)) if wc.group == "all" else 1),
    conda:
        "../../envs/seas.yaml"
    shell:
        "OMP_NUM_THREADS={threads} seas_python_gpu {resources.gpu} -m seas.train --config {params.config:q} --split {input.split:q}"
        " {params.types} --out {output:q} > {log:q} 2>&1"


rule train_rmp:
    """Train the Refined Mask Prediction branch on the frozen fine-tuned generator."""
    input:
        split=f"{RUN}/split/{{product}}.json",
        generator=f"{RUN}/generator/{{product}}/{{group}}",
    output:
        directory(f"{RUN}/rmp/{{product}}/{{group}}"),
    params:
        cfg=stage_params("seas.train_rmp"),
        config=RESOLVED_CONFIG,
    log:
        f"{RUN}/logs/train_rmp/{{product}}/{{group}}.log",
    benchmark:
        f"{RUN}/benchmarks/train_rmp/{{product}}/{{group}}.tsv"
    threads: 4
    resources:
        gpu=GPUS,
        mem_mb=32000,
        runtime=lambda wc: wflib.rmp_minutes(CFG, len(types_of(wc.product)) if wc.group == "all" else 1),
    conda:
        "../../envs/seas.yaml"
    shell:
        "OMP_NUM_THREADS={threads} seas_python_gpu {resources.gpu} -m seas.train_rmp --config {params.config:q} --split {input.split:q}"
        " --generator {input.generator:q} --out {output:q} > {log:q} 2>&1"


rule generate:
    """Image-mask pairs of one anomaly type (resumable: images persist, manifest.csv is written last)."""
    input:
        split=f"{RUN}/split/{{product}}.json",
        generator=lambda wc: f"{RUN}/generator/{wc.product}/{generator_group(wc.product, wc.atype)}",
        rmp=lambda wc: f"{RUN}/rmp/{wc.product}/{generator_group(wc.product, wc.atype)}",
    output:
        f"{RUN}/methods/seas/{{product}}/{{atype}}/manifest.csv",
    params:
        cfg=stage_params("seas.generate"),
        config=RESOLVED_CONFIG,
        outdir=lambda wc, output: str(Path(output[0]).parent),
    log:
        f"{RUN}/logs/generate/{{product}}/{{atype}}.log",
    benchmark:
        f"{RUN}/benchmarks/generate/{{product}}/{{atype}}.tsv"
    threads: 4
    resources:
        gpu=GPUS,
        mem_mb=16000,
        runtime=lambda wc: wflib.generate_minutes(CFG),
    conda:
        "../../envs/seas.yaml"
    shell:
        "OMP_NUM_THREADS={threads} seas_python_gpu {resources.gpu} -m seas.generate --config {params.config:q} --split {input.split:q}"
        " --generator {input.generator:q} --rmp {input.rmp:q} --type {wildcards.atype:q} --out {params.outdir:q} > {log:q} 2>&1"


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
        "OMP_NUM_THREADS={threads} seas_python -m downstream.baselines --config {params.config:q} --method {wildcards.method:q}"
        " --split {input.split:q} --out {output:q} > {log:q} 2>&1"
