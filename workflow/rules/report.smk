# Report: sample grids of every method and product, and the report's pages (snakemake --report): tables as HTML,
# plots, the front page (what was run), real-vs-generated grids per product.


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


# ----------------------------------------------------------------------------- the report's pages (issue 22)
localrules: html_table, plots, front_page, compare_grid


rule html_table:
    """Every table CSV as an HTML page (paper-like rounding, best values bold) for the report."""
    input:
        [f"{TABLES}/{name}.csv" for name in REPORT_TABLES],
    output:
        [
            report(
                f"{RUN}/report/tables/{name}.html",
                category="Tables",
                subcategory=_table_page_group(name),
                caption="../report/html_table.rst",
                labels={"table": name},
            )
            for name in REPORT_TABLES
        ],
    params:
        out_dir=lambda wc, output: str(Path(output[0]).parent),
        digits=" ".join(f"--digits study_{s}={STUDIES[s].digits}" for s in RUN_STUDIES),
    log:
        f"{RUN}/logs/html_table.log",
    threads: job_threads(1)
    resources:
        mem_mb=1000,
        runtime=STAGES["html_table"].minutes(CFG),
    conda:
        "../../envs/base.yaml"
    shell:
        "seas_python -m downstream.report.html_table --tables {input:q} --out-dir {params.out_dir:q} {params.digits}"
        " > {log:q} 2>&1"


rule plots:
    """The report's plots (downstream.report.plot_specs: which plot from which table), PNG."""
    input:
        [f"{TABLES}/{name}.csv" for name in REPORT_TABLES],
    output:
        [
            report(
                f"{RUN}/report/plots/{name}.png",
                category="Plots",
                caption="../report/plots.rst",
                labels={"plot": name},
            )
            for name in PLOT_NAMES
        ],
    params:
        tables=lambda wc, input: str(Path(input[0]).parent),
        out_dir=lambda wc, output: str(Path(output[0]).parent),
        only=" ".join(PLOT_NAMES),
    log:
        f"{RUN}/logs/plots.log",
    threads: job_threads(1)
    resources:
        mem_mb=2000,
        runtime=STAGES["plots"].minutes(CFG),
    conda:
        "../../envs/base.yaml"
    shell:
        "seas_python -m downstream.report.plots --tables-dir {params.tables:q} --out-dir {params.out_dir:q}"
        " --only {params.only} > {log:q} 2>&1"


rule front_page:
    """What the run did, from its own records (split manifests, generator tokens.json, tables, cost.csv)."""
    input:
        [f"{TABLES}/{name}.csv" for name in TABLE_NAMES],
        splits=lambda wc: [LAYOUT.split(p) for p in products()],
    output:
        report(
            f"{RUN}/report/front_page.html",
            category="Run",
            caption="../report/front_page.rst",
            labels={"page": "what was run"},
        ),
    params:
        cfg=stage_params("front_page"),
        config=RESOLVED_CONFIG,
        run_dir=lambda wc, output: str(Path(output[0]).parent.parent),  # <run>: the page lives in <run>/report
        tables=lambda wc, input: str(Path(input[0]).parent),
    log:
        f"{RUN}/logs/front_page.log",
    threads: job_threads(1)
    resources:
        mem_mb=1000,
        runtime=STAGES["front_page"].minutes(CFG),
    conda:
        "../../envs/base.yaml"
    shell:
        "seas_python -m downstream.report.front_page --config {params.config:q} --run-dir {params.run_dir:q}"
        " --tables-dir {params.tables:q} --out {output:q} > {log:q} 2>&1"


rule compare_grid:
    """Per product: the real training defects beside each method's generated pairs, per anomaly type."""
    input:
        split=lambda wc: LAYOUT.split(wc.product),
        pairs=lambda wc: [f for m in METHODS for f in pairs_of_product(LAYOUT, METHODS[m], wc.product)],
    output:
        report(
            f"{RUN}/report/compare/{{product}}.png",
            category="Samples",
            subcategory="real vs generated",
            caption="../report/compare_grid.rst",
            labels={"product": "{product}"},
        ),
    params:
        pairs=lambda wc: " ".join(
            f"--pairs {shlex.quote(f'{m}={LAYOUT.pairs_dir(METHODS[m], wc.product)}')}" for m in METHODS
        ),
        per_type=3,
    log:
        f"{RUN}/logs/compare_grid/{{product}}.log",
    threads: job_threads(1)
    resources:
        mem_mb=1000,
        runtime=STAGES["compare_grid"].minutes(CFG),
    conda:
        "../../envs/base.yaml"
    shell:
        "seas_python -m downstream.report.compare_grid --split {input.split:q} {params.pairs}"
        " --per-type {params.per_type} --out {output:q} > {log:q} 2>&1"
