"""What a GLMM takes besides the formula: a two-column response ``cbind(successes, failures)``,
offsets (``offset(...)`` terms in the formula and/or ``offset=``) and prior weights
(``weights=``), turned into columns of the data that `build_design` treats like any other
(rows with a missing value in any of them are dropped, na.omit), checked, with errors naming
the column or expression at fault.
"""
from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import (
    DataTypeError,
    FormulaSyntaxError,
    NonFiniteValueError,
    WeightsError,
)
from .checks import missing_column_error
from .formula import split_top_level

# names of the derived columns (made unique against the data's own)
RESPONSE = "__bigmixed_glm_response__"
WEIGHTS = "__bigmixed_prior_weights__"
OFFSET = "__bigmixed_offset__"

# what an offset or cbind() expression may call (R's names)
_FUNCTIONS = {
    "log": np.log, "exp": np.exp, "sqrt": np.sqrt, "abs": np.abs, "log2": np.log2,
    "log10": np.log10, "log1p": np.log1p, "expm1": np.expm1, "I": lambda x: x,
    "as_numeric": lambda x: x, "pi": math.pi,
}


@dataclass
class GLMInputs:
    """The formula and frame `build_design` sees, and what the GLMM needs besides.

    formula : the formula with ``cbind(...)`` replaced by one derived response column and the
        ``offset(...)`` terms removed.
    data : the data with the derived columns added (a shallow copy; the user's frame is not
        changed).
    extra_columns : (column, role) pairs for build_design (prior weights, offset).
    response_label : the response as the user wrote it (``cbind(incidence, size - incidence)``).
    trials : derived from cbind (the prior weights are the numbers of trials), else False.
    offset_terms : the offset expressions of the formula, in order.
    """

    formula: str
    data: pd.DataFrame
    extra_columns: list = field(default_factory=list)
    response_label: str = ""
    trials: bool = False
    offset_terms: list = field(default_factory=list)
    has_weights: bool = False
    has_offset: bool = False


def _unique(name: str, columns) -> str:
    while name in columns:
        name += "_"
    return name


def evaluate(expr: str, data: pd.DataFrame, role: str) -> np.ndarray:
    """A numeric expression of columns (``size - incidence``, ``log(exposure)``) on every row:
    float64 with NaN for missing values. Names the column or the expression at fault."""
    from formulaic.utils.code import sanitize_variable_names

    aliases: dict = {}
    try:
        code = sanitize_variable_names(expr.strip(), {}, aliases)
        tree = ast.parse(code, mode="eval")
    except SyntaxError as e:
        raise FormulaSyntaxError(f"cannot parse the {role} {expr!r}: {e.msg}") from e
    namespace = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in namespace:
            name = aliases.get(node.id, node.id)
            if name in data.columns:
                namespace[node.id] = _numeric(data[name], name, role)
            elif name in _FUNCTIONS:
                namespace[node.id] = _FUNCTIONS[name]
            else:
                raise missing_column_error(name, role, data.columns)
    with np.errstate(all="ignore"):
        value = eval(compile(tree, "<expression>", "eval"), {"__builtins__": {}}, namespace)  # noqa: S307
    value = np.asarray(value, dtype=np.float64)
    return np.broadcast_to(value, (len(data),)).copy() if value.ndim == 0 else value


def _numeric(s: pd.Series, name: str, role: str) -> np.ndarray:
    if pd.api.types.is_bool_dtype(s.dtype) or (pd.api.types.is_numeric_dtype(s.dtype)
                                               and not pd.api.types.is_complex_dtype(s.dtype)):
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    raise DataTypeError(f"column {name!r} ({role}) must be numeric, got dtype {s.dtype}")


def _is_two_level(s: pd.Series) -> bool:
    """A categorical, string or object column (a factor in R) rather than numbers/booleans."""
    return (isinstance(s.dtype, pd.CategoricalDtype) or pd.api.types.is_object_dtype(s.dtype)
            or pd.api.types.is_string_dtype(s.dtype))


