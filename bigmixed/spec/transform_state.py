"""The state of the data-dependent transforms (scale(), center(), poly()) from exact
(double-double) sums, so that it is the same bits in memory and over any partitioning
of the rows (bigmixed.distributed)."""
from __future__ import annotations

import numpy as np
from ..crossprods.compensated import dd_sum

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
    from ..errors import DesignError

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
