"""Fits are data: immutable records, and refits are new, independent fits (model.refit)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import bigmixed as bm
from bigmixed.data_gen import generate_hdp, generate_longitudinal

AR = bm.AR1(time="visit", group="patient")


def _quiet(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        return fn(*a, **k)


def public_numbers(fit) -> dict:
    """Every public number of a fit (arrays copied), lazily computed ones included."""
    out = {name: np.array(getattr(fit, name), dtype=float) for name in (
        "objective", "deviance", "theta", "residual_eta", "beta", "vcov", "sigma", "llf", "aic",
        "bic", "fittedvalues", "fitted_marginal", "resid", "optimizer_params")}
    for group, df in fit.ranef(condvar=True).items():
        out[f"ranef/{group}"] = df.to_numpy(dtype=float).copy()
    out["variance_components"] = fit.variance_components[["variance", "sd", "corr"]].to_numpy(float)
    out["residual_parameters"] = fit.residual_parameters.to_numpy(dtype=float)
    doc = fit.to_dict(include_versions=False)
    doc.pop("timings")
    out["document"] = repr(doc)
    out["summary"] = fit.summary()
    return out


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], str):
            assert a[k] == b[k], k
        else:
            assert np.array_equal(a[k], b[k], equal_nan=True), k


@pytest.fixture(scope="module")
def ar1_data():
    return generate_longitudinal(40, 5, residual="ar1", seed=3).data


@pytest.fixture(scope="module")
def hdp():
    return generate_hdp(n_doctors=60, n_hospitals=6, seed=8).data


def test_the_issue_repro_prints_the_same_deviance_twice(ar1_data):
    m0 = _quiet(bm.lmm("y ~ time + treat + (1 + time | patient)", ar1_data, residual=AR).fit)
    m1 = _quiet(bm.lmm("y ~ time * treat + (1 + time | patient)", ar1_data, residual=AR).fit)
    before = m1.deviance
    _quiet(bm.anova, m0, m1)
    assert m1.deviance == before
    before_m0 = public_numbers(m0)
    _quiet(bm.anova, m0, m1)
    assert_same(before_m0, public_numbers(m0))


def test_public_numbers_survive_refit_based_inference_ar1(ar1_data):
    formula = "y ~ time * treat + (1 + time | patient)"
    a = _quiet(bm.lmm(formula, ar1_data, residual=AR).fit)
    b = _quiet(bm.lmm(formula, ar1_data, residual=AR).fit)  # same data, lazies not computed yet
    small = _quiet(bm.lmm("y ~ time + (1 + time | patient)", ar1_data, residual=AR).fit)
    reference = public_numbers(a)
    _quiet(bm.anova, small, a)
    _quiet(bm.anova, small, b)
    _quiet(a.bootstrap, nsim=3, seed=1)
    _quiet(b.bootstrap, nsim=3, seed=1, n_jobs=2)
    assert_same(reference, public_numbers(a))
    assert_same(reference, public_numbers(b))


def test_public_numbers_survive_refit_based_inference(hdp):
    formula = "mobility ~ age + sex + (1 | doctor) + (1 | hospital)"
    a = _quiet(bm.lmm(formula, hdp).fit)
    b = _quiet(bm.lmm(formula, hdp).fit)
    smaller = _quiet(bm.lmm("mobility ~ age + sex + (1 | doctor)", hdp).fit)
    reference = public_numbers(a)
    _quiet(bm.anova, smaller, a)
    _quiet(a.confint, method="profile")
    _quiet(b.confint, method="profile")
    _quiet(b.bootstrap, nsim=3, seed=2)
    _quiet(bm.power_simulation, "mobility ~ age + (1 | doctor)", hdp, effects={"age": 0.02},
           variance_components={"doctor": 1.0}, sigma=1.0, nsim=2, seed=0)
    data = hdp.assign(y2=hdp["mobility"] * 2.0)
    _quiet(bm.fit_many, "~ age + sex + (1 | doctor) + (1 | hospital)", data,
           responses=["mobility", "y2"], n_jobs=1)
    _quiet(a.fixed_effects_test)
    assert_same(reference, public_numbers(a))
    assert_same(reference, public_numbers(b))


def test_a_fit_is_immutable(hdp):
    fit = _quiet(bm.lmm("mobility ~ age + (1 | doctor)", hdp).fit)
    for name in ("theta", "beta", "sigma", "objective", "model", "warnings", "new_attribute"):
        with pytest.raises(AttributeError, match="immutable"):
            setattr(fit, name, 1.0)
    for arr in (fit.theta, fit.beta, fit.vcov, fit.conditional_modes[0], fit.fittedvalues):
        with pytest.raises(ValueError):
            arr[0] = 0.0
    with pytest.raises(TypeError):
        fit.timings["optimize"] = 0.0
    fit.fixed_names.append("x")  # a copy: the fit's names are unchanged
    assert "x" not in fit.fixed_names


@pytest.mark.parametrize("solver", ["blockdiag", "cholmod", "schur"])
def test_refit_is_a_new_independent_fit_with_the_same_bits(hdp, solver):
    formula = ("mobility ~ age + sex + (1 | doctor)" if solver == "blockdiag"
               else "mobility ~ age + sex + (1 | doctor) + (1 | hospital)")
    model = bm.lmm(formula, hdp, solver=solver)
    fit = _quiet(model.fit)
    ml = _quiet(model.refit, reml=False)
    direct = _quiet(bm.lmm(formula, hdp, reml=False, solver=solver).fit)
    assert ml.model is not model and not ml.reml and model.reml
    assert ml.objective == direct.objective and np.array_equal(ml.theta, direct.theta)
    assert np.array_equal(ml.beta, direct.beta)
    y2 = hdp["mobility"].to_numpy() * 0.5 + hdp["age"].to_numpy() * 0.01
    other = _quiet(model.refit, y=y2)
    direct2 = _quiet(bm.lmm(formula, hdp.assign(mobility=y2), solver=solver).fit)
    assert other.objective == direct2.objective and np.array_equal(other.theta, direct2.theta)
    assert np.array_equal(other.beta, direct2.beta) and np.array_equal(other.vcov, direct2.vcov)
    # the model and its first fit are untouched; the design is shared, the system is not
    assert model.reml and np.array_equal(model.design.y, hdp["mobility"].to_numpy())
    assert other.model.structure is model.structure and other.model.system is not model.system
    if solver == "cholmod":  # the symbolic analysis (fill-reducing permutation) is reused
        assert np.array_equal(other.model.system.factor.P(), model.system.factor.P())
    again = _quiet(model.fit)
    assert again.objective == fit.objective and np.array_equal(again.theta, fit.theta)


def test_refit_checks_its_arguments(hdp):
    model = bm.lmm("mobility ~ age + (1 | doctor)", hdp)
    with pytest.raises(TypeError, match="reml"):
        model.refit(reml="yes")
    with pytest.raises(ValueError, match="one value per row"):
        model.refit(y=np.zeros(3))
