"""The factor step's interface (bigmixed.solvers.base): every system keeps the same contract."""
from __future__ import annotations

import numpy as np
import pytest

import bigmixed as bm
from bigmixed.data_gen import generate_hdp
from bigmixed.solvers.base import System
from bigmixed.solvers.blockdiag import BlockDiagonalSystem
from bigmixed.solvers.cholmod import SparseSystem
from bigmixed.solvers.schur import SchurSystem

CASES = {
    "blockdiag": "mobility ~ age + sex + (1 + age | doctor)",
    "cholmod": "mobility ~ age + sex + (1 | doctor) + (1 | hospital)",
    "schur": "mobility ~ age + sex + (1 | doctor) + (1 | hospital)",
}


@pytest.fixture(scope="module")
def data():
    return generate_hdp(n_doctors=60, n_hospitals=8, seed=11).data


def _model(data, solver):
    return bm.lmm(CASES[solver], data, solver=solver)


@pytest.mark.parametrize("solver", list(CASES))
def test_systems_declare_the_interface(data, solver):
    system = _model(data, solver).system
    assert isinstance(system, System)
    assert type(system) is {"blockdiag": BlockDiagonalSystem, "cholmod": SparseSystem,
                            "schur": SchurSystem}[solver]
    assert system.has_fused_objective == (solver == "blockdiag")
    assert system.has_approx_update == (solver == "schur")
    assert system.has_gradient == (solver in ("schur", "blockdiag"))  # schur: scalar factors only
    assert system.dense_block_size == (8 if solver == "schur" else 0)


@pytest.mark.parametrize("solver", list(CASES))
def test_a_failed_factorization_has_one_convention(data, solver):
    system = _model(data, solver).system
    theta = np.full(system.structure.n_theta, np.nan)
    logdet, S = system.update(theta)
    assert logdet == np.inf and S.shape == system.cp.gram.shape and np.all(np.isnan(S))


@pytest.mark.parametrize("solver", list(CASES))
def test_with_crossprods_is_independent_and_equal_to_a_fresh_system(data, solver):
    model = _model(data, solver)
    system = model.system
    theta1 = model.structure.initial_theta() * 0.7
    theta2 = model.structure.initial_theta() * 1.3
    other = system.with_crossprods(system.cp)
    fresh = type(system)(system.cp, system.structure)
    # interleaved evaluations on the two systems do not disturb each other
    a1 = system.update(theta1)
    b2 = other.update(theta2)
    a1_again = system.update(theta1)
    b2_fresh = fresh.update(theta2)
    assert a1[0] == a1_again[0] and np.array_equal(a1[1], a1_again[1])
    assert b2[0] == b2_fresh[0] and np.array_equal(b2[1], b2_fresh[1])
    beta = np.zeros(system.cp.n_fixed)
    u_sys, c_sys = system.modes(theta1, beta)
    other.update(theta2)
    u_fresh, c_fresh = fresh.modes(theta1, beta)
    for x, y in zip(u_sys + c_sys, u_fresh + c_fresh):
        assert np.array_equal(x, y)
