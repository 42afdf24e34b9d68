"""What a GLMM fit offers besides its estimates, against glmer (bench/references_glmm; the tests
never call R): residuals of each type, fitted values, predictions for new data on the link and
response scales, glmer's summary, Wald and profile intervals, anova; and simulate / bootstrap /
refit, which must not change the fit.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

import bigmixed as bm
from test_glmm_lme4 import GROUPS, REF, candidates, fit_like, load_data


@pytest.fixture(scope="module")
def fits():
    return {}


def best_converged(group, fits):
    """(glmer's best fit with per-row values, our fit, tolerance) where the optimum is
    glmer's: 1e-4 where glmer converged, 1e-3 where it stopped with a convergence message
    (its estimates are then ~1e-4 off; its log-likelihood agrees)."""
    refs = candidates(group)
    with_rows = [r for r in refs if "rows" in r]
    if not with_rows:
        pytest.skip(f"no per-row values in the references of {group}")
    ref = min(with_rows, key=lambda r: r["minus2logLik"])
    failed = any("failed to converge" in m for m in ref.get("conv_lme4_messages") or [])
    if group not in fits:
        fits[group] = fit_like(next(r for r in refs if "rescaled" not in r["name"]))
    fit = fits[group]
    if any(isinstance(w, bm.SeparationWarning) for w in fit.warnings):
        pytest.skip("separated data: no maximum")
    if abs(fit.objective - ref["minus2logLik"]) > 1e-6 * abs(ref["minus2logLik"]):
        pytest.skip("a different (better) optimum than glmer's: its rows do not apply")
    return ref, fit, (1e-3 if failed else 1e-4)


def close(a, b, tol=1e-4):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape
    assert np.all(np.abs(a - b) <= tol * np.maximum(1.0, np.abs(b))), np.max(np.abs(a - b))


@pytest.mark.parametrize("group", GROUPS)
def test_residuals_and_fitted_values_match_glmer(fits, group):
    ref, fit, tol = best_converged(group, fits)
    rows = ref["rows"]
    close(fit.fittedvalues, rows["fitted"], tol)
    close(fit.predict(), rows["linpred"], tol)
    close(fit.predict(type="response"), rows["fitted"], tol)
    for kind in ("deviance", "pearson", "response"):
        close(fit.residuals(kind), rows[f"resid_{kind}"], tol)
    np.testing.assert_array_equal(fit.resid, fit.residuals("deviance"))
    # working residuals: (y - mu) / mu.eta, so response = working * mu.eta
    mu, eta = fit.fittedvalues, fit.linear_predictor
    h = 1e-6
    mu_eta = (fit._linkinv(eta + h) - fit._linkinv(eta - h)) / (2 * h)
    np.testing.assert_allclose(fit.residuals("working") * mu_eta, fit.residuals("response"),
                               rtol=1e-6, atol=1e-9)
    # the deviance residuals' squares sum to lme4's deviance()
    assert np.sum(fit.resid ** 2) == pytest.approx(ref["deviance"], rel=tol / 10)


def new_frame(ref) -> pd.DataFrame:
    new = pd.DataFrame(ref["newdata"]["data"])
    for col, lv in (ref.get("factor_levels") or {}).items():
        if col in new:
            new[col] = pd.Categorical(new[col].astype(str).to_numpy(),
                                      categories=[str(x) for x in lv + ["NEWLEVEL"]
                                                  if str(x) in set(map(str, lv)) or x == "NEWLEVEL"])
    return new


@pytest.mark.parametrize("group", GROUPS)
def test_predictions_for_new_data_match_glmer(fits, group):
    ref, fit, tol = best_converged(group, fits)
    nd = ref.get("newdata")
    if not nd:
        pytest.skip("no new-data predictions in the reference")
    new = new_frame(ref)
    extra = 0.0
    if ref.get("offset_arg"):
        # lme4 1.1-31 leaves an offset= argument out of predictions for new data; bigmixed
        # evaluates it on the new rows as it does the formula's offset() terms
        from bigmixed.spec.glm_inputs import evaluate

        extra = evaluate(ref["offset_arg"], new, "offset=")
    for level, key in (("population", "re_na"), ("conditional", "re_null")):
        link = fit.predict(new, level=level, type="link")
        close(link, np.asarray(nd[f"{key}_link"]["values"]) + extra, tol)
        resp = fit.predict(new, level=level, type="response")
        np.testing.assert_allclose(resp, fit._linkinv(link), rtol=1e-15)
        if not ref.get("offset_arg"):
            close(resp, nd[f"{key}_response"]["values"], tol)


def cbpp_fit():
    ref = json.loads((REF / "cbpp_agq1_tight.json").read_text())
    return ref, fit_like(ref)


@pytest.fixture(scope="module")
def cbpp():
    return cbpp_fit()


def test_summary_reads_like_glmers(cbpp):
    ref, fit = cbpp
    text = fit.summary()
    assert "Generalized linear mixed model fit by maximum likelihood (Laplace Approximation)" in text
    assert "Family: binomial  ( logit )" in text
    assert "z value" in text and "Pr(>|z|)" in text and "t value" not in text
    assert "Residual" not in text  # no scale parameter
    assert f"{ref['AIC']:.1f}" in text and f"{ref['BIC']:.1f}" in text
    assert f"{ref['logLik']:.1f}" in text and f"{ref['minus2logLik']:.1f}" in text
    assert f"Number of obs: {ref['nobs']}, groups:  herd, 15" in text
    # the scaled residuals are Pearson residuals (lme4's summary)
    q = np.quantile(ref["rows"]["resid_pearson"], [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(fit.resid_quantiles(), q, atol=1e-6)
    with pytest.raises(ValueError, match="ddf does not apply"):
        fit.summary(ddf="satterthwaite")
    agq = fit_like(json.loads((REF / "cbpp_agq25_tight.json").read_text()))
    assert "Adaptive Gauss-Hermite Quadrature, nAGQ = 25" in agq.summary()


INF = json.loads((REF / "cbpp_inference.json").read_text())


def test_wald_and_profile_intervals_match_glmer():
    ref = json.loads((REF / "cbpp_agq1_default.json").read_text())
    fit = fit_like(ref)  # glmer's default control, as confint was run on
    wald = fit.confint("wald")
    w = INF["confint_wald"]
    assert list(wald["lme4_name"]) == w["rows"]
    assert wald["lower"].isna().iloc[0] and w["2.5 %"][0] is None
    close(wald["lower"].iloc[1:], w["2.5 %"][1:], 1e-4)
    close(wald["upper"].iloc[1:], w["97.5 %"][1:], 1e-4)
    prof = fit.confint("profile")
    p = INF["confint_profile"]
    assert list(prof["term"]) == p["rows"]
    assert list(prof.columns) == list(wald.columns)
    np.testing.assert_array_equal(prof["estimate"], wald["estimate"])
    # lme4 interpolates its profile with a spline; bigmixed finds each end point exactly
    np.testing.assert_allclose(prof["lower"], p["2.5 %"], rtol=2e-4)
    np.testing.assert_allclose(prof["upper"], p["97.5 %"], rtol=2e-4)
    assert "Laplace" in prof.attrs["description"]
    assert np.all(prof["lower"] < prof["estimate"]) and np.all(prof["estimate"] < prof["upper"])
    one = fit.confint("profile", which=["period2"])
    assert list(one["term"]) == ["period2"]
    assert one["lower"].iloc[0] == pytest.approx(prof.loc["period2", "lower"], rel=1e-7)


def test_anova_between_nested_glmms_matches_glmer():
    ref = json.loads((REF / "cbpp_agq1_default.json").read_text())
    data = load_data(ref)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        m0 = bm.glmm(INF["null_formula"], data, family="binomial").fit()
        m1 = bm.glmm(ref["formula"], data, family="binomial").fit()
    tab = bm.anova(m0, m1)
    a = INF["anova"]
    np.testing.assert_array_equal(tab["npar"].to_numpy(), a["npar"])
    # our optima are at or above glmer's default ones
    assert np.all(tab["logLik"].to_numpy() >= np.array(a["logLik"]) - 1e-6)
    close(tab["logLik"], a["logLik"], 1e-6)
    assert tab["Chisq"].iloc[1] == pytest.approx(a["Chisq"][1], rel=1e-4)
    assert tab["Pr(>Chisq)"].iloc[1] == pytest.approx(a["Pr(>Chisq)"][1], rel=1e-3)


def public_numbers(fit) -> dict:
    return {"theta": np.array(fit.theta), "beta": np.array(fit.beta), "vcov": np.array(fit.vcov),
            "objective": fit.objective, "eta": np.array(fit.linear_predictor),
            "modes": [np.array(b) for b in fit.conditional_modes],
            "summary": fit.summary()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], list):
            for x, y in zip(a[k], b[k]):
                np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_array_equal(a[k], b[k])


def test_simulate_draws_from_the_family_and_is_deterministic(cbpp):
    _, fit = cbpp
    sims = fit.simulate(200, seed=7)
    assert sims.shape == (fit.nobs, 200)
    np.testing.assert_array_equal(sims, fit.simulate(200, seed=7))
    trials = fit.model.prior_weights
    counts = sims * trials[:, None]
    np.testing.assert_allclose(counts, np.rint(counts), atol=1e-9)
    assert np.all((sims >= 0) & (sims <= 1))
    # keeping the fitted modes, the replicate means estimate the fitted means
    kept = fit.simulate(4000, seed=1, use_fitted_effects=True)
    se = np.sqrt(fit.fittedvalues * (1 - fit.fittedvalues) / trials / 4000)
    assert np.all(np.abs(kept.mean(axis=1) - fit.fittedvalues) < 5 * se + 1e-12)
    # new random effects: the marginal mean is above the mean at b = 0 where mu < 1/2 (logit)
    assert np.mean(sims) > np.mean(fit.fitted_marginal)


def test_poisson_simulation_gives_counts():
    ref = json.loads((REF / "grouseticks_agq1_tight.json").read_text())
    fit = fit_like(ref)
    sims = fit.simulate(50, seed=3)
    np.testing.assert_array_equal(sims, np.rint(sims))
    assert sims.min() >= 0
    kept = fit.simulate(2000, seed=2, use_fitted_effects=True)
    mu = fit.fittedvalues
    assert np.all(np.abs(kept.mean(axis=1) - mu) < 5 * np.sqrt(mu / 2000) + 1e-9)


def test_refit_bootstrap_and_profile_leave_the_fit_unchanged(cbpp):
    _, fit = cbpp
    before = public_numbers(fit)
    y = fit.simulate(1, seed=11)[:, 0]
    refit = fit.model.refit(y=y)
    fresh = fit.model.with_response(y).fit()
    assert_same(public_numbers(refit), public_numbers(fresh))
    again = fit.model.refit()
    np.testing.assert_array_equal(again.beta, fit.beta)
    boot = fit.bootstrap(8, seed=5, n_jobs=1)
    assert boot.n_failed == 0
    assert "sigma" not in boot.observed.index
    assert list(boot.observed.index) == ["sd_(Intercept)|herd", *fit.fixed_names]
    np.testing.assert_array_equal(boot.replicates.to_numpy(),
                                  fit.bootstrap(8, seed=5, n_jobs=2).replicates.to_numpy())
    fit.confint("profile", which=["period2"])
    bm.anova(fit, fit.model.refit())
    assert_same(public_numbers(fit), before)
    with pytest.raises(ValueError, match="reml=True does not apply"):
        fit.model.refit(reml=True)


@pytest.mark.parametrize("name", ["cbpp_agq1_tight", "cbpp_agq25_tight", "hdp_pois_offset_agq1_default",
                                  "hdp_pois_offarg_agq1_default", "contraception_slope_agq1_tight"])
def test_save_and_load_keep_a_glmm(name, tmp_path):
    ref = json.loads((REF / f"{name}.json").read_text())
    fit = fit_like(ref)
    loaded = bm.load(fit.save(tmp_path / "m.bmfit"))
    assert isinstance(loaded, bm.GLMMResults) and loaded._model is None
    assert loaded.family == fit.family and loaded.nAGQ == fit.nAGQ
    assert loaded.formula == fit.formula
    for attr in ("theta", "beta", "vcov"):
        np.testing.assert_array_equal(getattr(loaded, attr), getattr(fit, attr))
    assert loaded.objective == fit.objective and loaded.deviance == fit.deviance
    assert (loaded.aic, loaded.bic, loaded.n_params, loaded.df_resid) == \
        (fit.aic, fit.bic, fit.n_params, fit.df_resid)
    pd.testing.assert_frame_equal(loaded.fixed_effects, fit.fixed_effects)
    pd.testing.assert_frame_equal(loaded.variance_components, fit.variance_components)
    pd.testing.assert_frame_equal(loaded.confint("wald"), fit.confint("wald"))
    assert loaded.summary() == fit.summary()
    new = new_frame(ref) if ref.get("newdata") else load_data(ref).head(20)
    for level in ("population", "conditional"):
        for kind in ("link", "response"):
            np.testing.assert_array_equal(loaded.predict(new, level=level, type=kind),
                                          fit.predict(new, level=level, type=kind))
    assert loaded.to_dict(include_versions=False)["model"] == fit.to_dict(include_versions=False)["model"]
    with pytest.raises(AttributeError):
        loaded.residuals("pearson")
    with pytest.raises(Exception, match="model"):
        loaded.simulate(1)


def test_an_offset_given_as_values_must_be_given_again_for_new_data():
    ref = json.loads((REF / "hdp_pois_offarg_agq1_default.json").read_text())
    data = load_data(ref)
    off = np.log(data["exposure"].to_numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        fit = bm.glmm(ref["formula"], data, family="poisson", offset=off).fit()
    new = data.head(5)
    with pytest.raises(ValueError, match="pass offset="):
        fit.predict(new)
    by_column = fit_like(ref)
    np.testing.assert_allclose(fit.predict(new, offset=off[:5]), by_column.predict(new), rtol=1e-6)
    np.testing.assert_allclose(fit.predict(new, offset=off[:5]), fit.linear_predictor[:5], rtol=1e-12)


def test_a_loaded_glmm_saves_again_and_old_readers_refuse_it(cbpp, tmp_path):
    _, fit = cbpp
    first = bm.load(fit.save(tmp_path / "a.bmfit"))
    second = bm.load(first.save(tmp_path / "b.bmfit"))
    assert second.summary() == fit.summary()
    from bigmixed.io.modelfile import model_meta

    meta, _ = model_meta(fit)
    assert meta["format_version"] == 3 and meta["glmm"]["family"] == "binomial"


def test_anova_of_an_added_random_slope_uses_the_boundary_mixture():
    big = json.loads((REF / "contraception_slope_agq1_tight.json").read_text())
    small = json.loads((REF / "contraception_agq1_tight.json").read_text())
    tab = bm.anova(fit_like(small), fit_like(big))
    stat = small["minus2logLik"] - big["minus2logLik"]  # glmer's own fits
    assert tab["Chisq"].iloc[1] == pytest.approx(stat, rel=1e-6)
    from scipy import stats

    assert tab["Pr(>Chisq)"].iloc[1] == pytest.approx(stats.chi2.sf(stat, 2), rel=1e-5)
    mixture = 0.5 * stats.chi2.sf(stat, 1) + 0.5 * stats.chi2.sf(stat, 2)
    assert tab["Pr(>Chisq) boundary"].iloc[1] == pytest.approx(mixture, rel=1e-5)
    assert tab["null"].iloc[1] == "0.5 chi2(1) + 0.5 chi2(2)"


@pytest.mark.parametrize("family,link,formula", [
    ("binomial", "logit", "remission ~ age + married + wbc + (1 | doctor)"),
    ("binomial", "probit", "remission ~ age + married + wbc + (1 | doctor)"),
    ("binomial", "cloglog", "remission ~ age + married + (1 | doctor)"),
    ("poisson", "log", "n_events ~ age + married + offset(log(exposure)) + (0 + sex | doctor)")])
def test_exact_laplace_fits_use_the_analytic_gradient_and_end_at_its_zero(family, link, formula):
    from bigmixed.data_gen import generate_hdp

    df = generate_hdp(n_doctors=120, seed=4, binary=True, counts=True).data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        model = bm.glmm(formula, df, family=family, link=link, pirls="exact")
        fit = model.fit()
    assert model.has_analytic_gradient
    stage2 = fit.optimizer.stages[1]
    assert "analytic" in stage2.note and "analytic gradient" in fit.optimizer.method
    g = model.gradient(np.asarray(fit.optimizer.params))
    assert np.max(np.abs(g)) < 1e-4
    # the optimum of the criterion: no coordinate step lowers it
    x = np.asarray(fit.optimizer.params)
    for a in range(len(x)):
        for h in (1e-4, -1e-4):
            e = np.zeros_like(x)
            e[a] = h * max(1.0, abs(x[a]))
            assert model.objective(x + e) >= fit.objective - 1e-9
    again = model.refit()
    np.testing.assert_array_equal(again.beta, fit.beta)


def test_a_start_where_the_criterion_is_concave_in_theta_still_takes_the_quick_stage_2(
        monkeypatch):
    # Poisson counts with a doctor SD ~0.5: at lme4's start theta = 1 the exact Laplace
    # criterion is concave in theta; stage 2 runs from the start all the same (the theta
    # curvature by its magnitude), to the optimum the full stage 1 + stage 2 reach
    import bigmixed.fitting.glmm as glmm_module
    from bigmixed.data_gen import generate_hdp

    df = generate_hdp(n_doctors=200, seed=3, binary=True, counts=True).data
    formula = "n_events ~ age + married + sex + wbc + rbc + offset(log(exposure)) + (1 | doctor)"
    model = bm.glmm(formula, df, family="poisson", pirls="exact")
    fit = model.fit()
    assert fit.optimizer.stages[0].stage == "stage 1 (nAGQ = 0): the start only"
    start = np.zeros(len(fit.optimizer.params))
    start[0] = 1.0
    step = np.zeros_like(start)
    step[0] = 1e-4
    curvature = (model.gradient(start + step) - model.gradient(start))[0] / 1e-4
    assert curvature < 0  # (what this test is about)
    assert np.max(np.abs(model.gradient(np.asarray(fit.optimizer.params)))) < 1e-4
    monkeypatch.setattr(glmm_module, "EXACT_STAGE2_FROM_START", False)
    full = bm.glmm(formula, df, family="poisson", pirls="exact").fit()
    assert full.optimizer.stages[0].stage == "stage 1 (nAGQ = 0)"
    assert fit.objective == pytest.approx(full.objective, rel=1e-12)
    np.testing.assert_allclose(fit.beta, full.beta, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(fit.theta, full.theta, rtol=1e-6)


@pytest.mark.parametrize("family,link,formula", [
    ("binomial", "logit", "remission ~ age + married + wbc + (1 | doctor)"),
    ("binomial", "probit", "remission ~ age + married + wbc + (1 | doctor)"),
    ("binomial", "cloglog", "remission ~ age + married + (1 | doctor)"),
    ("binomial", "logit", "remission ~ age + married + (0 + wbc | doctor)"),
    ("poisson", "log", "n_events ~ age + married + offset(log(exposure)) + (0 + sex | doctor)")])
def test_the_analytic_hessian_is_the_difference_of_analytic_gradients(family, link, formula,
                                                                        monkeypatch):
    """model.hessian (kernels.glmm_gradient.blockdiag_laplace_hessian: third derivatives of the
    deviance, second of the weights, second derivatives of the modes) against central
    differences of the analytic gradient (itself checked against a dense oracle in
    tests/kernels), at the optimum and away from it, with the modes converged fully."""
    import bigmixed.fitting.glmm as glmm_module
    from bigmixed.data_gen import generate_hdp
    from bigmixed.fitting.optimize import gradient_hessian

    monkeypatch.setattr(glmm_module, "LEVEL_STEP_TOL", 0.0)
    df = generate_hdp(n_doctors=120, seed=4, binary=True, counts=True).data
    df["wbc"] = (df["wbc"] - df["wbc"].mean()) / df["wbc"].std()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        model = bm.glmm(formula, df, family=family, link=link, pirls="exact")
        fit = model.fit()
    x = np.asarray(fit.optimizer.params)
    for point in (x, x + 0.05):
        H = model.hessian(point)
        assert np.array_equal(H, H.T)
        H_diff = gradient_hessian(model.gradient, point, central=True, rel_step=1e-5)
        assert np.max(np.abs(H - H_diff)) <= 1e-7 * np.max(np.abs(H_diff))
    # the fit's Var(beta) comes from it
    assert fit.vcov_method == "Hessian"


@pytest.mark.parametrize("link", ["probit", "cloglog"])
def test_the_exact_criterion_of_a_non_canonical_link_is_smooth(link):
    """Fisher scoring stops ~sqrt(tol) from the modes for these links; the level kernel's
    Newton steps on the observed information finish them, so differences of the criterion
    (warm-started modes) agree with its analytic gradient, and the exact-criterion SEs agree
    with those of glmer's criterion (before: half of them, on this model)."""
    from bigmixed.data_gen import generate_hdp

    df = generate_hdp(120, seed=5, n_hospitals=8, binary=True, counts=True).data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        model = bm.glmm("remission ~ age + married + (1 | doctor)", df, family="binomial",
                        link=link, pirls="exact")
        fit = model.fit()
        glmer_like = bm.glmm("remission ~ age + married + (1 | doctor)", df, family="binomial",
                             link=link, pirls="lme4").fit()
    x = np.asarray(fit.optimizer.params) + 0.05
    g = model.gradient(x)
    for h in (1e-4, 1e-5):
        num = np.array([(model.objective(x + e) - model.objective(x - e)) / (2 * h)
                        for e in np.eye(len(x)) * h])
        np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fit.bse, glmer_like.bse, rtol=2e-2)


