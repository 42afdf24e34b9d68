"""response_crossprod: Z'y per level, X'y and y'y against numpy, and bit-identical to the
y-column of factor_crossprod (same chunks, same summation order)."""
import numpy as np
import pytest
from bigmixed.kernels import factor_crossprod, factor_crossprod_serial
from bigmixed.kernels.response import response_crossprod


def problem(seed, n, L, P, p, unit):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, L, n).astype(np.int32)
    codes[:L] = np.arange(L)  # every level occurs
    Z = np.ones((0, 1)) if unit else np.ascontiguousarray(rng.normal(size=(n, P)))
    X = np.ascontiguousarray(rng.normal(size=(n, p)) * 10.0 ** rng.integers(-3, 4, p))
    y = rng.normal(size=n) * 3 + 1
    return codes, Z, X, y


@pytest.mark.parametrize("unit,P", [(True, 1), (False, 1), (False, 2), (False, 3)])
@pytest.mark.parametrize("chunks", [1, 2, 3])
def test_matches_numpy(unit, P, chunks):
    n, L, p = 257, 11, 4
    codes, Z, X, y = problem(7 + P + chunks, n, L, P, p, unit)
    zy = np.zeros((chunks, L, P))
    xy = np.zeros((chunks, p + 1))
    response_crossprod(codes, Z, unit, X, y, True, zy, xy, np.zeros_like(zy), np.zeros_like(xy))
    Zfull = np.ones((n, 1)) if unit else Z
    want_zy = np.zeros((L, P))
    for g in range(L):
        want_zy[g] = Zfull[codes == g].T @ y[codes == g]
    np.testing.assert_allclose(zy.sum(0), want_zy, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(xy.sum(0)[:p], X.T @ y, rtol=1e-12)
    np.testing.assert_allclose(xy.sum(0)[p], y @ y, rtol=1e-12)


def test_without_xy_leaves_xy_untouched():
    codes, Z, X, y = problem(1, 50, 5, 1, 2, True)
    xy = np.zeros((1, 3))
    zy = np.zeros((1, 5, 1))
    response_crossprod(codes, Z, True, X, y, False, zy, xy, np.zeros_like(zy), np.zeros_like(xy))
    assert not xy.any() and zy.any()


@pytest.mark.parametrize("unit,P", [(True, 1), (False, 2)])
@pytest.mark.parametrize("chunks", [1, 2])
def test_bit_identical_to_factor_crossprod(unit, P, chunks):
    n, L, p = 1001, 17, 3
    codes, Z, X, y = problem(3, n, L, P, p, unit)
    m = p + 1
    zz = np.zeros((chunks, L, P, P))
    zxy = np.zeros((chunks, L, P, m))
    gram = np.zeros((chunks, m, m))
    kernel = factor_crossprod if chunks > 1 else factor_crossprod_serial
    lo = [np.zeros_like(u) for u in (zz, zxy, gram)]
    kernel(codes, Z, unit, X, y, True, zz, zxy, gram, *lo)
    zy = np.zeros((chunks, L, P))
    xy = np.zeros((chunks, m))
    zy_lo, xy_lo = np.zeros_like(zy), np.zeros_like(xy)
    response_crossprod(codes, Z, unit, X, y, True, zy, xy, zy_lo, xy_lo)
    for c in range(chunks):  # each chunk's partial sums and rounding errors, not just the totals
        assert np.array_equal(zy[c], zxy[c, :, :, p])
        assert np.array_equal(xy[c], gram[c, p, :])
        assert np.array_equal(zy_lo[c], lo[1][c, :, :, p])
        assert np.array_equal(xy_lo[c], lo[2][c, p, :])
