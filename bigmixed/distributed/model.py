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
    reading only the columns these expressions use (see `global_transform_state`).
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

import time
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd

from ..errors import DataTypeError, EmptyDataError
from ..fitting.model import LinearMixedModel
from ..spec.checks import check_grouping, format_values, user_stacklevel
from ..spec.structure import RandomEffectsStructure
from ..warnings import RankDeficiencyWarning
from .crossprods import (
    assemble,
    drop_columns,
    kept_columns,
    merge_partials,
    pass2_partition,
)
from .levels import global_encoding, merge_levels, pass1_partition
from .plan import make_plan, require_dask, share, reduce_tree, is_dask_dataframe, with_prior
from ..spec import glm_inputs
from .rows import DaskRows
from .transforms import global_transform_state

__all__ = ["drop_aliased", "lmm_dask", "prepare_levels"]


def prepare_levels(formula: str, data, *, weights=None, offset=None, split_every: int = 8):
    """Passes 0 and 1 over a Dask DataFrame: the plan (with the prior weights and offset), the
    global state of scale()/center()/poly(), the rows kept and the global encoding, checked as
    lme4 checks the grouping factors. Returns (plan, encoding, level counts, PriorSpec or None,
    the partitions as delayed objects, the shared plan, (time after pass 0, after pass 1))."""
    require_dask()
    from dask import compute, delayed

    if not is_dask_dataframe(data):
        raise DataTypeError(f"data must be a Dask DataFrame, got {type(data).__name__}")
    meta = data._meta
    prior = None
    for arg, value in (("weights=", weights), ("offset=", offset)):
        if value is not None and not isinstance(value, str):
            raise NotImplementedError(
                f"{arg} given as values is not supported with Dask data (the values cannot "
                f"follow the partitions): add them as a column and pass {arg}'<column>'")
    if isinstance(formula, str) and "~" in formula and glm_inputs.has_prior(formula, weights, offset):
        design_formula, _, _, prior = glm_inputs.lmm_inputs(formula, meta, weights=weights,
                                                            offset=offset)
        plan = with_prior(make_plan(design_formula, meta), prior, meta)
    else:
        plan = make_plan(formula, meta)
    if data.npartitions == 0:  # pragma: no cover - dask always has >= 1 partition
        raise EmptyDataError("the Dask DataFrame has no partitions")
    frame = data[plan.used]
    if plan.stateful:  # pass 0: scale(), center(), poly() need their state over all rows
        plan.transform_state = global_transform_state(frame, plan, split_every)
    t_state = time.perf_counter()
    parts = frame.to_delayed()
    plan_d = share(plan)

    # ---- pass 1: rows kept and global levels
    lv_parts = [delayed(pass1_partition, pure=True)(p, plan_d) for p in parts]
    (lv,) = compute(reduce_tree(lv_parts, merge_levels, split_every))
    if lv.n_rows == 0:
        raise EmptyDataError(
            f"the data frame has no rows (columns: {format_values(list(meta.columns), 8)})")
    enc = global_encoding(plan, lv)
    t1 = time.perf_counter()
    flist = {}
    for t in enc.terms:
        if t.group_vars not in flist:
            flist[t.group_vars] = (t.group, t.n_levels, t.levels)
    check_grouping(flist, enc.terms, lv.n_kept)  # lme4's checks on the global counts
    if lv.n_expr_nan:
        warnings.warn(f"{lv.n_expr_nan} row(s) where an expression evaluates to NaN are dropped "
                      "(like R's na.omit after 'NaNs produced')", RuntimeWarning,
                      stacklevel=user_stacklevel())
    return plan, enc, lv, prior, parts, plan_d, (t_state, t1)


