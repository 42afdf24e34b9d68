"""What a distributed fit needs to know before reading a row: the formula's columns and
expressions, which rows a partition keeps, and the reduction tree."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any
import numpy as np
import pandas as pd
from ..spec.transforms import FORMULA_CONTEXT
from ..errors import FormulaSyntaxError
from ..spec.checks import check_column_names, check_duplicates, check_group_column, check_response, missing_column_error
from ..spec.expressions import evaluate_expressions, factor_columns, has_expressions
from ..spec.formula import expression_names, parse_formula, r_term_order

NO_ROWS_MESSAGE = (
    "a model fitted from a Dask DataFrame keeps no rows in memory; {what} are computed per "
    "partition: use fit.fitted_dask(), fit.resid_dask() or fit.write_fitted(path)"
)


def is_dask_dataframe(data) -> bool:
    """True for a dask.dataframe DataFrame (without importing dask when it is not one)."""
    mod = type(data).__module__ or ""
    if not (mod.startswith("dask") or mod.startswith("dask_expr")):
        return False
    try:
        import dask.dataframe as dd
    except ImportError:  # pragma: no cover - a dask object implies dask is installed
        return False
    return isinstance(data, dd.DataFrame)


def require_dask():
    try:
        import dask  # noqa: F401
        import dask.dataframe  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise ImportError(
            "fitting from a Dask DataFrame needs dask: pip install 'bigmixed[dask]'"
        ) from e


# ======================================================================================
# The plan: what the formula reads, decided on the frame's metadata (no data read)
# ======================================================================================


@dataclass
class Plan:
    formula: str
    response: str
    covariates: list
    group_vars: list
    used: list
    group_exprs: list  # distinct group_vars tuples
    has_expressions: bool
    level_columns: list = field(default_factory=list)  # numeric columns made factors: factor(x)
    stateful: bool = False  # scale(), center() or poly() in the formula: their state is global
    transform_state: Any = None  # that state (formulaic's), once found over all partitions
    prior: Any = None  # prior weights and offset (glm_inputs.PriorSpec), evaluated per partition
    _cache: dict = field(default_factory=dict, repr=False)

    def parsed(self):
        if "parsed" not in self._cache:
            self._cache["parsed"] = parse_formula(self.formula)
        return self._cache["parsed"]

    def all_terms(self):
        """The formulaic factor terms of the fixed part and of every random-term expression."""
        if "terms" not in self._cache:
            parsed = self.parsed()
            _, fixed_terms = r_term_order(parsed.fixed)
            terms = list(fixed_terms)
            seen = set()
            for t in parsed.terms:
                if t.expr not in seen:
                    seen.add(t.expr)
                    terms += list(r_term_order(t.expr)[1])
            self._cache["terms"] = terms
        return self._cache["terms"]

    def stateful_factors(self):
        """The expression factors that call scale(), center() or poly() (each once)."""
        if "stateful" not in self._cache:
            out = {}
            for facs in self.all_terms():
                for f in facs:
                    if f.eval_method.value != "lookup" and _stateful_calls(f.expr):
                        out.setdefault(f.expr, f)
            self._cache["stateful"] = list(out.values())
        return self._cache["stateful"]

    def state_columns(self) -> list:
        """The columns the stateful expressions read."""
        names = {n for f in self.stateful_factors() for n in expression_names(f.expr)}
        return [v for v in self.covariates if v in names]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state


def make_plan(formula: str, meta: pd.DataFrame) -> Plan:
    """The column bookkeeping of `build_design`, on the Dask frame's (empty) metadata."""
    parsed = parse_formula(formula)
    check_column_names(meta)
    if parsed.response_expr is not None:
        raise NotImplementedError(
            f"the response {parsed.response!r} is an expression: a fit from Dask partitions "
            "needs the response as a column; compute it before fitting (e.g. "
            "ddf.assign(log_y=np.log(ddf['y'])) and 'log_y ~ ...')")
    fixed_intercept, fixed_terms = r_term_order(parsed.fixed)
    fixed_vars = factor_columns(fixed_terms, meta.columns, "fixed effects")
    rand_vars: list = []
    seen: dict = {}
    for t in parsed.terms:
        if t.expr not in seen:
            icpt, trms = r_term_order(t.expr, f"left-hand side of random-effects term {t}")
            if not icpt and not trms:
                raise FormulaSyntaxError(
                    f"random-effects term {t} has no columns (nothing but '0' or '-1' on the "
                    "left of '|')"
                )
            seen[t.expr] = trms
            for v in factor_columns(trms, meta.columns, f"random-effects term {t}"):
                if v not in rand_vars:
                    rand_vars.append(v)
    covariates = list(dict.fromkeys(fixed_vars + rand_vars))
    group_vars = list(parsed.grouping_columns)
    response = parsed.response
    roles = [(response, "response")]
    roles += [(v, "fixed effects") for v in fixed_vars]
    roles += [(v, "random-effects term") for v in rand_vars]
    roles += [(v, "grouping factor") for v in group_vars]
    columns = set(meta.columns)
    for v, role in roles:
        if v not in columns:
            raise missing_column_error(v, role, meta.columns)
    used = list(dict.fromkeys(v for v, _ in roles))
    check_duplicates(meta, used)
    all_terms = list(fixed_terms) + [f for trms in seen.values() for f in trms]
    _check_row_local(all_terms)
    group_exprs = list(dict.fromkeys(t.group_vars for t in parsed.terms))
    stateful = any(_stateful_calls(f.expr) for facs in all_terms for f in facs
                   if f.eval_method.value != "lookup")
    return Plan(formula, response, covariates, group_vars, used, group_exprs,
                 has_expressions(all_terms), _level_columns(all_terms, covariates), stateful)


