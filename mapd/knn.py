"""Exact k-NN metadata assignment (paper Eqs. 6 and 7), pruned, on CPU and CUDA.

``knn_proba`` returns exactly what scikit-learn's
``KNeighborsClassifier(k).fit(refs, labels).predict_proba(queries)`` returns (Euclidean distance,
uniform weights) without computing and ranking all N x M distances. Every step is a torch op, so
the same code runs on CPU and CUDA.

Method, per batch of queries (``d_k`` is a query's k-th smallest distance):

1. **Groups.** The references (probe trajectories) are split, per class, into groups of at most
   ``_LEAF`` rows by recursive median splits along principal axes. Each group has a centre ``c``
   and a radius ``R`` in the projection ``z = P x`` onto the top ``d`` principal axes of the
   references (orthonormal rows, so ``||z_q - z_r|| <= ||q - r||``), and stores its *seeds*: the
   k references nearest its centre.
2. **Bounds.** A query's home group is the one with the nearest centre. The largest distance to
   the home seeds, plus a rounding allowance, is ``U >= d_k`` (k references are that close).
   A group can hold a neighbour only if ``||z_q - c|| - R <= sqrt(U)`` (triangle inequality).
3. **Class shortcut** (``knn_proba``): when every group that can hold a neighbour belongs to one
   class, all k neighbours are of that class.
4. **Ranking.** The other queries are processed per home group, centred on its centre (smaller
   norms, smaller rounding errors), against the union of their candidate groups with one float32
   GEMM. Selection is two-level: minima of 4-reference tuples, the ``k + margin`` best tuples, then
   the k best of their elements. The k-th best tuple minimum is another ``U``, which gives a second
   class shortcut.
5. **Certification.** A float32 distance has a rigorous error bound ``e`` (the standard
   ``(T + 2) u`` dot-product bound, ``u = 2^-24``). With ``v_k`` the k-th float32 distance, every
   element below ``v_k - 2e`` is a true neighbour and none above ``v_k + 2e`` is, so the result is
   exact when the elements in between cannot change it (one class for ``knn_proba``; all of them
   selected, in a certain order, for ``knn_neighbors``). Other queries (a fraction of a percent)
   are recomputed in float64 and, if still ambiguous, with the direct formula ``sum((q - r)^2)``.

**Ties and rounding.** ``predict_proba`` searches by brute force when ``T > 15`` or
``k >= M // 2`` (else with a k-d tree). Brute force keeps a max-heap of size k per query, pushes
references in index order and replaces the root only for a strictly smaller distance; for
queries whose k-th distance is ambiguous even in float64, that heap is replayed on exact float64
distances ``sum((q - r)^2)``, so exactly tied references (e.g. duplicated probe trajectories of
different categories) are resolved the same way. With a k-d tree the visiting order decides
ties, so those few queries are handed to scikit-learn's own ``kneighbors``. Every bound carries
a margin for scikit-learn's rounding (float32 differences in the k-d tree, float64 sums); only
distances equal up to about 1e-16 relative could still be ordered differently, which does not
happen for continuous data. ``knn_neighbors`` returns each row nearest first, equal distances
by index.

On CPU the batches run on ``torch.get_num_threads()`` Python threads with one intra-op thread each
(many small ops scale badly with OpenMP threads on a busy machine); the setting is restored after.
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
_PCA_DIMS = 12  # dimensions of the projection used by the group bound
_LEAF = 64  # most references per group
_TUPLE = 4  # references per tuple in the two-level selection
_PREP_ROWS = 4096  # rows per float64 conversion step (keeps temporaries small)
_CHECK_ROWS = 65536  # rows per finiteness check (bounds the temporary)
_BIG = 1e30  # squared norm of padding columns: never a neighbour, finite in GEMMs
_HOME_MASK = 1023  # low bits of the home-group key, so at most 1024 groups


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
    """The single place where trajectories are checked; raises DataError naming the problem."""
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
    if int(k) != k or k < 1:
        raise DataError(f"k must be a positive integer, got {k}")
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

    Coordinates are centred on ``mu32`` (the mean reference rounded to float32; queries and
    references are shifted by exactly the same vector). "Columns" are the references in group
    order, each group padded to ``s`` columns. ``G`` groups, ``d`` projection dimensions, ``C``
    classes.
    """

    k: int
    num_classes: int
    device: torch.device
    tree: bool  # scikit-learn would search with a k-d tree (T <= 15 and k < M // 2)
    refs_in: np.ndarray  # (M, T) the references as given (for _sklearn_rows)
    s: int  # padded group width, a multiple of _TUPLE
    c_proj: float  # error of a float32 projection z, relative to ||x||
    c_dz: float  # error of a float32 ||z - c||^2, relative to ||x||^2 + ||c||^2
    c_e: float  # error of a float32 distance, relative to ||q||^2 + ||r||^2
    c_in: float  # error from re-centring rounded inputs, relative to the same about mu32
    nr_max: float  # largest squared norm of a reference
    mu32: torch.Tensor  # (T,) float32 centre, input coordinates
    mu64: torch.Tensor  # (T,) float64 the same values
    r64: torch.Tensor  # (M, T) float64 centred references, original order
    nr64: torch.Tensor  # (M,) float64 their squared norms
    labels: torch.Tensor  # (M,) int64
    proj32: torch.Tensor  # (d, T) float32 orthonormal rows (principal axes)
    ball_c32: torch.Tensor  # (d, G) float32 group centres in the projection
    ball_cn32: torch.Tensor  # (G,) float32 their squared norms
    ball_r32: torch.Tensor  # (G,) float32 group radii about those centres (rounded up)
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
    f32, f64 = torch.float32, torch.float64
    r_in = torch.as_tensor(refs, device=device).to(f64)
    mu32 = r_in.mean(0).to(f32)
    mu64 = mu32.to(f64)
    r64 = r_in - mu64
    nr64 = (r64 * r64).sum(1)
    d = min(_PCA_DIMS, t, m)
    proj64 = torch.linalg.eigh(r64.T @ r64)[1][:, t - d :].T.contiguous()  # (d, T)
    z64 = r64 @ proj64.T

    lab_np = np.asarray(labels, dtype=np.int64)
    # leaves hold leaf/2..leaf rows; keep the number of groups within the home-key bits
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
    grp_pad = pad.view(n_g, s)
    real = (~pad).to(f64)[:, None]
    lab = torch.as_tensor(lab_np, device=device)
    sizes = (~grp_pad).sum(1, keepdim=True).to(f64)

    # ball of each group in the projection, about its float32 centre
    zc = (z64[col_ref] * real).view(n_g, s, d)
    ball_c32 = (zc.sum(1) / sizes).to(f32)
    dist_c = (zc - ball_c32.to(f64)[:, None]).norm(dim=2)
    ball_r = torch.where(grp_pad, 0.0, dist_c).amax(1)

    # Rounding allowances. Projection: P rounded to float32 and a T-term float32 dot product per
    # axis, plus the input rounding: sqrt(d) (T + 2) u ||x||. Squared centre distance in GEMM
    # form: (d + 4) u (||z||^2 + ||c||^2). Float32 distance ||q||^2 + ||r||^2 - 2 q.r as one GEMM
    # of T + 2 terms: (T + 2) u times 2 ||q|| ||r|| + ||q||^2 + ||r||^2 <= 2 (||q||^2 + ||r||^2);
    # squared norms (T + 2) u each; input rounding 4u; in all (3T + 16) u of ||q||^2 + ||r||^2.
    # Re-centring rounded inputs on a group centre adds 4u of the norms about mu32. The first
    # two and the last are doubled, the third multiplied by 1.25.
    c_proj = 2.0 * math.sqrt(d) * (t + 2) * _U32
    c_dz = 2.0 * (d + 4) * _U32
    c_e = 1.25 * (3 * t + 16) * _U32 + 16 * _U32  # + 16u: scikit-learn's own rounding
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
        tree=t <= 15 and k < m // 2,
        refs_in=refs,
        s=s,
        c_proj=c_proj,
        c_dz=c_dz,
        c_e=c_e,
        c_in=c_in,
        nr_max=float(nr64.max()),
        mu32=mu32,
        mu64=mu64,
        r64=r64,
        nr64=nr64,
        labels=lab,
        proj32=proj64.to(f32),
        ball_c32=ball_c32.T.contiguous(),
        ball_cn32=(ball_c32 * ball_c32).sum(1),
        ball_r32=(ball_r * (1 + 4 * _U32)).to(f32),
        seed_lhs=seed_lhs.to(f32).contiguous(),
        seed_nrmax=nr64[seed_idx].amax(1).to(f32),
        centres32=centres.to(f32),
        cols32=(r64[col_ref] * real).to(f32).contiguous(),
        pad=pad,
        col_ref=col_ref,
        col_lab=lab[col_ref],
        group_onehot=torch.nn.functional.one_hot(group_lab, num_classes).to(f32),
        group_ids=torch.arange(n_g, dtype=torch.int32, device=device),
    )


