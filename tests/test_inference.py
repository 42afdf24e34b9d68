"""Inference (bigmixed/inference.py) against lmerTest, nlme and lme4.

References: bench/references/*.json ("satterthwaite": lmerTest 3.1.3 on lme4's fits, per
coefficient and Type III F tests) and bench/references_inference/inference.json (made by
make_inference_refs.R: nlme's between-within df, lme4's Wald and profile intervals).
Satterthwaite df are compared with lmerTest on lme4's precise fit (the truth for tight
comparisons); the acceptance tolerance is 1e-3 relative, measured agreement is ~1e-6.
"""
import json
import warnings

import numpy as np
import pandas as pd
import pytest

import bigmixed as bm
from bigmixed.inference import between_within, derivatives, satterthwaite
from bigmixed.data_gen import tablets

from lme4_refs import INDEX, INFREF, REF, load_data, fit_quiet

from lme4_refs import CASES  # noqa: E402


@pytest.fixture(scope="module")
def ref_fit():
    cache = {}

    def get(model, kind):
        key = (model["name"], kind)
        if key not in cache:
            ref = json.loads((REF / model["fits"][kind]).read_text())
            cache[key] = (fit_quiet(ref["formula"], load_data(model["data"]), kind == "reml"), ref)
        return cache[key]

    return get


# ---- Satterthwaite (lmerTest) --------------------------------------------------------------

