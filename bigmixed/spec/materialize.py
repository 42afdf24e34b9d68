"""Model matrices as R's model.matrix builds them, through formulaic: R's contrasts and
column names, and columns written lazily into one preallocated float64 matrix."""
from __future__ import annotations

import copy
import functools
import itertools
from dataclasses import dataclass
from typing import Any
import numpy as np
import pandas as pd
from formulaic import ModelSpec  # noqa: E402
from formulaic.formula import SimpleFormula  # noqa: E402
from formulaic.materializers.pandas import PandasMaterializer  # noqa: E402
from formulaic.materializers.types import FactorValues, ScopedFactor, ScopedTerm  # noqa: E402
from formulaic.parser.types import Factor, Term  # noqa: E402
from formulaic.transforms import encode_contrasts  # noqa: E402
from formulaic.utils.cast import as_columns  # noqa: E402
from formulaic.utils.null_handling import drop_rows as _drop_nulls  # noqa: E402
from interface_meta import override  # noqa: E402
from ..errors import (
    DesignError,
)
from .formula import expression_names
from .deparse import r_var_name
from .transforms import FORMULA_CONTEXT
from .rlabels import RPolyContrasts



# --------------------------------------------------------------------------------------
# The formulaic materializer with R's coding rules and names


class RMaterializer(PandasMaterializer):
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
                contrasts=RPolyContrasts(),
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
        rname = r_var_name(name, is_column)
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
    n_threads = _fill_threads(n * len(sources))
    if n_threads == 1:
        _fill_rows(out, sources, rows, 0, n)
        return
    # large: row ranges on threads (NumPy's copies release the GIL). Most of a fresh matrix's
    # cost is the kernel mapping its pages on first touch, which runs in parallel this way
    # (10.5M x 7: 0.2-0.45 s against 1.4-1.6 s in one thread); a pure copy, so the same bits
    per = -(-n // n_threads)
    per = -(-per // _FILL_ROWS) * _FILL_ROWS
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(n_threads) as pool:
        list(pool.map(lambda c: _fill_rows(out, sources, rows, c * per, min(n, (c + 1) * per)),
                      range(n_threads)))


_FILL_PARALLEL_MIN = 1 << 22  # values to write (rows x columns) from which threads pay


def _fill_threads(n_values: int) -> int:
    if n_values < _FILL_PARALLEL_MIN:
        return 1
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def _fill_rows(out, sources, rows, lo: int, hi: int) -> None:
    for start in range(lo, hi, _FILL_ROWS):
        stop = min(hi, start + _FILL_ROWS)
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
class MatrixSpec:
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
                mm = self.model_spec.get_model_matrix(frame, context=FORMULA_CONTEXT)
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


def build_matrix(
    rhs: str, intercept: bool, terms: list, frame: pd.DataFrame, what: str, transform_state=None,
    *, columns=None, rows=None, in_place: bool = False,
):
    """The model matrix of `terms` (+ intercept) on `frame` -> (C-ordered float64, MatrixSpec).

    columns : dict name -> array of all rows, for numeric columns that enter `terms` only as a
        term of their own (see `plain_columns`); `frame` then holds a stand-in for them and
        their column of the matrix is copied from the array's rows `rows` (all when None).
    in_place : when every term is such a column, return the matrix as a `ColumnMatrix` of the
        columns themselves at the rows `rows` (nothing copied) instead of an array.
    """
    n = len(frame)
    if not terms:
        spec = MatrixSpec(rhs, intercept, 0, None, ["(Intercept)"] if intercept else [])
        return spec.matrix(frame), spec
    if columns and all(_is_plain_term(facs, columns) for facs in terms):
        return _plain_matrix(rhs, intercept, terms, n, what, transform_state, columns, rows,
                             in_place)
    fterms = [Term([Factor("1", eval_method="literal")])] if intercept else []
    fterms += [Term(list(facs)) for facs in terms]
    ms = ModelSpec(
        formula=SimpleFormula(fterms, _ordering="none"),
        materializer=RMaterializer,
        output="numpy",
        na_action="ignore",
        transform_state=copy.deepcopy(transform_state or {}),
    )
    try:
        mm = ms.get_model_matrix(frame, context=FORMULA_CONTEXT)
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
    return X, MatrixSpec(rhs, intercept, len(terms), fitted, names)


def _is_plain_term(facs, columns) -> bool:
    return len(facs) == 1 and facs[0].eval_method.value == "lookup" and facs[0].expr in columns


def _plain_matrix(rhs, intercept, terms, n, what, transform_state, columns, rows, in_place):
    """`build_matrix` when every term is a plain numeric data column: the intercept and the
    columns' kept rows written straight into the matrix, in the terms' order, with R's names.
    formulaic would write the same values (a copy of each column, 1.0 for the intercept) after
    a pass of its own over stand-ins; its ModelSpec, which `predict` and saving need, is made
    on first use (`_DeferredModelSpec`). `in_place`: a ColumnMatrix of the columns at the
    rows `rows` (float64 as they are; other dtypes cast to a float64 copy of their own)."""
    names = (["(Intercept)"] if intercept else []) + [r_var_name(f[0].expr, True) for f in terms]
    deferred = _DeferredModelSpec(rhs, intercept, terms, what, transform_state)
    spec = MatrixSpec(rhs, intercept, len(terms), deferred, names)
    if in_place:
        from .columns import ColumnMatrix

        cols = [None] if intercept else []
        cols += [np.ascontiguousarray(columns[facs[0].expr], dtype=np.float64) for facs in terms]
        return ColumnMatrix(cols, n, rows=rows), spec
    X = np.empty((n, len(names)), dtype=np.float64)
    fills = [(0, np.float64(1.0))] if intercept else []
    fills += [(len(fills) + j, columns[facs[0].expr]) for j, facs in enumerate(terms)]
    _fill_columns(X, fills, rows)
    return X, spec


class _DeferredModelSpec:
    """The formulaic ModelSpec of a matrix of plain numeric columns, fitted on first use.

    formulaic keeps no state for a numeric column, so the spec it fits on a one-row stand-in
    frame is the one it would fit on the data. Attribute access is forwarded to that spec."""

    __slots__ = ("_args", "_spec")

    def __init__(self, rhs, intercept, terms, what, transform_state):
        self._args = (rhs, intercept, terms, what, copy.deepcopy(transform_state or {}))
        self._spec = None

    def resolve(self):
        if self._spec is None:
            rhs, intercept, terms, what, state = self._args
            stub = pd.DataFrame({facs[0].expr: np.full(1, np.nan) for facs in terms})
            _, spec = build_matrix(rhs, intercept, terms, stub, what, state)
            self._spec = spec.model_spec
        return self._spec

    def __getattr__(self, name):
        if name.startswith("__") or name in ("_args", "_spec"):
            raise AttributeError(name)
        return getattr(self.resolve(), name)

    def __getstate__(self):
        return {"_args": self._args, "_spec": None}

    def __setstate__(self, state):
        self._args, self._spec = state["_args"], state["_spec"]


def plain_columns(terms) -> set:
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
