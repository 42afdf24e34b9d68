"""Fitting beyond one machine's memory: a Dask DataFrame (e.g. partitioned Parquet) in, a fit out.

    import dask.dataframe as dd
    import bigmixed as bm
    ddf = dd.read_parquet("visits/")                       # any number of partitions
    fit = bm.lmm("y ~ age + sex + (1 + time | patient) + (1 | hospital)", data=ddf).fit()
    fit.ranef()                                            # BLUPs: per level, small
    fit.fitted_dask()                                      # a dask Series, computed per partition
    fit.write_fitted("fitted/")                            # or straight to Parquet

The engine only needs cross-products whose size depends on the number of levels, not of
rows (see crossprod.py), and cross-products of disjoint row sets add up. So:

pass 0 (only with scale(), center() or poly() in the formula)
    Their state (means, SDs, the coefficients of the orthogonal polynomials) is found over all
    rows, as R's model.frame and `build_design` find it (before na.omit), from double-double
    sums added over the partitions: bit-identical to the in-memory state. It takes rounds (the
    SD needs the mean first; poly(x, d) d + 1 rounds), one pass each over the partitions,
    reading only the columns these expressions use (see `_global_transform_state`).
pass 1 (levels)
    Per partition: the rows kept (na.omit, and rows where an expression such as log(x) is
    NaN), the distinct values of every grouping column and factor covariate among them, and
    the distinct combinations of interaction groups (a:b). Merged over partitions, these give
    the *global* encoding -- level order exactly as `build_design` chooses it on the
    concatenated data (a Categorical's category order, unused categories dropped; otherwise
    sorted values) -- and the global counts lme4's identifiability checks need. A template
    design evaluated on a small frame holding every factor level fixes the fixed-effects
    columns (contrasts, names).
pass 2 (cross-products)
    Per partition: X, the group codes and Z with the global encoding
    (`design_matrices_for_newdata` on the template), the partition's Z'Z, Z'[X y] and
    [X y]'[X y] blocks from the same Numba kernels as in memory (serial variants: Dask
    supplies the parallelism), the co-occurrence blocks of crossed factors, and the R factor
    of a QR of X. The sums are double-doubles (the kernels' compensated sums, see
    bigmixed.crossprod) and partials are added in double-double, in a fixed tree over the
    partitions in partition order (``split_every`` at a time, each node adding its children
    left to right); they are rounded once, at the end. So the cross-products are the
    correctly rounded sums of the rows' products, as in memory: bit-identical to the
    in-memory ones whatever the number of partitions, the scheduler or the number of workers
    (up to a last-bit difference with probability of order n eps per entry), and the fit,
    which follows those bits, is the in-memory fit.
then
    Rank deficiency of X is decided on the reduced system: the fast Cholesky test on the
    global X'X as in memory, else R's dqrdc2 on the stacked-and-re-factored R factors (a
    matrix M with M'M = X'X obtained by orthogonal transformations, which is what
    `build_design` uses for more than 16384 rows too). Aliased columns are dropped from the
    reduced cross-products. The optimizer then runs in this process on the reduced system,
    exactly as for an in-memory fit (`LinearMixedModel.from_crossproducts`).

Nothing here starts or manages a cluster: the computations run on whatever Dask scheduler is
active (a `distributed.Client`, ``dask.config.set(scheduler=...)``, or Dask's default).
`local_cluster()` is a convenience that starts a LocalCluster sized to this machine.

Not supported (a clear error is raised): other transforms that need the whole column
(splines: bs(), cr(), ...; lag()), and expressions other than factor(x), ordered(x) and C(x)
that turn a numeric column into a factor -- compute such columns before fitting.
"""
from __future__ import annotations

import copy
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from . import design as _d
from .compensated import TRANSFORM_STATES, add_compensated, merge_sums
from .crossprod import CrossProducts, PairBlocks, factor_sums, pair_sums
from .errors import DesignError, EmptyDataError
from .model import LinearMixedModel
from .results import LMMResults
from .structure import RandomEffectsStructure
from .warnings import RankDeficiencyWarning

__all__ = [
    "DaskLinearMixedModel",
    "DaskLMMResults",
    "DaskDesign",
    "is_dask_dataframe",
    "lmm_dask",
    "local_cluster",
]

