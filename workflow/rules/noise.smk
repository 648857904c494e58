# Label-noise correction (paper Sec. 3.3; Figs. 6, 7, 11): data set x noise level x method x
# warm-up x seed. Steps: mapd.experiments.noise; the grid: mapd.experiments.noise.grid.

from mapd.experiments.noise import grid as noise_grid
from mapd.paths import noise_run_job, noise_suite_job

NOISE_DATASETS = noise_grid.datasets(CFG)
NOISE_CELLS = noise_grid.cells(CFG)
NOISE_FIGURES = noise_grid.figures_of(CFG)


wildcard_constraints:
    level=r"\d+",
    warmup=r"\d+",
    method="|".join(noise_grid.methods(CFG)),


rule noise_suite:
    output:
        directory(L.noise_suite()),
    params:
        mapd=MAPD,
        config=CONFIG,
        noise=noise_suite_settings,
    conda:
        "../envs/mapd.yaml"
    log:
        L.log("noise_suite", noise_suite_job()),
    benchmark:
        L.timing("noise_suite", noise_suite_job())
    shell:
        "{params.mapd} --log {log:q} --exit-with-parent "
        "noise-suite --config {params.config:q} --threads {threads} --dataset {wildcards.dataset:q} "
        "--level {wildcards.level} --seed {wildcards.seed} --out {output:q}"


# forward/backward read the model of the ce run of the same cell; a killed run resumes from
# its checkpoint in L.partial(<run>)
rule noise_train:
    input:
        suite=L.noise_suite(),
        reference=noise_reference,
    output:
        directory(L.noise_run()),
    params:
        mapd=MAPD,
        config=CONFIG,
        noise=noise_train_settings,
        method=noise_method_settings,
        partial=lambda w: L.partial(L.noise_run(w.dataset, w.level, w.method, w.warmup, w.seed)),
        reference=noise_reference_option,
    conda:
        "../envs/mapd.yaml"
    log:
        L.log("noise_train", noise_run_job()),
    benchmark:
        L.timing("noise_train", noise_run_job())
    threads: 1
    resources:
        gpu=0 if CFG["device"] == "cpu" else 1,
        mem_mb=8000,
        runtime=720,
    shell:
        "{params.mapd} --log {log:q} --exit-with-parent --gpus {resources.gpu} "
        "noise-train --config {params.config:q} --threads {threads} --dataset {wildcards.dataset:q} "
        "--level {wildcards.level} --method {wildcards.method} --warmup {wildcards.warmup} "
        "--seed {wildcards.seed} --suite {input.suite:q} --out {output:q} "
        "--partial {params.partial:q} {params.reference}"


rule noise_table:
    input:
        [L.noise_run(c.dataset, c.level, c.method, c.warmup, c.seed) for c in NOISE_CELLS],
    output:
        L.noise_table(),
    params:
        mapd=MAPD,
        config=CONFIG,
    conda:
        "../envs/mapd.yaml"
    log:
        L.log("noise_table", "all"),
    benchmark:
        L.timing("noise_table", "all")
    shell:
        "{params.mapd} --log {log:q} --exit-with-parent "
        "noise-table --config {params.config:q} --out {output:q}"


rule noise_figures:
    input:
        L.noise_table(),
    output:
        [L.figure(None, f"{f}.{ext}") for f in NOISE_FIGURES for ext in ("png", "svg", "csv")],
    params:
        mapd=MAPD,
        config=CONFIG,
        out=lambda w: L.figures(w.dataset),
    conda:
        "../envs/mapd.yaml"
    log:
        L.log("noise_figures", dataset_job()),
    benchmark:
        L.timing("noise_figures", dataset_job())
    shell:
        "{params.mapd} --log {log:q} --exit-with-parent "
        "noise-figures --config {params.config:q} --dataset {wildcards.dataset:q} "
        "--table {input:q} --out {params.out:q}"


rule fig6:
    input:
        [L.figure(d, "fig6.png") for d in NOISE_DATASETS],


rule fig7:
    input:
        [L.figure(d, "fig7.png") for d in NOISE_DATASETS if "fig7" in NOISE_FIGURES],


rule fig11:
    input:
        [L.figure(d, "fig11.png") for d in NOISE_DATASETS if "fig11" in NOISE_FIGURES],
