"""Design: a model formula evaluated on a data frame.

formula -> **design** -> cross-products -> factor -> objective -> optimizer -> results.

`build_design(formula, data)` turns an lme4-style formula and a pandas DataFrame into the
arrays the engine needs: the response, the dense fixed-effects matrix X, and one
`RandomTerm` per random-effects term (after expanding `/` and `||`), each holding integer
group codes and the term's own small dense model matrix. Z itself is never formed.
"""
from __future__ import annotations

import builtins
import copy
import difflib
import functools
import itertools
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class RandomTerm:
    """One random-effects term `(expr | group)` after expansion of `/` and `||`.

    Attributes
    ----------
    expr : str
        The left-hand side as written after expansion, e.g. "1", "1 + time", "0 + method".
    group : str
        The grouping expression, e.g. "doctor" or "hospital:ward".
    column_names : list[str]
        lme4's names of the term's columns, e.g. ["(Intercept)", "time"], ["methodhplc", "methodnir"].
    levels : np.ndarray, shape (n_levels,), object
        Level labels of the grouping factor (strings; "a:b" for interactions), in code order.
    codes : np.ndarray, shape (n_obs,), int32 (int64 when n_levels >= 2**31)
        Level code of each observation, in 0..n_levels-1. Every level occurs at least once.
    Z : np.ndarray, shape (n_obs, p_k), float64, C-contiguous
        The term's model matrix (the columns multiplying the random effects of one level).
        Terms with the same `expr` (e.g. from ``(1 | a/b)``) share one Z array: do not
        modify it in place. For an intercept-only term (``(1 | g)``) Z is a read-only view
        of the value 1.0 broadcast to (n_obs, 1), which takes no memory.
    group_vars : tuple[str, ...]
        The grouping column names, slowest-varying first (("b", "a") for group "b:a").
    correlated : bool
        False when the term came from an uncorrelated ``||`` term.
    """

    expr: str
    group: str
    column_names: list
    levels: np.ndarray
    codes: np.ndarray
    Z: np.ndarray
    group_vars: tuple = ()
    correlated: bool = True

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def n_columns(self) -> int:
        return self.Z.shape[1]


@dataclass
class Design:
    """Everything the engine needs from formula + data.

    Attributes
    ----------
    formula : str
        The formula as given by the user.
    response : str
        Name of the response column.
    y : np.ndarray, shape (n_obs,), float64
    X : np.ndarray, shape (n_obs, p), float64, C-contiguous (row-major: one pass reads a row)
    fixed_names : list[str]
        lme4/R names of the columns of X, e.g. ["(Intercept)", "methodhplc", "age:sexM"].
    terms : list[RandomTerm]
        Random-effects terms in the user's order (after expansion of `/` and `||`).
    n_dropped : int
        Rows dropped because a column the model uses had a missing value (na.omit).
    row_index : pandas.Index
        Index labels (of the input frame) of the rows used, in order.
    fixed_spec : Any
        What `predict` needs to re-encode X on new data the same way (e.g. a formulaic ModelSpec).
    term_specs : list
        Per random term, what is needed to re-encode its Z and map group labels on new data.
    parsed : bigmixed.formula.ParsedFormula
        The parsed formula.
    dropped_fixed : list[str]
        Columns of the fixed-effects model matrix dropped because they are aliased with
        earlier columns (lme4's ``check.rankX = "message+drop.cols"``), e.g. ["x2"]; X and
        `fixed_names` hold the remaining columns only.
    warnings : list[Warning]
        Typed warnings raised while building the design (e.g. RankDeficiencyWarning).
    extra : dict[str, pandas.Series]
        Kept rows of the columns asked for with ``build_design(extra_columns=...)`` (e.g. the
        visit and series columns of a residual structure), positionally aligned with y.
    """

    formula: str
    response: str
    y: np.ndarray
    X: np.ndarray
    fixed_names: list
    terms: list
    n_dropped: int
    row_index: Any
    fixed_spec: Any = None
    term_specs: list = field(default_factory=list)
    parsed: Any = None
    dropped_fixed: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def n_obs(self) -> int:
        return self.y.shape[0]


# ======================================================================================
# build_design: formula + DataFrame -> Design
# ======================================================================================
#
# R conventions reproduced here (checked against R 4.2 / lme4 model.matrix):
#   * factor level order: a pandas Categorical's category order, otherwise sorted unique
#     values (numbers numerically, strings by code point = R's C locale, False < True);
#     levels that do not occur in the rows used are dropped (lme4 builds its model frame
#     with drop.unused.levels = TRUE, after na.omit).
#   * level labels as R prints them: "TRUE"/"FALSE" for logicals, "3" for 3 and 3.0.
#   * unordered factors: treatment contrasts against the first level; ordered factors
#     (ordered pandas Categorical): contr.poly, columns "x.L", "x.Q", "x.C", "x^4", ...
#   * which factor in which term is contrast-coded and which gets full dummy coding follows
#     R's model.matrix rule (TermCode; "Statistical Models in S", p. 38), including the
#     no-intercept rule (the first factor of the first term with a factor gets all levels),
#     so `0 + f`, `f - 1`, `f:g`, `g + f:g`, `x + f:x` give R's columns.
#   * term order: R's terms.formula (by degree, stable); variable order inside a term: first
#     appearance in the formula; column order inside an interaction: first factor fastest.
#   * column names: "(Intercept)", "age", "methodhplc", "age:sexM", "`my var`", "I(x^2)".

from formulaic import ModelSpec  # noqa: E402
from formulaic.formula import SimpleFormula  # noqa: E402
from formulaic.materializers.pandas import PandasMaterializer  # noqa: E402
from formulaic.materializers.types import FactorValues, ScopedFactor, ScopedTerm  # noqa: E402
from formulaic.parser.types import Factor, Term  # noqa: E402
from formulaic.transforms import TRANSFORMS, C, encode_contrasts  # noqa: E402
from formulaic.transforms.contrasts import PolyContrasts  # noqa: E402
from formulaic.transforms.poly import poly as _formulaic_poly  # noqa: E402
from formulaic.utils.stateful_transforms import stateful_transform  # noqa: E402
from formulaic.utils.cast import as_columns  # noqa: E402
from formulaic.utils.null_handling import drop_rows as _drop_nulls  # noqa: E402
from interface_meta import override  # noqa: E402

from .compensated import complete_state  # noqa: E402
from .errors import (  # noqa: E402
    ColumnNameError,
    DataTypeError,
    DesignError,
    EmptyDataError,
    FormulaError,
    FormulaSyntaxError,
    GroupingError,
    IdentifiabilityError,
    MissingColumnError,
    NonFiniteValueError,
    ResponseTypeError,
)
from .formula import (  # noqa: E402
    expression_names,
    parse_formula,
    r_term_order,
)
from .warnings import RankDeficiencyWarning  # noqa: E402

__all__ = [
    "RandomTerm",
    "Design",
    "DesignError",
    "build_design",
    "design_matrices_for_newdata",
    "contr_poly",
]


def _r_factor(x):
    """R's ``factor(x)`` inside a formula: levels sorted, labelled as R prints them."""
    codes, labels, _ = _factorize(pd.Series(getattr(x, "__wrapped__", x)))
    return C(_as_categorical(codes, labels, False))


def _r_ordered(x):
    """R's ``ordered(x)`` inside a formula: sorted levels, polynomial contrasts."""
    s = pd.Series(getattr(x, "__wrapped__", x))
    codes, labels, _ = _factorize(s)
    return C(_as_categorical(codes, labels, True), contrasts=_RPolyContrasts())


@stateful_transform
def _r_scale(data, center=True, scale=True, _state={}):  # noqa: B006 - stateful transform
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
def _r_center(data, _state={}):  # noqa: B006 - stateful transform
    return _r_scale(data, scale=False, _state=_state)


@stateful_transform
def _r_poly(x, degree=1, raw=False, _state={}):  # noqa: B006 - stateful transform
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