class _Clock:
    """Adds the time since the previous call to ``timings[stage]`` (no-op without a dict)."""

    def __init__(self, timings: dict[str, float] | None, device: torch.device) -> None:
        self.timings = timings
        self.cuda = device.type == "cuda"
        self.last = time.perf_counter()
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
        now = time.perf_counter()
        with self.lock:
            self.timings[stage] = self.timings.get(stage, 0.0) + now - self.last
        self.last = now


def _heap_select(values: np.ndarray, k: int) -> np.ndarray:
    """Replay scikit-learn's per-query max-heap (``sklearn.utils._heap.heap_push``).

    ``values`` (M,) are pushed in index order; the root is replaced only by a strictly smaller
    value. Returns the k kept reference indices (heap order).
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


def _sklearn_rows(ix: _RefIndex, x_in: torch.Tensor) -> torch.Tensor:
    """scikit-learn's own neighbour sets for queries ``x_in`` (n, T): (n, k) int64.

    Used for ambiguous queries when scikit-learn searches with a k-d tree, whose order of
    visiting references decides exact ties; ``KNeighborsClassifier.predict_proba`` then counts
    the labels of exactly these ``kneighbors``.
    """
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=ix.k).fit(ix.refs_in)
    return torch.as_tensor(
        nn.kneighbors(x_in.cpu().numpy(), return_distance=False), device=ix.device
    )


def _exact_rows(ix: _RefIndex, x_in: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """Exact neighbours of a few queries ``x_in`` (n, T) in input coordinates: (n, k) int64.

    ``cand`` (m,) int64 are the references that can be neighbours (every other one is farther
    than the k-th distance). Float64 expanded distances settle every reference farther than
    their error bound from the k-th distance. Otherwise, when scikit-learn searches by brute
    force, the row is recomputed with the direct formula over all references and an exact tie
    across the k-th position is resolved by replaying scikit-learn's heap; when it uses a k-d
    tree, scikit-learn itself is asked.
    """
    k = ix.k
    m_all, t = ix.r64.shape
    x64 = x_in.to(torch.float64) - ix.mu64
    nq = torch.linalg.vector_norm(x64, dim=1).square_()
    r64, nr = ix.r64[cand], ix.nr64[cand]
    d64 = torch.addmm(nr, x64, r64.T, alpha=-2.0).add_(nq[:, None])  # (n, m)
    vals, pos = torch.topk(d64, min(len(cand), k + 16), dim=1, largest=False, sorted=True)
    vk = vals[:, k - 1]
    e = (3 * t + 16) * _U64 * (nq + nr.max())
    if ix.tree:  # a k-d tree may round differences in float32
        e += 8 * _U32 * vk.abs()
    below = (d64 < (vk - 2 * e)[:, None]).sum(1)
    zone = ((d64 - vk[:, None]).abs_() <= 2 * e[:, None]).sum(1)
    out = _sort_nearest_first(cand[pos[:, :k]], vals[:, :k])
    ambiguous = torch.nonzero(zone > k - below).flatten()
    if len(ambiguous) == 0:
        return out
    if ix.tree:
        kept = _sklearn_rows(ix, x_in[ambiguous])
        direct = ((ix.r64[kept] - x64[ambiguous, None]) ** 2).sum(-1)
        out[ambiguous] = _sort_nearest_first(kept, direct)
        return out
    step = max(1, (1 << 20) // t)
    for i in ambiguous.tolist():
        row = torch.empty(m_all, dtype=torch.float64, device=ix.device)
        for a in range(0, m_all, step):
            row[a : a + step] = ((ix.r64[a : a + step] - x64[i]) ** 2).sum(1)
        rv, ro = torch.sort(row, stable=True)
        if k < m_all and rv[k - 1] == rv[k]:
            kept = torch.as_tensor(_heap_select(row.cpu().numpy(), k), device=ix.device)
        else:
            kept = ro[:k]
        out[i] = _sort_nearest_first(kept[None], row[kept][None])[0]
    return out


def _prepare(
    ix: _RefIndex, x_in: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centre a batch ``x_in`` (b, T) of queries (input coordinates) and find home groups.

    Returns ``xa`` (b, T+2) float32 rows ``[x, 1, ||x||^2]`` (``x`` centred and rounded to
    float32 like the references), ``dz`` (b, G) float32 squared distances from the projection to
    the group centres, ``xn`` (b,) float32 ``||x||`` and ``home`` (b,) int64, the group with the
    nearest centre.
    """
    b, t = x_in.shape
    xa = torch.empty(b, t + 2, device=ix.device)
    if x_in.dtype == torch.float32:
        torch.sub(x_in, ix.mu32, out=xa[:, :t])
    else:
        for a in range(0, b, _PREP_ROWS):
            xa[a : a + _PREP_ROWS, :t] = x_in[a : a + _PREP_ROWS].to(torch.float64) - ix.mu64
    xa[:, t] = 1.0
    xn = torch.linalg.vector_norm(xa[:, :t], dim=1)
    xa[:, t + 1] = xn.square()
    z = xa[:, :t] @ ix.proj32.T
    dz = torch.addmm(ix.ball_cn32, z, ix.ball_c32, alpha=-2.0)
    dz += torch.linalg.vector_norm(z, dim=1).square_()[:, None]
    dz.clamp_min_(0)
    # the group index rides in the low bits of the (non-negative) float32 key, so one integer
    # amin finds the nearest centre (near-ties do not matter: any home is correct)
    key = torch.bitwise_or(dz.view(torch.int32) & ~_HOME_MASK, ix.group_ids)
    home = (key.amin(1) & _HOME_MASK).to(torch.int64)
    return xa, dz, xn, home


