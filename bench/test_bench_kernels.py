"""pytest-benchmark micro-benchmarks of bigmixed's compute kernels.

    .venv/bin/python -m pytest bench/test_bench_kernels.py --benchmark-only \\
        -p no:cacheprovider -o addopts=""

Not part of the default test run (testpaths = tests; these are also marked ``benchmark``, which
the default addopts deselect).  Every kernel is called once before it is timed (Numba's JIT or its
on-disk cache), and the inputs are built once per module.

- ``factor_crossprod``: the one pass over the rows (1e6 rows, 50k levels; intercept only and
  intercept + slope).
- ``blockdiag_update``: one factorization of the block-diagonal system (5k / 50k levels, P = 1, 2).
- ``fill_scaled_gram``: writing Lambda'Z'Z Lambda into the CSC array (crossed and nested).
- ``SparseSystem.update``: fill + CHOLMOD numeric refactorization + solves, i.e. the whole
  cholmod evaluation minus the p x p criterion (``bm.lmm(...).system.update(theta)``).
- ``schur_objective`` / ``schur_gradient`` / ``schur_approx_update``: crossed_73k through the
  Schur system: one exact evaluation, the analytic gradient, one approximate update.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

pytestmark = pytest.mark.benchmark


def _theta(structure):
    return np.where(structure.lower_bounds == 0, 0.6, 0.1)


# ---------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def rows_1m():
    """1e6 rows, 50k levels, p = 6 fixed columns, one random slope column."""
    rng = np.random.default_rng(1)
    n, levels, p = 1_000_000, 50_000, 6
    codes = np.sort(rng.integers(0, levels, n)).astype(np.int32)
    X = np.ascontiguousarray(rng.normal(size=(n, p)))
    X[:, 0] = 1.0
    y = rng.normal(size=n)
    Z2 = np.ascontiguousarray(np.column_stack([np.ones(n), rng.normal(size=n)]))
    return codes, X, y, Z2, levels


def _models(formula, gen, solver):
    import bigmixed as bm
    from bigmixed.data_gen import generate_hdp

    return bm.lmm(formula, generate_hdp(**gen).data, solver=solver)


@pytest.fixture(scope="module")
def model_crossed():
    """crossed_73k's shape: 2,972 x 1,128 x 14 levels (bench/problems.py)."""
    import bigmixed as bm
    from problems import PROBLEMS, make_data

    p = PROBLEMS["crossed_73k"]
    return bm.lmm(p.formula, make_data("crossed_73k"), solver="cholmod")


@pytest.fixture(scope="module")
def model_nested():
    """20,000 doctors in 1,000 hospitals, 200k rows."""
    return _models("mobility ~ age + sex + (1 | hospital/doctor)",
                   dict(n_doctors=20_000, seed=6, mean_patients=10, nested_in=1000), "cholmod")


@pytest.fixture(scope="module")
def model_slope_cholmod():
    """(time | doctor) with 5,000 doctors through CHOLMOD (block-diagonal pattern)."""
    return _models("mobility ~ age + time + (time | doctor)",
                   dict(n_doctors=5000, seed=2, mean_patients=7, min_patients=2, max_patients=12,
                        n_visits=3, slope_sd=0.3), "cholmod")


# ---------------------------------------------------------------------------- factor_crossprod
@pytest.mark.parametrize("P", [1, 2], ids=["intercept", "slope"])
def test_factor_crossprod(benchmark, rows_1m, P):
    from bigmixed.kernels import factor_crossprod, n_row_chunks

    codes, X, y, Z2, levels = rows_1m
    unit = P == 1
    Z = np.ones((0, 1)) if unit else Z2
    chunks = n_row_chunks(len(y))
    m = X.shape[1] + 1
    zz = np.zeros((chunks, levels, P, P))
    zxy = np.zeros((chunks, levels, P, m))
    gram = np.zeros((chunks, m, m))
    bufs = (zz, zxy, gram, np.zeros_like(zz), np.zeros_like(zxy), np.zeros_like(gram))

    def run():
        for u in bufs:
            u.fill(0.0)
        factor_crossprod(codes, Z, unit, X, y, True, *bufs)

    run()  # JIT
    benchmark.extra_info.update(rows=len(y), levels=levels, P=P, chunks=chunks)
    benchmark(run)
    assert np.isclose(zz[:, :, 0, 0].sum(), len(y))


