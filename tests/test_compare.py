"""Likelihood-ratio tests between fits (bigmixed/compare.py) against lme4's anova().

References: bench/references_inference/inference.json, made by make_inference_refs.R from the
committed data of bench/references (lme4 1.1.31; the boundary-mixture p-values are computed
there in R from lme4's Chisq).
"""
import json
import warnings

import numpy as np
import pytest
from scipy import stats

import bigmixed as bm
from bigmixed.inference.compare import BOUNDARY, NAIVE, boundary_mixture, mixture_pvalue

from lme4_refs import INDEX, INFREF, REF, load_data

_CACHE = {}


def fit_quiet(formula, data_file, reml=True):
    key = (formula, data_file, reml)
    if key not in _CACHE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", bm.BigmixedWarning)
            _CACHE[key] = bm.lmm(formula, load_data(data_file), reml=reml).fit()
    return _CACHE[key]


def nan(v):
    return np.array([np.nan if x is None else x for x in v], dtype=float)


@pytest.mark.parametrize("label", sorted(INFREF["anova"]))
def test_anova_matches_lme4(label):
    case = INFREF["anova"][label]
    fits = [fit_quiet(f, case["data"], case["reml"]) for f in case["formulas"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        tab = bm.anova(*fits, refit=case["refit"])
    assert list(tab.index) == case["models"]  # ordered by npar, as lme4
    np.testing.assert_array_equal(tab["npar"].to_numpy(), case["npar"])
    for col in ("logLik", "deviance", "AIC", "BIC"):
        np.testing.assert_allclose(tab[col].to_numpy(float), case[col], rtol=1e-8)
    np.testing.assert_allclose(tab["Chisq"].to_numpy(float), nan(case["Chisq"]), atol=1e-5)
    np.testing.assert_array_equal(tab["Df"].to_numpy(float, na_value=np.nan), nan(case["Df"]))
    np.testing.assert_allclose(tab[NAIVE].to_numpy(float), nan(case["p"]), rtol=1e-5)
    if case.get("mixture_q") is not None:
        want = nan(case["p_mixture"])
        got = tab[BOUNDARY].to_numpy(float)
        np.testing.assert_allclose(got, want, rtol=1e-5)
        for q, null in zip(case["mixture_q"], tab["null"]):
            if q is not None:
                assert null == f"0.5 chi2({q}) + 0.5 chi2({q + 1})"
    else:
        assert tab[BOUNDARY].isna().all()
    if case["refit"] and case["reml"]:
        assert tab.attrs["refitted"] == [f"model{i + 1}" for i in range(len(fits))]
        assert "refitting model(s) with ML" in tab.attrs["heading"][0]
        assert tab.attrs["criterion"] == "ML"
    else:
        assert tab.attrs["refitted"] == []


def test_refit_by_ml_matches_the_ml_fit():
    """The ML refit of a REML fit reaches lme4's (precise) ML deviance of the same model."""
    model = next(m for m in INDEX["models"] if m["name"] == "slope")
    ref = json.loads((REF / model["fits"]["ml"]).read_text())
    fit = fit_quiet(ref["formula"], model["data"], reml=True)
    from bigmixed.inference.compare import refit_ml

    ml = refit_ml(fit)
    again = refit_ml(fit)  # a new, independent fit with the same numbers
    assert not ml.reml and again is not ml and again.objective == ml.objective
    assert np.array_equal(again.theta, ml.theta) and again.model is not fit.model
    assert ml.objective <= ref["precise"]["objective"] + 1e-6
    assert ml.objective == pytest.approx(ref["precise"]["objective"], abs=1e-6)
    assert fit.reml and fit.model.reml  # the REML fit is untouched


def test_mixture_pvalue_closed_forms():
    for stat in (0.5, 2.7, 10.0):
        assert mixture_pvalue(stat, 0) == pytest.approx(0.5 * stats.chi2.sf(stat, 1), rel=1e-14)
        assert mixture_pvalue(stat, 2) == pytest.approx(
            0.5 * stats.chi2.sf(stat, 2) + 0.5 * stats.chi2.sf(stat, 3), rel=1e-14)
    assert mixture_pvalue(0.0, 0) == 1.0
    # the mixture is never more conservative than the naive chi2(q + 1)
    assert mixture_pvalue(3.0, 1) < stats.chi2.sf(3.0, 2)


def test_mixture_detection_reasons():
    fx = "mobility ~ age + sex + time"
    ri = fit_quiet(fx + " + (1 | doctor)", "slope.csv")
    corr = fit_quiet(fx + " + (time | doctor)", "slope.csv")
    uncorr = fit_quiet(fx + " + (time || doctor)", "slope.csv")
    pat = fit_quiet(fx + " + (1 | doctor) + (1 | patient)", "slope.csv")
    both = fit_quiet(fx + " + (time | doctor) + (1 | patient)", "slope.csv")
    fewer = fit_quiet("mobility ~ age + time + (1 | doctor)", "slope.csv")
    assert boundary_mixture(ri, corr) == (1, None)
    assert boundary_mixture(ri, uncorr) == (0, None)
    assert boundary_mixture(ri, pat) == (0, None)
    assert boundary_mixture(pat, both) == (1, None)
    q, why = boundary_mixture(uncorr, corr)
    assert q is None and "covariances only" in why
    q, why = boundary_mixture(ri, both)
    assert q is None and "more than one" in why
    q, why = boundary_mixture(fewer, ri)
    assert q is None and "fixed effects differ" in why
    q, why = boundary_mixture(corr, pat)
    assert q is None and "not nested" in why
    tab = bm.anova(ri, both)
    assert np.isnan(tab[BOUNDARY].iloc[1]) and "more than one" in tab["note"].iloc[1]
    assert tab["null"].iloc[1] == "chi2(3)"


def test_anova_input_checks_and_text():
    a = fit_quiet("mobility ~ age + sex + (1 | doctor)", "ri.csv")
    b = fit_quiet("mobility ~ age + sex + wbc + (1 | doctor)", "ri.csv")
    other = fit_quiet("mobility ~ age + sex + (1 | doctor)", "ri_na.csv")
    with pytest.raises(ValueError, match="two or more"):
        bm.anova(a)
    with pytest.raises(ValueError, match="same"):
        bm.anova(a, other)
    with pytest.raises(TypeError):
        bm.anova(a, "b")
    with pytest.warns(bm.BigmixedWarning, match="not comparable"):
        bm.anova(a, b, refit=False)
    tab = bm.anova(a, b, names=["small", "big"])
    assert list(tab.index) == ["small", "big"]
    assert tab.equals(a.anova(b, names=["small", "big"]))
    text = bm.format_anova(tab)
    assert "refitting model(s) with ML" in text and "small: mobility ~ age + sex + (1 | doctor)" in text
    assert "Chisq" in text and NAIVE in text
