"""Block-diagonal PLS kernels against dense linear algebra."""
import numpy as np
from hypothesis import given, settings, strategies as st

from bigmixed.kernels import (blockdiag_gradient, blockdiag_gradient_serial, blockdiag_modes,
                              blockdiag_update)


def random_problem(rng, L, P, m):
    A = rng.normal(size=(L, P, P + 3))
    zz = np.einsum("lik,ljk->lij", A, A)
    zxy = rng.normal(size=(L, P, m))
    T = np.tril(rng.normal(size=(P, P)))
    T[np.diag_indices(P)] = np.abs(T[np.diag_indices(P)])
    return zz, zxy, T


@settings(max_examples=40, deadline=None)
@given(L=st.integers(1, 30), P=st.integers(1, 3), m=st.integers(1, 4), chunks=st.integers(1, 5),
       seed=st.integers(0, 2**31 - 1))
def test_update_matches_dense(L, P, m, chunks, seed):
    rng = np.random.default_rng(seed)
    zz, zxy, T = random_problem(rng, L, P, m)
    out = np.empty((chunks, m, m))
    logdet = blockdiag_update(T, zz, zxy, chunks, out)
    want_logdet = 0.0
    want_S = np.zeros((m, m))
    for g in range(L):
        M = T.T @ zz[g] @ T + np.eye(P)
        want_logdet += np.linalg.slogdet(M)[1]
        B = T.T @ zxy[g]
        want_S += B.T @ np.linalg.solve(M, B)
    np.testing.assert_allclose(logdet, want_logdet, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out.sum(0), want_S, rtol=1e-9, atol=1e-10)


@settings(max_examples=30, deadline=None)
@given(L=st.integers(1, 20), P=st.integers(1, 3), p=st.integers(0, 3), seed=st.integers(0, 2**31 - 1))
def test_modes_match_dense(L, P, p, seed):
    rng = np.random.default_rng(seed)
    zz, zxy, T = random_problem(rng, L, P, p + 1)
    beta = rng.normal(size=p)
    u = np.empty((L, P))
    cinv = np.empty((L, P, P))
    blockdiag_modes(T, zz, zxy, beta, u, cinv)
    for g in range(L):
        M = T.T @ zz[g] @ T + np.eye(P)
        rhs = T.T @ (zxy[g][:, p] - zxy[g][:, :p] @ beta)
        np.testing.assert_allclose(u[g], np.linalg.solve(M, rhs), rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(cinv[g], np.linalg.inv(M), rtol=1e-9, atol=1e-10)


def test_chunking_does_not_change_the_logdet_much_and_is_repeatable():
    rng = np.random.default_rng(0)
    zz, zxy, T = random_problem(rng, 1000, 2, 4)
    out = np.empty((3, 4, 4))
    a = blockdiag_update(T, zz, zxy, 3, out)
    b = blockdiag_update(T, zz, zxy, 3, out.copy())
    assert a == b  # bit-identical run after run


def test_serial_and_parallel_update_give_identical_numbers():
    from bigmixed.kernels import blockdiag_update_serial

    rng = np.random.default_rng(1)
    zz, zxy, T = random_problem(rng, 500, 2, 5)
    a_out, b_out = np.empty((3, 5, 5)), np.empty((3, 5, 5))
    a = blockdiag_update(T, zz, zxy, 3, a_out)
    b = blockdiag_update_serial(T, zz, zxy, 3, b_out)
    assert a == b
    np.testing.assert_array_equal(a_out, b_out)


def test_fused_objective_matches_update_plus_dense_criterion():
    from bigmixed.kernels import blockdiag_objective

    rng = np.random.default_rng(4)
    L, P, p = 60, 2, 3
    zz, zxy, T = random_problem(rng, L, P, p + 1)
    Xy = rng.normal(size=(200, p + 1))
    gram = Xy.T @ Xy + 50 * np.eye(p + 1)  # keeps S positive definite
    theta_row, theta_col = np.array([0, 1, 1]), np.array([0, 0, 1])
    theta = T[theta_row, theta_col]
    n = 500
    for reml in (True, False):
        got = blockdiag_objective(theta, theta_row, theta_col, zz, zxy, gram, n, p, reml, 0.3,
                                  np.empty((1, p + 1, p + 1)))
        out = np.empty((1, p + 1, p + 1))
        ld = blockdiag_update(T, zz, zxy, 1, out)
        C = np.linalg.cholesky(gram - out[0])
        r2 = C[p, p] ** 2
        if reml:
            want = ld + 2 * np.sum(np.log(np.diag(C)[:p])) - 0.6 + (n - p) * (1 + np.log(2 * np.pi * r2 / (n - p)))
        else:
            want = ld + n * (1 + np.log(2 * np.pi * r2 / n))
        assert abs(got - want) <= 1e-11 * abs(want)


def _gradient_parts_dense(T, rows, cols, zz, zxy, Sxx_inv, v):
    """The three per-theta sums of `blockdiag_gradient` from their definitions, level by level."""
    L, P, m = zxy.shape
    p = m - 1
    parts = np.zeros((len(rows), 3))
    for g in range(L):
        A, G = zz[g], zxy[g]
        M = T.T @ A @ T + np.eye(P)
        N = np.linalg.solve(M, T.T @ A)
        H = np.linalg.solve(M, T.T @ G)
        K = G - A @ T @ H
        for k, (i, j) in enumerate(zip(rows, cols)):
            parts[k, 0] += N[j, i]
            parts[k, 1] += K[i, :p] @ Sxx_inv @ H[j, :p]
            parts[k, 2] += (K[i] @ v) * (H[j] @ v)
    return parts


@settings(max_examples=40, deadline=None)
@given(L=st.integers(1, 25), P=st.integers(1, 3), p=st.integers(0, 3), chunks=st.integers(1, 4),
       seed=st.integers(0, 2**31 - 1))
def test_gradient_parts_match_dense(L, P, p, chunks, seed):
    rng = np.random.default_rng(seed)
    zz, zxy, T = random_problem(rng, L, P, p + 1)
    rows, cols = np.tril_indices(P)
    B = rng.normal(size=(p, p + 2))
    Sxx_inv = B @ B.T
    v = rng.normal(size=p + 1)
    out = np.empty((chunks, len(rows), 3))
    blockdiag_gradient(T, rows.astype(np.int64), cols.astype(np.int64), zz, zxy, Sxx_inv, v,
                       chunks, out)
    want = _gradient_parts_dense(T, rows, cols, zz, zxy, Sxx_inv, v)
    np.testing.assert_allclose(out.sum(0), want, rtol=1e-9, atol=1e-10)


def test_serial_and_parallel_gradient_give_identical_numbers():
    rng = np.random.default_rng(5)
    zz, zxy, T = random_problem(rng, 3000, 2, 5)
    rows, cols = (np.array(a, dtype=np.int64) for a in np.tril_indices(2))
    Sxx_inv, v = np.eye(4), rng.normal(size=5)
    a, b = np.empty((4, 3, 3)), np.empty((4, 3, 3))
    blockdiag_gradient(T, rows, cols, zz, zxy, Sxx_inv, v, 4, a)
    blockdiag_gradient_serial(T, rows, cols, zz, zxy, Sxx_inv, v, 4, b)
    assert np.array_equal(a, b)
