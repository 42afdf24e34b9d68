"""Residual structures (bigmixed.residual) against the dense oracle with V = Z G Z' + sigma^2 R0.

R0 is written straight from its definition (phi^|t_i - t_j| within a series, rho within a
series, SD ratios per stratum), never through the whitening algebra the engine uses.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bigmixed as bm
import bigmixed.crossprods.residual_weights as residual_mod
from bigmixed.errors import DataTypeError, MissingColumnError, ResidualStructureError
from oracle import dense_objective

FORMULA_RI = "y ~ time * treat + (1 | patient)"
FORMULA_SLOPE = "y ~ time * treat + (1 + time | patient)"
FORMULA_NESTED = "y ~ time + (1 | hospital) + (1 | patient)"


def make_data(n_patients=30, n_visits=5, seed=0, missing=0.15, continuous=False, n_hospitals=6):
    rng = np.random.default_rng(seed)
    pid = np.repeat(np.arange(n_patients), n_visits)
    visit = np.tile(np.arange(n_visits), n_patients)
    if continuous:
        time = np.cumsum(rng.uniform(0.2, 1.3, size=(n_patients, n_visits)), axis=1).ravel()
    else:
        time = visit * 0.5
    hospital = (np.arange(n_patients) % n_hospitals)[pid]
    arm = np.array(["a", "b", "c"])[rng.integers(0, 3, size=len(pid))]
    e = rng.standard_normal(len(pid)) * np.array([1.0, 1.5, 0.7])[rng.integers(0, 3, len(pid))]
    y = (1.0 + 0.4 * time + 0.3 * (pid % 2) + rng.standard_normal(n_patients)[pid]
         + 0.3 * rng.standard_normal(n_patients)[pid] * time + 0.5 * rng.standard_normal(n_hospitals)[hospital] + e)
    df = pd.DataFrame(dict(patient=[f"p{i:03d}" for i in pid], hospital=[f"h{i}" for i in hospital],
                           visit=visit, time=time, treat=pid % 2, arm=arm, y=y))
    keep = rng.random(len(df)) >= missing
    return df[keep].sample(frac=1.0, random_state=seed).reset_index(drop=True)


def r0_matrix(df, kind, corr, ratios=None, by="arm", time="visit"):
    """Residual covariance / sigma^2 from its definition."""
    series = df["patient"].to_numpy()
    same = series[:, None] == series[None, :]
    n = len(df)
    if kind in ("ar1", "car1"):
        t = df[time].to_numpy(dtype=float)
        C = np.where(same, corr ** np.abs(t[:, None] - t[None, :]), 0.0)
    elif kind == "cs":
        C = np.where(same, corr, 0.0)
        np.fill_diagonal(C, 1.0)
    else:
        C = np.eye(n)
    if ratios is not None:
        d = np.array([ratios[v] for v in df[by]])
        C = d[:, None] * C * d[None, :]
    return C


def oracle_objective(model, params, df, kind, reml, time="visit", by="arm"):
    theta, eta = model.split_params(params)
    r = model.residual
    nat = r.natural(eta)
    corr = nat[0] if r.kind is not None else None
    ratios = None
    if r.variance is not None:
        ratios = dict(zip(r.stratum_levels, r.stratum_sd_ratio(eta)))
    # the model's rows are the data's rows (no NA here), in the same order
    X, y = model.design.X, model.design.y
    terms = [(t.codes, t.Z) for t in model.structure.terms]
    # the oracle takes terms in lme4's order, as theta is
    terms = [terms[k] for k in model.structure.term_order]
    R0 = r0_matrix(df, kind, corr, ratios, by=by, time=time)
    return dense_objective(theta, y, X, terms, reml=reml, R0=R0)


CASES = {
    "ar1": dict(residual=bm.AR1("visit", "patient")),
    "car1": dict(residual=bm.AR1("time", "patient")),
    "cs": dict(residual=bm.CompoundSymmetry("patient")),
    "varident": dict(variance=bm.VarIdent("arm")),
    "ar1_varident": dict(residual=bm.AR1("visit", "patient"), variance=bm.VarIdent("arm")),
}
KIND = {"ar1": "ar1", "car1": "car1", "cs": "cs", "varident": None, "ar1_varident": "ar1"}


def _random_params(model, rng):
    st_ = model.structure
    theta = np.where(st_.lower_bounds == 0, rng.uniform(0.1, 2.0, st_.n_theta),
                     rng.uniform(-0.5, 0.5, st_.n_theta))
    eta = rng.uniform(-1.5, 1.5, model.residual.n_params)
    return np.concatenate((theta, eta))


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("formula", [FORMULA_RI, FORMULA_SLOPE, FORMULA_NESTED])
@pytest.mark.parametrize("reml", [True, False])
def test_objective_matches_dense_oracle(case, formula, reml):
    df = make_data(seed=3, continuous=(case == "car1"))
    time = "time" if case == "car1" else "visit"
    m = bm.LinearMixedModel(formula, df, reml=reml, **CASES[case])
    rng = np.random.default_rng(7)
    for _ in range(3):
        params = _random_params(m, rng)
        got = m.objective(params)
        want = oracle_objective(m, params, df, KIND[case], reml, time=time)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-8)


@pytest.mark.parametrize("case", ["ar1", "ar1_varident", "car1"])
def test_per_evaluation_path_equals_components(case, monkeypatch):
    """Whitened rows per evaluation (many distinct gaps) give the same criterion."""
    df = make_data(seed=5, continuous=(case == "car1"))
    monkeypatch.setattr(residual_mod, "MAX_COMPONENTS", 100_000)
    m = bm.LinearMixedModel(FORMULA_SLOPE, df, **CASES[case])
    monkeypatch.setattr(residual_mod, "MAX_COMPONENTS", 0)
    m2 = bm.LinearMixedModel(FORMULA_SLOPE, df, **CASES[case])
    assert not m.residual.per_evaluation and m2.residual.per_evaluation
    rng = np.random.default_rng(1)
    for _ in range(3):
        params = _random_params(m, rng)
        assert m2.objective(params) == pytest.approx(m.objective(params), rel=1e-11)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), phi=st.floats(-0.9, 0.95), reml=st.booleans())
def test_ar1_property_random_data(seed, phi, reml):
    df = make_data(n_patients=12, n_visits=6, seed=seed, missing=0.3)
    m = bm.LinearMixedModel(FORMULA_RI, df, reml=reml, residual=bm.AR1("visit", "patient"))
    params = np.array([0.8, 2.0 * np.arctanh(phi)])
    want = oracle_objective(m, params, df, "ar1", reml)
    assert m.objective(params) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("case", ["ar1", "cs", "varident", "ar1_varident"])
def test_fit_reaches_dense_optimum(case):
    """The fit ends at the dense oracle's optimum (checked by perturbing each parameter)."""
    from scipy.optimize import minimize

    df = make_data(n_patients=25, seed=11)
    m = bm.LinearMixedModel(FORMULA_RI, df, **CASES[case])
    fit = m.fit()
    x = fit.optimizer_params

    def f(p):
        if p[0] < 0:
            return np.inf
        try:
            return oracle_objective(m, p, df, KIND[case], True)
        except np.linalg.LinAlgError:
            return np.inf

    res = minimize(f, x + 0.05, method="Nelder-Mead",
                   options=dict(xatol=1e-8, fatol=1e-10, maxiter=4000, maxfev=8000))
    assert fit.objective <= res.fun + 1e-7
    assert fit.objective == pytest.approx(f(x), rel=1e-10)
    # and it is a stationary point of the dense criterion
    h = 1e-5
    grad = [(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(len(x))]
    assert np.max(np.abs(grad)) < 1e-3


def test_row_order_and_stratum_reference_do_not_matter():
    df = make_data(seed=21)
    a = bm.lmm(FORMULA_RI, df, residual=bm.AR1("visit", "patient"),
               variance=bm.VarIdent("arm")).fit()
    shuffled = df.sample(frac=1.0, random_state=4).reset_index(drop=True)
    b = bm.lmm(FORMULA_RI, shuffled, residual=bm.AR1("visit", "patient"),
               variance=bm.VarIdent("arm", reference="c")).fit()
    assert b.objective == pytest.approx(a.objective, rel=1e-10)
    np.testing.assert_allclose(b.beta, a.beta, rtol=1e-6)
    assert b.residual_parameters["Phi"] == pytest.approx(a.residual_parameters["Phi"], rel=1e-5)
    sa, sb = a.residual_sd(), b.residual_sd()
    for lv in ["a", "b", "c"]:
        assert sb[lv] == pytest.approx(sa[lv], rel=1e-5)
    assert b.residual_parameters.index.tolist() == ["Phi", "arm=a", "arm=b"]


def test_phi_zero_and_unit_ratios_reduce_to_plain_model():
    df = make_data(seed=2)
    plain = bm.lmm(FORMULA_SLOPE, df)
    m = bm.lmm(FORMULA_SLOPE, df, residual=bm.AR1("visit", "patient"), variance=bm.VarIdent("arm"))
    theta = np.array([1.1, -0.2, 0.4])
    assert m.objective(np.concatenate((theta, [0.0, 0.0, 0.0]))) == pytest.approx(
        plain.objective(theta), rel=1e-12)


def test_summary_and_parameters_are_reported():
    df = make_data(seed=8)
    fit = bm.lmm(FORMULA_RI, df, residual=bm.AR1("visit", "patient"), variance=bm.VarIdent("arm")).fit()
    text = fit.summary()
    assert "Correlation structure: AR(1)" in text and "Phi:" in text
    assert "Variance function" in text
    assert list(fit.residual_parameters.index) == ["Phi", "arm=b", "arm=c"]
    assert fit.n_params == 1 + 4 + 1 + 3


# ---- bad input ----------------------------------------------------------------------------


def test_repeated_time_in_a_series_is_an_error():
    df = make_data(seed=1, missing=0.0)
    df.loc[df.index[df["patient"] == "p004"][:2], "visit"] = 2
    with pytest.raises(ResidualStructureError, match="'visit' repeats the value 2"):
        bm.lmm(FORMULA_RI, df, residual=bm.AR1("visit", "patient"))


def test_series_not_nested_in_a_grouping_factor_is_an_error():
    df = make_data(seed=1, missing=0.0)
    df["hospital"] = np.where(df["visit"] % 2 == 0, "h0", "h1")  # changes within patients
    with pytest.raises(ResidualStructureError, match="grouping factor 'hospital' changes within a series"):
        bm.lmm(FORMULA_NESTED, df, residual=bm.AR1("visit", "patient"))


def test_missing_and_non_numeric_columns_are_named():
    df = make_data(seed=1)
    with pytest.raises(MissingColumnError, match="vist"):
        bm.lmm(FORMULA_RI, df, residual=bm.AR1("vist", "patient"))
    df["when"] = "x"
    with pytest.raises(DataTypeError, match="'when' must be numeric"):
        bm.lmm(FORMULA_RI, df, residual=bm.AR1("when", "patient"))
    with pytest.raises(ResidualStructureError, match="'zz' is not a level of 'arm'"):
        bm.lmm(FORMULA_RI, df, variance=bm.VarIdent("arm", reference="zz"))
    df["one"] = "k"
    with pytest.raises(ResidualStructureError, match="'one' has a single level"):
        bm.lmm(FORMULA_RI, df, variance=bm.VarIdent("one"))
    with pytest.raises(TypeError, match="residual must be"):
        bm.lmm(FORMULA_RI, df, residual="ar1")
    with pytest.raises(NotImplementedError, match="compound symmetry combined with VarIdent"):
        bm.lmm(FORMULA_RI, df, residual=bm.CompoundSymmetry("patient"), variance=bm.VarIdent("arm"))


def test_structures_that_cannot_be_estimated_are_refused():
    df = make_data(seed=1, missing=0.0)
    single = df.drop_duplicates("patient").reset_index(drop=True)
    single["x"] = np.arange(len(single)) % 3
    with pytest.raises(ResidualStructureError, match="every series has a single row"):
        bm.lmm("y ~ time + (1 | hospital)", single, residual=bm.AR1("visit", "patient"))
    with pytest.raises(ResidualStructureError, match="every series has one row"):
        bm.lmm("y ~ time + (1 | hospital)", single, residual=bm.CompoundSymmetry("patient"))
    with pytest.raises(ResidualStructureError, match="needs integer times"):
        bm.lmm(FORMULA_RI, make_data(seed=1, continuous=True),
               residual=bm.AR1("time", "patient", continuous=False))


def test_missing_values_in_structure_columns_drop_rows():
    df = make_data(seed=1, missing=0.0)
    df["visit"] = df["visit"].astype(float)
    df.loc[df.index[:5], "visit"] = np.nan
    fit = bm.lmm(FORMULA_RI, df, residual=bm.AR1("visit", "patient")).fit()
    assert fit.nobs == len(df) - 5 and fit.n_dropped == 5
    ref = bm.lmm(FORMULA_RI, df.iloc[5:].reset_index(drop=True),
                 residual=bm.AR1("visit", "patient")).fit()
    assert fit.objective == pytest.approx(ref.objective, rel=1e-12)


# ---- simulation ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["ar1", "cs", "ar1_varident"])
def test_simulated_residuals_have_the_model_covariance(case):
    df = make_data(n_patients=40, n_visits=4, seed=9, missing=0.0)
    m = bm.lmm(FORMULA_RI, df, **CASES[case])
    r = m.residual
    eta = {"ar1": [0.9], "cs": [0.4], "ar1_varident": [0.9, 0.5, -0.3]}[case]
    rng = np.random.default_rng(0)
    n_draws = 6000
    draws = np.stack([r.simulate_errors(np.array(eta), 1.0, rng) for _ in range(n_draws)])
    nat = r.natural(eta)
    ratios = dict(zip(r.stratum_levels, r.stratum_sd_ratio(eta))) if r.variance else None
    want = r0_matrix(df, KIND[case], nat[0], ratios)
    got = np.cov(draws.T)
    # standard error of each sample covariance under normality
    d = np.diag(want)
    se = np.sqrt((np.outer(d, d) + want**2) / n_draws)
    assert np.max(np.abs(got - want) / se) < 5.5


# ---- model comparison, prediction, inference ------------------------------------------------


def test_anova_reports_the_structure_test_with_naive_chi2():
    df = make_data(n_patients=40, seed=12)
    m0 = bm.lmm(FORMULA_RI, df).fit()
    m1 = bm.lmm(FORMULA_RI, df, residual=bm.AR1("visit", "patient")).fit()
    table = bm.anova(m0, m1, refit=False)
    row = table.iloc[1]
    assert row["Df"] == 1
    assert row["Chisq"] == pytest.approx(m0.objective - m1.objective, rel=1e-12)
    assert np.isnan(row["Pr(>Chisq) boundary"])
    assert "residual structures differ" in row["note"]


def test_prediction_intervals_use_the_stratum_variance():
    df = make_data(n_patients=40, seed=13)
    fit = bm.lmm(FORMULA_RI, df, variance=bm.VarIdent("arm")).fit()
    sd = fit.residual_sd()
    out = fit.predict_interval(df.head(30), level="population", interval="prediction")
    for lv in ["a", "b", "c"]:
        rows = (df.head(30)["arm"] == lv).to_numpy()
        np.testing.assert_allclose(out["var_residual"].to_numpy()[rows], sd[lv] ** 2, rtol=1e-12)
    np.testing.assert_allclose(fit.predict(df.head(30), level="population"), out["fit"].to_numpy())


def test_satterthwaite_and_bootstrap_run_with_a_structure():
    df = make_data(n_patients=40, seed=14)
    fit = bm.lmm(FORMULA_RI, df, residual=bm.AR1("visit", "patient")).fit()
    t = fit.fixed_effects_test()
    assert np.all(np.isfinite(t["df"])) and np.all(t["df"] > 1)
    boot = fit.bootstrap(nsim=4, seed=1, n_jobs=1)
    assert boot.n_failed == 0 and "Phi" in boot.replicates.columns
    again = fit.bootstrap(nsim=4, seed=1, n_jobs=2)
    pd.testing.assert_frame_equal(boot.replicates, again.replicates)


@pytest.mark.parametrize("case", ["ar1_varident", "cs", "car1"])
def test_save_and_load_keep_the_structure(case, tmp_path):
    df = make_data(n_patients=30, seed=15, continuous=(case == "car1"))
    fit = bm.lmm(FORMULA_RI, df, **CASES[case]).fit()
    path = fit.save(tmp_path / "f.bmfit")
    back = bm.load(path)
    pd.testing.assert_series_equal(back.residual_parameters, fit.residual_parameters)
    pd.testing.assert_series_equal(back.residual_sd(), fit.residual_sd())
    assert back.n_params == fit.n_params and back.aic == pytest.approx(fit.aic)
    assert fit.residual.describe(fit.residual_eta)[0] in back.summary()
    assert back.to_dict()["residual_structure"] == fit.to_dict()["residual_structure"]
    new = df.head(20)
    pd.testing.assert_frame_equal(back.predict_interval(new), fit.predict_interval(new))
    assert _format_version(path) == 2


def _format_version(path) -> int:
    import json
    import zipfile

    from bigmixed.io.modelfile import META

    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read(META))["format_version"]


