# Finding the mislabeled examples: data set x noise source x seed -> the main run (recorded
# curves), AUM's threshold run, confident learning's K folds -> every detector's scores and
# metrics -> table, ROC / PR curves. Steps: mapd.experiments.detection.

from mapd.experiments.detection import grid as det_grid
from mapd.paths import det_job

DET_DATASETS = det_grid.datasets(CFG)
DET_CELLS = det_grid.cells(CFG)
DET_SOURCES = list(det_grid.sources(CFG))
DET_FOLDS = det_grid.folds(CFG) if det_grid.needs_folds(CFG) else []
DET_AUM = det_grid.needs_aum_run(CFG)


wildcard_constraints:
    source="|".join(DET_SOURCES),
    fold=r"\d+",


rule det_suite:
    input:
        cscores=det_cscores,
    output:
        directory(L.det("suite")),
    params:
        mapd=MAPD,
        config=CONFIG,
        det=det_settings,
        cscores=det_cscores_option,
    conda:
        "../envs/mapd.yaml"
    log:
        L.log("det_suite", det_job()),
    benchmark:
        L.timing("det_suite", det_job())
    shell:
        "{params.mapd} --log {log:q} --exit-with-parent "
        "det-suite --config {params.config:q} --dataset {wildcards.dataset:q} "
        "--source {wildcards.source} --seed {wildcards.seed} {params.cscores} --out {output:q}"


for _kind, _step, _cmd in (("run", "det_train", "det-train"), ("aum", "det_aum", "det-aum")):

    rule:
        name:
            _step
        input:
            suite=L.det("suite"),
        output:
            directory(L.det(_kind)),
        params:
            mapd=MAPD,
            config=CONFIG,
            det=det_settings,
            partial=lambda w, _kind=_kind: L.partial(det_cell(_kind, w)),
            cmd=_cmd,
        conda:
            "../envs/mapd.yaml"
        log:
            L.log(_step, det_job()),
        benchmark:
            L.timing(_step, det_job())
        threads: 1
        resources:
            gpu=0 if CFG["device"] == "cpu" else 1,
        shell:
            "{params.mapd} --log {log:q} --exit-with-parent --gpus {resources.gpu} "
            "{params.cmd} --config {params.config:q} --threads {threads} "
            "--dataset {wildcards.dataset:q} --source {wildcards.source} --seed {wildcards.seed} "
            "--suite {input.suite:q} --out {output:q} --partial {params.partial:q}"


rule det_fold:
    input:
        suite=L.det("suite"),
    output:
        directory(L.det("fold")),
    params:
        mapd=MAPD,
        config=CONFIG,
        det=det_settings,
        partial=lambda w: L.partial(
            L.det("fold", w.dataset, w.source, w.seed, w.fold)
        ),
    conda:
        "../envs/mapd.yaml"
    log:
        L.log("det_fold", f"{det_job()}/fold{{fold}}"),
    benchmark:
        L.timing("det_fold", f"{det_job()}/fold{{fold}}")
    threads: 1
    resources:
        gpu=0 if CFG["device"] == "cpu" else 1,
    shell:
        "{params.mapd} --log {log:q} --exit-with-parent --gpus {resources.gpu} "
        "det-fold --config {params.config:q} --threads {threads} --dataset {wildcards.dataset:q} "
        "--source {wildcards.source} --seed {wildcards.seed} --fold {wildcards.fold} "
        "--suite {input.suite:q} --out {output:q} --partial {params.partial:q}"


rule det_scores:
    input:
        suite=L.det("suite"),
        run=L.det("run"),
        aum=L.det("aum") if DET_AUM else [],
        folds=[L.det("fold", fold=k) for k in DET_FOLDS],
    output:
        directory(L.det("scores")),
    params:
        mapd=MAPD,
        config=CONFIG,
        scores=lambda w: fingerprint(
            {"scores": CFG["detection"]["scores"], "s": settings(w, "scores")}
        ),
        aum=lambda w, input: f"--aum {shlex.quote(input.aum)}" if input.aum else "",
        folds=lambda w, input: (
            "--folds " + " ".join(shlex.quote(f) for f in input.folds) if input.folds else ""
        ),
    conda:
        "../envs/mapd.yaml"
    log:
        L.log("det_scores", det_job()),
    benchmark:
        L.timing("det_scores", det_job())
    shell:
        "{params.mapd} --log {log:q} --exit-with-parent "
        "det-scores --config {params.config:q} --dataset {wildcards.dataset:q} "
        "--source {wildcards.source} --seed {wildcards.seed} --suite {input.suite:q} "
        "--run {input.run:q} {params.aum} {params.folds} --out {output:q}"


rule det_table:
    input:
        [L.det("scores", c.dataset, c.source, c.seed) for c in DET_CELLS],
    output:
        L.det_table(),
    params:
        mapd=MAPD,
        config=CONFIG,
    conda:
        "../envs/mapd.yaml"
    log:
        L.log("det_table", "all"),
    benchmark:
        L.timing("det_table", "all")
    shell:
        "{params.mapd} --log {log:q} --exit-with-parent "
        "det-table --config {params.config:q} --out {output:q}"


rule det_figures:
    input:
        L.det_table(),
    output:
        [L.figure(None, f"detection.{ext}") for ext in ("png", "svg", "csv")],
    params:
        mapd=MAPD,
        config=CONFIG,
        out=lambda w: L.figures(w.dataset),
    conda:
        "../envs/mapd.yaml"
    log:
        L.log("det_figures", dataset_job()),
    benchmark:
        L.timing("det_figures", dataset_job())
    shell:
        "{params.mapd} --log {log:q} --exit-with-parent "
        "det-figures --config {params.config:q} --dataset {wildcards.dataset:q} "
        "--out {params.out:q}"


rule detection:
    input:
        [L.figure(d, "detection.png") for d in DET_DATASETS],
