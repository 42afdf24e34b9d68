"""kernels/glmm.py's row helpers against NumPy."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bigmixed.kernels.glmm import LEVEL_CHUNK_ROWS, sorted_fixed_eta


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3 * LEVEL_CHUNK_ROWS + 5), p=st.integers(0, 4), seed=st.integers(0, 99))
def test_sorted_fixed_eta_is_offset_plus_x_beta_in_level_order(n, p, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)) * 10.0 ** rng.integers(-3, 4, size=p)
    beta = rng.normal(size=p)
    offset = rng.normal(size=n)
    order = rng.permutation(n).astype(np.int64)
    out = np.full(n, np.nan)
    sorted_fixed_eta(order, offset, X, beta, out)
    expected = (offset + X @ beta)[order]
    np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-13 * np.max(np.abs(X), initial=1))
    # the sum runs left to right in every row, whatever the chunking: a row on its own agrees
    i = int(rng.integers(n))
    s = 0.0
    for j in range(p):
        s += X[order[i], j] * beta[j]
    assert out[i] == offset[order[i]] + s


@settings(max_examples=60, deadline=None)
@given(eta=st.floats(-4.0, 3.0), y=st.sampled_from([0.0, 0.25, 1.0, 3.0]),
       wt=st.floats(0.5, 4.0),
       combo=st.sampled_from([("binomial", "logit"), ("binomial", "probit"),
                              ("binomial", "cloglog"), ("poisson", "log")]))
def test_row_third_derivatives_are_the_derivatives_of_row_derivatives(eta, y, wt, combo):
    from bigmixed.kernels import glm

    family = {"binomial": glm.BINOMIAL, "poisson": glm.POISSON}[combo[0]]
    link = {"logit": glm.LOGIT, "probit": glm.PROBIT, "cloglog": glm.CLOGLOG,
            "log": glm.LOG}[combo[1]]
    if family == glm.BINOMIAL:
        y = min(y, 1.0)
    if link == glm.CLOGLOG:
        # 1 - mu = exp(-exp(eta)) is taken from mu = 1 - exp(-exp(eta)) in the row derivatives:
        # above eta ~ 2.5 it keeps ~9 digits, too few for central differences of the second
        # derivative (at eta = 3 they drift from 40.168 at h = 1e-3 to 49 at h = 1e-6 around
        # the analytic 40.1706); the analytic third derivative is not the one at fault
        eta = min(eta, 2.0)
    d1, d2, d3, w, w1, w2 = glm.row_third_derivatives(eta, y, wt, family, link)
    assert (d1, d2, w, w1) == glm.row_derivatives(eta, y, wt, family, link)
    h = 1e-5
    up = glm.row_derivatives(eta + h, y, wt, family, link)
    down = glm.row_derivatives(eta - h, y, wt, family, link)
    assert abs(d3 - (up[1] - down[1]) / (2 * h)) <= 1e-6 * (1 + abs(d3))
    assert abs(w2 - (up[3] - down[3]) / (2 * h)) <= 1e-6 * (1 + abs(w2))
    assert abs(w1 - (up[2] - down[2]) / (2 * h)) <= 1e-6 * (1 + abs(w1))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=80), st.integers(0, 3), st.booleans())
def test_level_order_is_the_stable_argsort(codes, extra_levels, presort):
    from bigmixed.kernels.glmm import level_order

    codes = np.array(sorted(codes) if presort else codes, dtype=np.int32)
    n_levels = int(codes.max()) + 1 + extra_levels  # (levels without rows too)
    indptr = np.full(n_levels + 1, -7, dtype=np.int64)
    order = np.full(len(codes), -7, dtype=np.int64)
    in_order = level_order(codes, indptr, order)
    np.testing.assert_array_equal(order, np.argsort(codes, kind="stable"))
    expected = np.zeros(n_levels + 1, dtype=np.int64)
    np.cumsum(np.bincount(codes, minlength=n_levels), out=expected[1:])
    np.testing.assert_array_equal(indptr, expected)
    assert in_order == bool(np.all(np.diff(codes) >= 0))
