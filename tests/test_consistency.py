"""Consistency across methods and with R's printing (issue #16 item 5): one confint table for
wald / profile / boot, one name for the coverage, the summary's random effects and groups line
as lme4's, p-values as R's format.pval, the ICC of a random-slope model.
References: bench/lme4_names_reference.R -> bench/references_parity/lme4_names.json."""
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bigmixed as bm
from bigmixed.inference.formatting import format_fixed_effects_test, format_pval, r_format
from bigmixed.io.summary import VarCorr

PARITY = Path(__file__).resolve().parents[1] / "bench" / "references_parity"
REF = json.loads((PARITY / "lme4_names.json").read_text())


def _fit(formula, file, reml=True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        return bm.lmm(formula, pd.read_csv(PARITY / file), reml=reml).fit()


@pytest.fixture(scope="module")
def slope():
    return _fit("Reaction ~ Days + (Days | Subject)", "sleepstudy.csv")


@pytest.fixture(scope="module")
def nested():
    return _fit("y ~ x + g3 + (1 | hospital/doctor)", "nested.csv")


# ---- confint: one table for every method --------------------------------------------------------

@pytest.fixture(scope="module")
def three(slope):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        return {"wald": slope.confint("wald"), "profile": slope.confint("profile"),
                "boot": slope.confint("boot", nsim=20, seed=5, n_jobs=1)}


def test_confint_methods_share_shape_rows_and_estimates(slope, three):
    ref = REF["models"]["slope"]
    first = three["wald"]
    for method, ci in three.items():
        assert list(ci.columns) == ["term", "lme4_name", "scale", "estimate", "lower", "upper"]
        assert list(ci.index) == list(first.index) == list(ci["term"])
        assert list(ci["lme4_name"]) == ref["confint_wald_rows"]  # lme4's .sig01, ..., .sigma
        assert list(ci["scale"]) == ["sd", "cor", "sd", "sd", "coef", "coef"]
        np.testing.assert_array_equal(ci["estimate"], first["estimate"])
        assert ci.attrs["method"] == method and ci.attrs["coverage"] == 0.95
        assert ci.attrs["estimates"] == "REML fit"
        assert "sd" in ci.attrs["scale"] and "correlation" in ci.attrs["scale"]
    est = first["estimate"]
    assert est["sigma"] == slope.sigma
    np.testing.assert_array_equal(est[slope.fixed_names], slope.beta)
    vc = slope.VarCorr().as_data_frame()
    np.testing.assert_allclose(est.iloc[:3], vc["sdcor"].iloc[[0, 2, 1]], rtol=1e-12)
    # lme4's Wald: the fixed effects only, the variance rows NA
    assert first.loc[first["scale"] != "coef", ["lower", "upper"]].isna().all().all()
    np.testing.assert_allclose(first.loc[slope.fixed_names, "lower"],
                               ref["confint_wald_lower"][4:], rtol=1e-4)
    # the profile and the bootstrap give every row, around the estimate
    for method in ("profile", "boot"):
        ci = three[method]
        assert ci[["lower", "upper"]].notna().all().all()
        assert (ci["lower"] < ci["upper"]).all()
    prof = three["profile"]
    assert "ML" in prof.attrs["description"]
    assert set(prof.attrs["profiled_estimates"]) == set(prof.index)


def test_confint_which_and_coverage_name(slope):
    fx = slope.confint("wald", 0.9, which="fixed")
    assert list(fx.index) == slope.fixed_names
    assert list(slope.confint("wald", which=".sigma").index) == ["sigma"]
    with pytest.warns(FutureWarning, match="coverage"):
        old = slope.confint("wald", level=0.9, which="fixed")
    pd.testing.assert_frame_equal(old, fx)
    # predict_interval takes the same name
    pi = slope.predict_interval(pd.DataFrame({"Days": [0.0, 5.0]}), level="population",
                                interval="confidence", coverage=0.9)
    assert pi.attrs["coverage"] == 0.9
    with pytest.raises(ValueError, match="coverage"):
        slope.confint("wald", coverage=1.5)
    with pytest.raises(ValueError, match="unknown parameter"):
        slope.confint("wald", which="nope")


# ---- the summary: random effects and groups line as lme4 ----------------------------------------

def test_summary_groups_line_and_order_as_lme4(nested):
    text = nested.summary()
    assert "Number of obs: 600, groups:  doctor:hospital, 60; hospital, 12" in text
    lines = text.split("\n")
    i = lines.index("Random effects:")
    assert lines[i + 2].split()[0] == "doctor:hospital" and lines[i + 3].split()[0] == "hospital"
    for name, m in REF["models"].items():
        fit = _fit(m["formula"], "sleepstudy.csv" if name in ("slope", "double_bar") else "nested.csv")
        assert m["groups_line"] in fit.summary()


def test_summary_random_effects_block_as_lme4():
    """lme4's summary prints formatVC(digits = 4, comp = c("Variance", "Std.Dev."))."""
    m = REF["models"]["slope"]
    vc = {(r["var1"], r.get("var2")): r["vcov"] for r in m["vc"] if r["grp"] == "Subject"}
    cov = np.array([[vc[("(Intercept)", None)], vc[("(Intercept)", "Days")]],
                    [vc[("(Intercept)", "Days")], vc[("Days", None)]]])
    sigma = next(r["sdcor"] for r in m["vc"] if r["grp"] == "Residual")
    v = VarCorr.from_terms([("Subject", ["(Intercept)", "Days"], cov)], sigma)
    r_lines = REF["lmertest"]["slope"]["summary_lines"]
    i = r_lines.index("Random effects:")
    assert v.lines(digits=4, comp=("Variance", "Std.Dev.")) == r_lines[i + 1:i + 5]


# ---- p-values as R prints them ------------------------------------------------------------------

@pytest.mark.parametrize("case", range(len(REF["format_pval"])))
def test_format_pval_as_r(case):
    c = REF["format_pval"][case]
    p = np.atleast_1d(c["p"]).astype(float)
    for key, digits in (("d4", 4), ("d3", 3), ("d1", 1), ("default", 5)):
        assert format_pval(p, digits) == list(np.atleast_1d(c[key]))


def test_r_format_vectors():
    assert r_format([612.1, 35.0717, 654.94], 4) == ["612.10", " 35.07", "654.94"]
    assert r_format([5.6492e-01, 1.1038, 8.518e-10, 9.784e-01], 5) == \
        ["5.6492e-01", "1.1038e+00", "8.5180e-10", "9.7840e-01"]
    assert r_format([1.0, 0.066], 7, nsmall=3) == ["1.000", "0.066"]
    assert r_format([-0.5, 0.25], 7) == ["-0.50", " 0.25"]
    assert r_format([round(-0.0004, 3), 0.25], 7, nsmall=3) == ["0.000", "0.250"]  # R: no "-0"


@pytest.mark.parametrize("model", ["slope", "nested"])
def test_lmertest_tables_print_p_values_as_r(model, slope, nested):
    fit = {"slope": slope, "nested": nested}[model]
    lt = REF["lmertest"]["slope" if model == "slope" else "nested_g3"]
    tab = fit.fixed_effects_test(ddf="satterthwaite")
    assert list(tab["term"]) == lt["coef_names"]
    np.testing.assert_allclose(tab["p_value"], lt["p_summary"], rtol=2e-3)
    mine = format_pval(tab["p_value"].to_numpy(), digits=3)
    for term, p in zip(tab["term"], mine):
        line = next(ln for ln in lt["summary_lines"] if ln.startswith(term + " "))
        assert f" {p} " in line + " ", (term, p, line)
    text = "\n".join(format_fixed_effects_test(tab))
    for p in mine:
        assert p in text
    an = fit.anova_terms()
    assert list(an["term"]) == list(np.atleast_1d(lt["anova_terms"]))
    for term, p in zip(an["term"], format_pval(an["p_value"].to_numpy(), digits=4)):
        line = next(ln for ln in lt["anova_lines"] if ln.startswith(term + " "))
        assert f" {p} " in line + " ", (term, p, line)
    assert "< 2e-16" in fit.summary(ddf="satterthwaite") or model == "nested"


# ---- ICC of a random-slope model ----------------------------------------------------------------

def test_icc_random_slopes_conditional_or_typed_error(slope):
    with pytest.raises(bm.OptionError, match=r"random slopes.*at=\{'Days': 0\}") as e:
        slope.icc()
    assert isinstance(e.value, ValueError)
    G = slope.VarCorr()["Subject"].to_numpy()
    s2 = slope.sigma ** 2
    for days in (0.0, 4.5, 9.0):
        z = np.array([1.0, days])
        v = z @ G @ z
        out = slope.icc(at={"Days": days})
        assert out.loc[0, "variance"] == pytest.approx(v, rel=1e-12)
        assert out.loc[0, "icc"] == pytest.approx(v / (v + s2), rel=1e-12)
        assert out.attrs["at"] == {"Days": days}
    # at Days = 0 the conditional ICC is the intercept variance's
    assert slope.icc(at={"Days": 0})["variance"][0] == pytest.approx(G[0, 0], rel=1e-12)
    with pytest.raises(bm.OptionError, match="unknown"):
        slope.icc(at={"Days": 0, "x": 1})


def test_icc_random_intercepts_unchanged(nested):
    out = nested.icc()
    vc = nested.variance_components.set_index("group")["variance"]
    total = vc.sum()
    for g in ("doctor:hospital", "hospital"):
        assert out.set_index("group").loc[g, "icc"] == pytest.approx(vc[g] / total, rel=1e-12)


@pytest.mark.parametrize("case, formulas", [
    ("fixed", ("Reaction ~ 1 + (1 | Subject)", "Reaction ~ Days + (1 | Subject)")),
    ("slope", ("Reaction ~ Days + (1 | Subject)", "Reaction ~ Days + (Days | Subject)")),
])
def test_lrt_table_prints_p_values_as_lme4(case, formulas):
    ref = REF["anova_lrt"][case]
    a, b = (_fit(f, "sleepstudy.csv", reml=False) for f in formulas)
    table = bm.anova(a, b)
    assert table["Pr(>Chisq)"].iloc[1] == pytest.approx(ref["p"], rel=1e-4)
    text = bm.format_anova(table)
    want = format_pval([ref["p"]], digits=4)[0]
    assert want in ref["lines"][6] and f" {want}" in text


@pytest.mark.parametrize("model", ["slope", "nested_g3"])
@pytest.mark.parametrize("key, lines_key", [("coefs", "summary_lines"), ("coefs_lme4", "summary_lines_lme4")])
def test_print_coefmat_as_r(model, key, lines_key):
    """lme4's / lmerTest's coefficient tables from R's own numbers: the same lines (R's legend
    with ASCII quotes, as R prints it outside a UTF-8 locale)."""
    from bigmixed.io.rformat import print_coefmat

    lt = REF["lmertest"][model]
    rows = lt[key]
    cols = [c for c in rows[0] if c != "_row"]
    got = print_coefmat([r["_row"] for r in rows], cols, [[r[c] for c in cols] for r in rows])
    lines = lt[lines_key]
    i = lines.index("Fixed effects:")
    want = [ln.replace("\u2018", "'").replace("\u2019", "'") for ln in lines[i + 1:i + 1 + len(got)]]
    assert got == want


def test_summary_fixed_effects_block_as_lme4(slope):
    """The fit's own numbers agree with lme4's to the digits printed: the block is lme4's."""
    lt = REF["lmertest"]["slope"]
    for text, lines in ((slope.summary(), lt["summary_lines_lme4"]),
                        (slope.summary(ddf="satterthwaite"), lt["summary_lines"])):
        mine = text.split("\n")
        i, j = mine.index("Fixed effects:"), lines.index("Fixed effects:")
        assert mine[i + 1:i + 4] == lines[j + 1:j + 4]


def test_abbreviate_as_r():
    """R 4.x: abbreviate(c(...), minlength = 6 / 11), as lme4's correlation table uses it."""
    from bigmixed.io.rformat import abbreviate

    names = ["(Intercept)", "methodhplc", "age:sexmale", "I(x^2)", "poly(age, 2)1", "treatmentB",
             "x", "g3k2", "timeSinceBaseline", "sexfemale:agegroup"]
    assert abbreviate(names, 6) == ["(Intr)", "mthdhp", "ag:sxm", "I(x^2)", "p(,2)1", "trtmnB",
                                    "x", "g3k2", "tmSncB", "sxfml:"]
    assert abbreviate(names[:3] + ["timeSinceBaseline", "sexfemale:agegroup"], 11) == \
        ["(Intercept)", "methodhplc", "age:sexmale", "timeSncBsln", "sexfml:ggrp"]
    assert abbreviate(["treatmentAB", "treatmentAC", "treatmentBC"], 6) == ["trtmAB", "trtmAC", "trtmBC"]


@pytest.mark.parametrize("model", ["slope", "nested_g3"])
def test_summary_correlation_of_fixed_effects_as_lme4(model, slope, nested):
    fit = {"slope": slope, "nested_g3": nested}[model]
    mine = fit.summary().split("\n")
    lines = REF["lmertest"][model]["summary_lines_lme4"]
    i, j = mine.index("Correlation of Fixed Effects:"), lines.index("Correlation of Fixed Effects:")
    n = len(fit.fixed_names)
    assert mine[i + 1:i + n] == lines[j + 1:j + n]


@pytest.mark.parametrize("model", ["slope", "nested_g3"])
def test_summary_scaled_residuals_as_lme4(model, slope, nested):
    fit = {"slope": slope, "nested_g3": nested}[model]
    mine = fit.summary().split("\n")
    lines = REF["lmertest"][model]["summary_lines_lme4"]
    i = mine.index("Scaled residuals:")
    j = [k for k, ln in enumerate(lines) if ln.startswith("Scaled residuals:")][0]
    assert mine[i + 1:i + 3] == lines[j + 1:j + 3]


@pytest.mark.parametrize("model, formula, file", [
    ("slope", "Reaction ~ Days + (Days | Subject)", "sleepstudy.csv"),
    ("nested", "y ~ x + (1 | hospital/doctor)", "nested.csv"),
])
def test_ml_summary_aic_table_as_lme4(model, formula, file):
    fit = _fit(formula, file, reml=False)
    mine = fit.summary().split("\n")
    lines = REF["ml_summary"][model]
    i = next(k for k, ln in enumerate(mine) if ln.strip().startswith("AIC"))
    j = next(k for k, ln in enumerate(lines) if ln.strip().startswith("AIC"))
    assert mine[i:i + 2] == lines[j:j + 2]
    assert REF["lmertest"]["slope"]["summary_lines_lme4"] and groups_line_of(lines) in fit.summary()


def groups_line_of(lines):
    return next(ln for ln in lines if ln.startswith("Number of obs"))


def test_icc_bootstrap_takes_coverage(nested):
    a = nested.icc("bootstrap", nsim=8, seed=2, coverage=0.8)
    with pytest.warns(FutureWarning, match="coverage"):
        b = nested.icc("bootstrap", nsim=8, seed=2, level=0.8)
    pd.testing.assert_frame_equal(a, b)
    assert "80%" in a.attrs["interval"]
    assert (a["lower"] <= a["upper"]).all() and a[["lower", "upper"]].notna().all().all()
