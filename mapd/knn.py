"""k-NN metadata assignment (paper Eqs. 6 and 7), batched in torch so it scales to ImageNet.

Output equals scikit-learn's ``KNeighborsClassifier(k).fit(refs, labels).predict_proba(queries)``
(Euclidean, uniform weights): candidates are found with one float32 GEMM per batch, then the
``k + margin`` best candidates are re-ranked with exact float64 distances, so float32 rounding
cannot change which neighbours are chosen.
"""

from __future__ import annotations

import numpy as np
import torch

from mapd.errors import DataError


def _check_finite(name: str, a: np.ndarray) -> None:
    if not np.isfinite(a).all():
        bad = (
            int((~np.isfinite(a)).any(axis=1).sum())
            if a.ndim == 2
            else int((~np.isfinite(a)).sum())
        )
        raise DataError(
            f"{name} contains NaN or inf values in {bad} row(s); check the training run's losses"
        )


def knn_neighbors(
    queries: np.ndarray,
    refs: np.ndarray,
    *,
    k: int = 20,
    batch_size: int = 8192,
    margin: int | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Indices of the ``k`` nearest rows of ``refs`` for every row of ``queries``.

    Args:
        queries: (N, T) float trajectories.
        refs: (M, T) float reference (probe) trajectories, M >= k.
        k: neighbours per query.
        batch_size: queries per GEMM; bounds memory at about ``batch_size * M`` floats.
        margin: extra float32 candidates re-ranked in float64 (default ``k``).
        device: torch device; default CUDA when available.

    Returns:
        (N, k) int64 indices into ``refs``, nearest first (ties: lower index first).
    """
    queries = np.asarray(queries)
    refs = np.asarray(refs)
    if queries.ndim != 2 or refs.ndim != 2 or queries.shape[1] != refs.shape[1]:
        raise DataError(
            f"trajectory shapes do not match: queries {queries.shape}, refs {refs.shape}"
        )
    if len(refs) < k:
        raise DataError(f"k={k} neighbours requested but only {len(refs)} reference trajectories")
    _check_finite("query trajectories", queries)
    _check_finite("probe trajectories", refs)
    dev = (
        torch.device(device)
        if device is not None
        else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    n_cand = min(len(refs), k + (k if margin is None else margin))
    r32 = torch.as_tensor(refs, dtype=torch.float32, device=dev)
    r64 = torch.as_tensor(refs, dtype=torch.float64, device=dev)
    r_sq = (r32 * r32).sum(1)
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), batch_size):
        q64 = torch.as_tensor(queries[start : start + batch_size], dtype=torch.float64, device=dev)
        q32 = q64.float()
        # ||q - r||^2 up to the per-query constant ||q||^2, which does not change the ranking
        d = torch.addmm(r_sq.unsqueeze(0), q32, r32.T, beta=1.0, alpha=-2.0)
        cand = torch.topk(d, n_cand, dim=1, largest=False, sorted=False).indices
        # exact re-ranking of the candidates in float64
        exact = ((q64.unsqueeze(1) - r64[cand]) ** 2).sum(-1)
        # stable tie-break on the reference index: sort by index first, then stably by distance
        order = torch.argsort(cand, dim=1)
        cand, exact = cand.gather(1, order), exact.gather(1, order)
        best = torch.argsort(exact, dim=1, stable=True)[:, :k]
        out[start : start + len(q64)] = cand.gather(1, best).cpu().numpy()
    return out


def knn_proba(
    queries: np.ndarray,
    refs: np.ndarray,
    ref_labels: np.ndarray,
    *,
    k: int = 20,
    num_classes: int | None = None,
    batch_size: int = 8192,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """p(m | s_i): share of each class among the k nearest reference trajectories (Eq. 6).

    Args:
        queries: (N, T) float trajectories to assign.
        refs: (M, T) float probe trajectories.
        ref_labels: (M,) int class codes in ``[0, num_classes)``.
        num_classes: number of columns (default ``ref_labels.max() + 1``).

    Returns:
        (N, num_classes) float64 probabilities; rows sum to 1.
    """
    ref_labels = np.asarray(ref_labels, dtype=np.int64)
    if ref_labels.shape != (len(refs),):
        raise DataError(f"ref_labels has shape {ref_labels.shape}, expected ({len(refs)},)")
    c = int(ref_labels.max()) + 1 if num_classes is None else num_classes
    if ref_labels.min() < 0 or ref_labels.max() >= c:
        raise DataError(f"ref_labels must be in [0, {c})")
    nn = knn_neighbors(queries, refs, k=k, batch_size=batch_size, device=device)
    votes = ref_labels[nn]  # (N, k)
    counts = np.zeros((len(votes), c), dtype=np.float64)
    np.add.at(counts, (np.repeat(np.arange(len(votes)), k), votes.ravel()), 1.0)
    return counts / k


def knn_proba_sklearn(
    queries: np.ndarray, refs: np.ndarray, ref_labels: np.ndarray, *, k: int = 20
) -> np.ndarray:
    """scikit-learn's answer, for tests and the benchmark (columns = sorted labels present)."""
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=k).fit(refs, ref_labels).predict_proba(queries)
