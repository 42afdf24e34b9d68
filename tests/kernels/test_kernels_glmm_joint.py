"""kernels/glmm_joint.py through bigmixed.fitting.pirls.level_joint_pirls: the joint PIRLS level
by level takes the same iterations as `pirls` on the block-diagonal solver (weighted
cross-products, the LMM's system) and reaches the same point, criterion and R_X."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bigmixed as bm
from bigmixed.fitting.glmm import LME4_TOL
from bigmixed.fitting.pirls import PIRLS_TOL, level_joint_pirls, pirls


def frame(seed=0, n_levels=40):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, n_levels, 600)
    x = rng.normal(size=600)
    w = rng.uniform(1000, 9000, 600)  # (ill-scaled, as hdp's wbc: the working basis matters)
    b = rng.normal(scale=0.7, size=n_levels)
    eta = -0.3 + 0.5 * x + 2e-4 * (w - 5000) + b[g]
    return pd.DataFrame({
        "g": g, "x": x, "w": w, "e": rng.uniform(0.5, 2.0, 600),
        "y": (rng.random(600) < 1 / (1 + np.exp(-eta))).astype(float),
        "c": rng.poisson(np.exp(0.3 * eta)).astype(float),
    })


MODELS = [
    ("y ~ x + w + (1 | g)", dict(family="binomial")),
    ("y ~ x + w + (1 | g)", dict(family="binomial", link="cloglog")),
    ("c ~ x + offset(log(e)) + (1 | g)", dict(family="poisson")),
    ("y ~ x + (0 + w | g)", dict(family="binomial")),
]


@pytest.mark.parametrize("formula,kw", MODELS)
@pytest.mark.parametrize("lme4", [True, False])
def test_level_joint_pirls_is_pirls_on_the_solver(formula, kw, lme4):
    df = frame()
    if "0 + w" in formula:
        df["w"] = df["w"] / 5000.0
    m = bm.glmm(formula, df, **kw)
    assert m.level_joint
    tol = LME4_TOL if lme4 else PIRLS_TOL
    u0 = [np.zeros((f.n_levels, f.n_columns)) for f in m.structure.factors]
    for theta in (np.array([1.0]), np.array([0.35])):
        ref = pirls(m, m.joint_system, theta, m.eta_start, u0, tol=tol, lme4=lme4)
        got = level_joint_pirls(m, theta, m.eta_start, tol=tol, lme4=lme4)
        assert got.iterations == ref.iterations
        for a, b in ((got.deviance, ref.deviance), (got.u2, ref.u2), (got.logdet, ref.logdet)):
            assert a == pytest.approx(b, rel=1e-10, abs=1e-10)
        np.testing.assert_allclose(got.eta, ref.eta, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(got.u[0], ref.u[0], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(got.beta_work, ref.beta_work, rtol=1e-8, atol=1e-10)
        p = m.n_fixed
        np.testing.assert_allclose(got.state.chol_S[:p, :p], ref.state.chol_S[:p, :p],
                                   rtol=1e-8, atol=1e-10)


def test_several_factors_or_another_solver_keep_the_solver():
    df = frame()
    df["h"] = np.arange(len(df)) % 7
    assert not bm.glmm("y ~ x + (1 | g) + (1 | h)", df, family="binomial").level_joint
    assert not bm.glmm("y ~ x + (1 | g)", df, family="binomial", solver="cholmod").level_joint
    assert not bm.glmm("y ~ x + (1 + x | g)", df, family="binomial").level_joint
