"""Derived row sets for residual covariance structures (AR(1), compound symmetry, varIdent).

With a residual covariance R = sigma^2 R0(phi), block diagonal by series, the cross-products the
engine needs are [Z X y]' R0^{-1} [Z X y]. For each structure they are a fixed linear combination
of the ordinary cross-products of a few *derived* row sets (a row, a row minus its predecessor in
the series, the sum of a series' rows), so they are built once. These kernels build the derived
rows; the cross-products then come from the same one-pass kernels as for the raw rows.
Raw arrays in, caller-owned ``*_out`` buffers out.
"""
import numpy as np
from numba import njit, prange


@njit(cache=True, nogil=True)
def combine_rows(rows, prev, coef_cur, coef_prev, A, rows_out):
    """rows_out[i] = coef_cur[i] * A[rows[i]] + coef_prev[i] * A[prev[i]].

    No second term where prev[i] < 0 (the first row of a series).

    Parameters
    ----------
    rows, prev : (m,) int64, row of A and its predecessor in the series (or -1)
    coef_cur, coef_prev : (m,) float64
    A : (n, k) float64
    rows_out : (m, k) float64
    """
    m = rows.shape[0]
    k = A.shape[1]
    for i in range(m):
        r = rows[i]
        c = coef_cur[i]
        p = prev[i]
        if p >= 0:
            d = coef_prev[i]
            for j in range(k):
                rows_out[i, j] = c * A[r, j] + d * A[p, j]
        else:
            for j in range(k):
                rows_out[i, j] = c * A[r, j]


@njit(cache=True, nogil=True)
def segment_sums(order, starts, A, sums_out):
    """sums_out[s] = sum of A[order[j]] for j in starts[s] .. starts[s + 1] - 1 (in that order).

    Parameters
    ----------
    order : (n_sel,) int64, rows of A grouped by segment
    starts : (m + 1,) int64, segment boundaries in `order`
    A : (n, k) float64
    sums_out : (m, k) float64
    """
    m = starts.shape[0] - 1
    k = A.shape[1]
    for s in range(m):
        for j in range(k):
            sums_out[s, j] = 0.0
        for t in range(starts[s], starts[s + 1]):
            r = order[t]
            for j in range(k):
                sums_out[s, j] += A[r, j]


@njit(cache=True, inline="always")
def _whitened_row(i, rows, prev, coef_cur, coef_prev, M, out):
    """out = coef_cur[i] * M[rows[i]] + coef_prev[i] * M[prev[i]] (second term only if prev >= 0)."""
    r = rows[i]
    c = coef_cur[i]
    p = prev[i]
    k = out.shape[0]
    if p >= 0:
        d = coef_prev[i]
        for j in range(k):
            out[j] = c * M[r, j] + d * M[p, j]
    else:
        for j in range(k):
            out[j] = c * M[r, j]


@njit(cache=True, inline="always")
def _whitened_unit(i, prev, coef_cur, coef_prev):
    return coef_cur[i] + (coef_prev[i] if prev[i] >= 0 else 0.0)


@njit(cache=True, inline="always")
def _whitened_chunk(rows, prev, coef_cur, coef_prev, codes, Z, unit_z, XY, with_gram, c, start, stop,
                    zz_out, zxy_out, gram_out):
    m = XY.shape[1]
    P = zz_out.shape[2]
    xy = np.empty(m)
    z = np.empty(P)
    for i in range(start, stop):
        g = codes[rows[i]]
        _whitened_row(i, rows, prev, coef_cur, coef_prev, XY, xy)
        if unit_z:
            z[0] = _whitened_unit(i, prev, coef_cur, coef_prev)
        else:
            _whitened_row(i, rows, prev, coef_cur, coef_prev, Z, z)
        for a in range(P):
            za = z[a]
            for b in range(P):
                zz_out[c, g, a, b] += za * z[b]
            for b in range(m):
                zxy_out[c, g, a, b] += za * xy[b]
        if with_gram:
            for a in range(m):
                xa = xy[a]
                for b in range(a + 1):
                    gram_out[c, a, b] += xa * xy[b]
    if with_gram:
        for a in range(m):
            for b in range(a):
                gram_out[c, b, a] = gram_out[c, a, b]


