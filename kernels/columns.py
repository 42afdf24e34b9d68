"""Fixed-effects columns read where they lie: a matrix given as the addresses of its columns.

A design whose fixed part is the intercept and plain numeric data columns need not copy them
into an (n, p) matrix: the kernels read row i of such a matrix from the columns themselves.
The matrix is described by ``x_addrs``, (p,) int64: the address of column j's first element
(a C-contiguous float64 array that the caller keeps alive), or 0 for a column of ones (the
intercept, which is never stored); and ``x_rows``, (n,) int64: the position in the columns of
the matrix's row i (the rows kept after dropping those with a missing value), or empty when
row i is position i. `bigmixed.spec.columns.ColumnMatrix` builds both.
"""
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic


@intrinsic
def _load_float64(typingctx, addr, i):
    """The float64 at byte address `addr` + 8 i (a plain load, no bounds check)."""
    sig = types.float64(types.int64, types.intp)

    def codegen(context, builder, signature, args):
        base, index = args
        ptr = builder.inttoptr(base, ir.DoubleType().as_pointer())
        return builder.load(builder.gep(ptr, [index]))

    return sig, codegen


@njit(cache=True, inline="always")
def column_value(x_addrs, a, i):
    """Element (i, a) of the matrix whose columns are at `x_addrs` (0: a column of ones)."""
    addr = x_addrs[a]
    if addr == 0:
        return 1.0
    return _load_float64(addr, i)


_BLOCK = 4096  # rows per block of `columns_gram`: a (p, 4096) buffer stays in the L2 cache


@njit(parallel=True, cache=True, nogil=True)
def columns_gram(x_addrs, x_rows, n, gram_out):
    """X'X of the (n, p) matrix at `x_addrs`, per row chunk (plain sums; for the rank check).

    Parameters
    ----------
    x_addrs : (p,) int64, column addresses (0: a column of ones)
    x_rows : (n,) int64 positions of the rows in the columns, or (0,) for 0..n-1
    n : number of rows
    gram_out : (n_chunks, p, p) float64, written (not accumulated): chunk c's X_c'X_c, where
        the rows are cut into n_chunks contiguous chunks (the caller adds them in order)

    Each chunk copies blocks of 4096 rows into a (p, 4096) buffer and adds buffer @ buffer.T,
    so the products are taken by BLAS on cached data rather than one row at a time.
    """
    p = x_addrs.shape[0]
    n_chunks = gram_out.shape[0]
    chunk = (n + n_chunks - 1) // n_chunks
    mapped = x_rows.shape[0] > 0
    for c in prange(n_chunks):
        start = c * chunk
        stop = min(n, (c + 1) * chunk)
        buf = np.zeros((p, _BLOCK))
        g = np.zeros((p, p))
        for i0 in range(start, stop, _BLOCK):
            m = min(_BLOCK, stop - i0)
            if m < _BLOCK:  # the last, short block: the rest of the buffer adds nothing
                buf[:, :] = 0.0
            for a in range(p):
                addr = x_addrs[a]
                if addr == 0:
                    for r in range(m):
                        buf[a, r] = 1.0
                elif mapped:
                    for r in range(m):
                        buf[a, r] = _load_float64(addr, x_rows[i0 + r])
                else:
                    for r in range(m):
                        buf[a, r] = _load_float64(addr, i0 + r)
            g += buf @ buf.T
        gram_out[c] = g


@njit(parallel=True, cache=True, nogil=True)
def columns_to_rows(x_addrs, x_rows, X_out):
    """X_out[i, a] = element (i, a) of the matrix at `x_addrs` / `x_rows`: the (n, p) C-ordered
    copy.

    X_out : (n, p) float64, C-contiguous, written. Rows are copied in 64 blocks on the threads
    (each thread maps the pages it writes first; a pure copy, so the same bits)."""
    n, p = X_out.shape
    n_blocks = 64
    per = (n + n_blocks - 1) // n_blocks
    mapped = x_rows.shape[0] > 0
    for b in prange(n_blocks):
        for i in range(b * per, min(n, (b + 1) * per)):
            r = x_rows[i] if mapped else i
            for a in range(p):
                X_out[i, a] = column_value(x_addrs, a, r)


@njit(cache=True, nogil=True)
def count_nonfinite(x):
    """(number of NaN, number of +-Inf) in a 1-D float array: one read, nothing allocated (the
    design's missing-value and finiteness checks of a numeric column that has neither)."""
    n_nan = 0
    n_inf = 0
    for i in range(x.shape[0]):
        v = x[i]
        if v != v:
            n_nan += 1
        elif v - v != 0.0:  # +-Inf (v - v is NaN only for them here)
            n_inf += 1
    return n_nan, n_inf


@njit(cache=True, nogil=True)
def count_levels(codes, counts_out):
    """Occurrences of each level in a column of codes (a categorical's: -1 for missing).

    codes : (n,) int8/int16/int32/int64, values in -1..n_levels-1
    counts_out : (n_levels,) int64, zeroed by the caller; counts_out[g] += rows with code g
    Returns the number of missing codes (-1). One read, nothing allocated.
    """
    n_missing = 0
    for i in range(codes.shape[0]):
        g = codes[i]
        if g < 0:
            n_missing += 1
        else:
            counts_out[g] += 1
    return n_missing