def test_fits_without_a_structure_stay_format_version_1(tmp_path):
    fit = bm.lmm(FORMULA_RI, make_data(seed=15)).fit()
    path = fit.save(tmp_path / "g.bmfit")
    assert _format_version(path) == 1 and bm.load(path).nobs == fit.nobs


def test_features_without_a_structure_version_refuse_clearly():
    df = make_data(n_patients=30, seed=15)
    fit = bm.lmm(FORMULA_RI, df, residual=bm.AR1("visit", "patient")).fit()
    with pytest.raises(NotImplementedError, match="profiles"):
        fit.confint(method="profile")
    with pytest.raises(NotImplementedError, match="ICC"):
        fit.icc()


def test_fit_document_and_tuple_series():
    df = make_data(n_patients=30, seed=16)
    # patient ids that repeat across hospitals: the series is (hospital, patient)
    df["pid"] = df["patient"].str[-1]
    fit = bm.lmm("y ~ time + (1 | hospital)", df, residual=bm.AR1("visit", ("hospital", "pid")),
                 variance=bm.VarIdent("arm")).fit()
    doc = fit.to_dict()
    rs = doc["residual_structure"]
    assert rs["correlation"]["type"] == "ar1" and set(rs["parameters"]) == {"Phi", "arm=b", "arm=c"}
    assert rs["variance"]["sd_by_stratum"]["a"] == pytest.approx(fit.sigma)
    assert bm.lmm(FORMULA_RI, df).fit().to_dict()["residual_structure"] is None
    # the same series given by one unique id column
    df["series"] = df["hospital"] + "/" + df["pid"]
    ref = bm.lmm("y ~ time + (1 | hospital)", df, residual=bm.AR1("visit", "series"),
                 variance=bm.VarIdent("arm")).fit()
    assert fit.objective == pytest.approx(ref.objective, rel=1e-12)


