"""Prior weights and offsets in bm.lmm (lme4's lmer(weights=, offset=)): against R's fits
(bench/references_parity), against the dense oracle, by properties that can fail, and through
fit_many, save/load, predict, the CLI, simulate and Dask."""
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bigmixed as bm
from bigmixed import cli
from oracle import dense_fit, dense_objective

PARITY = Path(__file__).resolve().parents[1] / "bench" / "references_parity"
INDEX = json.loads((PARITY / "index.json").read_text())
RI = "mobility ~ age + married + sex + wbc + rbc + (1 | doctor)"
RI_OFF = "mobility ~ age + married + sex + wbc + rbc + offset(z) + (1 | doctor)"
CASES = {  # model -> (formula, keywords), as bench/parity_reference.R fits them
    "ri_weights": (RI, dict(weights="w")),
    "ri_offset_formula": (RI_OFF, {}),
    "ri_offset_arg": (RI, dict(offset="z")),
    "ri_weights_offset": (RI_OFF, dict(weights="w")),
}


def load_wz() -> pd.DataFrame:
    """ri_wz.csv with doctor as a factor in R's (C-locale) level order."""
    df = pd.read_csv(PARITY / "ri_wz.csv")
    for col in INDEX["factor_columns"]:
        if col in df.columns:
            values = df[col].astype("string").astype(object)
            levels = sorted(values.unique())  # index.json: "sorted in the C locale (byte order)"
            df[col] = pd.Categorical(values, categories=levels)
    return df


@pytest.fixture(scope="module")
def wz():
    return load_wz()


