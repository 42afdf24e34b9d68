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
import pandas as pd
from ..errors import (
    DataTypeError,
    DesignError,
    EmptyDataError,
    FormulaSyntaxError,
)
from .formula import parse_formula, r_term_order
from .encoding import GroupSpec, VarInfo, covariate_for_newdata, factorize, group_codes, numeric_column, prepare_covariate
from .expressions import (evaluate_expressions, evaluate_response, factor_columns, has_expressions,
                          response_columns, warn_nan_rows)
from .materialize import MatrixSpec, build_matrix, plain_columns
from .checks import check_column_names, check_duplicates, check_finite, check_group_column, check_grouping, check_response, format_values, missing_column_error
from .rank import drop_aliased
from .rlabels import contr_poly  # noqa: F401 - re-exported (R's contr.poly)
from .columns import ColumnMatrix, fixed_gram
from ..kernels.columns import count_nonfinite

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
    X : np.ndarray, shape (n_obs, p), float64, C-contiguous (row-major: one pass reads a row);
        or, with build_design(fixed_in_place=True), a ColumnMatrix of the data's columns
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
    prior : bigmixed.spec.glm_inputs.PriorSpec or None
        An LMM's prior weights and offset as given (weights=, offset=, offset() terms); their
        values are columns of `extra`. None without them.
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
    prior: Any = None

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


__all__ = [
    "RandomTerm",
    "Design",
    "DesignError",
    "build_design",
    "design_matrices_for_newdata",
    "contr_poly",
]


# --------------------------------------------------------------------------------------
# Specs kept on the Design for new data


@dataclass
class FixedSpec:
    """Design.fixed_spec: re-encodes X on new data exactly as on the fitting data."""

    matrix: MatrixSpec
    variables: dict  # covariate name -> VarInfo (fixed part and random-term expressions)
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
    matrix: MatrixSpec
    covariates: list
    group_spec: GroupSpec

    @property
    def model_spec(self):
        return self.matrix.model_spec

    @property
    def levels(self) -> np.ndarray:
        return self.group_spec.levels


# --------------------------------------------------------------------------------------
# build_design


