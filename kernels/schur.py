"""Kernels for the blocked (Schur-complement) system of several grouping factors.

With the effects of one grouping factor (the one with most levels) numbered first, the lower
triangle of A = Lambda'Z'Z Lambda + I splits into

    A = [A11   .  ]     L = [L11   0 ]     A11, L11: block diagonal, one P x P block per level
        [A21  A22 ]         [L21  L22]     A21, L21: sparse (co-occurrence of levels)
                                            A22, L22: dense (the other factors, r x r)

with L11 = chol(A11) level by level (`schur_first_block`), L21 = A21 L11^{-T} (same pattern as
A21) and L22 = chol(A22 - L21 L21') by LAPACK, the dense complement being built by
`dense_lower_from_csc`, `sparse_syrk_lower` (sparse rows of L21) and `schur_trailing_rows`
(the nearly full rows of small factors, as dense column operations). `schur_solve_lower` /
`schur_solve_upper` run the triangular solves through L11 and L21, `schur_first_condvar` the
leading factor's blocks of A^{-1}, `schur_diag_blocks` the level blocks of the complement (for
its approximation), `schur_pattern_nnz` its structural density. The kernels work on the CSC
arrays of lower(A) whose pattern is fixed once (see bigmixed.system), and those of L21 alone.
"""
import numpy as np
from numba import njit, prange

from .dense import chol_lower_inplace


@njit(cache=True, nogil=True)
def schur_first_block(indptr, indices, data, diag_shift, P, n_levels, l21_indptr, L11_out, l21_out):
    """Factor the block-diagonal leading part of A; returns log det(L11 L11') (nan if not PD).

    Parameters
    ----------
    indptr, indices, data : CSC arrays of lower(M) (q x q), row indices sorted in each column,
        where A = M + diag_shift I (the systems store Lambda'Z'Z Lambda and shift by 1).
        The first q1 = n_levels * P columns belong to the leading factor: column c = l * P + a
        (level l, effect a) holds the P - a rows l * P + a, ..., l * P + P - 1 of its diagonal
        block, then its rows >= q1 (the same rows for every column of a level).
    P : int, effects per level of the leading factor
    n_levels : int, its number of levels
    l21_indptr : (q1 + 1,) int, CSC column pointers of L21 (the rows >= q1 of the first q1 columns)
    L11_out : (n_levels, P, P) float64, receives each level's lower Cholesky factor
    l21_out : (nnz(L21),) float64, receives the values of L21 = A21 L11^{-T} in the CSC order
        of `l21_indptr` (the order of the rows >= q1 in A's columns)
    """
    logdet = 0.0
    D = np.empty((P, P))
    for lv in range(n_levels):
        c0 = lv * P
        for j in range(P):
            base = indptr[c0 + j]
            for i in range(j, P):
                D[i, j] = data[base + i - j]
            D[j, j] += diag_shift
        ld = chol_lower_inplace(D, P)
        if not np.isfinite(ld):
            return np.nan
        logdet += ld
        for i in range(P):
            for j in range(P):
                L11_out[lv, i, j] = D[i, j]
        nrow = l21_indptr[c0 + 1] - l21_indptr[c0]
        # W L11' = A21 (rows of the level's A21 block): forward substitution over the P columns
        for a in range(P):
            src = indptr[c0 + a] + P - a
            dst = l21_indptr[c0 + a]
            daa = D[a, a]
            for t in range(nrow):
                s = data[src + t]
                for b in range(a):
                    s -= l21_out[l21_indptr[c0 + b] + t] * D[a, b]
                l21_out[dst + t] = s / daa
    return logdet


@njit(cache=True, nogil=True)
def dense_lower_from_csc(indptr, indices, data, diag_shift, col0, S_out):
    """S_out's lower triangle <- the trailing block A[col0:, col0:] of A = M + diag_shift I.

    Parameters
    ----------
    indptr, indices, data : CSC arrays of lower(M) (q x q); in columns >= col0 all rows are >= col0
    diag_shift : float, added to the diagonal
    col0 : int, first column of the trailing block
    S_out : (r, r) float64 with r = q - col0 (Fortran order is fastest); the lower triangle is
        overwritten (zeros where A has no entry), the strict upper triangle is left untouched
    """
    r = S_out.shape[0]
    for j in range(r):
        for i in range(j, r):
            S_out[i, j] = 0.0
        S_out[j, j] = diag_shift
    for j in range(r):
        for e in range(indptr[col0 + j], indptr[col0 + j + 1]):
            S_out[indices[e] - col0, j] += data[e]


