"""Predictions, prediction intervals, simulation and parametric bootstrap from a fitted model.

New data are encoded exactly as the fitting data (``design_matrices_for_newdata``: same factor
levels, contrasts and stateful transforms); grouping levels not seen in the fit are handled by
`unseen`.

Variances of a prediction x'beta + z'b at row i (normal approximation, as merTools'
predictInterval but analytic instead of simulated)::

    fixed part        x' Var(beta) x
    seen level g      z' Var(b_g | y) z            (conditional variance, lme4's condVar)
    unseen level      z' G z                        (G = sigma^2 T T', the random-effects covariance)
    residual          sigma^2                       (prediction intervals only)

As in merTools, the conditional covariances between beta-hat and b-hat and between the random
effects of different grouping factors (crossed designs) are neglected: each grouping factor
contributes its own z'Var(b_g | y)z. With one grouping factor and population-level predictions
the variances are exact (given the variance parameters).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

LEVELS = ("conditional", "population")
UNSEEN = ("population", "nan", "error")


def _check(level, unseen):
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
    if unseen not in UNSEEN:
        raise ValueError(f"unseen must be one of {UNSEEN}, not {unseen!r}")


def _fixed_block(fit, newdata) -> np.ndarray:
    """X_new alone: population-level predictions need no grouping nor random-slope columns."""
    from ..spec.design import design_matrices_for_newdata

    return design_matrices_for_newdata(fit.design, _as_frame(newdata), fixed_only=True)[0]


def _as_frame(newdata):
    """newdata as pandas (a Polars DataFrame or pyarrow Table is converted)."""
    from ..spec.checks import as_pandas

    return as_pandas(newdata)


def _factor_blocks(fit, newdata):
    """X_new and, per grouping factor (structure order), (codes_new, Z_new with the factor's
    columns in the factor's order)."""
    from ..spec.design import design_matrices_for_newdata

    X_new, per_term = design_matrices_for_newdata(fit.design, newdata)
    return X_new, _blocks_from_terms(fit.structure, per_term)


def _blocks_from_terms(st, per_term) -> list:
    blocks = []
    for f in st.factors:
        codes = None
        parts = []
        for k in f.term_ids:  # in the factor's column order
            c, Z = per_term[k]
            codes = c if codes is None else codes
            parts.append(Z)
        Z = parts[0] if len(parts) == 1 else np.hstack(parts)
        blocks.append((np.asarray(codes, dtype=np.int64), np.ascontiguousarray(Z, dtype=np.float64)))
    return blocks


def _unseen_error(fit, newdata, fi, rows):
    f = fit.structure.factors[fi]
    term = next(t for t in fit.structure.terms if t.group == f.group)
    cols = list(term.group_vars)
    shown = newdata.iloc[rows[:5]][cols].astype(str).agg(":".join, axis=1).tolist()
    raise ValueError(
        f"{len(rows)} row(s) of the new data have a level of {f.group!r} not seen in the fit or "
        f"missing (e.g. {', '.join(shown)}); use unseen='population' (random effect 0, lme4's "
        "allow.new.levels = TRUE) or unseen='nan'")


def predict(fit, newdata=None, *, level: str = "conditional", unseen: str = "population") -> np.ndarray:
    """Predicted means for new data (or the fitting rows when newdata is None).

    level="conditional": X beta + Z b (the fitted levels' conditional modes); "population":
    X beta. unseen: what a level not seen in the fit (or a missing grouping value) gets with
    level="conditional": "population" (random effect 0, as lme4's allow.new.levels = TRUE),
    "nan", or "error". Rows with a missing covariate give NaN (R's na.pass).
    """
    _check(level, unseen)
    if newdata is None:
        return np.array(fit.fittedvalues if level == "conditional" else fit.fitted_marginal)
    newdata = _as_frame(newdata)
    if level == "population":  # lme4's re.form = NA: the fixed part only
        return _fixed_block(fit, newdata) @ fit.beta
    X_new, blocks = _factor_blocks(fit, newdata)
    mu = X_new @ fit.beta
    b = fit.conditional_modes
    for fi, (codes, Z) in enumerate(blocks):
        seen = codes >= 0
        if not seen.all():
            if unseen == "error":
                _unseen_error(fit, newdata, fi, np.flatnonzero(~seen))
            if unseen == "nan":
                mu[~seen] = np.nan
        rows = np.flatnonzero(seen)
        mu[rows] += np.einsum("ij,ij->i", Z[rows], b[fi][codes[rows]])
    return mu


def predict_interval(fit, newdata=None, *, level: str = "conditional", unseen: str = "population",
                     interval: str = "prediction", coverage: float = 0.95) -> pd.DataFrame:
    """Predictions with standard errors and normal intervals.

    interval="confidence": uncertainty of the predicted mean (population level: sqrt(x'Var(beta)x),
    the standard error of X beta-hat; conditional level: plus z'Var(b_g|y)z for seen levels and
    z'Gz for unseen ones). interval="prediction": a new observation, i.e. plus sigma^2, and at the
    population level plus z'Gz for every grouping factor (a new observation in a new group).

    Returns a DataFrame with columns fit, se, lower, upper (and se_fixed, var_random, var_residual).
    """
    from scipy import stats

    _check(level, unseen)
    if interval not in ("prediction", "confidence"):
        raise ValueError(f"interval must be 'prediction' or 'confidence', not {interval!r}")
    if not 0 < coverage < 1:
        raise ValueError("coverage must be in (0, 1)")
    st = fit.structure
    if newdata is None:
        d = fit.design
        X_new = d.X
        blocks = [(np.asarray(f.codes, dtype=np.int64),
                   np.ones((len(f.codes), 1)) if f.unit_z else f.Z) for f in st.factors]
        index = d.row_index
    elif level == "population":
        # no grouping columns needed: a new group's z'Gz (prediction intervals) needs Z only,
        # and only when some term has columns other than the intercept
        newdata = _as_frame(newdata)
        if interval == "confidence" or all(f.unit_z for f in st.factors):
            X_new = _fixed_block(fit, newdata)
            n = X_new.shape[0]
            blocks = [(np.full(n, -1, dtype=np.int64), np.ones((n, 1))) for f in st.factors]
        else:
            from ..spec.design import design_matrices_for_newdata

            X_new, per_term = design_matrices_for_newdata(fit.design, newdata, grouping=False)
            blocks = _blocks_from_terms(st, per_term)
        index = newdata.index
    else:
        newdata = _as_frame(newdata)
        X_new, blocks = _factor_blocks(fit, newdata)
        index = newdata.index
    mu = predict(fit, newdata, level=level, unseen=unseen)
    V = np.asarray(fit.vcov)
    var_fixed = np.einsum("ij,jk,ik->i", X_new, V, X_new)
    var_re = np.zeros(len(mu))
    cv = fit._condvar() if level == "conditional" else None
    for fi, (codes, Z) in enumerate(blocks):
        T = st.T_of(fit.theta, fi)
        G = fit.sigma ** 2 * T @ T.T
        zGz = np.einsum("ij,jk,ik->i", Z, G, Z)
        if level == "population":
            if interval == "prediction":
                var_re += zGz
            continue
        seen = codes >= 0
        rows = np.flatnonzero(seen)
        var_re[rows] += np.einsum("ij,ijk,ik->i", Z[rows], cv[fi][codes[rows]], Z[rows])
        var_re[~seen] += zGz[~seen]
    var_res = (fit.sigma ** 2 * _residual_ratio_sq(fit, newdata, len(mu))
               if interval == "prediction" else np.zeros(len(mu)))
    se = np.sqrt(var_fixed + var_re + var_res)
    z = stats.norm.ppf(0.5 + coverage / 2)
    out = pd.DataFrame({"fit": mu, "se": se, "lower": mu - z * se, "upper": mu + z * se,
                        "se_fixed": np.sqrt(var_fixed), "var_random": var_re,
                        "var_residual": var_res}, index=index)
    out.attrs.update(level=level, interval=interval, coverage=coverage)
    return out


def _residual_ratio_sq(fit, newdata, n) -> np.ndarray:
    """Residual variance of each row over sigma^2: 1, or the squared VarIdent SD ratio of the
    row's stratum (NaN for a stratum not seen in the fit)."""
    r = fit.residual
    if r is None or r.variance is None:
        from ..spec.glm_inputs import prior_arrays

        w = prior_arrays(fit.design)[0] if newdata is None else None
        return np.ones(n) if w is None else 1.0 / w  # prior weights: sigma^2 / w_i
    ratios = r.stratum_sd_ratio(fit.residual_eta)
    if newdata is None:
        from ..spec.glm_inputs import prior_arrays

        w = prior_arrays(fit.design)[0]  # prior weights: sigma^2 delta_s^2 / w_i
        strata = getattr(r, "strata", None)
        if strata is None:  # the fit's parameters hold no rows: the model's residual structure does
            strata = fit._require_model("the strata of its rows").residual.strata
        return ratios[strata] ** 2 if w is None else ratios[strata] ** 2 / w
    by = r.variance.by
    if by not in newdata.columns:
        from ..spec.checks import missing_column_error

        raise missing_column_error(by, "VarIdent stratum, needed for prediction intervals",
                                    newdata.columns)
    lookup = {str(lv): v for lv, v in zip(r.stratum_levels, ratios)}
    return np.array([lookup.get(str(v), np.nan) for v in newdata[by]]) ** 2


# ---- offsets (bm.lmm(offset=), offset() terms): added to every prediction on new data ------
_predict_without_offset = predict


def predict(fit, newdata=None, *, level: str = "conditional", unseen: str = "population") -> np.ndarray:  # noqa: F811
    """Predicted means for new data (or the fitting rows when newdata is None), including the
    model's offset: an offset() term or offset= column is evaluated on `newdata` (NaN where it
    is missing); see `_predict_without_offset` for `level` and `unseen`."""
    mu = _predict_without_offset(fit, newdata, level=level, unseen=unseen)
    prior = getattr(fit.design, "prior", None)
    if newdata is None or prior is None or not prior.has_offset:
        return mu
    if not isinstance(newdata, pd.DataFrame):
        from ..spec import checks

        convert = getattr(checks, "as_pandas", None)
        newdata = convert(newdata) if convert is not None else pd.DataFrame(newdata)
    return mu + prior.offset_for(newdata)
