"""Exact maximum-cosine assignment of two sets of unit vectors without the dense n × n matrix.

Problem: given unit rows A [n, D] and B [n, D], S_ij = a_i · b_j, find the bijection π maximising
Σ_i S_iπ(i) — what `scipy.optimize.linear_sum_assignment(S, maximize=True)` solves on the dense S.

Method (`sparse_assignment`):
1. One pass over S in row blocks (S is never stored): keep each row's and each column's top
   `R_bound` cosines with their exact values (the pool), the exact row and column maxima, and the
   bound t_i = the `R_bound`-th largest cosine of row i, so S_ij ≤ t_i for every j outside the pool.
2. A candidate graph G ⊆ pool (top R per row and column, plus pairs near their row's maximum, plus a
   greedy bijection so a perfect matching exists), solved exactly with LAPJVsp
   (`scipy.sparse.csgraph.min_weight_full_bipartite_matching`).
3. LP dual prices for that matching: v_j = S_{π⁻¹(j) j} − u_{π⁻¹(j)} (tight on matched pairs) and u
   the smallest u ≥ 0 with u_i ≥ u_{i'} + S_ij − S_{i'j} on every edge (i, j) of G, i' = π⁻¹(j) — a
   longest-path problem on the rows, solved by vectorised Bellman–Ford sweeps, which settle exactly
   when π is optimal on G; the mean of this and the mirror (column-side) solution is used.
4. Certificate: reduced costs u_i + v_j ≥ S_ij − tol for **all** n² pairs. Pool pairs are checked
   directly. Outside the pool S_ij ≤ t_i, so only columns with v_j < t_i − u_i − tol can violate —
   with columns sorted by v a prefix per row, whose exact cosines are computed block by block. If
   any pair violates, it and the pairs near tightness join G and the next round re-solves (first
   trying the old matching, then a region around the violations, then the whole graph).

Why it is exact: with u, v dual-feasible for the dense problem and tight on π, any bijection σ has
Σ S_iσ(i) ≤ Σ_i (u_i + v_σ(i) + tol) = Σ S_iπ(i) + n·tol, so a certified π is optimal for the dense
problem up to n·tol (tol = 1e-6 in cosine units; a float32 cosine at D = 768 carries ~1e-7). Unless
two bijections' totals differ by less than that (ties: duplicated latents), it is scipy's
permutation. `certify` runs step 4 on any given bijection; `check_certificate` audits one densely.

Cost: one n²·D pass plus Σ_i prefix_i·D for the checks, O(n·R_bound) memory beyond one block of
cosines; no n × n array is allocated. The sparse solve is single-threaded and dominates at n ≥ 16K
on pairs with many unrelated latents (their near-equal cosines make LAPJVsp work hardest).
Square problems only (the papers match SAEs of one size); `matching` uses dense scipy otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


class AssignmentError(ValueError):
    pass


@dataclass
class Certificate:
    """Evidence that a bijection is a maximum-weight bijection of the dense cosine matrix."""

    rounds: int  # candidate graphs solved or duals drawn (1 = the first was enough)
    max_violation: float  # max over all n² pairs of S_ij − u_i − v_j (inf: an improving cycle was found)
    tol: float
    n_edges: int  # edges of the final candidate graph
    pairs_computed: int  # pairs outside the top lists whose cosine was computed to rule them out
    dual_sweeps: int  # Bellman–Ford sweeps for the last duals
    solves: tuple[str, ...] = ()  # per round: "full", "local:<rows>" or "kept" (old matching still optimal)

    @property
    def certified(self) -> bool:
        return self.max_violation <= self.tol


@dataclass
class Assignment:
    partner: np.ndarray  # [n] column matched to each row
    matched: np.ndarray  # [n] S_i,partner(i)
    row_max: np.ndarray  # [n] max_j S_ij (exact)
    col_max: np.ndarray  # [n] max_i S_ij (exact)
    u: np.ndarray  # [n] row dual prices
    v: np.ndarray  # [n] column dual prices
    certificate: Certificate

    @property
    def total(self) -> float:
        return float(self.matched.sum())


# ----------------------------------------------------------------- pass over S


@dataclass
class _Candidates:
    row_idx: np.ndarray  # [n, R] int64
    row_val: np.ndarray  # [n, R] float32, descending
    col_idx: np.ndarray  # [R, n] rows of each column's top-R
    col_val: np.ndarray  # [R, n] float32, descending


def _block_rows(n: int, block_bytes: int) -> int:
    return max(1, min(n, block_bytes // (4 * n)))


def top_candidates(A: torch.Tensor, B: torch.Tensor, R: int, block_bytes: int = 128 << 20,
                   progress: bool = False) -> _Candidates:
    """Each row's and each column's top-R entries of S = A @ Bᵀ, computed in row blocks of ≤ block_bytes.

    Rows: `topk` per block. Columns: a `topk` down the first block sets each column's running R-th
    value τ_j; later blocks only pass on the entries above τ_j (one comparison per entry, far cheaper
    than a column `topk`), which are merged into the per-column lists whenever enough have gathered.
    """
    from tqdm.std import tqdm

    n, m = A.shape[0], B.shape[0]
    bs = max(_block_rows(m, block_bytes), min(R, n))
    row_idx = np.empty((n, R), dtype=np.int64)
    row_val = np.empty((n, R), dtype=np.float32)
    Bt = B.t().contiguous()
    col_val = col_idx = thr = None
    buf_r, buf_c, buf_v, n_buf = [], [], [], 0

    def merge():
        nonlocal col_val, col_idx, thr, buf_r, buf_c, buf_v, n_buf
        c = torch.cat([torch.arange(m).repeat(R)] + buf_c)
        r = torch.cat([col_idx.reshape(-1)] + buf_r)
        v = torch.cat([col_val.reshape(-1)] + buf_v)
        o = torch.argsort(v, descending=True, stable=True)
        o = o[torch.argsort(c[o], stable=True)]  # by column, then by value descending
        rank = torch.arange(o.numel()) - torch.repeat_interleave(
            torch.cumsum(torch.bincount(c, minlength=m), 0) - torch.bincount(c, minlength=m),
            torch.bincount(c, minlength=m))
        keep = o[rank < R]  # R per column: the old list already had R
        col_val = v[keep].reshape(m, R).t().contiguous()
        col_idx = r[keep].reshape(m, R).t().contiguous()
        thr = col_val[-1].clone()
        buf_r, buf_c, buf_v, n_buf = [], [], [], 0

    for s in tqdm(range(0, n, bs), desc="cosine blocks", disable=not progress, unit="block"):
        S = A[s:s + bs] @ Bt  # [b, m]
        top = S.topk(R, dim=1)
        row_idx[s:s + bs], row_val[s:s + bs] = top.indices.numpy(), top.values.numpy()
        if col_val is None:
            ctop = S.topk(R, dim=0)
            col_val, col_idx, thr = ctop.values, ctop.indices + s, ctop.values[-1].clone()
            continue
        ii, jj = torch.nonzero(S > thr, as_tuple=True)
        buf_r.append(ii + s)
        buf_c.append(jj)
        buf_v.append(S[ii, jj])
        n_buf += ii.numel()
        if n_buf > R * m // 4:
            merge()
        del S
    if n_buf:
        merge()
    return _Candidates(row_idx, row_val, col_idx.numpy(), col_val.numpy())


# ----------------------------------------------------------------- solve and duals


def _solve(n: int, keys: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """partner [n] of a maximum-weight perfect matching on the edges keys = i·n + j with weights vals."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    i, j = np.divmod(keys, n)
    G = csr_matrix((vals.astype(np.float64) + 3.0, (i, j)), shape=(n, n))  # weights must be non-zero
    rows, cols = min_weight_full_bipartite_matching(G, maximize=True)
    partner = np.empty(n, dtype=np.int64)
    partner[rows] = cols
    return partner