@njit(cache=True, nogil=True)
def _row_index(indptr, indices, t_indptr, t_cols, t_pos, work):
    """Counting sort of a CSC pattern by row (columns ascending within a row); work[j + 1] gets
    the number of entries at or below row j in the columns where row j appears."""
    n = indptr.shape[0] - 1
    r = t_indptr.shape[0] - 1
    for j in range(r + 1):
        t_indptr[j] = 0
    for e in range(indptr[n]):
        t_indptr[indices[e] + 1] += 1
    for j in range(r):
        t_indptr[j + 1] += t_indptr[j]
    fill = t_indptr[:r].copy()
    work[0] = 0.0
    for j in range(r):
        work[j + 1] = 0.0
    for c in range(n):
        for e in range(indptr[c], indptr[c + 1]):
            j = indices[e]
            t_cols[fill[j]] = c
            t_pos[fill[j]] = e
            fill[j] += 1
            work[j + 1] += indptr[c + 1] - e


def syrk_plan(indptr, indices, n_rows, n_chunks=None, row_stop=None):
    """The row-wise index of a CSC matrix M (r x n) that `sparse_syrk_lower` walks, and the
    split of its rows [0, row_stop) (default: all) into `n_chunks` ranges of about equal work
    (default: `n_syrk_chunks` of the work). Computed once per pattern.

    Returns (t_indptr (r + 1,), t_cols (nnz,), t_pos (nnz,), bounds (n_chunks + 1,), row_stop),
    int64 arrays and an int: the entries of row j of M are t_pos[t_indptr[j]:t_indptr[j + 1]]
    (positions in the CSC arrays), in columns t_cols[...] ascending.
    """
    row_stop = n_rows if row_stop is None else int(row_stop)
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    nnz = int(indptr[-1])
    t_indptr = np.empty(n_rows + 1, dtype=np.int64)
    t_cols = np.empty(nnz, dtype=np.int64)
    t_pos = np.empty(nnz, dtype=np.int64)
    work = np.empty(n_rows + 1)
    _row_index(indptr, indices, t_indptr, t_cols, t_pos, work)
    work = np.cumsum(work[:row_stop + 1])  # (the work of rows >= row_stop is not counted)
    if n_chunks is None:
        n_chunks = n_syrk_chunks(work[-1])
    bounds = np.searchsorted(work, work[-1] * np.arange(n_chunks + 1) / n_chunks).astype(np.int64)
    bounds[0], bounds[-1] = 0, row_stop
    return t_indptr, t_cols, t_pos, np.minimum(np.maximum.accumulate(bounds), row_stop), row_stop


@njit(cache=True, nogil=True)
def schur_pattern_nnz(indptr, indices, t_indptr, t_cols, t_pos, b_indptr, b_indices, stop_at):
    """Structural nonzeros in the lower triangle (diagonal included) of B + M M', counted up to
    `stop_at` (the count returned is then at least stop_at).

    Parameters
    ----------
    indptr, indices : CSC pattern of M (r x n), rows sorted within each column
    t_indptr, t_cols, t_pos : its row-wise index, from `syrk_plan`
    b_indptr, b_indices : CSC pattern of lower(B) (r x r)
    stop_at : int, stop counting at this many
    """
    r = t_indptr.shape[0] - 1
    mark = np.full(r, -1, dtype=np.int64)
    total = 0
    for j in range(r):
        mark[j] = j
        total += 1
        for e in range(b_indptr[j], b_indptr[j + 1]):
            i = b_indices[e]
            if mark[i] != j:
                mark[i] = j
                total += 1
        for e in range(t_indptr[j], t_indptr[j + 1]):
            c = t_cols[e]
            for b in range(t_pos[e], indptr[c + 1]):
                i = indices[b]
                if mark[i] != j:
                    mark[i] = j
                    total += 1
        if total >= stop_at:
            break
    return total


