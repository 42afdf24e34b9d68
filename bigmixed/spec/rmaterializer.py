"""formulaic's pandas materializer with R's model.matrix rules: R's contrasts and column
names, and columns written lazily into one preallocated float64 matrix.

Imported on first use by `bigmixed.spec.materialize` (formulaic and what it loads cost ~0.25 s
at start-up; a formula of plain numeric columns needs none of it).
"""
from __future__ import annotations

import functools
import itertools

import numpy as np
import pandas as pd
from formulaic.materializers.pandas import PandasMaterializer  # noqa: E402
from formulaic.materializers.types import FactorValues, ScopedFactor, ScopedTerm  # noqa: E402
from formulaic.parser.types import Factor  # noqa: E402
from formulaic.transforms import encode_contrasts  # noqa: E402
from formulaic.utils.cast import as_columns  # noqa: E402
from formulaic.utils.null_handling import drop_rows as _drop_nulls  # noqa: E402
from interface_meta import override  # noqa: E402

from ..errors import DesignError
from .deparse import r_var_name
from .fill import as_column, fill_columns, is_unit_scale, unwrap
from .transforms import RPolyContrasts

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
                out[:, j] = as_column(v.value(), n)  # a product: one temporary at a time
            else:
                as_is.append((j, as_column(v.value() if isinstance(v, _LazyColumn) else v, n)))
        fill_columns(out, as_is)
        return out


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
            arrays = [np.asanyarray(unwrap(p)) for p in self.parts]
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
        if len(self.parts) != 1 or not is_unit_scale(self.scale):
            return False
        p = self.parts[0]
        return p.is_plain() if isinstance(p, _LazyProduct) else True

    def value(self):
        arrays = [p.value() if isinstance(p, _LazyProduct) else np.asarray(unwrap(p))
                  for p in self.parts]
        v = functools.reduce(np.multiply, arrays)
        return v if is_unit_scale(self.scale) else self.scale * v


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
        one = one if is_unit_scale(self.scale) else unwrap(self.scale * one)
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