def _ball_need(ix: _RefIndex, dz: torch.Tensor, xn: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(b, G) bool: groups whose ball bound does not exclude a neighbour.

    Every member r of group g has ``||q - r|| >= ||z_q - z_r|| >= ||z_q - c_g|| - R_g``, so g can
    hold a neighbour only if ``||z_q - c_g|| <= R_g + sqrt(U)``. ``dz`` (b, G) are the float32
    squared centre distances, ``xn`` (b,) the query norms, ``u`` (b,) the bounds U.
    """
    reach = ix.ball_r32[None] + (u.sqrt() + ix.c_proj * xn)[:, None]
    reach.square_()
    reach += (ix.c_dz * xn.square())[:, None]
    reach += ix.c_dz * ix.ball_cn32
    return dz <= reach


def _count(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-row class counts (n, C) float64 of ``labels`` (n, k)."""
    cnt = torch.zeros(len(labels), num_classes, dtype=torch.float64, device=labels.device)
    return cnt.scatter_add_(1, labels, torch.ones_like(labels, dtype=torch.float64))


def _single_class(labels: torch.Tensor, mask: torch.Tensor, c: int) -> torch.Tensor:
    """(n,) bool: ``labels`` (n, m) are all equal where ``mask`` holds (False if it never does)."""
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
    # a tuple is _TUPLE consecutive references of a group; ordering the columns member-major
    # makes the tuple minima the minima of _TUPLE contiguous slices
    cols = cols.view(ntup, _TUPLE).T.flatten()
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
    # error bounds of the float32 distances: e_u for any of the block, e_c for the candidates
    nrh.masked_fill_(pad, 0.0)
    e_in = ix.c_in * (nq + ix.nr_max)
    e_u = ix.c_e * (nqh + nrh.amax()) + e_in

    kk = k + extra
    if ntup <= kk:  # too few columns for tuples to pay off: rank them all
        thr = torch.full((n,), torch.inf, device=dev)
        tlab = ix.col_lab[cols].expand(n, w)
        return _finish(ix, dist, None, thr, e_u, e_u, tlab, cols, counts_mode)
    sl = dist.view(n, _TUPLE, ntup)
    tmin = torch.minimum(sl[:, 0], sl[:, 1])
    for q in range(2, _TUPLE):
        torch.minimum(tmin, sl[:, q], out=tmin)
    tv, ti = torch.topk(tmin, kk, dim=1, largest=False, sorted=True)
    thr = tv[:, -1]  # every tuple not selected has a minimum >= thr
    tlab = ix.col_lab[cols[:ntup]][ti]  # (n, kk) class of each selected tuple
    nr_tup = nrh.view(_TUPLE, ntup).amax(0)
    e_c = ix.c_e * (nqh + nr_tup[ti].amax(1)) + e_in
    cand = (ti[:, :, None] + torch.arange(0, w, ntup, device=dev)).flatten(1)  # (n, kk*_TUPLE)
    cv = dist.gather(1, cand)  # candidate values, grouped by tuple
    if not counts_mode:
        return _finish(ix, cv, cand, thr, e_c, e_u, tlab, cols, counts_mode)
    # Second class shortcut: d_k <= tv[k-1] + e_c, so a neighbour's float32 distance is at most
    # u2 = tv[k-1] + 2 e_c in the selected tuples, and no other tuple holds one when
    # thr > tv[k-1] + e_c + e_u.
    u2 = tv[:, k - 1] + 2 * e_c
    one = _single_class(tlab, tv <= u2[:, None], c) & (thr > u2 - e_c + e_u)
    res = _count(tlab[:, :1].expand(-1, k), c).mul_(one[:, None])
    ok = torch.ones(n, dtype=torch.bool, device=dev)
    todo = torch.nonzero(~one).flatten()
    if len(todo):
        part, good = _finish(
            ix,
            cv.index_select(0, todo),
            None,
            thr[todo],
            e_c[todo],
            e_u[todo],
            tlab.index_select(0, todo),
            cols,
            counts_mode,
        )
        res.index_copy_(0, todo, part)
        ok.index_copy_(0, todo, good)
    return res, ok


def _finish(
    ix: _RefIndex,
    cv: torch.Tensor,
    cand: torch.Tensor | None,
    thr: torch.Tensor,
    e: torch.Tensor,
    e_u: torch.Tensor,
    tlab: torch.Tensor,
    cols: torch.Tensor,
    counts_mode: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best candidates ``cv`` (n, m) float32, certified.

    ``cand`` (n, m) are their columns (``None``: all columns); every column outside ``cand``
    holds a value ``>= thr`` (n,); ``e`` (n,) bounds the float32 error of the candidates and
    ``e_u`` that of any value; ``tlab`` (n, m / g) is the class of each run of ``g`` consecutive
    candidates. Returns class counts (n, C) float64 or reference indices (n, k) int64 (nearest
    first), and (n,) bool certification flags.
    """
    k, c = ix.k, ix.num_classes
    n, m = cv.shape
    g = m // tlab.shape[1]
    v, p = torch.topk(cv, k, dim=1, largest=False, sorted=not counts_mode)
    vk = v.amax(1)
    # within 2e of v_k an element may be on either side of the exact k-th distance
    zone = (cv - vk[:, None]).abs_() <= 2 * e[:, None]
    good = thr > vk + e + e_u  # every non-candidate is farther than every selected one
    if counts_mode:
        good &= _single_class(tlab, zone.view(n, -1, g).any(2), c)
        return _count(tlab.gather(1, p // g), c), good
    good &= zone.sum(1) == (v >= (vk - 2 * e)[:, None]).sum(1)
    good &= (v[:, 1:] - v[:, :-1] > 2 * e[:, None]).all(1)  # the order is certain too
    sel = p if cand is None else cand.gather(1, p)
    return ix.col_ref[cols][sel], good


def _search_batch(
    ix: _RefIndex, x_in: torch.Tensor, extra: int, counts_mode: bool, clock: _Clock
) -> torch.Tensor:
    """Class counts (b, C) float64 or neighbour indices (b, k) int64 of one batch (b, T)."""
    k, c, dev = ix.k, ix.num_classes, ix.device
    n_g, s = ix.g, ix.s
    b = len(x_in)
    xa, dz, xn, home = _prepare(ix, x_in)
    clock("prepare")
    # sort by home group; distances to the home seeds give U >= d_k
    order = torch.argsort(home, stable=True)
    bounds = [0, *torch.bincount(home, minlength=n_g).cumsum(0).tolist()]
    xs, dzs = xa.index_select(0, order), dz.index_select(0, order)
    xns, homes = xn[order], home[order]
    nqs = xs[:, -1]
    u = torch.empty(b, device=dev)
    for h in range(n_g):
        lo, hi = bounds[h], bounds[h + 1]
        if hi > lo:
            torch.amax(ix.seed_lhs[h] @ xs[lo:hi].T, dim=0, out=u[lo:hi])
    u += ix.c_e * (nqs + ix.seed_nrmax[homes])
    need = _ball_need(ix, dzs, xns, u)  # (b, G) groups that may hold a neighbour
    if counts_mode:
        present = (need.to(torch.float32) @ ix.group_onehot) > 0
        mixed = present.sum(1) > 1
        res = present.to(torch.float64).mul_(float(k))
        rest = torch.nonzero(mixed).flatten()
        need = need.index_select(0, rest)
    else:
        rest = torch.arange(b, device=dev)
        res = torch.zeros(b, k, dtype=torch.int64, device=dev)
    clock("bounds")
    rb = [0, *torch.bincount(homes[rest], minlength=n_g).cumsum(0).tolist()]
    cols_base = torch.arange(s, device=dev)
    n_exact = 0
    for h in range(n_g):
        if rb[h + 1] == rb[h]:
            continue
        rows = rest[rb[h] : rb[h + 1]]
        gids = torch.nonzero(need[rb[h] : rb[h + 1]].any(0)).flatten()
        cols = (gids[:, None] * s + cols_base).flatten()
        xh = xs.index_select(0, rows)
        part, ok = _rank_home_group(ix, h, xh, nqs[rows], cols, extra, counts_mode)
        res.index_copy_(0, rows, part)
        bad = rows[~ok]
        if len(bad):  # not certified in float32: float64 on the same candidates
            n_exact += len(bad)
            cand = ix.col_ref[cols[~ix.pad[cols]]]
            nn = _exact_rows(ix, x_in.index_select(0, order[bad]), cand)
            res.index_copy_(0, bad, _count(ix.labels[nn], c) if counts_mode else nn)
    clock("rank")
    clock("ranked_rows", len(rest))
    clock("float64_rows", n_exact)
    out = torch.empty_like(res)
    return out.index_copy_(0, order, res)


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
    refs: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    k: int,
    batch_size: int,
    extra: int,
    counts_mode: bool,
    device: torch.device,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """Class counts (N, C) float64 (``counts_mode``) or neighbour indices (N, k) int64."""
    n = len(queries)
    width = num_classes if counts_mode else k
    out = np.zeros((n, width), dtype=np.float64 if counts_mode else np.int64)
    with _Workers(device) as workers:
        clock = _Clock(timings, device)
        ix = _build_index(refs, labels, num_classes, k, device)
        clock("index")
        if n == 0:
            return out
        size = max(1, min(batch_size, -(-n // workers.count)))
        starts = list(range(0, n, size))

        def run(start: int) -> None:
            clock = _Clock(timings, device)
            part = queries[start : start + size]
            if not part.flags.c_contiguous:
                part = np.ascontiguousarray(part)
            res = _search_batch(ix, torch.as_tensor(part, device=device), extra, counts_mode, clock)
            out[start : start + len(res)] = res.cpu().numpy()
            clock("store")

        if workers.count == 1 or len(starts) == 1:
            for start in starts:
                run(start)
        else:
            with ThreadPoolExecutor(max_workers=workers.count) as pool:
                list(pool.map(run, starts))
    return out


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
            per CPU thread (G = number of reference groups, about M / 48).
        margin: extra candidate tuples kept by the selection (default 4); affects speed only.
        device: torch device; default CUDA when available.

    Returns:
        (N, k) int64 indices into ``refs``, nearest first (equal distances: lower index first).
    """
    queries, refs = _validate(queries, refs, k)
    extra = 4 if margin is None else max(0, int(margin))
    return _search(
        queries,
        refs,
        np.zeros(len(refs), dtype=np.int64),
        1,
        k=int(k),
        batch_size=batch_size,
        extra=extra,
        counts_mode=False,
        device=_resolve_device(device),
    )


def _validate_labels(refs: np.ndarray, ref_labels: np.ndarray, num_classes: int | None) -> int:
    """Check ``ref_labels`` (M,) against ``refs``; returns the number of classes."""
    if ref_labels.ndim != 1 or len(ref_labels) != len(refs):
        raise DataError(f"ref_labels has shape {ref_labels.shape}, expected ({len(refs)},)")
    if not np.issubdtype(ref_labels.dtype, np.integer):
        raise DataError(f"ref_labels must be integer class codes, got dtype {ref_labels.dtype}")
    c = int(ref_labels.max()) + 1 if num_classes is None else int(num_classes)
    if ref_labels.min() < 0 or ref_labels.max() >= c:
        raise DataError(
            f"ref_labels must be in [0, {c}), got values in "
            f"[{ref_labels.min()}, {ref_labels.max()}]"
        )
    return c


def _proba(
    queries: np.ndarray,
    refs: np.ndarray,
    ref_labels: np.ndarray,
    *,
    k: int,
    num_classes: int | None,
    batch_size: int,
    device: str | torch.device | None,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """``knn_proba`` with optional per-stage ``timings`` (seconds; counts for ``*_rows``)."""
    queries, refs = _validate(queries, refs, k)
    ref_labels = np.asarray(ref_labels)
    c = _validate_labels(refs, ref_labels, num_classes)
    counts = _search(
        queries,
        refs,
        ref_labels.astype(np.int64),
        c,
        k=int(k),
        batch_size=batch_size,
        extra=4,
        counts_mode=True,
        device=_resolve_device(device),
        timings=timings,
    )
    return counts / k


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

    Equals scikit-learn's ``KNeighborsClassifier(k).fit(refs, ref_labels).predict_proba``.

    Args:
        queries: (N, T) float trajectories to assign.
        refs: (M, T) float probe trajectories, M >= k.
        ref_labels: (M,) int class codes in ``[0, num_classes)``.
        k: neighbours per query.
        num_classes: number of columns (default ``ref_labels.max() + 1``).
        batch_size: most queries per batch.
        device: torch device; default CUDA when available.

    Returns:
        (N, num_classes) float64 probabilities (multiples of 1/k); rows sum to 1. Column ``c``
        equals scikit-learn's column for label ``c`` (scikit-learn omits absent labels).
    """
    return _proba(
        queries,
        refs,
        ref_labels,
        k=k,
        num_classes=num_classes,
        batch_size=batch_size,
        device=device,
    )


def knn_proba_sklearn(
    queries: np.ndarray, refs: np.ndarray, ref_labels: np.ndarray, *, k: int = 20
) -> np.ndarray:
    """scikit-learn's answer, for tests and the benchmark (columns = sorted labels present)."""
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=k).fit(refs, ref_labels).predict_proba(queries)
