"""bigmixed.compensated: double-double sums that do not depend on the order or the split of
the terms, and the states of scale() / poly() computed from them in rounds."""
import math

import numpy as np
import pytest

from bigmixed.crossprods.compensated import DD, add_compensated, dd_sum, merge_sums
from bigmixed.spec.transform_state import TRANSFORM_STATES, complete_state


def awkward_terms(seed, n=20_000):
    """Terms of very different magnitudes and signs, with heavy cancellation."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n) * 10.0 ** rng.integers(-8, 9, n)
    return np.concatenate([x, -x[: n // 2] * (1 + 1e-9)])


@pytest.mark.parametrize("seed", range(5))
def test_dd_sum_is_the_correctly_rounded_sum_whatever_the_split(seed):
    x = awkward_terms(seed)
    exact = math.fsum(x)
    assert dd_sum(x).value() == exact
    rng = np.random.default_rng(100 + seed)
    for _ in range(5):  # random order, random split into parts added in double-double
        y = x[rng.permutation(len(x))]
        cuts = np.sort(rng.integers(0, len(y), rng.integers(1, 12)))
        parts = [dd_sum(part) for part in np.split(y, cuts)]
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        assert total.value() == exact


def test_dd_sum_columns_and_empty():
    x = np.arange(12.0).reshape(4, 3)
    assert np.array_equal(dd_sum(x).value(), x.sum(axis=0))
    assert np.array_equal(dd_sum(x, axis=1).value(), x.sum(axis=1))
    assert dd_sum(np.empty(0)).value() == 0.0
    hi, lo = np.array([1.0, 1e16]), np.zeros(2)
    add_compensated(hi, lo, np.array([1e-20, 1.0]), np.zeros(2))
    assert np.array_equal(hi + lo, [1.0, 1e16 + 1.0]) and lo[0] == 1e-20
    assert repr(DD(1.0)).startswith("DD(")


def rounds_in_parts(kind, x, parts, **args):
    """The state found as bigmixed.distributed does: each round's sums added over parts."""
    prepare, needs, sums, advance = TRANSFORM_STATES[kind]
    state: dict = {}
    prepare(state, **args)
    while (op := needs(state, **args)) is not None:
        total = None
        for part in np.array_split(x, parts):
            s = sums(part, state, op)
            total = s if total is None else merge_sums(total, s)
        advance(state, op, total)
        prepare(state, **args)
    return state


def test_scale_state_like_r_and_split_independent():
    rng = np.random.default_rng(4)
    x = rng.normal(size=5001) * 7 + 1e4
    x[::97] = np.nan
    ok = x[~np.isnan(x)]
    st = complete_state("scale", x, {}, center=True, scale=True)
    assert st["center"] == pytest.approx(ok.mean(), rel=1e-15)
    assert st["scale"] == pytest.approx(ok.std(ddof=1), rel=1e-13)
    for parts in (2, 7, 5001):
        assert rounds_in_parts("scale", x, parts, center=True, scale=True) == st
    # center = FALSE: root mean square; numeric centre and scale need no data
    st = complete_state("scale", ok, {}, center=False, scale=True)
    assert st["center"] is None and st["scale"] == pytest.approx(np.sqrt(np.sum(ok**2) / (len(ok) - 1)))
    st = complete_state("scale", ok, {}, center=3.0, scale=2.0)
    assert st == {"center": 3.0, "scale": 2.0}
    assert TRANSFORM_STATES["scale"][1](st) is None


def test_poly_state_matches_formulaic_and_split_independent():
    from formulaic.transforms.poly import poly

    rng = np.random.default_rng(5)
    x = rng.uniform(-2, 5, 3001)
    want: dict = {}
    poly(x, degree=3, _state=want)
    st = complete_state("poly", x, {}, degree=3, raw=False)
    assert sorted(st["alpha"]) == [0, 1, 2] and sorted(st["norms2"]) == [0, 1, 2, 3]
    for k in st["norms2"]:
        assert st["norms2"][k] == pytest.approx(want["norms2"][k], rel=1e-12)
    for k in st["alpha"]:
        assert st["alpha"][k] == pytest.approx(want["alpha"][k], rel=1e-10, abs=1e-14)
    for parts in (3, 64):
        assert rounds_in_parts("poly", x, parts, degree=3, raw=False) == st
    # the basis formulaic evaluates from this state is orthonormal
    basis = np.asarray(poly(x, degree=3, _state=st))
    assert np.allclose(basis.T @ basis, np.eye(3), atol=1e-12)
    assert complete_state("poly", x, {}, degree=2, raw=True) == {}


def test_parallel_double_double_add_gives_the_same_bits():
    from bigmixed.kernels.crossprod import add_double_double, add_double_double_parallel

    rng = np.random.default_rng(3)
    n = 100_003  # not a multiple of the blocks
    hi, lo = rng.normal(size=n) * 1e8, rng.normal(size=n) * 1e-9
    hi2, lo2 = rng.normal(size=n), rng.normal(size=n) * 1e-17
    a_hi, a_lo, b_hi, b_lo = hi.copy(), lo.copy(), hi.copy(), lo.copy()
    add_double_double(a_hi, a_lo, hi2, lo2)
    add_double_double_parallel(b_hi, b_lo, hi2, lo2)
    assert np.array_equal(a_hi, b_hi) and np.array_equal(a_lo, b_lo)
