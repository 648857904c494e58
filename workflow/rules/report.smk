# Figures 3 and 4 per data set (across seeds) and the self-contained HTML report.


rule figures:
    input:
        probes=lambda w: per_seed("{r}/probes/{dataset}/seed{seed}", w.dataset),
        runs=lambda w: per_seed("{r}/runs/{dataset}/seed{seed}", w.dataset),
        assign=lambda w: per_seed("{r}/assign/{dataset}/seed{seed}", w.dataset),
    output:
        fig3=report(f"{R}/figures/{{dataset}}/fig3.png", caption="../report/fig3.rst", category="Figures"),
        fig4=report(f"{R}/figures/{{dataset}}/fig4.png", caption="../report/fig4.rst", category="Figures"),
        svg3=f"{R}/figures/{{dataset}}/fig3.svg",
        svg4=f"{R}/figures/{{dataset}}/fig4.svg",
        csv3=f"{R}/figures/{{dataset}}/fig3.csv",
        csv4=f"{R}/figures/{{dataset}}/fig4.csv",
    params:
        out=lambda w: f"{R}/figures/{w.dataset}",
    conda:
        "../envs/mapd.yaml"
    log:
        f"{R}/logs/figures/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/figures/{{dataset}}.tsv"
    shell:
        "mapd figures --probes {input.probes} --runs {input.runs} --assign {input.assign} "
        "--out {params.out} 2> {log}"


rule fig3:
    input:
        expand(f"{R}/figures/{{dataset}}/fig3.png", dataset=DATASETS),


rule fig4:
    input:
        expand(f"{R}/figures/{{dataset}}/fig4.png", dataset=DATASETS),


rule report:
    input:
        figures=expand(f"{R}/figures/{{dataset}}/fig{{n}}.png", dataset=DATASETS, n=[3, 4]),
        assign=[per_seed("{r}/assign/{dataset}/seed{seed}", d) for d in DATASETS],
        summaries=expand(f"{R}/data/{{dataset}}/summary.json", dataset=DATASETS),
    output:
        html=REPORT,
        metrics=f"{R}/report/metrics.json",
    params:
        config=CONFIG_FILE,
        benchmarks=BENCHMARKS,
    conda:
        "../envs/mapd.yaml"
    log:
        f"{R}/logs/report.log",
    shell:
        "mapd report --config {params.config} --out {output.html} "
        "--benchmarks {params.benchmarks} 2> {log}"
