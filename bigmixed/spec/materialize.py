"""Model matrices as R's model.matrix builds them: plain numeric columns written (or read in
place) directly, everything else through formulaic (`bigmixed.spec.rmaterializer`, imported on
first use) with R's contrasts and column names."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any
import numpy as np
import pandas as pd
from ..errors import (
    DesignError,
)
from .formula import expression_names
from .deparse import r_var_name
from .fill import fill_columns


def __getattr__(name):
    # formulaic's materializer is loaded on first use; saved models and other modules name it
    # here (bigmixed.spec.materialize.RMaterializer)
    if name == "RMaterializer":
        from .rmaterializer import RMaterializer

        return RMaterializer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
            from . import rmaterializer  # noqa: F401 - registers the materializer the spec names
            from .transforms import FORMULA_CONTEXT

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
    from formulaic import ModelSpec
    from formulaic.formula import SimpleFormula
    from formulaic.parser.types import Factor, Term

    from .rmaterializer import RMaterializer
    from .transforms import FORMULA_CONTEXT

    fterms = [Term([Factor("1", eval_method="literal")])] if intercept else []
    fterms += [Term([as_formulaic_factor(f) for f in facs]) for facs in terms]
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
        fill_columns(X, fills, rows)
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
    fill_columns(X, fills, rows)
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


def as_formulaic_factor(f):
    """formulaic's Factor for a term's factor (bigmixed.spec.formula's light parse gives
    objects with formulaic's `expr` and `eval_method` but not its class)."""
    from formulaic.parser.types import Factor

    if isinstance(f, Factor):
        return f
    return Factor(f.expr, eval_method=f.eval_method.value)
