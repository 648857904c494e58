"""Readers (and writers) of the pipeline's output folders: one reader per folder, one set of checks.

- probe suite: :meth:`mapd.probes.ProbeSuite.load` (``examples.parquet``, ``probe_images.npy``,
  ``meta.json``);
- run: :class:`Run` (``loss.npy``, ``correct.npy``, ``metrics.json``, ``model.pt``);
- assignment: :class:`Assignment` (``metadata.parquet``/``.csv``, ``heldout.json``);
- :func:`load_seed`: a probe suite with its run, checked to be row-aligned;
- :func:`seed_summary`: mean and std over seeds, the one definition used by the report and by
  the DVC metrics.

Figures, report sections, metrics and scores read outputs only through these.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mapd.errors import DataError
from mapd.io import atomic_dir, load_json, load_npy, load_table, save_json, save_npy, save_table
from mapd.probes import ProbeSuite

PathLike = str | os.PathLike

# std over seeds: the sample standard deviation (0 for a single seed)
DDOF = 1


def seed_summary(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "std", "seeds"}`` of per-seed values (sample std, ddof 1; 0 for one seed)."""
    arr = np.asarray([float(v) for v in values], dtype=np.float64)
    if arr.size == 0:
        raise DataError("seed_summary needs at least one value")
    std = float(arr.std(ddof=DDOF)) if arr.size > DDOF else 0.0
    return {"mean": float(arr.mean()), "std": std, "seeds": int(arr.size)}


def mean_std_text(values: Sequence[float], *, percent: bool = True) -> str:
    """``"81.9 ± 1.2%"`` from per-seed fractions (the :func:`seed_summary` numbers)."""
    s = seed_summary(values)
    if percent:
        return f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}%"
    return f"{s['mean']:.4g} ± {s['std']:.2g}"


def read_summary(path: PathLike) -> dict[str, Any]:
    """A data set's summary (``mapd data``): counts per split and the warnings about the data."""
    obj = load_json(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("splits"), dict):
        raise DataError(f"{path}: expected a data-set summary with 'splits'")
    obj.setdefault("warnings", [])  # summaries written before warnings were recorded
    return obj


# --- runs ------------------------------------------------------------------------------------


