"""Sums that do not depend on how the rows are split or ordered.

A fit follows the last bits of its input: BOBYQA and the Newton polish stop at points that
move by ~1e-9 when the cross-products change by one rounding. Floating-point sums change
with the order of the additions, so a fit from a Dask DataFrame (rows summed per partition,
partials added) would differ from the in-memory fit (rows summed in one or two chunks) at
that level. Every sum over rows in bigmixed is therefore carried as a double-double: a pair
(hi, lo) whose exact sum is the sum of the terms up to O(n eps^2) relative, with the rounding
error of each addition collected in lo (Knuth's TwoSum), and rounded to a double only once,
at the end. The rounded value is then the correctly rounded sum whatever the order and the
split (it differs only if the exact sum lies within O(n eps^2) of a rounding boundary: with
probability of order n eps per entry), so the in-memory fit and a fit from any partitioning
of the same rows see the same bits.

Used by the cross-product kernels' callers (bigmixed.crossprod, bigmixed.batch,
bigmixed.distributed) and by the data-dependent formula transforms scale(), center() and
poly() (bigmixed.design), whose state (means, SDs, polynomial coefficients) is computed in
*rounds*: each round needs sums over all rows (`*_sums`) given the state so far, and
`*_advance` turns the sums into the next piece of the state. In memory one call does every
round on the whole column (`complete_state`); from a Dask DataFrame each round is one pass
over the partitions, the per-partition sums added in double-double (bigmixed.distributed).
Both give the same state, bit for bit.
"""
from __future__ import annotations

import numpy as np
from ..kernels.crossprod import add_double_double, add_double_double_parallel
from ..kernels.crossprod import dd_sum as _dd_sum_1d

__all__ = [
    "DD",
    "TRANSFORM_STATES",
    "add_compensated",
    "complete_state",
    "dd_sum",
    "merge_sums",
]


# ======================================================================================
# Double-double sums
# ======================================================================================


_PARALLEL_ADD_MIN = 1 << 20  # elements from which the threads pay


def add_compensated(hi: np.ndarray, lo: np.ndarray, hi2, lo2) -> None:
    """(hi, lo) += (hi2, lo2) in double-double arithmetic, in place (TwoSum on the high parts,
    the low parts and the rounding error added to lo); arrays of one shape."""
    if hi.flags.c_contiguous and lo.flags.c_contiguous and hi.shape == np.shape(hi2):
        kernel = add_double_double_parallel if hi.size >= _PARALLEL_ADD_MIN else add_double_double
        kernel(hi.reshape(-1), lo.reshape(-1), np.ascontiguousarray(hi2).reshape(-1),
               np.ascontiguousarray(lo2).reshape(-1))
        return
    t = hi + hi2  # the same operations in numpy
    bv = t - hi
    err = (hi - (t - bv)) + (hi2 - bv)
    lo += lo2
    lo += err
    hi[...] = t


class DD:
    """A double-double sum (hi, lo) of float64 arrays (or 0-d arrays); ``a + b`` adds two in
    double-double, `value()` rounds once."""

    __slots__ = ("hi", "lo")

    def __init__(self, hi, lo=None):
        self.hi = np.array(hi, dtype=np.float64)
        self.lo = np.zeros_like(self.hi) if lo is None else np.array(lo, dtype=np.float64)

    def __add__(self, other: DD) -> DD:
        hi, lo = self.hi.copy(), self.lo.copy()
        add_compensated(hi, lo, other.hi, other.lo)
        return DD(hi, lo)

    def value(self):
        """The sum rounded to float64 (a numpy scalar for a 0-d sum)."""
        v = self.hi + self.lo
        return v[()] if v.ndim == 0 else v

    def __repr__(self) -> str:
        return f"DD({self.hi!r}, {self.lo!r})"


def dd_sum(x, axis: int = 0) -> DD:
    """Sum of x along `axis` (0 or None for all) as a double-double, exact to O(n eps^2)
    relative: one sum in compiled code (bigmixed.kernels.crossprod.dd_sum); several (a 2-D x)
    as a pairwise tree of TwoSums, the rounding errors summed alongside."""
    hi = np.asarray(x, dtype=np.float64)
    if axis is None:
        hi = hi.reshape(-1)
    elif axis != 0:
        hi = np.moveaxis(hi, axis, 0)
    if hi.ndim == 1:  # one sum: compiled
        return DD(*_dd_sum_1d(np.ascontiguousarray(hi)))
    lo = np.zeros(hi.shape[1:])
    if hi.shape[0] == 0:
        return DD(np.zeros(hi.shape[1:]), lo)
    while hi.shape[0] > 1:
        if hi.shape[0] % 2:
            hi = np.concatenate([hi, np.zeros((1,) + hi.shape[1:])])
        a, b = hi[0::2], hi[1::2]
        s = a + b
        bv = s - a
        err = (a - (s - bv)) + (b - bv)
        lo = lo + err.sum(axis=0)
        hi = s
    return DD(hi[0], lo)


def merge_sums(a: dict, b: dict) -> dict:
    """Add the sums of one round over two sets of rows (DD or integer counts), key by key."""
    return {k: a[k] + b[k] for k in a}