def _level_columns(terms, covariates) -> list:
    """Columns inside factor(), ordered() or C(): their distinct values fix the columns of X."""
    from ..spec.formula import expression_calls

    out: list = []
    for facs in terms:
        for f in facs:
            if f.eval_method.value == "lookup":
                continue
            if {"factor", "ordered", "C"} & set(expression_calls(f.expr)):
                for n in expression_names(f.expr):
                    if n in covariates and n not in out:
                        out.append(n)
    return out


# Data-dependent transforms whose state is found over all partitions (in rounds of sums, see
# bigmixed.compensated): R's scale(), center() and poly() as bigmixed.design defines them.
_GLOBAL_STATE = frozenset({"scale", "center", "poly"})


def _stateful_calls(expr: str) -> list:
    from ..spec.formula import expression_calls

    return [n for n in expression_calls(expr) if n in _GLOBAL_STATE]


def _check_row_local(terms) -> None:
    """Refuse expressions whose value on a row depends on other rows in a way the partitions
    cannot reproduce (splines' knots from quantiles, neighbouring rows): per partition they
    would differ from the in-memory fit. scale(), center() and poly() are fine: their state is
    found globally; so are ns() and bs() given Boundary.knots and knots (or no df) as numbers."""
    from formulaic.transforms import TRANSFORMS

    from ..spec.deparse import r_deparse
    from ..spec.formula import expression_calls
    from ..spec.splines import spline_needs_data

    for facs in terms:
        for f in facs:
            if f.eval_method.value == "lookup":
                continue
            for name in expression_calls(f.expr):
                if name in _GLOBAL_STATE:
                    continue
                if name in ("ns", "bs") and not spline_needs_data(f.expr, name):
                    continue
                fn = FORMULA_CONTEXT.get(name, TRANSFORMS.get(name))
                stateful = getattr(fn, "__is_stateful_transform__", False) and name != "Q"
                if stateful or name == "lag":
                    raise NotImplementedError(
                        f"{r_deparse(f.expr)}: {name}() needs the whole column (its value on a row depends "
                        "on other rows), which a fit from Dask partitions does not see at once; "
                        "compute the column before fitting (e.g. ddf.assign(...)); scale(), "
                        "center() and poly() are supported, and ns() / bs() with explicit "
                        "knots= and Boundary.knots=")


