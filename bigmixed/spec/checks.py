"""Checks of the input before any work: column names, types, missing and infinite
values, grouping factors, and lme4's identifiability checks; each raises a typed error
naming the column or term at fault (bigmixed.errors)."""
from __future__ import annotations

import difflib
import numpy as np
import pandas as pd
from ..errors import (
    ColumnNameError,
    DataTypeError,
    GroupingError,
    IdentifiabilityError,
    MissingColumnError,
    NonFiniteValueError,
    ResponseTypeError,
)
from .encoding import classify_column

def missing_column_error(name: str, role: str, columns) -> MissingColumnError:
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


# --------------------------------------------------------------------------------------
# Input checks (all raised before any cross-product is computed)


def format_values(values, limit: int = 5) -> str:
    values = list(values)
    shown = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in values[:limit])
    return shown + (", ..." if len(values) > limit else "")


def check_column_names(data: pd.DataFrame) -> None:
    bad = [c for c in data.columns if not isinstance(c, str)]
    if bad:
        shown = ", ".join(f"{c!r} ({type(c).__name__})" for c in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise ColumnNameError(
            f"column names must be strings (a formula names its columns); the data has "
            f"{len(bad)} column(s) named otherwise: {shown}{more}. Rename them, e.g. "
            "df.columns = df.columns.map(str), or select the model's columns"
        )


def check_duplicates(data: pd.DataFrame, used: list) -> None:
    if data.columns.is_unique:
        return
    counts = data.columns.value_counts()
    dup = [v for v in used if counts.get(v, 0) > 1]
    if dup:
        what = ", ".join(f"{v!r} ({int(counts[v])} times)" for v in dup)
        raise ColumnNameError(
            f"the data has several columns named {what}; the formula cannot tell which one "
            "to use. Rename or drop the duplicates, e.g. df.loc[:, ~df.columns.duplicated()]"
        )


def check_response(s: pd.Series, response: str) -> None:
    dt = s.dtype
    if pd.api.types.is_complex_dtype(dt):
        raise ResponseTypeError(f"response column {response!r} must be real; it has dtype {dt}")
    if pd.api.types.is_numeric_dtype(dt) or pd.api.types.is_bool_dtype(dt):
        return
    if dt == object and classify_column(s, response) == "numeric":
        return
    if isinstance(dt, pd.CategoricalDtype):
        what = f"a categorical with levels {format_values(dt.categories)}"
    else:
        sample = pd.unique(s.dropna().head(1000))[:3]
        what = f"values such as {format_values(sample)} (dtype {dt})"
    raise ResponseTypeError(
        f"response column {response!r} must be numeric, but it holds {what}; a linear mixed "
        "model needs a numeric response (numbers stored as text: convert with "
        f"pd.to_numeric(df[{response!r}]))"
    )


_MIXED = ("mixed", "mixed-integer")


def check_group_column(s: pd.Series, name: str) -> None:
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
        parts.append(f"{count} {tname} (e.g. {format_values(examples)})")
    raise DataTypeError(
        f"grouping column {name!r} mixes value types: {'; '.join(parts)}. Group ids must "
        "all be of one type (R would read 1 and '1' as the same group); convert the column, "
        f"e.g. df[{name!r}] = df[{name!r}].astype(str)"
    )


def check_finite(values: np.ndarray, what: str, row_labels) -> None:
    """Raise NonFiniteValueError if `values` (1-d or 2-d float) hold +-Inf (NaN too, for 2-d)."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return
    rows = bad if bad.ndim == 1 else bad.any(axis=1)
    idx = np.flatnonzero(rows)
    n_inf = int(np.isinf(values).sum())
    labels = format_values(list(row_labels[idx[:5]]), 5) + (", ..." if len(idx) > 5 else "")
    kind = f"{n_inf} infinite value(s) (+-Inf)" if n_inf == int(bad.sum()) else \
        f"{int(bad.sum())} non-finite value(s) (of which {n_inf} +-Inf)"
    raise NonFiniteValueError(
        f"{what} has {kind} in the rows used (row labels {labels}). Missing values (NaN, "
        "None) are dropped but infinite ones are not: replace them with NaN or drop those rows"
    )


def check_grouping(flist: dict, terms: list, n: int, allow_n: bool = False) -> None:
    """lme4's checkNlevels and checkZdims (lmerControl defaults: "stop"). allow_n: as many
    levels (random effects) as observations is allowed, as glmer does for families without a
    scale parameter (an observation-level random effect of a Poisson model)."""
    for name, n_levels, levels in flist.values():
        if n_levels < 2:
            lv = f" ({levels[0]!r})" if n_levels == 1 else ""
            raise GroupingError(
                f"grouping factor {name!r} has {n_levels} level{lv} in the {n} observation(s) "
                "used: a random effect needs at least 2 levels (lme4: grouping factors must "
                "have > 1 sampled level)"
            )
    bad = [(name, k) for name, k, _ in flist.values() if k > n or (k == n and not allow_n)]
    if bad:
        detail = "; ".join(f"{name!r} has {k} levels" for name, k in bad)
        raise IdentifiabilityError(
            "number of levels of each grouping factor must be < number of observations "
            f"(problems: {', '.join(name for name, _ in bad)}): {detail} for {n} observations, "
            "so its random effects cannot be told apart from the residual error"
        )
    for t in terms:
        n_re = t.n_levels * t.n_columns
        if n_re > n or (n_re == n and not allow_n):
            raise IdentifiabilityError(
                f"number of observations (={n}) <= number of random effects (={n_re}) for "
                f"term ({t.expr} | {t.group}); the random-effects parameters and the residual "
                "variance (or scale parameter) are probably unidentifiable (the term has "
                f"{t.n_columns} column(s) x {t.n_levels} levels of {t.group!r})"
            )


def user_stacklevel() -> int:
    """stacklevel for warnings.warn that points at the first frame outside bigmixed."""
    import os
    import sys

    # the package's root (bigmixed/, not this subpackage): fit() and its wrappers are inside
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    level, frame = 1, sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(pkg):
        frame = frame.f_back
        level += 1
    return level


# --------------------------------------------------------------------------------------
# The response's values (linear mixed models): constant or overflowing


def check_response_values(y: np.ndarray, response: str) -> None:
    """A constant response (all zero too) has residual variance 0 and no likelihood; one
    whose sum of squares overflows cannot be fitted in double precision. lme4 returns a
    degenerate fit for both (sigma = 0 with a meaningless theta; sigma = Inf); bigmixed says
    so instead (DegenerateResponseError naming the response). Finite values are assumed."""
    from ..errors import DegenerateResponseError

    n = len(y)
    if n == 0:
        return
    lo, hi = float(np.min(y)), float(np.max(y))
    if lo == hi:
        what = "all zero" if lo == 0 else f"constant (every value is {lo:g})"
        raise DegenerateResponseError(
            f"response {response!r} is {what} in the {n} observation(s) used: its residual "
            "variance is 0, so a linear mixed model has no likelihood to maximize (lme4 "
            "returns sigma = 0 with a meaningless theta); check the response column")
    with np.errstate(over="ignore"):
        big = max(abs(lo), abs(hi))
        ss = float(np.dot(y, y)) if big > 1e100 else 0.0
    if not np.isfinite(ss):
        raise DegenerateResponseError(
            f"response {response!r} has values of magnitude up to {big:.3g}: its sum of "
            "squares overflows double precision (lme4 returns sigma = Inf); rescale it, e.g. "
            f"I({response} / {10 ** round(np.log10(big)):.0e})")


# --------------------------------------------------------------------------------------
# Options of bm.lmm, bm.glmm and bm.fit_many (typed errors naming the option and value)


def option_error(where: str, name: str, value, expected: str):
    from ..errors import OptionError

    return OptionError(f"{where}: option {name}={value!r} ({type(value).__name__}) is not "
                       f"valid; {name} must be {expected}")


def check_bool(where: str, name: str, value) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise option_error(where, name, value, "True or False")


def check_choice(where: str, name: str, value, choices) -> None:
    if not isinstance(value, str) or value not in choices:
        raise option_error(where, name, value,
                           "one of " + ", ".join(repr(c) for c in choices))


def check_int(where: str, name: str, value, lo=None, hi=None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if ok and ((lo is not None and value < lo) or (hi is not None and value > hi)):
        ok = False
    if not ok:
        rng = ("" if lo is None and hi is None else
               f" from {lo} to {hi}" if hi is not None else f" >= {lo}")
        raise option_error(where, name, value,
                           f"an integer{rng}" + (" or None" if allow_none else ""))


SOLVERS = ("auto", "blockdiag", "cholmod", "schur")  # bigmixed.fitting.model.SOLVERS


def check_lmm_options(where: str, *, reml=True, solver="auto", family=None, residual=None,
                      variance=None) -> None:
    """bm.lmm / fit_many's LMM options: reml a bool, solver a known name, residual an AR1 or
    CompoundSymmetry, variance a VarIdent; `family` does not apply to a linear mixed model
    (bm.glmm fits GLMMs)."""
    if residual is not None or variance is not None:
        from .residual import AR1, CompoundSymmetry, VarIdent

        if residual is not None and not isinstance(residual, (AR1, CompoundSymmetry)):
            raise option_error(where, "residual", residual,
                               "bm.AR1(...) or bm.CompoundSymmetry(...) (or None)")
        if variance is not None and not isinstance(variance, VarIdent):
            raise option_error(where, "variance", variance, "bm.VarIdent(...) (or None)")
    if family is not None:
        from ..errors import OptionError

        raise OptionError(
            f"{where}: family={family!r} does not apply to a linear mixed model (Gaussian "
            "response, identity link); for a binomial or Poisson response use bm.glmm(formula, "
            f"data, family={family!r}) (lme4: glmer rather than lmer)")
    check_bool(where, "reml", reml)
    check_choice(where, "solver", solver, SOLVERS)


# --------------------------------------------------------------------------------------
# Polars DataFrames and pyarrow Tables as input


def _is_polars(data) -> bool:
    return (type(data).__module__ or "").startswith("polars") and (
        hasattr(data, "to_pandas") or hasattr(data, "collect"))


def _is_arrow(data) -> bool:
    mod = type(data).__module__ or ""
    return mod.startswith("pyarrow") and hasattr(data, "to_pandas") and hasattr(data, "column_names")


def used_columns(columns, *texts) -> list:
    """The columns whose name occurs in any of `texts` (the formula, column-name options, a
    glob of responses) as a whole name: a superset of the columns a model uses."""
    import fnmatch
    import re

    texts = [t for t in texts if isinstance(t, str)]
    out = []
    for c in columns:
        if not isinstance(c, str):
            continue
        pat = re.compile(r"(?<![\w.])" + re.escape(c) + r"(?![\w.])")
        if any(pat.search(t) or fnmatch.fnmatchcase(c, t) for t in texts):
            out.append(c)
    return out


def as_pandas(data, *texts):
    """pandas data as given; a Polars DataFrame or a pyarrow Table converted to pandas,
    only the columns named in `texts` (all columns when no text is given: new data for
    predict). Other inputs are returned unchanged (build_design rejects them)."""
    if isinstance(data, pd.DataFrame):
        return data
    if _is_polars(data):
        lazy = not hasattr(data, "to_pandas")  # a LazyFrame: only the used columns are collected
        cols = list(data.collect_schema().names() if lazy else data.columns)
        if texts:
            data = data.select(used_columns(cols, *texts))
        if lazy:
            data = data.collect()
        try:
            return data.to_pandas()
        except ModuleNotFoundError as e:  # polars needs pyarrow for to_pandas
            raise DataTypeError(f"converting a Polars DataFrame to pandas needs {e.name}: "
                                f"pip install {e.name}") from e
    if _is_arrow(data):
        if texts:
            data = data.select(used_columns(list(data.column_names), *texts))
        return data.to_pandas()
    return data
