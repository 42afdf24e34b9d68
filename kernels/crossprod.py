"""One pass over the rows: the cross-products of [Z X y] that the engine needs.

Every kernel takes raw arrays and writes into caller-owned buffers named ``*_out``.
Rows are split into a fixed number of contiguous chunks that depend only on the number
of rows (never on the thread count), each chunk accumulates into its own slice of the
output, and the caller sums the slices in order: results are bit-identical whatever the
number of threads.
"""
import numpy as np
from numba import njit, prange


def n_row_chunks(n_rows):
    """Number of row chunks for `factor_crossprod`: a function of the row count only.

    Each chunk holds its own copy of the per-level blocks, so more chunks cost memory; two
    match the two cores these machines have and keep results independent of the thread count.
    """
    return 1 if n_rows < 200_000 else 2


@njit(cache=True, inline="always")
def _crossprod_chunk(codes, Z, unit_z, X, y, with_gram, c, start, stop, zz_out, zxy_out, gram_out):
    p = X.shape[1]
    m = p + 1
    P = zz_out.shape[2]
    xy = np.empty(m)
    z = np.ones(P)
    for i in range(start, stop):
        g = codes[i]
        for a in range(p):
            xy[a] = X[i, a]
        xy[p] = y[i]
        if not unit_z:
            for a in range(P):
                z[a] = Z[i, a]
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
def factor_crossprod(codes, Z, unit_z, X, y, with_gram, zz_out, zxy_out, gram_out):
    """Per-level blocks Z_g'Z_g and Z_g'[X y] of one grouping factor, and [X y]'[X y].

    Parameters
    ----------
    codes : (n,) int32/int64, level of each row in 0..n_levels-1
    Z : (n, P) float64, the factor's random-effects columns (ignored when unit_z)
    unit_z : bool, True when the only column is the intercept (Z is all ones; Z may be (0, 1))
    X : (n, p) float64, fixed-effects design (C or F order)
    y : (n,) float64, response
    with_gram : bool, also accumulate [X y]'[X y] into gram_out
    zz_out : (n_chunks, n_levels, P, P) float64, zeroed by the caller
    zxy_out : (n_chunks, n_levels, P, p + 1) float64, zeroed; column p holds Z_g'y
    gram_out : (n_chunks, p + 1, p + 1) float64, zeroed (full symmetric matrix)
    """
    n = codes.shape[0]
    n_chunks = zz_out.shape[0]
    chunk = (n + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        _crossprod_chunk(codes, Z, unit_z, X, y, with_gram, c, c * chunk, min(n, (c + 1) * chunk),
                         zz_out, zxy_out, gram_out)


@njit(cache=True, nogil=True)
def factor_crossprod_serial(codes, Z, unit_z, X, y, with_gram, zz_out, zxy_out, gram_out):
    """`factor_crossprod` without a parallel region, for one chunk (small data)."""
    n = codes.shape[0]
    n_chunks = zz_out.shape[0]
    chunk = (n + n_chunks - 1) // n_chunks
    for c in range(n_chunks):
        _crossprod_chunk(codes, Z, unit_z, X, y, with_gram, c, c * chunk, min(n, (c + 1) * chunk),
                         zz_out, zxy_out, gram_out)


@njit(cache=True, nogil=True)
def pair_crossprod(pair_ids, Z_row, unit_row, Z_col, unit_col, block_out):
    """Co-occurrence blocks Z_row' Z_col between two grouping factors.

    Parameters
    ----------
    pair_ids : (n,) int64, index of the (row level, column level) pair of each row
    Z_row, Z_col : (n, P_row), (n, P_col) float64 (ignored when the matching unit flag is set)
    block_out : (n_pairs, P_row, P_col) float64, zeroed by the caller
    """
    n = pair_ids.shape[0]
    Pr = block_out.shape[1]
    Pc = block_out.shape[2]
    zr = np.ones(Pr)
    zc = np.ones(Pc)
    for i in range(n):
        k = pair_ids[i]
        if not unit_row:
            for a in range(Pr):
                zr[a] = Z_row[i, a]
        if not unit_col:
            for b in range(Pc):
                zc[b] = Z_col[i, b]
        for a in range(Pr):
            for b in range(Pc):
                block_out[k, a, b] += zr[a] * zc[b]
