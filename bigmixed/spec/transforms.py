"""The functions a formula can call beyond formulaic's own: R's factor(), ordered(),
scale(), center() and poly() (stateful: their state is kept for new data), and the
evaluation context every formula is evaluated in."""
from __future__ import annotations

import numpy as np
import pandas as pd
from formulaic.transforms import C  # noqa: E402
from formulaic.transforms.poly import poly as _formulaic_poly  # noqa: E402
from formulaic.utils.stateful_transforms import stateful_transform  # noqa: E402
from .transform_state import complete_state  # noqa: E402
from ..errors import (
    DesignError,
)
from formulaic.transforms.contrasts import PolyContrasts  # noqa: E402
from interface_meta import override  # noqa: E402
from .rlabels import contr_poly
from .encoding import as_categorical
from .encoding import factorize
from .splines import r_bs, r_ns


class RPolyContrasts(PolyContrasts):
    """formulaic's PolyContrasts with R's exact contr.poly coding matrix."""

    @override
    def _get_coding_matrix(self, levels, reduced_rank=True, sparse=False):
        import scipy.sparse as spsparse

        n = len(levels)
        m = contr_poly(n) if reduced_rank else np.eye(n)
        return spsparse.csc_matrix(m) if sparse else m


def r_factor(x):
    """R's ``factor(x)`` inside a formula: levels sorted, labelled as R prints them."""
    codes, labels, _ = factorize(pd.Series(getattr(x, "__wrapped__", x)))
    return C(as_categorical(codes, labels, False))


def r_ordered(x):
    """R's ``ordered(x)`` inside a formula: sorted levels, polynomial contrasts."""
    s = pd.Series(getattr(x, "__wrapped__", x))
    codes, labels, _ = factorize(s)
    return C(as_categorical(codes, labels, True), contrasts=RPolyContrasts())


@stateful_transform
def r_scale(data, center=True, scale=True, _state={}):  # noqa: B006 - stateful transform
    """R's ``scale(x)``: centre by the mean, divide by the sd (n - 1), ignoring NaN.

    State (centre, scale) is kept for new data, as R's makepredictcall does for scale(). It is
    computed from order-independent sums (bigmixed.compensated), so that a fit from the
    partitions of a Dask DataFrame finds the same state, bit for bit.
    """
    x = np.asarray(getattr(data, "__wrapped__", data), dtype=np.float64)
    complete_state("scale", x, _state, center=center, scale=scale)
    if _state["center"] is not None:
        x = x - _state["center"]
    if _state["scale"] is not None:
        x = x / _state["scale"]
    return x


@stateful_transform
def r_center(data, _state={}):  # noqa: B006 - stateful transform
    return r_scale(data, scale=False, _state=_state)


@stateful_transform
def r_poly(x, degree=1, raw=False, _state={}):  # noqa: B006 - stateful transform
    """formulaic's poly (the same basis as R's orthogonal poly()), refusing NaN like R.

    The coefficients of the recurrence (the state) come from order-independent sums
    (bigmixed.compensated, the same recurrence as formulaic's), so that a fit from the
    partitions of a Dask DataFrame finds the same basis, bit for bit; formulaic then
    evaluates the basis from them."""
    arr = np.asarray(getattr(x, "__wrapped__", x), dtype=np.float64)
    if np.isnan(arr).any():
        raise DesignError(
            "missing values are not allowed in 'poly' (R refuses them too); drop the rows "
            "with a missing value first"
        )
    complete_state("poly", arr, _state, degree=degree, raw=raw)
    return _formulaic_poly(arr, degree=degree, raw=raw, _state=_state)


def r_c(*values):
    """R's ``c(...)``: the numbers given, as one vector (``knots = c(40, 60)``)."""
    parts = [np.atleast_1d(np.asarray(getattr(v, "__wrapped__", v))) for v in values]
    return np.concatenate(parts) if parts else np.empty(0)


# Names available to formula expressions besides the data columns and formulaic's
# transforms (np, log, exp, log2, log10, I, C, ...): R's factor(), ordered(), scale(),
# center(), poly(), splines' ns() and bs() (R's arguments; they replace formulaic's bs), c(),
# R's constants pi, Inf, NULL, TRUE, FALSE, T, F, and R's usual maths functions. A data column of the
# same name wins over each of these, as in R (formulaic looks the data up first).
FORMULA_CONTEXT: dict = {
    "scale": r_scale,
    "center": r_center,
    "poly": r_poly,
    "factor": r_factor,
    "ordered": r_ordered,
    "ns": r_ns,
    "bs": r_bs,
    "c": r_c,
    "pi": np.pi,
    "Inf": np.inf,
    "NULL": None,
    "TRUE": True,
    "FALSE": False,
    "T": True,
    "F": False,
    "sqrt": np.sqrt,
    "log1p": np.log1p,
    "expm1": np.expm1,
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "asin": np.arcsin,
    "acos": np.arccos,
    "atan": np.arctan,
    "sinh": np.sinh,
    "cosh": np.cosh,
    "tanh": np.tanh,
    "floor": np.floor,
    "ceiling": np.ceil,
    "trunc": np.trunc,
    "sign": np.sign,
}
