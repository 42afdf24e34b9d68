"""Pass 1: the rows kept and the distinct values of the grouping columns and factor
covariates, merged over the partitions into the global encoding."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any
import numpy as np
import pandas as pd
from ..errors import DesignError, EmptyDataError
from .plan import Plan, kept_rows, validate_partition
from ..spec.design import RandomTerm, build_design
from ..spec.encoding import VarInfo, classify_column, code_dtype, factorize, group_codes, numeric_column
from ..spec.checks import check_group_column
from ..spec.formula import expression_names

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


def pass1_partition(part: pd.DataFrame, plan: Plan) -> _Levels:
    validate_partition(part, plan)
    keep, n_expr = kept_rows(part, plan)
    out = _Levels(n_rows=len(part), n_kept=int(keep.sum()), n_expr_nan=n_expr)
    out.na_counts = {v: int(part[v].isna().sum()) for v in plan.used}
    kept = part if out.n_kept == len(part) else part[keep]
    if out.n_kept == 0:
        return out
    out.first_row = kept[plan.used].iloc[:1]
    for v in plan.covariates:
        kind = classify_column(kept[v], v)
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


def merge_levels(*parts: _Levels) -> _Levels:
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


# ======================================================================================
# The global encoding: levels, group specs, and the template design
# ======================================================================================


@dataclass
class GlobalEncoding:
    template: Any  # a Design whose fixed_spec / term_specs encode new rows globally
    terms: list  # RandomTerm with global levels, no rows (codes empty, Z (0, P))
    var_info: dict


def global_encoding(plan: Plan, lv: _Levels) -> GlobalEncoding:
    if lv.n_kept == 0:
        detail = ", ".join(f"{v!r}: {c}" for v, c in lv.na_counts.items() if c)
        raise EmptyDataError(
            f"no rows left: every one of the {lv.n_rows} rows has a missing value in at least one "
            f"of the columns the model uses ({', '.join(repr(v) for v in plan.used)}); missing "
            f"values per column: {detail or 'none (transformations evaluate to NaN)'}"
        )
    # covariates: numeric unless some partition saw non-numbers (as classify_column on the whole column)
    var_info: dict = {}
    for v in plan.covariates:
        kinds = lv.kinds.get(v, {"numeric"})
        if "factor" in kinds:
            s = lv.uniques[v]
            if len(kinds) > 1:  # numbers in some partitions, text in others: R's character
                s = s.astype(object)
            _, labels, ordered = factorize(s)
            var_info[v] = VarInfo(v, "factor", labels, ordered)
        else:
            var_info[v] = VarInfo(v, "numeric")
    # grouping variables and expressions
    var_labels: dict = {}
    for v in plan.group_vars:
        s = lv.uniques[v]
        check_group_column(s, v)
        _, labels, _ = factorize(s)
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
                lc, lab, _ = factorize(table[v])
                pos = pd.Index(var_labels[v], dtype=object).get_indexer(pd.Index(lab, dtype=object))
                var_factors[v] = (pos[lc], var_labels[v])
        _, levels, gspec = group_codes(gv, var_factors)
        group_cache[gv] = (levels, gspec)

    template = _template_design(plan, lv, var_info)
    parsed = template.parsed
    terms = []
    for k, t in enumerate(parsed.terms):
        levels, gspec = group_cache[t.group_vars]
        template.term_specs[k].group_spec = gspec
        tt = template.terms[k]
        terms.append(RandomTerm(
            expr=t.expr, group=t.group, column_names=list(tt.column_names), levels=levels,
            codes=np.empty(0, dtype=code_dtype(len(levels))),
            Z=np.empty((0, tt.n_columns)), group_vars=t.group_vars, correlated=t.correlated,
        ))
    template.terms = terms
    return GlobalEncoding(template, terms, var_info)


def _template_design(plan: Plan, lv: _Levels, var_info: dict):
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
            vals = np.sort(numeric_column(lv.uniques[v], v))
            cols[v] = vals[np.arange(n) % len(vals)]
        elif info is not None or v == plan.response:
            cols[v] = np.full(n, float(numeric_column(first[v], v)[0]))
        else:  # grouping-only column
            cols[v] = np.arange(n) % 2
    frame = pd.DataFrame(cols, index=pd.RangeIndex(n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            tpl = build_design(plan.formula, frame, lme4_checks=False,
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
            used = [n for n in expression_names(expr) if n in columns]
            if any(n not in plan.level_columns and var_info[n].kind != "factor" for n in used):
                raise NotImplementedError(
                    f"{expr}: an expression that makes a factor of a numeric column is not "
                    "supported for Dask data; convert the column to a categorical (or strings) "
                    "before fitting")
    return tpl
