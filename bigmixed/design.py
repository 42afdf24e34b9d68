"""Design: a model formula evaluated on a data frame.

formula -> **design** -> cross-products -> factor -> objective -> optimizer -> results.

`build_design(formula, data)` turns an lme4-style formula and a pandas DataFrame into the
arrays the engine needs: the response, the dense fixed-effects matrix X, and one
`RandomTerm` per random-effects term (after expanding `/` and `||`), each holding integer
group codes and the term's own small dense model matrix. Z itself is never formed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


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
    """

    expr: str
    group: str
    column_names: list
    levels: np.ndarray
    codes: np.ndarray
    Z: np.ndarray

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

    @property
    def n_obs(self) -> int:
        return self.y.shape[0]
