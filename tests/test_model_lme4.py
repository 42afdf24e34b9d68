"""Fits against lme4's reference fits (bench/references, made by bench/make_references.py).

Tolerances from the core issue: objective no worse than lme4's (1e-6 relative), beta within 1e-5
relative, SEs 1e-4 relative, sigma 1e-5 relative, theta within 1e-3, BLUPs within 1e-4 sigma.
Estimates are compared with lme4's high-precision fit ("precise"); the objective with both.
"""
import json
import warnings

import numpy as np
import pandas as pd
import pytest

import bigmixed as bm

from lme4_refs import CASES, INDEX, REF, load_data  # noqa: F401 (INDEX, REF used by bench/accuracy.py)


@pytest.fixture(scope="module")
def fits():
    cache = {}

    def get(model, kind):
        key = (model["name"], kind)
        if key not in cache:
            ref = json.loads((REF / model["fits"][kind]).read_text())
            df = load_data(model["data"])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", bm.BigmixedWarning)
                fit = bm.lmm(ref["formula"], df, reml=(kind == "reml")).fit()
            cache[key] = (fit, ref)
        return cache[key]

    return get


def rel(a, b, floor):
    return np.abs(np.asarray(a) - np.asarray(b)) / np.maximum(np.abs(np.asarray(b)), floor)


@pytest.mark.parametrize("model,kind", CASES, ids=[f"{m['name']}-{k}" for m, k in CASES])
def test_matches_lme4(fits, model, kind):
    fit, ref = fits(model, kind)
    precise = ref.get("precise", ref)
    # objective: never worse than lme4 (default or precise fit)
    best = min(ref["objective"], precise["objective"])
    assert fit.objective <= best + 1e-6 * abs(best), (fit.objective, best)
    assert fit.nobs == ref["nobs"]
    # fixed effects
    names = ref["fixed_names"]
    assert fit.fixed_names == names
    b_ref = np.array([precise["beta"][n] for n in names])
    se_ref = np.array([precise["se"][n] for n in names])
    assert np.all(rel(fit.beta, b_ref, se_ref) < 1e-5), (fit.beta, b_ref)
    assert np.all(rel(fit.bse.to_numpy(), se_ref, 1e-300) < 1e-4), (fit.bse.to_numpy(), se_ref)
    assert rel(fit.sigma, precise["sigma"], 1e-300) < 1e-5
    # theta in lme4's order and names
    th_names = list(precise["theta"].keys())
    th_ref = np.array(list(precise["theta"].values()))
    assert fit.structure.theta_names == th_names
    assert np.all(np.abs(fit.theta - th_ref) < 1e-3), (fit.theta, th_ref)
    # conditional modes, matched by level name
    ranef = fit.ranef()
    for group, r in precise.get("ranef", ref["ranef"]).items():
        mine = ranef[group]
        modes = pd.DataFrame(np.array(r["modes"]).reshape(len(r["levels"]), -1),
                             index=r["levels"], columns=r["columns"])
        got = mine.loc[modes.index, r["columns"]].to_numpy()
        assert np.max(np.abs(got - modes.to_numpy())) < 1e-4 * fit.sigma, group
        if "condsd" in r:
            for col, sds in r["condsd"].items():
                np.testing.assert_allclose(mine.loc[modes.index, f"{col}_sd"].to_numpy(), sds,
                                           rtol=2e-3, atol=1e-4 * fit.sigma)
    assert fit.is_singular == bool(ref["isSingular"])


def test_information_criteria_match_lme4(fits):
    model = next(m for m in INDEX["models"] if m["name"] == "slope")
    for kind in ("reml", "ml"):
        fit, ref = fits(model, kind)
        assert fit.n_params == ref["df"]
        np.testing.assert_allclose(fit.llf, ref["logLik"], rtol=1e-6)
        np.testing.assert_allclose(fit.aic, ref["AIC"], rtol=1e-6)
        np.testing.assert_allclose(fit.bic, ref["BIC"], rtol=1e-6)
