"""k-NN metadata assignment (Eqs. 6, 7) and the held-out probe check (Fig. 4)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import KNeighborsClassifier

from mapd.assign import assign_metadata, fit_rows, heldout_accuracy
from mapd.errors import DataError

CATS = ["typical", "atypical", "corrupted", "random_labels"]
T = 6


def _suite(per_role: int = 30, n_data: int = 200, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """A probe-suite table and (N, T) float32 loss trajectories: one noisy curve per category.

    Data rows are drawn from the same four curves (with more noise), in shuffled order.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    curves = np.stack(
        [
            2.0 * np.exp(-t),  # typical: learned at once
            2.0 * np.exp(-t / 4),  # atypical: slowly
            2.0 * np.exp(-t / 2) + 0.5,  # corrupted
            np.full(T, 2.3) - 0.1 * t,  # random labels: barely
        ]
    )
    rows, loss = [], []
    for j, cat in enumerate(CATS):
        for role in ("probe_train", "probe_heldout"):
            loss.append(curves[j] + rng.normal(0, 0.35, size=(per_role, T)))
            rows += [(cat, role)] * per_role
    true = rng.integers(0, 4, size=n_data)
    loss.append(curves[true] + rng.normal(0, 0.5, size=(n_data, T)))
    rows += [("", "data")] * n_data
    table = pd.DataFrame(rows, columns=["category", "role"])
    order = rng.permutation(len(table))
    table = table.iloc[order].reset_index(drop=True)
    loss_arr = np.concatenate(loss)[order].astype(np.float32)
    table.insert(0, "row", np.arange(len(table)))
    table["orig_index"] = rng.permutation(10 * len(table))[: len(table)]
    table["label"] = rng.integers(0, 10, size=len(table))
    table["orig_label"] = table["label"]
    table["probe_row"] = -1
    return loss_arr, table


def _sklearn(loss: np.ndarray, table: pd.DataFrame, cats: list[str], k: int) -> np.ndarray:
    ref = ((table.role == "probe_train") & table.category.isin(cats)).to_numpy()
    codes = np.array([cats.index(c) for c in table.category[ref]])
    knn = KNeighborsClassifier(n_neighbors=k).fit(loss[ref].astype(np.float64), codes)
    return knn.predict_proba(loss.astype(np.float64))


@pytest.mark.parametrize("k", [1, 5, 20])
def test_probabilities_equal_sklearn(k: int) -> None:
    loss, table = _suite()
    out = assign_metadata(loss, table, categories=CATS, k=k)
    expected = _sklearn(loss, table, CATS, k)
    got = out[[f"p_{c}" for c in CATS]].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.sum(1), 1.0)
    # probabilities are multiples of 1/k
    np.testing.assert_allclose(got * k, np.rint(got * k), atol=1e-9)
    # the assigned category is the argmax column (first one on ties, as numpy's argmax)
    np.testing.assert_array_equal(out["assigned"].to_numpy(), np.asarray(CATS)[got.argmax(1)])


def test_output_columns_and_rows() -> None:
    loss, table = _suite()
    out = assign_metadata(loss, table, categories=CATS[:3], k=5)
    assert list(out.columns) == [
        "row",
        "orig_index",
        "label",
        "orig_label",
        "role",
        "category",
        "p_typical",
        "p_atypical",
        "p_corrupted",
        "assigned",
    ]
    assert len(out) == len(table)
    pd.testing.assert_frame_equal(
        out[["row", "orig_index", "label", "orig_label", "role", "category"]],
        table[["row", "orig_index", "label", "orig_label", "role", "category"]],
    )
    assert set(out.assigned) <= set(CATS[:3])
    # rows of a category left out (random_labels) are still assigned to one of the three
    assert set(out.assigned[out.category == "random_labels"]) <= set(CATS[:3])


