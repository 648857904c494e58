"""The k-NN's small-batch path: a few hundred queries against a few hundred references, on the
device the tensors live on, every training step (prioritized training).

:func:`mapd.knn.knn_proba` builds an index over the references (PCA balls, certified float32
bounds) to make N = 50,000 or ImageNet-size queries cheap; for 320 candidates against 500 probe
curves that set-up costs more than the search. Here the whole (B, M) distance matrix is one
float64 product; the k nearest are the references below the k-th distance plus, at exactly
that distance, the lowest reference indices (the order of :func:`mapd.knn.knn_neighbors`), so
the answer equals ``knn_proba`` (and scikit-learn's) without any index or sort. Cost:
O(B M T) flops and a (B, M) partial selection, a few milliseconds of one CPU core at B = 320,
M = 500, T = 51 (``mapd bench``: ``selection.json``).
"""

from __future__ import annotations

import torch

from mapd.errors import DataError


def knn_share_small(
    queries: torch.Tensor,
    refs: torch.Tensor,
    ref_labels: torch.Tensor,
    *,
    k: int,
    num_classes: int,
) -> torch.Tensor:
    """p(class | curve): share of each class among the ``k`` nearest reference curves.

    Args:
        queries: (B, T) float curves (any float dtype; compared in float64).
        refs: (M, T) float reference curves on the same device, M >= k.
        ref_labels: (M,) int64 class codes in ``[0, num_classes)``.
        k: neighbours per query.
        num_classes: columns of the result.

    Returns:
        (B, num_classes) float64 on the queries' device; rows sum to 1 (multiples of 1/k).
    """
    if queries.ndim != 2 or refs.ndim != 2 or queries.shape[1] != refs.shape[1]:
        raise DataError(
            f"k-NN: queries {tuple(queries.shape)} and references {tuple(refs.shape)} must be "
            "(B, T) and (M, T) with the same T"
        )
    if not 1 <= k <= refs.shape[0]:
        raise DataError(f"k-NN: k = {k} needs 1 <= k <= {refs.shape[0]} references")
    q, r = queries.double(), refs.double()
    # |q - r|^2 = |q|^2 - 2 q.r + |r|^2; clamped at 0 against rounding
    d = (q * q).sum(1, keepdim=True) - 2.0 * (q @ r.T) + (r * r).sum(1)[None, :]
    d = d.clamp_min_(0.0)
    # the k nearest without sorting: every reference closer than the k-th distance, plus the
    # lowest-index references at exactly that distance until there are k (a full stable sort
    # of the (B, M) matrix costs ~5x more on the CPU)
    kth = torch.topk(d, k, dim=1, largest=False, sorted=False).values.amax(1, keepdim=True)
    closer = d < kth
    tied = d == kth
    chosen = closer | tied
    need = k - closer.sum(1, keepdim=True)
    over = (tied.sum(1, keepdim=True) > need).squeeze(1)
    if over.any():  # rare exact ties across the k-th place: keep the lower reference indices
        t = tied[over]
        chosen[over] = closer[over] | (t & (t.cumsum(1) <= need[over]))
    onehot = torch.nn.functional.one_hot(ref_labels.to(d.device).long(), num_classes).double()
    return (chosen.double() @ onehot) / k
