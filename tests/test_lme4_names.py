"""lme4's and statsmodels' names on a fit (issue #16 item 3): VarCorr, fixef, ranef, coef,
refit_ml; pvalues, conf_int. References: bench/lme4_names_reference.R ->
bench/references_parity/lme4_names.json (lme4's print(VarCorr(fit)), as.data.frame(VarCorr),
confint(method = "Wald"), ranef / coef shapes, refitML)."""
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import bigmixed as bm
from bigmixed.io.summary import VarCorr

PARITY = Path(__file__).resolve().parents[1] / "bench" / "references_parity"
REF = json.loads((PARITY / "lme4_names.json").read_text())
MODELS = REF["models"]


def _data(name):
    return pd.read_csv(PARITY / ("sleepstudy.csv" if name in ("slope", "double_bar") else "nested.csv"))


@pytest.fixture(scope="module")
def fits():
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        for name, m in MODELS.items():
            out[name] = bm.lmm(m["formula"], _data(name)).fit()
    return out


def _lme4_varcorr(m):
    """A VarCorr built from lme4's own numbers (as.data.frame(VarCorr(fit)))."""
    terms, sigma = {}, None
    for r in m["vc"]:
        if r["grp"] == "Residual":
            sigma = r["sdcor"]
            continue
        t = terms.setdefault(r["grp"], {"names": [], "var": {}, "cor": {}})
        if "var2" not in r:
            t["names"].append(r["var1"])
            t["var"][r["var1"]] = r["vcov"]
        else:
            t["cor"][(r["var1"], r["var2"])] = r["vcov"]
    out = []
    for g, t in terms.items():
        names = t["names"]
        cov = np.diag([t["var"][n] for n in names])
        for (a, b), c in t["cor"].items():
            i, j = names.index(a), names.index(b)
            cov[i, j] = cov[j, i] = c
        out.append((g, names, cov))
    return VarCorr.from_terms(out, sigma)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_varcorr_prints_as_lme4(name):
    m = MODELS[name]
    vc = _lme4_varcorr(m)
    assert str(vc) == m["varcorr_print_default"]
    assert vc.format(comp=("Variance", "Std.Dev.")) == m["varcorr_print"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_varcorr_of_the_fit(fits, name):
    m, fit = MODELS[name], fits[name]
    vc = fit.VarCorr()
    want = pd.DataFrame(m["vc"])
    got = vc.as_data_frame()
    assert list(got["grp"]) == list(want["grp"])  # lme4's order of the terms and rows
    assert list(got["var1"].fillna("")) == list(want["var1"].fillna(""))
    assert list(got["var2"].fillna("")) == list(want.get("var2", pd.Series([None] * len(want))).fillna(""))
    big = got["vcov"].abs() > 1e-3 * got["vcov"].abs().max()
    np.testing.assert_allclose(got.loc[big, "vcov"], want.loc[big, "vcov"], rtol=5e-3)
    # the printed layout is lme4's: same lines, same column positions
    lines, ref = str(vc).split("\n"), m["varcorr_print_default"].split("\n")
    assert [ln.split()[0] for ln in lines[1:] if ln[1] != " "] == \
           [ln.split()[0] for ln in ref[1:] if ln[1] != " "]
    assert lines[0].split() == ref[0].split()
    # mapping access: a term's covariance matrix
    g = vc.keys()[0]
    np.testing.assert_array_equal(vc[g].to_numpy(), vc.terms[0][2])
    assert vc.sigma == fit.sigma
    with pytest.raises(KeyError, match="no random-effects term"):
        vc["nope"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fixef_ranef_coef_shapes(fits, name):
    m, fit = MODELS[name], fits[name]
    fe = fit.fixef()
    assert list(fe.index) == list(m["fixef"])
    np.testing.assert_allclose(fe.to_numpy(), list(m["fixef"].values()), rtol=1e-4, atol=1e-6)
    re = fit.ranef(condvar=False)
    assert sorted(re) == sorted(m["ranef_shape"])
    for g, shape in m["ranef_shape"].items():
        assert list(re[g].shape) == shape["dim"]
        assert list(re[g].columns) == list(np.atleast_1d(shape["names"]))
        assert [str(v) for v in re[g].index[:3]] == shape["rows"]
    co = fit.coef()
    for g, shape in m["coef_shape"].items():
        assert list(co[g].shape) == shape["dim"]
        assert list(co[g].columns) == list(np.atleast_1d(shape["names"]))


def test_pvalues_and_conf_int_statsmodels_names(fits):
    fit = fits["slope"]
    p = fit.pvalues
    tab = fit.fixed_effects_test(ddf="satterthwaite")
    np.testing.assert_array_equal(p.to_numpy(), tab["p_value"].to_numpy())
    assert list(p.index) == fit.fixed_names
    lt = REF["lmertest"]["slope"]
    np.testing.assert_allclose(p.to_numpy(), lt["p_summary"], rtol=1e-3)
    ci = fit.conf_int()
    assert list(ci.columns) == [0, 1] and list(ci.index) == fit.fixed_names
    z = stats.norm.ppf(0.975)
    np.testing.assert_allclose(ci[0], fit.params - z * fit.bse, rtol=1e-12)
    np.testing.assert_allclose(ci[1], fit.params + z * fit.bse, rtol=1e-12)
    ci90 = fit.conf_int(alpha=0.1)
    np.testing.assert_allclose(ci90[1] - ci90[0], 2 * stats.norm.ppf(0.95) * fit.bse, rtol=1e-12)
    # lme4's confint(method = "Wald") rows of the fixed effects
    m = MODELS["slope"]
    lo = dict(zip(m["confint_wald_rows"], m["confint_wald_lower"]))
    np.testing.assert_allclose(ci[0], [lo[n] for n in fit.fixed_names], rtol=1e-4)


def test_refit_ml_as_lme4_refitML(fits):
    fit = fits["slope"]
    ml = fit.refit_ml()
    ref = REF["refitML"]
    assert fit.reml and not ml.reml and ref["isREML"] is False
    assert ml.deviance == pytest.approx(ref["deviance"], abs=1e-4)
    np.testing.assert_allclose(ml.beta, ref["beta"], rtol=1e-6)
    assert ml.refit_ml() is ml  # an ML fit is returned as it is (lme4's refitML)
    # the same as the model's refit
    again = fit.model.refit(reml=False)
    assert again.objective == pytest.approx(ml.objective, abs=1e-6)


def test_varcorr_of_double_bar_terms_named_as_lme4():
    """(Days || Subject): two terms on Subject, printed by lme4 as Subject and Subject.1
    (lme4 1.1: print(VarCorr(lmer(Reaction ~ Days + (Days || Subject), sleepstudy))))."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        fit = bm.lmm("Reaction ~ Days + (Days || Subject)", _data("slope")).fit()
    vc = fit.VarCorr()
    assert vc.keys() == ["Subject", "Subject.1"]
    assert list(vc.as_data_frame()["grp"]) == ["Subject", "Subject.1", "Residual"]
    lines = str(vc).split("\n")
    assert [ln.split()[0] for ln in lines] == ["Groups", "Subject", "Subject.1", "Residual"]
    want = [r["sdcor"] for r in MODELS["double_bar"]["vc"]]
    np.testing.assert_allclose(vc.as_data_frame()["sdcor"], want, rtol=1e-5)
    assert "groups:  Subject, 18" in fit.summary()
