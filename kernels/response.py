"""The cross-products that involve the response only: Z'y per level, X'y and y'y.

Used by `bigmixed.batch` to fit many responses on one design: Z'Z, Z'X and X'X are computed
once (`factor_crossprod`), and each response pays for this one pass only. The rows are cut into
the same chunks as `factor_crossprod` and each chunk accumulates in the same order, so the
numbers are bit-identical to the y-column of `factor_crossprod`'s output, rounding errors
(``*_lo``) included (after the caller sums the chunks in order, as `bigmixed.crossprod` does).
"""
import numpy as np
from numba import njit

from .crossprod import _two_sum_error


@njit(cache=True, nogil=True)
def response_crossprod(codes, Z, unit_z, X, y, with_xy, zy_out, xy_out, zy_lo, xy_lo):
    """Per-level Z_g'y of one grouping factor and, optionally, X'y and y'y.

    Parameters
    ----------
    codes : (n,) int32/int64, level of each row in 0..n_levels-1
    Z : (n, P) float64, the factor's random-effects columns (ignored when unit_z)
    unit_z : bool, True when the only column is the intercept (Z may be (0, 1))
    X : (n, p) float64, fixed-effects design (C or F order)
    y : (n,) float64, the response
    with_xy : bool, also accumulate X'y and y'y into xy_out
    zy_out : (n_chunks, n_levels, P) float64, zeroed by the caller; chunk c of the rows
        (the chunks of `factor_crossprod`) adds into zy_out[c]
    xy_out : (n_chunks, p + 1) float64, zeroed; xy_out[c, :p] = X'y and xy_out[c, p] = y'y
        over chunk c (untouched unless with_xy)
    zy_lo, xy_lo : zeroed, shaped like zy_out, xy_out: the accumulated rounding errors (as in
        `factor_crossprod`)
    """
    n = codes.shape[0]
    p = X.shape[1]
    P = zy_out.shape[2]
    n_chunks = zy_out.shape[0]
    chunk = (n + n_chunks - 1) // n_chunks
    z = np.ones(P)
    for c in range(n_chunks):
        start = c * chunk
        stop = min(n, start + chunk)
        for i in range(start, stop):
            g = codes[i]
            yi = y[i]
            if not unit_z:
                for a in range(P):
                    z[a] = Z[i, a]
            for a in range(P):
                v = z[a] * yi
                s = zy_out[c, g, a]
                t = s + v
                zy_lo[c, g, a] += _two_sum_error(s, v, t)
                zy_out[c, g, a] = t
            if with_xy:
                for b in range(p):
                    v = yi * X[i, b]
                    s = xy_out[c, b]
                    t = s + v
                    xy_lo[c, b] += _two_sum_error(s, v, t)
                    xy_out[c, b] = t
                v = yi * yi
                s = xy_out[c, p]
                t = s + v
                xy_lo[c, p] += _two_sum_error(s, v, t)
                xy_out[c, p] = t
