"""The user-facing fit: the seeds' tablet examples, tables, statsmodels names, determinism."""

import numpy as np
import pandas as pd
import pytest

import bigmixed as bm
from bigmixed.data_gen import generate_hdp, tablets


@pytest.fixture(scope="module")
def tablet_fit():
    return bm.lmm("y ~ method + (1 | tablet)", tablets()).fit()


def test_tablets_reproduce_published_lme4_output(tablet_fit):
    """Seed 004: lme4's summary of y ~ method + (1 | tablet), REML, nir the reference level."""
    fit = tablet_fit
    vc = fit.variance_components.set_index("group")
    assert round(vc.loc["tablet", "variance"], 6) == 0.089333
    assert round(vc.loc["Residual", "variance"], 6) == 0.043611
    assert round(vc.loc["tablet", "sd"], 5) == 0.29889
    assert round(vc.loc["Residual", "sd"], 5) == 0.20883
    fe = fit.fixed_effects.set_index("term")
    assert list(fe.index) == ["(Intercept)", "methodhplc"]
    assert round(fe.loc["(Intercept)", "estimate"], 5) == 10.39
    assert round(fe.loc["(Intercept)", "std_error"], 5) == 0.11530
    assert round(fe.loc["methodhplc", "estimate"], 5) == -0.05
    assert round(fe.loc["methodhplc", "std_error"], 5) == 0.09339
    assert round(fe.loc["(Intercept)", "t_value"], 2) == 90.11
    assert round(fit.corr_fixed.iloc[1, 0], 3) == -0.405
    assert fit.nobs == 20 and fit.n_groups == {"tablet": 10}


def test_tablets_with_missing_values_reproduce_published_nlme_output():
    """Seed 004, 20 tablets with unpaired measurements: nlme's lme REML numbers."""
    fit = bm.lmm("y ~ method + (1 | tablet)", tablets(missing=True)).fit()
    assert fit.n_dropped == 10 and fit.nobs == 30
    vc = fit.variance_components.set_index("group")
    # nlme stops about 3e-7 short of the optimum on the SD scale; lme4's high-precision fit
    # (bench/references/tablets_missing_reml.json, theta 1.53109488) gives 0.31924317.
    assert abs(vc.loc["tablet", "sd"] - 0.3192429) < 5e-7
    assert abs(vc.loc["Residual", "sd"] - 0.2085067) < 5e-7
    assert abs(fit.theta[0] - 1.53109488004712) < 1e-6
    np.testing.assert_allclose(fit.params.to_numpy(), [10.283857, -0.072111], atol=1e-6)
    np.testing.assert_allclose(fit.bse.to_numpy(), [0.09259174, 0.0869718], atol=5e-7)  # nlme is 3e-7 short
    assert round(fit.corr_fixed.iloc[1, 0], 2) == -0.47
    assert "10 observations deleted due to missingness" in fit.summary()


def test_summary_reads_like_lme4(tablet_fit):
    text = tablet_fit.summary()
    for piece in ["REML criterion at convergence: 13.9605", "Random effects:", "tablet", "Residual",
                  "Number of obs: 20, groups:  tablet, 10", "Fixed effects:", "methodhplc",
                  "Correlation of Fixed Effects:"]:
        assert piece in text


def test_statsmodels_names_agree_with_lme4_names(tablet_fit):
    fit = tablet_fit
    np.testing.assert_array_equal(fit.params.to_numpy(), fit.beta)
    np.testing.assert_allclose(fit.bse.to_numpy() ** 2, np.diag(fit.cov_params().to_numpy()))
    np.testing.assert_allclose(fit.tvalues.to_numpy(), fit.beta / fit.bse.to_numpy())
    assert fit.llf == pytest.approx(-fit.objective / 2)
    assert fit.aic == pytest.approx(fit.objective + 2 * 4)
    assert fit.bic == pytest.approx(fit.objective + 4 * np.log(20))
    np.testing.assert_allclose(fit.fittedvalues + fit.resid, fit.design.y)
    np.testing.assert_allclose(fit.resid_scaled, fit.resid / fit.sigma)
    # marginal fitted values are X beta; conditional add the tablet's BLUP
    b = fit.ranef()["tablet"]["(Intercept)"]
    codes = fit.structure.factors[0].codes
    np.testing.assert_allclose(fit.fittedvalues - fit.fitted_marginal, b.to_numpy()[codes])
    # coef() = fixed + random per level
    coef = fit.coef()["tablet"]
    np.testing.assert_allclose(coef["(Intercept)"].to_numpy(), fit.beta[0] + b.to_numpy())
    np.testing.assert_allclose(coef["methodhplc"].to_numpy(), fit.beta[1])