def build_design(formula: str, data: pd.DataFrame, *, lme4_checks: bool = True,
                 extra_columns: tuple = (), transform_state=None,
                 scale_free: bool = False, fixed_in_place: bool = False) -> Design:
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
    scale_free : the model has no residual scale (a binomial or Poisson GLMM): as many levels of
        a grouping factor as observations are allowed, as glmer allows them.
    fixed_in_place : when the fixed part is the intercept and plain numeric columns,
        ``Design.X`` is a `bigmixed.spec.columns.ColumnMatrix` of the data's own columns at the
        kept rows (nothing copied; for consumers that read X through the column kernels, such
        as an LMM's cross-products) instead of an array.
    """
    if not isinstance(data, pd.DataFrame):
        raise DataTypeError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    parsed = parse_formula(formula)
    check_column_names(data)
    if len(data) == 0:
        raise EmptyDataError(
            f"the data frame has no rows (columns: {format_values(list(data.columns), 8)})"
            if len(data.columns) else "the data frame is empty (no rows, no columns)"
        )
    columns = set(data.columns)

    fixed_intercept, fixed_terms = r_term_order(parsed.fixed)
    fixed_vars = factor_columns(fixed_terms, data.columns, "fixed effects")
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
            rterm_struct[t.expr] = (icpt, trms, factor_columns(trms, data.columns, f"random-effects term {t}"))
        for v in rterm_struct[t.expr][2]:
            if v not in rand_vars:
                rand_vars.append(v)
    covariates = list(dict.fromkeys(fixed_vars + rand_vars))
    group_vars = parsed.grouping_columns
    response = parsed.response
    response_vars = response_columns(parsed, data.columns)

    roles = [(v, "response") for v in response_vars]
    roles += [(v, "fixed effects") for v in fixed_vars]
    roles += [(v, "random-effects term") for v in rand_vars]
    roles += [(v, "grouping factor") for v in group_vars]
    roles += [(v, role) for v, role in extra_columns]
    used = list(dict.fromkeys(v for v, _ in roles))
    for v, role in roles:
        if v not in columns:
            raise missing_column_error(v, role, data.columns)
    check_duplicates(data, used)
    for v in response_vars:
        check_response(data[v], v)
    for v in group_vars:
        check_group_column(data[v], v)

    n_all = len(data)
    na = np.zeros(n_all, dtype=bool)
    nonfinite: dict = {}  # float column -> (n NaN, n +-Inf), from one read without a mask
    for v in used:
        values = _float_values(data[v])
        if values is not None:
            nonfinite[v] = count_nonfinite(values)
            if nonfinite[v][0] == 0:
                continue
        na |= np.asarray(data[v].isna().to_numpy(), dtype=bool)
    # R's model.frame: evaluate the variables (log(x), scale(x), poly(x, 2), ...) on all
    # rows, *then* drop rows with a missing value in any of them (na.omit). Data-dependent
    # transforms therefore see the rows that na.omit removes later, exactly as in R; their
    # state is reused below and for new data.
    all_terms = list(fixed_terms) + [t for v in rterm_struct.values() for t in v[1]]
    transform_state = dict(transform_state or {})
    if has_expressions(all_terms):
        bad, transform_state = evaluate_expressions(all_terms, data, covariates, na,
                                                     transform_state)
        na |= bad
    y_all = None
    if parsed.response_expr is not None:  # log(y), I(y / 100): evaluated like the covariates
        y_all = evaluate_response(parsed, data, response_vars)
        bad = np.isnan(y_all) & ~na
        if bad.any():
            warn_nan_rows(int(bad.sum()), response)
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

    if y_all is None:
        y = numeric_column(col(response), response)
        check_finite(y, f"response column {response!r}", row_index)
    else:
        y = y_all if rows is None else y_all[rows]
        check_finite(y, f"response {response!r}", row_index)
    frame_cols: dict = {}
    var_info: dict = {}
    # Numeric data columns that are a term of their own (the usual `y ~ age + bmi + ...`) are
    # not copied: formulaic sees a stand-in, and their kept rows are copied from the data
    # straight into X and Z (`build_matrix(columns=...)`).
    plain = plain_columns(all_terms)
    plain_values: dict = {}
    for v in covariates:
        s = data[v]
        if v in plain and isinstance(s.dtype, np.dtype) and s.dtype.kind in "fiu":
            values = s.to_numpy()
            if values.dtype.kind == "f" and nonfinite.get(v, (1, 1)) != (0, 0):
                bad = ~np.isfinite(values)
                if rows is not None:
                    bad &= keep
                if bad.any():
                    check_finite(values if rows is None else values[rows], f"column {v!r}",
                                  row_index)
            plain_values[v] = values
            frame_cols[v] = np.broadcast_to(np.float64(np.nan), n_keep)
            var_info[v] = VarInfo(v, "numeric")
            continue
        values, info = prepare_covariate(col(v), v)
        if info.kind == "numeric":
            check_finite(np.asarray(values, dtype=np.float64), f"column {v!r}", row_index)
        frame_cols[v] = values
        var_info[v] = info
    frame = pd.DataFrame(frame_cols, index=pd.RangeIndex(n_keep), copy=False)

    var_factors = {v: factorize(col(v))[:2] for v in group_vars}  # (codes, labels)
    group_cache: dict = {}
    for t in parsed.terms:
        if t.group_vars not in group_cache:
            group_cache[t.group_vars] = group_codes(t.group_vars, var_factors)
    del var_factors  # the per-variable codes (intp): only the group codes are kept

    with np.errstate(divide="ignore", invalid="ignore"):  # +-Inf is reported just below
        X, fixed_mspec = build_matrix(
            parsed.fixed, fixed_intercept, fixed_terms, frame, "fixed effects", transform_state,
            columns=plain_values, rows=rows, in_place=fixed_in_place,
        )
    # a column holding NaN or +-Inf has a non-finite sum of squares (an overflow too: each
    # such column is then checked exactly); X'X is reused by the rank check below
    xtx = fixed_gram(X) if isinstance(X, ColumnMatrix) else X.T @ X
    for j in np.flatnonzero(~np.isfinite(np.diag(xtx))):
        check_finite(X[:, j], f"fixed-effects column {fixed_mspec.names[j]!r}", row_index)
    zs: dict = {}
    for expr, (icpt, trms, _) in rterm_struct.items():
        if icpt and not trms:  # (1 | g): a column of ones, not stored
            zs[expr] = (np.broadcast_to(np.float64(1.0), (n_keep, 1)),
                        MatrixSpec(expr, True, 0, None, ["(Intercept)"]))
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            zs[expr] = build_matrix(
                expr, icpt, trms, frame, "random-effects expression", transform_state,
                columns=plain_values, rows=rows,
            )
        Z, zspec = zs[expr]
        if all(len(facs) == 1 and facs[0].expr in plain_values for facs in trms):
            continue  # the intercept and data columns checked finite above: Z is finite
        for j in np.flatnonzero(~np.isfinite(np.diag(Z.T @ Z))):
            check_finite(Z[:, j], f"column {zspec.names[j]!r} of random-effects term "
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
        check_grouping(flist, terms, n_keep, allow_n=scale_free)
        X, fixed_names, dropped, kept_cols, w = drop_aliased(X, fixed_names, xtx)
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


def _float_values(s: pd.Series):
    """A float64/float32 column's values as a NumPy array (no copy), or None for other columns."""
    if isinstance(s.dtype, np.dtype) and s.dtype in (np.float64, np.float32):
        return s.to_numpy()
    return None


def design_matrices_for_newdata(design: Design, newdata: pd.DataFrame, *,
                                fixed_only: bool = False, grouping: bool = True):
    """Re-encode new data the way `design` was built.

    Returns (X_new, [(codes_new, Z_new) for each random term]). X_new, Z_new are float64
    C-contiguous; codes_new are the fitted levels' codes with -1 for a level (or level
    combination) not seen when fitting, or a missing grouping value. The response is not
    needed. Rows with a missing covariate get NaN rows in X_new and Z_new (R's na.pass).
    A factor covariate with a level not seen when fitting raises DesignError, as in R.

    fixed_only (population-level predictions, lme4's re.form = NA): only the fixed part is
    encoded, so newdata needs neither the grouping columns nor the columns only the
    random-effects terms use; the list of terms is then empty. Only the fixed-effects
    columns' missing values make a row NaN. grouping=False (population-level prediction
    intervals of a model with random slopes, which need z'Gz): X and Z are encoded, the
    grouping columns are not needed and every code is -1 (a new level).
    """
    if not isinstance(newdata, pd.DataFrame):
        raise DataTypeError(f"newdata must be a pandas DataFrame, got {type(newdata).__name__}")
    fs: FixedSpec = design.fixed_spec
    n = len(newdata)
    columns = set(newdata.columns)
    group_vars = list(dict.fromkeys(v for ts in design.term_specs for v in ts.group_vars))
    variables = ({v: fs.variables[v] for v in fs.fixed_vars if v in fs.variables}
                 if fixed_only else fs.variables)
    fixed_set = set(fs.fixed_vars)
    for v in list(variables) + ([] if fixed_only or not grouping else group_vars):
        if v not in columns:
            if fixed_only or v in fixed_set:
                role = "needed for prediction"
            elif not grouping:
                role = ("a random-slope column, needed for population-level prediction "
                        "intervals (z'Gz of a new group); interval='confidence' does not need it")
            else:
                role = ("needed for conditional prediction (level='conditional'); "
                        "level='population' needs only the fixed-effects columns")
            raise missing_column_error(v, role, newdata.columns)

    na = np.zeros(n, dtype=bool)
    frame_cols = {}
    for v, info in variables.items():
        s = newdata[v]
        na |= np.asarray(s.isna().to_numpy(), dtype=bool)
        frame_cols[v] = covariate_for_newdata(s, info)
    frame = pd.DataFrame(frame_cols, index=pd.RangeIndex(n), copy=False)

    X_new = fs.matrix.matrix(frame)
    if na.any():
        X_new[na] = np.nan
    if fixed_only:
        return X_new, []

    var_codes: dict = {}
    z_cache: dict = {}
    out = []
    for ts in design.term_specs:
        gs = ts.group_spec
        if not grouping:
            if ts.expr not in z_cache:
                Z = ts.matrix.matrix(frame)
                if na.any():
                    Z[na] = np.nan
                z_cache[ts.expr] = Z
            out.append((np.full(n, -1, dtype=np.int64), z_cache[ts.expr]))
            continue
        per_var = []
        for v, lv in zip(gs.group_vars, gs.var_levels):
            if v not in var_codes:
                codes, labels, _ = factorize(newdata[v])
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