# ---- robustness: every solver, scale of y, repeat runs ----------------------------------------


@pytest.mark.parametrize("solver", ["schur", "cholmod"])
def test_crossed_design_with_varident_matches_dense_oracle(solver):
    """VarIdent needs no nesting: crossed patient x hospital-of-visit, on both sparse solvers."""
    df = make_data(n_patients=30, seed=17, missing=0.0)
    rng = np.random.default_rng(17)
    df["site"] = np.array(["s1", "s2", "s3", "s4"])[rng.integers(0, 4, len(df))]  # crossed
    m = bm.LinearMixedModel("y ~ time + (1 | patient) + (1 | site)", df, solver=solver,
                            variance=bm.VarIdent("arm"))
    for _ in range(3):
        params = _random_params(m, rng)
        want = oracle_objective(m, params, df, None, True)
        assert m.objective(params) == pytest.approx(want, rel=1e-9)


def test_scale_of_y_and_repeat_runs():
    df = make_data(seed=18)
    kw = dict(residual=bm.AR1("visit", "patient"), variance=bm.VarIdent("arm"))
    a = bm.lmm(FORMULA_RI, df, **kw).fit()
    b = bm.lmm(FORMULA_RI, df, **kw).fit()
    assert a.objective == b.objective and np.array_equal(a.beta, b.beta)  # bit-identical
    scaled = df.assign(y=df["y"] * 1e3)
    c = bm.lmm(FORMULA_RI, scaled, **kw).fit()
    np.testing.assert_allclose(c.beta, a.beta * 1e3, rtol=1e-6)
    assert c.sigma == pytest.approx(a.sigma * 1e3, rel=1e-6)
    np.testing.assert_allclose(c.residual_parameters, a.residual_parameters, rtol=1e-5)
    # the REML criterion shifts by exactly 2 (n - p) log(1e3)
    n, p = a.nobs, len(a.beta)
    assert c.objective - a.objective == pytest.approx(2 * (n - p) * np.log(1e3), rel=1e-9)