@dataclass
class Run:
    """A trained run: per-example trajectories of every row after every epoch, and metrics.

    ``loss`` float32 (N, T) and ``correct`` bool (N, T) are memory-mapped read-only.
    """

    path: Path
    loss: np.ndarray
    correct: np.ndarray
    metrics: dict[str, Any]

    FILES = ("loss.npy", "correct.npy", "margin.npy", "pred.npy", "metrics.json", "model.pt")

    def _curve(self, name: str, dtype: type) -> np.ndarray:
        arr = load_npy(self.path / f"{name}.npy", mmap=True)
        if arr.shape != self.loss.shape or arr.dtype != dtype:
            raise DataError(
                f"{self.path / f'{name}.npy'}: {arr.dtype} {arr.shape}, expected "
                f"{np.dtype(dtype)} {self.loss.shape}"
            )
        return arr

    @property
    def margin(self) -> np.ndarray:
        """(N, T) float32 margins (logit of the given label minus the largest other logit)."""
        return self._curve("margin", np.float32)

    @property
    def pred(self) -> np.ndarray:
        """(N, T) int16 predicted class after each epoch."""
        return self._curve("pred", np.int16)

    @property
    def n(self) -> int:
        return int(self.loss.shape[0])

    @property
    def n_epochs(self) -> int:
        return int(self.loss.shape[1])

    @property
    def final_test_acc(self) -> float | None:
        acc = self.metrics.get("final_test_acc")
        return None if acc is None else float(acc)

    @property
    def epoch_rows(self) -> list[dict[str, Any]]:
        return list(self.metrics.get("epochs") or [])

    @classmethod
    def load(cls, path: PathLike, *, rows: int | None = None) -> Run:
        """Read and check a run folder; ``rows`` is the expected N (e.g. the probe suite's)."""
        path = Path(path)
        loss = load_npy(path / "loss.npy", mmap=True)
        correct = load_npy(path / "correct.npy", mmap=True)
        if loss.ndim != 2 or loss.dtype != np.float32:
            raise DataError(
                f"{path / 'loss.npy'}: expected float32 (N, T), got {loss.dtype} {loss.shape}"
            )
        if correct.shape != loss.shape or correct.dtype != np.bool_:
            raise DataError(
                f"{path / 'correct.npy'}: {correct.dtype} {correct.shape}, "
                f"expected bool {loss.shape}"
            )
        if rows is not None and loss.shape[0] != rows:
            raise DataError(
                f"{path / 'loss.npy'}: {loss.shape[0]} rows, but the probe suite has {rows} rows"
            )
        metrics = load_json(path / "metrics.json")
        if not isinstance(metrics, dict) or "final_test_acc" not in metrics:
            raise DataError(f"{path / 'metrics.json'}: missing 'final_test_acc'")
        return cls(path=path, loss=loss, correct=correct, metrics=metrics)

    @staticmethod
    def save(
        out: PathLike,
        *,
        loss: np.ndarray,
        correct: np.ndarray,
        metrics: dict[str, Any],
        model_state: dict[str, Any],
        arrays: dict[str, np.ndarray] | None = None,
        margin: np.ndarray | None = None,
        pred: np.ndarray | None = None,
    ) -> None:
        """Write a run folder atomically (all files or none); ``arrays`` are the method's
        per-example outputs, each written as ``<name>.npy``."""
        with atomic_dir(out) as tmp:
            save_npy(tmp / "loss.npy", np.asarray(loss, dtype=np.float32))
            save_npy(tmp / "correct.npy", np.asarray(correct, dtype=bool))
            if margin is not None:
                save_npy(tmp / "margin.npy", np.asarray(margin, dtype=np.float32))
            if pred is not None:
                save_npy(tmp / "pred.npy", np.asarray(pred, dtype=np.int16))
            save_json(tmp / "metrics.json", metrics)
            torch.save(model_state, tmp / "model.pt")
            for name, arr in (arrays or {}).items():
                if name in ("loss", "correct", "margin", "pred"):
                    raise DataError(f"a method's output may not be named {name!r}")
                save_npy(tmp / f"{name}.npy", np.asarray(arr))

    def array(self, name: str, *, rows: int | None = None) -> np.ndarray:
        """A method's per-example output ``<name>.npy`` (e.g. ``p_noisy``), checked to have
        one row per example."""
        arr = load_npy(self.path / f"{name}.npy")
        if arr.shape[:1] != (rows if rows is not None else self.n,):
            raise DataError(f"{self.path / f'{name}.npy'}: {arr.shape[0]} rows, expected {self.n}")
        return arr

    def finite_loss(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Loss of ``rows`` (all rows if None) as an in-memory array, checked to be finite."""
        loss = np.array(self.loss if rows is None else self.loss[rows], dtype=np.float32)
        if not np.isfinite(loss).all():
            bad = int((~np.isfinite(loss)).any(axis=1).sum())
            raise DataError(f"{self.path / 'loss.npy'}: NaN/inf in {bad} rows")
        return loss


# --- assignments ----------------------------------------------------------------------------

METADATA_COLUMNS = ("row", "orig_index", "label", "orig_label", "role", "category", "assigned")


def _heldout_setting(path: Path, name: str, s: Any) -> dict[str, Any]:
    try:
        labels = [str(x) for x in (s.get("labels") or s["categories"])]
        conf = np.asarray(s["confusion"], dtype=np.int64)
        acc = float(s["accuracy"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise DataError(f"{path}: setting {name!r} lacks labels/confusion/accuracy: {e}") from e
    if conf.shape != (len(labels), len(labels)):
        raise DataError(
            f"{path}: setting {name!r}: confusion shape {conf.shape} does not match "
            f"{len(labels)} labels"
        )
    if not 0.0 <= acc <= 1.0:
        raise DataError(f"{path}: setting {name!r}: accuracy {acc} is not a fraction in [0, 1]")
    cats = [str(x) for x in (s["categories"] if "categories" in s else labels)]
    return {"labels": labels, "categories": cats, "confusion": conf, "accuracy": acc}


def read_heldout(path: PathLike) -> dict[str, dict[str, Any]]:
    """The validated ``settings`` of a ``heldout.json``: labels, (K, K) confusion, accuracy."""
    path = Path(path)
    obj = load_json(path)
    settings = obj.get("settings") if isinstance(obj, dict) else None
    if not isinstance(settings, dict) or not settings:
        raise DataError(f"{path}: expected a non-empty 'settings' object")
    return {str(n): _heldout_setting(path, str(n), s) for n, s in settings.items()}


@dataclass
class Assignment:
    """k-NN metadata of every row (``metadata``) and the held-out probe check (``heldout``)."""

    path: Path
    metadata: pd.DataFrame
    heldout: dict[str, dict[str, Any]]
    use: str | None = None
    k: int | None = None

    @property
    def categories(self) -> list[str]:
        """The categories of the assignment (its ``p_<category>`` columns, in order)."""
        return [c[2:] for c in self.metadata.columns if c.startswith("p_")]

    def data_rows(self) -> pd.DataFrame:
        return self.metadata[self.metadata["role"] == "data"]

    @classmethod
    def load(cls, path: PathLike) -> Assignment:
        path = Path(path)
        md = load_table(path / "metadata.parquet")
        if missing := [c for c in METADATA_COLUMNS if c not in md.columns]:
            raise DataError(f"{path / 'metadata.parquet'}: missing columns {missing}")
        md["category"] = md["category"].fillna("")
        raw = load_json(path / "heldout.json")
        return cls(
            path=path,
            metadata=md,
            heldout=read_heldout(path / "heldout.json"),
            use=raw.get("use"),
            k=raw.get("k"),
        )

    @staticmethod
    def save(out: PathLike, *, metadata: pd.DataFrame, heldout: dict[str, Any]) -> None:
        with atomic_dir(out) as tmp:
            save_table(tmp / "metadata.parquet", metadata)
            save_table(tmp / "metadata.csv", metadata)
            save_json(tmp / "heldout.json", heldout)


# --- one seed of the audit --------------------------------------------------------------------


@dataclass
class Seed:
    """A probe suite and its run, row-aligned (``run.loss[r]`` is ``suite.table`` row ``r``)."""

    suite: ProbeSuite
    run: Run
    position: int = 0

    @property
    def seed(self) -> Any:
        return self.suite.meta.get("seed", self.position)

    def probe_rows(self) -> np.ndarray:
        """Rows of every probe (train and held-out), in row order."""
        return np.flatnonzero(self.suite.table["category"].to_numpy() != "")


def load_seed(probe_dir: PathLike, run_dir: PathLike, position: int = 0) -> Seed:
    suite = ProbeSuite.load(probe_dir)
    return Seed(suite=suite, run=Run.load(run_dir, rows=len(suite)), position=position)


def load_seeds(probe_dirs: Sequence[PathLike], run_dirs: Sequence[PathLike]) -> list[Seed]:
    """One :class:`Seed` per (probe dir, run dir); all recorded for the same number of epochs."""
    probe_dirs, run_dirs = list(probe_dirs), list(run_dirs)
    if not probe_dirs or len(probe_dirs) != len(run_dirs):
        raise DataError(
            f"need one run dir per probe dir and at least one seed, got {len(probe_dirs)} "
            f"probe dir(s) and {len(run_dirs)} run dir(s)"
        )
    seeds = [load_seed(p, r, i) for i, (p, r) in enumerate(zip(probe_dirs, run_dirs, strict=True))]
    epochs = {s.run.n_epochs for s in seeds}
    if len(epochs) != 1:
        detail = ", ".join(f"{s.run.path}: {s.run.n_epochs}" for s in seeds)
        raise DataError(f"seeds were recorded for different numbers of epochs ({detail})")
    return seeds
