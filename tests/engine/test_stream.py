"""Streaming path: file-backed audit sets train on the same engine as in-memory ones.

The data are real PNG files in the imagefolder layout (ROOT/<split>/<class>/<image>.png).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision.transforms import CenterCrop, Resize

from mapd.config import validate_config
from mapd.data import load_dataset
from mapd.engine.augment import TensorSource
from mapd.engine.run import train_trajectories
from mapd.engine.stream import (
    FileRows,
    FileSource,
    StreamSettings,
    decode_views,
    eval_view,
    rrc_box,
)
from mapd.errors import ConfigError, DataError
from mapd.experiments.audit import steps
from mapd.io import load_json, load_npy, load_table
from mapd.probes import build_probe_suite, materialise

CATS = ["random_labels", "random_inputs", "corrupted", "ood", "random_sample"]
CLASSES = 4


def _write_tree(root: Path, *, n_train: int = 160, n_test: int = 40, side: int = 16) -> None:
    """Random RGB PNGs with a class-dependent colour shift (learnable, every image distinct)."""
    rng = np.random.default_rng(7)
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            c = i % CLASSES
            img = rng.integers(0, 200, (side, side, 3), dtype=np.uint8)
            img[..., c % 3] += np.uint8(55 if c < 3 else 0)
            path = root / split / f"class{c}" / f"{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(path)


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one intra-op thread (and do not fight the decoding threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    _write_tree(root)
    return root


def _train_cfg(**over: Any) -> dict[str, Any]:
    cfg = {
        "model": "small_cnn",
        "model_options": {"width": 4, "depth": 1},
        "epochs": 2,
        "batch_size": 32,
        "lr": 0.05,
        "crop_padding": 2,
        "flip": True,
        "image_size": 16,
        "eval_batch_size": 48,
        "workers": 2,
    }
    return {**cfg, **over}


# --- transforms -----------------------------------------------------------------------------------


def test_eval_view_is_resize_shorter_side_then_centre_crop() -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (41, 23, 3), dtype=np.uint8))  # h 41, w 23
    got = eval_view(img, size=8, resize=10)
    want = np.asarray(CenterCrop(8)(Resize(10)(img)))  # torchvision's eval transform
    assert got.shape == (8, 8, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)
    # at native size the view is the image itself
    same = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    np.testing.assert_array_equal(eval_view(Image.fromarray(same), size=12, resize=12), same)


def test_rrc_box_bounds_and_fallback() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        u = rng.random(22)
        left, top, right, bottom = rrc_box(30, 50, u, scale=(0.08, 1.0), ratio=(0.75, 4 / 3))
        w, h = right - left, bottom - top
        assert 0 <= left < right <= 50 and 0 <= top < bottom <= 30
        assert 0.08 * 1500 * 0.8 <= w * h <= 1500  # rounding of the sides
    # a 10 x 100 strip cannot hold a box of its full area with aspect <= 4/3: centre crop
    # clamped to the largest allowed aspect, as torchvision does
    assert rrc_box(10, 100, np.full(22, 0.5), scale=(1.0, 1.0), ratio=(0.75, 4 / 3)) == (
        43,
        0,
        56,
        10,
    )


def test_pad_crop_draws_and_pixels_match_tensor_source(tmp_path: Path) -> None:
    """Same generator state -> the same crops and flips as the in-memory source, from files."""
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (20, 12, 12, 3), dtype=np.uint8)
    paths = []
    for i, im in enumerate(images):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(im).save(paths[-1])
    labels = np.arange(20) % 3
    mean, std = np.array([0.4, 0.5, 0.6]), np.array([0.2, 0.25, 0.3])
    ref = TensorSource(
        images, labels, device=torch.device("cpu"), crop_padding=3, flip=True, mean=mean, std=std
    )
    settings = StreamSettings.from_config(_train_cfg(image_size=12, crop_padding=3))
    idx = torch.tensor([5, 0, 19, 7, 7, 2])
    for rows in (FileRows(paths=np.array(paths, dtype=object)), FileRows.from_images(images)):
        with FileSource(
            rows, labels, settings=settings, device=torch.device("cpu"), mean=mean, std=std
        ) as src:
            g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
            for augment in (True, False):
                x, y = src.batch(idx, augment=augment, generator=g1)
                x_ref, y_ref = ref.batch(idx, augment=augment, generator=g2)
                assert x.shape == (6, 3, 12, 12) and x.dtype == torch.float32
                torch.testing.assert_close(x, x_ref, rtol=0, atol=0)
                assert y.tolist() == y_ref.tolist() == labels[idx.numpy()].tolist()
            # generator consumed alike
            assert torch.equal(g1.get_state(), g2.get_state())


def test_random_resized_crop_is_seeded_and_varies() -> None:
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (6, 20, 28, 3), dtype=np.uint8)
    settings = StreamSettings.from_config(
        _train_cfg(image_size=10, resize=12, train_transform="random_resized_crop")
    )
    src = FileSource(
        FileRows.from_images(images), np.zeros(6), settings=settings, device=torch.device("cpu")
    )
    idx = torch.arange(6)
    a = src.batch(idx, augment=True, generator=torch.Generator().manual_seed(1))[0]
    b = src.batch(idx, augment=True, generator=torch.Generator().manual_seed(1))[0]
    c = src.batch(idx, augment=True, generator=torch.Generator().manual_seed(2))[0]
    assert a.shape == (6, 3, 10, 10)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # eval: shorter side 20 -> 12, centre 10 x 10 crop
    e = src.batch(idx, augment=False)[0]
    want = np.stack([eval_view(Image.fromarray(im), size=10, resize=12) for im in images])
    np.testing.assert_array_equal(
        (e.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy(), want
    )
    src.close()


def test_prefetch_and_out_of_order_batches(tree: Path) -> None:
    ds = load_dataset("imagefolder", "train", root=tree, in_memory=False)
    mem = load_dataset("imagefolder", "train", root=tree, in_memory=True)
    settings = StreamSettings.from_config(_train_cfg())
    with FileSource(
        FileRows.from_dataset(ds), ds.labels, settings=settings, device=torch.device("cpu")
    ) as src:
        for idx in (torch.arange(0, 10), torch.arange(10, 20), torch.tensor([3, 150, 3, 11])):
            x, y = src.batch(idx, augment=False)
            got = (x.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
            np.testing.assert_array_equal(got, mem.images[idx.numpy()])
            assert y.tolist() == mem.labels[idx.numpy()].tolist()


def test_grey_and_mixed_channel_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    grey = rng.integers(0, 256, (3, 9, 9), dtype=np.uint8)
    for i, g in enumerate(grey):
        path = tmp_path / "grey" / "a" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(g).save(path)
    ds = load_dataset("imagefolder", "train", root=tmp_path / "grey", in_memory=False)
    assert ds.info["color_mode"] == "L"
    rows = FileRows.from_dataset(ds)
    assert rows.channels == 1
    views = decode_views(rows, [2, 0], settings=StreamSettings.from_config({"image_size": 9}))
    assert views.shape == (2, 9, 9, 1)
    np.testing.assert_array_equal(views[..., 0], grey[[2, 0]])

    # one RGB file among grey ones: the set is RGB and grey images get three equal channels
    path = tmp_path / "grey" / "a" / "rgb.png"
    Image.fromarray(rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)).save(path)
    ds = load_dataset("imagefolder", "train", root=tmp_path / "grey", in_memory=False)
    rows = FileRows.from_dataset(ds)
    assert rows.channels == 3
    views = decode_views(rows, range(4), settings=StreamSettings.from_config({"image_size": 9}))
    assert views.shape == (4, 9, 9, 3)
    for k in range(3):  # rows 0-2 are the grey files (sorted paths: 0.png, 1.png, 2.png)
        np.testing.assert_array_equal(views[k], np.repeat(grey[k][..., None], 3, axis=-1))


def test_missing_and_corrupt_files_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    rows = FileRows(paths=np.array([str(tmp_path / "gone.png"), str(bad)], dtype=object))
    settings = StreamSettings.from_config({"image_size": 8})
    with FileSource(rows, np.zeros(2), settings=settings, device=torch.device("cpu")) as src:
        with pytest.raises(DataError, match=r"missing: .*gone\.png"):
            src.batch(torch.tensor([0]), augment=False)
        with pytest.raises(DataError, match=r"cannot decode image .*bad\.png"):
            src.batch(torch.tensor([1]), augment=True, generator=torch.Generator())


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="image_size must be set"):
        StreamSettings.from_config({"image_size": None})
    with pytest.raises(ConfigError, match="resize must be an integer >= image_size"):
        StreamSettings.from_config({"image_size": 32, "resize": 16})
    with pytest.raises(ConfigError, match="crop_padding"):
        StreamSettings.from_config({"image_size": 8, "crop_padding": 8})
    with pytest.raises(ConfigError, match="train_transform"):
        StreamSettings.from_config({"image_size": 8, "train_transform": "jitter"})


# --- probe suites ---------------------------------------------------------------------------------


def test_probe_suite_of_files_equals_in_memory_suite(tree: Path) -> None:
    files = load_dataset("imagefolder", "train", root=tree, in_memory=False)
    mem = load_dataset("imagefolder", "train", root=tree, in_memory=True)
    kw: dict[str, Any] = {"categories": CATS, "train_size": 4, "heldout_size": 4, "seed": 3}
    a = build_probe_suite(mem, **kw)
    b = build_probe_suite(files, **kw, probe_size=16, workers=2)
    pd.testing.assert_frame_equal(a.table, b.table)
    np.testing.assert_array_equal(a.probe_images, b.probe_images)
    assert b.meta["probe_size"] == 16 and b.meta["storage"] == "files"
    assert "probe_size" not in a.meta  # in-memory suites are unchanged

    # stream rows: files for data rows, probe images for probe rows, in audit-row order
    rows = b.stream_rows(files)
    data = b.table["probe_row"].to_numpy() < 0
    assert rows.paths[data].tolist() == files.paths[b.table["orig_index"][data]].tolist()
    assert (rows.paths[~data] == "").all()
    composed = decode_views(
        rows, np.arange(len(b)), settings=StreamSettings.from_config(_train_cfg())
    )
    np.testing.assert_array_equal(composed, a.images(mem))

    # a smaller probe size materialises the centre crop of the resized sources
    c = build_probe_suite(files, **kw, probe_size=12, probe_resize=14)
    src = c.table[c.table.category == "random_sample"]
    pos = src["orig_index"].to_numpy()
    np.testing.assert_array_equal(
        c.probe_images[src["probe_row"].to_numpy()],
        materialise(files, pos, size=12, resize=14),
    )
    assert c.probe_images.shape[1:] == (12, 12, 3)
    with pytest.raises(ConfigError, match="probe size"):
        build_probe_suite(files, **kw)


# --- training ------------------------------------------------------------------------------------


def _config(root: Path, in_memory: bool, results: Path, **train: Any) -> dict[str, Any]:
    return validate_config(
        {
            "seeds": [0],
            "device": "cpu",
            "results": str(results),
            "datasets": {
                "tree": {
                    "loader": "imagefolder",
                    "options": {"root": str(root), "in_memory": in_memory},
                    "probes": {"categories": CATS, "train_size": 4, "heldout_size": 4},
                    "train": _train_cfg(**train),
                    "assign": {"settings": {"mine": CATS}, "use": "mine"},
                }
            },
        }
    )


def test_streaming_steps_match_in_memory_steps(tree: Path, tmp_path: Path) -> None:
    """`mapd probes` + `mapd train` on files give the in-memory run's rows and trajectories."""
    out: dict[bool, dict[str, Any]] = {}
    for in_memory in (True, False):
        cfg = _config(tree, in_memory, tmp_path / f"r{in_memory}")
        pdir, rdir = tmp_path / f"probes{in_memory}", tmp_path / f"run{in_memory}"
        steps.probes(cfg, "tree", 0, None, pdir)
        metrics = steps.train(cfg, "tree", 0, pdir, rdir, tmp_path / f"partial{in_memory}")
        out[in_memory] = {
            "table": load_table(pdir / "examples.parquet"),
            "probes": load_npy(pdir / "probe_images.npy"),
            "loss": load_npy(rdir / "loss.npy"),
            "correct": load_npy(rdir / "correct.npy"),
            "metrics": metrics,
        }
    mem, st = out[True], out[False]
    pd.testing.assert_frame_equal(mem["table"], st["table"])
    np.testing.assert_array_equal(mem["probes"], st["probes"])
    n = len(mem["table"])
    assert n == 160 - 4 * 8 + 5 * 8  # data rows minus probe sources plus probes
    assert st["loss"].shape == mem["loss"].shape == (n, 2) and st["loss"].dtype == np.float32
    assert st["correct"].shape == (n, 2) and st["correct"].dtype == np.bool_
    assert np.isfinite(st["loss"]).all()
    # same pixels, normalisation, draws and row order -> the same curves
    np.testing.assert_allclose(st["loss"], mem["loss"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(st["correct"], mem["correct"])
    # the comparison can tell rows apart: permuting rows breaks it by a wide margin
    perm = np.random.default_rng(0).permutation(n)
    assert np.abs(st["loss"][perm] - mem["loss"]).max() > 0.1
    assert st["metrics"]["final_test_acc"] == pytest.approx(mem["metrics"]["final_test_acc"])
    assert st["metrics"]["n"] == n

    # a probe suite materialised at another size is refused before training
    cfg = _config(tree, False, tmp_path / "r", image_size=12)
    with pytest.raises(ConfigError, match="rebuild the probes"):
        steps.train(
            cfg, "tree", 0, tmp_path / "probesFalse", tmp_path / "run-other", tmp_path / "p"
        )


def test_streaming_resume_after_interrupt(tree: Path, tmp_path: Path) -> None:
    files = load_dataset("imagefolder", "train", root=tree, in_memory=False)
    test = load_dataset("imagefolder", "test", root=tree, in_memory=False)
    suite = build_probe_suite(
        files, categories=CATS, train_size=4, heldout_size=4, seed=1, probe_size=12, probe_resize=14
    )
    train = _train_cfg(
        image_size=12, resize=14, train_transform="random_resized_crop", crop_scale=[0.3, 1.0]
    )
    kw: dict[str, Any] = {
        "num_classes": CLASSES,
        "train": train,
        "seed": 5,
        "device": "cpu",
        "test_images": FileRows.from_dataset(test),
        "test_labels": test.labels,
        "log": lambda _: None,
    }
    rows = suite.stream_rows(files)
    full = train_trajectories(rows, suite.labels, workdir=tmp_path / "full", **kw)
    with pytest.raises(Exception, match="stopped after epoch 1"):
        train_trajectories(rows, suite.labels, workdir=tmp_path / "cut", stop_after_epoch=1, **kw)
    assert load_json(tmp_path / "cut" / "signature.json")["shape"] == [len(suite), 2]
    logs: list[str] = []
    resumed = train_trajectories(
        rows,
        suite.labels,
        workdir=tmp_path / "cut",
        **{**kw, "log": logs.append, "train": {**train, "workers": 1}},
    )
    assert any("resuming" in m for m in logs)  # workers do not change results or the signature
    assert full.loss.shape == (len(suite), 2) and np.isfinite(full.loss).all()
    np.testing.assert_array_equal(resumed.loss, full.loss)
    np.testing.assert_array_equal(resumed.correct, full.correct)


def test_mixed_storage_of_train_and_test_sets(tree: Path, tmp_path: Path) -> None:
    """Training and test sets may differ in storage ("auto" decides per split)."""
    files = load_dataset("imagefolder", "train", root=tree, in_memory=False)
    mem = load_dataset("imagefolder", "train", root=tree, in_memory=True)
    test_files = load_dataset("imagefolder", "test", root=tree, in_memory=False)
    test_mem = load_dataset("imagefolder", "test", root=tree, in_memory=True)
    suite = build_probe_suite(
        files, categories=CATS, train_size=4, heldout_size=4, seed=0, probe_size=16
    )
    kw: dict[str, Any] = {
        "num_classes": CLASSES,
        "train": _train_cfg(epochs=1),
        "seed": 0,
        "device": "cpu",
        "log": lambda _: None,
    }
    accs = [
        train_trajectories(
            suite.stream_rows(files),
            suite.labels,
            workdir=tmp_path / "a",
            test_images=test_mem.images,
            test_labels=test_mem.labels,
            **kw,
        ).metrics["final_test_acc"],
        train_trajectories(
            suite.images(mem),
            suite.labels,
            workdir=tmp_path / "b",
            test_images=FileRows.from_dataset(test_files),
            test_labels=test_files.labels,
            **kw,
        ).metrics["final_test_acc"],
        train_trajectories(
            suite.images(mem),
            suite.labels,
            workdir=tmp_path / "c",
            test_images=test_mem.images,
            test_labels=test_mem.labels,
            **kw,
        ).metrics["final_test_acc"],
    ]
    # the same pixels whichever storage each split has
    assert accs[0] == pytest.approx(accs[2]) and accs[1] == pytest.approx(accs[2])


# --- real data ------------------------------------------------------------------------------------


@pytest.mark.shared
def test_cifar10_imagefolder_subset_streams(shared_cifar10_root: Path, tmp_path: Path) -> None:
    """2,000 / 500 CIFAR-10 images as an imagefolder tree, two epochs through the streaming path."""
    root = tmp_path / "cifar-tree"
    official: dict[str, Any] = {}
    for split, n in (("train", 2000), ("test", 500)):
        ds = load_dataset("cifar10", split, root=shared_cifar10_root, reencoded_ok=True)
        official[split] = ds
        for i in range(n):
            path = root / split / ds.classes[ds.labels[i]] / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(ds.images[i]).save(path)
    files = load_dataset("imagefolder", "train", root=root, in_memory=False)
    test = load_dataset("imagefolder", "test", root=root, in_memory=False)
    assert len(files) == 2000 and files.num_classes == 10 and files.images is None
    suite = build_probe_suite(
        files, categories=CATS, train_size=25, heldout_size=25, seed=0, probe_size=32
    )
    rows = suite.stream_rows(files)
    train = _train_cfg(
        image_size=32,
        crop_padding=4,
        epochs=2,
        batch_size=128,
        eval_batch_size=500,
        model_options={"width": 16},
        lr=0.05,
        workers=0,
    )
    # streamed data rows are the official images of the files they name
    data = np.flatnonzero(suite.table["probe_row"].to_numpy() < 0)[::97]
    names = [int(Path(p).stem) for p in rows.paths[data]]
    views = decode_views(rows, data, settings=StreamSettings.from_config(train))
    np.testing.assert_array_equal(views, official["train"].images[names])

    t0 = time.perf_counter()
    res = train_trajectories(
        rows,
        suite.labels,
        num_classes=10,
        train=train,
        seed=0,
        workdir=tmp_path / "run",
        device="cpu",
        test_images=FileRows.from_dataset(test),
        test_labels=test.labels,
        log=print,
    )
    wall = time.perf_counter() - t0
    n = 2000 - 4 * 50 + 5 * 50
    assert res.loss.shape == (n, 2) and np.isfinite(res.loss).all()
    assert res.loss[:, 1].mean() < res.loss[:, 0].mean()  # it learns
    assert res.metrics["final_test_acc"] > 0.2  # chance is 0.10
    print(
        f"streaming CIFAR-10 imagefolder: {res.metrics['train_images_per_s']:.0f} train images/s, "
        f"{wall:.1f}s wall for 2 epochs"
    )
