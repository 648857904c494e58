"""Exact k-NN metadata assignment (paper Eqs. 6 and 7), fast on CPU and CUDA.

``knn_proba`` returns exactly what scikit-learn's
``KNeighborsClassifier(k).fit(refs, labels).predict_proba(queries)`` returns (Euclidean distance,
uniform weights) without computing and ranking all N x M distances. Every step is a torch op, so
the same code runs on CPU and CUDA.

Method, per batch of queries:

1. **Groups and a lower bound.** The references (probe trajectories) are split, per class, into
   groups of at most ``_LEAF`` rows by recursive median splits along principal axes. Trajectories
   are projected onto the top ``d`` principal axes of the references: with ``z = P x`` and the
   residual norm ``rho = ||x - P^T z||``,
   ``||q - r||^2 >= ||z_q - z_r||^2 + (rho_q - rho_r)^2`` (Pythagoras and the reverse triangle
   inequality). Its minimum over a group, minus a rounding allowance, is a lower bound ``L_g`` of
   the distance from the query to every member of group ``g``.
2. **An upper bound of the k-th distance.** The query's home group is the one with the smallest
   ``L_g``; every group stores the k references nearest its centre (its seeds). The largest
   distance to the home seeds plus a rounding allowance is ``U >= d_k``. A group with
   ``L_g > U`` holds no neighbour.
3. **Class shortcut** (``knn_proba``). If all groups that may hold a neighbour belong to one
   class, all k neighbours are of that class.
4. **Ranking.** The other queries are processed per home group (centred on its centre, which
   shrinks rounding errors) against the union of their candidate groups with one float32 GEMM.
   Selection is two-level: the minima of 4-column tuples, the ``k + margin`` best tuples, then
   the k best of their elements. The k-th best tuple minimum is another upper bound of the k-th
   distance, which gives a second class shortcut.
5. **Certification.** Each float32 distance has a rigorous error bound ``e`` (the standard
   ``T * u`` dot-product bound, ``u = 2^-24``). With ``v_k`` the k-th float32 distance, every
   element below ``v_k - 2e`` is a true neighbour and none above ``v_k + 2e`` is, so the result is
   exact when the elements in between cannot change it (one class for ``knn_proba``; all of them
   selected for ``knn_neighbors``). Other queries (typically well under 1%) are recomputed in
   float64 and, if still ambiguous there, with the direct formula ``sum((q - r)^2)`` in float64.

**Ties.** scikit-learn keeps a max-heap of size k per query, pushes references in index order and
replaces the root only for a strictly smaller distance. When references are exactly tied across
the k-th position (e.g. duplicated probe trajectories of different categories), that heap is
replayed on the query's float64 distances, so the same tied references are kept. Distances that
differ only by scikit-learn's own float64 rounding (~1e-16 of the squared norms) are ranked by
their exact values, where scikit-learn may follow its rounding noise; for continuous data this
does not happen in practice. ``knn_neighbors`` orders each row nearest first, equal distances by
reference index.

On CPU the batches run on ``torch.get_num_threads()`` Python threads with one intra-op thread each
(many small ops scale badly with OpenMP on a busy machine); the thread setting is restored after.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from mapd.errors import DataError

_U32 = 2.0**-24  # unit roundoff, float32
_U64 = 2.0**-53  # unit roundoff, float64
_PCA_DIMS = 12  # dimensions of the lower-bound projection
_LEAF = 32  # most references per group
_TUPLE = 4  # columns per tuple in the two-level selection
_PREP_ROWS = 1024  # rows per float64 step (keeps temporaries in cache)
_CHECK_ROWS = 65536  # rows per finiteness check (bounds the temporary)
_BIG = 1e30  # squared norm of padding columns: never a neighbour, finite in GEMMs
_HOME_MASK = 1023  # low bits of the home-group key (so at most 1024 groups)


def _check_finite(name: str, a: np.ndarray) -> None:
    bad = 0
    for start in range(0, len(a), _CHECK_ROWS):
        part = a[start : start + _CHECK_ROWS]
        if not np.isfinite(part).all():
            bad += int((~np.isfinite(part)).reshape(len(part), -1).any(axis=1).sum())
    if bad:
        raise DataError(
            f"{name} contain NaN or inf values in {bad} row(s); check the training run's losses"
        )


def _validate(queries: np.ndarray, refs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The single place where inputs are checked; raises DataError naming the problem."""
    queries = np.asarray(queries)
    refs = np.asarray(refs)
    if queries.ndim != 2 or refs.ndim != 2 or queries.shape[1] != refs.shape[1]:
        raise DataError(
            f"trajectory shapes do not match: queries {queries.shape}, refs {refs.shape} "
            "(expected (N, T) and (M, T) with the same T)"
        )
    if queries.shape[1] == 0:
        raise DataError("trajectories have no epochs (T = 0)")
    for name, a in (("query trajectories", queries), ("probe trajectories", refs)):
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise DataError(f"{name} must be numeric, got dtype {a.dtype}")
    if k < 1:
        raise DataError(f"k must be >= 1, got {k}")
    if len(refs) < k:
        raise DataError(f"k={k} neighbours requested but only {len(refs)} reference trajectories")
    _check_finite("query trajectories", queries)
    _check_finite("probe trajectories", refs)
    return queries, refs


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _split_groups(z: np.ndarray, classes: np.ndarray, leaf: int) -> list[np.ndarray]:
    """Recursive median splits along the principal axis, per class, until <= ``leaf`` rows."""
    groups: list[np.ndarray] = []
    for c in np.unique(classes):
        stack = [np.flatnonzero(classes == c)]
        while stack:
            idx = stack.pop()
            if len(idx) <= leaf:
                groups.append(idx)
                continue
            x = z[idx] - z[idx].mean(axis=0)
            axis = np.linalg.eigh(x.T @ x)[1][:, -1]
            order = np.argsort(x @ axis, kind="stable")
            half = len(idx) // 2
            stack += [idx[order[:half]], idx[order[half:]]]
    return groups


