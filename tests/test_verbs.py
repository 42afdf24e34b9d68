"""lme4's verbs: update(), drop1(), lmerTest's ranova(), against the committed R references
(bench/references_parity: made by bench/parity_reference.R with lme4 1.1.31 / lmerTest 3.1.3)."""
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import bigmixed as bm
from bigmixed.inference.drop import format_table, lm_loglik
from lme4_refs import load_data

PARITY = Path(__file__).resolve().parents[1] / "bench" / "references_parity"


def ref(name):
    return json.loads((PARITY / f"{name}.json").read_text())


def fit_of(name, data):
    r = ref(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        return r, bm.lmm(r["formula"], load_data(data), reml=r["reml"]).fit()


def col(values):
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = ~np.isnan(b)
    assert np.array_equal(np.isnan(a), ~ok)
    return np.max(np.abs(a[ok] - b[ok]) / np.maximum(np.abs(b[ok]), 1e-300))


# ---- update ------------------------------------------------------------------------------

@pytest.mark.parametrize("old,new,expected", [
    ("y ~ a + b + (1 | g)", ". ~ . - b", "y ~ a + (1 | g)"),
    ("y ~ a + b + (1 | g)", "~ . + c", "y ~ a + b + c + (1 | g)"),
    ("y ~ a * b + (1 | g)", ". ~ . - a:b", "y ~ a + b + (1 | g)"),
    ("y ~ a * b + (1 | g)", ". ~ . - b:a", "y ~ a + b + (1 | g)"),
    ("y ~ a * b + (1 | g)", ". ~ . - a*b", "y ~ 1 + (1 | g)"),
    ("y ~ a + (1|g)", ". ~ . - (1 | g) + (1 + a | g)", "y ~ a + (1 + a | g)"),
    ("y ~ a + (1 | g)", ". ~ . + (0 + a | g)", "y ~ a + (1 | g) + (0 + a | g)"),
    ("y ~ a + (1 | g)", ". ~ . - 1", "y ~ 0 + a + (1 | g)"),
    ("log(y) ~ a + (1 | g)", "exp(.) ~ .", "exp(log(y)) ~ a + (1 | g)"),
    ("y ~ a + (1 | g)", "z ~ .", "z ~ a + (1 | g)"),
    ("y ~ a + (1 | g)", "y ~ b + (1 | h)", "y ~ b + (1 | h)"),
])
def test_update_formula(old, new, expected):
    assert bm.update_formula(old, new) == expected


def test_update_formula_errors():
    with pytest.raises(bm.FormulaError, match="no such random term"):
        bm.update_formula("y ~ a + (1 | g)", ". ~ . - (1 | h)")


@pytest.mark.parametrize("kind", ["reml", "ml"])
def test_update_drop_term_matches_lme4(kind):
    r = ref(f"ri_update_{kind}")
    df = load_data("ri.csv")
    fit = bm.lmm(r["formula"], df, reml=kind == "reml").fit()
    new = fit.update(r["update"])
    assert new.formula == r["formula_fitted"]
    assert abs(new.objective - r["objective"]) <= 1e-9 * abs(r["objective"])
    beta = np.array([r["beta"][n] for n in new.fixed_names])
    np.testing.assert_allclose(new.beta, beta, rtol=1e-6, atol=1e-9)
    # the same fit as the reduced formula fitted from the data, bit for bit, with or without data=
    direct = bm.lmm(r["formula_fitted"], df, reml=kind == "reml").fit()
    from_data = fit.update(r["update"], data=df)
    for f in (new, from_data):
        assert f.objective == direct.objective
        assert np.array_equal(f.beta, direct.beta) and np.array_equal(f.theta, direct.theta)
    assert new.predict(df.iloc[:5]).shape == (5,)
    np.testing.assert_array_equal(new.predict(df.iloc[:5]), direct.predict(df.iloc[:5]))
    # the original fit is unchanged
    assert fit.formula == r["formula"]


@pytest.mark.parametrize("kind", ["reml", "ml"])
def test_update_random_part_matches_lme4(kind):
    """update(m, . ~ . - (time | doctor) + (1 | doctor) + (0 + time | doctor)): the correlated
    term split in two, from the fit's own design (no data=)."""
    r = ref(f"slope_update_{kind}")
    df = load_data("slope.csv")
    fit = bm.lmm(r["formula"], df, reml=kind == "reml").fit()
    new = fit.update(r["update"])
    assert new.formula == r["formula_fitted"]
    assert abs(new.objective - r["tight"]["objective"]) <= 1e-9 * abs(r["objective"])
    np.testing.assert_allclose(new.theta, list(r["tight"]["theta"].values()), rtol=1e-5)
    direct = bm.lmm(r["formula_fitted"], df, reml=kind == "reml").fit()
    assert new.objective == direct.objective and np.array_equal(new.theta, direct.theta)


def test_update_reml_switch_goes_through_refit():
    r = ref("ri_ml")
    df = load_data("ri.csv")
    fit = bm.lmm(r["formula"], df).fit()
    ml = fit.update(reml=False)
    direct = bm.lmm(r["formula"], df, reml=False).fit()
    assert not ml.reml and ml.objective == direct.objective
    assert abs(ml.objective - r["objective"]) <= 1e-9 * abs(r["objective"])
    assert fit.update(reml=True).objective == fit.objective
    with pytest.raises(TypeError):
        fit.update(reml="yes")


def test_update_random_part_and_new_data():
    df = load_data("slope.csv")
    fit = bm.lmm("mobility ~ age + sex + time + (time | doctor)", df).fit()
    red = fit.update(". ~ . - (time | doctor) + (1 | doctor)")
    direct = bm.lmm("mobility ~ age + sex + time + (1 | doctor)", df).fit()
    assert red.formula == "mobility ~ age + sex + time + (1 | doctor)"
    assert red.objective == direct.objective
    r = ref("slope_reml")["ranova"]
    assert abs(red.llf - r["logLik"][1]) <= 1e-9 * abs(r["logLik"][1])
    # adding a term needs the data
    with pytest.raises(bm.UpdateNeedsDataError, match="data="):
        fit.update(". ~ . + married")
    sub = df.iloc[: len(df) // 2]
    half = fit.update(data=sub)
    assert half.nobs == len(sub)
    assert half.objective == bm.lmm(fit.formula, sub).fit().objective


# ---- drop1 -------------------------------------------------------------------------------

@pytest.mark.parametrize("name,data", [("ri_ml", "ri.csv"), ("catint_ml", "catint.csv"),
                                       ("crossed_ml", "crossed.csv")])
def test_drop1_matches_lme4(name, data):
    r, fit = fit_of(name, data)
    t = fit.drop1()
    d = r["drop1"]
    assert list(t.index) == d["rows"]  # marginality: catint drops sex and age:arm only
    assert list(t.columns) == ["npar", "AIC", "LRT", "Pr(Chi)"]
    np.testing.assert_array_equal(t["npar"].to_numpy(float, na_value=np.nan), col(d["npar"]))
    assert rel(t["LRT"], col(d["LRT"])) < 1e-5
    assert rel(t["AIC"], col(d["AIC"])) < 1e-8
    assert rel(t["Pr(Chi)"], col(d["Pr(Chi)"])) < 1e-5
    assert "Single term deletions" in format_table(t)


def test_drop1_scope():
    r, fit = fit_of("ri_ml", "ri.csv")
    full = fit.drop1()
    t = fit.drop1(scope=["rbc", "age"])
    assert list(t.index) == ["<none>", "rbc", "age"]
    np.testing.assert_array_equal(t.loc[["rbc", "age"], "LRT"], full.loc[["rbc", "age"], "LRT"])
    assert list(fit.drop1(scope="~ wbc").index) == ["<none>", "wbc"]
    with pytest.raises(ValueError, match="scope"):
        fit.drop1(scope=["bmi"])


def test_drop1_of_reml_fit_refits_ml():
    r = ref("catint_ml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        fit = bm.lmm(r["formula"], load_data("catint.csv")).fit()
    t = bm.drop1(fit)
    assert t.attrs["refitted"]
    assert rel(t["LRT"], col(r["drop1"]["LRT"])) < 1e-5


def test_drop1_lrt_is_deviance_difference_of_updated_fits():
    """Property: each LRT equals the ML deviance difference of update(fit, . ~ . - term)."""
    r, fit = fit_of("catint_ml", "catint.csv")
    t = fit.drop1()
    for term in t.index[1:]:
        red = fit.update(f". ~ . - {term}")
        assert red.deviance - fit.deviance == pytest.approx(t.loc[term, "LRT"], rel=1e-12, abs=1e-9)
        assert t.loc[term, "LRT"] >= 0


# ---- ranova ------------------------------------------------------------------------------

@pytest.mark.parametrize("name,data", [("ri_reml", "ri.csv"), ("slope_reml", "slope.csv"),
                                       ("catadd_reml", "catint.csv"), ("crossed_reml", "crossed.csv"),
                                       ("uncorr_reml", "slope.csv"), ("nested_reml", "nested.csv")])
def test_ranova_matches_lmertest(name, data):
    r, fit = fit_of(name, data)
    t = fit.ranova()
    d = r["ranova"]
    assert list(t.index) == d["rows"]
    np.testing.assert_array_equal(t["npar"].to_numpy(float), col(d["npar"]))
    np.testing.assert_array_equal(t["Df"].to_numpy(float, na_value=np.nan), col(d["Df"]))
    assert rel(t["logLik"], col(d["logLik"])) < 1e-8
    assert rel(t["AIC"], col(d["AIC"])) < 1e-8
    assert rel(t["LRT"], col(d["LRT"])) < 1e-5
    assert rel(t["Pr(>Chisq)"], col(d["Pr(>Chisq)"])) < 1e-4
    # the mixture p-value: 0.5 chi2(q) + 0.5 chi2(q+1) with q = Df - 1, smaller than lmerTest's
    from scipy import stats

    for lab in t.index[1:]:
        lrt, df = t.loc[lab, "LRT"], int(t.loc[lab, "Df"])
        lower = stats.chi2.sf(lrt, df - 1) if df > 1 else 0.0
        expect = 0.5 * lower + 0.5 * stats.chi2.sf(lrt, df)
        assert t.loc[lab, "Pr(>Chisq) boundary"] == pytest.approx(expect, rel=1e-12, abs=1e-300)
        assert t.loc[lab, "Pr(>Chisq) boundary"] <= t.loc[lab, "Pr(>Chisq)"]
    assert "ranova" not in t.attrs["formulae"]


def test_ranova_mixture_on_a_weak_effect():
    """A slope variance near zero: the boundary p-value is below lmerTest's, and both are in
    (0, 1]; the reduced model is update(fit, . ~ . - (time | doctor) + (1 | doctor))."""
    df = load_data("slope.csv").copy()
    rng = np.random.default_rng(3)
    df["mobility"] = 5 + 0.1 * df["time"] + rng.normal(size=len(df)) \
        + np.asarray(df["doctor"].cat.codes) % 7 * 0.2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        fit = bm.lmm("mobility ~ time + (time | doctor)", df).fit()
        t = fit.ranova()
    lab = "time in (time | doctor)"
    assert 0 < t.loc[lab, "Pr(>Chisq) boundary"] <= t.loc[lab, "Pr(>Chisq)"] <= 1
    assert t.loc[lab, "null"] == "0.5 chi2(1) + 0.5 chi2(2)"


def test_ranova_lm_loglik_matches_r():
    """With no random term left the reduced model is lm(): R's logLik(lm, REML = TRUE)."""
    r = ref("ri_reml")
    df = load_data("ri.csv")
    fit = bm.lmm(r["formula"], df).fit()
    ll = lm_loglik(fit.design.X, fit.design.y, reml=True)
    assert ll == pytest.approx(r["ranova"]["logLik"][1], rel=1e-12)


# ---- prior weights and offset() terms ----------------------------------------------------

def _wz():
    import pandas as pd

    df = pd.read_csv(PARITY / "ri_wz.csv")
    df["doctor"] = pd.Categorical(df["doctor"].astype(str))
    return df


@pytest.mark.parametrize("kind", ["reml", "ml"])
def test_weights_and_offset(kind):
    """weights = w and offset(z): drop1 (ML) and ranova (REML; the reduced model is
    lm(weights =, offset =)) as lme4 / lmerTest; update keeps the offset term and the weights."""
    r = ref(f"ri_weights_offset_{kind}")
    df = _wz()
    fit = bm.lmm(r["formula"], df, reml=kind == "reml", weights="w").fit()
    if kind == "ml":
        t, d, cols = fit.drop1(), r["drop1"], ["AIC", "LRT", "Pr(Chi)"]
    else:
        t, d, cols = fit.ranova(), r["ranova"], ["logLik", "AIC", "LRT", "Pr(>Chisq)"]
    assert list(t.index) == d["rows"]
    for c in cols:
        assert rel(t[c], col(d[c])) < 1e-5, c
    new = fit.update(". ~ . - rbc")
    assert new.formula == "mobility ~ age + married + sex + wbc + offset(z) + (1 | doctor)"
    direct = bm.lmm(new.formula, df, reml=kind == "reml", weights="w").fit()
    assert new.objective == direct.objective
    assert fit.update(". ~ . - rbc", data=df).objective == direct.objective
    with pytest.raises(bm.UpdateNeedsDataError, match="offset"):
        fit.update(". ~ . - offset(z)")
    assert bm.update_formula(r["formula"], ". ~ . - offset(z)") == \
        "mobility ~ age + married + sex + wbc + rbc + (1 | doctor)"


@pytest.mark.parametrize("term", ["married", "age:arm", "sex"])
def test_updated_fit_tables_equal_direct_fit(term):
    """A fit reduced from the design answers everything as the reduced formula fitted from the
    data: Type III and Type I tables, KR t tests, predictions (its encoding is formulaic's
    ModelSpec restricted to the remaining terms)."""
    df = load_data("catint.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        fit = bm.lmm("mobility ~ age * arm + sex + married + (1 | doctor)", df).fit()
        new = fit.update(f". ~ . - {term}")
        direct = bm.lmm(new.formula, df).fit()
    for typ in (3, 1):
        a, b = new.anova_terms(type=typ), direct.anova_terms(type=typ)
        assert list(a["term"]) == list(b["term"])
        np.testing.assert_array_equal(a["F_value"], b["F_value"])
        np.testing.assert_allclose(a["den_df"], b["den_df"], rtol=1e-9)
    np.testing.assert_array_equal(new.fixed_effects_test(ddf="kr")["df"],
                                  direct.fixed_effects_test(ddf="kr")["df"])
    np.testing.assert_array_equal(new.predict(df.iloc[:9]), direct.predict(df.iloc[:9]))


def test_dask_fit_refuses_design_reductions():
    dd = pytest.importorskip("dask.dataframe")
    df = load_data("ri.csv")
    fit = bm.lmm(ref("ri_ml")["formula"], dd.from_pandas(df, npartitions=2)).fit()
    for call in (fit.drop1, fit.ranova, lambda: fit.update(". ~ . - rbc"),
                 lambda: fit.fixed_effects_test(ddf="kenward-roger")):
        with pytest.raises(NotImplementedError, match="in memory"):
            call()
    # with data=, update refits from those data
    assert fit.update(". ~ . - rbc", data=df).formula.endswith("wbc + (1 | doctor)")
