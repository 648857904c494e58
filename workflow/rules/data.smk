# Data sets: load, validate, summarise; C-scores of the training split.


rule data_summary:
    output:
        f"{R}/data/{{dataset}}/summary.json",
    params:
        config=CONFIG_FILE,
        data=lambda w: settings(w, "probes"),
    conda:
        "../envs/mapd.yaml"
    log:
        f"{R}/logs/data/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/data/{{dataset}}.tsv"
    shell:
        "mapd data --config {params.config} --threads {threads} --dataset {wildcards.dataset} --out {output} 2> {log}"


rule cscores:
    output:
        f"{R}/cscores/{{dataset}}.npz",
    params:
        config=CONFIG_FILE,
        cscores=lambda w: settings(w, "cscores"),
        train=lambda w: settings(w, "train"),
    conda:
        "../envs/mapd.yaml"
    log:
        f"{R}/logs/cscores/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/cscores/{{dataset}}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    shell:
        "mapd cscores --config {params.config} --threads {threads} --dataset {wildcards.dataset} --out {output} 2> {log}"


rule data:
    input:
        expand(f"{R}/data/{{dataset}}/summary.json", dataset=DATASETS),
