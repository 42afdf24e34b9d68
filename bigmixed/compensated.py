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

from .kernels.crossprod import add_double_double
from .kernels.crossprod import dd_sum as _dd_sum_1d

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


def add_compensated(hi: np.ndarray, lo: np.ndarray, hi2, lo2) -> None:
    """(hi, lo) += (hi2, lo2) in double-double arithmetic, in place (TwoSum on the high parts,
    the low parts and the rounding error added to lo); arrays of one shape."""
    if hi.flags.c_contiguous and lo.flags.c_contiguous and hi.shape == np.shape(hi2):
        add_double_double(hi.reshape(-1), lo.reshape(-1), np.ascontiguousarray(hi2).reshape(-1),
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


# ======================================================================================
# Data-dependent transform states, in rounds
# ======================================================================================
#
# Each transform kind has four functions of (state, args):
#   prepare(state, **args)        fill the pieces that need no data (e.g. center=FALSE)
#   needs(state, **args)          the next round (an opaque, picklable op), or None: complete
#   sums(x, state, op)            the round's sums over the rows of x: a dict of DD / counts
#   advance(state, op, sums)      the next piece of the state from the sums over all rows
# `sums` are added over partitions with `merge_sums`; all other steps are deterministic, so
# the state only depends on the rounded sums.


def _float_array(data) -> np.ndarray:
    return np.asarray(getattr(data, "__wrapped__", data), dtype=np.float64)


# ---- scale(x, center = TRUE, scale = TRUE) and center(x) (R's scale.default)


def _scale_prepare(state, center=True, scale=True) -> None:
    if "center" not in state and not (isinstance(center, bool) and center):
        state["center"] = None if center is False else np.asarray(center, dtype=np.float64)
    if "center" in state and "scale" not in state and not (isinstance(scale, bool) and scale):
        state["scale"] = None if scale is False else np.asarray(scale, dtype=np.float64)


def _scale_needs(state, center=True, scale=True):
    if "center" not in state:
        return "center"
    if "scale" not in state:
        return "scale"
    return None


def _scale_sums(x, state, op) -> dict:
    x = _float_array(x)
    if op == "scale" and state["center"] is not None:
        x = x - state["center"]
    ok = ~np.isnan(x)
    terms = np.where(ok, x if op == "center" else x**2, 0.0)
    return {"sum": dd_sum(terms), "count": ok.sum(axis=0)}


def _scale_advance(state, op, sums) -> None:
    total, m = sums["sum"].value(), sums["count"]
    with np.errstate(invalid="ignore", divide="ignore"):
        if op == "center":  # the mean of the non-missing values
            state["center"] = total / m
        else:  # root mean square (n - 1) of the centred values, as R's scale()
            state["scale"] = np.sqrt(total / (m - 1))


# ---- poly(x, degree, raw = FALSE): formulaic's three-term recurrence (R's poly basis)


def _poly_prepare(state, degree=1, raw=False) -> None:
    if not raw:
        state.setdefault("alpha", {})
        state.setdefault("norms2", {})


def _poly_needs(state, degree=1, raw=False):
    if raw:
        return None
    k = len(state["norms2"])
    return (k, degree) if k <= degree else None


def _poly_sums(x, state, op) -> dict:
    """Round k: norms2[k] = sum P_k^2 and (k < degree) alpha[k] = sum x P_k^2 / norms2[k], P_k
    evaluated by the recurrence with the coefficients of the earlier rounds (the same
    operations as formulaic's poly)."""
    from .errors import DesignError

    x = _float_array(x)
    if np.isnan(x).any():
        raise DesignError(
            "missing values are not allowed in 'poly' (R refuses them too); drop the rows "
            "with a missing value first"
        )
    k, degree = op
    alpha, norms2 = state["alpha"], state["norms2"]
    prev2, prev = None, np.ones(x.shape[0])
    for i in range(1, k + 1):
        cur = (x - alpha[i - 1]) * prev
        if i >= 2:
            cur -= (norms2[i - 1] / norms2[i - 2]) * prev2
        prev2, prev = prev, cur
    p2 = prev**2
    if k == degree:  # the last round: norms2[degree] only
        return {"p2": dd_sum(p2)}
    return {"p2": dd_sum(p2), "xp2": dd_sum(x * p2)}


def _poly_advance(state, op, sums) -> None:
    k, degree = op
    norm = sums["p2"].value()
    state["norms2"][k] = norm
    if k < degree:
        state["alpha"][k] = sums["xp2"].value() / norm


TRANSFORM_STATES = {
    "scale": (_scale_prepare, _scale_needs, _scale_sums, _scale_advance),
    "poly": (_poly_prepare, _poly_needs, _poly_sums, _poly_advance),
}


def complete_state(kind: str, x, state: dict, **args) -> dict:
    """Run every round of `kind`'s state on the whole of x (in memory); returns `state`."""
    prepare, needs, sums, advance = TRANSFORM_STATES[kind]
    prepare(state, **args)
    while (op := needs(state, **args)) is not None:
        advance(state, op, sums(x, state, op))
        prepare(state, **args)
    return state