def drop_aliased(tpl, cp, R):
    """lme4's check.rankX = "message+drop.cols" on the reduced system: the columns of X that
    are linear combinations of the columns before them are dropped from the cross-products
    and from the template's fixed-effects encoding (so that partitions encoded afterwards
    have only the kept columns), with a RankDeficiencyWarning. Returns (cross-products, kept
    names, dropped names, [warning])."""
    names = list(tpl.fixed_names)
    keep = kept_columns(cp.gram, R, cp.n_obs)
    design_warnings, dropped = [], []
    if len(keep) < len(names):
        dropped = [names[j] for j in range(len(names)) if j not in set(keep.tolist())]
        n_drop = len(dropped)
        w = RankDeficiencyWarning(
            "fixed-effect model matrix is rank deficient so dropping "
            + (f"{n_drop} column / coefficient" if n_drop == 1 else f"{n_drop} columns / coefficients")
            + f": {', '.join(dropped)} (a linear combination of the columns before "
            + ("it" if n_drop == 1 else "them") + ")")
        warnings.warn(w, stacklevel=user_stacklevel())
        design_warnings.append(w)
        cp = drop_columns(cp, keep)
        ms = tpl.fixed_spec.matrix
        ms.all_names = list(ms.names)
        ms.names = [names[j] for j in keep]
        ms.keep = keep
        names = list(ms.names)
    return cp, names, dropped, design_warnings


def lmm_dask(formula: str, data, *, reml: bool = True, solver: str = "auto",
             split_every: int = 8, weights=None, offset=None) -> LinearMixedModel:
    """Set up a linear mixed model from a Dask DataFrame; call ``.fit()`` on the result.

    The model is an ordinary `LinearMixedModel` on the reduced cross-products; its fits keep
    their rows in Dask (`bigmixed.distributed.rows.DaskRows`: fitted values and residuals per
    partition). ``timings`` has "transforms" (pass 0: the state of scale(), center(), poly();
    0 without them), "levels" (pass 1), "crossprod" (pass 2 with the reduction) and "analyse".
    Runs on the active Dask scheduler (a distributed Client if one is set, else Dask's default).
    `split_every` is the fan-in of the reduction tree. `weights` and `offset` (columns or
    expressions of columns; offset() terms in the formula too) are evaluated per partition, as
    bm.lmm evaluates them in memory (the same weighted cross-products, the same fit).
    """
    from dask import compute, delayed

    t0 = time.perf_counter()
    plan, enc, lv, prior, parts, plan_d, (t_state, t1) = prepare_levels(
        formula, data, weights=weights, offset=offset, split_every=split_every)
    terms = enc.terms
    meta = data._meta

    # ---- pass 2: cross-products, reduced in a fixed tree
    enc_d = share(enc)
    cp_parts = [delayed(pass2_partition, pure=True)(p, plan_d, enc_d) for p in parts]
    (total,) = compute(reduce_tree(cp_parts, merge_partials, split_every))
    t2 = time.perf_counter()
    if total.n_obs != lv.n_kept:  # pragma: no cover - both passes apply the same mask
        raise RuntimeError(f"pass 2 saw {total.n_obs} rows, pass 1 kept {lv.n_kept}")
    structure = RandomEffectsStructure(terms)
    cp = assemble(total, structure)

    # ---- aliased fixed-effects columns (lme4's check.rankX = "message+drop.cols")
    tpl = enc.template
    cp, names, dropped, design_warnings = drop_aliased(tpl, cp, total.R)

    # the design's encodings (the template's, with the global levels); its rows stay in Dask
    design = replace(
        tpl, formula=formula, response=plan.response, y=np.zeros(0),
        X=np.zeros((0, len(names))), fixed_names=names, terms=terms,
        n_dropped=lv.n_rows - lv.n_kept, row_index=pd.RangeIndex(0), dropped_fixed=dropped,
        warnings=design_warnings, extra={}, prior=prior,
    )
    rows = DaskRows(data, plan, enc)
    sum_log_w = None if total.logw is None else float(total.logw[0][0] + total.logw[1][0])
    model = LinearMixedModel.from_crossproducts(design, cp, structure, reml=reml, solver=solver,
                                                rows=rows, sum_log_weights=sum_log_w)
    model.timings = dict(model.timings, transforms=t_state - t0, levels=t1 - t_state,
                         crossprod=t2 - t1)
    return model
