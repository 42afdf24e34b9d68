"""R's splines package in a formula: ``ns()`` and ``bs()`` with R's arguments and R's numbers.

``ns(x, df = NULL, knots = NULL, intercept = FALSE, Boundary.knots = range(x))`` and
``bs(x, df = NULL, knots = NULL, degree = 3, intercept = FALSE, Boundary.knots = range(x))``
give the basis of splines::ns / splines::bs (R 4.2), column for column:

* interior knots from ``df``: R's ``quantile(x, type = 7)`` of the non-missing x inside the
  boundary knots, at ``seq.int(0, 1, length.out = k + 2)[-c(1, k + 2)]``, with R's
  arithmetic (`r_quantile7`);
* the B-spline basis is R's ``splineDesign`` (de Boor; scipy's BSpline evaluates the same
  polynomials);
* ``ns`` projects it on the natural-spline constraints as R does: the Householder QR of the
  second derivatives at the boundary knots (LINPACK's dqrdc2, as R's ``qr``) and
  ``qr.qty``, dropping the first two columns;
* values beyond the boundary knots: ``ns`` continues linearly (value and slope at the
  boundary knot), ``bs`` by the Taylor polynomial of the basis at a pivot a quarter of the
  way into the outer interval -- R's code, with R's warning for ``bs``.

The state (knots, boundary knots, intercept, degree) is what R's ``makepredictcall`` keeps:
new data are encoded with the fitted knots, and a saved model stores them.
"""
from __future__ import annotations

import ast
import math
import warnings

import numpy as np
from formulaic.materializers.types import FactorValues
from formulaic.utils.stateful_transforms import stateful_transform

from ..errors import DesignError
from ..warnings import BigmixedWarning
from .checks import user_stacklevel
from .deparse import DOT, parse_python_expression

__all__ = ["r_ns", "r_bs", "spline_design", "r_quantile7", "interior_probs",
           "ns_basis", "bs_basis", "spline_needs_data"]

_NS_FORMALS = ("df", "knots", "intercept", "Boundary.knots")
_BS_FORMALS = ("df", "knots", "degree", "intercept", "Boundary.knots")
_OUTSIDE_WARNING = "some 'x' values beyond boundary knots may cause ill-conditioned bases"


# --------------------------------------------------------------------------------------
# R's pieces: splineDesign, quantile(type = 7), seq.int, qr / qr.qty