def with_prior(plan: Plan, prior, meta: pd.DataFrame) -> Plan:
    """The plan with an LMM's prior weights and offset (bm.lmm(weights=, offset=), offset()
    terms: a glm_inputs.PriorSpec): the columns their expressions read join `used` (rows
    missing one are dropped, as build_design drops them). Weights or an offset given as values
    cannot follow the partitions: NotImplementedError names the option."""
    from ..spec.formula import expression_names
    from ..spec.glm_inputs import offset_values, weight_values_of

    for arg, given in (("weights=", prior.weights_values), ("offset=", prior.offset_values)):
        if given:
            raise NotImplementedError(
                f"{arg} given as values is not supported with Dask data (the values cannot "
                f"follow the partitions): add them as a column and pass {arg}'<column>'")
    offset_values(list(prior.offset_terms), prior.offset, meta)  # missing / non-numeric columns
    if prior.weights is not None:
        weight_values_of(prior.weights, meta)
    exprs = list(prior.offset_terms) + [e for e in (prior.offset, prior.weights) if e is not None]
    names = [n for e in exprs for n in expression_names(e) if n in meta.columns]
    plan.used = list(dict.fromkeys(plan.used + names))
    plan.prior = prior
    return plan


def prior_values(part: pd.DataFrame, plan: Plan):
    """(prior weights, offset) on the rows of a partition, each None without one (NaN where a
    value is missing; typed errors for +-Inf, and for weights <= 0, as in memory)."""
    prior = plan.prior
    if prior is None:
        return None, None
    from ..spec.glm_inputs import offset_values, weight_values_of

    off = offset_values(list(prior.offset_terms), prior.offset, part) if prior.has_offset else None
    w = weight_values_of(prior.weights, part) if prior.weights is not None else None
    return w, off


def kept_rows(part: pd.DataFrame, plan: Plan):
    """-> (boolean mask of the rows build_design keeps, rows dropped for NaN expressions)."""
    na = np.zeros(len(part), dtype=bool)
    for v in plan.used:
        na |= np.asarray(part[v].isna().to_numpy(), dtype=bool)
    if plan.prior is not None and len(part):  # a NaN weight or offset (e.g. log(0 - 1)): dropped
        for values in prior_values(part, plan):
            if values is not None:
                na |= np.isnan(values)
    n_expr = 0
    if plan.has_expressions and len(part):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            bad, _ = evaluate_expressions(plan.all_terms(), part, plan.covariates, na,
                                              plan.transform_state)
        n_expr = int(bad.sum())
        na |= bad
    return ~na, n_expr


def validate_partition(part: pd.DataFrame, plan: Plan) -> None:
    """The per-column input checks build_design makes on all rows (response, grouping ids)."""
    check_response(part[plan.response], plan.response)
    for v in plan.group_vars:
        check_group_column(part[v], v)


def share(obj):
    """`obj` as one graph key: scattered to every worker when a distributed Client is the
    active scheduler (a Future: sent once, not inside the graph), else a Delayed literal."""
    from dask import delayed
    from dask.base import get_scheduler

    client = getattr(get_scheduler(), "__self__", None)
    if client is not None and type(client).__name__ == "Client" and hasattr(client, "scatter"):
        return client.scatter(obj, broadcast=True, hash=False)
    return delayed(obj, pure=True, traverse=False)


def reduce_tree(delayed_parts: list, combine, split_every: int):
    """A fixed reduction tree over the partials in partition order (deterministic)."""
    from dask import delayed

    level = list(delayed_parts)
    k = max(2, int(split_every))
    while len(level) > 1:
        level = [delayed(combine, pure=True)(*level[i:i + k]) for i in range(0, len(level), k)]
    return level[0]
