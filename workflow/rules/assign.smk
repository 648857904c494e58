# k-NN metadata assignment and the held-out probe check (paper Eqs. 6-7, Fig. 4).


rule assign:
    input:
        probes=f"{R}/probes/{{dataset}}/seed{{seed}}",
        run=f"{R}/runs/{{dataset}}/seed{{seed}}",
    output:
        directory(f"{R}/assign/{{dataset}}/seed{{seed}}"),
    params:
        config=CONFIG_FILE,
        assign=lambda w: settings(w, "assign"),
    conda:
        "../envs/mapd.yaml"
    log:
        f"{R}/logs/assign/{{dataset}}/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/assign/{{dataset}}/seed{{seed}}.tsv"
    shell:
        "mapd assign --config {params.config} --threads {threads} --dataset {wildcards.dataset} --probes {input.probes} "
        "--run {input.run} --out {output} 2> {log}"


rule audit:
    input:
        [per_seed("{r}/assign/{dataset}/seed{seed}", d) for d in DATASETS],
