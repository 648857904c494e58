"""Probe suites (paper Sec. 2.2): small curated subsets whose learning curves label the rest.

:func:`build_probe_suite` turns a training set into the *audit set*: the probe source examples
are removed from the data and the transformed probes are added back (they are trained on, as in
the paper). Every category has a ``probe_train`` part (fits the k-NN) and a ``probe_heldout``
part (scored by the k-NN: the Fig. 4 sanity check). Probe inputs are materialised once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from mapd.categories import CATEGORIES, FROM_DATA, check_probe_budget
from mapd.data.base import ImageDataset
from mapd.engine.stream import FileRows, StreamSettings, channels_of, decode_views
from mapd.errors import ConfigError, DataError
from mapd.io import atomic_dir, load_json, load_npy, load_table, save_json, save_npy, save_table

ROLES = ("data", "probe_train", "probe_heldout")


@dataclass
class ProbeSuite:
    """The audit set: a table of rows plus the materialised probe images.

    ``table`` columns: row, orig_index, category ("" for ordinary data), role
    (data / probe_train / probe_heldout), label (trained on), orig_label, probe_row.
    ``probe_images``: uint8 (P, H, W, C); row ``r`` with ``probe_row >= 0`` uses
    ``probe_images[probe_row]``, other rows the source data set's example ``orig_index``.
    """

    table: pd.DataFrame
    probe_images: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def labels(self) -> np.ndarray:
        return self.table["label"].to_numpy(np.int64)

    @property
    def categories(self) -> list[str]:
        return list(self.meta["categories"])

    def rows(self, *, role: str | None = None, category: str | None = None) -> np.ndarray:
        """Row positions with the given role and/or category."""
        mask = np.ones(len(self.table), dtype=bool)
        if role is not None:
            mask &= (self.table["role"] == role).to_numpy()
        if category is not None:
            mask &= (self.table["category"] == category).to_numpy()
        return np.flatnonzero(mask)

    def images(self, source: ImageDataset) -> np.ndarray:
        """Compose the (N, H, W, C) uint8 inputs of the audit set from an in-memory source."""
        if source.images is None:
            raise DataError(
                "ProbeSuite.images needs an in-memory data set; file-backed sets stream"
            )
        pos = _positions(source, self.table["orig_index"].to_numpy())
        probe_row = self.table["probe_row"].to_numpy()
        is_probe = probe_row >= 0
        out = np.empty((len(self.table), *self.probe_images.shape[1:]), dtype=np.uint8)
        if source.images.shape[1:] != self.probe_images.shape[1:]:
            raise DataError(
                f"probe images {self.probe_images.shape[1:]} and data images "
                f"{source.images.shape[1:]} differ in shape"
            )
        out[~is_probe] = source.images[pos[~is_probe]]
        out[is_probe] = self.probe_images[probe_row[is_probe]]
        return out

    def file_rows(self, source: ImageDataset) -> np.ndarray:
        """File paths of the audit rows from a file-backed source: (N,) object.

        Ordinary data rows get the path of their source example (``orig_index``); probe rows
        (their inputs are ``probe_images[probe_row]``) get ``""``.
        """
        if source.paths is None:
            raise DataError("ProbeSuite.file_rows needs a file-backed data set (paths)")
        probe_row = self.table["probe_row"].to_numpy()
        orig = self.table["orig_index"].to_numpy()
        out = np.full(len(self.table), "", dtype=object)
        data = probe_row < 0
        out[data] = source.paths[_positions(source, orig[data])]
        return out

    def stream_rows(self, source: ImageDataset) -> FileRows:
        """The audit set of a file-backed source as streamed rows (files + probe images)."""
        return FileRows(
            paths=self.file_rows(source),
            memory=self.probe_images,
            memory_row=self.table["probe_row"].to_numpy(np.int64),
            channels=channels_of(source),
        )

    def save(self, out_dir: str | Path) -> None:
        with atomic_dir(out_dir) as tmp:
            save_table(tmp / "examples.parquet", self.table)
            save_npy(tmp / "probe_images.npy", self.probe_images)
            save_json(tmp / "meta.json", self.meta)

    @classmethod
    def load(cls, path: str | Path) -> ProbeSuite:
        """Read and check a probe-suite folder (probe images memory-mapped)."""
        path = Path(path)
        ex = path / "examples.parquet"
        table = load_table(ex)
        required = ("row", "orig_index", "category", "role", "label", "orig_label", "probe_row")
        if missing := [c for c in required if c not in table.columns]:
            raise DataError(f"{ex} lacks columns {missing}")
        table["category"] = table["category"].fillna("").astype(str)
        if not np.array_equal(np.sort(table["row"].to_numpy()), np.arange(len(table))):
            raise DataError(f"{ex}: column 'row' must hold each of 0..{len(table) - 1} once")
        # ``row`` is the row of the run's arrays: after this, table position == row
        table = table.sort_values("row", kind="stable").reset_index(drop=True)
        if bad := sorted(set(table["role"]) - set(ROLES)):
            raise DataError(f"{ex}: unknown roles {bad}; known: {list(ROLES)}")
        meta = load_json(path / "meta.json")
        if not isinstance(meta, dict) or not isinstance(meta.get("categories"), list):
            raise DataError(f"{path / 'meta.json'}: expected an object with 'categories'")
        cats = set(table["category"]) - {""}
        if unknown := sorted(cats - set(meta["categories"])):
            raise DataError(f"{ex}: categories {unknown} are not in meta.json's list")
        images = load_npy(path / "probe_images.npy", mmap=True)
        probe_row = table["probe_row"].to_numpy()
        if len(table) and (probe_row.max() >= len(images) or probe_row.min() < -1):
            raise DataError(
                f"{ex}: probe_row outside -1..{len(images) - 1} (rows of probe_images.npy)"
            )
        return cls(table=table, probe_images=images, meta=meta)

    @property
    def seed(self) -> int | None:
        return self.meta.get("seed")

    @property
    def classes(self) -> list[str] | None:
        """Class names recorded when the suite was built (None for old suites)."""
        classes = self.meta.get("classes")
        return [str(c) for c in classes] if isinstance(classes, list) else None


def _positions(source: ImageDataset, orig_index: np.ndarray) -> np.ndarray:
    """Map stable example indices to positions in ``source`` (-1 stays -1)."""
    lookup = pd.Series(np.arange(len(source)), index=source.index)
    wanted = orig_index[orig_index >= 0]
    missing = ~pd.Index(wanted).isin(lookup.index)
    if missing.any():
        raise DataError(
            f"{int(missing.sum())} probe-suite rows refer to examples absent from "
            f"{source.name}/{source.split}"
        )
    pos = np.full(len(orig_index), -1, dtype=np.int64)
    pos[orig_index >= 0] = lookup.loc[wanted].to_numpy()
    return pos


# --- input transformations ---------------------------------------------------------------------


def corrupt_gaussian(images: np.ndarray, *, std: float, rng: np.random.Generator) -> np.ndarray:
    """Additive N(0, std) noise on [0, 1] inputs, clipped to [0, 1]; uint8 in and out."""
    x = images.astype(np.float32) / 255.0 + rng.normal(0.0, std, size=images.shape).astype(
        np.float32
    )
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def _gaussian_kernel(ksize: int) -> torch.Tensor:
    # OpenCV's sigma for sigma=0: 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    x = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return (k / k.sum()).float()


def pencil_sketch(images: np.ndarray, *, blur_kernel: int = 7) -> np.ndarray:
    """The authors' out-of-distribution transform: gray -> invert -> Gaussian blur -> colour dodge.

    sketch = gray * 256 / (255 - blur(255 - gray)), clipped to 255; replicated to C channels.
    Args: images uint8 (N, H, W, C), C in {1, 3}. Returns uint8 (N, H, W, C).
    """
    x = torch.from_numpy(images).float()
    gray = x[..., 0] if x.shape[-1] == 1 else x @ torch.tensor([0.299, 0.587, 0.114])
    gray = torch.round(gray)
    inv = (255.0 - gray).unsqueeze(1)  # (N, 1, H, W)
    k = _gaussian_kernel(blur_kernel)
    pad = blur_kernel // 2
    h, w = inv.shape[-2:]
    mode = "reflect" if pad < min(h, w) else "replicate"  # OpenCV's default border is reflect-101
    blurred = F.pad(inv, (pad, pad, 0, 0), mode=mode)
    blurred = F.conv2d(blurred, k.view(1, 1, 1, -1))
    blurred = F.pad(blurred, (0, 0, pad, pad), mode=mode)
    blurred = F.conv2d(blurred, k.view(1, 1, -1, 1)).squeeze(1)
    denom = 255.0 - torch.round(blurred)
    sketch = torch.where(
        denom > 0, gray * 256.0 / denom.clamp(min=1.0), torch.full_like(gray, 255.0)
    )
    sketch = sketch.clamp(0, 255).round().to(torch.uint8).numpy()
    return np.repeat(sketch[..., None], images.shape[-1], axis=-1)


def random_inputs(
    n: int, shape: tuple[int, ...], *, kind: str, rng: np.random.Generator
) -> np.ndarray:
    """Noise inputs: U(0, 1) per dimension (paper) or clip(N(0, 1), 0, 1) (authors' code)."""
    if kind == "uniform":
        x = rng.random((n, *shape), dtype=np.float32)
    elif kind == "clipped_normal":
        x = np.clip(rng.standard_normal((n, *shape), dtype=np.float32), 0.0, 1.0)
    else:
        raise ConfigError(f"random_inputs must be 'uniform' or 'clipped_normal', got {kind!r}")
    return np.rint(x * 255.0).astype(np.uint8)


def wrong_labels(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """A label drawn uniformly from the classes other than ``labels`` (never the true one)."""
    return (labels + rng.integers(1, num_classes, size=len(labels))) % num_classes


def materialise(
    dataset: ImageDataset,
    positions: np.ndarray,
    *,
    size: int,
    resize: int | None = None,
    workers: int = 0,
) -> np.ndarray:
    """Decode rows ``positions`` of a file-backed data set into their eval views.

    The view is the streaming source's: shorter side to ``resize`` (default ``size``), then the
    centre ``size`` crop. Returns uint8 (P, size, size, C), C = 1 for grey data sets, else 3.
    """
    if dataset.paths is None:
        raise DataError(f"{dataset.name}: materialise needs a file-backed data set (paths)")
    settings = StreamSettings.from_config(
        {"image_size": size, "resize": resize, "workers": workers}, what=dataset.name
    )
    rows = FileRows(paths=dataset.paths, channels=channels_of(dataset))
    return decode_views(rows, np.asarray(positions, dtype=np.int64), settings=settings)


# --- suite construction ------------------------------------------------------------------------


def build_probe_suite(
    dataset: ImageDataset,
    *,
    categories: list[str] | tuple[str, ...],
    train_size: int,
    heldout_size: int,
    seed: int,
    cscores: np.ndarray | None = None,
    cscore_source: str | None = None,
    corrupted_std: float = 0.1,
    ood_blur_kernel: int = 7,
    random_inputs_kind: str = "uniform",
    probe_size: int | None = None,
    probe_resize: int | None = None,
    workers: int = 0,
    keep_sources: bool = False,
    random_labels_draw: str = "other",
) -> ProbeSuite:
    """Build the audit set of ``dataset`` with the given probe categories.

    Args:
        dataset: training split. In memory, probes keep the native image size; file-backed,
            only the probe source images are decoded (:func:`materialise`, once).
        categories: subset of :data:`CATEGORIES`.
        train_size, heldout_size: probes per category for the k-NN fit / the held-out check.
        seed: makes the suite reproducible.
        cscores: (N,) consistency scores aligned with ``dataset`` rows; needed for
            typical / atypical (highest / lowest over the whole data set, as the authors).
        cscore_source: how the scores were obtained, recorded in ``meta``.
        probe_size, probe_resize: file-backed data sets only (ignored in memory): probes are
            materialised as the ``probe_size`` centre crop after resizing the shorter side to
            ``probe_resize`` (default ``probe_size``): the streaming source's eval view.
        workers: decoding threads for file-backed data sets (0 = one per CPU).
        keep_sources: probes are added as copies and every example keeps its own data row
            (the label-noise experiment); by default the sources leave the data (the audit).
        random_labels_draw: ``"other"`` = a random label other than the true one (the paper);
            ``"any"`` = uniform over all classes, so a few keep theirs (the authors' label-noise
            code).
    """
    unknown = set(categories) - set(CATEGORIES)
    if unknown:
        raise ConfigError(f"unknown probe categories {sorted(unknown)}; known: {list(CATEGORIES)}")
    if len(set(categories)) != len(categories):
        raise ConfigError(f"probe categories listed more than once: {list(categories)}")
    if dataset.num_classes < 2:
        raise ConfigError(f"{dataset.name}: probe suites need at least 2 classes")
    if random_labels_draw not in ("other", "any"):
        raise ConfigError(
            f"random_labels_draw must be 'other' or 'any', got {random_labels_draw!r}"
        )
    if dataset.images is not None:
        shape = tuple(dataset.images.shape[1:])
    elif probe_size is None:
        raise ConfigError(
            f"{dataset.name} is file-backed: its probe suite needs a probe size "
            f"(the config's train/image_size)"
        )
    else:
        shape = (probe_size, probe_size, channels_of(dataset))
    n, per_cat = len(dataset), train_size + heldout_size
    needs_scores = {"typical", "atypical"} & set(categories)
    if needs_scores:
        if cscores is None:
            raise ConfigError(f"probe categories {sorted(needs_scores)} need C-scores")
        cscores = np.asarray(cscores, dtype=np.float64)
        if cscores.shape != (n,):
            raise DataError(f"C-scores have shape {cscores.shape}, the data set has {n} examples")
        if not np.isfinite(cscores).all():
            raise DataError("C-scores contain NaN or inf")
    check_probe_budget(categories, per_cat=per_cat, n=n, name=dataset.name)

    rng = np.random.default_rng(seed)
    taken = np.zeros(n, dtype=bool)
    sources: dict[str, np.ndarray] = {}
    # typical / atypical first: they are fixed by the scores, the random categories avoid them
    order = np.argsort(cscores, kind="stable") if cscores is not None else None
    for cat in ("typical", "atypical"):
        if cat in categories:
            ranked = order[::-1] if cat == "typical" else order
            chosen = ranked[~taken[ranked]][:per_cat]
            sources[cat] = rng.permutation(chosen)
            taken[chosen] = True
    for cat in categories:
        if cat in FROM_DATA and cat not in sources:
            chosen = rng.choice(np.flatnonzero(~taken), size=per_cat, replace=False)
            sources[cat] = chosen
            taken[chosen] = True

    data_pos = np.arange(n) if keep_sources else np.flatnonzero(~taken)
    rows: list[pd.DataFrame] = [
        pd.DataFrame(
            {
                "orig_index": dataset.index[data_pos],
                "category": "",
                "role": "data",
                "label": dataset.labels[data_pos],
                "orig_label": dataset.labels[data_pos],
                "probe_row": -1,
            }
        )
    ]
    probe_images: list[np.ndarray] = []
    n_probe = 0
    c = dataset.num_classes
    for cat in categories:
        if cat == "random_inputs":
            pos = None
            imgs = random_inputs(per_cat, shape, kind=random_inputs_kind, rng=rng)
            labels = rng.integers(0, c, size=per_cat)
            orig_index = np.full(per_cat, -1)
            orig_label = np.full(per_cat, -1)
        else:
            pos = sources[cat]
            if dataset.images is not None:
                imgs = dataset.images[pos]
            else:
                imgs = materialise(
                    dataset, pos, size=shape[0], resize=probe_resize, workers=workers
                )
            orig_label = dataset.labels[pos]
            labels = orig_label.copy()
            orig_index = dataset.index[pos]
            if cat == "random_labels":
                if random_labels_draw == "other":
                    labels = wrong_labels(orig_label, c, rng)
                else:
                    labels = rng.integers(0, c, size=len(orig_label))
            elif cat == "corrupted":
                imgs = corrupt_gaussian(imgs, std=corrupted_std, rng=rng)
            elif cat == "ood":
                imgs = pencil_sketch(imgs, blur_kernel=ood_blur_kernel)
        role = np.array(["probe_train"] * train_size + ["probe_heldout"] * heldout_size)
        rows.append(
            pd.DataFrame(
                {
                    "orig_index": orig_index,
                    "category": cat,
                    "role": role,
                    "label": labels,
                    "orig_label": orig_label,
                    "probe_row": np.arange(n_probe, n_probe + per_cat),
                }
            )
        )
        probe_images.append(np.ascontiguousarray(imgs, dtype=np.uint8))
        n_probe += per_cat

    table = pd.concat(rows, ignore_index=True)
    table.insert(0, "row", np.arange(len(table)))
    table = table.astype(
        {
            "row": np.int64,
            "orig_index": np.int64,
            "label": np.int64,
            "orig_label": np.int64,
            "probe_row": np.int64,
        }
    )
    meta = {
        "dataset": dataset.name,
        "split": dataset.split,
        "seed": seed,
        "categories": list(categories),
        "train_size": train_size,
        "heldout_size": heldout_size,
        "corrupted_std": corrupted_std,
        "ood": {"kind": "pencil_sketch", "blur_kernel": ood_blur_kernel},
        "random_inputs": random_inputs_kind,
        "cscore_source": cscore_source,
        "classes": list(dataset.classes),
        "n_data": len(data_pos),
        "n_probes": n_probe,
        "keep_sources": keep_sources,
        "random_labels_draw": random_labels_draw,
        "image_shape": list(shape),
    }
    if dataset.images is None:
        meta["storage"] = "files"
        meta["probe_size"] = int(shape[0])
        meta["probe_resize"] = int(probe_resize or shape[0])
    images = np.concatenate(probe_images) if probe_images else np.zeros((0, *shape), np.uint8)
    return ProbeSuite(table=table, probe_images=images, meta=meta)
