# Report: sample grids of every method and product (snakemake --report).


rule sample_grid:
    """A grid of sample image-mask pairs of one method and product, for the report."""
    input:
        lambda wc: pairs_of_product(LAYOUT, METHODS[wc.method], wc.product),
    output:
        report(
            f"{RUN}/report/samples/{{method}}/{{product}}.png",
            category="Samples",
            subcategory="{method}",
            caption="../report/samples.rst",
            labels={"method": "{method}", "product": "{product}"},
        ),
    params:
        pairs=lambda wc: LAYOUT.pairs_dir(METHODS[wc.method], wc.product),
        per_type=4,
        title=lambda wc: f"{wc.method} / {wc.product}",
    log:
        f"{RUN}/logs/sample_grid/{{method}}/{{product}}.log",
    threads: job_threads(1)
    resources:
        mem_mb=1000,
        runtime=STAGES["sample_grid"].minutes(CFG),
    conda:
        "../../envs/base.yaml"
    shell:
        "seas_python -m downstream.report.sample_grid --pairs {params.pairs:q} --per-type {params.per_type}"
        " --title {params.title:q} --out {output:q} > {log:q} 2>&1"
