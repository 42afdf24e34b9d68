"""Evaluating the formula's expressions on the data: which columns each term reads, and the
rows where a transformation (log(x), scale(x), poly(x, 2), ...) gives NaN, as R's model.frame."""
from __future__ import annotations

import builtins
import copy
import warnings
import numpy as np
import pandas as pd
from ..errors import (
    DesignError,
    FormulaError,
    MissingColumnError,
)
from .deparse import r_deparse
from .formula import expression_names
from .checks import missing_column_error, user_stacklevel
from .encoding import prepare_covariate


def factor_columns(terms, data_columns, where: str) -> list:
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
                known = [n for n in names if n in _formula_functions() or hasattr(builtins, n)]
                for n in names:
                    if n not in columns and n not in known:
                        raise missing_column_error(n, f"in {f.expr!r}, {where}", data_columns)
                names = [n for n in names if n in columns]
            for n in names:
                if n not in out:
                    out.append(n)
    return out


def _formula_functions():
    """The names an expression may call besides builtins: formulaic's transforms and the
    evaluation context's (loaded on first use: only a formula with expressions needs them)."""
    from formulaic.transforms import TRANSFORMS

    from .transforms import FORMULA_CONTEXT

    return set(TRANSFORMS) | set(FORMULA_CONTEXT)


def evaluate_expressions(terms, data: pd.DataFrame, covariates: list, na: np.ndarray,
                          transform_state=None):
    """Evaluate the expression factors (log(x), scale(x), ...) on all rows.

    `transform_state`: the state of data-dependent transforms (scale(), poly(), ...) found
    beforehand (e.g. over all partitions of a Dask DataFrame); by default they find it here.
    Returns (rows where one evaluates to NaN, formulaic transform state).
    """
    from formulaic import ModelSpec
    from formulaic.formula import SimpleFormula
    from formulaic.parser.types import Term

    from .rmaterializer import RMaterializer
    from .transforms import FORMULA_CONTEXT

    factors = list(
        {f.expr: f for facs in terms for f in facs if f.eval_method.value != "lookup"}.values()
    )
    needed = {n for f in factors for n in expression_names(f.expr)}
    frame_cols = {v: prepare_covariate(data[v], v)[0] for v in covariates if v in needed}
    frame = pd.DataFrame(frame_cols, index=pd.RangeIndex(len(data)), copy=False)
    ms = ModelSpec(
        formula=SimpleFormula([Term([f]) for f in factors], _ordering="none"),
        materializer=RMaterializer,
        materializer_params={"evaluate_only": True},
        output="numpy",
        na_action="ignore",
        transform_state=copy.deepcopy(transform_state or {}),
    )
    try:
        with np.errstate(invalid="ignore", divide="ignore"):
            mm = ms.get_model_matrix(frame, context=FORMULA_CONTEXT)
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
                culprits.append(r_deparse(str(st.term)))
            j += k
        warn_nan_rows(int(bad.sum()), ", ".join(culprits))
    return bad, mm.model_spec.transform_state


def has_expressions(terms) -> bool:
    return any(f.eval_method.value != "lookup" for facs in terms for f in facs)


def response_columns(parsed, data_columns) -> list:
    """The data columns the response reads: itself, or those its expression names."""
    if parsed.response_expr is None:
        return [parsed.response]
    from formulaic.parser.types import Factor

    factor = Factor(parsed.response_expr, eval_method="python")
    columns = factor_columns([[factor]], data_columns, f"response {parsed.response!r}")
    if not columns:
        raise MissingColumnError(
            f"the response {parsed.response!r} reads no column of the data (R: 'variable "
            "lengths differ'); the response must be a column or an expression of columns")
    return columns


def evaluate_response(parsed, data: pd.DataFrame, columns: list) -> np.ndarray:
    """The response expression (``log(y)``, ``I(y / 100)``, ...) on all rows, float64, as
    R's model.frame evaluates it before na.omit: NaN where it is undefined (log of a negative
    number) or an input is missing; +-Inf is left for the caller to refuse.

    Raises ResponseTypeError when the expression does not give one number per row (a factor,
    several columns).
    """
    from formulaic import ModelSpec
    from formulaic.formula import SimpleFormula
    from formulaic.parser.types import Factor, Term

    from ..errors import ResponseTypeError
    from .encoding import numeric_column
    from .rmaterializer import RMaterializer
    from .transforms import FORMULA_CONTEXT

    name = parsed.response
    frame = pd.DataFrame({v: numeric_column(data[v], v) for v in columns},
                         index=pd.RangeIndex(len(data)), copy=False)
    ms = ModelSpec(
        formula=SimpleFormula([Term([Factor(parsed.response_expr, eval_method="python")])],
                              _ordering="none"),
        materializer=RMaterializer,
        materializer_params={"evaluate_only": True},
        output="numpy",
        na_action="ignore",
    )
    try:
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            mm = ms.get_model_matrix(frame, context=FORMULA_CONTEXT)
    except DesignError:
        raise
    except Exception as e:
        raise DesignError(f"cannot evaluate the response {name!r}: {e}") from e
    kinds = {kind.value for kind, _ in (mm.model_spec.encoder_state or {}).values()}
    values = np.asarray(getattr(mm, "__wrapped__", mm))
    if values.ndim != 2 or values.shape[1] != 1 or "categorical" in kinds:
        raise ResponseTypeError(
            f"the response {name!r} must evaluate to one number per row, but it gives "
            f"{'a factor' if 'categorical' in kinds else f'{values.shape[-1]} columns'}; a "
            "linear mixed model needs a numeric response")
    return np.ascontiguousarray(values[:, 0], dtype=np.float64)


def warn_nan_rows(n_rows: int, exprs: str) -> None:
    """R's 'NaNs produced' and na.omit: the rows where an expression is NaN are dropped."""
    warnings.warn(
        f"{n_rows} row(s) where {exprs} evaluate to NaN are dropped (like R's na.omit after "
        "'NaNs produced')",
        RuntimeWarning,
        stacklevel=user_stacklevel(),
    )
