"""Derived row sets for residual covariance structures (AR(1), compound symmetry, varIdent).

With a residual covariance R = sigma^2 R0(phi), block diagonal by series, the cross-products the
engine needs are [Z X y]' R0^{-1} [Z X y]. For each structure they are a fixed linear combination
of the ordinary cross-products of a few *derived* row sets (a row, a row minus its predecessor in
the series, the sum of a series' rows), so they are built once. These kernels build the derived
rows; the cross-products then come from the same one-pass kernels as for the raw rows.
Raw arrays in, caller-owned ``*_out`` buffers out.
"""
from numba import njit


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
