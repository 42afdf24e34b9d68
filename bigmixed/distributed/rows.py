"""The rows of a fit from a Dask DataFrame: fitted values and residuals computed per partition,
as Dask collections, never collected."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..results.rows import QUANTILES, RowSource
from .crossprods import encode_partition
from .levels import GlobalEncoding
from .plan import NO_ROWS_MESSAGE, Plan, prior_values, share


def _fitted_partition(part: pd.DataFrame, plan: Plan, enc: GlobalEncoding, beta, modes, factor_terms,
                      what: str) -> pd.DataFrame:
    kept, y, X, per_term = encode_partition(part, plan, enc, check=False)
    if y is None:
        return pd.DataFrame({c: np.empty(0) for c in _FITTED_COLUMNS[what]}, index=kept.index)
    marginal = X @ beta
    w, off = prior_values(kept, plan)
    if off is not None:  # fitted values include the offset
        marginal += off
    fitted = marginal.copy()
    for fi, term_ids in enumerate(factor_terms):
        codes = per_term[term_ids[0]][0]
        Z = per_term[term_ids[0]][1] if len(term_ids) == 1 else np.hstack([per_term[k][1] for k in term_ids])
        fitted += np.einsum("ij,ij->i", Z, modes[fi][codes])
    cols = {"fitted": fitted, "resid": y - fitted, "fitted_marginal": marginal,
            "resid_marginal": y - marginal}
    if what == "pearson":  # lme4's Pearson residuals sqrt(w) (y - fitted)
        cols["pearson"] = cols["resid"] if w is None else np.sqrt(w) * cols["resid"]
    return pd.DataFrame({c: cols[c] for c in _FITTED_COLUMNS[what]}, index=kept.index)


def _fitted_task(part, ctx, what):
    plan, enc, beta, modes, factor_terms = ctx
    return _fitted_partition(part, plan, enc, beta, modes, factor_terms, what)


_FITTED_COLUMNS = {
    "fitted": ["fitted"],
    "resid": ["resid"],
    "all": ["fitted", "resid", "fitted_marginal", "resid_marginal"],
    "fitted_resid": ["fitted", "resid"],
    "pearson": ["pearson"],
}


class DaskRows(RowSource):
    """A fit's rows in a Dask DataFrame: the frame, the plan (columns, kept rows) and the global
    encoding; row-level quantities are computed per partition on request."""

    kind = "dask"
    message = NO_ROWS_MESSAGE

    def __init__(self, data, plan: Plan, encoding: GlobalEncoding):
        self.data = data
        self.plan = plan
        self.encoding = encoding

    @property
    def n_partitions(self) -> int:
        return self.data.npartitions

    def dask_frame(self, fit, what: str):
        import dask.dataframe as dd
        from dask import delayed

        st = fit.structure
        modes = [np.ascontiguousarray(b) for b in fit.conditional_modes]
        factor_terms = [list(f.term_ids) for f in st.factors]
        ctx = share((self.plan, self.encoding, np.asarray(fit.beta), modes, factor_terms))
        meta = pd.DataFrame({c: np.empty(0) for c in _FITTED_COLUMNS[what]})
        frame = self.data[self.plan.used]
        meta.index = frame._meta.index
        parts = [delayed(_fitted_task, pure=True)(p, ctx, what) for p in frame.to_delayed()]
        divisions = frame.divisions if frame.known_divisions else None
        return dd.from_delayed(parts, meta=meta, divisions=divisions, verify_meta=False)

    def scaled_residual_quantiles(self, fit) -> np.ndarray:
        """Min, quartiles and max of the scaled residuals in one pass (Dask's quartiles are
        approximate, min and max exact)."""
        import dask

        if self.plan.prior is not None and self.plan.prior.has_weights:
            r = self.dask_frame(fit, "pearson")["pearson"] / fit.sigma  # as in memory
        else:
            r = fit.resid_dask() / fit.sigma
        lo, q, hi = dask.compute(r.min(), r.quantile(list(QUANTILES[1:-1])), r.max())
        return np.r_[lo, np.asarray(q), hi]
