"""GLMM warnings and errors: separation, a binary response given to lmm, and typed errors for
responses outside the family's support, bad weights and offsets."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bigmixed as bm

REF = Path(__file__).resolve().parents[1] / "bench" / "references_glmm"


def _frame(seed=0, n=300):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 20, n)
    x = rng.standard_normal(n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(x + rng.normal(0, 1, 20)[g])))).astype(float)
    return pd.DataFrame({"y": y, "x": x, "g": g.astype(str), "c": rng.poisson(2.0, n).astype(float),
                         "t": rng.integers(1, 5, n).astype(float)})


def test_separation_is_detected_and_names_the_column():
    df = pd.read_csv(REF / "glmm_separation.csv")
    with pytest.warns(bm.SeparationWarning, match=r"\(flag\)"):
        fit = bm.glmm("remission ~ age + sex + flag + (1 | doctor)", df).fit()
    assert any(isinstance(w, bm.SeparationWarning) for w in fit.warnings)
    ok = _frame()
    with warnings.catch_warnings():
        warnings.simplefilter("error", bm.SeparationWarning)
        bm.glmm("y ~ x + (1 | g)", ok).fit()


def test_a_binary_response_to_lmm_warns_and_points_to_glmm():
    df = _frame()
    with pytest.warns(bm.BinaryResponseWarning, match="bm.glmm"):
        fit = bm.lmm("y ~ x + (1 | g)", df).fit()
    assert any(isinstance(w, bm.BinaryResponseWarning) for w in fit.warnings)
    with warnings.catch_warnings():
        warnings.simplefilter("error", bm.BinaryResponseWarning)
        bm.lmm("x ~ y + (1 | g)", df)


@pytest.mark.parametrize("formula,family,kw,error,match", [
    ("x ~ 1 + (1 | g)", "binomial", {}, bm.ResponseSupportError, "in \\[0, 1\\]"),
    ("x ~ 1 + (1 | g)", "poisson", {}, bm.ResponseSupportError, "negative"),
    ("I(c + 0.5) ~ 1 + (1 | g)", "poisson", {}, bm.ResponseSupportError, "whole counts"),
    ("y ~ x + (1 | g)", "binomial", {"weights": -np.ones(300)}, bm.WeightsError, "positive"),
    ("y ~ x + offset(log(c)) + (1 | g)", "binomial", {}, bm.NonFiniteValueError, "offset"),
    ("cbind(c, t - c) ~ x + (1 | g)", "binomial", {}, bm.ResponseSupportError, "non-negative"),
    ("y ~ x + (1 | g)", "gamma", {}, bm.FamilyError, "unknown family"),
    ("y ~ x + (1 | g)", bm.Poisson(), {"link": "logit"}, bm.FamilyError, "not available"),
    ("y ~ x + (1 | g)", "binomial", {"offset": "zz"}, bm.MissingColumnError, "zz"),
])
def test_bad_input_gets_a_typed_error(formula, family, kw, error, match):
    with pytest.raises(error, match=match):
        bm.glmm(formula, _frame(), family=family, **kw)


def test_fit_many_binary_phenotypes_equal_single_fits():
    """fit_many with family="binomial": every fit the same bits as bm.glmm on that response."""
    df = _frame(3, n=600)
    rng = np.random.default_rng(4)
    for k in range(3):
        df[f"p{k}"] = (rng.random(len(df)) < 0.3 + 0.2 * (df["x"] > 0)).astype(float)
    df.loc[5, "p1"] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        many = bm.fit_many("~ x + (1 | g)", df, responses="p*", family="binomial", n_jobs=2)
        for k in range(3):
            single = bm.glmm(f"p{k} ~ x + (1 | g)", df).fit()
            got = many[f"p{k}"]
            assert type(got) is bm.GLMMResults
            assert got.objective == single.objective and np.array_equal(got.beta, single.beta)
            assert np.array_equal(got.vcov, single.vcov) and got.nobs == single.nobs
    assert list(many.statistics["status"]) == ["ok"] * 3
