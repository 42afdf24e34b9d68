"""kernels.residual against obvious numpy."""
import numpy as np

from bigmixed.kernels.residual import combine_rows, segment_sums


def test_combine_rows_matches_numpy():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((50, 4))
    rows = rng.integers(0, 50, 30)
    prev = np.where(rng.random(30) < 0.3, -1, rng.integers(0, 50, 30))
    cc, cp = rng.standard_normal(30), rng.standard_normal(30)
    out = np.empty((30, 4))
    combine_rows(rows, prev, cc, cp, A, out)
    want = cc[:, None] * A[rows] + np.where(prev[:, None] >= 0, cp[:, None] * A[np.maximum(prev, 0)], 0.0)
    np.testing.assert_allclose(out, want, rtol=1e-15, atol=1e-15)


def test_segment_sums_matches_numpy():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((40, 3))
    order = rng.permutation(40)[:25]
    starts = np.array([0, 3, 3, 10, 25])
    out = np.empty((4, 3))
    segment_sums(order, starts, A, out)
    want = np.stack([A[order[a:b]].sum(axis=0) for a, b in zip(starts[:-1], starts[1:])])
    np.testing.assert_allclose(out, want, rtol=1e-14, atol=1e-14)


def _reference_whitened(rows, prev, cc, cp, codes, Z, XY, n_levels):
    """Materialize the whitened rows, then accumulate the obvious way."""
    W = cc[:, None] * np.hstack([Z, XY])[rows]
    has = prev >= 0
    W[has] += cp[has, None] * np.hstack([Z, XY])[prev[has]]
    P = Z.shape[1]
    zz = np.zeros((n_levels, P, P))
    zxy = np.zeros((n_levels, P, XY.shape[1]))
    for i, r in enumerate(rows):
        g = codes[r]
        zz[g] += np.outer(W[i, :P], W[i, :P])
        zxy[g] += np.outer(W[i, :P], W[i, P:])
    return zz, zxy, W[:, P:].T @ W[:, P:], W[:, :P]


def test_whitened_crossprod_matches_materialized_rows():
    from bigmixed.kernels.residual import whitened_crossprod, whitened_pair_crossprod

    rng = np.random.default_rng(2)
    n, L = 60, 7
    codes = rng.integers(0, L, n)
    Z = rng.standard_normal((n, 2))
    XY = rng.standard_normal((n, 4))
    rows = rng.permutation(n)[:45]
    # predecessors share the row's level, as in a series
    prev = np.array([rng.choice(np.flatnonzero(codes == codes[r])) if rng.random() < 0.7 else -1
                     for r in rows])
    cc, cp = rng.standard_normal(45), rng.standard_normal(45)
    want_zz, want_zxy, want_gram, Wz = _reference_whitened(rows, prev, cc, cp, codes, Z, XY, L)
    for chunks in (1, 2):
        zz = np.zeros((chunks, L, 2, 2))
        zxy = np.zeros((chunks, L, 2, 4))
        gram = np.zeros((chunks, 4, 4))
        whitened_crossprod(rows, prev, cc, cp, codes, Z, False, XY, True, zz, zxy, gram)
        np.testing.assert_allclose(zz.sum(0), want_zz, atol=1e-12)
        np.testing.assert_allclose(zxy.sum(0), want_zxy, atol=1e-12)
        np.testing.assert_allclose(gram.sum(0), want_gram, atol=1e-12)
    # unit flag: Z is a column of ones
    ones = np.ones((n, 1))
    u_zz, u_zxy, _, _ = _reference_whitened(rows, prev, cc, cp, codes, ones, XY, L)
    zz = np.zeros((1, L, 1, 1))
    zxy = np.zeros((1, L, 1, 4))
    gram = np.zeros((1, 4, 4))
    whitened_crossprod(rows, prev, cc, cp, codes, np.ones((0, 1)), True, XY, False, zz, zxy, gram)
    np.testing.assert_allclose(zz[0], u_zz, atol=1e-12)
    np.testing.assert_allclose(zxy[0], u_zxy, atol=1e-12)
    assert not gram.any()
    # pair blocks between the Z columns and a unit factor, pair id = the row's level here
    blocks = np.zeros((L, 2, 1))
    whitened_pair_crossprod(codes.astype(np.int64), rows, prev, cc, cp, Z, False, np.ones((0, 1)), True,
                            blocks)
    unit = cc + np.where(prev >= 0, cp, 0.0)
    want = np.zeros((L, 2, 1))
    for i, r in enumerate(rows):
        want[codes[r], :, 0] += Wz[i] * unit[i]
    np.testing.assert_allclose(blocks, want, atol=1e-12)


def test_ar1_whitening_coefficients_match_the_definition():
    from bigmixed.kernels.residual import ar1_whitening_coefficients

    rng = np.random.default_rng(3)
    n = 40
    prev = np.where(rng.random(n) < 0.75, np.arange(n) - 1, -1)
    prev[0] = -1
    gap = rng.uniform(0.2, 2.0, n)
    strata = rng.integers(0, 3, n)
    delta = np.array([1.0, 1.7, 0.6])
    phi = 0.55
    cc, cp = np.empty(n), np.empty(n)
    total = ar1_whitening_coefficients(prev, gap, strata, delta, phi, cc, cp)
    has = prev >= 0
    r = np.where(has, phi ** gap, 0.0)
    d = delta[strata]
    np.testing.assert_allclose(cc, 1 / (d * np.sqrt(1 - r**2)), rtol=1e-14)
    want_prev = np.where(has, -r / (delta[strata[np.maximum(prev, 0)]] * np.sqrt(1 - r**2)), 0.0)
    np.testing.assert_allclose(cp, want_prev, rtol=1e-14, atol=0)
    assert abs(total - np.sum(np.log(1 - r[has] ** 2))) < 1e-12