def test_blups_are_shrunken_group_means(tablet_fit):
    """Random intercept, balanced: b_g = w (ybar_g - mean fitted), w = s_b^2 / (s_b^2 + s^2 / n_g)."""
    fit = tablet_fit
    df = tablets()
    s_b2 = fit.variance_components.set_index("group").loc["tablet", "variance"]
    w = s_b2 / (s_b2 + fit.sigma**2 / 2)
    resid = df["y"].to_numpy() - fit.fitted_marginal
    group_mean = pd.Series(resid).groupby(df["tablet"].to_numpy()).mean()
    b = fit.ranef()["tablet"]["(Intercept)"]
    np.testing.assert_allclose(b.loc[group_mean.index].to_numpy(), w * group_mean.to_numpy(), rtol=1e-8)
    # conditional SD of a random intercept: sqrt(s_b^2 (1 - w))
    np.testing.assert_allclose(fit.ranef()["tablet"]["(Intercept)_sd"], np.sqrt(s_b2 * (1 - w)), rtol=1e-7)


def test_ml_and_reml_differ_as_they_should():
    df = tablets()
    reml = bm.lmm("y ~ method + (1 | tablet)", df).fit()
    ml = bm.lmm("y ~ method + (1 | tablet)", df, reml=False).fit()
    np.testing.assert_allclose(ml.beta, reml.beta, atol=1e-10)  # balanced: beta does not depend on theta
    assert ml.sigma < reml.sigma
    assert ml.deviance == ml.objective
    assert reml.deviance > ml.objective - 1e-9  # ML deviance is minimized by the ML fit


def test_same_data_same_numbers_bit_for_bit():
    df = generate_hdp(120, seed=3, n_visits=3, slope_sd=0.3, time_effect=0.1).data
    formula = "mobility ~ age + sex + time + (time | doctor)"
    a = bm.lmm(formula, df).fit()
    b = bm.lmm(formula, df).fit()
    assert a.objective == b.objective
    np.testing.assert_array_equal(a.theta, b.theta)
    np.testing.assert_array_equal(a.beta, b.beta)
    np.testing.assert_array_equal(a.ranef()["doctor"].to_numpy(), b.ranef()["doctor"].to_numpy())


def test_blockdiag_and_cholmod_paths_agree():
    df = generate_hdp(150, seed=4, n_visits=3, slope_sd=0.4, slope_corr=0.3, time_effect=0.2).data
    formula = "mobility ~ age + sex + time + (time | doctor)"
    a = bm.lmm(formula, df, solver="blockdiag").fit()
    b = bm.lmm(formula, df, solver="cholmod").fit()
    theta = a.theta
    assert a.model.objective(theta) == pytest.approx(b.model.objective(theta), rel=1e-12)
    assert abs(a.objective - b.objective) < 1e-8 * abs(a.objective)
    np.testing.assert_allclose(a.beta, b.beta, rtol=1e-6)
    np.testing.assert_allclose(a.ranef()["doctor"].to_numpy(), b.ranef()["doctor"].to_numpy(), rtol=1e-4, atol=1e-6)


def test_singular_fit_warns_and_records():
    df = generate_hdp(12, seed=7, mean_patients=42, min_patients=30, max_patients=54, doctor_sd=0.0).data
    with pytest.warns(bm.SingularFitWarning):
        fit = bm.lmm("mobility ~ age + sex + (1 | doctor)", df).fit()
    assert fit.is_singular
    assert any(isinstance(w, bm.SingularFitWarning) for w in fit.warnings)
    assert fit.theta[0] == 0.0


def test_optimizer_record(tablet_fit):
    rec = tablet_fit.optimizer
    assert rec.converged and rec.n_evaluations > 5
    np.testing.assert_array_equal(rec.params, tablet_fit.theta)
    assert rec.objective == pytest.approx(tablet_fit.objective, rel=1e-14)