def n_syrk_chunks(work):
    """Number of row ranges `sparse_syrk_lower` splits its work (multiply-adds) into: one below
    4 million (a few ms: on a loaded 2-core machine a second thread costs more than it saves),
    then one per million up to 16. Depends on the pattern only."""
    return int(min(16, max(1, work // 1_000_000))) if work >= 4_000_000 else 1


@njit(cache=True, inline="always")
def _syrk_rows(indptr, indices, data, t_indptr, t_cols, t_pos, lo, hi, row_stop, S_out):
    for j in range(lo, hi):
        for e in range(t_indptr[j], t_indptr[j + 1]):
            c = t_cols[e]
            p = t_pos[e]
            v = data[p]
            for b in range(p, indptr[c + 1]):
                i = indices[b]
                if i >= row_stop:
                    break
                S_out[i, j] -= data[b] * v


@njit(parallel=True, cache=True, nogil=True)
def _sparse_syrk_parallel(indptr, indices, data, t_indptr, t_cols, t_pos, bounds, row_stop, S_out):
    for k in prange(bounds.shape[0] - 1):
        _syrk_rows(indptr, indices, data, t_indptr, t_cols, t_pos, bounds[k], bounds[k + 1],
                   row_stop, S_out)


@njit(cache=True, nogil=True)
def _sparse_syrk_serial(indptr, indices, data, t_indptr, t_cols, t_pos, bounds, row_stop, S_out):
    _syrk_rows(indptr, indices, data, t_indptr, t_cols, t_pos, bounds[0], bounds[-1], row_stop,
               S_out)


def sparse_syrk_lower(indptr, indices, data, t_indptr, t_cols, t_pos, bounds, row_stop, S_out):
    """S_out[i, j] -= sum_c M[i, c] M[j, c] for row_stop > i >= j: subtract lower(M M'), rows
    and columns below row_stop, from a dense matrix.

    Column j of the result is built at once from the columns c of M that have an entry in row j
    (their entries at or below row j), so the writes stay in one column of S_out; each entry
    sums over c ascending whatever the number of threads.

    Parameters
    ----------
    indptr, indices, data : CSC arrays of M (r x n), row indices sorted within each column
    t_indptr, t_cols, t_pos, bounds, row_stop : from `syrk_plan(indptr, indices, r, n_chunks,
        row_stop)`; the row ranges [bounds[k], bounds[k + 1]) are handled in parallel (one
        range: no parallel region)
    S_out : (r, r) float64, Fortran order (columns contiguous); only the lower triangle is updated
    """
    kernel = _sparse_syrk_parallel if len(bounds) > 2 else _sparse_syrk_serial
    kernel(indptr, indices, data, t_indptr, t_cols, t_pos, bounds, row_stop, S_out)


@njit(cache=True, nogil=True)
def schur_solve_lower(L11, indptr, indices, data, B):
    """In place on B (q x m): B1 <- L11^{-1} B1, then B2 <- B2 - L21 B1.

    Parameters
    ----------
    L11 : (n_levels, P, P) float64, lower Cholesky factors of the leading block (q1 = n_levels P)
    indptr, indices, data : CSC arrays of L21 (r x q1), rows numbered from 0 within B2
    B : (q1 + r, m) float64, C order; B1 = B[:q1], B2 = B[q1:]
    """
    nl, P = L11.shape[0], L11.shape[1]
    q1 = nl * P
    m = B.shape[1]
    for lv in range(nl):
        c0 = lv * P
        for a in range(P):
            for k in range(m):
                s = B[c0 + a, k]
                for b in range(a):
                    s -= L11[lv, a, b] * B[c0 + b, k]
                B[c0 + a, k] = s / L11[lv, a, a]
    for c in range(q1):
        for e in range(indptr[c], indptr[c + 1]):
            i = q1 + indices[e]
            v = data[e]
            for k in range(m):
                B[i, k] -= v * B[c, k]


@njit(cache=True, nogil=True)
def schur_solve_upper(L11, indptr, indices, data, X):
    """In place on X (q x m) whose X2 = X[q1:] is already final: X1 <- L11^{-T} (X1 - L21' X2).

    Parameters as in `schur_solve_lower`.
    """
    nl, P = L11.shape[0], L11.shape[1]
    q1 = nl * P
    m = X.shape[1]
    for c in range(q1):
        for e in range(indptr[c], indptr[c + 1]):
            i = q1 + indices[e]
            v = data[e]
            for k in range(m):
                X[c, k] -= v * X[i, k]
    for lv in range(nl):
        c0 = lv * P
        for a in range(P - 1, -1, -1):
            for k in range(m):
                s = X[c0 + a, k]
                for b in range(a + 1, P):
                    s -= L11[lv, b, a] * X[c0 + b, k]
                X[c0 + a, k] = s / L11[lv, a, a]


@njit(cache=True, nogil=True)
def schur_first_condvar(L11, indptr, indices, data, Sinv, out):
    """Diagonal blocks of A^{-1} for the leading factor's levels.

    (A^{-1})_l = L11_l^{-T} (I + W_l' S^{-1} W_l) L11_l^{-1}, where W_l holds the P columns of
    L21 of level l and S = L22 L22' the dense Schur complement.

    Parameters
    ----------
    L11 : (n_levels, P, P) float64, lower Cholesky factors of the leading block
    indptr, indices, data : CSC arrays of L21 (r x n_levels P), the columns of a level sharing rows
    Sinv : (r, r) float64, S^{-1}; only its lower triangle is read
    out : (n_levels, P, P) float64, receives the blocks
    """
    nl, P = L11.shape[0], L11.shape[1]
    G = np.empty((P, P))
    Li = np.empty((P, P))
    for lv in range(nl):
        c0 = lv * P
        nrow = indptr[c0 + 1] - indptr[c0]
        for a in range(P):
            pa = indptr[c0 + a]
            for b in range(a + 1):
                pb = indptr[c0 + b]
                s = 0.0
                for t in range(nrow):
                    i = indices[pa + t]
                    wa = data[pa + t]
                    acc = 0.0
                    for u in range(nrow):
                        j = indices[pb + u]
                        acc += (Sinv[i, j] if i >= j else Sinv[j, i]) * data[pb + u]
                    s += wa * acc
                G[a, b] = s
                G[b, a] = s
            G[a, a] += 1.0
        # Li = L11_l^{-1} (lower), then out = Li' G Li
        for j in range(P):
            for i in range(P):
                Li[i, j] = 0.0
            Li[j, j] = 1.0 / L11[lv, j, j]
            for i in range(j + 1, P):
                s = 0.0
                for k in range(j, i):
                    s -= L11[lv, i, k] * Li[k, j]
                Li[i, j] = s / L11[lv, i, i]
        for a in range(P):
            for b in range(P):
                s = 0.0
                for i in range(a, P):
                    for j in range(b, P):
                        s += Li[i, a] * G[i, j] * Li[j, b]
                out[lv, a, b] = s


@njit(cache=True, nogil=True)
def schur_first_inverse_trace(L11, indptr, indices, data, Sinv):
    """Trace of the leading factor's block of A^{-1} when it has one effect per level (P = 1):
    sum over levels l of (1 + w_l' S^{-1} w_l) / L11_l^2, w_l the column of L21 of level l
    (`schur_first_condvar`'s blocks, summed without forming them).

    Parameters
    ----------
    L11 : (n_levels, 1, 1) float64, the leading block's Cholesky factors (square roots)
    indptr, indices, data : CSC arrays of L21 (r x n_levels), row indices sorted in each column
    Sinv : (r, r) float64, S^{-1}; only its lower triangle is read (entries [i_t, i_u], i_t >= i_u)
    """
    total = 0.0
    for c in range(L11.shape[0]):
        q = 0.0
        for u in range(indptr[c], indptr[c + 1]):
            j = indices[u]
            v = data[u]
            acc = 0.5 * Sinv[j, j] * v  # the diagonal counted once in 2 * (lower part)
            for t in range(u + 1, indptr[c + 1]):
                acc += Sinv[indices[t], j] * data[t]
            q += v * acc
        d = L11[c, 0, 0]
        total += (1.0 + 2.0 * q) / (d * d)
    return total


@njit(cache=True, nogil=True)
def schur_diag_blocks(indptr, indices, data, diag_shift, col0, lo, hi, P, l21_indptr,
                      l21_indices, l21, out):
    """Diagonal P x P blocks of the Schur complement A22 - L21 L21' over rows [lo, hi).

    Parameters
    ----------
    indptr, indices, data : CSC arrays of lower(M) (q x q), A = M + diag_shift I; A22 starts at
        column col0 (rows and columns of the block are numbered from col0)
    lo, hi : int, the rows (of the block) of one grouping factor, (hi - lo) = n_levels P
    P : int, effects per level of that factor
    l21_indptr, l21_indices, l21 : CSC arrays of L21 (r x col0), rows sorted within columns
    out : (n_levels, P, P) float64, receives the blocks (both triangles)
    """
    nl = (hi - lo) // P
    for lv in range(nl):
        for a in range(P):
            for b in range(P):
                out[lv, a, b] = 0.0
            out[lv, a, a] = diag_shift
    for j in range(lo, hi):
        lv = (j - lo) // P
        b = (j - lo) % P
        for e in range(indptr[col0 + j], indptr[col0 + j + 1]):
            i = indices[e] - col0
            if i >= lo + (lv + 1) * P:
                break
            a = (i - lo) % P
            out[lv, a, b] += data[e]
            if a != b:
                out[lv, b, a] += data[e]
    for c in range(l21_indptr.shape[0] - 1):
        end = l21_indptr[c + 1]
        for e in range(l21_indptr[c], end):
            i = l21_indices[e]
            if i < lo:
                continue
            if i >= hi:
                break
            lv = (i - lo) // P
            a = (i - lo) % P
            v = l21[e]
            out[lv, a, a] -= v * v
            for e2 in range(e + 1, end):
                i2 = l21_indices[e2]
                if i2 >= lo + (lv + 1) * P:
                    break
                b = (i2 - lo) % P
                w = v * l21[e2]
                out[lv, a, b] -= w
                out[lv, b, a] -= w


@njit(cache=True, nogil=True)
def schur_trailing_rows(indptr, indices, data, diag_shift, col0, s0, l21_indptr, l21_indices,
                        l21, work, out):
    """Rows [s0, r) of the Schur complement A22 - L21 L21' (lower triangle exact; the entries
    above the diagonal of the trailing square are by-products, not zeros).

    Parameters
    ----------
    indptr, indices, data, diag_shift, col0 : as in `schur_diag_blocks`
    s0 : int, first row kept (rows and columns of the block are numbered from col0)
    l21_indptr, l21_indices, l21 : CSC arrays of L21 (r x col0), rows sorted within columns
    work : (r - s0, col0) float64, Fortran order: receives the rows [s0, r) of L21, dense
    out : (r - s0, r) float64, Fortran order: entry (i, j) of the complement at [i - s0, j]
        for j <= i
    """
    s = out.shape[0]
    r = out.shape[1]
    n = l21_indptr.shape[0] - 1
    for j in range(r):
        for t in range(s):
            out[t, j] = 0.0
    for t in range(s):
        out[t, s0 + t] = diag_shift
    for j in range(r):
        for e in range(indptr[col0 + j], indptr[col0 + j + 1]):
            i = indices[e] - col0
            if i >= s0:
                out[i - s0, j] += data[e]
    for c in range(n):
        for t in range(s):
            work[t, c] = 0.0
        for e in range(l21_indptr[c + 1] - 1, l21_indptr[c] - 1, -1):
            i = l21_indices[e]
            if i < s0:
                break
            work[i - s0, c] = l21[e]
    # out[:, j] -= L21[j, c] * work[:, c]: contiguous columns, no indirection in the inner loop
    for c in range(n):
        for e in range(l21_indptr[c], l21_indptr[c + 1]):
            j = l21_indices[e]
            v = l21[e]
            for t in range(s):
                out[t, j] -= v * work[t, c]