@dataclass
class _RefIndex:
    """References prepared for searching; all tensors live on ``device``.

    "Columns" are the references in group order, each group padded to ``s`` columns; ``G`` is the
    number of groups, ``d`` the projection dimension, ``C`` the number of classes. Coordinates
    are centred on ``mu64`` (the mean reference) unless stated otherwise.
    """

    k: int
    num_classes: int
    device: torch.device
    s: int  # padded group width, a multiple of _TUPLE
    c_ball: float  # rounding allowance of the ball bound, relative to ||q||^2 + ||r||^2
    c_lb: float  # ... of the per-reference bound
    c_e: float  # error bound of a float32 distance, relative to ||q||^2 + ||r||^2
    c_in: float  # ... of rounding the centred inputs to float32, relative to the same
    nr_max: float  # largest squared norm of a reference
    mu32: torch.Tensor  # (T,) float32 mean reference (input coordinates): the centre
    mu64: torch.Tensor  # (T,) float64 the same values
    r64: torch.Tensor  # (M, T) float64 centred references, original order
    nr64: torch.Tensor  # (M,) float64 squared norms of r64
    labels: torch.Tensor  # (M,) int64
    proj64: torch.Tensor  # (d, T) float64 orthonormal rows
    ball_c: torch.Tensor  # (d, G) float64 group centres in the projection
    ball_cn: torch.Tensor  # (G,) float64 their squared norms
    ball_c32: torch.Tensor  # (d, G) float32 the same centres
    ball_cn32: torch.Tensor  # (G,) float32 their squared norms
    ball_r: torch.Tensor  # (G,) float64 group radii in the projection
    ball_rho_mid: torch.Tensor  # (G,) float64 middle of the group's residual-norm range
    ball_rho_half: torch.Tensor  # (G,) float64 half width of that range
    nr_max_g: torch.Tensor  # (G,) float64 largest squared norm in each group
    nr_max_g32: torch.Tensor  # (G,) float32 the same
    lb_rhs: torch.Tensor  # (d+2, G*s) float32 rows -2 z_r, -2 rho_r, ||r||^2 (pads 0, 0, _BIG)
    seed_lhs: torch.Tensor  # (G, k, T+2) float32 rows [-2 r, ||r||^2, 1] of each group's seeds
    seed_nrmax: torch.Tensor  # (G,) float32 largest squared norm among the seeds
    centres32: torch.Tensor  # (G, T) float32 group centres
    cols32: torch.Tensor  # (G*s, T) float32 references in column order (pads 0)
    pad: torch.Tensor  # (G*s,) bool padding columns
    col_ref: torch.Tensor  # (G*s,) int64 reference index (pads 0)
    col_lab: torch.Tensor  # (G*s,) int64 class (pads 0; pads are never selected)
    group_onehot: torch.Tensor  # (G, C) float32 class of each group
    group_ids: torch.Tensor  # (G,) int32 0..G-1

    @property
    def g(self) -> int:
        return len(self.group_onehot)


