"""Load (or compile) every Numba kernel once, so that the first real fit is not charged for it.

Numba caches compiled kernels on disk; the first call in a process still loads them (about a
second in all), and a kernel variant never used before is compiled then. Pipelines and
benchmarks call `warmup()` once at start-up.
"""
from __future__ import annotations

import itertools

import numpy as np

from . import kernels as K
from .kernels.columns import count_levels, count_nonfinite
from .spec.columns import ColumnMatrix, fixed_gram


def warmup(glmm: bool = True) -> None:
    """Call each kernel on tiny arrays with the dtypes the engine uses; with glmm (default),
    also the GLMM kernels through tiny fits (about a second more: pass glmm=False in a pipeline
    that fits linear mixed models only)."""
    rng = np.random.default_rng(0)
    n, L, p = 64, 4, 2
    for code_dtype in (np.int32, np.int64):
        codes = (np.arange(n) % L).astype(code_dtype)
        X = np.ascontiguousarray(rng.normal(size=(n, p)))
        y_writable = rng.normal(size=n)
        y = _read_only(y_writable)  # a data frame's column: a read-only view
        for P, unit in ((1, True), (2, False)):
            Z = np.ones((0, 1)) if unit else np.ascontiguousarray(rng.normal(size=(n, P)))
            for yv in (y_writable, y):  # one chunk; several take factor_crossprod_by_level
                bufs = (np.zeros((1, L, P, P)), np.zeros((1, L, P, p + 1)),
                        np.zeros((1, p + 1, p + 1)))
                K.factor_crossprod_serial(codes, Z, unit, X, yv, True, *bufs,
                                          *(np.zeros_like(u) for u in bufs))
            # an LMM's plain fixed columns, read in place (bigmixed.spec.columns)
            X_cols = ColumnMatrix([None, np.ascontiguousarray(X[:, 1])], n)
            no_ints = np.zeros(0, dtype=np.int64)
            for (X_arg, addrs, in_place), yv in itertools.product(
                    ((X, no_ints, False), (np.zeros((0, 0)), X_cols.addresses(), True)),
                    (y_writable, y)):
                bufs = (np.zeros((1, L, P, P)), np.zeros((1, L, P, p + 1)),
                        np.zeros((2, p + 1, p + 1)))
                K.crossprod.factor_crossprod_by_level(codes, Z, unit, X_arg, addrs, no_ints,
                                                      in_place, yv, True, *bufs,
                                                      *(np.zeros_like(u) for u in bufs))
            bufs = (np.zeros((1, L, P, P)), np.zeros((1, L, P, p + 1)), np.zeros((1, p + 1, p + 1)))
            K.crossprod.factor_crossprod_columns_serial(codes, Z, unit, X_cols.addresses(), no_ints,
                                                        y, True, *bufs,
                                                        *(np.zeros_like(u) for u in bufs))
    X_cols.materialize()
    fixed_gram(X_cols)
    for dtype in (np.float64, np.float32):  # the design's missing-value scan of data columns
        for values in (np.zeros(3, dtype=dtype), _read_only(np.zeros(3, dtype=dtype))):
            count_nonfinite(values)
    for dtype in (np.int8, np.int16, np.int32, np.int64):  # a categorical's codes
        for codes in (np.zeros(3, dtype=dtype), _read_only(np.zeros(3, dtype=dtype))):
            count_levels(codes, np.zeros(1, dtype=np.int64))
    for P in (1, 2, 3):
        zz = np.tile(np.eye(P), (L, 1, 1))
        zxy = np.ones((L, P, p + 1))
        T = np.eye(P)
        K.blockdiag_update(T, zz, zxy, 2, np.empty((2, p + 1, p + 1)))
        K.blockdiag_update_serial(T, zz, zxy, 1, np.empty((1, p + 1, p + 1)))
        K.blockdiag_modes(T, zz, zxy, np.zeros(p), np.empty((L, P)), np.empty((L, P, P)))
        rows, cols = np.tril_indices(P)
        rows, cols = rows.astype(np.int64), cols.astype(np.int64)
        for kernel, chunks in ((K.blockdiag_gradient, 2), (K.blockdiag_gradient_serial, 1)):
            kernel(T, rows, cols, zz, zxy, np.eye(p), np.ones(p + 1), chunks,
                   np.empty((chunks, len(rows), 3)))
        gram = np.eye(p + 1) * 10.0
        for reml in (True, False):
            K.blockdiag_objective(T[rows, cols], rows, cols, zz, zxy,
                                  gram, n, p, reml, 0.0, np.empty((1, p + 1, p + 1)))
            K.profiled_criterion(0.0, gram, np.zeros((2, p + 1, p + 1)), n, p, reml, 0.0)
    ids = np.arange(n, dtype=np.int64) % 3
    for code_dtype in (np.int32, np.int64):  # crossed and nested factors' level pairs
        codes = ids.astype(code_dtype)
        K.crossprod.pair_keys(codes, codes, 3, 3, np.empty(n, dtype=np.int64))
    K.crossprod.add_double_double(np.ones(3), np.zeros(3), np.ones(3), np.zeros(3))
    K.crossprod.add_double_double_parallel(np.ones(3), np.zeros(3), np.ones(3), np.zeros(3))
    K.crossprod.dd_sum(np.ones(5))
    K.pair_crossprod(ids, np.ones((0, 1)), True, np.ones((0, 1)), True, np.zeros((3, 1, 1)),
                     np.zeros((3, 1, 1)))
    K.pair_crossprod(ids, np.ones((n, 2)), False, np.ones((0, 1)), True, np.zeros((3, 2, 1)),
                     np.zeros((3, 2, 1)))
    T_all = np.ones((1, 1, 1))
    K.fill_scaled_gram(T_all, np.array([1], dtype=np.int64), np.zeros(1, dtype=np.int64),
                       np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64), np.ones(1),
                       np.zeros(1, dtype=np.int64), np.zeros(1))
    ip = np.array([0, 1], dtype=np.int64)
    K.selected_inverse(ip, np.zeros(1, dtype=np.int64), np.ones(1), np.zeros(1))
    K.lookup_entries(ip, np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64),
                     np.zeros(1, dtype=np.int64), np.empty(1, dtype=np.int64))
    _warm_models(rng)
    if glmm:
        _warm_glmms(rng)


