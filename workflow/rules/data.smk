# Data sets: load, validate, summarise; C-scores of the training split.


rule data_summary:
    output:
        L.summary(),
    params:
        mapd=MAPD,
        config=CONFIG,
        data=lambda w: settings(w, "probes"),
    conda:
        "../envs/mapd.yaml"
    log:
        L.log("data", dataset_job()),
    benchmark:
        L.timing("data", dataset_job())
    shell:
        "{params.mapd} --log {log:q} --exit-with-parent "
        "data --config {params.config:q} --threads {threads} --dataset {wildcards.dataset:q} "
        "--out {output:q}"


rule cscores:
    output:
        L.cscores(),
    params:
        mapd=MAPD,
        config=CONFIG,
        cscores=lambda w: settings(w, "cscores"),
        train=lambda w: settings(w, "train"),
    conda:
        "../envs/mapd.yaml"
    log:
        L.log("cscores", dataset_job()),
    benchmark:
        L.timing("cscores", dataset_job())
    threads: 2
    resources:
        gpu=0 if CFG["device"] == "cpu" else 1,  # learning-speed C-scores train models
        mem_mb=4000,
        runtime=120,
    shell:
        "{params.mapd} --log {log:q} --exit-with-parent --gpus {resources.gpu} "
        "cscores --config {params.config:q} --threads {threads} --dataset {wildcards.dataset:q} "
        "--out {output:q}"


rule data:
    input:
        [L.summary(d) for d in DATASETS],
