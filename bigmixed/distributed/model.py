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

import time
import warnings
from dataclasses import dataclass, field
from typing import Any
import numpy as np
import pandas as pd
from ..errors import EmptyDataError
from ..fitting.model import LinearMixedModel
from ..results.fit import LMMResults
from ..spec.structure import RandomEffectsStructure
from ..warnings import RankDeficiencyWarning
from .plan import _NO_ROWS, _make_plan, _shared, _tree, is_dask_dataframe
from .crossprods import _assemble, _drop_columns, _encode_partition, _kept_columns, _merge_partials, _pass2_partition
from .levels import _global_encoding, _merge_levels, _pass1_partition
from .transforms import _global_transform_state
from .levels import _Encoding
from .plan import _Plan, _require_dask
from ..errors import DataTypeError
from ..spec.checks import check_grouping, format_values, user_stacklevel

__all__ = [
    "DaskLinearMixedModel",
    "DaskLMMResults",
    "DaskDesign",
    "is_dask_dataframe",
    "lmm_dask",
    "local_cluster",
]


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
        raise DataTypeError(f"data must be a Dask DataFrame, got {type(data).__name__}")
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
            f"the data frame has no rows (columns: {format_values(list(meta.columns), 8)})")
    enc = _global_encoding(plan, lv)
    t1 = time.perf_counter()
    terms = enc.terms
    flist = {}
    for t in terms:
        if t.group_vars not in flist:
            flist[t.group_vars] = (t.group, t.n_levels, t.levels)
    check_grouping(flist, terms, lv.n_kept)  # lme4's checks on the global counts
    if lv.n_expr_nan:
        warnings.warn(f"{lv.n_expr_nan} row(s) where an expression evaluates to NaN are dropped "
                      "(like R's na.omit after 'NaNs produced')", RuntimeWarning,
                      stacklevel=user_stacklevel())

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
        warnings.warn(w, stacklevel=user_stacklevel())
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
        from ..io.summary import format_summary

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
