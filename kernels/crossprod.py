"""One pass over the rows: the cross-products of [Z X y] that the engine needs.

Every kernel takes raw arrays and writes into caller-owned buffers named ``*_out``.
Rows are split into a fixed number of contiguous chunks that depend only on the number
of rows (never on the thread count), each chunk accumulates into its own slice of the
output, and the caller sums the slices in order: results are bit-identical whatever the
number of threads.

Every sum is compensated: next to each output ``*_out`` the caller passes a zeroed ``*_lo``
buffer of the same shape that collects the rounding error of every addition (Knuth's
TwoSum), so ``out + lo`` is the exact sum of the rows' products up to O(n eps^2) (a
double-double). Rounded once, at the end, after the chunks (or the partitions of a Dask
DataFrame, see bigmixed.distributed) have been added in double-double, the cross-products do
not depend on how the rows were split or ordered: an in-memory fit and a fit from any
partitioning of the same rows get the same bits, and so the same optimizer path.
"""
import numpy as np
from numba import njit, prange

from .columns import column_value


def n_row_chunks(n_rows):
    """Number of row chunks for `factor_crossprod`: a function of the row count only.

    Each chunk holds its own copy of the per-level blocks, so more chunks cost memory; two
    match the two cores these machines have and keep results independent of the thread count.
    """
    return 1 if n_rows < 200_000 else 2


_SQUARE_GRAM = 8  # from this many columns of [X y] on, accumulate the full square of X'X


@njit(cache=True, inline="always")
def _two_sum_error(s, v, t):
    """The rounding error of t = fl(s + v) (Knuth's TwoSum): s + v == t + error exactly."""
    bv = t - s
    return (s - (t - bv)) + (v - bv)


@njit(cache=True, nogil=True)
def add_double_double(hi, lo, hi2, lo2):
    """(hi, lo) += (hi2, lo2) in double-double arithmetic, in place: 1-D arrays of one length
    (TwoSum on the high parts, the low parts and the rounding error added to lo)."""
    for i in range(hi.shape[0]):
        s = hi[i]
        v = hi2[i]
        t = s + v
        lo[i] = (lo[i] + lo2[i]) + _two_sum_error(s, v, t)
        hi[i] = t


@njit(parallel=True, cache=True, nogil=True)
def add_double_double_parallel(hi, lo, hi2, lo2):
    """`add_double_double` on the threads, element by element: the same numbers (each element's
    operations are independent of the others), for arrays of millions of elements (the per-chunk
    level blocks of 500k levels: memory-bound, 0.08 s per call on one thread)."""
    n = hi.shape[0]
    n_blocks = 64
    per = (n + n_blocks - 1) // n_blocks
    for b in prange(n_blocks):
        for i in range(b * per, min(n, (b + 1) * per)):
            s = hi[i]
            v = hi2[i]
            t = s + v
            lo[i] = (lo[i] + lo2[i]) + _two_sum_error(s, v, t)
            hi[i] = t


@njit(cache=True, nogil=True)
def dd_sum(x):
    """The sum of a 1-D array as a double-double (hi, lo): a TwoSum per term, into four
    interleaved accumulators (independent chains) added at the end."""
    hi = np.zeros(4)
    lo = np.zeros(4)
    n = x.shape[0]
    m = n - n % 4
    for i in range(0, m, 4):
        for k in range(4):
            s = hi[k]
            v = x[i + k]
            t = s + v
            lo[k] += _two_sum_error(s, v, t)
            hi[k] = t
    for i in range(m, n):
        s = hi[0]
        v = x[i]
        t = s + v
        lo[0] += _two_sum_error(s, v, t)
        hi[0] = t
    total, err = hi[0], lo[0]
    for k in range(1, 4):
        t = total + hi[k]
        err = (err + lo[k]) + _two_sum_error(total, hi[k], t)
        total = t
    return total, err


