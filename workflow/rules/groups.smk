# Minority groups (Sec. 3.5, Fig. 9): data set x seed -> ERM with train and held-out validation
# curves -> JTT's error sets and MAP-D's p(minority) -> second stage per detector (the detected
# set upweighted) -> tables, Fig. 9. Steps: mapd.experiments.groups.

from mapd.experiments.groups import grid as groups_grid
from mapd.paths import groups_retrain_job

GROUPS_DATASETS = groups_grid.datasets(CFG)
GROUPS_SEEDS = groups_grid.seeds(CFG)
GROUPS_DETECTORS = groups_grid.detectors(CFG)


wildcard_constraints:
    detector="|".join(GROUPS_DETECTORS),


rule groups_erm:
    output:
        directory(L.groups("erm")),
    params:
        mapd=MAPD,
        config=CONFIG,
        train=groups_settings,
        partial=lambda w: L.partial(L.groups("erm", w.dataset, w.seed)),
    conda:
        "../envs/mapd.yaml"
    log:
        L.log("groups_erm", seed_job()),
    benchmark:
        L.timing("groups_erm", seed_job())
    threads: 1
    resources:
        gpu=train_gpus,
    shell:
        "{params.mapd} --log {log:q} --exit-with-parent --gpus {resources.gpu} "
        "groups-erm --config {params.config:q} --threads {threads} "
        "--dataset {wildcards.dataset:q} --seed {wildcards.seed} "
        "--out {output:q} --partial {params.partial:q}"


rule groups_scores:
    input:
        erm=L.groups("erm"),
    output:
        directory(L.groups("scores")),
    params:
        mapd=MAPD,
        config=CONFIG,
        scores=groups_score_settings,
    conda:
        "../envs/mapd.yaml"
    log:
        L.log("groups_scores", seed_job()),
    benchmark:
        L.timing("groups_scores", seed_job())
    shell:
        "{params.mapd} --log {log:q} --exit-with-parent "
        "groups-scores --config {params.config:q} --dataset {wildcards.dataset:q} "
        "--seed {wildcards.seed} --erm {input.erm:q} --out {output:q}"


rule groups_retrain:
    input:
        scores=L.groups("scores"),
    output:
        directory(L.groups("retrain")),
    params:
        mapd=MAPD,
        config=CONFIG,
        train=groups_settings,
        upweight=groups_upweight_settings,
        partial=lambda w: L.partial(L.groups("retrain", w.dataset, w.seed, w.detector)),
    conda:
        "../envs/mapd.yaml"
    log:
        L.log("groups_retrain", groups_retrain_job()),
    benchmark:
        L.timing("groups_retrain", groups_retrain_job())
    threads: 1
    resources:
        gpu=train_gpus,
    shell:
        "{params.mapd} --log {log:q} --exit-with-parent --gpus {resources.gpu} "
        "groups-retrain --config {params.config:q} --threads {threads} "
        "--dataset {wildcards.dataset:q} --seed {wildcards.seed} "
        "--detector {wildcards.detector} --scores {input.scores:q} "
        "--out {output:q} --partial {params.partial:q}"


rule groups_tables:
    input:
        [L.groups("scores", d, s) for d in GROUPS_DATASETS for s in GROUPS_SEEDS],
        [
            L.groups("retrain", d, s, n)
            for d in GROUPS_DATASETS
            for s in GROUPS_SEEDS
            for n in GROUPS_DETECTORS
        ],
    output:
        detection=L.groups_table("detection"),
        accuracy=L.groups_table("accuracy"),
    params:
        mapd=MAPD,
        config=CONFIG,
    conda:
        "../envs/mapd.yaml"
    log:
        L.log("groups_tables", "all"),
    benchmark:
        L.timing("groups_tables", "all")
    shell:
        "{params.mapd} --log {log:q} --exit-with-parent "
        "groups-tables --config {params.config:q} --detection {output.detection:q} "
        "--accuracy {output.accuracy:q}"


rule groups_figures:
    input:
        L.groups_table("detection"),
    output:
        [L.figure(None, f"fig9.{ext}") for ext in ("png", "svg", "csv")],
    params:
        mapd=MAPD,
        config=CONFIG,
        out=lambda w: L.figures(w.dataset),
    conda:
        "../envs/mapd.yaml"
    log:
        L.log("groups_figures", dataset_job()),
    benchmark:
        L.timing("groups_figures", dataset_job())
    shell:
        "{params.mapd} --log {log:q} --exit-with-parent "
        "groups-figures --config {params.config:q} --dataset {wildcards.dataset:q} "
        "--out {params.out:q}"


rule fig9:
    input:
        [L.figure(d, "fig9.png") for d in GROUPS_DATASETS],


rule groups:
    input:
        [L.groups_table("detection"), L.groups_table("accuracy")],
        [L.figure(d, "fig9.png") for d in GROUPS_DATASETS],
