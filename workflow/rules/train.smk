# Training with per-example learning-curve recording. A killed job resumes from
# <run>.partial/ (its checkpoint) when the rule runs again.


rule train:
    input:
        probes=f"{R}/probes/{{dataset}}/seed{{seed}}",
    output:
        directory(f"{R}/runs/{{dataset}}/seed{{seed}}"),
    params:
        config=CONFIG_FILE,
        train=lambda w: settings(w, "train"),
    conda:
        "../envs/mapd.yaml"
    log:
        f"{R}/logs/train/{{dataset}}/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{dataset}}/seed{{seed}}.tsv"
    threads: 2
    resources:
        # counted by the gpu profile (one training job per GPU), requested by the slurm one
        gpu=0 if CFG["device"] == "cpu" else 1,
        mem_mb=8000,
        runtime=720,
    shell:
        "mapd train --config {params.config} --threads {threads} --dataset {wildcards.dataset} --seed {wildcards.seed} "
        "--probes {input.probes} --out {output} 2> {log}"


rule all_train:
    input:
        [per_seed("{r}/runs/{dataset}/seed{seed}", d) for d in DATASETS],