def test_assignment_recovers_the_categories() -> None:
    loss, table = _suite(n_data=0)
    out = assign_metadata(loss, table, categories=CATS, k=20)
    held = out[out.role == "probe_heldout"]
    assert (held.assigned == held.category).mean() > 0.8


def test_epochs_truncation() -> None:
    loss, table = _suite()
    full = assign_metadata(loss, table, categories=CATS, k=7)
    first3 = assign_metadata(loss, table, categories=CATS, k=7, epochs=3)
    expected = _sklearn(loss[:, :3], table, CATS, 7)
    np.testing.assert_allclose(first3[[f"p_{c}" for c in CATS]].to_numpy(), expected, atol=1e-12)
    pd.testing.assert_frame_equal(first3, assign_metadata(loss[:, :3], table, categories=CATS, k=7))
    assert not first3.equals(full)
    # online use: epochs not recorded yet are NaN and must not matter
    partial = loss.copy()
    partial[:, 3:] = np.nan
    pd.testing.assert_frame_equal(
        assign_metadata(partial, table, categories=CATS, k=7, epochs=3), first3
    )


def test_heldout_accuracy() -> None:
    loss, table = _suite(per_role=25)
    res = heldout_accuracy(loss, table, categories=CATS, k=10)
    conf = np.array(res["confusion"])
    assert conf.shape == (4, 4) and conf.dtype.kind == "i"
    assert res["n"] == 100 == conf.sum()
    np.testing.assert_array_equal(conf.sum(1), 25)  # rows are the true categories
    assert res["accuracy"] == pytest.approx(np.trace(conf) / conf.sum())
    assert res["categories"] == res["labels"] == CATS
    # the same numbers from sklearn fit on the training probes
    ref = ((table.role == "probe_train") & table.category.isin(CATS)).to_numpy()
    test = ((table.role == "probe_heldout") & table.category.isin(CATS)).to_numpy()
    knn = KNeighborsClassifier(n_neighbors=10).fit(
        loss[ref].astype(np.float64), [CATS.index(c) for c in table.category[ref]]
    )
    pred = knn.predict_proba(loss[test].astype(np.float64)).argmax(1)
    true = np.array([CATS.index(c) for c in table.category[test]])
    assert res["accuracy"] == pytest.approx((pred == true).mean())
    expected = np.zeros((4, 4), dtype=int)
    np.add.at(expected, (true, pred), 1)
    np.testing.assert_array_equal(conf, expected)
    assert res["accuracy"] > 0.7  # the four curves are separable


def test_fit_rows_codes_follow_the_given_order() -> None:
    _, table = _suite(per_role=3, n_data=5)
    cats = ["random_labels", "typical"]
    rows, codes = fit_rows(table, cats, "probe_train")
    assert len(rows) == 6
    np.testing.assert_array_equal(np.asarray(cats)[codes], table.category.to_numpy()[rows])
    with pytest.raises(DataError, match=r"no probe_heldout probes of categories \['ood'\]"):
        fit_rows(table, ["typical", "ood"], "probe_heldout")


def test_nan_trajectories_rejected() -> None:
    loss, table = _suite()
    loss[[3, 50], 2] = np.nan
    loss[7, 0] = np.inf
    with pytest.raises(DataError, match="NaN/inf in 3 rows"):
        assign_metadata(loss, table, categories=CATS)
    with pytest.raises(DataError, match="NaN/inf"):
        heldout_accuracy(loss, table, categories=CATS)


def test_length_mismatch_rejected() -> None:
    loss, table = _suite()
    with pytest.raises(
        DataError,
        match=rf"shape \({len(table) - 1}, {T}\) but the probe suite has {len(table)} rows",
    ):
        assign_metadata(loss[:-1], table, categories=CATS)
    with pytest.raises(DataError, match="probe suite has"):
        heldout_accuracy(loss[:-1], table, categories=CATS)
    with pytest.raises(DataError, match="shape"):
        assign_metadata(loss[:, 0], table, categories=CATS)
