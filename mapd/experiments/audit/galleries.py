"""The audit's image galleries: probe examples per category (paper Fig. 2) and training examples
surfaced per assigned category and class (Figs. 1 and 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mapd.categories import category_name, sort_categories
from mapd.data import ImageDataset
from mapd.errors import DataError
from mapd.outputs import Assignment
from mapd.probes import ProbeSuite
from mapd.report import gallery_png


def probe_galleries(
    suite: ProbeSuite, out_dir: Path, *, per_category: int
) -> list[tuple[str, Path]]:
    """One gallery PNG per probe category from the suite's probe images (paper Fig. 2).

    Returns ``(category, png path)`` pairs, categories in the paper's order.
    """
    classes = suite.classes

    def name(label: int) -> str:
        if classes is not None and 0 <= label < len(classes):
            return classes[label]
        return f"class {label}"

    table = suite.table
    probes = table[(table["category"] != "") & (table["probe_row"] >= 0)]
    out = []
    if per_category <= 0:
        return out
    for cat in sort_categories(probes["category"].unique()):
        sub = probes[probes["category"] == cat]
        train = sub[sub["role"] == "probe_train"]
        sub = train if len(train) else sub
        # evenly spaced picks rather than the first few, for a little variety
        pick = np.unique(np.linspace(0, len(sub) - 1, min(per_category, len(sub))).astype(int))
        sub = sub.iloc[pick]
        labels = []
        for lab, orig in zip(sub["label"], sub["orig_label"], strict=True):
            text = name(int(lab))
            if int(orig) >= 0 and int(orig) != int(lab):
                text += f"\n(was {name(int(orig))})"
            labels.append(text)
        imgs = np.asarray(suite.probe_images[sub["probe_row"].to_numpy(dtype=np.int64)])
        path = out_dir / f"probes_{cat}.png"
        gallery_png(imgs, labels, path, title=f"{category_name(cat)} probes")
        out.append((cat, path))
    return out


def surfaced_gallery(
    ds: ImageDataset,
    suite: ProbeSuite,
    assignment: Assignment,
    out_png: Path,
    *,
    max_classes: int = 10,
) -> list[tuple[str, str]]:
    """Paper Figs. 1/5: per assigned category (rows) and class (columns) the training example
    with the highest probability of that category. Empty for file-backed data sets."""
    if ds.images is None:
        return []
    data = assignment.data_rows()
    cats = assignment.categories
    classes = list(range(min(ds.num_classes, max_classes)))
    lookup = {int(i): p for p, i in enumerate(ds.index)}
    orig_index = suite.table["orig_index"].to_numpy()
    # a full grid: an empty cell where no example has that category and class
    cells, labels = [], []
    blank = np.full(ds.images.shape[1:], 255, dtype=np.uint8)
    for cat in cats:
        pool = data[data["assigned"] == cat]
        for k in classes:
            cand = pool[pool["label"] == k]
            if len(cand):
                best = cand.sort_values(f"p_{cat}", ascending=False, kind="stable").iloc[0]
                orig = int(orig_index[int(best["row"])])
                if orig not in lookup:
                    raise DataError(
                        f"{ds.name}: example {orig} of the assignment is not in the data"
                    )
                cells.append(ds.images[lookup[orig]])
                labels.append(f"{cat}\n{ds.classes[k]} p={best[f'p_{cat}']:.2f}")
            else:
                cells.append(blank)
                labels.append(f"{cat}\n{ds.classes[k]}: none")
    if not cells:
        return []
    gallery_png(
        np.stack(cells),
        labels,
        out_png,
        ncols=len(classes),
        title="Training examples surfaced per assigned category (rows) and class (columns)",
    )
    caption = (
        f"Examples surfaced by MAP-D (cf. Figs. 1 and 5), seed {suite.seed}: for each assigned "
        "category and class, the training example with the highest probability of that category"
    )
    return [(str(out_png), caption)]