# Names available to formula expressions besides the data columns and formulaic's
# transforms (np, log, exp, log2, log10, I, C, scale, center, poly, ...): R's factor()
# and ordered(), and R's usual maths functions.
_CONTEXT: dict = {
    "scale": _r_scale,
    "center": _r_center,
    "poly": _r_poly,
    "factor": _r_factor,
    "ordered": _r_ordered,
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


# --------------------------------------------------------------------------------------
# contr.poly


def contr_poly(n: int, scores=None) -> np.ndarray:
    """R's ``contr.poly(n)``: orthonormal polynomial contrasts, shape (n, n - 1).

    Same construction as R's ``make.poly``: QR of the centred Vandermonde matrix, columns
    Q_j * R_jj (the Gram-Schmidt residuals, sign-definite), normalised to unit length; the
    constant column is dropped. Column j (0-based) is the degree-(j+1) polynomial; R names
    them ".L", ".Q", ".C", "^4", "^5", ...
    """
    n = int(n)
    if n < 2:
        raise ValueError(f"contrasts not defined for {n - 1} degrees of freedom")
    s = np.arange(1, n + 1, dtype=np.float64) if scores is None else np.asarray(scores, np.float64)
    if s.shape != (n,):
        raise ValueError("'scores' argument is of the wrong length")
    y = s - s.mean()
    vander = y[:, None] ** np.arange(n, dtype=np.float64)[None, :]
    q, r = np.linalg.qr(vander)
    raw = q * np.diag(r)[None, :]
    z = raw / np.sqrt((raw**2).sum(axis=0))[None, :]
    return np.ascontiguousarray(z[:, 1:])


def contr_poly_names(n: int) -> list:
    return [{1: ".L", 2: ".Q", 3: ".C"}.get(d, f"^{d}") for d in range(1, n)]


class _RPolyContrasts(PolyContrasts):
    """formulaic's PolyContrasts with R's exact contr.poly coding matrix."""

    @override
    def _get_coding_matrix(self, levels, reduced_rank=True, sparse=False):
        import scipy.sparse as spsparse

        n = len(levels)
        m = contr_poly(n) if reduced_rank else np.eye(n)
        return spsparse.csc_matrix(m) if sparse else m


# --------------------------------------------------------------------------------------
# R-style names

_R_RESERVED = {
    "if", "else", "repeat", "while", "function", "for", "next", "break", "TRUE", "FALSE",
    "NULL", "Inf", "NaN", "NA", "NA_integer_", "NA_real_", "NA_character_", "in",
}


def _r_syntactic(name: str) -> bool:
    import re

    if name in _R_RESERVED:
        return False
    return bool(re.fullmatch(r"(?:[A-Za-z]|\.(?![0-9]))[A-Za-z0-9._]*|\.", name))


def _r_var_name(expr: str, is_column: bool) -> str:
    """How R's model.matrix names a variable: `my var` backquoted, I(x^2) as R deparses."""
    if is_column:
        return expr if _r_syntactic(expr) else f"`{expr}`"
    return expr.replace(" ** ", "^")


# --------------------------------------------------------------------------------------
# The formulaic materializer with R's coding rules and names


class _RMaterializer(PandasMaterializer):
    """Pandas materializer that codes factors and names columns like R's model.matrix."""

    REGISTER_NAME = "bigmixed_r"
    REGISTER_INPUTS = ()  # never chosen automatically: only where bigmixed asks for it
    REGISTER_OUTPUTS = ("numpy",)

    @override
    def _get_scoped_terms(self, terms, ensure_full_rank=True):
        if self.params.get("evaluate_only"):
            # the model-frame pass: every factor in full, no contrasts, no checks
            for term in terms:
                evaled = [self.factor_cache[f.expr] for f in term.factors]
                yield term, [ScopedTerm(factors=[ScopedFactor(e) for e in evaled
                                                 if e.metadata.kind is not Factor.Kind.CONSTANT])]
            return
        terms = list(terms)
        has_intercept = any(
            all(f.eval_method.value == "literal" for f in t.factors) for t in terms
        )
        need_first_dummy = not has_intercept
        preceding: list = []
        for term in terms:
            evaled = [self.factor_cache[f.expr] for f in term.factors]
            evaled = [e for e in evaled if e.values.__wrapped__ is not None]
            scale = 1
            facs = []
            for e in evaled:
                if e.metadata.kind is Factor.Kind.CONSTANT:
                    scale *= e.values
                else:
                    facs.append(e)
            if not facs:
                yield term, [ScopedTerm(factors=(), scale=scale)]
                continue
            names = [e.expr for e in facs]
            scoped = []
            for e in facs:
                if e.metadata.kind is Factor.Kind.CATEGORICAL and e.metadata.spans_intercept:
                    # R's TermCode: contrasts iff the term without this factor is empty or
                    # is contained in a preceding term; otherwise full dummy coding.
                    rest = set(names) - {e.expr}
                    reduced = (not rest) or any(rest <= p for p in preceding)
                    if need_first_dummy:
                        reduced = False
                        need_first_dummy = False
                    if reduced:
                        _check_two_levels(e)
                    scoped.append(ScopedFactor(e, reduced=reduced))
                else:
                    scoped.append(ScopedFactor(e))
            preceding.append(set(names))
            yield term, [ScopedTerm(factors=scoped, scale=scale)]

    @override
    def _encode_categorical(
        self, values, metadata, encoder_state, spec, drop_rows, reduced_rank=False
    ):
        if drop_rows:
            values = _drop_nulls(values, indices=drop_rows)
        raw = values.__wrapped__ if isinstance(values, FactorValues) else values
        dtype = getattr(raw, "dtype", None)
        if isinstance(dtype, pd.CategoricalDtype) and dtype.ordered:
            enc = encode_contrasts(
                values,
                contrasts=_RPolyContrasts(),
                reduced_rank=reduced_rank,
                _metadata=metadata,
                _state=encoder_state,
                _spec=spec,
            )
            # no drop_field: the reduced coding is not "full coding minus a column", so
            # formulaic must cache the two codings separately.
            return as_columns(FactorValues(enc, drop_field=None))
        return as_columns(
            encode_contrasts(
                values, reduced_rank=False, _metadata=metadata, _state=encoder_state, _spec=spec
            )
        )

    @override
    def _flatten_encoded_evaled_factor(self, name, values):
        is_column = isinstance(name, str) and name in self.data.columns
        rname = _r_var_name(name, is_column)
        return self._flatten_r(rname, values)

    def _flatten_r(self, rname, values):
        if not isinstance(values, dict):
            return {rname: values}
        out = {}
        for sub, v in values.items():
            if isinstance(sub, str) and sub.startswith("__"):
                continue
            subname = f"{rname}{sub}"
            if isinstance(v, dict):
                out.update(self._flatten_r(subname, v))
            else:
                out[subname] = v
        return out

    # Memory: formulaic computes every column of the matrix (``scale * product of factor
    # values``, a fresh array each, even for a plain column) before `_combine_columns` copies
    # them into the matrix, so that at its peak an n x p model matrix takes twice its size.
    # Here the columns stay lazy (`_LazyColumn`: which factor values to multiply, in
    # formulaic's order; `_LazyConstant`: the intercept) until they are written into the
    # preallocated matrix: a product is computed and written one column at a time; a column
    # that is a factor's values as they are (a data column, a dummy column, log(x)) and the
    # intercept are copied in blocks of rows, without a temporary.

    @override
    def _encode_constant(self, value, metadata, encoder_state, spec, drop_rows):
        if metadata is None and spec.output == "numpy":
            # the intercept (and formulaic's filler for a missing column): `value` per row
            return _LazyConstant(value)
        return super()._encode_constant(value, metadata, encoder_state, spec, drop_rows)

    @override
    def _get_columns_for_term(self, factors, spec, scale=1):
        # formulaic's PandasMaterializer._get_columns_for_term (1.2), with lazy columns: the
        # same names, the same factors multiplied in the same order, hence the same values.
        if spec.output != "numpy":  # pragma: no cover - bigmixed always asks for numpy
            return super()._get_columns_for_term(factors, spec, scale)
        factors = list(factors)
        names = [
            ":".join(reversed(product)) for product in itertools.product(*reversed(factors))
        ]
        solo: dict = {}
        indices = []
        for i, factor in enumerate(factors):
            if len(factor) == 1:
                solo.update(factor)
                indices.append(i)
        if solo:
            for index in reversed(indices):
                factors.pop(index)
            factors.append({":".join(solo): _LazyProduct(list(solo.values()))})
        out = {}
        for i, reversed_product in enumerate(
            itertools.product(*(factor.items() for factor in reversed(factors)))
        ):
            out[names[i]] = _LazyColumn([p[1] for p in reversed(reversed_product)], scale)
        return out

    @override
    def _combine_columns(self, cols, spec, drop_rows):
        n = self.nrows - len(drop_rows)
        out = np.empty((n, len(cols)), dtype=np.float64)  # C order: one row = one obs
        as_is = []  # (column, values or scalar) copied below, a block of rows at a time
        for j, (_, v) in enumerate(cols):
            if isinstance(v, _LazyConstant):
                as_is.append((j, v.fill_value()))
            elif isinstance(v, _LazyColumn) and not v.is_plain():
                out[:, j] = _as_column(v.value(), n)  # a product: one temporary at a time
            else:
                as_is.append((j, _as_column(v.value() if isinstance(v, _LazyColumn) else v, n)))
        _fill_columns(out, as_is)
        return out


_FILL_ROWS = 1 << 14


def _fill_columns(out: np.ndarray, sources: list, rows=None) -> None:
    """out[:, j] = values (cast to float64) for each (j, values) of `sources`, a block of rows
    at a time (cache-friendly for a C-ordered `out`). `values` is a scalar, or an array of
    len(out) rows, or with `rows` an array indexed by `rows` (out[i, j] = values[rows[i]])."""
    if not sources:
        return
    n = out.shape[0]
    for start in range(0, n, _FILL_ROWS):
        stop = min(n, start + _FILL_ROWS)
        sel = slice(start, stop) if rows is None else rows[start:stop]
        block = out[start:stop]
        for j, v in sources:
            block[:, j] = v if np.ndim(v) == 0 else v[sel]


def _unwrap(v):
    return getattr(v, "__wrapped__", v)


def _as_column(v, n: int) -> np.ndarray:
    """Values for one column of n rows, as `out[:, j] = np.asarray(v, float64).reshape(-1)`
    would take them (no copy; the cast happens when they are written)."""
    a = np.asarray(_unwrap(v)).reshape(-1)
    if a.shape[0] != n:
        a = np.broadcast_to(a, (n,))  # raises numpy's error for a wrong length
    return a


def _is_unit_scale(scale) -> bool:
    s = _unwrap(scale)
    return isinstance(s, (int, float, np.integer, np.floating)) and not isinstance(
        s, (bool, np.bool_)) and s == 1


class _LazyProduct:
    """formulaic's premultiplied single-column factors of a term: reduce(np.multiply, values),
    computed on first use and kept for the term's other columns."""

    __slots__ = ("parts", "_value")
    __array_ufunc__ = None

    def __init__(self, parts):
        self.parts = parts
        self._value = None

    def is_plain(self) -> bool:
        return len(self.parts) == 1

    def value(self):
        if self._value is None:
            arrays = [np.asanyarray(_unwrap(p)) for p in self.parts]
            self._value = functools.reduce(np.multiply, arrays)
        return self._value


class _LazyColumn:
    """One model-matrix column, ``scale * reduce(np.multiply, parts)`` as formulaic computes
    it, evaluated only when written into the matrix."""

    __slots__ = ("parts", "scale")
    __array_ufunc__ = None  # numpy defers `scale * column` to __rmul__

    def __init__(self, parts, scale):
        self.parts = parts
        self.scale = scale

    def __rmul__(self, other):  # pragma: no cover - formulaic never rescales a term's columns
        return _LazyColumn(self.parts, other * self.scale)

    def is_plain(self) -> bool:
        """One factor's values as they are: no product, scale 1 (1 * v is v exactly)."""
        if len(self.parts) != 1 or not _is_unit_scale(self.scale):
            return False
        p = self.parts[0]
        return p.is_plain() if isinstance(p, _LazyProduct) else True

    def value(self):
        arrays = [p.value() if isinstance(p, _LazyProduct) else np.asarray(_unwrap(p))
                  for p in self.parts]
        v = functools.reduce(np.multiply, arrays)
        return v if _is_unit_scale(self.scale) else self.scale * v


class _LazyConstant:
    """formulaic's ``value * numpy.ones(nrows)`` (times a term's scale), written as a fill."""

    __slots__ = ("value", "scale")
    __array_ufunc__ = None

    def __init__(self, value, scale=1):
        self.value = value
        self.scale = scale

    def __rmul__(self, other):
        return _LazyConstant(self.value, other * self.scale)

    __mul__ = __rmul__

    def fill_value(self):
        """The same operations on one element, scale * (value * 1.0), as a float64 scalar."""
        one = self.value * np.ones(1)
        one = one if _is_unit_scale(self.scale) else _unwrap(self.scale * one)
        one = np.asarray(one, dtype=np.float64).reshape(-1)
        if one.shape != (1,):  # pragma: no cover - formulaic's scales are numbers
            raise ValueError(f"a constant column scaled by {self.scale!r}")
        return one[0]


def _check_two_levels(evaled) -> None:
    raw = evaled.values.__wrapped__
    dtype = getattr(raw, "dtype", None)
    if isinstance(dtype, pd.CategoricalDtype) and len(dtype.categories) < 2:
        lv = list(dtype.categories)
        raise DesignError(
            f"contrasts can be applied only to factors with 2 or more levels: {evaled.expr!r} "
            f"has the single level {lv!r} in the rows used"
        )


@dataclass
class _MatrixSpec:
    """A (sub)formula's model-matrix recipe: R term structure + fitted formulaic ModelSpec."""

    rhs: str
    intercept: bool
    n_terms: int
    model_spec: Any  # formulaic ModelSpec with structure, or None for "1" / empty
    names: list  # names of the columns `matrix` returns
    keep: Any = None  # indices of the columns kept (aliased fixed effects dropped); None: all
    all_names: Any = None  # with `keep`: the names of all columns before dropping

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        n = len(frame)
        if self.model_spec is None:
            out = np.ones((n, 1)) if self.intercept else np.empty((n, 0))
        else:
            try:
                mm = self.model_spec.get_model_matrix(frame, context=_CONTEXT)
            except DesignError:
                raise
            except Exception as e:
                raise DesignError(f"cannot evaluate {self.rhs!r} on new data: {e}") from e
            out = _as_c_float(getattr(mm, "__wrapped__", mm))
        if self.keep is not None:
            out = np.ascontiguousarray(out[:, self.keep])
        return out


def _as_c_float(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float64))


