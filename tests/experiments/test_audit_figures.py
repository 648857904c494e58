"""The audit's Figs. 3 and 4 from synthetic probe/run/assign dirs in the on-disk formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mapd.errors import ConfigError, DataError
from mapd.experiments.audit.figures import probe_dynamics, write_fig3, write_fig4

CATS = ("typical", "atypical", "random_labels")
# Learning rate of the synthetic loss per category: typical fastest, random labels slowest.
RATES = {"typical": 1.2, "atypical": 0.45, "random_labels": 0.12}
N_PER_CAT, N_DATA, T, N_CLASSES = 20, 30, 8, 4

# Held-out confusion matrices per seed (rows true, columns predicted), accuracy = trace / sum.
CONFUSION = {
    "2-probe": ([[9, 1], [2, 8]], [[10, 0], [1, 9]]),
    "3-probe": ([[9, 1, 0], [2, 7, 1], [0, 1, 9]], [[10, 0, 0], [1, 8, 1], [0, 2, 8]]),
}
SETTING_CATS = {"2-probe": ["typical", "random_labels"], "3-probe": list(CATS)}


def _confusion_acc(m: list[list[int]]) -> float:
    a = np.asarray(m)
    return float(np.trace(a) / a.sum())


def write_synthetic_audit(root: Path, seeds: tuple[int, ...] = (0, 1)) -> dict[str, list[Path]]:
    """Probe, run and assign dirs per seed, in the exact files of docs/architecture.md."""
    dirs: dict[str, list[Path]] = {"probes": [], "runs": [], "assign": []}
    for seed in seeds:
        rng = np.random.default_rng(100 + seed)
        cats = np.array([c for c in CATS for _ in range(N_PER_CAT)] + [""] * N_DATA)
        roles = np.array(
            [r for _ in CATS for r in ["probe_train", "probe_heldout"] * (N_PER_CAT // 2)]
            + ["data"] * N_DATA
        )
        perm = rng.permutation(len(cats))  # probes interleaved with data, as in a real suite
        cats, roles = cats[perm], roles[perm]
        n = len(cats)
        orig_label = rng.integers(0, N_CLASSES, n)
        label = orig_label.copy()
        rl = cats == "random_labels"
        label[rl] = (orig_label[rl] + rng.integers(1, N_CLASSES, rl.sum())) % N_CLASSES
        is_probe = cats != ""
        probe_row = np.full(n, -1)
        probe_row[is_probe] = np.arange(is_probe.sum())
        examples = pd.DataFrame(
            {
                "row": np.arange(n),
                "orig_index": np.where(is_probe, rng.integers(0, 1000, n), np.arange(n)),
                "category": cats,
                "role": roles,
                "label": label,
                "orig_label": orig_label,
                "probe_row": probe_row,
            }
        )
        pdir = root / "probes" / f"seed{seed}"
        pdir.mkdir(parents=True)
        examples.to_parquet(pdir / "examples.parquet", index=False)
        imgs = np.zeros((int(is_probe.sum()), 8, 8, 3), dtype=np.uint8)
        for i, c in enumerate(cats[is_probe]):
            imgs[i] = (40 * (CATS.index(c) + 1), 20 * (i % 8), 255 - 30 * (i % 8))
        np.save(pdir / "probe_images.npy", imgs)
        meta = {"dataset": "synthetic", "seed": seed, "categories": list(CATS)}
        meta["classes"] = [f"cls{k}" for k in range(N_CLASSES)]
        (pdir / "meta.json").write_text(json.dumps(meta))

        rate = np.array([RATES.get(c, 0.8) for c in cats])[:, None] * rng.uniform(0.7, 1.3, (n, 1))
        epochs = np.arange(1, T + 1)[None, :]
        loss = (2.3 * np.exp(-rate * epochs) + rng.uniform(0, 0.05, (n, T))).astype(np.float32)
        correct = loss < 0.69
        # Some forgetting, so first- and consistently-learned differ.
        correct &= rng.random((n, T)) > 0.1
        rdir = root / "runs" / f"seed{seed}"
        rdir.mkdir(parents=True)
        np.save(rdir / "loss.npy", loss)
        np.save(rdir / "correct.npy", correct)
        metrics = {
            "epochs": [
                {"epoch": e, "train_loss": 1.0 / e, "test_acc": 0.5 + 0.05 * e, "seconds": 2.0}
                for e in range(1, T + 1)
            ],
            "final_test_acc": 0.9 + 0.01 * seed,
            "recording": "eval",
        }
        (rdir / "metrics.json").write_text(json.dumps(metrics))

        adir = root / "assign" / f"seed{seed}"
        adir.mkdir(parents=True)
        assigned = np.where(is_probe, cats, np.array(CATS)[np.arange(n) % 3])
        md = examples[["row", "orig_index", "label", "orig_label", "role", "category"]].copy()
        for c in CATS:
            md[f"p_{c}"] = (assigned == c).astype(float)
        md["assigned"] = assigned
        md.to_parquet(adir / "metadata.parquet", index=False)
        settings = {}
        for name, mats in CONFUSION.items():
            m = mats[seeds.index(seed) % 2]
            settings[name] = {
                "categories": SETTING_CATS[name],
                "accuracy": _confusion_acc(m),
                "confusion": m,
                "labels": SETTING_CATS[name],
                "n": int(np.sum(m)),
            }
        (adir / "heldout.json").write_text(json.dumps({"k": 20, "settings": settings}))
        dirs["probes"].append(pdir)
        dirs["runs"].append(rdir)
        dirs["assign"].append(adir)
    return dirs


@pytest.fixture
def audit(tmp_path: Path) -> dict[str, list[Path]]:
    return write_synthetic_audit(tmp_path / "in")


def _check_png(path: str | Path, min_w: int = 800, min_h: int = 400) -> None:
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG"
        assert im.width >= min_w and im.height >= min_h, im.size
        # Not a blank canvas: a drawn figure has many distinct colours.
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50


# --------------------------------------------------------------------------------------------
# probe_dynamics
# --------------------------------------------------------------------------------------------


def test_probe_dynamics_hand_example() -> None:
    correct = np.array(
        [
            [0, 1, 0, 1, 1],  # first learned at epoch 2, consistently from epoch 4
            [1, 1, 1, 1, 1],
            [0, 0, 0, 0, 0],
            [1, 0, 1, 0, 1],  # ordinary data row: ignored
        ],
        dtype=bool,
    )
    loss = np.array(
        [[2, 1, 2, 0.5, 0.1], [1, 0.5, 0.2, 0.1, 0], [3, 3, 3, 3, 3], [9, 9, 9, 9, 9]],
        dtype=np.float32,
    )
    df = probe_dynamics(loss, correct, np.array(["atypical", "typical", "random_labels", ""]))
    assert list(df["category"].unique()) == ["typical", "atypical", "random_labels"]
    a = df[df["category"] == "atypical"]
    assert a["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert a["first_learned"].tolist() == [0, 100, 100, 100, 100]
    assert a["consistently_learned"].tolist() == [0, 0, 0, 100, 100]
    assert a["accuracy"].tolist() == [0, 100, 0, 100, 100]
    assert a["n"].tolist() == [1] * 5
    t = df[df["category"] == "typical"]
    assert t["consistently_learned"].tolist() == [100] * 5
    assert np.allclose(t["mean_loss"], [1, 0.5, 0.2, 0.1, 0])
    r = df[df["category"] == "random_labels"]
    assert r["first_learned"].tolist() == [0] * 5
    assert np.allclose(r["mean_loss"], 3)


def test_probe_dynamics_averages_within_category() -> None:
    correct = np.array([[0, 1, 0, 1, 1], [1, 1, 1, 1, 1]], dtype=bool)
    df = probe_dynamics(np.zeros((2, 5), np.float32), correct, np.array(["ood", "ood"]))
    assert df["first_learned"].tolist() == [50, 100, 100, 100, 100]
    assert df["consistently_learned"].tolist() == [50, 50, 50, 100, 100]
    assert df["accuracy"].tolist() == [50, 100, 50, 100, 100]
    assert set(df.columns) == {
        "category",
        "epoch",
        "accuracy",
        "first_learned",
        "consistently_learned",
        "mean_loss",
        "n",
    }


@pytest.mark.parametrize(
    ("loss", "correct", "cats", "msg"),
    [
        (np.zeros((2, 3)), np.zeros((2, 4), bool), ["a", "a"], "must match"),
        (np.zeros((2, 3)), np.zeros((2, 3), np.int8), ["a", "a"], "bool"),
        (np.zeros((2, 3)), np.zeros((2, 3), bool), ["a"], "categories"),
        (np.zeros((2, 3)), np.zeros((2, 3), bool), ["", ""], "no probe rows"),
    ],
)
def test_probe_dynamics_rejects_bad_input(loss, correct, cats, msg) -> None:
    with pytest.raises(DataError, match=msg):
        probe_dynamics(loss, correct, np.array(cats))


# --------------------------------------------------------------------------------------------
# Fig. 3
# --------------------------------------------------------------------------------------------


def _expected_metric(dirs: dict[str, list[Path]], cat: str) -> dict[str, np.ndarray]:
    """Per-seed values computed with plain loops, independently of probe_dynamics."""
    per_seed = {"accuracy": [], "first_learned": [], "consistently_learned": []}
    for p, r in zip(dirs["probes"], dirs["runs"], strict=True):
        ex = pd.read_parquet(p / "examples.parquet")
        c = np.load(r / "correct.npy")[ex["row"][ex["category"] == cat].to_numpy()]
        first = np.zeros(T)
        cons = np.zeros(T)
        for row in c:
            for t in range(T):
                first[t] += row[: t + 1].any()
                cons[t] += row[t:].all()
        per_seed["accuracy"].append(100 * c.mean(axis=0))
        per_seed["first_learned"].append(100 * first / len(c))
        per_seed["consistently_learned"].append(100 * cons / len(c))
    return {k: np.array(v) for k, v in per_seed.items()}


def test_write_fig3_files_and_values(audit, tmp_path: Path) -> None:
    out = tmp_path / "fig"
    res = write_fig3(audit["probes"], audit["runs"], out)
    for key, name in (("png", "fig3.png"), ("svg", "fig3.svg"), ("csv", "fig3.csv")):
        assert Path(res[key]) == out / name and (out / name).is_file()
    _check_png(out / "fig3.png", min_w=1200, min_h=700)
    assert (out / "fig3.svg").read_text()[:200].lstrip().startswith("<?xml")
    assert not list(out.glob(".tmp-*"))  # atomic writes leave no temporaries

    assert res["n_seeds"] == 2 and res["n_epochs"] == T
    assert res["categories"] == list(CATS)
    assert res["loss_epochs"][0] == 1 and res["loss_epochs"][-1] == T
    assert len(res["loss_epochs"]) == 5

    table = pd.read_csv(out / "fig3.csv")
    assert len(table) == len(CATS) * T
    for cat in CATS:
        exp = _expected_metric(audit, cat)
        sub = table[table["category"] == cat].sort_values("epoch")
        assert sub["n"].tolist() == [N_PER_CAT] * T
        assert sub["n_seeds"].tolist() == [2] * T
        for m, vals in exp.items():
            np.testing.assert_allclose(sub[f"{m}_mean"], vals.mean(axis=0), atol=1e-9)
            np.testing.assert_allclose(sub[f"{m}_std"], vals.std(axis=0, ddof=1), atol=1e-9)
    # The synthetic dynamics are ordered: typical learned first, random labels last.
    fl = table[table["epoch"] == 3].set_index("category")["first_learned_mean"]
    assert fl["typical"] > fl["atypical"] > fl["random_labels"]
    assert res["final"]["typical"]["mean_loss"] < res["final"]["random_labels"]["mean_loss"]


def test_write_fig3_uses_row_column_not_table_order(audit, tmp_path: Path) -> None:
    ref = write_fig3(audit["probes"], audit["runs"], tmp_path / "a")
    for p in audit["probes"]:
        ex = pd.read_parquet(p / "examples.parquet")
        ex.sample(frac=1.0, random_state=1).to_parquet(p / "examples.parquet", index=False)
    shuffled = write_fig3(audit["probes"], audit["runs"], tmp_path / "b")
    pd.testing.assert_frame_equal(pd.read_csv(ref["csv"]), pd.read_csv(shuffled["csv"]))


def test_write_fig3_single_seed_custom_epochs(audit, tmp_path: Path) -> None:
    res = write_fig3(audit["probes"][:1], audit["runs"][:1], tmp_path / "f", loss_epochs=[2, 8])
    assert res["loss_epochs"] == [2, 8] and res["n_seeds"] == 1
    table = pd.read_csv(res["csv"])
    assert (table["accuracy_std"] == 0).all()
    with pytest.raises(ConfigError, match="loss_epochs"):
        write_fig3(audit["probes"], audit["runs"], tmp_path / "g", loss_epochs=[0, 9])


def test_write_fig3_rejects_inconsistent_inputs(audit, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="one run dir per probe dir"):
        write_fig3(audit["probes"], audit["runs"][:1], tmp_path / "x")
    r1 = audit["runs"][1]
    np.save(r1 / "loss.npy", np.load(r1 / "loss.npy")[:, :5])
    with pytest.raises(DataError, match=r"correct\.npy"):
        write_fig3(audit["probes"], audit["runs"], tmp_path / "x")
    np.save(r1 / "correct.npy", np.load(r1 / "correct.npy")[:, :5])
    with pytest.raises(DataError, match="different numbers of epochs"):
        write_fig3(audit["probes"], audit["runs"], tmp_path / "x")
    p0 = audit["probes"][0]
    pd.read_parquet(p0 / "examples.parquet").drop(columns="category").to_parquet(
        p0 / "examples.parquet"
    )
    with pytest.raises(DataError, match=r"lacks columns \['category'\]"):
        write_fig3(audit["probes"], audit["runs"], tmp_path / "x")
    assert not (tmp_path / "x" / "fig3.png").exists()


# --------------------------------------------------------------------------------------------
# Fig. 4
# --------------------------------------------------------------------------------------------


def test_write_fig4_files_and_accuracies(audit, tmp_path: Path) -> None:
    out = tmp_path / "fig"
    res = write_fig4(audit["probes"], audit["runs"], audit["assign"], out, n_sampled=5)
    for name in ("fig4.png", "fig4.svg", "fig4.csv"):
        assert (out / name).is_file()
    _check_png(out / "fig4.png", min_w=1200, min_h=900)
    assert list(res["settings"]) == ["2-probe", "3-probe"]
    for name, mats in CONFUSION.items():
        accs = [_confusion_acc(m) for m in mats]
        info = res["settings"][name]
        assert info["accuracies"] == pytest.approx(accs)
        assert info["accuracy_mean"] == pytest.approx(np.mean(accs))
        assert info["accuracy_std"] == pytest.approx(np.std(accs, ddof=1))
        assert info["categories"] == SETTING_CATS[name]
    table = pd.read_csv(out / "fig4.csv")
    assert list(table.columns) == ["setting", "seed", "accuracy", "n"]
    assert table["seed"].tolist() == [0, 1, 0, 1]
    assert table["accuracy"].tolist() == pytest.approx(
        [_confusion_acc(m) for name in CONFUSION for m in CONFUSION[name]]
    )
    assert table["n"].tolist() == [20, 20, 30, 30]


def test_write_fig4_rejects_bad_heldout(audit, tmp_path: Path) -> None:
    path = audit["assign"][1] / "heldout.json"
    obj = json.loads(path.read_text())
    obj["settings"]["3-probe"]["confusion"] = [[1, 2], [3, 4]]
    path.write_text(json.dumps(obj))
    with pytest.raises(DataError, match="confusion shape"):
        write_fig4(audit["probes"], audit["runs"], audit["assign"], tmp_path / "f")
    del obj["settings"]["3-probe"]
    path.write_text(json.dumps(obj))
    with pytest.raises(DataError, match="setting '3-probe' missing"):
        write_fig4(audit["probes"], audit["runs"], audit["assign"], tmp_path / "f")
