"""Residual structures against nlme's lme (bench/references_nlme, made by
bench/make_nlme_references.py with R's nlme; the tests never call R).

Tolerances are the issue's: objective (-2 REML or ML log-likelihood) within 1e-6 relative and
never worse than nlme's; estimates within 1e-4 relative. Estimates are compared with the
references' polished optimum (Newton steps on nlme's own likelihood in R, `dense_check.polished`)
where there is one: nlme's optimizer stops with gradients of ~1e-3.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bigmixed as bm

REFS = Path(__file__).resolve().parents[1] / "bench" / "references_nlme"

MODELS = {
    "ar1_ri": ("y ~ time * treat + (1 | patient)", dict(residual=bm.AR1("visit", "patient"))),
    "ar1_slope": ("y ~ time * treat + (1 + time | patient)", dict(residual=bm.AR1("visit", "patient"))),
    "car1": ("y ~ time * treat + (1 | patient)", dict(residual=bm.AR1("time", "patient"))),
    "cs": ("y ~ time * treat + (1 | hospital)", dict(residual=bm.CompoundSymmetry("patient"))),
    "varident": ("y ~ time * treat + (1 | patient)", dict(variance="arm")),
    "ar1_varident": ("y ~ time * treat + (1 | patient)",
                     dict(residual=bm.AR1("visit", "patient"), variance="arm")),
}
CASES = [(name, method) for name in MODELS for method in ("reml", "ml")]


def _load(name, method):
    ref = json.loads((REFS / f"{name}_{method}.json").read_text())
    df = pd.read_csv(REFS / ref["data"], dtype={"patient": str, "hospital": str, "arm": str})
    return ref, df


def _fit(name, method, ref, df):
    formula, kw = MODELS[name]
    kw = dict(kw)
    if kw.get("variance"):
        kw["variance"] = bm.VarIdent(kw["variance"], reference=ref["varStruct"]["reference"])
    return bm.lmm(formula, df, reml=(method == "reml"), **kw).fit()


def _best(ref):
    """nlme's estimates at the polished optimum when available, else the tight fit's."""
    polished = (ref.get("dense_check") or {}).get("polished")
    tight = ref.get("tight") or ref
    return polished, tight


@pytest.fixture(scope="module")
def fits():
    out = {}
    for name, method in CASES:
        ref, df = _load(name, method)
        out[name, method] = (ref, _fit(name, method, ref, df))
    return out


@pytest.mark.parametrize("name,method", CASES)
def test_objective_matches_nlme_and_is_never_worse(fits, name, method):
    ref, fit = fits[name, method]
    polished, tight = _best(ref)
    nlme = -2.0 * (polished["logLik"] if polished else tight["logLik"])
    assert fit.objective == pytest.approx(nlme, rel=1e-6)
    assert fit.objective <= -2.0 * tight["logLik"] + 1e-9 * abs(nlme)
    assert fit.llf == pytest.approx(-0.5 * fit.objective)
    assert fit.n_params == ref["df"]


@pytest.mark.parametrize("name,method", CASES)
def test_estimates_match_nlme(fits, name, method):
    ref, fit = fits[name, method]
    polished, tight = _best(ref)
    names = tight["fixed_names"]
    assert list(fit.fixed_names) == names
    if polished:
        beta = np.array([polished["beta"][k] for k in names])
        se = np.array([polished["se"][k] for k in names])
        sigma = polished["sigma"]
        re_sd = polished["re_sd"]
        corr_param = polished.get("cor")
        ratios = polished.get("varident_ratios")
    else:
        beta = np.array([tight["beta"][k] for k in names])
        se = np.array([tight["se"][k] for k in names])
        sigma = tight["sigma"]
        re_sd = next(iter(tight["random_effects"].values()))["sd"]
        corr_param = next(iter(tight["corStruct"]["natural"].values())) if tight.get("corStruct") else None
        ratios = tight["varStruct"]["all"] if tight.get("varStruct") else None
    np.testing.assert_allclose(fit.beta, beta, rtol=1e-4, atol=1e-4 * np.max(np.abs(beta)))
    np.testing.assert_allclose(fit.bse.to_numpy(), se, rtol=1e-4)
    assert fit.sigma == pytest.approx(sigma, rel=1e-4)
    vc = fit.variance_components
    for col, sd in re_sd.items():
        got = vc[(vc["term1"] == col) & vc["term2"].isna() & (vc["group"] != "Residual")]["sd"]
        assert float(got.iloc[0]) == pytest.approx(sd, rel=1e-4)
    rp = fit.residual_parameters
    if corr_param is not None:
        assert float(rp.iloc[0]) == pytest.approx(corr_param, rel=1e-4)
    if ratios is not None:
        sd = fit.residual_sd()
        for level, ratio in ratios.items():
            assert sd[level] / fit.sigma == pytest.approx(ratio, rel=1e-4)


@pytest.mark.parametrize("name,method", [c for c in CASES if c[1] == "reml"])
def test_blups_match_nlme(fits, name, method):
    ref, fit = fits[name, method]
    _, tight = _best(ref)
    ranef = tight.get("ranef") or ref["ranef"]
    for group, r in ranef.items():
        want = pd.DataFrame(r["values"], index=r["levels"], columns=r["columns"])
        got = fit.ranef(condvar=False)[group].loc[want.index, want.columns]
        # nlme's tight fit stops ~1e-5 short in the variance parameters
        np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), atol=1e-3 * fit.sigma)


@pytest.mark.parametrize("name", ["lrt_ar1_ri", "lrt_varident"])
def test_likelihood_ratio_test_matches_nlme_anova(name):
    ref = json.loads((REFS / f"{name}.json").read_text())
    model = name.removeprefix("lrt_")
    fref, df = _load(model, "reml")
    formula, kw = MODELS[model]
    kw = dict(kw)
    if kw.get("variance"):
        kw["variance"] = bm.VarIdent(kw["variance"])
    m0 = bm.lmm(formula, df).fit()
    m1 = bm.lmm(formula, df, **kw).fit()
    table = bm.anova(m0, m1, refit=False)
    want = ref["tight"]
    assert table["Chisq"].iloc[1] == pytest.approx(want["L.Ratio"], rel=1e-5)
    assert table["Df"].iloc[1] == want["df_diff"]
    assert table["npar"].tolist() == want["df"]
    assert table["logLik"].tolist() == pytest.approx(want["logLik"], rel=1e-7)


def test_plain_model_nlme_and_lme4_conventions_agree():
    """nlme's REML log-likelihood equals lme4's (no log|X'X| constant): checked in R by the
    reference script, and the same fit here gives both."""
    ref = json.loads((REFS / "plain.json").read_text())
    _, df = _load("ar1_ri", "reml")
    fit = bm.lmm(ref["lmer_formula"], df).fit()
    assert fit.llf == pytest.approx(ref["reml"]["lme4"]["logLik"], rel=1e-9)
    assert fit.llf == pytest.approx(ref["reml"]["nlme"]["logLik"], rel=1e-9)


def test_intervals_match_nlme():
    """nlme's intervals(fit, which = "var-cov") (bench/nlme_intervals.R): Wald on the
    unconstrained scale from the inverse Hessian, nlme run with a finite-difference step of 1e-4
    (its default, ~6e-6, leaves a few percent of rounding noise in the standard errors; see the
    script)."""
    ref = json.loads((REFS / "intervals.json").read_text())
    cases = {"ar1_ri": ("corStruct", ["Phi"]), "cs": ("corStruct", ["Rho"]),
             "varident": ("varStruct", None)}
    for name, (key, names) in cases.items():
        fref, df = _load(name, "reml")
        fit = _fit(name, "reml", fref, df)
        got = fit.residual_intervals()
        want = np.array(ref[name][key], dtype=float).reshape(-1, 3)
        if names is None:  # varIdent ratios, named by level, reference first
            names = [f"arm={lv}" for lv in ref[name]["rownames"]]
        got = got.loc[names, ["lower", "estimate", "upper"]].to_numpy()
        np.testing.assert_allclose(got[:, 1], want[:, 1], rtol=2e-5)
        np.testing.assert_allclose(got, want, rtol=2e-4)


def test_interval_width_is_the_observed_information():
    """The SE behind residual_intervals equals the one from an independent central-difference
    Hessian of the profiled criterion in (theta, eta)."""
    from bigmixed.inference.satterthwaite import satterthwaite_state

    fref, df = _load("ar1_ri", "reml")
    fit = _fit("ar1_ri", "reml", fref, df)
    m, x, h = fit.model, fit.optimizer_params, 3e-4
    k = len(x)
    H = np.empty((k, k))
    for a in range(k):
        for b in range(k):
            ea, eb = np.eye(k)[a] * h, np.eye(k)[b] * h
            H[a, b] = (m.objective(x + ea + eb) - m.objective(x + ea - eb)
                       - m.objective(x - ea + eb) + m.objective(x - ea - eb)) / (4 * h * h)
    se_profiled = np.sqrt(np.diag(2 * np.linalg.inv(H)))
    se_state = np.sqrt(np.diag(satterthwaite_state(fit).vcov_varpar))[:k]
    np.testing.assert_allclose(se_state, se_profiled, rtol=1e-4)
    iv = fit.residual_intervals()
    z = 1.959963984540054
    eta = x[-1]
    assert iv.loc["Phi", "upper"] == pytest.approx(np.tanh((eta + z * se_state[-1]) / 2), rel=1e-12)
