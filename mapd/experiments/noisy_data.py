"""Noisy training sets shared by the label-noise families (correction, detection).

A noisy training set is a probe-suite folder (:class:`mapd.probes.ProbeSuite`): every training
example keeps its own data row with its (possibly) wrong ``label`` and its clean
``orig_label``, and the probes are added as copies (they are trained on too). Its noise comes
from a *noise source*:

- ``{kind: symmetric | asymmetric | arazo, rate: r}``: injected (:func:`mapd.data.noise.
  inject_label_noise`), with ``draw_classes`` and ``seed`` for Arazo's injection;
- ``{kind: file, path, key | column}``: human labels read from a file in the data set's official
  order (:mod:`mapd.data.labels_file`), e.g. CIFAR-10N's ``worse_label``; its ``clean_label``
  (when present) is checked against the data set's labels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from mapd.data import ImageDataset, inject_label_noise
from mapd.errors import ConfigError

if TYPE_CHECKING:  # mapd.probes imports torch; the grids (read by Snakemake) import this module
    from mapd.probes import ProbeSuite


def source_id(source: dict[str, Any]) -> str:
    """A noise source's name in paths and tables: ``symmetric20``, ``file-worse_label``."""
    if source["kind"] == "file":
        name = source.get("key") or source.get("column") or "labels"
        return f"file-{name}"
    return f"{source['kind']}{round(100 * source['rate'])}"


def refuse_file_labels(config: dict[str, Any], family: str, names: list[str]) -> None:
    """The label-noise families inject their own noise over the data set's clean labels; a
    data set trained on labels from a file (``datasets/<name>/labels``) has none to give."""
    from mapd.config import dataset_settings

    if with_file := [d for d in names if dataset_settings(config, d)["labels"]]:
        raise ConfigError(
            f"{family}/datasets: {with_file} train on labels from a file (datasets/<name>/"
            f"labels); {family} needs the clean labels (a labels file is a detection source: "
            "{kind: file, path: ...})"
        )


def noisy_labels(
    ds: ImageDataset, source: dict[str, Any], *, seed: int, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The noisy labels (N,) of the data set's training examples (or of ``rows`` of it: the
    positions of a training subset in the official order) and whether each differs from the
    clean label."""
    clean = ds.labels
    if source["kind"] == "file":
        from mapd.data.labels_file import read_labels

        if rows is None:
            rows = np.arange(len(ds))
        full_n = int(source["n"]) if "n" in source else len(ds)
        read = read_labels(
            source["path"],
            n=full_n,
            num_classes=ds.num_classes,
            key=source.get("key"),
            column=source.get("column"),
            dataset_labels=None,
        )
        labels = read.labels[ds.index]
        if read.clean is not None:
            disagree = np.flatnonzero(read.clean[ds.index] != clean)
            if len(disagree):
                raise ConfigError(
                    f"{source['path']}: its clean_label disagrees with {ds.name}'s labels on "
                    f"{len(disagree)} example(s), first at position {int(ds.index[disagree[0]])}: "
                    "is it the labels file of this data set, in its official order?"
                )
        return labels, labels != clean
    labels, is_noisy = inject_label_noise(
        clean,
        rate=source["rate"],
        num_classes=ds.num_classes,
        kind=source["kind"],
        seed=seed if source.get("seed") is None else source["seed"],
        draw_classes=source.get("draw_classes"),
    )
    return labels, is_noisy


def noisy_suite(
    ds: ImageDataset,
    source: dict[str, Any],
    *,
    seed: int,
    categories: list[str],
    size: int,
    noisy_labels_draw: str,
    train: dict[str, Any],
    cscores: np.ndarray | None = None,
    probe_settings: dict[str, Any] | None = None,
) -> ProbeSuite:
    """Every example of ``ds`` with its noisy label, plus ``size`` probes per category as
    copies of clean training examples (random-label probes drawn ``noisy_labels_draw``)."""
    p = probe_settings or {}
    from mapd.probes import build_probe_suite

    suite = build_probe_suite(
        ds,
        categories=categories if size else [],
        train_size=size,
        heldout_size=0,
        seed=seed,
        cscores=cscores,
        cscore_source="given" if cscores is not None else None,
        keep_sources=True,
        random_labels_draw=noisy_labels_draw,
        probe_size=train["image_size"],
        probe_resize=train["resize"],
        workers=train["workers"],
        **{k: p[k] for k in ("corrupted_std", "ood_blur_kernel") if k in p},
        **({"random_inputs_kind": p["random_inputs"]} if "random_inputs" in p else {}),
    )
    data = suite.rows(role="data")
    labels, is_noisy = noisy_labels(ds, source, seed=seed)
    suite.table.loc[data, "label"] = labels
    suite.meta["noise"] = {
        "source": source,
        "id": source_id(source),
        "changed": int(is_noisy.sum()),
        "probes": {"categories": categories, "size": size, "noisy_labels": noisy_labels_draw},
    }
    return suite
