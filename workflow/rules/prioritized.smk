# Prioritized training (paper Sec. 3.4, Fig. 8): data set x seed -> the noisy training pool with
# MAP-D's probes and RHO-Loss's holdout rows -> the irreducible-loss model -> one selecting run
# per scorer -> curves and table -> Fig. 8. Steps: mapd.experiments.prioritized.

from mapd.experiments.prioritized import grid as prio_grid
from mapd.paths import prio_run_job

PRIO_DATASETS = prio_grid.datasets(CFG)
PRIO_CELLS = prio_grid.cells(CFG)


wildcard_constraints:
    scorer="|".join(prio_grid.scorers(CFG)),


rule prio_data:
    output:
        directory(L.prio("data")),
    params:
        mapd=MAPD,
        config=CONFIG,
        prio=prio_data_settings,
    conda:
        "../envs/mapd.yaml"
    log:
        L.log("prio_data", seed_job()),
    benchmark:
        L.timing("prio_data", seed_job())
    shell:
        "{params.mapd} --log {log:q} --exit-with-parent "
        "prio-data --config {params.config:q} --dataset {wildcards.dataset:q} "
        "--seed {wildcards.seed} --out {output:q}"


# RHO-Loss's irreducible-loss model: trained once per data set and seed on the holdout rows
rule prio_holdout:
    input:
        data=L.prio("data"),
    output:
        directory(L.prio("holdout")),
    params:
        mapd=MAPD,
        config=CONFIG,
        prio=prio_holdout_settings,
        partial=lambda w: L.partial(L.prio("holdout", w.dataset, w.seed)),
    conda:
        "../envs/mapd.yaml"
    log:
        L.log("prio_holdout", seed_job()),
    benchmark:
        L.timing("prio_holdout", seed_job())
    threads: 1
    resources:
        gpu=train_gpus,
    shell:
        "{params.mapd} --log {log:q} --exit-with-parent --gpus {resources.gpu} "
        "prio-holdout --config {params.config:q} --threads {threads} "
        "--dataset {wildcards.dataset:q} --seed {wildcards.seed} --data {input.data:q} "
        "--out {output:q} --partial {params.partial:q}"


# a killed run resumes from its checkpoint in L.partial(<run>)
rule prio_train:
    input:
        data=L.prio("data"),
        holdout=prio_holdout_input,
    output:
        directory(L.prio("run")),
    params:
        mapd=MAPD,
        config=CONFIG,
        prio=prio_train_settings,
        partial=lambda w: L.partial(L.prio("run", w.dataset, w.seed, w.scorer)),
        holdout=lambda w, input: f"--holdout {shlex.quote(input.holdout)}" if input.holdout else "",
    conda:
        "../envs/mapd.yaml"
    log:
        L.log("prio_train", prio_run_job()),
    benchmark:
        L.timing("prio_train", prio_run_job())
    threads: 1
    resources:
        gpu=train_gpus,
    shell:
        "{params.mapd} --log {log:q} --exit-with-parent --gpus {resources.gpu} "
        "prio-train --config {params.config:q} --threads {threads} "
        "--dataset {wildcards.dataset:q} --scorer {wildcards.scorer} --seed {wildcards.seed} "
        "--data {input.data:q} {params.holdout} --out {output:q} --partial {params.partial:q}"


rule prio_table:
    input:
        [L.prio("run", c.dataset, c.seed, c.scorer) for c in PRIO_CELLS],
    output:
        table=L.prio_table(),
        curves=L.prio_table("curves"),
    params:
        mapd=MAPD,
        config=CONFIG,
    conda:
        "../envs/mapd.yaml"
    log:
        L.log("prio_table", "all"),
    benchmark:
        L.timing("prio_table", "all")
    shell:
        "{params.mapd} --log {log:q} --exit-with-parent "
        "prio-table --config {params.config:q} --curves {output.curves:q} --out {output.table:q}"


rule prio_figures:
    input:
        table=L.prio_table(),
        curves=L.prio_table("curves"),
    output:
        [L.figure(None, f"fig8.{ext}") for ext in ("png", "svg", "csv")],
    params:
        mapd=MAPD,
        config=CONFIG,
        out=lambda w: L.figures(w.dataset),
    conda:
        "../envs/mapd.yaml"
    log:
        L.log("prio_figures", dataset_job()),
    benchmark:
        L.timing("prio_figures", dataset_job())
    shell:
        "{params.mapd} --log {log:q} --exit-with-parent "
        "prio-figures --config {params.config:q} --dataset {wildcards.dataset:q} "
        "--curves {input.curves:q} --table {input.table:q} --out {params.out:q}"


rule fig8:
    input:
        [L.figure(d, "fig8.png") for d in PRIO_DATASETS],