def _duals(n: int, keys: np.ndarray, vals: np.ndarray, partner: np.ndarray, max_iter: int | None = None):
    """(u, v, sweeps): the smallest u ≥ 0 with u_i ≥ u_{π⁻¹(j)} + S_ij − S_{π⁻¹(j) j} on every edge; v tight on π."""
    i, j = np.divmod(keys, n)
    owner = np.empty(n, dtype=np.int64)
    owner[partner] = np.arange(n)
    s_match = np.empty(n, dtype=np.float64)  # S at the matched pair of each column
    on = partner[i] == j
    s_match[j[on]] = vals[on]
    off = ~on
    src, dst = owner[j[off]], i[off]
    w = torch.from_numpy(vals[off].astype(np.float64) - s_match[j[off]])
    src_t, dst_t = torch.from_numpy(src), torch.from_numpy(dst)
    u = torch.zeros(n, dtype=torch.float64)
    sweeps = 0
    for sweeps in range(1, (max_iter or n + 1) + 1):
        new = u.scatter_reduce(0, dst_t, u[src_t] + w, reduce="amax", include_self=True)
        if float((new - u).max()) <= 1e-12:  # (float rounding can lift a zero-gain cycle by ~1e-17 a sweep)
            break
        u = new
    else:
        raise AssignmentError("dual prices did not converge: the matching is not optimal on its candidate graph")
    u = u.numpy()
    v = s_match - u[owner]
    return u, v, sweeps


