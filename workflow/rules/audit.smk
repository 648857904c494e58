# The MAP-D audit (paper Secs. 2-3.2): probe suites, training with recorded learning curves,
# k-NN assignment with the held-out check, Figs. 3 and 4. Steps: mapd.experiments.audit.

from mapd.experiments.audit import datasets as audit_datasets

AUDIT_DATASETS = audit_datasets(CFG)  # audit/datasets, or every data set


rule probes:
    input:
        cscores=L.cscores(),
    output:
        directory(L.probes()),
    params:
        mapd=MAPD,
        config=CONFIG,
        probes=lambda w: settings(w, "probes"),
    conda:
        "../envs/mapd.yaml"
    log:
        L.log("probes", seed_job()),
    benchmark:
        L.timing("probes", seed_job())
    shell:
        "{params.mapd} --log {log:q} --exit-with-parent "
        "probes --config {params.config:q} --threads {threads} --dataset {wildcards.dataset:q} "
        "--seed {wildcards.seed} --cscores {input.cscores:q} --out {output:q}"


# A killed job resumes from its checkpoint in L.partial(L.run(...)) when the rule runs again.
rule train:
    input:
        probes=L.probes(),
    output:
        directory(L.run()),
    params:
        mapd=MAPD,
        config=CONFIG,
        train=lambda w: settings(w, "train"),
        partial=lambda w: L.partial(L.run(w.dataset, w.seed)),
    conda:
        "../envs/mapd.yaml"
    log:
        L.log("train", seed_job()),
    benchmark:
        L.timing("train", seed_job())
    threads: 2
    resources:
        # counted by the gpu profile (one training job per GPU), requested by the slurm one;
        # --gpus pins the job to that many free devices of its host (mapd.slots)
        gpu=train_gpus,
        mem_mb=8000,
        runtime=720,
    shell:
        "{params.mapd} --log {log:q} --exit-with-parent --gpus {resources.gpu} "
        "train --config {params.config:q} --threads {threads} --dataset {wildcards.dataset:q} "
        "--seed {wildcards.seed} --probes {input.probes:q} --out {output:q} "
        "--partial {params.partial:q}"


rule assign:
    input:
        probes=L.probes(),
        run=L.run(),
    output:
        directory(L.assign()),
    params:
        mapd=MAPD,
        config=CONFIG,
        assign=lambda w: settings(w, "assign"),
        scores=lambda w: settings(w, "scores"),
    conda:
        "../envs/mapd.yaml"
    log:
        L.log("assign", seed_job()),
    benchmark:
        L.timing("assign", seed_job())
    shell:
        "{params.mapd} --log {log:q} --exit-with-parent "
        "assign --config {params.config:q} --threads {threads} --dataset {wildcards.dataset:q} "
        "--probes {input.probes:q} --run {input.run:q} --out {output:q}"


rule figures:
    input:
        probes=lambda w: per_seed(L.probes, w.dataset),
        runs=lambda w: per_seed(L.run, w.dataset),
        assign=lambda w: per_seed(L.assign, w.dataset),
    output:
        fig3=report(L.figure(None, "fig3.png"), caption="../report/fig3.rst", category="Figures"),
        fig4=report(L.figure(None, "fig4.png"), caption="../report/fig4.rst", category="Figures"),
        svg3=L.figure(None, "fig3.svg"),
        svg4=L.figure(None, "fig4.svg"),
        csv3=L.figure(None, "fig3.csv"),
        csv4=L.figure(None, "fig4.csv"),
    params:
        mapd=MAPD,
        out=lambda w: L.figures(w.dataset),
    conda:
        "../envs/mapd.yaml"
    log:
        L.log("figures", dataset_job()),
    benchmark:
        L.timing("figures", dataset_job())
    shell:
        "{params.mapd} --log {log:q} --exit-with-parent "
        "figures --probes {input.probes:q} --runs {input.runs:q} --assign {input.assign:q} "
        "--out {params.out:q}"


rule label_issues:
    input:
        probes=lambda w: per_seed(L.probes, w.dataset),
        runs=lambda w: per_seed(L.run, w.dataset),
        assign=lambda w: per_seed(L.assign, w.dataset),
    output:
        directory(L.issues()),
    params:
        mapd=MAPD,
        config=CONFIG,
        issues=lambda w: fingerprint(CFG["audit"]["label_issues"]),
    conda:
        "../envs/mapd.yaml"
    log:
        L.log("issues", dataset_job()),
    benchmark:
        L.timing("issues", dataset_job())
    shell:
        "{params.mapd} --log {log:q} --exit-with-parent "
        "issues --config {params.config:q} --dataset {wildcards.dataset:q} "
        "--probes {input.probes:q} --runs {input.runs:q} --assign {input.assign:q} --out {output:q}"


rule issues:
    input:
        [L.issues(d) for d in AUDIT_DATASETS],


rule all_probes:
    input:
        [per_seed(L.probes, d) for d in AUDIT_DATASETS],


rule all_train:
    input:
        [per_seed(L.run, d) for d in AUDIT_DATASETS],


rule audit:
    input:
        [per_seed(L.assign, d) for d in AUDIT_DATASETS],


rule fig3:
    input:
        [L.figure(d, "fig3.png") for d in AUDIT_DATASETS],


rule fig4:
    input:
        [L.figure(d, "fig4.png") for d in AUDIT_DATASETS],