def _warm_glmms(rng) -> None:
    """Tiny GLMM fits through each kernel path: glmer's criterion and the exact Laplace one
    (with its analytic gradient) on one factor, quadrature, a Poisson offset, and crossed
    factors on the solver (the weighted cross-products of the PIRLS passes)."""
    import warnings

    import pandas as pd

    from .api import glmm

    n = 120
    g = np.arange(n) % 10
    x = rng.normal(size=n)
    eta = 0.3 * x + rng.normal(size=10)[g]
    df = pd.DataFrame({"x": x, "g": g.astype(str), "h": (np.arange(n) % 4).astype(str),
                       "b": (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float),
                       "c": rng.poisson(np.exp(eta)).astype(float), "e": np.ones(n) * 2.0})
    # the PIRLS passes of 32k rows or more run the weighted cross-products on two row chunks
    # (bigmixed.crossprods.weighted): their parallel kernel, which tiny fits do not reach
    from .kernels.glm import factor_crossprod_weighted

    for code_dtype in (np.int32, np.int64):
        codes = (np.arange(n) % 10).astype(code_dtype)
        X = np.ascontiguousarray(rng.normal(size=(n, 2)))
        for P, unit in ((1, True), (2, False)):
            Z = np.ones((0, 1)) if unit else np.ascontiguousarray(rng.normal(size=(n, P)))
            bufs = (np.zeros((2, 10, P, P)), np.zeros((2, 10, P, 3)), np.zeros((2, 3, 3)))
            factor_crossprod_weighted(codes, Z, unit, X, x, np.ones(n), True, *bufs,
                                      *(np.zeros_like(b) for b in bufs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for pirls in ("lme4", "exact"):
            glmm("b ~ x + (1 | g)", df, family="binomial", pirls=pirls).fit()
        glmm("b ~ x + (1 | g)", df, family="binomial", nAGQ=3).fit()
        glmm("c ~ x + offset(log(e)) + (1 | g)", df, family="poisson").fit()
        glmm("b ~ x + (1 | g) + (1 | h)", df, family="binomial").fit()


def _warm_models(rng) -> None:
    """Tiny fits through the paths whose kernels take many arguments: the Schur complement of
    crossed factors and the residual structures (derived sets and the whitening pass)."""
    import warnings

    import pandas as pd

    from .fitting.model import LinearMixedModel
    from .spec.residual import AR1, CompoundSymmetry, VarIdent

    n_pat, n_vis = 12, 4
    pid = np.repeat(np.arange(n_pat), n_vis)
    df = pd.DataFrame({
        "y": rng.normal(size=n_pat * n_vis) + np.repeat(rng.normal(size=n_pat), n_vis),
        "t": np.tile(np.arange(n_vis), n_pat).astype(float),
        "u": np.tile(np.arange(n_vis), n_pat) * 0.7 + rng.uniform(0, 0.2, n_pat * n_vis),
        "g": pid.astype(str), "h": (np.arange(n_pat * n_vis) % 5).astype(str),
        "s": np.array(["a", "b"])[np.arange(n_pat * n_vis) % 2],
    })
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        crossed = LinearMixedModel("y ~ t + (1 | g) + (1 | h)", df, solver="schur")
        crossed.fit()
        # the quasi-Newton path of large crossed models: approximate update, analytic gradient
        crossed.system.approx_update(np.array([0.5, 0.5]))
        crossed.objective(np.array([0.5, 0.5]))
        crossed.gradient(np.array([0.5, 0.5]))
        for kw in (dict(residual=AR1("t", "g")), dict(residual=AR1("u", "g")),
                   dict(residual=CompoundSymmetry("g")), dict(variance=VarIdent("s"))):
            LinearMixedModel("y ~ t + (1 | g)", df, **kw).fit()


def _read_only(a: np.ndarray) -> np.ndarray:
    """A read-only view (Numba compiles read-only arrays as a type of their own)."""
    v = a.view()
    v.flags.writeable = False
    return v