def _two_level_indicator(s: pd.Series, name: str) -> np.ndarray:
    """0 for the first level (R's factor order), 1 for the others, NaN where missing."""
    from .encoding import factorize

    codes, labels, _ = factorize(s)
    if len(labels) < 2:
        from ..errors import ResponseSupportError

        raise ResponseSupportError(f"response column {name!r} is a factor with "
                                   f"{len(labels)} level(s); a binomial response needs two")
    out = (codes > 0).astype(np.float64)
    out[codes < 0] = np.nan
    return out


def _check_finite(values: np.ndarray, what: str, index) -> None:
    bad = np.isinf(values)
    if bad.any():
        rows = ", ".join(str(x) for x in index[np.flatnonzero(bad)[:5]])
        raise NonFiniteValueError(f"{what} has {int(bad.sum())} infinite value(s) (+-Inf) "
                                  f"(row labels {rows}); replace them with NaN or drop those rows")


def _vector(value, data: pd.DataFrame, role: str, what: str) -> np.ndarray:
    """weights= / offset= given as a column name, an expression of columns, or values."""
    if isinstance(value, str):
        return evaluate(value, data, role)
    arr = np.asarray(value.to_numpy() if isinstance(value, pd.Series) else value)
    if arr.dtype.kind not in "biuf":
        raise DataTypeError(f"{what} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64).reshape(-1)
    if arr.shape != (len(data),):
        raise DataTypeError(f"{what} must have one value per row of the data ({len(data)}), "
                            f"got {arr.shape[0]}")
    return arr


_CBIND = re.compile(r"^\s*cbind\s*\((.*)\)\s*$", re.S)
_OFFSET = re.compile(r"^\s*offset\s*\((.*)\)\s*$", re.S)


def _what(value, arg: str) -> str:
    """How an error names weights= / offset=: with the column or expression when given one."""
    return f"{arg} ({value!r})" if isinstance(value, str) else arg


def split_offsets(rhs: str):
    """The right-hand side's terms -> (terms kept, expressions of the offset() terms of the
    fixed part), with "1" kept when only offsets were there."""
    kept, offsets = [], []
    for t in split_top_level(rhs, "+"):
        m = _OFFSET.match(t)
        if m:
            offsets.append(m.group(1).strip())
        else:
            kept.append(t)
    if offsets and not kept:
        kept = ["1"]
    return kept, offsets


def offset_values(offsets, offset, frame: pd.DataFrame):
    """The total offset on every row of `frame` (offset() expressions, then offset=), or None;
    +-Inf raises NonFiniteValueError naming the term or column."""
    total = None
    for expr in offsets:
        v = evaluate(expr, frame, f"offset term offset({expr})")
        _check_finite(v, f"offset term offset({expr})", frame.index)
        total = v if total is None else total + v
    if offset is not None:
        v = _vector(offset, frame, "offset", _what(offset, "offset="))
        _check_finite(v, _what(offset, "offset="), frame.index)
        total = v if total is None else total + v
    return total


def weight_values_of(weights, frame: pd.DataFrame) -> np.ndarray:
    """weights= on every row of `frame`: +-Inf raises NonFiniteValueError, zero or negative
    values WeightsError, naming the column or expression (NaN: a missing value, dropped)."""
    what = _what(weights, "weights=")
    w = _vector(weights, frame, "prior weights", what)
    _check_finite(w, what, frame.index)
    bad = w <= 0
    if bad.any():
        rows = ", ".join(str(x) for x in frame.index[np.flatnonzero(bad)[:5]])
        raise WeightsError(f"{what} must be positive, but {int(bad.sum())} value(s) are "
                           f"zero or negative (row labels {rows}); drop those rows instead")
    return w


def prepare(formula: str, data: pd.DataFrame, *, weights=None, offset=None) -> GLMInputs:
    """Turn cbind(), offset() and weights= into derived columns (see the module docstring)."""
    if not isinstance(formula, str) or "~" not in formula:
        return GLMInputs(formula, data)  # parse_formula names the problem
    lhs, rhs = formula.split("~", 1)
    frame = data.copy(deep=False)
    out = GLMInputs(formula, frame, response_label=lhs.strip())
    weight_values = None
    m = _CBIND.match(lhs)
    lhs_name = lhs.strip().strip("`")
    if not m and lhs_name in frame.columns and _is_two_level(frame[lhs_name]):
        # a factor response: the first level is failure, the others success (as glm/glmer)
        name = _unique(RESPONSE, frame.columns)
        frame[name] = _two_level_indicator(frame[lhs_name], lhs_name)
        lhs = f"{name} "
    elif not m and lhs_name not in frame.columns:
        # an expression such as incidence/size: evaluated here, as R's model.frame does
        name = _unique(RESPONSE, frame.columns)
        frame[name] = evaluate(lhs, frame, "response")
        lhs = f"{name} "
    if m:
        parts = split_top_level(m.group(1), ",")
        if len(parts) != 2:
            raise FormulaSyntaxError(
                f"cbind() in the response takes two arguments (successes, failures), got "
                f"{len(parts)} in {lhs.strip()!r}")
        succ = evaluate(parts[0], frame, "successes of cbind()")
        fail = evaluate(parts[1], frame, "failures of cbind()")
        for vals, expr in ((succ, parts[0]), (fail, parts[1])):
            _check_finite(vals, f"cbind() argument {expr.strip()!r}", frame.index)
            neg = vals < 0
            if neg.any():
                from ..errors import ResponseSupportError

                raise ResponseSupportError(
                    f"cbind() argument {expr.strip()!r} must be non-negative counts, but it has "
                    f"{int(neg.sum())} negative value(s), e.g. {vals[neg][0]:g}")
        trials = succ + fail
        with np.errstate(invalid="ignore", divide="ignore"):
            y = np.where(trials > 0, succ / np.where(trials > 0, trials, 1.0), 0.0)
        y[np.isnan(trials)] = np.nan
        name = _unique(RESPONSE, frame.columns)
        frame[name] = y
        lhs = f"{name} "
        out.trials = True
        weight_values = trials
    kept, offsets = split_offsets(rhs)
    out.offset_terms = offsets
    total = offset_values(offsets, offset, frame)
    if total is not None:
        name = _unique(OFFSET, frame.columns)
        frame[name] = total
        out.extra_columns.append((name, "offset"))
        out.has_offset = True
    if weights is not None:
        w = weight_values_of(weights, frame)
        weight_values = w if weight_values is None else weight_values * w
    if weight_values is not None:
        name = _unique(WEIGHTS, frame.columns)
        frame[name] = weight_values
        out.extra_columns.append((name, "prior weights"))
        out.has_weights = True
    out.formula = f"{lhs}~ {' + '.join(kept)}"
    return out


# ======================================================================================
# Prior weights and offsets of a linear mixed model (bm.lmm(weights=, offset=))
# ======================================================================================


@dataclass(frozen=True)
class PriorSpec:
    """The prior weights and offset of an LMM, as given: what a fit keeps (`Design.prior`),
    saves and needs to re-create the offset on new data.

    weights : the column or expression of weights=, None when not given or given as values
    weights_values : weights= was given as values (an array)
    offset_terms : the expressions of the formula's offset() terms, in order
    offset : the column or expression of offset=, None when not given or given as values
    offset_values : offset= was given as values (an array: predict(newdata) cannot re-create it)
    weights_column, offset_column : the derived columns in `Design.extra`
    design_formula : the formula `build_design` evaluated (without the offset() terms)
    """

    weights: str | None = None
    weights_values: bool = False
    offset_terms: tuple = ()
    offset: str | None = None
    offset_values: bool = False
    weights_column: str | None = None
    offset_column: str | None = None
    design_formula: str = ""

    @property
    def has_weights(self) -> bool:
        return self.weights is not None or self.weights_values

    @property
    def has_offset(self) -> bool:
        return bool(self.offset_terms) or self.offset is not None or self.offset_values

    def describe(self) -> dict:
        """{"weights": ..., "offset": ...} as text for summaries (None when absent)."""
        off = [f"offset({t})" for t in self.offset_terms]
        if self.offset is not None or self.offset_values:
            off.append(self.offset if self.offset is not None else "<values>")
        return {"weights": self.weights if self.weights is not None
                else ("<values>" if self.weights_values else None),
                "offset": " + ".join(off) if off else None}

    def offset_for(self, newdata: pd.DataFrame) -> np.ndarray | None:
        """The offset on the rows of new data (NaN where a column it uses is missing), or None
        without one. An offset= given as values cannot be re-created: a ValueError says so."""
        if not self.has_offset:
            return None
        if self.offset_values:
            raise ValueError(
                "this model's offset= was given as values, which new data cannot re-create: "
                "fit with offset='<column>' (or an offset(<column>) term) to predict on new data")
        return offset_values(list(self.offset_terms), self.offset, newdata)

    def to_meta(self) -> dict:
        return {"weights": self.weights, "weights_values": bool(self.weights_values),
                "offset_terms": list(self.offset_terms), "offset": self.offset,
                "offset_values": bool(self.offset_values), "weights_column": self.weights_column,
                "offset_column": self.offset_column, "design_formula": self.design_formula}

    @classmethod
    def from_meta(cls, meta):
        if not meta:
            return None
        return cls(weights=meta.get("weights"), weights_values=bool(meta.get("weights_values")),
                   offset_terms=tuple(meta.get("offset_terms") or ()), offset=meta.get("offset"),
                   offset_values=bool(meta.get("offset_values")),
                   weights_column=meta.get("weights_column"),
                   offset_column=meta.get("offset_column"),
                   design_formula=meta.get("design_formula") or "")


def has_prior(formula, weights=None, offset=None) -> bool:
    """Whether an LMM has prior weights or an offset (weights=, offset= or offset() terms)."""
    if weights is not None or offset is not None:
        return True
    if not isinstance(formula, str) or "~" not in formula or "offset" not in formula:
        return False
    return bool(split_offsets(formula.split("~", 1)[1])[1])


def lmm_inputs(formula: str, data: pd.DataFrame, *, weights=None, offset=None):
    """An LMM's weights=, offset= and offset() terms -> (formula without the offset() terms,
    the data with the derived columns added (a shallow copy), the (column, role) pairs for
    build_design's extra_columns, the PriorSpec). The response is left to build_design (it
    may be a transformed one, log(y) ~ ...). Bad values raise typed errors naming the column
    or expression: non-finite offsets or weights NonFiniteValueError, weights <= 0
    WeightsError (missing values are dropped rows, na.omit)."""
    lhs, rhs = formula.split("~", 1)
    frame = data.copy(deep=False)
    kept, offsets = split_offsets(rhs)
    extra = []
    total = offset_values(offsets, offset, frame)
    offset_column = weights_column = None
    if total is not None:
        offset_column = _unique(OFFSET, frame.columns)
        frame[offset_column] = total
        extra.append((offset_column, "offset"))
    if weights is not None:
        w = weight_values_of(weights, frame)
        weights_column = _unique(WEIGHTS, frame.columns)
        frame[weights_column] = w
        extra.append((weights_column, "prior weights"))
    stripped = f"{lhs.rstrip()} ~ {' + '.join(t.strip() for t in kept)}" if offsets else formula
    spec = PriorSpec(
        weights=weights if isinstance(weights, str) else None,
        weights_values=weights is not None and not isinstance(weights, str),
        offset_terms=tuple(offsets), offset=offset if isinstance(offset, str) else None,
        offset_values=offset is not None and not isinstance(offset, str),
        weights_column=weights_column, offset_column=offset_column, design_formula=stripped)
    return stripped, frame, extra, spec


def prior_arrays(design):
    """(prior weights, offset) of a design's rows as C-contiguous float64 arrays, each None when
    absent (or when the design holds no rows, e.g. one from Dask data)."""
    prior = getattr(design, "prior", None)
    if prior is None:
        return None, None
    out = []
    for col in (prior.weights_column, prior.offset_column):
        if col is None or col not in design.extra:
            out.append(None)
        else:
            out.append(np.ascontiguousarray(design.extra[col].to_numpy(dtype=np.float64)))
    return out[0], out[1]
