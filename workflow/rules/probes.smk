# Probe suites (paper Sec. 2.2): one audit set per data set and seed.


rule probes:
    input:
        cscores=f"{R}/cscores/{{dataset}}.npz",
    output:
        directory(f"{R}/probes/{{dataset}}/seed{{seed}}"),
    params:
        config=CONFIG_FILE,
        probes=lambda w: settings(w, "probes"),
    conda:
        "../envs/mapd.yaml"
    log:
        f"{R}/logs/probes/{{dataset}}/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/probes/{{dataset}}/seed{{seed}}.tsv"
    shell:
        "mapd probes --config {params.config} --threads {threads} --dataset {wildcards.dataset} --seed {wildcards.seed} "
        "--cscores {input.cscores} --out {output} 2> {log}"


rule all_probes:
    input:
        [per_seed("{r}/probes/{dataset}/seed{seed}", d) for d in DATASETS],