def model_spec_column_names(model_spec) -> list:
    """R's column names of a formulaic ModelSpec: "(Intercept)" for the intercept term."""
    names: list = []
    for st in model_spec.structure:
        if all(len(s.factors) == 0 for s in st.scoped_terms):
            names.extend("(Intercept)" for _ in st.columns)
        else:
            names.extend(str(c) for c in st.columns)
    return names


def _build_matrix(
    rhs: str, intercept: bool, terms: list, frame: pd.DataFrame, what: str, transform_state=None,
    *, columns=None, rows=None,
):
    """The model matrix of `terms` (+ intercept) on `frame` -> (C-ordered float64, _MatrixSpec).

    columns : dict name -> array of all rows, for numeric columns that enter `terms` only as a
        term of their own (see `_plain_columns`); `frame` then holds a stand-in for them and
        their column of the matrix is copied from the array's rows `rows` (all when None).
    """
    n = len(frame)
    if not terms:
        spec = _MatrixSpec(rhs, intercept, 0, None, ["(Intercept)"] if intercept else [])
        return spec.matrix(frame), spec
    fterms = [Term([Factor("1", eval_method="literal")])] if intercept else []
    fterms += [Term(list(facs)) for facs in terms]
    ms = ModelSpec(
        formula=SimpleFormula(fterms, _ordering="none"),
        materializer=_RMaterializer,
        output="numpy",
        na_action="ignore",
        transform_state=copy.deepcopy(transform_state or {}),
    )
    try:
        mm = ms.get_model_matrix(frame, context=_CONTEXT)
    except DesignError:
        raise
    except Exception as e:
        raise DesignError(f"cannot evaluate {what} {rhs!r}: {e}") from e
    fitted = mm.model_spec
    names = model_spec_column_names(fitted)
    X = _as_c_float(getattr(mm, "__wrapped__", mm))
    assert X.shape == (n, len(names)), (X.shape, names)
    if columns:
        fills, j = [], 0
        for st in fitted.structure:
            facs = st.term.factors
            if len(facs) == 1 and facs[0].eval_method.value == "lookup" and facs[0].expr in columns:
                assert len(st.columns) == 1, st.columns
                fills.append((j, columns[facs[0].expr]))
            j += len(st.columns)
        _fill_columns(X, fills, rows)
    return X, _MatrixSpec(rhs, intercept, len(terms), fitted, names)