def _build_index(
    refs: np.ndarray, labels: np.ndarray, num_classes: int, k: int, device: torch.device
) -> _RefIndex:
    m, t = refs.shape
    f64 = torch.float64
    r_in = torch.as_tensor(refs, device=device).to(f64)
    # centre on a float32 vector so queries centred in float32 see exactly the same shift
    mu32 = r_in.mean(0).to(torch.float32)
    mu64 = mu32.to(f64)
    r64 = r_in - mu64
    nr64 = (r64 * r64).sum(1)
    d = min(_PCA_DIMS, t, m)
    proj64 = torch.linalg.eigh(r64.T @ r64)[1][:, t - d :].T.contiguous()
    z64 = r64 @ proj64.T
    rho64 = (nr64 - (z64 * z64).sum(1)).clamp_min(0).sqrt()

    lab_np = np.asarray(labels, dtype=np.int64)
    # leaves of leaf/2..leaf rows: keep the number of groups within the home-key bits
    leaf = max(_LEAF, -(-2 * m // (_HOME_MASK + 1)))
    groups = _split_groups(z64.cpu().numpy(), lab_np, leaf)
    s = -(-max(len(g) for g in groups) // _TUPLE) * _TUPLE
    n_g = len(groups)
    col_ref_np = np.zeros(n_g * s, dtype=np.int64)
    pad_np = np.ones(n_g * s, dtype=bool)
    for j, g in enumerate(groups):
        col_ref_np[j * s : j * s + len(g)] = g
        pad_np[j * s : j * s + len(g)] = False
    col_ref = torch.as_tensor(col_ref_np, device=device)
    pad = torch.as_tensor(pad_np, device=device)
    real = (~pad).to(f64)[:, None]
    lab = torch.as_tensor(lab_np, device=device)
    grp = pad.view(n_g, s)

    # ball bound per group: centre and radius in the projection, range of residual norms
    zc = (z64[col_ref] * real).view(n_g, s, d)
    sizes = (~grp).sum(1, keepdim=True).to(f64)
    ball_c = zc.sum(1) / sizes
    ball_r = torch.where(grp, 0.0, (zc - ball_c[:, None]).norm(dim=2)).amax(1)
    rho_c = rho64[col_ref].view(n_g, s)
    rho_lo = torch.where(grp, torch.inf, rho_c).amin(1)
    rho_hi = torch.where(grp, -torch.inf, rho_c).amax(1)

    nr_cols = torch.where(pad, 0.0, nr64[col_ref])
    lb_rhs = torch.cat(
        [-2.0 * z64[col_ref] * real, -2.0 * rho64[col_ref, None] * real, nr_cols[:, None]], 1
    )
    lb_rhs[pad, -1] = _BIG
    # Rounding allowances (doubled for safety), relative to ||q||^2 + ||r||^2. Ball bound: in
    # float64 from the float32-rounded projection (4u). Per-reference bound: inputs rounded to
    # float32 (4u), float64 projection (negligible), float32 GEMM of d + 2 terms, one addition.
    # Float32 distance ||q||^2 + ||r||^2 - 2 q.r as one GEMM of T + 2 terms: (T + 2) u times
    # 2 ||q|| ||r|| + ||q||^2 + ||r||^2 <= 2 (||q||^2 + ||r||^2), squared norms T u each,
    # input rounding 4u. Re-centring rounded inputs on a group centre adds 4u of the norms
    # about the mean.
    c_ball = 2.0 * (4 * _U32 + 64 * (t + d) * _U64)
    c_lb = 2.0 * (d + 8) * _U32
    c_e = 2.0 * (4 * t + 16) * _U32
    c_in = 8.0 * _U32

    centres = torch.zeros(n_g, t, dtype=f64, device=device)
    grp_of_col = torch.arange(n_g, device=device).repeat_interleave(s)
    centres.index_add_(0, grp_of_col[~pad], r64[col_ref[~pad]])
    centres /= sizes
    dc = (centres * centres).sum(1)[:, None] + nr64[None] - 2 * centres @ r64.T  # (G, M)
    seed_idx = torch.topk(dc, k, dim=1, largest=False).indices  # (G, k)
    seeds = r64[seed_idx]  # (G, k, T)
    seed_lhs = torch.cat(
        [-2.0 * seeds, nr64[seed_idx][..., None], torch.ones_like(seeds[..., :1])], 2
    )
    group_lab = lab[col_ref.view(n_g, s)[:, 0]]
    return _RefIndex(
        k=k,
        num_classes=num_classes,
        device=device,
        s=s,
        c_ball=c_ball,
        c_lb=c_lb,
        c_e=c_e,
        c_in=c_in,
        nr_max=float(nr64.max()),
        mu32=mu32,
        mu64=mu64,
        r64=r64,
        nr64=nr64,
        labels=lab,
        proj64=proj64,
        ball_c=ball_c.T.contiguous(),
        ball_cn=(ball_c * ball_c).sum(1),
        ball_c32=ball_c.T.contiguous().to(torch.float32),
        ball_cn32=(ball_c * ball_c).sum(1).to(torch.float32),
        ball_r=ball_r,
        ball_rho_mid=(rho_lo + rho_hi) / 2,
        ball_rho_half=(rho_hi - rho_lo) / 2,
        nr_max_g=nr_cols.view(n_g, s).amax(1),
        nr_max_g32=nr_cols.view(n_g, s).amax(1).to(torch.float32),
        lb_rhs=lb_rhs.T.contiguous().to(torch.float32),
        seed_lhs=seed_lhs.contiguous().to(torch.float32),
        seed_nrmax=nr64[seed_idx].amax(1).to(torch.float32),
        centres32=centres.to(torch.float32),
        cols32=(r64[col_ref] * real).to(torch.float32).contiguous(),
        pad=pad,
        col_ref=col_ref,
        col_lab=lab[col_ref],
        group_onehot=torch.nn.functional.one_hot(group_lab, num_classes).to(torch.float32),
        group_ids=torch.arange(n_g, dtype=torch.int32, device=device),
    )


_now = time.perf_counter


class _Clock:
    """Adds the time since the previous call to ``timings[stage]`` (no-op without a dict)."""

    def __init__(self, timings: dict[str, float] | None, device: torch.device) -> None:
        self.timings = timings
        self.cuda = device.type == "cuda"
        self.last = _now()
        self.lock = threading.Lock()

    def __call__(self, stage: str, count: int | None = None) -> None:
        if self.timings is None:
            return
        if count is not None:
            with self.lock:
                self.timings[stage] = self.timings.get(stage, 0) + count
            return
        if self.cuda:
            torch.cuda.synchronize()
        now = _now()
        with self.lock:
            self.timings[stage] = self.timings.get(stage, 0.0) + now - self.last
        self.last = now


def _heap_select(values: np.ndarray, k: int) -> np.ndarray:
    """Replay scikit-learn's per-query max-heap (``sklearn.utils._heap.heap_push``).

    ``values`` (M,) are pushed in index order; the root is replaced only by a strictly smaller
    value. Returns the k kept reference indices (in heap order).
    """
    vals = [math.inf] * k
    idx = [-1] * k
    for j, v in enumerate(values.tolist()):
        if v >= vals[0]:
            continue
        cur = 0
        while True:
            left = 2 * cur + 1
            right = left + 1
            if left >= k:
                break
            if right >= k:
                if vals[left] > v:
                    swap = left
                else:
                    break
            elif vals[left] >= vals[right]:
                if v < vals[left]:
                    swap = left
                else:
                    break
            elif v < vals[right]:
                swap = right
            else:
                break
            vals[cur] = vals[swap]
            idx[cur] = idx[swap]
            cur = swap
        vals[cur] = v
        idx[cur] = j
    return np.asarray(idx, dtype=np.int64)


def _sort_nearest_first(idx: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """Reorder rows of ``idx`` (n, k) by ``dist`` (n, k), equal distances by index."""
    by_index = torch.argsort(idx, dim=1)
    idx, dist = idx.gather(1, by_index), dist.gather(1, by_index)
    return idx.gather(1, torch.sort(dist, dim=1, stable=True).indices)


def _exact_rows(ix: _RefIndex, x_in: torch.Tensor) -> torch.Tensor:
    """Exact neighbours of a few queries ``x_in`` (n, T) in input coordinates: (n, k) int64.

    Float64 expanded distances settle every reference farther than their error bound from the
    k-th distance; otherwise the row is recomputed with the direct formula, and an exact tie
    across the k-th position is resolved by replaying scikit-learn's heap.
    """
    k = ix.k
    m, t = ix.r64.shape
    x64 = x_in.to(torch.float64) - ix.mu64
    nq = (x64 * x64).sum(1)
    d64 = nq[:, None] + ix.nr64[None] - 2.0 * (x64 @ ix.r64.T)  # (n, M)
    e = 2.0 * (2 * t + 16) * _U64 * (nq + ix.nr64.max())
    vals, idx = torch.topk(d64, min(m, k + 16), dim=1, largest=False, sorted=True)
    vk = vals[:, k - 1]
    below = (d64 < (vk - 2 * e)[:, None]).sum(1)
    zone = ((d64 - vk[:, None]).abs() <= 2 * e[:, None]).sum(1)
    out = _sort_nearest_first(idx[:, :k], vals[:, :k])
    step = max(1, (1 << 20) // t)
    for i in torch.nonzero(zone > k - below).flatten().tolist():
        row = torch.empty(m, dtype=torch.float64, device=ix.device)
        for a in range(0, m, step):
            row[a : a + step] = ((ix.r64[a : a + step] - x64[i]) ** 2).sum(1)
        rv, ro = torch.sort(row, stable=True)
        if k < m and rv[k - 1] == rv[k]:
            kept = torch.as_tensor(_heap_select(row.cpu().numpy(), k), device=ix.device)
        else:
            kept = ro[:k]
        out[i] = _sort_nearest_first(kept[None], row[kept][None])[0]
    return out


def _prepare(
    ix: _RefIndex, x_in: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centre and project a batch ``x_in`` (b, T) of queries (input coordinates).

    Returns ``xa`` (b, T+2) float32 rows ``[x, 1, ||x||^2]`` (``x`` centred and rounded to
    float32 exactly like the references), ``aq`` (b, d+2) float32 rows ``[z, rho, 1]``, ``nq``
    (b,) float32 ``||x||^2`` and ``home`` (b,) int64, a group with a near centre.
    """
    b, t = x_in.shape
    d, n_g, dev = len(ix.proj64), ix.g, ix.device
    xa = torch.empty(b, t + 2, device=dev)
    if x_in.dtype == torch.float32:
        torch.sub(x_in, ix.mu32, out=xa[:, :t])
    else:
        for a in range(0, b, _PREP_ROWS):
            xa[a : a + _PREP_ROWS, :t] = x_in[a : a + _PREP_ROWS].to(torch.float64) - ix.mu64
    xa[:, t] = 1.0
    aq = torch.empty(b, d + 2, device=dev)
    aq[:, d + 1] = 1.0
    nq = torch.empty(b, device=dev)
    key = torch.empty(b, n_g, dtype=torch.int32, device=dev)
    for a in range(0, b, _PREP_ROWS):
        x64 = xa[a : a + _PREP_ROWS, :t].to(torch.float64)
        n = len(x64)
        nq64 = torch.linalg.vector_norm(x64, dim=1).square_()
        z = x64 @ ix.proj64.T
        zn = torch.linalg.vector_norm(z, dim=1).square_()
        aq[a : a + n, d] = (nq64 - zn).clamp_min_(0).sqrt_()
        aq[a : a + n, :d] = z
        nq[a : a + n] = nq64
        # home = nearest centre in the projection; the group index rides in the low bits of
        # the (non-negative) float32 key, so one integer amin finds it
        dz = torch.addmm(ix.ball_cn32, z.to(torch.float32), ix.ball_c32, alpha=-2.0)
        dz += zn.to(torch.float32)[:, None]
        torch.bitwise_or(
            dz.clamp_min_(0).view(torch.int32) & ~_HOME_MASK, ix.group_ids, out=key[a : a + n]
        )
    xa[:, t + 1] = nq
    home = (key.amin(1) & _HOME_MASK).to(torch.int64)
    return xa, aq, nq, home


def _ball_need(ix: _RefIndex, aq: torch.Tensor, nq: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(b, G) bool: groups whose ball bound does not exclude a neighbour (bound <= ``u``)."""
    b = len(aq)
    d = len(ix.proj64)
    need = torch.empty(b, ix.g, dtype=torch.bool, device=ix.device)
    for a in range(0, b, _PREP_ROWS):
        part = aq[a : a + _PREP_ROWS].to(torch.float64)
        z, rho = part[:, :d], part[:, d : d + 1]
        zn = torch.linalg.vector_norm(z, dim=1).square_()
        far = torch.addmm(ix.ball_cn, z, ix.ball_c, alpha=-2.0).add_(zn[:, None])
        far = far.clamp_min_(0).sqrt_().sub_(ix.ball_r).clamp_min_(0).square_()
        gap = (rho - ix.ball_rho_mid).abs_().sub_(ix.ball_rho_half).clamp_min_(0)
        far += gap.square_()
        far -= ix.c_ball * (nq[a : a + _PREP_ROWS, None] + ix.nr_max_g)
        torch.le(far, u[a : a + _PREP_ROWS, None], out=need[a : a + _PREP_ROWS])
    return need


def _count(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-row class counts (n, C) float64 of ``labels`` (n, k)."""
    cnt = torch.zeros(len(labels), num_classes, dtype=torch.float64, device=labels.device)
    return cnt.scatter_add_(1, labels, torch.ones_like(labels, dtype=torch.float64))


def _single_class(labels: torch.Tensor, mask: torch.Tensor, c: int) -> torch.Tensor:
    """(n,) bool: all ``labels`` (n, m) where ``mask`` holds are equal (none counts as equal)."""
    return torch.where(mask, labels, c).amin(1) == torch.where(mask, labels, -1).amax(1)


def _rank_home_group(
    ix: _RefIndex,
    h: int,
    xh: torch.Tensor,
    nq: torch.Tensor,
    cols: torch.Tensor,
    extra: int,
    counts_mode: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank queries of home group ``h`` against the reference columns ``cols`` (W,).

    ``xh`` (n, T+2) float32 is a scratch copy of the queries' ``[x, 1, ||x||^2]`` rows and ``nq``
    (n,) their squared norms. Returns class counts (n, C) float64 or neighbour indices (n, k)
    int64, and (n,) bool: False where the float32 result is not certified.
    """
    k, c, dev = ix.k, ix.num_classes, ix.device
    n, t2 = xh.shape
    t, w = t2 - 2, len(cols)
    ntup = w // _TUPLE
    # tuples are 4 consecutive references of a group; order the columns member-major so the
    # tuple minima are minima of 4 contiguous slices
    cols = cols.view(ntup, _TUPLE).T.flatten()
    # re-centre on the group centre: smaller norms, smaller rounding errors
    centre = ix.centres32[h]
    xh[:, :t] -= centre
    nqh = torch.linalg.vector_norm(xh[:, :t], dim=1).square_()
    xh[:, t + 1] = nqh
    rhs = torch.empty(w, t2, device=dev)
    torch.sub(ix.cols32[cols], centre, out=rhs[:, :t])
    nrh = torch.linalg.vector_norm(rhs[:, :t], dim=1).square_()
    pad = ix.pad[cols]
    rhs[:, :t] *= -2.0
    rhs[:, t] = nrh.masked_fill(pad, _BIG)
    rhs[:, t + 1] = 1.0
    dist = xh @ rhs.T  # (n, W) squared distances
    # Error bounds of the float32 distances (arithmetic and input rounding): ``e_u`` for any
    # distance of the block, ``e_c`` for those to the candidate tuples.
    nrh.masked_fill_(pad, 0.0)
    e_in = ix.c_in * (nq + ix.nr_max)
    e_u = ix.c_e * (nqh + nrh.amax()) + e_in

    kk = k + extra
    if ntup <= kk:  # too few columns for tuples to pay off: rank them all
        cand = torch.arange(w, device=dev).expand(n, w)
        thr = torch.full((n,), torch.inf, device=dev)
        tlab = ix.col_lab[cols].expand(n, w)
        return _finish(ix, dist, cand, thr, e_u, e_u, tlab, cols, counts_mode)
    sl = dist.view(n, _TUPLE, ntup)
    tmin = torch.minimum(sl[:, 0], sl[:, 1])
    for q in range(2, _TUPLE):
        tmin = torch.minimum(tmin, sl[:, q], out=tmin)
    tv, ti = torch.topk(tmin, kk, dim=1, largest=False, sorted=True)
    thr = tv[:, -1]  # every tuple not selected has a minimum >= thr
    tlab = ix.col_lab[cols[:ntup]][ti]  # (n, kk) class of each selected tuple
    nr_tup = nrh.view(_TUPLE, ntup).amax(0)
    e_c = ix.c_e * (nqh + nr_tup[ti].amax(1)) + e_in
    cand = (ti[:, :, None] + torch.arange(0, w, ntup, device=dev)).flatten(1)  # (n, 4 kk)
    if not counts_mode:
        return _finish(ix, dist, cand, thr, e_c, e_u, tlab, cols, counts_mode)
    # Second class shortcut: d_k <= tv[k-1] + e_c, so a neighbour's float32 distance is at
    # most tv[k-1] + 2 e_c inside the selected tuples, and no other tuple holds one when
    # thr > tv[k-1] + e_c + e_u.
    u2 = tv[:, k - 1] + 2 * e_c
    one = _single_class(tlab, tv <= u2[:, None], c) & (thr > u2 - e_c + e_u)
    res = torch.zeros(n, c, dtype=torch.float64, device=dev)
    res[one] = _count(tlab[one, :1].expand(-1, k), c)
    ok = torch.ones(n, dtype=torch.bool, device=dev)
    todo = torch.nonzero(~one).flatten()
    if len(todo):
        part, good = _finish(
            ix,
            dist[todo],
            cand[todo],
            thr[todo],
            e_c[todo],
            e_u[todo],
            tlab[todo],
            cols,
            counts_mode,
        )
        res[todo] = part
        ok[todo] = good
    return res, ok


def _finish(
    ix: _RefIndex,
    dist: torch.Tensor,
    cand: torch.Tensor,
    thr: torch.Tensor,
    e: torch.Tensor,
    e_u: torch.Tensor,
    tlab: torch.Tensor,
    cols: torch.Tensor,
    counts_mode: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best of the candidate columns ``cand`` (n, m) of ``dist`` (n, W), certified.

    Every column outside ``cand`` holds a value ``>= thr`` (n,); ``e`` (n,) bounds the float32
    error of the candidates' values and ``e_u`` that of any value; ``tlab`` (n, m / g) gives
    the class of each run of ``g`` consecutive candidates. Returns class counts (n, C) float64
    or reference indices (n, k) int64, and (n,) bool certification flags.
    """
    k, c = ix.k, ix.num_classes
    n, m = cand.shape
    g = m // tlab.shape[1]
    cv = dist.gather(1, cand)
    v, p = torch.topk(cv, k, dim=1, largest=False, sorted=not counts_mode)
    vk = v.amax(1)
    # v_k - 2e < value < v_k + 2e: could be on either side of the k-th exact distance
    zone = (cv - vk[:, None]).abs_() <= 2 * e[:, None]
    good = thr > vk + e + e_u  # every non-candidate is farther than any selected one
    if counts_mode:
        good &= _single_class(tlab, zone.view(n, -1, g).any(2), c)
        return _count(tlab.gather(1, p // g), c), good
    good &= zone.sum(1) == (v >= (vk - 2 * e)[:, None]).sum(1)
    good &= (v[:, 1:] - v[:, :-1] > 2 * e[:, None]).all(1)  # the order is certain too
    return ix.col_ref[cols][cand.gather(1, p)], good


def _search_batch(
    ix: _RefIndex, x_in: torch.Tensor, extra: int, counts_mode: bool, clock: _Clock
) -> torch.Tensor:
    """Class counts (b, C) float64 or neighbour indices (b, k) int64 for one batch."""
    k, c, dev = ix.k, ix.num_classes, ix.device
    n_g, s = ix.g, ix.s
    b = len(x_in)
    xa, aq, nq, home = _prepare(ix, x_in)
    clock("prepare")
    # sort by home group; the home seeds give U >= d_k (with the rounding allowance)
    order = torch.argsort(home, stable=True)
    bounds = [0, *torch.bincount(home, minlength=n_g).cumsum(0).tolist()]
    xs, aqs, nqs, homes = xa[order], aq[order], nq[order], home[order]
    u = torch.empty(b, device=dev)
    for h in range(n_g):
        lo, hi = bounds[h], bounds[h + 1]
        if hi > lo:
            torch.amax(ix.seed_lhs[h] @ xs[lo:hi].T, dim=0, out=u[lo:hi])
    u += ix.c_e * (nqs + ix.seed_nrmax[homes])
    need = _ball_need(ix, aqs, nqs, u)  # (b, G) groups that may hold a neighbour
    if counts_mode:
        present = (need.to(torch.float32) @ ix.group_onehot) > 0
        rest = present.sum(1) > 1
        res = present.to(torch.float64) * ((~rest)[:, None] * float(k))
    else:
        rest = torch.ones(b, dtype=torch.bool, device=dev)
        res = torch.zeros(b, k, dtype=torch.int64, device=dev)
    rest_pos = torch.nonzero(rest).flatten()
    rb = [0, *torch.bincount(homes[rest_pos], minlength=n_g).cumsum(0).tolist()]
    clock("seeds")
    cols_base = torch.arange(s, device=dev)
    redo: list[torch.Tensor] = []
    n_mixed = 0
    for h in range(n_g):
        if rb[h + 1] == rb[h]:
            continue
        rows = rest_pos[rb[h] : rb[h + 1]]
        # per-reference lower bounds on the groups the ball bound kept
        gids = torch.nonzero(need[rows].any(0)).flatten()
        cols = (gids[:, None] * s + cols_base).flatten()
        lb = (aqs[rows] @ ix.lb_rhs[:, cols]).view(len(rows), len(gids), s).amin(2)
        lb += (nqs[rows] * (1.0 - ix.c_lb))[:, None]
        lb -= ix.c_lb * ix.nr_max_g32[gids]
        need_r = lb <= u[rows, None]  # (n, len(gids))
        if counts_mode:
            present = (need_r.to(torch.float32) @ ix.group_onehot[gids]) > 0
            mixed = present.sum(1) > 1
            res[rows] = present.to(torch.float64) * ((~mixed)[:, None] * float(k))
            rows, need_r = rows[mixed], need_r[mixed]
            if len(rows) == 0:
                continue
        n_mixed += len(rows)
        gids = gids[need_r.any(0)]
        cols = (gids[:, None] * s + cols_base).flatten()
        part, ok = _rank_home_group(ix, h, xs[rows], nqs[rows], cols, extra, counts_mode)
        res[rows] = part
        redo.append(rows[~ok])
    clock("rank")
    clock("refined_rows", len(rest_pos))
    clock("mixed_rows", n_mixed)
    bad = torch.cat(redo) if redo else rest_pos[:0]
    if len(bad):
        nn = _exact_rows(ix, x_in[order[bad]])
        res[bad] = _count(ix.labels[nn], c) if counts_mode else nn
    clock("exact")
    clock("exact_rows", len(bad))
    out = torch.empty_like(res)
    out[order] = res
    return out


class _Workers:
    """On CPU: one intra-op thread per Python worker thread, restored afterwards.

    Many small ops scale badly with OpenMP intra-op threads on a busy machine (idle OpenMP
    threads spin); independent batches on Python threads (torch releases the GIL) do not.
    """

    def __init__(self, device: torch.device) -> None:
        self.cpu = device.type == "cpu"
        self.previous = torch.get_num_threads()
        self.count = max(1, self.previous) if self.cpu else 1

    def __enter__(self) -> _Workers:
        if self.cpu:
            torch.set_num_threads(1)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cpu:
            torch.set_num_threads(self.previous)


def _search(
    queries: np.ndarray,
    ix: _RefIndex,
    *,
    workers: int,
    batch_size: int,
    extra: int,
    counts_mode: bool,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """Class counts (N, C) float64 (``counts_mode``) or neighbour indices (N, k) int64."""
    n = len(queries)
    width = ix.num_classes if counts_mode else ix.k
    out = np.zeros((n, width), dtype=np.float64 if counts_mode else np.int64)
    if n == 0:
        return out
    size = max(1, min(batch_size, -(-n // workers)))
    starts = list(range(0, n, size))

    def run(start: int) -> None:
        clock = _Clock(timings, ix.device)
        x_in = torch.as_tensor(queries[start : start + size], device=ix.device)
        res = _search_batch(ix, x_in, extra, counts_mode, clock)
        out[start : start + len(res)] = res.cpu().numpy()
        clock("store")

    if workers == 1 or len(starts) == 1:
        for start in starts:
            run(start)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(run, starts))
    return out


_TIMINGS: dict[str, float] | None = None  # set to a dict to collect per-stage timings


def knn_neighbors(
    queries: np.ndarray,
    refs: np.ndarray,
    *,
    k: int = 20,
    batch_size: int = 65536,
    margin: int | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Indices of the ``k`` nearest rows of ``refs`` for every row of ``queries``.

    The neighbour sets equal scikit-learn's (see the module docstring for exact ties).

    Args:
        queries: (N, T) float trajectories.
        refs: (M, T) float reference (probe) trajectories, M >= k.
        k: neighbours per query.
        batch_size: most queries per batch; memory is about ``batch_size * (T + G) * 12`` bytes
            per worker thread.
        margin: extra candidate tuples kept by the selection (default 4); affects speed only.
        device: torch device; default CUDA when available.

    Returns:
        (N, k) int64 indices into ``refs``, nearest first (equal distances: lower index first).
    """
    queries, refs = _validate(queries, refs, k)
    dev = _resolve_device(device)
    extra = 4 if margin is None else max(0, int(margin))
    with _Workers(dev) as workers:
        ix = _build_index(refs, np.zeros(len(refs), dtype=np.int64), 1, k, dev)
        return _search(
            queries,
            ix,
            workers=workers.count,
            batch_size=batch_size,
            extra=extra,
            counts_mode=False,
            timings=_TIMINGS,
        )


def knn_proba(
    queries: np.ndarray,
    refs: np.ndarray,
    ref_labels: np.ndarray,
    *,
    k: int = 20,
    num_classes: int | None = None,
    batch_size: int = 65536,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """p(m | s_i): share of each class among the k nearest reference trajectories (Eq. 6).

    Args:
        queries: (N, T) float trajectories to assign.
        refs: (M, T) float probe trajectories.
        ref_labels: (M,) int class codes in ``[0, num_classes)``.
        k: neighbours per query.
        num_classes: number of columns (default ``ref_labels.max() + 1``).
        batch_size: most queries per batch.
        device: torch device; default CUDA when available.

    Returns:
        (N, num_classes) float64 probabilities (multiples of 1/k); rows sum to 1. Column ``c``
        equals scikit-learn's column for label ``c`` (scikit-learn omits absent labels).
    """
    ref_labels = np.asarray(ref_labels)
    if ref_labels.ndim != 1 or len(ref_labels) != len(np.asarray(refs)):
        raise DataError(
            f"ref_labels has shape {ref_labels.shape}, expected ({len(np.asarray(refs))},)"
        )
    if not np.issubdtype(ref_labels.dtype, np.integer):
        raise DataError(f"ref_labels must be integer class codes, got dtype {ref_labels.dtype}")
    queries, refs = _validate(queries, refs, k)
    ref_labels = ref_labels.astype(np.int64)
    c = int(ref_labels.max()) + 1 if num_classes is None else int(num_classes)
    if ref_labels.min() < 0 or ref_labels.max() >= c:
        raise DataError(
            f"ref_labels must be in [0, {c}), got values in "
            f"[{ref_labels.min()}, {ref_labels.max()}]"
        )
    dev = _resolve_device(device)
    with _Workers(dev) as workers:
        ix = _build_index(refs, ref_labels, c, k, dev)
        counts = _search(
            queries,
            ix,
            workers=workers.count,
            batch_size=batch_size,
            extra=4,
            counts_mode=True,
            timings=_TIMINGS,
        )
    return counts / k


def knn_proba_sklearn(
    queries: np.ndarray, refs: np.ndarray, ref_labels: np.ndarray, *, k: int = 20
) -> np.ndarray:
    """scikit-learn's answer, for tests and the benchmark (columns = sorted labels present)."""
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=k).fit(refs, ref_labels).predict_proba(queries)