@njit(cache=True, inline="always")
def _crossprod_chunk(codes, Z, unit_z, X, x_addrs, x_rows, from_columns, y, with_gram, c, cz,
                     g_first, g_stop, start, stop, zz_out, zxy_out, gram_out, zz_lo, zxy_lo,
                     gram_lo):
    """Rows start..stop-1 whose level is in g_first..g_stop-1: their level blocks added into
    zz_out[cz] / zxy_out[cz], their [X y]'[X y] written to gram_out[c] (with_gram)."""
    p = x_addrs.shape[0] if from_columns else X.shape[1]
    mapped = x_rows.shape[0] > 0
    m = p + 1
    P = zz_out.shape[2]
    xy = np.empty(m)
    z = np.ones(P)
    # [X y]'[X y] is updated by every row: accumulated in this chunk's own buffers (the chunks'
    # slices of gram_out share cache lines) and copied out at the end
    g_hi = np.zeros((m, m))
    g_lo = np.zeros((m, m))
    square = m >= _SQUARE_GRAM
    for i in range(start, stop):
        g = codes[i]
        if g < g_first or g >= g_stop:
            continue
        if from_columns:
            r = x_rows[i] if mapped else i
            for a in range(p):
                xy[a] = column_value(x_addrs, a, r)
        else:
            for a in range(p):
                xy[a] = X[i, a]
        xy[p] = y[i]
        if not unit_z:
            for a in range(P):
                z[a] = Z[i, a]
        for a in range(P):
            za = z[a]
            if unit_z:  # Z_g'Z_g is a count: exact
                zz_out[cz, g, 0, 0] += 1.0
            else:
                for b in range(P):
                    v = za * z[b]
                    s = zz_out[cz, g, a, b]
                    t = s + v
                    zz_lo[cz, g, a, b] += _two_sum_error(s, v, t)
                    zz_out[cz, g, a, b] = t
            for b in range(m):
                v = za * xy[b]
                s = zxy_out[cz, g, a, b]
                t = s + v
                zxy_lo[cz, g, a, b] += _two_sum_error(s, v, t)
                zxy_out[cz, g, a, b] = t
        if with_gram and square:
            # the full square from 8 columns on: loops of fixed length vectorise, which pays
            # for the extra entries (x_a x_b and x_b x_a are the same product)
            for a in range(m):
                xa = xy[a]
                for b in range(m):
                    v = xa * xy[b]
                    s = g_hi[a, b]
                    t = s + v
                    g_lo[a, b] += _two_sum_error(s, v, t)
                    g_hi[a, b] = t
        elif with_gram:
            for a in range(m):
                xa = xy[a]
                for b in range(a + 1):
                    v = xa * xy[b]
                    s = g_hi[a, b]
                    t = s + v
                    g_lo[a, b] += _two_sum_error(s, v, t)
                    g_hi[a, b] = t
    if with_gram:
        for a in range(m):
            for b in range(a + 1):
                gram_out[c, a, b] = gram_out[c, b, a] = g_hi[a, b]
                gram_lo[c, a, b] = gram_lo[c, b, a] = g_lo[a, b]