def _plain_columns(terms) -> set:
    """Data columns that enter `terms` only as a term of their own (``x``; not ``x:f``,
    ``log(x)``): their model-matrix column is the data column itself."""
    alone, other = set(), set()
    for facs in terms:
        if len(facs) == 1 and facs[0].eval_method.value == "lookup":
            alone.add(facs[0].expr)
            continue
        for f in facs:
            if f.eval_method.value == "lookup":
                other.add(f.expr)
            elif f.eval_method.value == "python":
                other.update(expression_names(f.expr))
    return alone - other


# --------------------------------------------------------------------------------------
# Columns: classification, R level labels, vectorised factorisation


@dataclass
class _VarInfo:
    name: str
    kind: str  # "numeric" | "factor"
    levels: Any = None  # np.ndarray[object] of R labels, in level order (factor only)
    ordered: bool = False


def _classify(s: pd.Series, name: str) -> str:
    dt = s.dtype
    if isinstance(dt, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(dt):
        return "factor"
    if pd.api.types.is_complex_dtype(dt):
        raise DataTypeError(f"column {name!r} is complex ({dt}); bigmixed needs real numbers")
    if pd.api.types.is_numeric_dtype(dt):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(dt) or pd.api.types.is_timedelta64_dtype(dt):
        raise DataTypeError(
            f"column {name!r} has dtype {dt}; convert dates to numbers (or strings for a "
            "factor) before fitting"
        )
    if dt == object:
        inferred = pd.api.types.infer_dtype(s, skipna=True)
        if inferred in ("integer", "floating", "mixed-integer-float", "decimal"):
            return "numeric"
    return "factor"


def _numeric(s: pd.Series, name: str) -> np.ndarray:
    try:
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as e:
        raise DataTypeError(f"column {name!r} cannot be converted to numbers: {e}") from e


def _fmt_float(x: float) -> str:
    if np.isfinite(x) and x == np.round(x) and abs(x) < 1e15:
        return str(int(x))
    if np.isnan(x):
        return "NaN"
    if np.isinf(x):
        return "Inf" if x > 0 else "-Inf"
    return format(x, ".15g")


def _r_label_scalar(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "TRUE" if v else "FALSE"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return _fmt_float(float(v))
    return str(v)


def _r_labels(uniques) -> np.ndarray:
    """Level values -> R's labels (object array of str), vectorised for the common dtypes."""
    idx = pd.Index(uniques)
    dt = idx.dtype
    if len(idx) == 0:
        return np.empty(0, dtype=object)
    if pd.api.types.is_bool_dtype(dt):
        return np.where(idx.to_numpy(dtype=bool), "TRUE", "FALSE").astype(object)
    if pd.api.types.is_integer_dtype(dt):
        return idx.to_numpy(dtype=np.int64).astype(str).astype(object)
    if pd.api.types.is_float_dtype(dt):
        v = idx.to_numpy(dtype=np.float64)
        if np.all(np.isfinite(v)) and np.all(v == np.round(v)) and np.all(np.abs(v) < 1e15):
            return v.astype(np.int64).astype(str).astype(object)
        return np.array([_fmt_float(x) for x in v], dtype=object)
    vals = idx.to_numpy(dtype=object)
    if pd.api.types.infer_dtype(vals, skipna=False) == "string":
        return vals
    return np.array([_r_label_scalar(x) for x in vals], dtype=object)


def _factorize(s: pd.Series):
    """-> (codes intp with -1 for NA, labels object ndarray in level order, ordered).

    Level order: Categorical categories (unused dropped), else sorted unique values.
    Vectorised (pandas hashing + a sort of the unique values only).
    """
    dt = s.dtype
    if isinstance(dt, pd.CategoricalDtype):
        codes = np.asarray(s.cat.codes.to_numpy(), dtype=np.intp)
        cats = dt.categories
        valid = codes >= 0
        used = np.bincount(codes[valid], minlength=len(cats)) > 0
        if not used.all():
            remap = np.cumsum(used) - 1
            codes = np.where(valid, remap[codes], -1)
            cats = cats[used]
        labels = _r_labels(cats)
        ordered = bool(dt.ordered)
    elif _dense_int_range(s):
        # integers in a modest range: a counting pass instead of hashing (10x faster)
        v = s.to_numpy()
        lo = int(v.min())
        off = v - lo if lo != 0 else v
        present = np.bincount(off) > 0
        remap = np.cumsum(present) - 1
        codes = remap[off].astype(np.intp, copy=False)
        labels = _r_labels(np.flatnonzero(present) + lo)
        ordered = False
    else:
        try:
            codes, uniques = pd.factorize(s, sort=True, use_na_sentinel=True)
        except TypeError:  # mixed types that do not sort: compare as R's character
            s = s.map(_r_label_scalar, na_action="ignore")
            codes, uniques = pd.factorize(s, sort=True, use_na_sentinel=True)
        codes = np.asarray(codes, dtype=np.intp)
        labels = _r_labels(uniques)
        ordered = False
    # distinct values with the same label (1 and "1"; 0.1 and 0.1+1e-17) are one level in
    # R, where factor() matches on as.character(): merge them (first = lowest stays).
    if len(labels) and len(pd.unique(labels)) != len(labels):
        lab_codes, lab_uniques = pd.factorize(labels)
        codes = np.where(codes >= 0, lab_codes[codes], -1)
        labels = np.asarray(lab_uniques, dtype=object)
    return codes, labels, ordered


def _dense_int_range(s: pd.Series) -> bool:
    dt = s.dtype
    if not (isinstance(dt, np.dtype) and dt.kind in "iu") or len(s) == 0:
        return False
    v = s.to_numpy()
    lo, hi = int(v.min()), int(v.max())
    return hi - lo < max(4 * len(v), 1 << 20)


def _as_categorical(codes: np.ndarray, labels: np.ndarray, ordered: bool) -> pd.Categorical:
    return pd.Categorical.from_codes(codes, categories=pd.Index(labels, dtype=object), ordered=ordered)


def _code_dtype(n_levels: int):
    return np.int32 if n_levels < 2**31 else np.int64


# --------------------------------------------------------------------------------------
# Grouping factors


@dataclass
class _GroupSpec:
    """How a grouping expression maps labels to codes (for new data)."""

    group_vars: tuple
    var_levels: list  # per variable: pd.Index of its labels (training level order)
    step_keys: list  # per interaction step k >= 1: sorted unique int64 keys
    levels: np.ndarray  # final labels

    def codes_for(self, var_codes: list) -> np.ndarray:
        """var_codes: per variable, codes into var_levels (-1 = unseen/NA) -> group codes."""
        cur = np.asarray(var_codes[0], dtype=np.int64)
        for k in range(1, len(var_codes)):
            ck = np.asarray(var_codes[k], dtype=np.int64)
            bad = (cur < 0) | (ck < 0)
            keys = cur * len(self.var_levels[k]) + ck
            uk = self.step_keys[k - 1]
            pos = np.searchsorted(uk, keys)
            pos_c = np.minimum(pos, len(uk) - 1)
            hit = (~bad) & (uk[pos_c] == keys)
            cur = np.where(hit, pos_c, -1)
        return cur.astype(_code_dtype(len(self.levels)), copy=False)


def _join_labels(labels: list, codes: list) -> np.ndarray:
    """Level labels of an interaction: ":".join(labels[k][codes[k]]) element-wise.

    Vectorised over numpy object arrays; the ":" is appended to the (few) labels of each
    variable before they are gathered, so only one string concatenation per level and part.
    """
    last = len(labels) - 1
    out = None
    for k, (lab, c) in enumerate(zip(labels, codes)):
        lab = np.asarray(lab, dtype=object)
        if k < last:
            lab = lab + ":"
        piece = lab[c]
        out = piece if out is None else out + piece
    return np.asarray(out, dtype=object)


def _group_codes(group_vars: tuple, var_factors: dict):
    """var_factors[v] = (codes, labels) of the kept rows -> (codes, levels, _GroupSpec)."""
    codes0, labels0 = var_factors[group_vars[0]]
    if len(group_vars) == 1:
        levels = np.asarray(labels0, dtype=object)
        spec = _GroupSpec(
            group_vars=tuple(group_vars),
            var_levels=[pd.Index(levels, dtype=object)],
            step_keys=[],
            levels=levels,
        )
        return np.asarray(codes0).astype(_code_dtype(len(levels))), levels, spec
    cur = np.asarray(codes0, dtype=np.int64)
    step_keys = []
    for v in group_vars[1:]:
        ck, lk = var_factors[v]
        keys = cur * len(lk) + np.asarray(ck, dtype=np.int64)
        inv, uniq = pd.factorize(keys, sort=True)
        step_keys.append(np.asarray(uniq, dtype=np.int64))
        cur = np.asarray(inv, dtype=np.int64)
    if step_keys:
        # decode the final unique keys into per-variable level codes
        per_var = [None] * len(group_vars)
        idx = np.arange(len(step_keys[-1]), dtype=np.int64)
        for k in range(len(group_vars) - 1, 0, -1):
            nk = len(var_factors[group_vars[k]][1])
            key = step_keys[k - 1][idx]
            per_var[k] = key % nk
            idx = key // nk
        per_var[0] = idx
        levels = _join_labels([var_factors[v][1] for v in group_vars], per_var)
    else:
        levels = np.asarray(labels0, dtype=object)
    spec = _GroupSpec(
        group_vars=tuple(group_vars),
        var_levels=[pd.Index(var_factors[v][1], dtype=object) for v in group_vars],
        step_keys=step_keys,
        levels=levels,
    )
    return cur.astype(_code_dtype(len(levels))), levels, spec


# --------------------------------------------------------------------------------------
# Specs kept on the Design for new data


@dataclass
class FixedSpec:
    """Design.fixed_spec: re-encodes X on new data exactly as on the fitting data."""

    matrix: _MatrixSpec
    variables: dict  # covariate name -> _VarInfo (fixed part and random-term expressions)
    fixed_vars: list

    @property
    def model_spec(self):
        """formulaic's ModelSpec for X (None for an intercept-only or empty fixed part)."""
        return self.matrix.model_spec


@dataclass
class TermSpec:
    """Design.term_specs[k]: re-encodes the k-th random term's Z and group codes."""

    expr: str
    group: str
    group_vars: tuple
    matrix: _MatrixSpec
    covariates: list
    group_spec: _GroupSpec

    @property
    def model_spec(self):
        return self.matrix.model_spec

    @property
    def levels(self) -> np.ndarray:
        return self.group_spec.levels


# --------------------------------------------------------------------------------------
# Column bookkeeping


def _factor_columns(terms, data_columns, where: str) -> list:
    """Data columns read by the factors of `terms` (column lookups and names in expressions).

    A lookup that is not a column is reported later with the column's role; a name inside
    an expression that is neither a column nor a known function raises here.
    """
    columns = set(data_columns)
    out: list = []
    for facs in terms:
        for f in facs:
            if f.eval_method.value == "lookup":
                names = [f.expr]
            else:
                try:
                    names = expression_names(f.expr)
                except FormulaError as e:
                    raise type(e)(f"{where}: {e}") from e
                known = [n for n in names if n in TRANSFORMS or n in _CONTEXT or hasattr(builtins, n)]
                for n in names:
                    if n not in columns and n not in known:
                        raise _missing_column_error(n, f"in {f.expr!r}, {where}", data_columns)
                names = [n for n in names if n in columns]
            for n in names:
                if n not in out:
                    out.append(n)
    return out


def _evaluate_expressions(terms, data: pd.DataFrame, covariates: list, na: np.ndarray,
                          transform_state=None):
    """Evaluate the expression factors (log(x), scale(x), ...) on all rows.

    `transform_state`: the state of data-dependent transforms (scale(), poly(), ...) found
    beforehand (e.g. over all partitions of a Dask DataFrame); by default they find it here.
    Returns (rows where one evaluates to NaN, formulaic transform state).
    """
    factors = list(
        {f.expr: f for facs in terms for f in facs if f.eval_method.value != "lookup"}.values()
    )
    needed = {n for f in factors for n in expression_names(f.expr)}
    frame_cols = {v: _prep_covariate(data[v], v)[0] for v in covariates if v in needed}
    frame = pd.DataFrame(frame_cols, index=pd.RangeIndex(len(data)), copy=False)
    ms = ModelSpec(
        formula=SimpleFormula([Term([f]) for f in factors], _ordering="none"),
        materializer=_RMaterializer,
        materializer_params={"evaluate_only": True},
        output="numpy",
        na_action="ignore",
        transform_state=copy.deepcopy(transform_state or {}),
    )
    try:
        with np.errstate(invalid="ignore", divide="ignore"):
            mm = ms.get_model_matrix(frame, context=_CONTEXT)
    except DesignError:
        raise
    except Exception as e:
        exprs = ", ".join(f.expr for f in factors)
        raise DesignError(f"cannot evaluate {exprs}: {e}") from e
    values = np.asarray(getattr(mm, "__wrapped__", mm))
    bad = np.isnan(values).any(axis=1) & ~na
    if bad.any():
        culprits, j = [], 0
        for st in mm.model_spec.structure:
            k = len(st.columns)
            if (np.isnan(values[:, j : j + k]).any(axis=1) & ~na).any():
                culprits.append(str(st.term))
            j += k
        exprs = ", ".join(culprits)
        warnings.warn(
            f"{int(bad.sum())} row(s) where {exprs} evaluate to NaN are dropped (like R's "
            "na.omit after 'NaNs produced')",
            RuntimeWarning,
            stacklevel=3,
        )
    return bad, mm.model_spec.transform_state


def _has_expressions(terms) -> bool:
    return any(f.eval_method.value != "lookup" for facs in terms for f in facs)


def _missing_column_error(name: str, role: str, columns) -> MissingColumnError:
    cols = [str(c) for c in columns]
    close = difflib.get_close_matches(name, cols, n=3, cutoff=0.6)
    if not close:
        low = {c.lower(): c for c in cols}
        if name.lower() in low:
            close = [low[name.lower()]]
    if close:
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?"
    elif len(cols) <= 12:
        hint = f"; the data has the columns {', '.join(repr(c) for c in cols)}"
    else:
        hint = f"; the data has {len(cols)} columns, none with a similar name"
    return MissingColumnError(f"column {name!r} ({role}) is not in the data{hint}")


def _prep_covariate(s: pd.Series, name: str):
    """kept-row Series -> (values for formulaic, _VarInfo)."""
    kind = _classify(s, name)
    if kind == "numeric":
        return _numeric(s, name), _VarInfo(name, "numeric")
    codes, labels, ordered = _factorize(s)
    return _as_categorical(codes, labels, ordered), _VarInfo(name, "factor", labels, ordered)


def _covariate_for_newdata(s: pd.Series, info: _VarInfo):
    name = info.name
    if info.kind == "numeric":
        if _classify(s, name) != "numeric":
            raise DataTypeError(f"column {name!r} was numeric when fitting but is {s.dtype} in the new data")
        return _numeric(s, name)
    codes, labels, _ = _factorize(s)
    idx = pd.Index(info.levels, dtype=object)
    pos = idx.get_indexer(pd.Index(labels, dtype=object))
    if (pos < 0).any():
        new = [str(x) for x in np.asarray(labels, dtype=object)[pos < 0][:5]]
        raise DesignError(f"factor {name!r} has new levels {', '.join(new)} in the new data")
    # a missing value gets the first level here; the caller blanks those rows to NaN
    new_codes = np.where(codes >= 0, pos[np.maximum(codes, 0)], 0) if len(pos) else np.zeros_like(codes)
    return _as_categorical(new_codes, info.levels, info.ordered)


# --------------------------------------------------------------------------------------
# Input checks (all raised before any cross-product is computed)


def _fmt_values(values, limit: int = 5) -> str:
    values = list(values)
    shown = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in values[:limit])
    return shown + (", ..." if len(values) > limit else "")


def _check_column_names(data: pd.DataFrame) -> None:
    bad = [c for c in data.columns if not isinstance(c, str)]
    if bad:
        shown = ", ".join(f"{c!r} ({type(c).__name__})" for c in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise ColumnNameError(
            f"column names must be strings (a formula names its columns); the data has "
            f"{len(bad)} column(s) named otherwise: {shown}{more}. Rename them, e.g. "
            "df.columns = df.columns.map(str), or select the model's columns"
        )


def _check_duplicates(data: pd.DataFrame, used: list) -> None:
    counts = data.columns.value_counts()
    dup = [v for v in used if counts.get(v, 0) > 1]
    if dup:
        what = ", ".join(f"{v!r} ({int(counts[v])} times)" for v in dup)
        raise ColumnNameError(
            f"the data has several columns named {what}; the formula cannot tell which one "
            "to use. Rename or drop the duplicates, e.g. df.loc[:, ~df.columns.duplicated()]"
        )


def _check_response(s: pd.Series, response: str) -> None:
    dt = s.dtype
    if pd.api.types.is_complex_dtype(dt):
        raise ResponseTypeError(f"response column {response!r} must be real; it has dtype {dt}")
    if pd.api.types.is_numeric_dtype(dt) or pd.api.types.is_bool_dtype(dt):
        return
    if dt == object and _classify(s, response) == "numeric":
        return
    if isinstance(dt, pd.CategoricalDtype):
        what = f"a categorical with levels {_fmt_values(dt.categories)}"
    else:
        sample = pd.unique(s.dropna().head(1000))[:3]
        what = f"values such as {_fmt_values(sample)} (dtype {dt})"
    raise ResponseTypeError(
        f"response column {response!r} must be numeric, but it holds {what}; a linear mixed "
        "model needs a numeric response (numbers stored as text: convert with "
        f"pd.to_numeric(df[{response!r}]))"
    )


_MIXED = ("mixed", "mixed-integer")


def _check_group_column(s: pd.Series, name: str) -> None:
    """Grouping ids that mix value types (1 and "1"; 2 and "b") are almost always a data error."""
    if s.dtype != object:
        return
    if pd.api.types.infer_dtype(s, skipna=True) not in _MIXED:
        return
    vals = s.dropna()
    types = vals.map(lambda v: type(v).__name__)
    parts = []
    for tname, count in types.value_counts().items():
        examples = pd.unique(vals[types == tname].head(200))[:2]
        parts.append(f"{count} {tname} (e.g. {_fmt_values(examples)})")
    raise DataTypeError(
        f"grouping column {name!r} mixes value types: {'; '.join(parts)}. Group ids must "
        "all be of one type (R would read 1 and '1' as the same group); convert the column, "
        f"e.g. df[{name!r}] = df[{name!r}].astype(str)"
    )


def _check_finite(values: np.ndarray, what: str, row_labels) -> None:
    """Raise NonFiniteValueError if `values` (1-d or 2-d float) hold +-Inf (NaN too, for 2-d)."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return
    rows = bad if bad.ndim == 1 else bad.any(axis=1)
    idx = np.flatnonzero(rows)
    n_inf = int(np.isinf(values).sum())
    labels = _fmt_values(list(row_labels[idx[:5]]), 5) + (", ..." if len(idx) > 5 else "")
    kind = f"{n_inf} infinite value(s) (+-Inf)" if n_inf == int(bad.sum()) else \
        f"{int(bad.sum())} non-finite value(s) (of which {n_inf} +-Inf)"
    raise NonFiniteValueError(
        f"{what} has {kind} in the rows used (row labels {labels}). Missing values (NaN, "
        "None) are dropped but infinite ones are not: replace them with NaN or drop those rows"
    )


def _check_grouping(flist: dict, terms: list, n: int) -> None:
    """lme4's checkNlevels and checkZdims (lmerControl defaults: "stop")."""
    for name, n_levels, levels in flist.values():
        if n_levels < 2:
            lv = f" ({levels[0]!r})" if n_levels == 1 else ""
            raise GroupingError(
                f"grouping factor {name!r} has {n_levels} level{lv} in the {n} observation(s) "
                "used: a random effect needs at least 2 levels (lme4: grouping factors must "
                "have > 1 sampled level)"
            )
    bad = [(name, k) for name, k, _ in flist.values() if k >= n]
    if bad:
        detail = "; ".join(f"{name!r} has {k} levels" for name, k in bad)
        raise IdentifiabilityError(
            "number of levels of each grouping factor must be < number of observations "
            f"(problems: {', '.join(name for name, _ in bad)}): {detail} for {n} observations, "
            "so its random effects cannot be told apart from the residual error"
        )
    for t in terms:
        n_re = t.n_levels * t.n_columns
        if n_re >= n:
            raise IdentifiabilityError(
                f"number of observations (={n}) <= number of random effects (={n_re}) for "
                f"term ({t.expr} | {t.group}); the random-effects parameters and the residual "
                "variance (or scale parameter) are probably unidentifiable (the term has "
                f"{t.n_columns} column(s) x {t.n_levels} levels of {t.group!r})"
            )


# --------------------------------------------------------------------------------------
# Rank deficiency of X (lme4's chkRank.drop.cols)

_RANK_TOL = 1e-7  # lme4: chkRank.drop.cols(X, kind, tol = 1e-7)


def _dqrdc2_rank(a: np.ndarray, tol: float = _RANK_TOL):
    """R's LINPACK dqrdc2 (qr(x, tol, LAPACK = FALSE)): -> (rank, pivot).

    Householder QR with "limited column pivoting": a column whose norm, after projecting
    out the columns accepted before it, falls below `tol` times its original norm is moved
    to the right-hand edge; the others keep their order. pivot[:rank] are the columns R's
    lm() and lme4 keep. A re-implementation of the algorithm in R's src/appl/dqrdc2.f
    (including its norm downdating with re-computation when the norm drops a lot).
    """
    x = np.array(a, dtype=np.float64, order="F", copy=True)
    n, p = x.shape
    pivot = np.arange(p)
    qraux = np.sqrt(np.einsum("ij,ij->j", x, x)) if n > 0 else np.zeros(p)
    work1 = qraux.copy()
    work2 = np.where(qraux == 0.0, 1.0, qraux)
    k = p  # columns k..p-1 are the negligible ones moved to the end
    for l in range(min(n, p)):
        # cycle negligible columns to the end (l < k avoids infinite cycling)
        while l < k and qraux[l] < work2[l] * tol:
            order = np.r_[np.arange(l), np.arange(l + 1, p), l]
            x = np.asfortranarray(x[:, order])
            pivot, qraux, work1, work2 = pivot[order], qraux[order], work1[order], work2[order]
            k -= 1
        if l == n - 1:
            continue
        v = x[l:, l]
        nrmxl = float(np.sqrt(v @ v))
        if nrmxl == 0.0:
            continue
        if v[0] != 0.0:
            nrmxl = np.copysign(nrmxl, v[0])
        v /= nrmxl
        v[0] += 1.0
        if l + 1 < p:
            rest = x[l:, l + 1 :]
            t = -(v @ rest) / v[0]
            rest += np.outer(v, t)
            nz = qraux[l + 1 :] != 0.0
            with np.errstate(divide="ignore", invalid="ignore"):
                tt = np.maximum(1.0 - (np.abs(rest[0]) / qraux[l + 1 :]) ** 2, 0.0)
            for jj in np.flatnonzero(nz):
                j = l + 1 + jj
                if abs(tt[jj]) >= 1e-6:
                    qraux[j] *= np.sqrt(tt[jj])
                else:
                    qraux[j] = np.sqrt(x[l + 1 :, j] @ x[l + 1 :, j])
                    work1[j] = qraux[j]
        qraux[l] = v[0]
        x[l, l] = -nrmxl
    return min(k, n), pivot


def _small_equivalent(X: np.ndarray, chunk_rows: int = 16384) -> np.ndarray:
    """A small matrix M (at most max(p, small n) rows) with M'M = X'X, by a chunked QR.

    dqrdc2's decisions depend on the columns' norms and the norms of their projections
    onto the earlier columns only, i.e. on X'X: any M with M'M = X'X computed by orthogonal
    transformations gives the same pivots, while X is read once, a block of rows at a time.
    Each block (C-contiguous rows = a Fortran-ordered X^T) is reduced in place by LAPACK's
    RQ factorisation, X_b^T = R Q, so M_b = R^T; blocks are stacked under the running M.
    """
    from scipy.linalg import lapack

    n, p = X.shape
    chunk_rows = max(int(chunk_rows), 4 * p)
    if n <= chunk_rows:
        return X
    m = None
    for start in range(0, n, chunk_rows):
        block = X[start : start + chunk_rows]
        if m is not None:
            block = np.vstack([m, block])
        at = np.array(block.T, order="F", copy=True)  # p x rows, rows >= p
        rq, _, _, info = lapack.dgerqf(at, overwrite_a=1)
        if info != 0:  # pragma: no cover - LAPACK argument error
            raise RuntimeError(f"LAPACK dgerqf failed (info={info})")
        m = np.ascontiguousarray(np.triu(rq[:, rq.shape[1] - p :]).T)
    return m


def clearly_full_rank(xtx: np.ndarray, n_obs: int) -> bool:
    """True when X (given by X'X) is of full rank by a wide margin: the Cholesky factor of the
    scaled Gram matrix gives each column's norm after projecting out the earlier ones, relative
    to its own norm; if none is below 1e-3 (>> lme4's 1e-7 and >> the Gram's rounding), the
    pivoted QR would keep every column too."""
    p = xtx.shape[0]
    d = np.sqrt(np.diag(xtx))
    if not (np.all(d > 0) and np.all(np.isfinite(d)) and n_obs >= p):
        return False
    try:
        chol = np.linalg.cholesky(xtx / np.outer(d, d))
    except np.linalg.LinAlgError:
        return False
    return bool(np.all(np.diag(chol) > 1e-3))


def _aliased_columns(X: np.ndarray, tol: float = _RANK_TOL, xtx=None) -> np.ndarray:
    """Indices of the columns of X that lme4 keeps (in order); all of them if full rank.
    `xtx`: X'X if already computed."""
    n, p = X.shape
    if p == 0:
        return np.arange(0)
    if clearly_full_rank(X.T @ X if xtx is None else xtx, n):
        return np.arange(p)
    rank, pivot = _dqrdc2_rank(_small_equivalent(X), tol)
    return pivot[:rank]


def _user_stacklevel() -> int:
    """stacklevel for warnings.warn that points at the first frame outside bigmixed."""
    import os
    import sys

    pkg = os.path.dirname(os.path.abspath(__file__))
    level, frame = 1, sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(pkg):
        frame = frame.f_back
        level += 1
    return level


def _drop_aliased(X: np.ndarray, names: list, xtx=None):
    """lme4's check.rankX = "message+drop.cols" -> (X, kept names, dropped names, warning)."""
    keep = _aliased_columns(X, xtx=xtx)
    if len(keep) == X.shape[1]:
        return X, list(names), [], None, None
    dropped = [names[j] for j in range(X.shape[1]) if j not in set(keep.tolist())]
    n_drop = len(dropped)
    msg = (
        "fixed-effect model matrix is rank deficient so dropping "
        + (f"{n_drop} column / coefficient" if n_drop == 1 else f"{n_drop} columns / coefficients")
        + f": {', '.join(dropped)} (a linear combination of the columns before "
        + ("it" if n_drop == 1 else "them")
        + ")"
    )
    w = RankDeficiencyWarning(msg)
    warnings.warn(w, stacklevel=_user_stacklevel())
    X = np.ascontiguousarray(X[:, keep])
    return X, [names[j] for j in keep], dropped, keep, w


# --------------------------------------------------------------------------------------
# build_design


def build_design(formula: str, data: pd.DataFrame, *, lme4_checks: bool = True,
                 extra_columns: tuple = (), transform_state=None) -> Design:
    """Evaluate an lme4 formula on a DataFrame.

    Rows with a missing value in any column the model uses are dropped (lme4's na.omit);
    rows where a transformed variable evaluates to NaN (e.g. ``log(x)`` for x < 0) are
    dropped too, as R's model.frame does. Aliased fixed-effects columns are dropped with a
    RankDeficiencyWarning (lme4's default ``check.rankX = "message+drop.cols"``).

    Raises (see bigmixed.errors) a FormulaError for a malformed formula and a DesignError
    when the data do not fit it -- missing or duplicated columns, a non-numeric response,
    no rows, infinite values, a grouping factor with one level, or lme4's identifiability
    checks (levels or random effects >= observations) -- all before any cross-product.

    lme4_checks=False skips what lme4 checks on the *model* rather than the input (grouping
    factors with < 2 levels, levels or random effects >= observations, aliased columns):
    the formula is then only evaluated, like R's model.matrix (used by unit tests).

    extra_columns : sequence of (column, role) pairs, e.g. (("visit", "residual AR(1) time"),)
        Further columns the model uses outside the formula: a missing one raises the same
        error naming its role, rows with a missing value in it are dropped like the others,
        and its kept rows are returned in ``Design.extra``.
    transform_state : dict, optional
        The state of the data-dependent transforms (scale(), center(), poly()) as formulaic
        keeps it (``{"scale(x)": {"center": ..., "scale": ...}, ...}``), found beforehand on
        other data (bigmixed.distributed: over all partitions); by default it is found on
        `data`, as R's model.frame does.
    """
    if not isinstance(data, pd.DataFrame):
        raise DataTypeError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    parsed = parse_formula(formula)
    _check_column_names(data)
    if len(data) == 0:
        raise EmptyDataError(
            f"the data frame has no rows (columns: {_fmt_values(list(data.columns), 8)})"
            if len(data.columns) else "the data frame is empty (no rows, no columns)"
        )
    columns = set(data.columns)

    fixed_intercept, fixed_terms = r_term_order(parsed.fixed)
    fixed_vars = _factor_columns(fixed_terms, data.columns, "fixed effects")
    rterm_struct = {}
    rand_vars: list = []
    for t in parsed.terms:
        if t.expr not in rterm_struct:
            icpt, trms = r_term_order(t.expr, f"left-hand side of random-effects term {t}")
            if not icpt and not trms:
                raise FormulaSyntaxError(
                    f"random-effects term {t} has no columns (nothing but '0' or '-1' on the "
                    "left of '|')"
                )
            rterm_struct[t.expr] = (icpt, trms, _factor_columns(trms, data.columns, f"random-effects term {t}"))
        for v in rterm_struct[t.expr][2]:
            if v not in rand_vars:
                rand_vars.append(v)
    covariates = list(dict.fromkeys(fixed_vars + rand_vars))
    group_vars = parsed.grouping_columns
    response = parsed.response

    roles = [(response, "response")]
    roles += [(v, "fixed effects") for v in fixed_vars]
    roles += [(v, "random-effects term") for v in rand_vars]
    roles += [(v, "grouping factor") for v in group_vars]
    roles += [(v, role) for v, role in extra_columns]
    used = list(dict.fromkeys(v for v, _ in roles))
    for v, role in roles:
        if v not in columns:
            raise _missing_column_error(v, role, data.columns)
    _check_duplicates(data, used)
    _check_response(data[response], response)
    for v in group_vars:
        _check_group_column(data[v], v)

    n_all = len(data)
    na = np.zeros(n_all, dtype=bool)
    for v in used:
        na |= np.asarray(data[v].isna().to_numpy(), dtype=bool)
    # R's model.frame: evaluate the variables (log(x), scale(x), poly(x, 2), ...) on all
    # rows, *then* drop rows with a missing value in any of them (na.omit). Data-dependent
    # transforms therefore see the rows that na.omit removes later, exactly as in R; their
    # state is reused below and for new data.
    all_terms = list(fixed_terms) + [t for v in rterm_struct.values() for t in v[1]]
    transform_state = dict(transform_state or {})
    if _has_expressions(all_terms):
        bad, transform_state = _evaluate_expressions(all_terms, data, covariates, na,
                                                     transform_state)
        na |= bad
    keep = ~na
    n_keep = int(keep.sum())
    if n_keep == 0:
        counts = [(v, int(data[v].isna().sum())) for v in used]
        detail = ", ".join(f"{v!r}: {c}" for v, c in counts if c)
        raise EmptyDataError(
            f"no rows left: every one of the {n_all} rows has a missing value in at least one "
            f"of the columns the model uses ({', '.join(repr(v) for v in used)}); missing "
            f"values per column: {detail or 'none (transformations evaluate to NaN)'}"
        )
    rows = None if n_keep == n_all else np.flatnonzero(keep)
    row_index = data.index if rows is None else data.index[rows]

    def col(v):
        s = data[v]
        return s if rows is None else s.iloc[rows]

    y = _numeric(col(response), response)
    _check_finite(y, f"response column {response!r}", row_index)
    frame_cols: dict = {}
    var_info: dict = {}
    # Numeric data columns that are a term of their own (the usual `y ~ age + bmi + ...`) are
    # not copied: formulaic sees a stand-in, and their kept rows are copied from the data
    # straight into X and Z (`_build_matrix(columns=...)`).
    plain = _plain_columns(all_terms)
    plain_values: dict = {}
    for v in covariates:
        s = data[v]
        if v in plain and isinstance(s.dtype, np.dtype) and s.dtype.kind in "fiu":
            values = s.to_numpy()
            if values.dtype.kind == "f":
                bad = ~np.isfinite(values)
                if rows is not None:
                    bad &= keep
                if bad.any():
                    _check_finite(values if rows is None else values[rows], f"column {v!r}",
                                  row_index)
            plain_values[v] = values
            frame_cols[v] = np.broadcast_to(np.float64(np.nan), n_keep)
            var_info[v] = _VarInfo(v, "numeric")
            continue
        values, info = _prep_covariate(col(v), v)
        if info.kind == "numeric":
            _check_finite(np.asarray(values, dtype=np.float64), f"column {v!r}", row_index)
        frame_cols[v] = values
        var_info[v] = info
    frame = pd.DataFrame(frame_cols, index=pd.RangeIndex(n_keep), copy=False)

    var_factors = {v: _factorize(col(v))[:2] for v in group_vars}  # (codes, labels)
    group_cache: dict = {}
    for t in parsed.terms:
        if t.group_vars not in group_cache:
            group_cache[t.group_vars] = _group_codes(t.group_vars, var_factors)
    del var_factors  # the per-variable codes (intp): only the group codes are kept

    with np.errstate(divide="ignore", invalid="ignore"):  # +-Inf is reported just below
        X, fixed_mspec = _build_matrix(
            parsed.fixed, fixed_intercept, fixed_terms, frame, "fixed effects", transform_state,
            columns=plain_values, rows=rows,
        )
    # a column holding NaN or +-Inf has a non-finite sum of squares (an overflow too: each
    # such column is then checked exactly); X'X is reused by the rank check below
    xtx = X.T @ X
    for j in np.flatnonzero(~np.isfinite(np.diag(xtx))):
        _check_finite(X[:, j], f"fixed-effects column {fixed_mspec.names[j]!r}", row_index)
    zs: dict = {}
    for expr, (icpt, trms, _) in rterm_struct.items():
        if icpt and not trms:  # (1 | g): a column of ones, not stored
            zs[expr] = (np.broadcast_to(np.float64(1.0), (n_keep, 1)),
                        _MatrixSpec(expr, True, 0, None, ["(Intercept)"]))
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            zs[expr] = _build_matrix(
                expr, icpt, trms, frame, "random-effects expression", transform_state,
                columns=plain_values, rows=rows,
            )
        Z, zspec = zs[expr]
        for j in np.flatnonzero(~np.isfinite(np.diag(Z.T @ Z))):
            _check_finite(Z[:, j], f"column {zspec.names[j]!r} of random-effects term "
                          f"({expr} | ...)", row_index)

    terms: list = []
    term_specs: list = []
    for t in parsed.terms:
        codes, levels, gspec = group_cache[t.group_vars]
        Z, mspec = zs[t.expr]
        terms.append(
            RandomTerm(
                expr=t.expr,
                group=t.group,
                column_names=list(mspec.names),
                levels=levels,
                codes=codes,
                Z=Z,
                group_vars=t.group_vars,
                correlated=t.correlated,
            )
        )
        term_specs.append(
            TermSpec(
                expr=t.expr,
                group=t.group,
                group_vars=t.group_vars,
                matrix=mspec,
                covariates=rterm_struct[t.expr][2],
                group_spec=gspec,
            )
        )
    flist = {}
    for t in terms:
        if t.group_vars not in flist:
            flist[t.group_vars] = (t.group, t.n_levels, t.levels)
    design_warnings: list = []
    fixed_names, dropped, w = list(fixed_mspec.names), [], None
    if lme4_checks:
        _check_grouping(flist, terms, n_keep)
        X, fixed_names, dropped, kept_cols, w = _drop_aliased(X, fixed_names, xtx)
    if w is not None:
        design_warnings.append(w)
        fixed_mspec.all_names = list(fixed_mspec.names)
        fixed_mspec.names = list(fixed_names)
        fixed_mspec.keep = kept_cols

    return Design(
        formula=formula,
        response=response,
        y=np.ascontiguousarray(y, dtype=np.float64),
        X=X,
        fixed_names=fixed_names,
        terms=terms,
        n_dropped=n_all - n_keep,
        row_index=row_index,
        fixed_spec=FixedSpec(matrix=fixed_mspec, variables=var_info, fixed_vars=fixed_vars),
        term_specs=term_specs,
        parsed=parsed,
        dropped_fixed=dropped,
        warnings=design_warnings,
        extra={v: col(v).reset_index(drop=True) for v, _ in extra_columns},
    )


def design_matrices_for_newdata(design: Design, newdata: pd.DataFrame):
    """Re-encode new data the way `design` was built.

    Returns (X_new, [(codes_new, Z_new) for each random term]). X_new, Z_new are float64
    C-contiguous; codes_new are the fitted levels' codes with -1 for a level (or level
    combination) not seen when fitting, or a missing grouping value. The response is not
    needed. Rows with a missing covariate get NaN rows in X_new and Z_new (R's na.pass).
    A factor covariate with a level not seen when fitting raises DesignError, as in R.
    """
    if not isinstance(newdata, pd.DataFrame):
        raise DataTypeError(f"newdata must be a pandas DataFrame, got {type(newdata).__name__}")
    fs: FixedSpec = design.fixed_spec
    n = len(newdata)
    columns = set(newdata.columns)
    group_vars = list(dict.fromkeys(v for ts in design.term_specs for v in ts.group_vars))
    for v in list(fs.variables) + group_vars:
        if v not in columns:
            raise _missing_column_error(v, "needed for prediction", newdata.columns)

    na = np.zeros(n, dtype=bool)
    frame_cols = {}
    for v, info in fs.variables.items():
        s = newdata[v]
        na |= np.asarray(s.isna().to_numpy(), dtype=bool)
        frame_cols[v] = _covariate_for_newdata(s, info)
    frame = pd.DataFrame(frame_cols, index=pd.RangeIndex(n), copy=False)

    X_new = fs.matrix.matrix(frame)
    if na.any():
        X_new[na] = np.nan

    var_codes: dict = {}
    z_cache: dict = {}
    out = []
    for ts in design.term_specs:
        gs = ts.group_spec
        per_var = []
        for v, lv in zip(gs.group_vars, gs.var_levels):
            if v not in var_codes:
                codes, labels, _ = _factorize(newdata[v])
                pos = lv.get_indexer(pd.Index(labels, dtype=object))
                var_codes[v] = np.where(codes >= 0, pos[np.maximum(codes, 0)], -1) if len(pos) else codes
            per_var.append(var_codes[v])
        codes_new = gs.codes_for(per_var)
        if ts.expr not in z_cache:
            Z = ts.matrix.matrix(frame)
            if na.any():
                Z[na] = np.nan
            z_cache[ts.expr] = Z
        out.append((codes_new, z_cache[ts.expr]))
    return X_new, out
