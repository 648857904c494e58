"""Metadata assignment from trajectories: p(m | s_i) for every row, and the held-out check."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mapd.errors import DataError
from mapd.knn import knn_proba


def _check(loss: np.ndarray, table: pd.DataFrame) -> None:
    if loss.ndim != 2 or len(loss) != len(table):
        raise DataError(
            f"trajectories have shape {loss.shape} but the probe suite has {len(table)} rows"
        )
    if not np.isfinite(loss).all():
        raise DataError(
            f"trajectories contain NaN/inf in {int((~np.isfinite(loss)).any(1).sum())} rows"
        )


def fit_rows(
    table: pd.DataFrame, categories: list[str], role: str
) -> tuple[np.ndarray, np.ndarray]:
    """Rows with ``role`` whose category is in ``categories``, and their category codes."""
    mask = (table["role"] == role).to_numpy() & table["category"].isin(categories).to_numpy()
    rows = np.flatnonzero(mask)
    codes = pd.Categorical(table["category"].to_numpy()[rows], categories=categories).codes.astype(
        np.int64
    )
    missing = [c for c in categories if c not in set(table["category"].to_numpy()[rows])]
    if missing:
        raise DataError(f"no {role} probes of categories {missing} in the probe suite")
    return rows, codes


def assign_metadata(
    loss: np.ndarray,
    table: pd.DataFrame,
    *,
    categories: list[str],
    k: int = 20,
    epochs: int | None = None,
) -> pd.DataFrame:
    """Probability of each probe category for every row (Eq. 6) and the argmax (Eq. 7).

    Args:
        loss: (N, T) per-example loss trajectories, rows aligned with ``table``.
        table: the probe suite's ``examples`` table.
        categories: probe categories to match against (their ``probe_train`` rows fit the k-NN).
        epochs: use only the first ``epochs`` columns (online use); default all.

    Returns:
        ``table``'s identifying columns plus ``p_<category>`` per category and ``assigned``.
    """
    # online use: epochs after ``epochs`` may not be recorded yet (NaN), so check the used part
    traj = loss[:, :epochs] if epochs and loss.ndim == 2 else loss
    _check(traj, table)
    ref_rows, codes = fit_rows(table, categories, "probe_train")
    proba = knn_proba(traj, traj[ref_rows], codes, k=k, num_classes=len(categories))
    out = table[["row", "orig_index", "label", "orig_label", "role", "category"]].copy()
    for j, cat in enumerate(categories):
        out[f"p_{cat}"] = proba[:, j]
    out["assigned"] = np.asarray(categories)[proba.argmax(1)]
    return out


def heldout_accuracy(
    loss: np.ndarray, table: pd.DataFrame, *, categories: list[str], k: int = 20
) -> dict[str, Any]:
    """Fig. 4 sanity check: k-NN fit on training probes, scored on the held-out probes."""
    _check(loss, table)
    ref_rows, ref_codes = fit_rows(table, categories, "probe_train")
    test_rows, test_codes = fit_rows(table, categories, "probe_heldout")
    proba = knn_proba(loss[test_rows], loss[ref_rows], ref_codes, k=k, num_classes=len(categories))
    pred = proba.argmax(1)
    confusion = np.zeros((len(categories), len(categories)), dtype=np.int64)
    np.add.at(confusion, (test_codes, pred), 1)
    return {
        "categories": list(categories),
        "labels": list(categories),
        "accuracy": float((pred == test_codes).mean()),
        "confusion": confusion.tolist(),
        "n": len(test_rows),
    }