@njit(parallel=True, cache=True, nogil=True)
def whitened_crossprod(rows, prev, coef_cur, coef_prev, codes, Z, unit_z, XY, with_gram,
                       zz_out, zxy_out, gram_out):
    """`factor_crossprod` of whitened rows, built on the fly (one pass, nothing materialized).

    Whitened row i is coef_cur[i] * row rows[i] + coef_prev[i] * row prev[i] (prev[i] < 0: no
    second term) of [Z, X y]; its level is codes[rows[i]] (the caller guarantees that prev[i]
    has the same level).

    Parameters
    ----------
    rows, prev : (m,) int64
    coef_cur, coef_prev : (m,) float64
    codes : (n,) int32/int64, level of each raw row
    Z : (n, P) float64 (ignored when unit_z: the column of ones, whitened)
    unit_z : bool
    XY : (n, p + 1) float64, [X y]
    with_gram : bool, also accumulate the whitened [X y]'[X y]
    zz_out : (n_chunks, n_levels, P, P), zxy_out : (n_chunks, n_levels, P, p + 1),
    gram_out : (n_chunks, p + 1, p + 1), all zeroed by the caller; summed over chunks in order
    by the caller (results do not depend on the thread count)
    """
    n = rows.shape[0]
    n_chunks = zz_out.shape[0]
    chunk = (n + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        _whitened_chunk(rows, prev, coef_cur, coef_prev, codes, Z, unit_z, XY, with_gram, c,
                        c * chunk, min(n, (c + 1) * chunk), zz_out, zxy_out, gram_out)


@njit(cache=True, nogil=True)
def whitened_pair_crossprod(pair_ids, rows, prev, coef_cur, coef_prev, Z_row, unit_row, Z_col,
                            unit_col, block_out):
    """`pair_crossprod` of whitened rows (see `whitened_crossprod`).

    Parameters
    ----------
    pair_ids : (n,) int64, the (row level, column level) pair of each raw row
    rows, prev, coef_cur, coef_prev : (m,) as in `whitened_crossprod`
    Z_row, Z_col : (n, P_row), (n, P_col) float64 (ignored when the unit flag is set)
    block_out : (n_pairs, P_row, P_col) float64, zeroed by the caller
    """
    m = rows.shape[0]
    Pr = block_out.shape[1]
    Pc = block_out.shape[2]
    zr = np.empty(Pr)
    zc = np.empty(Pc)
    for i in range(m):
        k = pair_ids[rows[i]]
        if unit_row:
            zr[0] = _whitened_unit(i, prev, coef_cur, coef_prev)
        else:
            _whitened_row(i, rows, prev, coef_cur, coef_prev, Z_row, zr)
        if unit_col:
            zc[0] = _whitened_unit(i, prev, coef_cur, coef_prev)
        else:
            _whitened_row(i, rows, prev, coef_cur, coef_prev, Z_col, zc)
        for a in range(Pr):
            for b in range(Pc):
                block_out[k, a, b] += zr[a] * zc[b]


@njit(cache=True, nogil=True)
def ar1_whitening_coefficients(prev, gap, strata, delta, phi, coef_cur_out, coef_prev_out):
    """Whitening coefficients of AR(1) rows in series order; returns sum log(1 - r^2).

    Row i (with predecessor prev[i] = i - 1, or none when prev[i] < 0) whitens to
    (a_i / d_i - r a_{i-1} / d_{i-1}) / sqrt(1 - r^2), r = phi^gap[i], d = delta[strata].

    Parameters
    ----------
    prev : (n,) int64; gap : (n,) float64; strata : (n,) int64; delta : (n_strata,) float64
    phi : float; coef_cur_out, coef_prev_out : (n,) float64
    """
    n = prev.shape[0]
    total = 0.0
    for i in range(n):
        d = delta[strata[i]]
        if prev[i] >= 0:
            r = phi ** gap[i]
            one_m = 1.0 - r * r
            root = np.sqrt(one_m)
            total += np.log(one_m)
            coef_cur_out[i] = 1.0 / (d * root)
            coef_prev_out[i] = -r / (delta[strata[prev[i]]] * root)
        else:
            coef_cur_out[i] = 1.0 / d
            coef_prev_out[i] = 0.0
    return total