# ---------------------------------------------------------------------------- blockdiag_update
@pytest.mark.parametrize("levels", [5_000, 50_000])
@pytest.mark.parametrize("P", [1, 2, 3])
def test_blockdiag_update(benchmark, levels, P):
    from bigmixed.kernels import blockdiag_update, n_level_chunks

    rng = np.random.default_rng(levels + P)
    m = 7
    A = rng.normal(size=(levels, 8, P))
    zz = np.ascontiguousarray(np.einsum("lki,lkj->lij", A, A))
    zxy = np.ascontiguousarray(rng.normal(size=(levels, P, m)))
    T = np.tril(np.full((P, P), 0.1)) + 0.5 * np.eye(P)
    n_chunks = n_level_chunks(levels)
    schur = np.empty((n_chunks, m, m))
    blockdiag_update(T, zz, zxy, n_chunks, schur)  # JIT
    benchmark.extra_info.update(levels=levels, P=P, chunks=n_chunks)
    ld = benchmark(blockdiag_update, T, zz, zxy, n_chunks, schur)
    assert np.isfinite(ld)


# ---------------------------------------------------------------------------- sparse path
def _fill_args(system, theta):
    T_all = system.structure.T_all(theta)
    return (T_all, system.structure.P_of, system.blk_row_factor, system.blk_col_factor,
            system.raw_offset, system.raw, system.pos, system.A.data)


@pytest.mark.parametrize("which", ["crossed_73k", "nested_200k", "slope_5k"])
def test_fill_scaled_gram(benchmark, request, which):
    from bigmixed.kernels import fill_scaled_gram

    m = request.getfixturevalue({"crossed_73k": "model_crossed", "nested_200k": "model_nested",
                                 "slope_5k": "model_slope_cholmod"}[which])
    args = _fill_args(m.system, _theta(m.structure))
    fill_scaled_gram(*args)  # JIT
    benchmark.extra_info.update(q=m.system.q, nnz_A=int(m.system.A.nnz))
    benchmark(fill_scaled_gram, *args)


@pytest.mark.parametrize("which", ["crossed_73k", "nested_200k", "slope_5k"])
def test_cholmod_update(benchmark, request, which):
    m = request.getfixturevalue({"crossed_73k": "model_crossed", "nested_200k": "model_nested",
                                 "slope_5k": "model_slope_cholmod"}[which])
    theta = _theta(m.structure)
    m.system.update(theta)  # JIT + first numeric factorization
    # L() turns a factor simplicial: count on a copy, keep the system's factor supernodal
    L_nnz = int(m.system.factor.copy().L().nnz)
    benchmark.extra_info.update(q=m.system.q, nnz_A=int(m.system.A.nnz), nnz_L=L_nnz)
    logdet, S = benchmark(m.system.update, theta)
    assert np.isfinite(logdet)


def test_objective_blockdiag_50k(benchmark):
    """One whole evaluation m.objective(theta), block-diagonal solver, 50k doctors (1.05M rows)."""
    m = _models("mobility ~ age + time + (time | doctor)",
                dict(n_doctors=50_000, seed=2, mean_patients=7, min_patients=2, max_patients=12,
                     n_visits=3, slope_sd=0.3), "blockdiag")
    theta = _theta(m.structure)
    m.objective(theta)
    v = benchmark(m.objective, theta)
    assert np.isfinite(v)


# ---------------------------------------------------------------------------- Schur system
@pytest.fixture(scope="module")
def model_crossed_schur():
    """crossed_73k through the Schur system (its default): dense block of 1,142 columns."""
    import bigmixed as bm
    from problems import PROBLEMS, make_data

    p = PROBLEMS["crossed_73k"]
    return bm.lmm(p.formula, make_data("crossed_73k"), solver="schur")


def test_schur_objective(benchmark, model_crossed_schur):
    """One exact evaluation: level blocks, sparse product, one dpotrf of the bordered block."""
    m = model_crossed_schur
    theta = np.array([1.0, 0.5, 0.23])
    m.objective(theta)

    def evaluate():
        m.system._cache.clear()  # the system keeps its last few evaluations: time a real one
        m.system._factored = None
        return m.objective(theta)

    assert np.isfinite(benchmark(evaluate))


def test_schur_gradient(benchmark, model_crossed_schur):
    """The analytic gradient at a factored theta: dpotri of the dense block, the leading
    factor's trace (schur_first_inverse_trace), one solve with p + 1 right-hand sides."""
    m = model_crossed_schur
    theta = np.array([1.0, 0.5, 0.23])
    m.objective(theta)
    m.gradient(theta)
    g = benchmark(m.gradient, theta)
    assert np.all(np.isfinite(g))


def test_schur_approx_update(benchmark, model_crossed_schur):
    """One evaluation of the approximate criterion's update (no dense factorization)."""
    m = model_crossed_schur
    theta = np.array([1.0, 0.5, 0.23])
    m.system.approx_update(theta)
    logdet, S = benchmark(m.system.approx_update, theta)
    assert np.isfinite(logdet)