_NO_ROWS = (
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


def _require_dask():
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
class _Plan:
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
    _cache: dict = field(default_factory=dict, repr=False)

    def parsed(self):
        if "parsed" not in self._cache:
            self._cache["parsed"] = _d.parse_formula(self.formula)
        return self._cache["parsed"]

    def all_terms(self):
        """The formulaic factor terms of the fixed part and of every random-term expression."""
        if "terms" not in self._cache:
            parsed = self.parsed()
            _, fixed_terms = _d.r_term_order(parsed.fixed)
            terms = list(fixed_terms)
            seen = set()
            for t in parsed.terms:
                if t.expr not in seen:
                    seen.add(t.expr)
                    terms += list(_d.r_term_order(t.expr)[1])
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
        names = {n for f in self.stateful_factors() for n in _d.expression_names(f.expr)}
        return [v for v in self.covariates if v in names]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state


def _make_plan(formula: str, meta: pd.DataFrame) -> _Plan:
    """The column bookkeeping of `build_design`, on the Dask frame's (empty) metadata."""
    parsed = _d.parse_formula(formula)
    _d._check_column_names(meta)
    fixed_intercept, fixed_terms = _d.r_term_order(parsed.fixed)
    fixed_vars = _d._factor_columns(fixed_terms, meta.columns, "fixed effects")
    rand_vars: list = []
    seen: dict = {}
    for t in parsed.terms:
        if t.expr not in seen:
            icpt, trms = _d.r_term_order(t.expr, f"left-hand side of random-effects term {t}")
            if not icpt and not trms:
                raise _d.FormulaSyntaxError(
                    f"random-effects term {t} has no columns (nothing but '0' or '-1' on the "
                    "left of '|')"
                )
            seen[t.expr] = trms
            for v in _d._factor_columns(trms, meta.columns, f"random-effects term {t}"):
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
            raise _d._missing_column_error(v, role, meta.columns)
    used = list(dict.fromkeys(v for v, _ in roles))
    _d._check_duplicates(meta, used)
    all_terms = list(fixed_terms) + [f for trms in seen.values() for f in trms]
    _check_row_local(all_terms)
    group_exprs = list(dict.fromkeys(t.group_vars for t in parsed.terms))
    stateful = any(_stateful_calls(f.expr) for facs in all_terms for f in facs
                   if f.eval_method.value != "lookup")
    return _Plan(formula, response, covariates, group_vars, used, group_exprs,
                 _d._has_expressions(all_terms), _level_columns(all_terms, covariates), stateful)


def _level_columns(terms, covariates) -> list:
    """Columns inside factor(), ordered() or C(): their distinct values fix the columns of X."""
    from .formula import expression_calls

    out: list = []
    for facs in terms:
        for f in facs:
            if f.eval_method.value == "lookup":
                continue
            if {"factor", "ordered", "C"} & set(expression_calls(f.expr)):
                for n in _d.expression_names(f.expr):
                    if n in covariates and n not in out:
                        out.append(n)
    return out


# Data-dependent transforms whose state is found over all partitions (in rounds of sums, see
# bigmixed.compensated): R's scale(), center() and poly() as bigmixed.design defines them.
_GLOBAL_STATE = frozenset({"scale", "center", "poly"})


def _stateful_calls(expr: str) -> list:
    from .formula import expression_calls

    return [n for n in expression_calls(expr) if n in _GLOBAL_STATE]


def _check_row_local(terms) -> None:
    """Refuse expressions whose value on a row depends on other rows in a way the partitions
    cannot reproduce (splines' knots, neighbouring rows): per partition they would differ from
    the in-memory fit. scale(), center() and poly() are fine: their state is found globally."""
    from formulaic.transforms import TRANSFORMS

    from .formula import expression_calls

    for facs in terms:
        for f in facs:
            if f.eval_method.value == "lookup":
                continue
            for name in expression_calls(f.expr):
                if name in _GLOBAL_STATE:
                    continue
                fn = _d._CONTEXT.get(name, TRANSFORMS.get(name))
                stateful = getattr(fn, "__is_stateful_transform__", False) and name != "Q"
                if stateful or name == "lag":
                    raise NotImplementedError(
                        f"{f.expr}: {name}() needs the whole column (its value on a row depends "
                        "on other rows), which a fit from Dask partitions does not see at once; "
                        "compute the column before fitting (e.g. ddf.assign(...)); scale(), "
                        "center() and poly() are supported")


def _kept_rows(part: pd.DataFrame, plan: _Plan):
    """-> (boolean mask of the rows build_design keeps, rows dropped for NaN expressions)."""
    na = np.zeros(len(part), dtype=bool)
    for v in plan.used:
        na |= np.asarray(part[v].isna().to_numpy(), dtype=bool)
    n_expr = 0
    if plan.has_expressions and len(part):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            bad, _ = _d._evaluate_expressions(plan.all_terms(), part, plan.covariates, na,
                                              plan.transform_state)
        n_expr = int(bad.sum())
        na |= bad
    return ~na, n_expr


def _validate_partition(part: pd.DataFrame, plan: _Plan) -> None:
    """The per-column input checks build_design makes on all rows (response, grouping ids)."""
    _d._check_response(part[plan.response], plan.response)
    for v in plan.group_vars:
        _d._check_group_column(part[v], v)


# ======================================================================================
# Pass 0: the state of scale(), center(), poly(), found over all partitions
# ======================================================================================
#
# In memory, build_design evaluates these transforms on all rows (before na.omit, as R's
# model.frame) and each one computes its state from sums over the column in rounds
# (bigmixed.compensated: scale() needs the mean, then the sum of squares about it; poly(x, d)
# d + 1 rounds of the three-term recurrence). Here each round is one pass over the partitions
# reading only the columns these expressions use: every partition evaluates the expressions
# with the state so far, the transforms replaced by collectors that return the round's sums
# (double-doubles), the sums are added over the partitions and the state advanced, exactly as
# in memory. A transform nested in another (poly(scale(x), 2)) waits for the inner one.


class _RoundFlags:
    """Set when a transform of the expression being evaluated is not complete this round (its
    value is a placeholder, so transforms around it must wait)."""

    def __init__(self):
        self.pending = False


def _collector(kind: str, real, bind, flags: _RoundFlags):
    from formulaic.utils.stateful_transforms import stateful_transform

    prepare, needs, sums, _ = TRANSFORM_STATES[kind]

    def collect(data, *args, _state={}, _context=None, **kwargs):  # noqa: B006 - stateful transform
        call = bind(*args, **kwargs)
        x = np.asarray(getattr(data, "__wrapped__", data), dtype=np.float64)
        width = (call["degree"],) if kind == "poly" and not call["raw"] else x.shape[1:]
        placeholder = np.full((x.shape[0],) + tuple(width), np.nan)
        if _context is None:
            # formulaic also calls the transforms inside another one while it looks for the
            # variables an expression uses (`get_required_variables`), without a state: not
            # an evaluation
            return placeholder
        if not flags.pending:
            prepare(_state, **call)
            op = needs(_state, **call)
            if op is None:  # complete: the transform's values
                return real(data, *args, _state=_state, **kwargs)
            _state["__report__"] = (kind, call, op, sums(x, _state, op))
        else:
            _state["__report__"] = None  # waits for a transform inside it
        flags.pending = True
        return placeholder

    return stateful_transform(collect)


def _bind_scale(center=True, scale=True):
    return {"center": center, "scale": scale}


def _bind_center():
    return {"center": True, "scale": False}


def _bind_poly(degree=1, raw=False):
    return {"degree": int(degree), "raw": bool(raw)}


def _collectors(flags: _RoundFlags) -> dict:
    return {
        "scale": _collector("scale", _d._r_scale, _bind_scale, flags),
        "center": _collector("scale", _d._r_center, _bind_center, flags),
        "poly": _collector("poly", _d._r_poly, _bind_poly, flags),
    }


def _state_round_partition(part: pd.DataFrame, plan: _Plan, state: dict, active) -> tuple:
    """One round on one partition -> ({transform call: (kind, args, op, sums) or None (waiting)}
    for the calls whose state is not complete, {expression: its incomplete calls}). `active`:
    the expressions that still have incomplete calls (None: all)."""
    from formulaic import ModelSpec
    from formulaic.formula import SimpleFormula
    from formulaic.parser.types import Term

    cols = {v: _d._prep_covariate(part[v], v)[0] for v in plan.state_columns()}
    frame = pd.DataFrame(cols, index=pd.RangeIndex(len(part)), copy=False)
    reports: dict = {}
    calls: dict = {}
    for f in plan.stateful_factors():  # one at a time: a pending call only holds up its own
        if active is not None and f.expr not in active:
            continue
        flags = _RoundFlags()
        ms = ModelSpec(
            formula=SimpleFormula([Term([f])], _ordering="none"),
            materializer=_d._RMaterializer,
            materializer_params={"evaluate_only": True},
            output="numpy",
            na_action="ignore",
            transform_state=copy.deepcopy(state),
        )
        try:
            with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mm = ms.get_model_matrix(frame, context={**_d._CONTEXT, **_collectors(flags)})
        except DesignError:
            raise
        except Exception as e:
            raise DesignError(f"cannot evaluate {f.expr}: {e}") from e
        for key, st in mm.model_spec.transform_state.items():
            if isinstance(st, dict) and "__report__" in st:
                reports.setdefault(key, st["__report__"])
                calls.setdefault(f.expr, []).append(key)
    return reports, calls


def _state_round_task(part, plan, state_active):
    return _state_round_partition(part, plan, *state_active)


def _merge_reports(*parts: tuple) -> tuple:
    """Add the rounds' sums over partitions, left to right (partition order)."""
    out: dict = {}
    for rep, _ in parts:
        for key, r in rep.items():
            if key not in out:
                out[key] = r
            elif out[key] is None or r is None:
                out[key] = None
            else:
                kind, call, op, sums = out[key]
                out[key] = (kind, call, op, merge_sums(sums, r[3]))
    return out, parts[0][1]


_MAX_ROUNDS = 64


def _global_transform_state(frame, plan: _Plan, split_every: int) -> dict:
    """Pass 0: the transforms' state over all rows of all partitions (one pass per round)."""
    from dask import compute, delayed

    cols = plan.state_columns()
    parts = (frame[cols] if cols else frame).to_delayed()
    plan_d = _shared(plan)
    state: dict = {}
    active = None
    for _ in range(_MAX_ROUNDS):
        state_d = delayed((state, active), pure=True, traverse=False)
        rounds = [delayed(_state_round_task, pure=True)(p, plan_d, state_d) for p in parts]
        (reports, calls) = compute(_tree(rounds, _merge_reports, split_every))[0]
        incomplete = set()
        for key, r in reports.items():
            if r is None:
                incomplete.add(key)
                continue
            kind, call, op, sums = r
            prepare, needs, _, advance = TRANSFORM_STATES[kind]
            st = copy.deepcopy(state.get(key, {}))
            prepare(st, **call)
            advance(st, op, sums)
            prepare(st, **call)
            state[key] = st
            if needs(st, **call) is not None:
                incomplete.add(key)
        if not incomplete:
            return state
        active = {expr for expr, keys in calls.items() if incomplete & set(keys)}
    raise RuntimeError("the state of the formula's transforms did not complete")  # pragma: no cover


# ======================================================================================
# Pass 1: global levels
# ======================================================================================


@dataclass
class _Levels:
    n_rows: int = 0
    n_kept: int = 0
    n_expr_nan: int = 0
    na_counts: dict = field(default_factory=dict)
    kinds: dict = field(default_factory=dict)  # covariate -> set of kinds seen ("numeric"/"factor")
    uniques: dict = field(default_factory=dict)  # column -> Series of distinct kept values
    tuples: dict = field(default_factory=dict)  # group_vars tuple (len > 1) -> DataFrame
    first_row: Any = None  # one kept row of the used columns (values for the template)


def _pass1_partition(part: pd.DataFrame, plan: _Plan) -> _Levels:
    _validate_partition(part, plan)
    keep, n_expr = _kept_rows(part, plan)
    out = _Levels(n_rows=len(part), n_kept=int(keep.sum()), n_expr_nan=n_expr)
    out.na_counts = {v: int(part[v].isna().sum()) for v in plan.used}
    kept = part if out.n_kept == len(part) else part[keep]
    if out.n_kept == 0:
        return out
    out.first_row = kept[plan.used].iloc[:1]
    for v in plan.covariates:
        kind = _d._classify(kept[v], v)
        out.kinds[v] = {kind}
        if kind == "factor" or v in plan.level_columns:
            out.uniques[v] = kept[v].drop_duplicates().reset_index(drop=True)
    for v in plan.group_vars:
        if v not in out.uniques:
            out.uniques[v] = kept[v].drop_duplicates().reset_index(drop=True)
    for gv in plan.group_exprs:
        if len(gv) > 1:
            out.tuples[gv] = kept[list(gv)].drop_duplicates().reset_index(drop=True)
    return out


def _concat_unique(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return pd.concat([a, b], ignore_index=True).drop_duplicates().reset_index(drop=True)


def _merge_levels(*parts: _Levels) -> _Levels:
    """Fold partials left to right (partition order)."""
    out = _Levels()
    for p in parts:
        out.n_rows += p.n_rows
        out.n_kept += p.n_kept
        out.n_expr_nan += p.n_expr_nan
        for v, c in p.na_counts.items():
            out.na_counts[v] = out.na_counts.get(v, 0) + c
        for v, k in p.kinds.items():
            out.kinds[v] = out.kinds.get(v, set()) | k
        for v, s in p.uniques.items():
            out.uniques[v] = _concat_unique(out.uniques.get(v), s)
        for gv, t in p.tuples.items():
            out.tuples[gv] = _concat_unique(out.tuples.get(gv), t)
        if out.first_row is None and p.first_row is not None:
            out.first_row = p.first_row
    return out


def _shared(obj):
    """`obj` as one graph key: scattered to every worker when a distributed Client is the
    active scheduler (a Future: sent once, not inside the graph), else a Delayed literal."""
    from dask import delayed
    from dask.base import get_scheduler

    client = getattr(get_scheduler(), "__self__", None)
    if client is not None and type(client).__name__ == "Client" and hasattr(client, "scatter"):
        return client.scatter(obj, broadcast=True, hash=False)
    return delayed(obj, pure=True, traverse=False)


def _tree(delayed_parts: list, combine, split_every: int):
    """A fixed reduction tree over the partials in partition order (deterministic)."""
    from dask import delayed

    level = list(delayed_parts)
    k = max(2, int(split_every))
    while len(level) > 1:
        level = [delayed(combine, pure=True)(*level[i:i + k]) for i in range(0, len(level), k)]
    return level[0]


# ======================================================================================
# The global encoding: levels, group specs, and the template design
# ======================================================================================


@dataclass
class _Encoding:
    template: Any  # a Design whose fixed_spec / term_specs encode new rows globally
    terms: list  # RandomTerm with global levels, no rows (codes empty, Z (0, P))
    var_info: dict


def _global_encoding(plan: _Plan, lv: _Levels) -> _Encoding:
    if lv.n_kept == 0:
        detail = ", ".join(f"{v!r}: {c}" for v, c in lv.na_counts.items() if c)
        raise EmptyDataError(
            f"no rows left: every one of the {lv.n_rows} rows has a missing value in at least one "
            f"of the columns the model uses ({', '.join(repr(v) for v in plan.used)}); missing "
            f"values per column: {detail or 'none (transformations evaluate to NaN)'}"
        )
    # covariates: numeric unless some partition saw non-numbers (as _classify on the whole column)
    var_info: dict = {}
    for v in plan.covariates:
        kinds = lv.kinds.get(v, {"numeric"})
        if "factor" in kinds:
            s = lv.uniques[v]
            if len(kinds) > 1:  # numbers in some partitions, text in others: R's character
                s = s.astype(object)
            _, labels, ordered = _d._factorize(s)
            var_info[v] = _d._VarInfo(v, "factor", labels, ordered)
        else:
            var_info[v] = _d._VarInfo(v, "numeric")
    # grouping variables and expressions
    var_labels: dict = {}
    for v in plan.group_vars:
        s = lv.uniques[v]
        _d._check_group_column(s, v)
        _, labels, _ = _d._factorize(s)
        var_labels[v] = labels
    group_cache: dict = {}
    for gv in plan.group_exprs:
        if len(gv) == 1:
            labels = var_labels[gv[0]]
            var_factors = {gv[0]: (np.arange(len(labels)), labels)}
        else:
            table = lv.tuples[gv]
            var_factors = {}
            for v in gv:
                lc, lab, _ = _d._factorize(table[v])
                pos = pd.Index(var_labels[v], dtype=object).get_indexer(pd.Index(lab, dtype=object))
                var_factors[v] = (pos[lc], var_labels[v])
        _, levels, gspec = _d._group_codes(gv, var_factors)
        group_cache[gv] = (levels, gspec)

    template = _template_design(plan, lv, var_info)
    parsed = template.parsed
    terms = []
    for k, t in enumerate(parsed.terms):
        levels, gspec = group_cache[t.group_vars]
        template.term_specs[k].group_spec = gspec
        tt = template.terms[k]
        terms.append(_d.RandomTerm(
            expr=t.expr, group=t.group, column_names=list(tt.column_names), levels=levels,
            codes=np.empty(0, dtype=_d._code_dtype(len(levels))),
            Z=np.empty((0, tt.n_columns)), group_vars=t.group_vars, correlated=t.correlated,
        ))
    template.terms = terms
    return _Encoding(template, terms, var_info)


def _template_design(plan: _Plan, lv: _Levels, var_info: dict):
    """build_design on a small frame holding every level of every factor covariate.

    Numeric columns repeat one kept row (expressions such as log(x) stay finite); factor
    covariates are Categoricals with the global levels, each level present; grouping-only
    columns get a placeholder (their encoding is replaced by the global one).
    """
    n = max([1] + [len(i.levels) for i in var_info.values() if i.kind == "factor"]
            + [len(lv.uniques[v]) for v in plan.level_columns if var_info[v].kind == "numeric"])
    first = lv.first_row
    cols: dict = {}
    for v in plan.used:
        info = var_info.get(v)
        if info is not None and info.kind == "factor":
            k = len(info.levels)
            cols[v] = pd.Categorical.from_codes(np.arange(n) % k, categories=pd.Index(info.levels, dtype=object),
                                                ordered=info.ordered)
        elif info is not None and v in plan.level_columns:  # every value, for factor(x)
            vals = np.sort(_d._numeric(lv.uniques[v], v))
            cols[v] = vals[np.arange(n) % len(vals)]
        elif info is not None or v == plan.response:
            cols[v] = np.full(n, float(_d._numeric(first[v], v)[0]))
        else:  # grouping-only column
            cols[v] = np.arange(n) % 2
    frame = pd.DataFrame(cols, index=pd.RangeIndex(n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            tpl = _d.build_design(plan.formula, frame, lme4_checks=False,
                                  transform_state=plan.transform_state)
        except DesignError as e:
            raise DesignError(f"cannot evaluate the formula for a distributed fit: {e}") from e
    specs = [tpl.fixed_spec.matrix] + [ts.matrix for ts in tpl.term_specs]
    columns = set(plan.used)
    for ms in specs:
        spec = ms.model_spec
        if spec is None:
            continue
        for expr, (kind, _) in spec.encoder_state.items():
            if kind.value != "categorical" or expr in columns:
                continue
            used = [n for n in _d.expression_names(expr) if n in columns]
            if any(n not in plan.level_columns and var_info[n].kind != "factor" for n in used):
                raise NotImplementedError(
                    f"{expr}: an expression that makes a factor of a numeric column is not "
                    "supported for Dask data; convert the column to a categorical (or strings) "
                    "before fitting")
    return tpl


# ======================================================================================
# Pass 2: cross-products per partition, reduced in a fixed tree
# ======================================================================================


@dataclass
class _Partial:
    """One partition's (or a subtree's) cross-products, every sum a double-double (hi, lo)."""

    n_obs: int
    gram: Any  # (hi, lo), each (p + 1, p + 1); None when no rows
    factors: list  # per factor: (global level ids int64 sorted, zz_hi, zz_lo, zxy_hi, zxy_lo)
    pairs: list  # per pair: (row_factor, col_factor, keys int64 sorted, blocks_hi, blocks_lo)
    R: Any  # (<= p, p) R factor of a QR of X: R'R = X'X


def _encode_partition(part: pd.DataFrame, plan: _Plan, enc: _Encoding, check: bool = True):
    """Kept rows of a partition -> (kept frame, y, X, [(codes, Z) per term]) in the global encoding."""
    keep, _ = _kept_rows(part, plan)
    kept = part if keep.all() else part[keep]
    if len(kept) == 0:
        return kept, None, None, None
    y = _d._numeric(kept[plan.response], plan.response)
    if check:
        _d._check_finite(y, f"response column {plan.response!r}", kept.index)
        for v in plan.covariates:
            if enc.var_info[v].kind == "numeric":
                _d._check_finite(_d._numeric(kept[v], v), f"column {v!r}", kept.index)
    with np.errstate(divide="ignore", invalid="ignore"):
        X, per_term = _d.design_matrices_for_newdata(enc.template, kept)
    if check:
        names = enc.template.fixed_spec.matrix.names
        for j in np.flatnonzero(~np.isfinite(X).all(axis=0)):
            _d._check_finite(X[:, j], f"fixed-effects column {names[j]!r}", kept.index)
        for k, (codes, Z) in enumerate(per_term):
            t = enc.terms[k]
            for j in np.flatnonzero(~np.isfinite(Z).all(axis=0)):
                _d._check_finite(Z[:, j], f"column {t.column_names[j]!r} of random-effects term "
                                 f"({t.expr} | ...)", kept.index)
            if len(codes) and codes.min() < 0:  # pragma: no cover - pass 1 saw every level
                raise RuntimeError(f"a level of {t.group!r} is missing from the global encoding")
    return kept, y, X, per_term


def _pass2_partition(part: pd.DataFrame, plan: _Plan, enc: _Encoding) -> _Partial:
    _validate_partition(part, plan)
    kept, y, X, per_term = _encode_partition(part, plan, enc)
    if y is None:
        return _Partial(0, None, [], [], None)
    terms = [
        _d.RandomTerm(expr=t.expr, group=t.group, column_names=t.column_names, levels=t.levels,
                      codes=codes, Z=Z, group_vars=t.group_vars, correlated=t.correlated)
        for t, (codes, Z) in zip(enc.terms, per_term)
    ]
    st = RandomEffectsStructure(terms)
    n_global = [f.n_levels for f in st.factors]
    # local level numbering: only the levels present in this partition get blocks
    ids_of = []
    for f in st.factors:
        codes = np.asarray(f.codes)
        if f.n_levels <= 4 * len(codes):
            present = np.bincount(codes, minlength=f.n_levels) > 0
            ids = np.flatnonzero(present)
            local = (np.cumsum(present) - 1)[codes]
        else:
            ids, local = np.unique(codes, return_inverse=True)
        f.codes = np.ascontiguousarray(local, dtype=np.int64)
        f.levels = ids
        ids_of.append(ids.astype(np.int64))
    n, p = X.shape
    factors, gram = [], None
    for fi, f in enumerate(st.factors):
        zz_hi, zz_lo, zxy_hi, zxy_lo, g_hi, g_lo = factor_sums(f, X, y, fi == 0, 1)
        factors.append((ids_of[fi], zz_hi, zz_lo, zxy_hi, zxy_lo))
        if fi == 0:
            gram = (g_hi, g_lo)
    pairs = []
    for b in range(len(st.factors)):
        for a in range(b):
            local, hi, lo = pair_sums(st, b, a)
            n_a_local, n_a = np.int64(st.factors[a].n_levels), np.int64(n_global[a])
            keys = ids_of[b][local // n_a_local] * n_a + ids_of[a][local % n_a_local]
            order = np.argsort(keys, kind="stable")
            pairs.append((b, a, keys[order], np.ascontiguousarray(hi[order]),
                          np.ascontiguousarray(lo[order])))
    R = np.linalg.qr(X, mode="r") if p else np.zeros((0, 0))
    return _Partial(n, gram, factors, pairs, R)


def _sorted_union(id_arrays: list) -> np.ndarray:
    """Union of sorted int64 arrays (linear: timsort merges the sorted runs)."""
    ids = np.concatenate(id_arrays)
    ids.sort(kind="stable")
    if len(ids) > 1:
        ids = ids[np.r_[True, ids[1:] != ids[:-1]]]
    return ids


def _merge_keyed(items: list):
    """[(ids, hi_1, lo_1, hi_2, lo_2, ...), ...] in partition order -> (union of ids, the
    double-doubles (hi_j, lo_j) summed per id).

    Each id's blocks are added in the order of `items` (deterministic)."""
    items = [t for t in items if t is not None]
    if len(items) == 1:
        return items[0]
    first = items[0][0]
    if all(len(t[0]) == len(first) and np.array_equal(t[0], first) for t in items[1:]):
        out = [x.copy() for x in items[0][1:]]
        for t in items[1:]:
            for j in range(0, len(out), 2):
                add_compensated(out[j], out[j + 1], t[j + 1], t[j + 2])
        return (first,) + tuple(out)
    ids = _sorted_union([t[0] for t in items])
    out = [np.zeros((len(ids),) + x.shape[1:]) for x in items[0][1:]]
    for t in items:
        pos = np.searchsorted(ids, t[0])
        for j in range(0, len(out), 2):
            hi, lo = out[j][pos], out[j + 1][pos]
            add_compensated(hi, lo, t[j + 1], t[j + 2])
            out[j][pos], out[j + 1][pos] = hi, lo
    return (ids,) + tuple(out)


def _merge_partials(*parts: _Partial) -> _Partial:
    """Sum partials in double-double, in the order given (partition order)."""
    parts = [p for p in parts if p.n_obs > 0] or [parts[0]]
    if len(parts) == 1:
        return parts[0]
    hi, lo = parts[0].gram[0].copy(), parts[0].gram[1].copy()
    for p in parts[1:]:
        add_compensated(hi, lo, *p.gram)
    gram = (hi, lo)
    n_f = len(parts[0].factors)
    factors = [_merge_keyed([p.factors[f] for p in parts]) for f in range(n_f)]
    pairs = []
    for k, (b, a, *_) in enumerate(parts[0].pairs):
        ids, hi, lo = _merge_keyed([p.pairs[k][2:] for p in parts])
        pairs.append((b, a, ids, hi, lo))
    stacked = np.vstack([p.R for p in parts])
    R = np.linalg.qr(stacked, mode="r") if stacked.shape[0] > stacked.shape[1] else stacked
    return _Partial(sum(p.n_obs for p in parts), gram, factors, pairs, R)


def _assemble(total: _Partial, structure: RandomEffectsStructure) -> CrossProducts:
    """The reduced partials as the CrossProducts of the whole data (dense per-level blocks),
    each double-double rounded once (as `CrossProducts.compute` does)."""
    p = total.gram[0].shape[0] - 1
    zz, zxy = [], []
    for f, (ids, zz_hi, zz_lo, zxy_hi, zxy_lo) in zip(structure.factors, total.factors):
        if len(ids) != f.n_levels or not np.array_equal(ids, np.arange(f.n_levels)):
            raise RuntimeError(f"levels of {f.group!r} without rows after the reduction")  # pragma: no cover
        zz.append(zz_hi + zz_lo)
        zxy.append(zxy_hi + zxy_lo)
    pairs = []
    for b, a, keys, hi, lo in total.pairs:
        n_a = np.int64(structure.factors[a].n_levels)
        pairs.append(PairBlocks(b, a, keys // n_a, keys % n_a, hi + lo))
    gram = total.gram[0] + total.gram[1]  # symmetric: the kernel mirrors both parts
    return CrossProducts(total.n_obs, p, zz, zxy, gram, pairs)


# ======================================================================================
# Rank deficiency on the reduced system
# ======================================================================================


def _kept_columns(gram: np.ndarray, R: np.ndarray, n_obs: int) -> np.ndarray:
    """Columns of X lme4 keeps: `design._aliased_columns` from X'X and M (M'M = X'X)."""
    p = gram.shape[0] - 1
    if p == 0:
        return np.arange(0)
    if _d.clearly_full_rank(gram[:p, :p], n_obs):
        return np.arange(p)
    rank, pivot = _d._dqrdc2_rank(R)
    return pivot[:rank]


def _drop_columns(cp: CrossProducts, keep: np.ndarray) -> CrossProducts:
    cols = np.r_[keep, cp.n_fixed]
    return CrossProducts(
        cp.n_obs, len(keep), cp.zz, [np.ascontiguousarray(z[:, :, cols]) for z in cp.zxy],
        np.ascontiguousarray(cp.gram[np.ix_(cols, cols)]), cp.pairs)


# ======================================================================================
# The design of a distributed fit: encodings and sizes, no rows
# ======================================================================================


@dataclass
class DaskDesign:
    """What a model fitted from a Dask DataFrame keeps of its design: encodings, not rows.

    Has the attributes of `bigmixed.design.Design` except the row arrays: `X`, `y` and
    `row_index` raise AttributeError (fitted values and residuals are computed per partition).
    """

    formula: str
    response: str
    fixed_names: list
    terms: list
    n_dropped: int
    n_rows: int
    n_kept: int
    fixed_spec: Any = None
    term_specs: list = field(default_factory=list)
    parsed: Any = None
    dropped_fixed: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    @property
    def n_obs(self) -> int:
        return self.n_kept

    @property
    def X(self):
        raise AttributeError(_NO_ROWS.format(what="the rows of X"))

    @property
    def y(self):
        raise AttributeError(_NO_ROWS.format(what="the responses"))

    @property
    def row_index(self):
        raise AttributeError(_NO_ROWS.format(what="row labels"))


# ======================================================================================
# Model and results
# ======================================================================================


class DaskLinearMixedModel(LinearMixedModel):
    """A linear mixed model set up from a Dask DataFrame (two passes over the partitions).

    Build with ``bm.lmm(formula, data=ddf)`` or `lmm_dask`. After construction the model is an
    ordinary `LinearMixedModel` on the reduced cross-products; ``fit()`` runs in this process
    and returns a `DaskLMMResults`. ``timings`` has "transforms" (pass 0: the state of scale(),
    center(), poly(); 0 without them), "levels" (pass 1), "crossprod" (pass 2 with the
    reduction) and "analyse".
    """

    def fit(self, **kwargs) -> "DaskLMMResults":
        res = super().fit(**kwargs)
        out = DaskLMMResults.__new__(DaskLMMResults)
        out.__dict__.update(res.__dict__)
        return out


def lmm_dask(formula: str, data, *, reml: bool = True, solver: str = "auto",
             split_every: int = 8) -> DaskLinearMixedModel:
    """Set up a linear mixed model from a Dask DataFrame; call ``.fit()`` on the result.

    Runs on the active Dask scheduler (a distributed Client if one is set, else Dask's default).
    `split_every` is the fan-in of the reduction tree.
    """
    _require_dask()
    from dask import compute, delayed

    if not is_dask_dataframe(data):
        raise _d.DataTypeError(f"data must be a Dask DataFrame, got {type(data).__name__}")
    t0 = time.perf_counter()
    meta = data._meta
    plan = _make_plan(formula, meta)
    if data.npartitions == 0:  # pragma: no cover - dask always has >= 1 partition
        raise EmptyDataError("the Dask DataFrame has no partitions")
    frame = data[plan.used]
    if plan.stateful:  # pass 0: scale(), center(), poly() need their state over all rows
        plan.transform_state = _global_transform_state(frame, plan, split_every)
    t_state = time.perf_counter()
    parts = frame.to_delayed()
    plan_d = _shared(plan)

    # ---- pass 1: rows kept and global levels
    lv_parts = [delayed(_pass1_partition, pure=True)(p, plan_d) for p in parts]
    (lv,) = compute(_tree(lv_parts, _merge_levels, split_every))
    if lv.n_rows == 0:
        raise EmptyDataError(
            f"the data frame has no rows (columns: {_d._fmt_values(list(meta.columns), 8)})")
    enc = _global_encoding(plan, lv)
    t1 = time.perf_counter()
    terms = enc.terms
    flist = {}
    for t in terms:
        if t.group_vars not in flist:
            flist[t.group_vars] = (t.group, t.n_levels, t.levels)
    _d._check_grouping(flist, terms, lv.n_kept)  # lme4's checks on the global counts
    if lv.n_expr_nan:
        warnings.warn(f"{lv.n_expr_nan} row(s) where an expression evaluates to NaN are dropped "
                      "(like R's na.omit after 'NaNs produced')", RuntimeWarning,
                      stacklevel=_d._user_stacklevel())

    # ---- pass 2: cross-products, reduced in a fixed tree
    enc_d = _shared(enc)
    cp_parts = [delayed(_pass2_partition, pure=True)(p, plan_d, enc_d) for p in parts]
    (total,) = compute(_tree(cp_parts, _merge_partials, split_every))
    t2 = time.perf_counter()
    if total.n_obs != lv.n_kept:  # pragma: no cover - both passes apply the same mask
        raise RuntimeError(f"pass 2 saw {total.n_obs} rows, pass 1 kept {lv.n_kept}")
    structure = RandomEffectsStructure(terms)
    cp = _assemble(total, structure)

    # ---- aliased fixed-effects columns (lme4's check.rankX = "message+drop.cols")
    tpl = enc.template
    names = list(tpl.fixed_names)
    keep = _kept_columns(cp.gram, total.R, cp.n_obs)
    design_warnings, dropped = [], []
    if len(keep) < len(names):
        dropped = [names[j] for j in range(len(names)) if j not in set(keep.tolist())]
        n_drop = len(dropped)
        w = RankDeficiencyWarning(
            "fixed-effect model matrix is rank deficient so dropping "
            + (f"{n_drop} column / coefficient" if n_drop == 1 else f"{n_drop} columns / coefficients")
            + f": {', '.join(dropped)} (a linear combination of the columns before "
            + ("it" if n_drop == 1 else "them") + ")")
        warnings.warn(w, stacklevel=_d._user_stacklevel())
        design_warnings.append(w)
        cp = _drop_columns(cp, keep)
        ms = tpl.fixed_spec.matrix
        ms.all_names = list(ms.names)
        ms.names = [names[j] for j in keep]
        ms.keep = keep
        names = list(ms.names)

    design = DaskDesign(
        formula=formula, response=plan.response, fixed_names=names, terms=terms,
        n_dropped=lv.n_rows - lv.n_kept, n_rows=lv.n_rows, n_kept=lv.n_kept,
        fixed_spec=tpl.fixed_spec, term_specs=tpl.term_specs, parsed=tpl.parsed,
        dropped_fixed=dropped, warnings=design_warnings,
    )
    model = DaskLinearMixedModel.from_crossproducts(design, cp, structure, reml=reml, solver=solver)
    model.data = data
    model._plan = plan
    model._encoding = enc
    model.n_partitions = data.npartitions
    model.timings = dict(model.timings, transforms=t_state - t0, levels=t1 - t_state,
                         crossprod=t2 - t1)
    return model


def _fitted_partition(part: pd.DataFrame, plan: _Plan, enc: _Encoding, beta, modes, factor_terms,
                      what: str) -> pd.DataFrame:
    kept, y, X, per_term = _encode_partition(part, plan, enc, check=False)
    if y is None:
        return pd.DataFrame({c: np.empty(0) for c in _FITTED_COLUMNS[what]}, index=kept.index)
    marginal = X @ beta
    fitted = marginal.copy()
    for fi, term_ids in enumerate(factor_terms):
        codes = per_term[term_ids[0]][0]
        Z = per_term[term_ids[0]][1] if len(term_ids) == 1 else np.hstack([per_term[k][1] for k in term_ids])
        fitted += np.einsum("ij,ij->i", Z, modes[fi][codes])
    cols = {"fitted": fitted, "resid": y - fitted, "fitted_marginal": marginal,
            "resid_marginal": y - marginal}
    return pd.DataFrame({c: cols[c] for c in _FITTED_COLUMNS[what]}, index=kept.index)


def _fitted_task(part, ctx, what):
    plan, enc, beta, modes, factor_terms = ctx
    return _fitted_partition(part, plan, enc, beta, modes, factor_terms, what)


_FITTED_COLUMNS = {
    "fitted": ["fitted"],
    "resid": ["resid"],
    "all": ["fitted", "resid", "fitted_marginal", "resid_marginal"],
    "fitted_resid": ["fitted", "resid"],
}


class DaskLMMResults(LMMResults):
    """A fit from a Dask DataFrame: every LMMResults estimate (from the reduced system), and
    fitted values / residuals as Dask collections computed per partition (never collected).

    Rows dropped for missing values are absent from the fitted values (as in memory); the
    index is the Dask DataFrame's.
    """

    def _frame(self, what: str):
        import dask.dataframe as dd
        from dask import delayed

        model = self.model
        st = model.structure
        modes = [np.ascontiguousarray(b) for b in self._modes]
        factor_terms = [list(f.term_ids) for f in st.factors]
        ctx = _shared((model._plan, model._encoding, np.asarray(self.beta), modes, factor_terms))
        meta = pd.DataFrame({c: np.empty(0) for c in _FITTED_COLUMNS[what]})
        frame = model.data[model._plan.used]
        meta.index = frame._meta.index
        parts = [delayed(_fitted_task, pure=True)(p, ctx, what) for p in frame.to_delayed()]
        divisions = frame.divisions if frame.known_divisions else None
        return dd.from_delayed(parts, meta=meta, divisions=divisions, verify_meta=False)

    def fitted_dask(self, level: str = "conditional"):
        """Fitted values as a dask Series (X beta + Z b; level="population": X beta)."""
        if level not in ("conditional", "population"):
            raise ValueError("level must be 'conditional' or 'population'")
        col = "fitted" if level == "conditional" else "fitted_marginal"
        return self._frame("all")[col].rename("fitted")

    def resid_dask(self, level: str = "conditional"):
        """Residuals y - fitted as a dask Series."""
        if level not in ("conditional", "population"):
            raise ValueError("level must be 'conditional' or 'population'")
        col = "resid" if level == "conditional" else "resid_marginal"
        return self._frame("all")[col].rename("resid")

    def fitted_frame_dask(self):
        """A dask DataFrame with columns fitted, resid, fitted_marginal, resid_marginal."""
        return self._frame("all")

    def write_fitted(self, path, **to_parquet_kwargs):
        """Write fitted values and residuals (columns fitted, resid) per partition to Parquet."""
        return self._frame("fitted_resid").to_parquet(path, **to_parquet_kwargs)

    def resid_quantiles(self):
        """Min, quartiles and max of the scaled residuals (one pass; Dask's quartiles are
        approximate, min and max exact). Cached; the summary shows them."""
        if getattr(self, "_resid_quantiles", None) is None:
            import dask

            r = self.resid_dask() / self.sigma
            lo, q, hi = dask.compute(r.min(), r.quantile([0.25, 0.5, 0.75]), r.max())
            self._resid_quantiles = np.r_[lo, np.asarray(q), hi]
        return self._resid_quantiles

    @property
    def fitted_marginal(self):
        raise AttributeError(_NO_ROWS.format(what="fitted values"))

    @property
    def fittedvalues(self):
        raise AttributeError(_NO_ROWS.format(what="fitted values"))

    @property
    def resid(self):
        raise AttributeError(_NO_ROWS.format(what="residuals"))

    @property
    def resid_scaled(self):
        raise AttributeError(_NO_ROWS.format(what="residuals"))

    def summary(self, ddf: str | None = None) -> str:
        """lme4's summary; the scaled-residual quartiles come from one more pass (see
        `resid_quantiles`)."""
        if ddf is not None:
            return super().summary(ddf)
        from .summary import format_summary

        return format_summary(_QuantileView(self, self.resid_quantiles()))

    def __repr__(self) -> str:
        kind = "REML" if self.reml else "ML"
        return (f"<DaskLMMResults {kind} {self.formula!r}: objective {self.objective:.4f}, "
                f"nobs {self.nobs}, {self.model.n_partitions} partitions>")


class _QuantileView:
    def __init__(self, fit, q):
        self._fit = fit
        self.resid_scaled = q

    def __getattr__(self, name):
        return getattr(self._fit, name)


# ======================================================================================
# A local cluster sized to the machine
# ======================================================================================


def _machine_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


def local_cluster(memory_limit=None, n_workers: int | None = None, threads_per_worker: int = 1,
                  processes: bool = True, client: bool = True, **kwargs):
    """Start a dask.distributed LocalCluster sized to this machine and (by default) a Client.

    memory_limit: the *total* for all workers, bytes or a string such as "6GiB" (default: 3/4
    of the machine's memory); each worker gets an equal share. n_workers defaults to the
    number of cores, one thread each (the kernels are single-threaded inside a task).
    Returns the Client (which is then the active scheduler; ``client.cluster`` is the
    cluster), or the LocalCluster with client=False. Close it with ``.close()`` (and
    ``client.cluster.close()``) or use it as a context manager.
    """
    _require_dask()
    from dask.utils import parse_bytes
    from distributed import Client, LocalCluster

    n_workers = int(n_workers or os.cpu_count() or 1)
    total = int(0.75 * _machine_memory()) if memory_limit is None else (
        parse_bytes(memory_limit) if isinstance(memory_limit, str) else int(memory_limit))
    per_worker = max(total // n_workers, 256 << 20)
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                           processes=processes, memory_limit=per_worker, **kwargs)
    return Client(cluster) if client else cluster
