"""The entry points that pick a model for the data: in memory or Dask."""
from __future__ import annotations

from .fitting.glmm import GeneralizedLinearMixedModel
from .fitting.model import LinearMixedModel
from .pages import small_pages


def is_dask_dataframe(data) -> bool:
    """A Dask DataFrame (bigmixed.distributed, and Dask, are imported only for one)."""
    if not (type(data).__module__ or "").startswith("dask"):
        return False
    from .distributed.plan import is_dask_dataframe as check

    return check(data)


def lmm(formula: str, data, *, reml: bool = True, solver: str = "auto", residual=None,
        variance=None, weights=None, offset=None, family=None) -> LinearMixedModel:
    """Set up a linear mixed model; call ``.fit()`` on the result.

    `data` is a pandas DataFrame, or a Dask DataFrame (e.g. ``dd.read_parquet(...)``): then the
    cross-products are computed per partition on the active Dask scheduler and summed (see
    bigmixed.distributed). `residual` (bm.AR1, bm.CompoundSymmetry) and `variance`
    (bm.VarIdent) add nlme's residual structures (see bigmixed.residual).

    `weights` (prior weights: a column name, an expression of columns or an array; the residual
    variance of row i is sigma^2 / w_i) and `offset` (a column, expression or array added to the
    linear predictor; ``offset(x)`` terms in the formula too) follow lme4's ``lmer(weights=,
    offset=)``: the same REML criterion (with lme4's -sum(log w_i) term), estimates and SEs.

    Options of the wrong type (``reml="yes"``, ``solver=3``) and ``family=`` (a GLMM: bm.glmm)
    raise bm.OptionError; a Polars DataFrame or pyarrow Table is converted to pandas, only the
    columns the model names."""
    from .spec.checks import as_pandas, check_lmm_options

    check_lmm_options("bm.lmm", reml=reml, solver=solver, family=family, residual=residual,
                      variance=variance)
    data = as_pandas(data, formula, weights, offset, *_residual_column_names(residual, variance))
    if is_dask_dataframe(data):
        if residual is not None or variance is not None:
            raise NotImplementedError("residual structures (residual=, variance=) are not "
                                      "supported with Dask data yet; fit from a pandas DataFrame")
        from .distributed.model import lmm_dask

        return lmm_dask(formula, data, reml=reml, solver=solver, weights=weights, offset=offset)
    return LinearMixedModel(formula, data, reml=reml, solver=solver, residual=residual,
                            variance=variance, weights=weights, offset=offset)


def _residual_column_names(residual, variance) -> list:
    """Columns a residual structure uses (for converting Polars / pyarrow input)."""
    if residual is None and variance is None:
        return []
    from .spec.residual import residual_columns

    return [c for c, _ in residual_columns(residual, variance)]


def glmm(formula: str, data, *, family="binomial", link=None, weights=None, offset=None,
         nAGQ: int = 1, solver: str = "auto", pirls: str = "auto",
         reml=None) -> GeneralizedLinearMixedModel:
    """Set up a generalized linear mixed model (lme4's glmer); call ``.fit()`` on the result.
    See `GeneralizedLinearMixedModel` for the arguments. `data` may be a Dask DataFrame
    (bigmixed.distributed.glmm: every PIRLS iteration one pass over the partitions). A Polars DataFrame or pyarrow Table
    is converted to pandas (only the columns the model names)."""
    from .spec.checks import as_pandas

    if reml is not None:  # explain it rather than a bare "unexpected keyword argument"
        from .errors import OptionError

        raise OptionError(f"bm.glmm: reml={reml!r} does not apply to a GLMM: it is fitted by "
                          "maximum likelihood (Laplace, or adaptive Gauss-Hermite quadrature with "
                          "nAGQ > 1), as glmer has no REML; drop reml=")
    data = as_pandas(data, formula, weights, offset)
    if is_dask_dataframe(data):
        from .distributed.glmm import glmm_dask

        return glmm_dask(formula, data, family=family, link=link, weights=weights, offset=offset,
                         nAGQ=nAGQ, solver=solver, pirls=pirls)
    with small_pages():
        return GeneralizedLinearMixedModel(formula, data, family=family, link=link,
                                           weights=weights, offset=offset, nAGQ=nAGQ,
                                           solver=solver, pirls=pirls)