def quiet_fit(formula, data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        return bm.lmm(formula, data, **kw).fit()


def rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def load_parity_csv(name: str) -> pd.DataFrame:
    """A parity CSV with its factor columns in R's (C-locale) level order."""
    df = pd.read_csv(PARITY / name)
    for col in INDEX["factor_columns"]:
        if col in df.columns:
            values = df[col].astype("string").astype(object)
            df[col] = pd.Categorical(values, categories=sorted(values.unique()))
    return df


# ---- lme4 --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["reml", "ml"])
@pytest.mark.parametrize("model", sorted(CASES))
def test_against_lmer(wz, model, kind):
    ref = json.loads((PARITY / f"{model}_{kind}.json").read_text())
    formula, kw = CASES[model]
    assert ref["weights_arg"] == kw.get("weights") and ref["offset_arg"] == kw.get("offset")
    fit = quiet_fit(formula, wz, reml=kind == "reml", **kw)
    assert fit.nobs == ref["nobs"]
    # lme4's criterion with weights carries -sum(log w_i): REMLcrit (REML) / deviance (ML)
    assert rel(fit.objective, ref["objective"]) < 1e-7
    assert rel(fit.llf, ref["logLik"]) < 1e-7
    assert rel(fit.aic, ref["AIC"]) < 1e-7
    assert list(fit.fixed_names) == ref["fixed_names"]
    assert rel(fit.beta, list(ref["beta"].values())) < 1e-6
    assert rel(fit.bse.to_numpy(), list(ref["se"].values())) < 1e-5
    assert rel(fit.theta, list(ref["theta"].values())) < 1e-5
    assert rel(fit.sigma, ref["sigma"]) < 1e-5
    assert fit.formula == formula


def test_offset_term_and_argument_agree(wz):
    a = quiet_fit(RI_OFF, wz)
    b = quiet_fit(RI, wz, offset="z")
    c = quiet_fit(RI, wz, offset=wz["z"].to_numpy())
    for f in (b, c):
        assert f.objective == a.objective and np.array_equal(f.beta, a.beta)


# ---- the dense oracle --------------------------------------------------------------------
def small_data(seed=3, n_groups=12, per=9):
    rng = np.random.default_rng(seed)
    n = n_groups * per
    g = np.repeat(np.arange(n_groups), per)
    x = rng.normal(size=n)
    b0 = rng.normal(scale=0.8, size=n_groups)
    b1 = rng.normal(scale=0.4, size=n_groups)
    w = rng.uniform(0.3, 3.0, size=n)
    o = rng.normal(scale=0.5, size=n)
    y = 1.0 + 0.5 * x + b0[g] + b1[g] * x + o + rng.normal(size=n) / np.sqrt(w)
    return pd.DataFrame({"y": y, "x": x, "g": [f"g{k:02d}" for k in g], "w": w, "o": o}), g


@pytest.mark.parametrize("reml", [True, False])
def test_against_dense_oracle(reml):
    df, g = small_data()
    X = np.column_stack([np.ones(len(df)), df["x"]])
    terms = [(g, np.column_stack([np.ones(len(df)), df["x"]]))]
    y, w, o = df["y"].to_numpy(), df["w"].to_numpy(), df["o"].to_numpy()
    model = bm.lmm("y ~ x + (x | g)", df, reml=reml, weights="w", offset="o")
    for theta in ([0.7, 0.1, 0.4], [1.3, -0.2, 0.05], [0.2, 0.0, 0.9]):
        assert rel(model.objective(theta), dense_objective(theta, y, X, terms, reml,
                                                           weights=w, offset=o)) < 1e-10
    fit = model.fit()
    ref = dense_fit(y, X, terms, reml=reml, weights=w, offset=o)
    assert abs(fit.objective - ref["objective"]) < 1e-7
    assert rel(fit.beta, ref["beta"]) < 1e-5
    assert rel(fit.bse.to_numpy(), ref["beta_se"]) < 1e-4
    assert rel(fit.sigma, ref["sigma"]) < 1e-5
    assert np.max(np.abs(fit.theta - ref["theta"])) < 1e-4
    assert np.max(np.abs(fit.conditional_modes[0] - ref["blups"][0])) < 1e-4


def test_crossed_against_dense_oracle():
    df, g = small_data(seed=5)
    h = np.arange(len(df)) % 7
    df["h"] = [f"h{k}" for k in h]
    X = np.column_stack([np.ones(len(df)), df["x"]])
    ones = np.ones((len(df), 1))
    model = bm.lmm("y ~ x + (1 | g) + (1 | h)", df, weights="w", offset="o", solver="cholmod")
    # lme4's term order: g (12 levels) before h (7)
    for theta in ([0.8, 0.3], [0.1, 1.2]):
        ref = dense_objective(theta, df["y"].to_numpy(), X, [(g, ones), (h, ones)], True,
                              weights=df["w"].to_numpy(), offset=df["o"].to_numpy())
        assert rel(model.objective(theta), ref) < 1e-10


# ---- properties --------------------------------------------------------------------------
def test_unit_weights_are_the_unweighted_fit(wz):
    base = quiet_fit(RI, wz)
    ones = quiet_fit(RI, wz, weights=np.ones(len(wz)))
    assert ones.objective == base.objective
    assert np.array_equal(ones.beta, base.beta) and np.array_equal(ones.theta, base.theta)
    zero = quiet_fit(RI, wz, offset=np.zeros(len(wz)))
    assert zero.objective == base.objective and np.array_equal(zero.beta, base.beta)


@pytest.mark.parametrize("c", [4.0, 0.1])
def test_constant_weights_rescale_sigma_only(wz, c):
    """w = c: residual variance sigma_w^2 / c, the same distribution as the unweighted model
    with sigma_w = sqrt(c) sigma. So sigma scales by sqrt(c), theta (= sd_b / sigma) by
    1 / sqrt(c), the random-effect SD, beta and the SEs are unchanged, and so is the criterion:
    its -n log c cancels the (n - p) log c of the RSS and the p log c of log det(X'WX)."""
    base = quiet_fit(RI, wz)
    fit = quiet_fit(RI, wz, weights=np.full(len(wz), c))
    assert rel(fit.theta * np.sqrt(c), base.theta) < 1e-6
    assert rel(fit.sigma, base.sigma * np.sqrt(c)) < 1e-7
    vc, vb = fit.variance_components, base.variance_components
    assert rel(vc["sd"].iloc[0], vb["sd"].iloc[0]) < 1e-6
    assert rel(fit.beta, base.beta) < 1e-6
    assert rel(fit.bse.to_numpy(), base.bse.to_numpy()) < 1e-6
    assert abs(fit.objective - base.objective) < 1e-7 * abs(base.objective)


def test_weights_change_the_fit(wz):
    """Not a no-op: the weighted fit differs from the unweighted one."""
    a, b = quiet_fit(RI, wz), quiet_fit(RI, wz, weights="w")
    assert rel(a.beta, b.beta) > 1e-3


def test_offset_of_a_column_shifts_its_coefficient(wz):
    """offset(rbc): rbc's coefficient drops by exactly 1, the rest of the fit is unchanged."""
    f0 = "mobility ~ age + married + sex + wbc + rbc + (1 | doctor)"
    base = quiet_fit(f0, wz, weights="w")
    fit = quiet_fit(f0.replace("rbc +", "rbc + offset(2 * rbc) +"), wz, weights="w")
    j = base.fixed_names.index("rbc")
    shift = np.zeros(len(base.beta))
    shift[j] = -2.0
    assert np.max(np.abs(fit.beta - (base.beta + shift))) < 1e-6
    assert rel(fit.theta, base.theta) < 1e-6 and rel(fit.sigma, base.sigma) < 1e-7
    assert rel(fit.objective, base.objective) < 1e-12
    np.testing.assert_allclose(fit.fittedvalues, base.fittedvalues, atol=1e-6)


def test_fitted_and_residuals_include_the_offset(wz):
    fit = quiet_fit(RI_OFF, wz, weights="w")
    X = fit.design.X
    np.testing.assert_allclose(fit.fitted_marginal, X @ fit.beta + wz["z"].to_numpy(), atol=1e-12)
    np.testing.assert_allclose(fit.resid, wz["mobility"].to_numpy() - fit.fittedvalues, atol=1e-12)
    # the summary's scaled residuals are lme4's Pearson residuals sqrt(w) (y - mu) / sigma
    q = fit.resid_quantiles()
    pearson = np.sqrt(wz["w"].to_numpy()) * fit.resid / fit.sigma
    np.testing.assert_allclose(q, np.quantile(pearson, [0, .25, .5, .75, 1]), atol=1e-12)


def test_missing_weights_or_offsets_drop_rows(wz):
    df = wz.copy()
    df.loc[[3, 10], "w"] = np.nan
    df.loc[[20], "z"] = np.nan
    fit = quiet_fit(RI_OFF, df, weights="w")
    ref = quiet_fit(RI_OFF, df.drop(index=[3, 10, 20]), weights="w")
    assert fit.nobs == len(wz) - 3 and fit.n_dropped == 3
    assert fit.objective == ref.objective and np.array_equal(fit.beta, ref.beta)


# ---- bad input ----------------------------------------------------------------------------
@pytest.mark.parametrize("value,err,match", [
    (0.0, bm.WeightsError, r"weights= \('w'\) must be positive.*1 value"),
    (-1.0, bm.WeightsError, r"weights= \('w'\) must be positive"),
    (np.inf, bm.NonFiniteValueError, r"weights= \('w'\) has 1 infinite"),
])
def test_bad_weights(wz, value, err, match):
    df = wz.assign(w=wz["w"].astype(float))
    df.loc[5, "w"] = value
    with pytest.raises(err, match=match):
        bm.lmm(RI, df, weights="w")


def test_bad_offsets_and_types(wz):
    df = wz.copy()
    df.loc[7, "z"] = -np.inf
    with pytest.raises(bm.NonFiniteValueError, match=r"offset term offset\(z\)"):
        bm.lmm(RI_OFF, df)
    with pytest.raises(bm.NonFiniteValueError, match=r"offset= \('z'\)"):
        bm.lmm(RI, df, offset="z")
    with pytest.raises(bm.MissingColumnError, match="'ww'"):
        bm.lmm(RI, wz, weights="ww")
    with pytest.raises(bm.DataTypeError, match="doctor"):
        bm.lmm(RI, wz.assign(doctor=wz["doctor"].astype(str)), weights="doctor")
    with pytest.raises(bm.DataTypeError, match="one value per row"):
        bm.lmm(RI, wz, weights=np.ones(3))
    with pytest.raises(NotImplementedError, match="weights= with a correlation structure"):
        bm.lmm(RI, wz.assign(t=np.arange(len(wz))), weights="w", residual=bm.AR1("t", "doctor"))


def test_weights_with_varident_against_dense_oracle():
    """Residual variance sigma^2 delta_s^2 / w_i: R0 = diag(delta_s^2 / w) in the oracle."""
    df, g = small_data(seed=7)
    df["arm"] = np.where(np.arange(len(df)) % 3 == 0, "a", "b")
    X = np.column_stack([np.ones(len(df)), df["x"]])
    terms = [(g, np.ones((len(df), 1)))]
    y, w, o = df["y"].to_numpy(), df["w"].to_numpy(), df["o"].to_numpy()
    for reml in (True, False):
        model = bm.lmm("y ~ x + (1 | g)", df, reml=reml, weights="w", offset="o",
                       variance=bm.VarIdent("arm"))
        for theta, eta in (([0.7], 0.3), ([1.4], -0.5), ([0.2], 0.0)):
            delta = model.residual.stratum_sd_ratio(np.array([eta]))
            R0 = np.diag(delta[model.residual.strata] ** 2 / w)
            ref = dense_objective(theta, y, X, terms, reml, R0=R0, offset=o)
            assert rel(model.objective(np.r_[theta, eta]), ref) < 1e-10
    fit = quiet_fit("y ~ x + (1 | g)", df, weights="w", variance=bm.VarIdent("arm"))
    assert fit.converged and len(fit.residual_parameters) == 1
    pi = fit.predict_interval()
    ratio = fit.residual_sd().to_numpy() / fit.sigma
    strata = (df["arm"] == "b").to_numpy().astype(int)
    np.testing.assert_allclose(pi["var_residual"], (fit.sigma * ratio[strata]) ** 2 / w)
    ys = fit.simulate(1, seed=2)[:, 0]
    assert np.all(np.isfinite(ys))
    # unit weights: bit-identical to the fit without weights
    a = quiet_fit("y ~ x + (1 | g)", df, variance=bm.VarIdent("arm"))
    b = quiet_fit("y ~ x + (1 | g)", df, weights=np.ones(len(df)), variance=bm.VarIdent("arm"))
    assert a.objective == b.objective and np.array_equal(a.optimizer_params, b.optimizer_params)


def test_offset_with_a_residual_structure(wz):
    """An offset with AR(1) residuals: the same fit as the response minus the offset."""
    df = wz.assign(t=wz.groupby("doctor", observed=True).cumcount())
    a = quiet_fit(RI_OFF, df, residual=bm.AR1("t", "doctor"))
    b = quiet_fit(RI.replace("mobility", "ym"), df.assign(ym=df["mobility"] - df["z"]),
                  residual=bm.AR1("t", "doctor"))
    assert rel(a.objective, b.objective) < 1e-12 and rel(a.beta, b.beta) < 1e-9


# ---- fit_many ----------------------------------------------------------------------------
@pytest.mark.parametrize("rhs,kw", [
    ("age + married + (1 | doctor)", dict(weights="w")),
    ("age + offset(z) + (1 | doctor) + (1 | h)", dict(weights="w")),
    ("age + sex + (1 | doctor)", dict(weights="w", offset="z")),
])
def test_fit_many_is_bit_identical(wz, rhs, kw):
    df = wz.assign(h=(np.arange(len(wz)) % 13).astype(str),
                   y2=wz["mobility"] * 0.5 + np.sin(np.arange(len(wz))))
    df.loc[[4, 9], "y2"] = np.nan  # another missing pattern: its own design
    res = bm.fit_many("~ " + rhs, df, responses=["mobility", "y2"], n_jobs=1, **kw)
    for r in ("mobility", "y2"):
        single = quiet_fit(f"{r} ~ {rhs}", df, **kw)
        f = res[r]
        assert f.objective == single.objective
        assert np.array_equal(f.beta, single.beta) and np.array_equal(f.theta, single.theta)
        assert f.formula == f"{r} ~ {rhs}"


# ---- save / load / predict --------------------------------------------------------------
def test_predict_save_load(wz, tmp_path):
    fit = quiet_fit(RI_OFF, wz, weights="w")
    new = wz.iloc[:50].assign(z=np.linspace(-1, 1, 50))
    p = fit.predict(new)
    np.testing.assert_allclose(fit.predict(wz), fit.fittedvalues, atol=1e-12)
    pop = fit.predict(new, level="population")
    np.testing.assert_allclose(pop, fit.predict(new.assign(z=0.0), level="population")
                               + new["z"].to_numpy(), atol=1e-12)
    path = fit.save(tmp_path / "m.bmfit")
    m = bm.load(path)
    assert m.formula == RI_OFF and m.design.prior == fit.design.prior
    np.testing.assert_array_equal(m.predict(new), p)
    assert m.objective == fit.objective
    import zipfile

    meta = json.loads(zipfile.ZipFile(path).read("bigmixed-model.json"))
    assert meta["format_version"] == 3 and meta["prior"]["offset_terms"] == ["z"]
    missing = new.assign(z=np.where(np.arange(50) == 2, np.nan, new["z"]))
    assert np.isnan(m.predict(missing)[2]) and np.isfinite(m.predict(missing)[3])


def test_predict_with_offset_values_needs_the_column(wz):
    fit = quiet_fit(RI, wz, offset=wz["z"].to_numpy())
    np.testing.assert_allclose(fit.predict(), fit.fittedvalues)
    with pytest.raises(ValueError, match="offset= was given as values"):
        fit.predict(wz.iloc[:5])


def test_weights_only_model_file_and_intervals(wz, tmp_path):
    fit = quiet_fit(RI, wz, weights="w")
    m = bm.load(fit.save(tmp_path / "w.bmfit"))
    np.testing.assert_array_equal(m.predict(wz.iloc[:9]), fit.predict(wz.iloc[:9]))
    # prediction intervals on the fitting rows: residual variance sigma^2 / w_i
    pi = fit.predict_interval()
    np.testing.assert_allclose(pi["var_residual"], fit.sigma ** 2 / wz["w"].to_numpy())


def test_simulate_and_refit(wz):
    fit = quiet_fit(RI_OFF, wz, weights="w")
    ys = fit.simulate(2, seed=1)
    assert ys.shape == (len(wz), 2)
    refit = fit.model.refit(y=ys[:, 0])
    direct = quiet_fit(RI_OFF, wz.assign(mobility=ys[:, 0]), weights="w")
    assert refit.objective == direct.objective and np.array_equal(refit.beta, direct.beta)


# ---- CLI ----------------------------------------------------------------------------------
def test_cli_weights_offset(wz, tmp_path):
    data = tmp_path / "wz.csv"
    wz.to_csv(data, index=False)
    out = tmp_path / "fit.json"
    assert cli.main(["fit", "--data", str(data), "--formula", RI_OFF, "--weights", "w",
                     "--out", str(out), "--save", str(tmp_path / "m.bmfit")]) == 0
    doc = json.loads(out.read_text())
    assert doc["model"]["weights"] == "w" and doc["model"]["offset"] == "offset(z)"
    ref = json.loads((PARITY / "ri_weights_offset_reml.json").read_text())
    assert rel(doc["statistics"]["objective"], ref["objective"]) < 1e-7
    m = bm.load(tmp_path / "m.bmfit")
    assert m.design.prior.weights == "w" and m.design.prior.offset_terms == ("z",)
    out2 = tmp_path / "fit2.json"
    assert cli.main(["fit", "--data", str(data), "--formula", RI, "--weights", "w",
                     "--offset", "z", "--out", str(out2)]) == 0
    assert json.loads(out2.read_text())["statistics"]["objective"] == doc["statistics"]["objective"]
    many = tmp_path / "many.ndjson"
    assert cli.main(["fit", "--data", str(data), "--formula", "~ age + (1 | doctor)",
                     "--responses", "mobility,rbc", "--weights", "w", "--out", str(many)]) == 0
    assert len(many.read_text().splitlines()) == 2
    assert cli.main(["fit", "--data", str(data), "--formula", RI, "--weights", "w", "--ar1",
                     "age,doctor", "--out", str(tmp_path / "x.json"), "-q"]) == 2  # usage error


# ---- Dask ---------------------------------------------------------------------------------
def test_dask_matches_memory(wz):
    dask = pytest.importorskip("dask")
    dd = pytest.importorskip("dask.dataframe")
    df = wz.assign(h=(np.arange(len(wz)) % 13).astype(str))
    ddf = dd.from_pandas(df, npartitions=3)
    with dask.config.set(scheduler="synchronous"):
        for formula, kw in ((RI_OFF, dict(weights="w")),
                            ("mobility ~ age + sex + (1 | doctor) + (1 | h)",
                             dict(weights="log(w + 1)", offset="z"))):
            a = quiet_fit(formula, df, **kw)
            b = quiet_fit(formula, ddf, **kw)
            assert b.objective == a.objective
            assert np.array_equal(b.beta, a.beta) and np.array_equal(b.theta, a.theta)
            np.testing.assert_allclose(b.fitted_dask().compute().to_numpy(), a.fittedvalues,
                                       atol=1e-12)
            qa, qb = a.resid_quantiles(), b.resid_quantiles()  # Pearson; min and max exact
            np.testing.assert_allclose(qb[[0, -1]], qa[[0, -1]], atol=1e-12)
        with pytest.raises(NotImplementedError, match="weights= given as values"):
            bm.lmm(RI, ddf, weights=np.ones(len(df)))
        bad = dd.from_pandas(df.assign(w=np.where(np.arange(len(df)) == 700, 0.0, df["w"])),
                             npartitions=3)
        with pytest.raises(bm.WeightsError, match="must be positive"):
            bm.lmm(RI, bad, weights="w")


def test_summary_names_weights_and_offset(wz):
    s = quiet_fit(RI, wz, weights="w", offset="z").summary()
    assert "Weights: w" in s and "Offset: z" in s
    s = quiet_fit(RI_OFF, wz).summary()
    assert "offset(z)" in s and "Weights:" not in s and "Offset:" not in s


@pytest.mark.parametrize("anova_type", ["I", "III"])
def test_anova_types_with_prior_weights_against_lmertest(anova_type):
    """lmerTest's Type I hypotheses come from the unweighted X'X (crossprod(model.matrix)),
    also with prior weights; Type III from the coefficients' contrasts."""
    ref = json.loads((PARITY / "catint_weights_reml.json").read_text())["anova_types"][anova_type]
    fit = quiet_fit("mobility ~ age * arm + sex + (1 | doctor)", load_parity_csv("catint_w.csv"),
                    weights="w")
    got = fit.anova_terms(type={"I": 1, "III": 3}[anova_type]).set_index("term").loc[ref["rows"]]
    assert list(got["num_df"]) == ref["NumDF"]
    assert rel(got["F_value"], ref["F value"]) < 1e-6
    assert rel(got["den_df"], ref["DenDF"]) < 1e-6
    assert rel(got["sum_sq"], ref["Sum Sq"]) < 1e-6


def test_type1_with_prior_weights_saved_and_from_dask(tmp_path):
    """A saved model keeps the unweighted X'X; a Dask model, which has no rows in memory,
    refuses Type I with prior weights instead of using the weighted X'X."""
    dd = pytest.importorskip("dask.dataframe")
    df = load_parity_csv("catint_w.csv")
    formula = "mobility ~ age * arm + sex + (1 | doctor)"
    fit = quiet_fit(formula, df, weights="w")
    path = tmp_path / "m.bmfit"
    fit.save(path)
    loaded = bm.load(path)
    np.testing.assert_allclose(loaded.anova_terms(type=1)["F_value"],
                               fit.anova_terms(type=1)["F_value"], rtol=1e-12)
    dask_fit = quiet_fit(formula, dd.from_pandas(df, npartitions=2), weights="w")
    with pytest.raises(NotImplementedError, match="unweighted X'X"):
        dask_fit.anova_terms(type=1)