@njit(parallel=True, cache=True, nogil=True)
def factor_crossprod(codes, Z, unit_z, X, y, with_gram, zz_out, zxy_out, gram_out, zz_lo, zxy_lo,
                     gram_lo):
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
    zz_lo, zxy_lo, gram_lo : zeroed, shaped like zz_out, zxy_out, gram_out: the accumulated
        rounding errors (the exact chunk sums are ``*_out + *_lo`` up to O(n eps^2))
    """
    n = codes.shape[0]
    n_chunks = zz_out.shape[0]
    chunk = (n + n_chunks - 1) // n_chunks
    no_addrs = np.zeros(0, dtype=np.int64)
    for c in prange(n_chunks):
        _crossprod_chunk(codes, Z, unit_z, X, no_addrs, no_addrs, False, y, with_gram, c, c, 0,
                         zz_out.shape[1], c * chunk, min(n, (c + 1) * chunk), zz_out, zxy_out,
                         gram_out, zz_lo, zxy_lo, gram_lo)


@njit(cache=True, nogil=True)
def factor_crossprod_serial(codes, Z, unit_z, X, y, with_gram, zz_out, zxy_out, gram_out, zz_lo,
                            zxy_lo, gram_lo):
    """`factor_crossprod` without a parallel region, for one chunk (small data)."""
    n = codes.shape[0]
    n_chunks = zz_out.shape[0]
    chunk = (n + n_chunks - 1) // n_chunks
    no_addrs = np.zeros(0, dtype=np.int64)
    for c in range(n_chunks):
        _crossprod_chunk(codes, Z, unit_z, X, no_addrs, no_addrs, False, y, with_gram, c, c, 0,
                         zz_out.shape[1], c * chunk, min(n, (c + 1) * chunk), zz_out, zxy_out,
                         gram_out, zz_lo, zxy_lo, gram_lo)


@njit(cache=True, nogil=True)
def factor_crossprod_columns_serial(codes, Z, unit_z, x_addrs, x_rows, y, with_gram, zz_out,
                                    zxy_out, gram_out, zz_lo, zxy_lo, gram_lo):
    """`factor_crossprod_serial` with X given by its columns' addresses (kernels/columns.py): the
    same products in the same order, so the same bits, without an (n, p) copy of the columns.
    (Several chunks take `factor_crossprod_by_level`, which reads X either way.)

    x_addrs : (p,) int64, the address of each C-contiguous float64 column (0: the intercept's
        column of ones); the caller keeps the columns alive during the call.
    x_rows : (n,) int64, the position in the columns of each row, or (0,) for rows 0..n-1.
    Other parameters as `factor_crossprod`.
    """
    n = codes.shape[0]
    n_chunks = zz_out.shape[0]
    chunk = (n + n_chunks - 1) // n_chunks
    no_x = np.zeros((0, 0))
    for c in range(n_chunks):
        _crossprod_chunk(codes, Z, unit_z, no_x, x_addrs, x_rows, True, y, with_gram, c, c, 0,
                         zz_out.shape[1], c * chunk, min(n, (c + 1) * chunk), zz_out, zxy_out,
                         gram_out, zz_lo, zxy_lo, gram_lo)


@njit(cache=True, nogil=True)
def _counting_sort(codes, n_levels, rows):
    """`rows` (int64 row indices) reordered stably by their level codes[rows[k]] (0..n_levels-1)."""
    start = np.zeros(n_levels + 1, dtype=np.int64)
    for k in range(rows.shape[0]):
        start[codes[rows[k]] + 1] += 1
    for g in range(n_levels):
        start[g + 1] += start[g]
    out = np.empty(rows.shape[0], dtype=np.int64)
    for k in range(rows.shape[0]):
        g = codes[rows[k]]
        out[start[g]] = rows[k]
        start[g] += 1
    return out


@njit(cache=True, nogil=True)
def pair_keys(codes_b, codes_a, n_levels_b, n_levels_a, ids_out):
    """The level pairs (b, a) that occur, by two counting sorts (O(n + levels), no comparison
    sort): what ``np.unique(codes_b * n_levels_a + codes_a, return_inverse=True)`` gives.

    codes_b, codes_a : (n,) int32/int64 level codes of two grouping factors
    ids_out : (n,) int64, written: each row's index into the returned keys
    Returns (n_pairs,) int64, the sorted keys level_b * n_levels_a + level_a of the pairs.
    """
    n = codes_b.shape[0]
    # stable counting sort by a, then by b: the rows in (b, a) order
    order = _counting_sort(codes_b, n_levels_b, _counting_sort(codes_a, n_levels_a,
                                                                np.arange(n)))
    keys = np.empty(n, dtype=np.int64)
    n_pairs = 0
    prev = -1
    for k in range(n):
        i = order[k]
        key = np.int64(codes_b[i]) * n_levels_a + np.int64(codes_a[i])
        if key != prev:
            keys[n_pairs] = key
            n_pairs += 1
            prev = key
        ids_out[i] = n_pairs - 1
    return keys[:n_pairs].copy()


@njit(cache=True, nogil=True)
def pair_crossprod(pair_ids, Z_row, unit_row, Z_col, unit_col, block_out, block_lo):
    """Co-occurrence blocks Z_row' Z_col between two grouping factors.

    Parameters
    ----------
    pair_ids : (n,) int64, index of the (row level, column level) pair of each row
    Z_row, Z_col : (n, P_row), (n, P_col) float64 (ignored when the matching unit flag is set)
    block_out : (n_pairs, P_row, P_col) float64, zeroed by the caller
    block_lo : like block_out, zeroed: the accumulated rounding errors (see the module docstring)
    """
    n = pair_ids.shape[0]
    if unit_row and unit_col:  # co-occurrence counts: exact, no rounding error to collect
        for i in range(n):
            block_out[pair_ids[i], 0, 0] += 1.0
        return
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
                v = zr[a] * zc[b]
                s = block_out[k, a, b]
                t = s + v
                block_lo[k, a, b] += _two_sum_error(s, v, t)
                block_out[k, a, b] = t


@njit(parallel=True, cache=True, nogil=True)
def factor_crossprod_by_level(codes, Z, unit_z, X, x_addrs, x_rows, from_columns, y, with_gram,
                              zz_out, zxy_out, gram_out, zz_lo, zxy_lo, gram_lo):
    """`factor_crossprod` with the work split by levels instead of rows: part c of
    n_parts = gram_out.shape[0] reads every row's level and takes the rows of the levels
    c L / n_parts .. (c + 1) L / n_parts - 1, so each level's blocks have one accumulator (no
    per-chunk copies of the level blocks to allocate and add: 352 MB at 500k levels and 9
    columns). Every sum is compensated and rounded once by the caller, so the blocks and
    [X y]'[X y] are those of the row chunks, bit for bit.

    X / x_addrs, x_rows, from_columns : the fixed-effects matrix as an (n, p) array
        (from_columns False; x_addrs and x_rows empty) or as its columns' addresses and row
        positions (kernels/columns.py; X of shape (0, 0))
    zz_out, zz_lo : (1, n_levels, P, P); zxy_out, zxy_lo : (1, n_levels, P, p + 1)
    gram_out, gram_lo : (n_parts, p + 1, p + 1): part c's [X y]'[X y] (with_gram)
    Other parameters as `factor_crossprod`.
    """
    n = codes.shape[0]
    n_levels = zz_out.shape[1]
    n_parts = gram_out.shape[0]
    for c in prange(n_parts):
        g_first = (c * n_levels) // n_parts
        g_stop = ((c + 1) * n_levels) // n_parts
        _crossprod_chunk(codes, Z, unit_z, X, x_addrs, x_rows, from_columns, y, with_gram, c, 0,
                         g_first, g_stop, 0, n, zz_out, zxy_out, gram_out, zz_lo, zxy_lo, gram_lo)