def _balanced_duals(n: int, keys: np.ndarray, vals: np.ndarray, partner: np.ndarray, max_iter: int | None = None):
    """Mean of the row-minimal and the column-minimal dual solutions (both feasible and tight, so is their mean).

    The row-minimal solution puts u ≈ 0 and v ≈ the matched cosines; bounds on unseen pairs need u_i + v_j
    large for every pair, which a balanced split serves better than either extreme.
    """
    u1, v1, s1 = _duals(n, keys, vals, partner, max_iter)
    i, j = np.divmod(keys, n)
    order = np.argsort(j * n + i)
    back = np.empty(n, dtype=np.int64)
    back[partner] = np.arange(n)
    v2, u2, s2 = _duals(n, (j * n + i)[order], vals[order], back, max_iter)
    return (u1 + u2) / 2, (v1 + v2) / 2, max(s1, s2)


# ----------------------------------------------------------------- verification


def _prefix_violations(A: torch.Tensor, B: torch.Tensor, t: np.ndarray, u: np.ndarray, v: np.ndarray, tol: float,
                       block_bytes: int, per_row: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Pairs outside the candidate pool that may violate u_i + v_j ≥ S_ij, checked exactly.

    For j outside row i's pool S_ij ≤ t_i, so only columns with v_j < t_i − u_i − tol can violate:
    with columns sorted by v that is a prefix of length ℓ_i. Rows are taken in order of ℓ and each
    block of rows is multiplied by its longest prefix (work ≈ Σ ℓ_i · D). Returns (keys, exact
    cosines) of up to `per_row` most violated pairs per row, and the number of pairs computed.
    """
    n = A.shape[0]
    order = np.argsort(v, kind="stable")
    ell = np.searchsorted(v[order], t - u - tol, side="left")  # v_j < t_i − u_i − tol
    rows = np.flatnonzero(ell > 0)
    rows = rows[np.argsort(-ell[rows], kind="stable")]
    keys, vals, computed = [], [], 0
    vt = torch.from_numpy(v[order]).float()
    start = 0
    while start < rows.size:
        L = int(ell[rows[start]])
        bs = _block_rows(L, block_bytes)
        r = rows[start:start + bs]
        start += bs
        S = A[torch.from_numpy(r)] @ B[torch.from_numpy(order[:L])].t()  # [b, L]
        # float32 screen with 1e-5 of slack, then the exact reduced cost in float64 on the survivors
        red = S - torch.from_numpy(u[r]).float()[:, None] - vt[None, :L]
        ok = (red > tol - 1e-5) & (torch.arange(L)[None, :] < torch.from_numpy(ell[r])[:, None])
        computed += int(ell[r].sum())
        ii, jj = torch.nonzero(ok, as_tuple=True)
        ii, jj = ii.numpy(), jj.numpy()
        sv = S[ii, jj].double().numpy()
        exact = sv - u[r[ii]] - v[order[jj]] > tol
        ii, jj, sv = ii[exact], jj[exact], sv[exact]
        if ii.size and per_row:  # the `per_row` largest reduced costs of each row
            rc = sv - u[r[ii]] - v[order[jj]]
            o = np.lexsort((-rc, ii))
            ii, jj, sv = ii[o], jj[o], sv[o]
            first = np.searchsorted(ii, ii, side="left")
            keep = np.arange(ii.size) - first < per_row
            ii, jj, sv = ii[keep], jj[keep], sv[keep]
        keys.append(r[ii] * n + order[jj])
        vals.append(sv)
    if not keys:
        return np.empty(0, np.int64), np.empty(0), computed
    return np.concatenate(keys), np.concatenate(vals), computed


def _greedy(row_idx: np.ndarray, row_val: np.ndarray) -> np.ndarray:
    """A bijection built greedily from each row's candidate list (rows propose in order, columns keep the
    best proposal; rounds until no proposal is left), rows left over take the free columns in order.

    Only a fallback that guarantees a perfect matching in the first candidate graph; a random one
    (say the diagonal) leaves rows whose listed columns are all taken matched at cosine ≈ 0, and the
    first round's duals then miss by a lot.
    """
    n, R = row_idx.shape
    partner = np.full(n, -1, dtype=np.int64)
    owner = np.full(n, -1, dtype=np.int64)
    nxt = np.zeros(n, dtype=np.int64)  # next list position each row proposes to
    while True:
        free = np.flatnonzero((partner < 0) & (nxt < R))
        if free.size == 0:
            break
        cols, vals = row_idx[free, nxt[free]], row_val[free, nxt[free]]
        nxt[free] += 1
        open_ = owner[cols] < 0
        free, cols, vals = free[open_], cols[open_], vals[open_]
        best = np.full(n, -np.inf)
        np.maximum.at(best, cols, vals)
        win = vals == best[cols]
        free, cols = free[win], cols[win]
        cols, first = np.unique(cols, return_index=True)  # ties: one winner per column
        partner[free[first]], owner[cols] = cols, free[first]
    left = np.flatnonzero(partner < 0)
    partner[left] = np.flatnonzero(owner < 0)[: left.size]
    return partner


def _local_resolve(n: int, keys: np.ndarray, vals: np.ndarray, partner: np.ndarray, u: np.ndarray, v: np.ndarray,
                   seeds: np.ndarray, hops: int, margin: float) -> tuple[np.ndarray, int]:
    """Re-solve only the rows around `seeds` (rows with a violated pair and the owners of its column).

    The region grows `hops` times along the graph's edges within `margin` of tightness (row → its
    near-tight columns → their owners, and rows near-tight to the region's columns); the region's rows
    and their current columns form a sub-problem that still has a perfect matching (the current one),
    solved exactly; the rest keeps its partners. Not exact by itself: the certificate that follows
    decides, and a full solve runs if the duals show the result is not optimal on the whole graph.
    """
    i, j = np.divmod(keys, n)
    near = vals - u[i] - v[j] > -margin
    owner = np.empty(n, dtype=np.int64)
    owner[partner] = np.arange(n)
    X = np.zeros(n, dtype=bool)
    X[seeds] = True
    for _ in range(hops):
        X[owner[j[X[i] & near]]] = True
        colX = np.zeros(n, dtype=bool)
        colX[partner[X]] = True
        X[i[near & colX[j]]] = True
    rows = np.flatnonzero(X)
    colX = np.zeros(n, dtype=bool)
    colX[partner[rows]] = True
    inside = X[i] & colX[j]
    rmap = np.full(n, -1, dtype=np.int64)
    rmap[rows] = np.arange(rows.size)
    cols = np.sort(partner[rows])
    cmap = np.full(n, -1, dtype=np.int64)
    cmap[cols] = np.arange(cols.size)
    m = rows.size
    sub = _solve(m, np.sort(rmap[i[inside]] * m + cmap[j[inside]]),
                 vals[inside][np.argsort(rmap[i[inside]] * m + cmap[j[inside]])])
    out = partner.copy()
    out[rows] = cols[sub]
    return out, m


def _merge(keys, vals, new_keys, new_vals):
    k, pos = np.unique(np.concatenate([keys, new_keys]), return_index=True)
    return k, np.concatenate([vals, new_vals])[pos]


def sparse_assignment(A: torch.Tensor, B: torch.Tensor, R: int = 8, R_bound: int = 32, tol: float = 1e-6,
                      delta: float = 0.05, margin: float = 0.02, per_row: int = 8, hops: int = 4,
                      region_margins: tuple[float, ...] = (0.002, 0.01, 0.05), local_frac: float = 0.5,
                      max_rounds: int = 50, block_bytes: int = 128 << 20, progress: bool = False) -> Assignment:
    """Exact maximum-weight bijection of S = A @ Bᵀ (A, B: [n, D] unit rows) with its certificate (module doc).

    Pool: every pair whose exact cosine is held — each row's and column's top `R_bound`, the greedy
    fallback, and pairs computed while verifying. First graph: each row's and column's top `R`, the
    fallback, and the pool pairs within `delta` of their row's or column's maximum (rows of near-equal
    cosines need more candidates than rows with one clear partner). After each round, pool and
    computed pairs within `margin` of tightness join the graph (at most `per_row` computed pairs a
    row), so it only grows and the rounds end. A later round first keeps the old matching if it is
    still optimal on the larger graph, then re-solves only the rows around the violated pairs
    (`hops` steps along edges within each of `region_margins` of tightness, while the violations touch
    at most `local_frac` of the rows), and solves the whole graph only if neither is optimal on it.
    """
    from tqdm.std import tqdm

    A = A.detach().float().contiguous()
    B = B.detach().float().contiguous()
    if A.ndim != 2 or A.shape != B.shape:
        raise AssignmentError(f"sparse assignment needs two [n, D] sets of one shape; got {tuple(A.shape)} "
                              f"and {tuple(B.shape)}")
    n = A.shape[0]
    Rb = max(1, min(R_bound, n))
    R = max(1, min(R, Rb))
    cand = top_candidates(A, B, Rb, block_bytes, progress)
    row_max, col_max = cand.row_val[:, 0].astype(np.float64), cand.col_val[0].astype(np.float64)
    t = cand.row_val[:, -1].astype(np.float64)  # S_ij ≤ t_i for every j outside row i's top R_bound
    ar = np.arange(n, dtype=np.int64)
    fall = _greedy(cand.row_idx, cand.row_val)
    fall_v = (A * B[torch.from_numpy(fall)]).sum(1).double().numpy()
    pool_k = np.concatenate([np.repeat(ar, Rb) * n + cand.row_idx.reshape(-1),
                             cand.col_idx.reshape(-1) * n + np.tile(ar, Rb), ar * n + fall])
    pool_v = np.concatenate([cand.row_val.reshape(-1), cand.col_val.reshape(-1), fall_v]).astype(np.float64)
    pool_k, first = np.unique(pool_k, return_index=True)  # keys i·n + j, sorted
    pool_v = pool_v[first]
    pi, pj = np.divmod(pool_k, n)
    flat = (pool_v >= row_max[pi] - delta) | (pool_v >= col_max[pj] - delta)
    keys = np.unique(np.concatenate([np.repeat(ar, R) * n + cand.row_idx[:, :R].reshape(-1),
                                     cand.col_idx[:R].reshape(-1) * n + np.tile(ar, R), ar * n + fall,
                                     pool_k[flat]]))
    computed, partner, seeds, sweeps, solves = 0, None, None, 0, []
    for rounds in range(1, max_rounds + 1):
        vals = pool_v[np.searchsorted(pool_k, keys)]
        how = "full"
        if partner is not None:
            try:  # the old matching may still be optimal on the larger graph
                u, v, sweeps = _balanced_duals(n, keys, vals, partner, max_iter=2 * sweeps + 50)
                how = "kept"
            except AssignmentError:
                if seeds.size <= n * local_frac:
                    for rm in region_margins:  # widen the region until its answer is optimal on the whole graph
                        local, m = _local_resolve(n, keys, vals, partner, u, v, seeds, hops, rm)
                        try:
                            u, v, sweeps = _balanced_duals(n, keys, vals, local, max_iter=2 * sweeps + 50)
                        except AssignmentError:
                            continue
                        partner, how = local, f"local:{m}"
                        break
        if how == "full":
            partner = _solve(n, keys, vals)
            u, v, sweeps = _balanced_duals(n, keys, vals, partner)
        solves.append(how)
        red_pool = pool_v - u[pool_k // n] - v[pool_k % n]
        new_k, new_v, c = _prefix_violations(A, B, t, u, v, -margin, block_bytes, per_row)
        computed += c
        red_new = new_v - u[new_k // n] - v[new_k % n]
        max_violation = float(max(np.max(red_pool), np.max(red_new, initial=-np.inf)))
        if progress:
            tqdm.write(f"round {rounds} ({how}): {keys.size:,} edges, max violation {max_violation:.2g}, "
                       f"{c:,} pairs outside the lists computed")
        if max_violation <= tol:
            cert = Certificate(rounds, max_violation, tol, int(keys.size), computed, sweeps, tuple(solves))
            matched = pool_v[np.searchsorted(pool_k, ar * n + partner)]
            return Assignment(partner, matched, row_max, col_max, u, v, cert)
        viol = np.concatenate([pool_k[red_pool > tol], new_k[red_new > tol]])
        owner = np.empty(n, dtype=np.int64)
        owner[partner] = ar
        seeds = np.unique(np.concatenate([viol // n, owner[viol % n]]))
        keys = np.union1d(keys, np.concatenate([pool_k[red_pool > -margin], new_k[red_new > -margin]]))
        pool_k, pool_v = _merge(pool_k, pool_v, new_k, new_v)
    raise AssignmentError(f"no certificate after {max_rounds} rounds (last max violation {max_violation:.3g}); "
                          f"raise R or max_rounds")


def certify(A: torch.Tensor, B: torch.Tensor, partner: np.ndarray, R_bound: int = 32, tol: float = 1e-6,
            block_bytes: int = 128 << 20, max_sweeps: int = 10_000, max_rounds: int = 20) -> Certificate:
    """Check any bijection `partner` for optimality on S = A @ Bᵀ without the dense matrix.

    The same test `sparse_assignment` ends with: dual prices from the candidate pool (each row's and
    column's top `R_bound` pairs and the matched pairs); if the longest-path sweeps do not settle, the
    pool holds an improving cycle and the matching is not optimal (`max_violation` = inf); otherwise
    every pair is checked against its reduced cost (pool pairs directly, the rest through the bound
    t_i and the exact cosines of the pairs the bound cannot rule out). Duals are not unique, so a pair
    outside the pool that the first duals violate joins the pool and the duals are drawn again; the
    matching is optimal exactly when some round's duals hold for every pair.
    """
    A, B = A.detach().float().contiguous(), B.detach().float().contiguous()
    n = A.shape[0]
    partner = np.asarray(partner, dtype=np.int64)
    if A.shape != B.shape or partner.shape != (n,) or not np.array_equal(np.sort(partner), np.arange(n)):
        raise AssignmentError("certify needs two [n, D] sets of one shape and a permutation of range(n)")
    Rb = max(1, min(R_bound, n))
    cand = top_candidates(A, B, Rb, block_bytes)
    ar = np.arange(n, dtype=np.int64)
    matched = (A * B[torch.from_numpy(partner)]).sum(1).double().numpy()
    pool_k = np.concatenate([np.repeat(ar, Rb) * n + cand.row_idx.reshape(-1),
                             cand.col_idx.reshape(-1) * n + np.tile(ar, Rb), ar * n + partner])
    pool_v = np.concatenate([cand.row_val.reshape(-1), cand.col_val.reshape(-1), matched]).astype(np.float64)
    pool_k, first = np.unique(pool_k, return_index=True)
    pool_v = pool_v[first]
    t = cand.row_val[:, -1].astype(np.float64)
    computed = 0
    for rounds in range(1, max_rounds + 1):
        try:
            u, v, sweeps = _balanced_duals(n, pool_k, pool_v, partner, max_iter=min(max_sweeps, n + 1))
        except AssignmentError:  # an improving cycle among the known pairs
            return Certificate(rounds, math.inf, tol, int(pool_k.size), computed, min(max_sweeps, n + 1))
        red = pool_v - u[pool_k // n] - v[pool_k % n]
        k, val, c = _prefix_violations(A, B, t, u, v, tol, block_bytes, 8)
        computed += c
        worst = max(float(red.max()), float(np.max(val - u[k // n] - v[k % n], initial=-np.inf)))
        if k.size == 0:  # these duals hold for every pair: certified (or a pool pair shows it is not)
            return Certificate(rounds, worst, tol, int(pool_k.size), computed, sweeps)
        pool_k, pool_v = _merge(pool_k, pool_v, k, val)  # other duals may hold: retry with these pairs known
    return Certificate(max_rounds, worst, tol, int(pool_k.size), computed, sweeps)


def check_certificate(A: torch.Tensor, B: torch.Tensor, partner: np.ndarray, u: np.ndarray, v: np.ndarray,
                      block_bytes: int = 128 << 20) -> float:
    """Max over all pairs of S_ij − u_i − v_j and over matched pairs of |S − u − v|, computed densely in blocks.

    A brute-force audit of a certificate (O(n²·D)); ≤ tol means (partner, u, v) proves optimality.
    """
    A, B = A.detach().float(), B.detach().float()
    n = A.shape[0]
    if sorted(partner.tolist()) != list(range(n)):
        raise AssignmentError("partner is not a permutation")
    bs = _block_rows(n, block_bytes)
    worst = -math.inf
    vt = torch.from_numpy(v)
    for s in range(0, n, bs):
        S = (A[s:s + bs] @ B.t()).double()
        red = S - torch.from_numpy(u[s:s + bs])[:, None] - vt[None, :]
        worst = max(worst, float(red.max()))
        tight = red.gather(1, torch.from_numpy(partner[s:s + bs])[:, None]).abs().max()
        worst = max(worst, float(tight))
    return worst


def structured_pair(n: int, d: int = 768, shared: float = 0.4, mixtures: float = 0.3, noise: float = 0.5,
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two [n, d] sets of unit rows that look like two SAE seeds' decoders, with B's rows shuffled.

    A fraction `shared` of A's rows has a noisy copy in B (cosine ≈ 1/√(1+noise²)); a fraction
    `mixtures` of each set's rows are sums of two or three shared directions (cosine ~0.5–0.7 to
    several rows of the other set, so a latent's nearest neighbour is often taken by a better
    match — what defeats greedy or plain top-1 matching); the rest are random directions.
    """
    g = torch.Generator().manual_seed(seed)

    def unit(x):
        return x / x.norm(dim=1, keepdim=True)

    n_sh, n_mix = int(n * shared), int(n * mixtures)
    base = unit(torch.randn(n_sh, d, generator=g))

    def side(copy_noise):
        own = base + copy_noise * unit(torch.randn(n_sh, d, generator=g))
        k = torch.randint(2, 4, (n_mix,), generator=g)
        picks = torch.randint(0, n_sh, (n_mix, 3), generator=g)
        w = torch.rand(n_mix, 3, generator=g) * (torch.arange(3)[None] < k[:, None])
        mix = (w[:, :, None] * base[picks]).sum(1) + 0.2 * unit(torch.randn(n_mix, d, generator=g))
        rest = torch.randn(n - n_sh - n_mix, d, generator=g)
        return unit(torch.cat([own, mix, rest]))

    A, B = side(0.0), side(noise)
    return A, B[torch.randperm(n, generator=g)]
