# The self-contained HTML report of every active experiment family, and each family's metrics
# file (DVC metrics). Its run-time table lists the timing files of every job (mapd.experiments).


rule report:
    input:
        REPORT_INPUTS,
    output:
        html=L.report(),
        metrics=[L.metrics(f) for f in FAMILIES],
    params:
        mapd=MAPD,
        config=CONFIG,
    conda:
        "../envs/mapd.yaml"
    log:
        L.log("report", "all"),
    shell:
        "{params.mapd} --log {log:q} --exit-with-parent "
        "report --config {params.config:q} --out {output.html:q}"