@pytest.mark.parametrize("model,kind", CASES, ids=[f"{m['name']}-{k}" for m, k in CASES])
def test_satterthwaite_matches_lmertest(ref_fit, model, kind):
    fit, ref = ref_fit(model, kind)
    satt = ref["precise"]["satterthwaite"]
    names = ref["fixed_names"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        tab = fit.fixed_effects_test(ddf="satterthwaite").set_index("term")
        an = fit.anova_terms(type=3).set_index("term")
    assert list(tab.index) == names
    df_ref = np.array([satt["df"][n] for n in names])
    np.testing.assert_allclose(tab["df"].to_numpy(), df_ref, rtol=1e-4)
    np.testing.assert_allclose(tab["t_value"].to_numpy(), [satt["t"][n] for n in names], rtol=1e-4)
    p_ref = np.array([satt["p"][n] for n in names])
    np.testing.assert_allclose(tab["p_value"].to_numpy(), p_ref, rtol=2e-3, atol=1e-12)
    # the Type III F tests (multi-row contrasts: eigen-decomposition, get_Fstat_ddf)
    a = satt["anova_type3"]
    terms = a["terms"] if isinstance(a["terms"], list) else [a["terms"]]
    listify = lambda v: v if isinstance(v, list) else [v]  # noqa: E731
    assert sorted(an.index) == sorted(terms)
    np.testing.assert_allclose(an.loc[terms, "F_value"].to_numpy(), listify(a["F"]), rtol=1e-4)
    np.testing.assert_allclose(an.loc[terms, "den_df"].to_numpy(), listify(a["dendf"]), rtol=1e-4)
    np.testing.assert_array_equal(an.loc[terms, "num_df"].to_numpy(), listify(a["numdf"]))
    np.testing.assert_allclose(an.loc[terms, "sum_sq"].to_numpy(), listify(a["sumsq"]), rtol=1e-4)
    np.testing.assert_allclose(an.loc[terms, "p_value"].to_numpy(), listify(a["p"]), rtol=2e-3, atol=1e-12)


@pytest.mark.parametrize("label", sorted(INFREF["lmertest"]))
def test_type3_and_type1_factor_interactions_match_lmertest(label):
    """Factor x factor, three-way and no-intercept models (make_inference_refs.R, lmerTest 3.1.3)."""
    case = INFREF["lmertest"][label]
    df = load_data(case["data"])
    df["sexf"] = pd.Categorical(np.where(df["sex"] == 1, "F", "M"), categories=["F", "M"])
    fit = fit_quiet(case["formula"], df, case["reml"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        tab = fit.fixed_effects_test()
        tables = {t: fit.anova_terms(type=t).set_index("term") for t in (3, 1)}
    assert list(tab["term"]) == case["names"]
    np.testing.assert_allclose(tab["df"], case["df"], rtol=1e-4)
    np.testing.assert_allclose(tab["p_value"], case["p"], rtol=1e-3)
    for t, an in tables.items():
        r = case[f"type{t}"]
        assert list(an.index) == r["terms"]
        np.testing.assert_array_equal(an["num_df"], r["numdf"])
        np.testing.assert_allclose(an["F_value"], r["F"], rtol=1e-4)
        np.testing.assert_allclose(an["den_df"], r["dendf"], rtol=1e-4)
        np.testing.assert_allclose(an["p_value"], r["p"], rtol=1e-3)


def test_unprofiled_reml_criterion_is_lmertest_devfun_vp(ref_fit):
    """f(theta, sigma) at sigma_hat equals the profiled REML criterion, and is minimal in sigma."""
    model = next(m for m in INDEX["models"] if m["name"] == "slope")
    for kind in ("reml", "ml"):
        fit, _ = ref_fit(model, kind)
        f = satterthwaite.VarparFunctions(fit.model, fit.reml).deviance
        vp = np.append(fit.theta, fit.sigma)
        assert f(vp) == pytest.approx(fit.objective, rel=1e-12)
        for s in (0.99, 1.01):
            assert f(np.append(fit.theta, s * fit.sigma)) > f(vp)


def test_richardson_matches_closed_forms():
    fun = lambda x: np.exp(x[0]) * np.sin(x[1]) + x[0] ** 2 * x[1]  # noqa: E731
    x = np.array([0.3, 1.1])
    H = derivatives.richardson_hessian(fun, x)
    e, s, c = np.exp(0.3), np.sin(1.1), np.cos(1.1)
    exact = np.array([[e * s + 2 * 1.1, e * c + 2 * 0.3], [e * c + 2 * 0.3, -e * s]])
    np.testing.assert_allclose(H, exact, rtol=1e-8)
    J = derivatives.richardson_jacobian(lambda x: np.array([x[0] * x[1], x[1] ** 3]), x)
    np.testing.assert_allclose(J, [[1.1, 0.3], [0.0, 3 * 1.1 ** 2]], rtol=1e-9, atol=1e-12)


def test_summary_names_the_df_method():
    fit = fit_quiet("y ~ method + (1 | tablet)", tablets(missing=True))
    text = fit.summary(ddf="satterthwaite")
    assert "Satterthwaite" in text and "Pr(>|t|)" in text and " df " in text
    text = fit.summary(ddf="between-within")
    assert "between-within" in text
    assert "df" not in fit.summary().split("Fixed effects:")[1].split("\n")[1]  # default unchanged
    assert fit.fixed_effects_test().attrs["ddf_method"].startswith("Satterthwaite")
    assert "Satterthwaite" in fit.anova_terms().attrs["heading"]
    with pytest.raises(ValueError):
        fit.fixed_effects_test(ddf="containment-rule-of-thumb")
    # Kenward-Roger is implemented (tests/test_kenward_roger.py)
    assert fit.fixed_effects_test(ddf="kenward-roger").attrs["ddf_method"].startswith("Kenward")


# ---- between-within (nlme) --------------------------------------------------------------------

def test_between_within_tablets_seed_numbers():
    """Seed 004: nlme's lme on the tablets with missing values gives DF 19 and 9, p = 0.4285."""
    fit = fit_quiet("y ~ method + (1 | tablet)", tablets(missing=True))
    tab = fit.fixed_effects_test(ddf="between-within").set_index("term")
    assert tab.loc["(Intercept)", "df"] == 19
    assert tab.loc["methodhplc", "df"] == 9
    assert round(tab.loc["methodhplc", "p_value"], 4) == 0.4285
    an = fit.anova_terms(ddf="between-within").set_index("term")
    assert an.loc["method", "den_df"] == 9
    assert round(an.loc["method", "p_value"], 4) == 0.4285


@pytest.mark.parametrize("label", sorted(INFREF["nlme"]))
def test_between_within_matches_nlme(label):
    case = INFREF["nlme"][label]
    fit = fit_quiet(case["bigmixed_formula"], load_data(case["data"]))
    tab = fit.fixed_effects_test(ddf="between-within").set_index("term")
    assert list(tab.index) == case["names"]
    np.testing.assert_array_equal(tab["df"].to_numpy(), case["df"])
    np.testing.assert_allclose(tab["estimate"].to_numpy(), case["estimate"], rtol=1e-6)
    np.testing.assert_allclose(tab["std_error"].to_numpy(), case["se"], rtol=1e-4)
    np.testing.assert_allclose(tab["p_value"].to_numpy(), case["p"], rtol=1e-3, atol=1e-300)
    bw = between_within.between_within_df(fit)
    terms = [t for t in case["anova_terms"] if t != "(Intercept)"]
    dendf = dict(zip(case["anova_terms"], case["anova_dendf"]))
    for t in terms:
        assert bw.term_df[t] == dendf[t]
    # marginal F tests on the term's coefficients with the term df (nlme's anova(type = "marginal"))
    an = fit.anova_terms(type="marginal", ddf="between-within").set_index("term")
    F = dict(zip(case["anova_terms"], case["anova_F"]))
    np.testing.assert_allclose(an.loc[terms, "F_value"].to_numpy(), [F[t] for t in terms], rtol=1e-4)


def test_between_within_rejects_crossed_factors(ref_fit):
    fit, _ = ref_fit(next(m for m in INDEX["models"] if m["name"] == "crossed"), "reml")
    with pytest.raises(ValueError, match="nested"):
        fit.fixed_effects_test(ddf="between-within")


# ---- intervals ----------------------------------------------------------------------------------

def test_wald_confint_matches_lme4():
    case = INFREF["wald"]["ri"]
    fit = fit_quiet(case["formula"], load_data(case["data"]))
    ci = fit.confint(method="wald").set_index("term")
    assert list(ci.index) == case["names"]  # lme4's rows, in lme4's order
    rows = fit.fixed_names
    lo = dict(zip(case["names"], case["lower"]))
    hi = dict(zip(case["names"], case["upper"]))
    se = fit.bse.to_numpy()
    np.testing.assert_allclose(ci.loc[rows, "lower"], [lo[r] for r in rows], atol=1e-4 * se.max(), rtol=1e-5)
    np.testing.assert_allclose(ci.loc[rows, "upper"], [hi[r] for r in rows], atol=1e-4 * se.max(), rtol=1e-5)
    # closed form: beta +- qnorm(0.975) SE; no Wald intervals for the variance parameters (lme4)
    fx = ci.loc[fit.fixed_names]
    np.testing.assert_allclose(fx["upper"] - fx["lower"], 2 * 1.959963984540054 * se, rtol=1e-12)
    assert ci.drop(index=fit.fixed_names)[["lower", "upper"]].isna().all().all()


def test_satterthwaite_confint_uses_t_quantiles():
    from scipy import stats

    fit = fit_quiet("y ~ method + (1 | tablet)", tablets(missing=True))
    ci = fit.confint(method="satterthwaite", coverage=0.9).loc[fit.fixed_names]
    tab = fit.fixed_effects_test()
    q = stats.t.ppf(0.95, tab["df"].to_numpy())
    np.testing.assert_allclose(ci["upper"] - ci["estimate"], q * tab["std_error"].to_numpy(), rtol=1e-12)


@pytest.mark.parametrize("label", sorted(INFREF["profile"]))
def test_profile_confint_matches_lme4(label):
    case = INFREF["profile"][label]
    fit = fit_quiet(case["formula"], load_data(case["data"]), case["reml"])
    ci = fit.confint(method="profile")
    assert list(ci["term"]) == case["names"]
    # lme4 interpolates a spline through its profile; the end points here are exact roots
    np.testing.assert_allclose(ci["lower"], case["lower"], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(ci["upper"], case["upper"], rtol=1e-3, atol=1e-4)


# ---- ICC and convergence ------------------------------------------------------------------------

def test_icc_balanced_one_way_closed_form():
    """Balanced one-way layout: REML = ANOVA estimators, so the ICC is (MSB - MSW) / (MSB + (n-1) MSW)."""
    rng = np.random.default_rng(3)
    k, n = 30, 6
    g = np.repeat(np.arange(k), n)
    y = 2.0 + rng.normal(0, 1.0, k)[g] + rng.normal(0, 1.5, k * n)
    df = pd.DataFrame({"y": y, "g": g.astype(str)})
    fit = fit_quiet("y ~ 1 + (1 | g)", df)
    means = df.groupby("g")["y"].mean()
    msb = n * np.sum((means - y.mean()) ** 2) / (k - 1)
    msw = np.sum((y - means[df["g"]].to_numpy()) ** 2) / (k * (n - 1))
    assert msb > msw  # interior solution
    icc = fit.icc()
    assert icc.loc[0, "group"] == "g"
    assert icc.loc[0, "icc"] == pytest.approx((msb - msw) / (msb + (n - 1) * msw), rel=1e-6)
    assert icc.loc[0, "icc_vs_residual"] == icc.loc[0, "icc"]


def test_icc_several_factors_and_slopes(ref_fit):
    fit, _ = ref_fit(next(m for m in INDEX["models"] if m["name"] == "crossed"), "reml")
    icc = fit.icc().set_index("group")
    vc = fit.variance_components.set_index("group")["variance"]
    total = vc.sum()
    for g in ("doctor", "hospital"):
        assert icc.loc[g, "icc"] == pytest.approx(vc[g] / total, rel=1e-12)
        assert icc.loc[g, "icc_vs_residual"] == pytest.approx(vc[g] / (vc[g] + vc["Residual"]), rel=1e-12)
    slope, _ = ref_fit(next(m for m in INDEX["models"] if m["name"] == "slope"), "reml")
    with pytest.raises(ValueError, match="random-intercept"):
        slope.icc()


def test_check_convergence(ref_fit):
    fit, _ = ref_fit(next(m for m in INDEX["models"] if m["name"] == "slope"), "reml")
    rec = fit.check_convergence()
    assert rec.ok and not rec.singular and rec.max_scaled_gradient < 1e-4
    assert np.all(rec.hessian_eigenvalues > 0)
    # a point away from the optimum fails lme4's gradient check, with a ConvergenceWarning
    bad = fit.model.results_at(fit.optimizer_params * np.array([1.1, 1.0, 0.9]))
    with pytest.warns(bm.ConvergenceWarning, match="max\\|grad\\|"):
        rec = bad.check_convergence()
    assert not rec.ok and rec.max_scaled_gradient > 2e-3
    sing, _ = ref_fit(next(m for m in INDEX["models"] if m["name"] == "singular_ri"), "reml")
    rec = sing.check_convergence()
    assert rec.singular and rec.ok and "singular" in rec.messages[0]


def test_icc_bootstrap_interval_is_seeded_and_brackets_the_estimate():
    fit = bm.lmm("y ~ method + (1 | tablet)", tablets()).fit()
    a = fit.icc("bootstrap", nsim=60, seed=3)
    b = fit.icc("bootstrap", nsim=60, seed=3)
    pd.testing.assert_frame_equal(a, b)
    row = a.iloc[0]
    assert 0.0 <= row["lower"] < row["icc"] < row["upper"] <= 1.0
    # the bootstrap limits are the percentiles of the replicate ICCs
    reps = fit.bootstrap(60, 3, func=lambda f: f.icc()["icc"].to_numpy()).replicates.iloc[:, 0]
    np.testing.assert_allclose([row["lower"], row["upper"]], np.nanquantile(reps, [0.025, 0.975]), rtol=1e-12)