def spline_design(knots: np.ndarray, x: np.ndarray, order: int, derivs=0) -> np.ndarray:
    """R's ``splineDesign(knots, x, ord, derivs)``: (len(x), len(knots) - ord) basis values
    (or derivatives, `derivs` per x or one for all) of the B-splines of order `order`; x on
    the right boundary knot takes the last interval, as in R."""
    from scipy.interpolate import BSpline

    knots = np.asarray(knots, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    n_coef = len(knots) - order
    spline = BSpline(knots, np.eye(n_coef), order - 1, extrapolate=True)
    derivs = np.broadcast_to(np.asarray(derivs, dtype=int), x.shape)
    out = np.empty((len(x), n_coef))
    for d in np.unique(derivs):
        sel = derivs == d
        out[sel] = spline(x[sel], nu=int(d)) if d < order else 0.0
    return out


def r_quantile7(x: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """R's ``quantile(x, probs, type = 7)`` with R's arithmetic: x[lo] and
    ``(1 - h) * x[lo] + h * x[hi]`` where the index is not whole (and the values differ)."""
    xs = np.sort(np.asarray(x, dtype=np.float64))
    probs = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
    index = 1.0 + max(len(xs) - 1, 0) * probs
    lo = np.floor(index).astype(np.intp)
    hi = np.ceil(index).astype(np.intp)
    qs = xs[lo - 1]
    upper = xs[hi - 1]
    h = index - lo
    mix = (index > lo) & (upper != qs)
    return np.where(mix, (1.0 - h) * qs + h * upper, qs)


def interior_probs(n_knots: int) -> np.ndarray:
    """R's ``seq.int(0, 1, length.out = n + 2)[-c(1, n + 2)]`` (``from + i * by``)."""
    by = 1.0 / (n_knots + 1)
    return np.array([i * by for i in range(1, n_knots + 1)], dtype=np.float64)


def _linpack_qr(a: np.ndarray):
    """R's ``qr(a)`` (LINPACK dqrdc2) of a full-column-rank matrix: (compact QR, qraux)."""
    x = np.array(a, dtype=np.float64, copy=True)
    n, p = x.shape
    qraux = np.zeros(p)
    for col in range(min(n - 1, p)):
        nrmxl = float(np.linalg.norm(x[col:, col]))
        if nrmxl == 0.0:
            raise DesignError("the natural-spline constraints are degenerate (the boundary "
                              "knots coincide or the knots are not distinct)")
        if x[col, col] != 0.0:
            nrmxl = math.copysign(nrmxl, x[col, col])
        x[col:, col] *= 1.0 / nrmxl
        x[col, col] += 1.0
        for j in range(col + 1, p):
            t = -float(x[col:, col] @ x[col:, j]) / x[col, col]
            x[col:, j] += t * x[col:, col]
        qraux[col] = x[col, col]
        x[col, col] = -nrmxl
    return x, qraux


def _qr_qty_rows(qr: np.ndarray, qraux: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """R's ``t(qr.qty(qr, t(rows)))``: Q'y for every row y of `rows` (LINPACK dqrsl)."""
    y = np.array(rows, dtype=np.float64, copy=True)
    for j in range(len(qraux)):
        if qraux[j] == 0.0:
            continue
        u = qr[j:, j].copy()
        u[0] = qraux[j]
        t = -(y[:, j:] @ u) / u[0]
        y[:, j:] += t[:, None] * u[None, :]
    return y


# --------------------------------------------------------------------------------------
# The bases


def _knots_from_df(x: np.ndarray, n_interior: int) -> np.ndarray:
    if n_interior <= 0:
        return np.empty(0)
    if len(x) == 0:
        raise DesignError("no values inside the boundary knots to place the spline's knots at")
    return r_quantile7(x, interior_probs(n_interior))


def bs_basis(x: np.ndarray, knots: np.ndarray, boundary: np.ndarray, degree: int,
             intercept: bool, check_outside: bool) -> np.ndarray:
    """splines::bs on non-missing x with the given knots (R's code after the knots are set).
    `check_outside`: the boundary knots were given (or are a fit's), so x may lie beyond."""
    order = degree + 1
    aknots = np.sort(np.concatenate([np.repeat(boundary, order), knots]))
    n_coef = len(aknots) - order
    left = x < boundary[0] if check_outside else np.zeros(len(x), dtype=bool)
    right = x > boundary[1] if check_outside else np.zeros(len(x), dtype=bool)
    if left.any() or right.any():
        warnings.warn(f"bs(): {_OUTSIDE_WARNING} (as R warns)", BigmixedWarning,
                      stacklevel=user_stacklevel())
        basis = np.zeros((len(x), n_coef))
        powers = np.arange(1, degree + 1)
        scalef = np.array([math.factorial(k) for k in range(order)], dtype=np.float64)
        e = 0.25
        for side, pivot in ((left, (1 - e) * boundary[0] + e * aknots[order]),
                            (right, (1 - e) * boundary[1] + e * aknots[len(aknots) - order - 1])):
            if side.any():
                xl = np.column_stack([np.ones(int(side.sum())),
                                      (x[side] - pivot)[:, None] ** powers[None, :]])
                tt = spline_design(aknots, np.repeat(pivot, order), order, np.arange(order))
                basis[side] = xl @ (tt / scalef[:, None])
        inside = ~(left | right)
        if inside.any():
            basis[inside] = spline_design(aknots, x[inside], order)
    else:
        basis = spline_design(aknots, x, order)
    return basis if intercept else basis[:, 1:]


def ns_basis(x: np.ndarray, knots: np.ndarray, boundary: np.ndarray, intercept: bool,
             check_outside: bool) -> np.ndarray:
    """splines::ns on non-missing x with the given knots (R's code after the knots are set)."""
    aknots = np.sort(np.concatenate([np.repeat(boundary, 4), knots]))
    left = x < boundary[0] if check_outside else np.zeros(len(x), dtype=bool)
    right = x > boundary[1] if check_outside else np.zeros(len(x), dtype=bool)
    if left.any() or right.any():
        basis = np.zeros((len(x), len(knots) + 4))
        for side, pivot in ((left, boundary[0]), (right, boundary[1])):
            if side.any():
                xl = np.column_stack([np.ones(int(side.sum())), x[side] - pivot])
                tt = spline_design(aknots, np.repeat(pivot, 2), 4, [0, 1])
                basis[side] = xl @ tt
        inside = ~(left | right)
        if inside.any():
            basis[inside] = spline_design(aknots, x[inside], 4)
    else:
        basis = spline_design(aknots, x, 4)
    const = spline_design(aknots, boundary, 4, [2, 2])
    if not intercept:
        const, basis = const[:, 1:], basis[:, 1:]
    qr, qraux = _linpack_qr(const.T)
    return _qr_qty_rows(qr, qraux, basis)[:, 2:]


# --------------------------------------------------------------------------------------
# Arguments as R matches them


def _r_arguments(fname: str, formals: tuple, args: tuple, kwargs: dict) -> dict:
    """Positional and named arguments -> {R formal name: value}; DesignError for extras."""
    if len(args) > len(formals):
        raise DesignError(f"{fname}() takes at most {len(formals) + 1} arguments (x, "
                          f"{', '.join(formals)}); got {len(args) + 1}")
    out = dict(zip(formals, args))
    for key, value in kwargs.items():
        name = key.replace(DOT, ".")
        if name not in formals:
            raise DesignError(f"{fname}() has no argument {name!r}; its arguments are x, "
                              f"{', '.join(formals)} (R's splines::{fname})")
        if name in out:
            raise DesignError(f"{fname}(): argument {name!r} given twice")
        out[name] = value
    return out


def _as_vector(value, what: str, fname: str) -> np.ndarray:
    v = np.atleast_1d(np.asarray(getattr(value, "__wrapped__", value), dtype=np.float64))
    if v.ndim != 1:
        raise DesignError(f"{fname}(): {what} must be a vector of numbers")
    if not np.all(np.isfinite(v)):
        raise DesignError(f"{fname}(): {what} must be finite numbers, got {v.tolist()}")
    return v


def _as_count(value, what: str, fname: str) -> int:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DesignError(f"{fname}(): {what} must be a whole number, got {value!r}") from None
    if not math.isfinite(v) or v != round(v):
        raise DesignError(f"{fname}(): {what} must be a whole number, got {value!r}")
    return int(round(v))


def _as_flag(value, what: str, fname: str) -> bool:
    if isinstance(value, (bool, np.bool_)) or value in (0, 1):
        return bool(value)
    raise DesignError(f"{fname}(): {what} must be TRUE or FALSE, got {value!r}")


def _numeric_x(x, fname: str) -> np.ndarray:
    raw = getattr(x, "__wrapped__", x)
    try:
        values = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise DesignError(f"{fname}() needs a numeric variable; got values of type "
                          f"{getattr(raw, 'dtype', type(raw).__name__)}") from None
    if values.ndim != 1:
        raise DesignError(f"{fname}() needs one numeric variable")
    return values


def _boundary(values: np.ndarray, given, fname: str, single_point_tweak: bool) -> tuple:
    """-> (sorted boundary knots, whether they were given)."""
    if given is not None:
        b = np.sort(_as_vector(given, "Boundary.knots", fname))
        if b.shape != (2,):
            raise DesignError(f"{fname}(): Boundary.knots must be two numbers, got {b.tolist()}")
        return b, True
    if len(values) == 0:
        raise DesignError(f"{fname}(): every value of x is missing")
    if single_point_tweak and len(values) == 1:  # R's ns(): x * c(7, 9) / 8
        return values[0] * np.array([7.0, 9.0]) / 8.0, False
    return np.array([values.min(), values.max()]), False


def _interior_count(df, n_interior: int, used: int, fname: str) -> int:
    if n_interior < 0:
        warnings.warn(f"{fname}(): 'df' was too small; have used {used} (as R)",
                      BigmixedWarning, stacklevel=user_stacklevel())
        return 0
    return n_interior


def _with_missing(basis: np.ndarray, ok: np.ndarray) -> np.ndarray:
    if ok.all():
        return basis
    out = np.full((len(ok), basis.shape[1]), np.nan)
    out[ok] = basis
    return out


def _factor_values(basis: np.ndarray) -> FactorValues:
    """Columns named 1, 2, ... after the term, as R's model.matrix names them (one column:
    the term's name alone, as R names a one-column matrix)."""
    if basis.shape[1] == 1:
        return FactorValues(basis[:, 0], kind="numerical", spans_intercept=False)
    return FactorValues(
        {str(j + 1): basis[:, j] for j in range(basis.shape[1])},
        kind="numerical", spans_intercept=False, drop_field=None,
        format="{name}{field}", encoded=False,
    )


def _check_degenerate(boundary: np.ndarray, fname: str) -> None:
    if not boundary[0] < boundary[1]:
        raise DesignError(f"{fname}(): the boundary knots are equal ({boundary[0]:g}); x "
                          "must take more than one value")


# --------------------------------------------------------------------------------------
# The formula functions (stateful: the knots are kept for new data)


@stateful_transform
def r_ns(x, *args, _state={}, **kwargs):  # noqa: B006 - stateful transform
    """R's ``splines::ns(x, df, knots, intercept, Boundary.knots)``; state: the knots, the
    boundary knots and intercept, as R's makepredictcall keeps them."""
    a = _r_arguments("ns", _NS_FORMALS, args, kwargs)
    values = _numeric_x(x, "ns")
    ok = ~np.isnan(values)
    xv = values[ok]
    if "knots" not in _state:
        intercept = _as_flag(a.get("intercept", False), "intercept", "ns")
        boundary, given = _boundary(xv, a.get("Boundary.knots"), "ns", True)
        _check_degenerate(boundary, "ns")
        if a.get("knots") is not None:
            knots = _as_vector(a["knots"], "knots", "ns")
        elif a.get("df") is not None:
            df = _as_count(a["df"], "df", "ns")
            n_int = _interior_count(df, df - 1 - int(intercept), 1 + int(intercept), "ns")
            inside = xv[(xv >= boundary[0]) & (xv <= boundary[1])] if given else xv
            knots = _knots_from_df(inside, n_int)
        else:
            knots = np.empty(0)
        _state.update(knots=knots, Boundary_knots=boundary, intercept=intercept)
    basis = ns_basis(xv, np.asarray(_state["knots"], dtype=np.float64),
                     np.asarray(_state["Boundary_knots"], dtype=np.float64),
                     bool(_state["intercept"]), check_outside=True)
    return _factor_values(_with_missing(basis, ok))


@stateful_transform
def r_bs(x, *args, _state={}, **kwargs):  # noqa: B006 - stateful transform
    """R's ``splines::bs(x, df, knots, degree = 3, intercept, Boundary.knots)``; state: the
    knots, the boundary knots, intercept and degree, as R's makepredictcall keeps them."""
    a = _r_arguments("bs", _BS_FORMALS, args, kwargs)
    values = _numeric_x(x, "bs")
    ok = ~np.isnan(values)
    xv = values[ok]
    if "knots" not in _state:
        degree = _as_count(a.get("degree", 3), "degree", "bs")
        if degree < 1:
            raise DesignError(f"bs(): 'degree' must be integer >= 1, got {degree}")
        intercept = _as_flag(a.get("intercept", False), "intercept", "bs")
        boundary, given = _boundary(xv, a.get("Boundary.knots"), "bs", False)
        _check_degenerate(boundary, "bs")
        if a.get("knots") is not None:
            knots = _as_vector(a["knots"], "knots", "bs")
        elif a.get("df") is not None:
            df = _as_count(a["df"], "df", "bs")
            order = degree + 1
            n_int = _interior_count(df, df - order + (1 - int(intercept)),
                                    order - (1 - int(intercept)), "bs")
            inside = xv[(xv >= boundary[0]) & (xv <= boundary[1])] if given else xv
            knots = _knots_from_df(inside, n_int)
        else:
            knots = np.empty(0)
        _state.update(knots=knots, Boundary_knots=boundary, intercept=intercept,
                      degree=degree)
    basis = bs_basis(xv, np.asarray(_state["knots"], dtype=np.float64),
                     np.asarray(_state["Boundary_knots"], dtype=np.float64),
                     int(_state["degree"]), bool(_state["intercept"]), check_outside=True)
    return _factor_values(_with_missing(basis, ok))


# --------------------------------------------------------------------------------------
# Which spline calls need the data (for Dask data, where only row-local terms are allowed)


def _is_null(node) -> bool:
    return (isinstance(node, ast.Constant) and node.value is None) or (
        isinstance(node, ast.Name) and node.id == "NULL")


def _is_literal(node) -> bool:
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return _is_literal(node.operand)
    if isinstance(node, (ast.List, ast.Tuple)):
        return all(_is_literal(e) for e in node.elts)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "c":
        return not node.keywords and all(_is_literal(e) for e in node.args)
    return isinstance(node, ast.Name) and node.id in ("TRUE", "FALSE", "T", "F", "NULL", "Inf")


def spline_needs_data(expr: str, fname: str) -> bool:
    """Whether some ``ns()`` / ``bs()`` call in `expr` takes its state from the data: True
    unless every one is given ``Boundary.knots`` and either ``knots`` or no ``df``, as
    literal numbers (then the basis of a row depends on that row only)."""
    formals = _NS_FORMALS if fname == "ns" else _BS_FORMALS
    tree, _, aliases = parse_python_expression(expr)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and aliases.get(node.func.id, node.func.id) == fname):
            continue
        given = dict(zip(formals, node.args[1:]))
        given.update({k.arg.replace(DOT, "."): k.value for k in node.keywords if k.arg})
        given = {k: v for k, v in given.items() if not _is_null(v)}
        if not all(_is_literal(v) for v in given.values()):
            return True
        if "Boundary.knots" not in given or ("df" in given and "knots" not in given):
            return True
    return False
