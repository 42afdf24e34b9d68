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
    # offset() terms of the fixed part (not inside random-effects terms)
    terms = split_top_level(rhs, "+")
    kept, offsets = [], []
    for t in terms:
        m = _OFFSET.match(t)
        if m:
            offsets.append(m.group(1).strip())
        else:
            kept.append(t)
    if offsets and not kept:
        kept = ["1"]
    out.offset_terms = offsets
    total = None
    for expr in offsets:
        v = evaluate(expr, frame, f"offset term offset({expr})")
        _check_finite(v, f"offset term offset({expr})", frame.index)
        total = v if total is None else total + v
    if offset is not None:
        v = _vector(offset, frame, "offset", "offset=")
        _check_finite(v, "offset=", frame.index)
        total = v if total is None else total + v
    if total is not None:
        name = _unique(OFFSET, frame.columns)
        frame[name] = total
        out.extra_columns.append((name, "offset"))
        out.has_offset = True
    if weights is not None:
        w = _vector(weights, frame, "prior weights", "weights=")
        _check_finite(w, "weights=", frame.index)
        bad = w <= 0
        if bad.any():
            rows = ", ".join(str(x) for x in frame.index[np.flatnonzero(bad)[:5]])
            raise WeightsError(f"weights= must be positive, but {int(bad.sum())} value(s) are "
                               f"zero or negative (row labels {rows}); drop those rows instead")
        weight_values = w if weight_values is None else weight_values * w
    if weight_values is not None:
        name = _unique(WEIGHTS, frame.columns)
        frame[name] = weight_values
        out.extra_columns.append((name, "prior weights"))
        out.has_weights = True
    out.formula = f"{lhs}~ {' + '.join(kept)}"
    return out
