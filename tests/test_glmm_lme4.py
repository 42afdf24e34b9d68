"""GLMM fits against glmer's (bench/references_glmm, made by bench/make_glmm_references.py with
R's lme4; the tests never call R).

For every model and nAGQ, glmer was run with its default control, a bobyqa refit and tight
tolerances (and, for ill-scaled covariates, on rescaled covariates); the reference is the best
of these (highest log-likelihood). The issue's tolerances:

* log-likelihood at least glmer's best minus 1e-6 relative;
* where that best glmer fit converged (no convergence message): beta within 1e-4 (relative,
  or of the standard error for a coefficient near zero), SEs within 1e-3 relative, theta
  within 1e-3.
"""
from __future__ import annotations

import glob
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bigmixed as bm

REF = Path(__file__).resolve().parents[1] / "bench" / "references_glmm"
GROUPS = sorted({Path(p).name.rsplit("_", 1)[0] for p in glob.glob(str(REF / "*_agq*_*.json"))
                 if not p.endswith("_rescaled.json")})


def load_data(ref) -> pd.DataFrame:
    df = pd.read_csv(REF / ref["data"])
    levels = ref.get("factor_levels") or {}
    for col, lv in levels.items():
        df[col] = pd.Categorical(df[col].astype(str), categories=[str(x) for x in lv])
    return df


def candidates(group):
    out = []
    for path in sorted(REF.glob(f"{group}_*.json")):
        ref = json.loads(path.read_text())
        if ref.get("minus2logLik") is not None and ref.get("beta"):
            out.append(ref)
    return out


def fit_like(ref):
    kw = dict(family=ref["family"], link=ref["link"], nAGQ=ref["nAGQ"])
    if ref.get("weights_arg"):
        kw["weights"] = ref["weights_arg"]
    if ref.get("offset_arg"):
        kw["offset"] = ref["offset_arg"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        return bm.glmm(ref["formula"], load_data(ref), **kw).fit()


@pytest.fixture(scope="module")
def fits():
    return {}


def _fit(fits, group):
    if group not in fits:
        refs = candidates(group)
        base = next(r for r in refs if "rescaled" not in r["name"])
        fits[group] = (refs, fit_like(base))
    return fits[group]


@pytest.mark.parametrize("group", GROUPS)
def test_loglik_at_least_glmers_best(fits, group):
    refs, fit = _fit(fits, group)
    if any(isinstance(w, bm.SeparationWarning) for w in fit.warnings):
        pytest.skip("separated data: the likelihood has no maximum (it grows as a coefficient "
                    "diverges); the fit warns instead")
    best = min(r["minus2logLik"] for r in refs)
    assert fit.objective <= best + 1e-6 * abs(best), (fit.objective, best)
    assert fit.llf == pytest.approx(-0.5 * fit.objective)
    assert fit.nobs == refs[0]["nobs"]
    assert fit.n_params == refs[0]["df"]


@pytest.mark.parametrize("group", GROUPS)
def test_estimates_match_a_converged_glmer(fits, group):
    refs, fit = _fit(fits, group)
    ref = min((r for r in refs if list(r["beta"]) == fit.fixed_names),
              key=lambda r: r["minus2logLik"])
    failed = [m for m in ref.get("conv_lme4_messages") or [] if "failed to converge" in m]
    if failed:  # (glmer's "nearly unidentifiable" notes are not failures)
        pytest.skip(f"glmer's best fit of {group} did not converge: {failed[0]}")
    assert fit.fixed_names == list(ref["beta"])
    beta = np.array(list(ref["beta"].values()))
    se = np.array(list(ref["se"].values()))
    theta = np.array(list(ref["theta"].values()))
    assert np.all(np.abs(fit.beta - beta) <= 1e-4 * np.maximum(np.abs(beta), se))
    np.testing.assert_allclose(fit.bse.to_numpy(), se, rtol=1e-3)
    np.testing.assert_allclose(fit.theta, theta, atol=1e-3)


@pytest.mark.parametrize("group", GROUPS)
def test_conditional_modes_and_variances_match_a_converged_glmer(fits, group):
    """ranef(condVar = TRUE) as glmer's (where glmer's best fit converged; at a zero variance
    both are zero, to rounding): the modes to 1e-5 of the largest |mode|, the conditional
    variances to 1e-5 relative (from the weights of lme4's L, at the linearization point of
    PIRLS's last solve; nAGQ = 0: stage 1's joint PIRLS). Probit: 5e-4 and 2e-3, as
    pirls="auto" fits the exact Laplace criterion there (glmer's Fisher scoring stops
    ~sqrt(tolPwrss) from the modes)."""
    refs, fit = _fit(fits, group)
    ref = min((r for r in refs if list(r["beta"]) == fit.fixed_names),
              key=lambda r: r["minus2logLik"])
    failed = [m for m in ref.get("conv_lme4_messages") or [] if "failed to converge" in m]
    if failed:
        pytest.skip(f"glmer's best fit of {group} did not converge: {failed[0]}")
    frames = fit.ranef(condvar=True)
    condvars = fit.conditional_variances()
    for name, r in ref["ranef"].items():
        modes = np.array(r["modes"])
        got = frames[name]
        assert list(got.index.astype(str)) == [str(v) for v in r["levels"]]
        est = got[r["columns"]].to_numpy()
        rel = 5e-4 if ref["link"] == "probit" else 1e-5
        tol = max(rel * float(np.max(np.abs(modes))), 1e-12)
        assert np.max(np.abs(est - modes)) <= tol, group
        cv = np.array(r["condvar"])
        got_cv = np.asarray(condvars[name]).reshape(cv.shape)
        rtol = 2e-3 if ref["link"] == "probit" else 1e-5
        np.testing.assert_allclose(got_cv, cv, rtol=rtol, atol=1e-14)
