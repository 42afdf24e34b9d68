"""Evaluating the formula's expressions on the data: which columns each term reads, and the
rows where a transformation (log(x), scale(x), poly(x, 2), ...) gives NaN, as R's model.frame."""
from __future__ import annotations

import builtins
import copy
import warnings
import numpy as np
import pandas as pd
from formulaic import ModelSpec  # noqa: E402
from formulaic.formula import SimpleFormula  # noqa: E402
from formulaic.parser.types import Term  # noqa: E402
from formulaic.transforms import TRANSFORMS  # noqa: E402
from ..errors import (
    DesignError,
    FormulaError,
)
from .formula import expression_names
from .transforms import FORMULA_CONTEXT
from .materialize import RMaterializer
from .checks import missing_column_error
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
                known = [n for n in names if n in TRANSFORMS or n in FORMULA_CONTEXT or hasattr(builtins, n)]
                for n in names:
                    if n not in columns and n not in known:
                        raise missing_column_error(n, f"in {f.expr!r}, {where}", data_columns)
                names = [n for n in names if n in columns]
            for n in names:
                if n not in out:
                    out.append(n)
    return out


def evaluate_expressions(terms, data: pd.DataFrame, covariates: list, na: np.ndarray,
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


def has_expressions(terms) -> bool:
    return any(f.eval_method.value != "lookup" for facs in terms for f in facs)