@pytest.mark.parametrize("link", ["logit", "probit"])
def test_exact_stage2_from_the_start_reaches_the_optimum_of_the_full_stage1(link, monkeypatch):
    """pirls="exact" with the analytic gradient starts stage 2 from the joint PIRLS at the
    start theta (no BOBYQA over theta): the same optimum as after the full stage 1 (criterion
    to 1e-10 relative, estimates to the optimizer's tolerance), SEs to ~1e-5."""
    import bigmixed.fitting.glmm as glmm_mod
    from bigmixed.data_gen import generate_hdp

    df = generate_hdp(n_doctors=120, seed=4, binary=True, counts=True).data
    f = "remission ~ age + married + wbc + (1 | doctor)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        quick = bm.glmm(f, df, family="binomial", link=link, pirls="exact").fit()
        monkeypatch.setattr(glmm_mod, "EXACT_STAGE2_FROM_START", False)
        full = bm.glmm(f, df, family="binomial", link=link, pirls="exact").fit()
    assert quick.optimizer.stages[0].n_evaluations == 1
    assert full.optimizer.stages[0].n_evaluations > 1
    assert quick.objective <= full.objective + 1e-10 * abs(full.objective)
    assert abs(quick.objective - full.objective) <= 1e-10 * abs(full.objective)
    np.testing.assert_allclose(quick.theta, full.theta, rtol=1e-6)
    np.testing.assert_allclose(quick.beta, full.beta, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(quick.bse, full.bse, rtol=1e-4)


def test_difference_hessian_of_the_vcov():
    """The vcov's difference Hessian (central diagonal, one-sided corners): exact for a
    quadratic, O(h) off the diagonal with third derivatives, 1 + 2k + k (k - 1) / 2
    evaluations; a coordinate that is not free is left out."""
    from bigmixed.fitting.optimize import finite_difference_derivatives
    from bigmixed.fitting.optimize import corner_difference_hessian as _difference_hessian

    rng = np.random.default_rng(3)
    A = rng.normal(size=(4, 4))
    H = A @ A.T + 4 * np.eye(4)
    b = rng.normal(size=4)
    calls = [0]

    def quad(x):
        calls[0] += 1
        return 0.5 * x @ H @ x + b @ x + 7.0

    x = rng.normal(size=4)
    free = np.array([True, True, False, True])
    got = _difference_hessian(quad, x, free, rel_step=1e-3)
    assert calls[0] == 1 + 2 * 3 + 3
    np.testing.assert_allclose(got, H[np.ix_(free, free)], rtol=1e-7, atol=1e-7)

    def cubic(x):
        return quad(x) + 0.1 * x[0] ** 2 * x[1] + 0.05 * x[3] ** 3
    _, _, central = finite_difference_derivatives(cubic, x, free, rel_step=1e-3)
    np.testing.assert_allclose(_difference_hessian(cubic, x, free, rel_step=1e-3), central,
                               rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("formula", ["remission ~ age + married + wbc + (1 | doctor)",
                                     "remission ~ age + married + (1 + wbc | doctor)"])
def test_exact_modes_at_the_optimum_come_from_the_level_kernel_as_pirls_on_the_solver(formula):
    """pirls="exact", one grouping factor: the fit's conditional modes, linear predictor,
    deviance and conditional variances are the level kernel's (no PIRLS on the solver); the
    same, to rounding, as PIRLS on the block-diagonal solver from zero gives."""
    from bigmixed.data_gen import generate_hdp

    df = generate_hdp(n_doctors=120, seed=4, binary=True, counts=True).data
    df["wbc"] = (df["wbc"] - df["wbc"].mean()) / df["wbc"].std()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        model = bm.glmm(formula, df, family="binomial", pirls="exact")
        fit = model.fit()
    assert model._modes is None  # (the solver's modes system was never built)
    kernel, _ = model.modes_at(fit.theta, fit.beta)
    kernel_var = model.conditional_variances(fit.theta)
    assert kernel.iterations == 0 and kernel.state is None
    model.use_level_kernels = False
    model._one_factor = None
    solver, _ = model.modes_at(fit.theta, fit.beta)
    solver_var = model.conditional_variances(fit.theta)
    assert solver.iterations > 1
    np.testing.assert_allclose(kernel.u[0], solver.u[0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(kernel.eta, solver.eta, rtol=0, atol=1e-9)
    assert abs(kernel.laplace - solver.laplace) <= 1e-11 * abs(solver.laplace)
    np.testing.assert_allclose(kernel_var[0], solver_var[0], rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(fit.conditional_modes[0],
                               solver.u[0] @ model.structure.T_of(fit.theta, 0).T, atol=1e-9)


def test_blas_runs_on_one_thread_during_a_glmm_fit_and_is_restored(monkeypatch):
    """GLMM fits run this thread's BLAS on one thread (OpenBLAS's spinning workers would compete
    with the Numba kernels for the cores) and restore it after; offset + X beta has the same
    bits either way."""
    from bigmixed.fitting.glmm import GeneralizedLinearMixedModel
    from bigmixed.solvers import blas

    setters = blas._blas_thread_setters()
    if not setters:
        pytest.skip("no OpenBLAS with openblas_set_num_threads_local in this process")

    def local_threads():
        out = []
        for fn in setters:
            prev = fn(1)  # the setter returns the previous value: read it, put it back
            fn(prev)
            out.append(prev)
        return out

    before = local_threads()
    seen = []
    real_fit = GeneralizedLinearMixedModel._fit

    def spy(self, **kw):
        seen.append(local_threads())
        return real_fit(self, **kw)

    monkeypatch.setattr(GeneralizedLinearMixedModel, "_fit", spy)
    rng = np.random.default_rng(0)
    n = 400
    df = pd.DataFrame({"x": rng.normal(size=n), "g": (np.arange(n) % 20).astype(str)})
    df["y"] = (rng.random(n) < 1 / (1 + np.exp(-df["x"]))).astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bm.glmm("y ~ x + (1 | g)", df, family="binomial").fit()
    assert seen and all(t == 1 for t in seen[0])
    assert local_threads() == before
    X = rng.normal(size=(300_000, 6))
    beta = rng.normal(size=6)
    outside = X @ beta
    with blas.BlasThreads(1):
        inside = X @ beta
    np.testing.assert_array_equal(inside, outside)


def test_rows_in_level_order_are_not_copied_and_the_joint_system_is_released():
    """One grouping factor with rows already in level order: the level kernels read the
    model's own y and weights (no sorted copies); after stage 1 the joint PIRLS system is let
    go (its (n,) working arrays). Shuffled rows give the same fit."""
    from bigmixed.data_gen import generate_hdp

    df = generate_hdp(n_doctors=150, seed=6, binary=True, counts=True).data
    df = df.sort_values("doctor", kind="stable").reset_index(drop=True)
    formula = "remission ~ age + married + (1 | doctor)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        model = bm.glmm(formula, df, family="binomial", pirls="exact")
        fit = model.fit()
        shuffled = df.sample(frac=1.0, random_state=3).reset_index(drop=True)
        other = bm.glmm(formula, shuffled, family="binomial", pirls="exact")
        fit2 = other.fit()
    assert np.shares_memory(model.one_factor["y"], model.y)
    assert not np.shares_memory(other.one_factor["y"], other.y)
    # X too: the model's own in level order; shuffled, a copy in level order read in sequence
    assert np.shares_memory(model.one_factor["X"], model.design.X)
    of = other.one_factor
    np.testing.assert_array_equal(of["X"], other.design.X[of["order"]])
    np.testing.assert_array_equal(of["x_order"], np.arange(len(other.y)))
    assert model._joint is None and fit.solver == "blockdiag"
    assert fit2.objective == pytest.approx(fit.objective, rel=1e-12)
    np.testing.assert_allclose(fit2.beta, fit.beta, rtol=1e-7, atol=1e-9)
    again = model.refit()  # (rebuilds the joint system)
    np.testing.assert_array_equal(again.beta, fit.beta)
    with warnings.catch_warnings():  # glmer's criterion (the default) alike
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        lme4_fits = [bm.glmm(formula, d, family="binomial").fit() for d in (df, shuffled)]
    assert lme4_fits[1].objective == pytest.approx(lme4_fits[0].objective, rel=1e-12)
    np.testing.assert_allclose(lme4_fits[1].beta, lme4_fits[0].beta, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(lme4_fits[1].bse, lme4_fits[0].bse, rtol=1e-6)
