"""Cross-product kernels against slow, obvious numpy references."""
import numpy as np
from hypothesis import given, settings, strategies as st

from bigmixed.kernels import factor_crossprod, n_row_chunks, pair_crossprod


def slow_factor_crossprod(codes, Z, X, y, n_levels):
    XY = np.column_stack([X, y])
    P = Z.shape[1]
    zz = np.zeros((n_levels, P, P))
    zxy = np.zeros((n_levels, P, XY.shape[1]))
    for g in range(n_levels):
        rows = codes == g
        zz[g] = Z[rows].T @ Z[rows]
        zxy[g] = Z[rows].T @ XY[rows]
    return zz, zxy, XY.T @ XY


def run_kernel(codes, Z, unit, X, y, n_levels, chunks):
    P = Z.shape[1]
    m = X.shape[1] + 1
    zz = np.zeros((chunks, n_levels, P, P))
    zxy = np.zeros((chunks, n_levels, P, m))
    gram = np.zeros((chunks, m, m))
    lo = [np.zeros_like(u) for u in (zz, zxy, gram)]
    factor_crossprod(codes, Z, unit, X, y, True, zz, zxy, gram, *lo)
    return (zz + lo[0]).sum(0), (zxy + lo[1]).sum(0), (gram + lo[2]).sum(0)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), n_levels=st.integers(1, 8), P=st.integers(1, 3), p=st.integers(0, 3),
       chunks=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_factor_crossprod_matches_slow_reference(n, n_levels, P, p, chunks, seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, n_levels, n).astype(np.int32)
    Z = rng.normal(size=(n, P))
    X = rng.normal(size=(n, p))
    y = rng.normal(size=n)
    got = run_kernel(codes, Z, False, X, y, n_levels, chunks)
    want = slow_factor_crossprod(codes, Z, X, y, n_levels)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


def test_compensated_sums_do_not_depend_on_the_chunks():
    """hi + lo of each chunk, the chunks added in double-double and rounded once: the correctly
    rounded sum of the rows' products (math.fsum) for any number of chunks."""
    import math

    from bigmixed.crossprods.compensated import add_compensated

    rng = np.random.default_rng(11)
    n, L, P, p = 400, 5, 2, 3
    codes = rng.integers(0, L, n).astype(np.int64)
    Z = rng.normal(size=(n, P)) * 10.0 ** rng.integers(-6, 7, (n, 1))
    X = rng.normal(size=(n, p)) * 10.0 ** rng.integers(-6, 7, (n, p))
    y = rng.normal(size=n) * 1e3
    XY = np.column_stack([X, y])
    want_zz = np.array([[[math.fsum(Z[codes == g, a] * Z[codes == g, b]) for b in range(P)]
                         for a in range(P)] for g in range(L)])
    want_zxy = np.array([[[math.fsum(Z[codes == g, a] * XY[codes == g, b]) for b in range(p + 1)]
                          for a in range(P)] for g in range(L)])
    want_gram = np.array([[math.fsum(XY[:, a] * XY[:, b]) for b in range(p + 1)] for a in range(p + 1)])
    for chunks in (1, 2, 3, 7):
        bufs = [np.zeros((chunks, L, P, P)), np.zeros((chunks, L, P, p + 1)),
                np.zeros((chunks, p + 1, p + 1))]
        lo = [np.zeros_like(u) for u in bufs]
        factor_crossprod(codes, Z, False, X, y, True, *bufs, *lo)
        for hi_c, lo_c, want in zip(bufs, lo, (want_zz, want_zxy, want_gram)):
            hi, lo_ = hi_c[0].copy(), lo_c[0].copy()
            for c in range(1, chunks):
                add_compensated(hi, lo_, hi_c[c], lo_c[c])
            assert np.array_equal(hi + lo_, want)


def test_unit_z_equals_column_of_ones():
    rng = np.random.default_rng(3)
    n, L = 500, 17
    codes = rng.integers(0, L, n).astype(np.int64)
    X = rng.normal(size=(n, 3))
    y = rng.normal(size=n)
    a = run_kernel(codes, np.ones((0, 1)), True, X, y, L, 2)
    b = run_kernel(codes, np.ones((n, 1)), False, X, y, L, 2)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def test_row_chunking_depends_only_on_rows():
    assert n_row_chunks(10) == 1
    assert n_row_chunks(10_000_000) == 2


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 80), la=st.integers(1, 6), lb=st.integers(1, 6), Pa=st.integers(1, 2),
       Pb=st.integers(1, 2), seed=st.integers(0, 2**31 - 1))
def test_pair_crossprod_matches_dense_product(n, la, lb, Pa, Pb, seed):
    rng = np.random.default_rng(seed)
    ca = rng.integers(0, la, n)
    cb = rng.integers(0, lb, n)
    Za = rng.normal(size=(n, Pa))
    Zb = rng.normal(size=(n, Pb))
    key = cb * la + ca
    uniq, ids = np.unique(key, return_inverse=True)
    out = np.zeros((len(uniq), Pb, Pa))
    lo = np.zeros_like(out)
    pair_crossprod(ids.astype(np.int64), Zb, False, Za, False, out, lo)
    out += lo
    # dense Z_b' Z_a
    Db = np.zeros((n, lb * Pb))
    Da = np.zeros((n, la * Pa))
    for i in range(n):
        Db[i, cb[i] * Pb:(cb[i] + 1) * Pb] = Zb[i]
        Da[i, ca[i] * Pa:(ca[i] + 1) * Pa] = Za[i]
    full = Db.T @ Da
    for k, key_k in enumerate(uniq):
        gb, ga = divmod(key_k, la)
        np.testing.assert_allclose(out[k], full[gb * Pb:(gb + 1) * Pb, ga * Pa:(ga + 1) * Pa], rtol=1e-12, atol=1e-12)
    # every co-occurring pair is listed, nothing else is nonzero
    mask = np.zeros((lb, la), bool)
    mask[uniq // la, uniq % la] = True
    for gb in range(lb):
        for ga in range(la):
            if not mask[gb, ga]:
                assert np.all(full[gb * Pb:(gb + 1) * Pb, ga * Pa:(ga + 1) * Pa] == 0)


def test_serial_and_parallel_crossprod_give_identical_numbers():
    from bigmixed.kernels import factor_crossprod_serial

    rng = np.random.default_rng(2)
    n, L = 3000, 40
    codes = rng.integers(0, L, n).astype(np.int32)
    Z, X, y = rng.normal(size=(n, 2)), rng.normal(size=(n, 3)), rng.normal(size=n)
    outs = []
    for kernel in (factor_crossprod, factor_crossprod_serial):
        bufs = (np.zeros((2, L, 2, 2)), np.zeros((2, L, 2, 4)), np.zeros((2, 4, 4)))
        bufs += tuple(np.zeros_like(u) for u in bufs)
        kernel(codes, Z, False, X, y, True, *bufs)
        outs.append(bufs)
    for u, v in zip(*outs):
        np.testing.assert_array_equal(u, v)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 120), n_levels=st.integers(1, 9), P=st.integers(1, 3), p=st.integers(0, 3),
       parts=st.integers(1, 4), unit=st.booleans(), in_place=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_factor_crossprod_by_level_rounds_to_the_row_chunks_sums(n, n_levels, P, p, parts, unit,
                                                                  in_place, seed):
    """Levels split between the parts (one accumulator per level) instead of rows between the
    chunks: after the double-double sums are rounded, the same bits as factor_crossprod's row
    chunks, and the correctly rounded sums (math.fsum) of the rows' products."""
    import math

    from bigmixed.crossprods.crossprod import round_sum, sum_chunks
    from bigmixed.kernels.crossprod import factor_crossprod_by_level
    from bigmixed.spec.columns import ColumnMatrix

    rng = np.random.default_rng(seed)
    codes = rng.integers(0, n_levels, n).astype(np.int64)
    P = 1 if unit else P
    Z = np.ones((0, 1)) if unit else rng.normal(size=(n, P)) * 10.0 ** rng.integers(-5, 6, (n, 1))
    X = rng.normal(size=(n, p)) * 10.0 ** rng.integers(-5, 6, (n, p))
    y = rng.normal(size=n) * 1e3
    m = p + 1
    hi = [np.zeros((1, n_levels, P, P)), np.zeros((1, n_levels, P, m)), np.zeros((parts, m, m))]
    lo = [np.zeros_like(b) for b in hi]
    cols = ColumnMatrix([np.ascontiguousarray(X[:, j]) for j in range(p)], n)
    if in_place:
        factor_crossprod_by_level(codes, Z, unit, np.zeros((0, 0)), cols.addresses(),
                                  cols.row_map(), True, y, True, *hi, *lo)
    else:
        no_ints = np.zeros(0, dtype=np.int64)
        factor_crossprod_by_level(codes, Z, unit, X, no_ints, no_ints, False, y, True, *hi, *lo)
    got = [round_sum(*sum_chunks(h, l)) for h, l in zip(hi, lo)]
    chunks = 2
    ref_hi = [np.zeros((chunks, n_levels, P, P)), np.zeros((chunks, n_levels, P, m)),
              np.zeros((chunks, m, m))]
    ref_lo = [np.zeros_like(b) for b in ref_hi]
    factor_crossprod(codes, Z, unit, X, y, True, *ref_hi, *ref_lo)
    want = [round_sum(*sum_chunks(h, l)) for h, l in zip(ref_hi, ref_lo)]
    for g, w in zip(got, want):
        assert np.array_equal(g, w)
    Zd = np.ones((n, 1)) if unit else Z
    XY = np.column_stack([X, y])
    exact = np.array([[math.fsum(XY[:, a] * XY[:, b]) for b in range(m)] for a in range(m)])
    assert np.array_equal(got[2], exact)
    g0 = int(codes[0])
    rows = codes == g0
    assert np.array_equal(got[1][g0], [[math.fsum(Zd[rows, a] * XY[rows, b]) for b in range(m)]
                                       for a in range(P)])


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 300), n_b=st.integers(1, 40), n_a=st.integers(1, 40),
       wide=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_pair_keys_are_numpys_unique_of_the_keys(n, n_b, n_a, wide, seed):
    """Two counting sorts give np.unique's sorted keys and inverse, for int32 and int64 codes."""
    from bigmixed.kernels.crossprod import pair_keys

    rng = np.random.default_rng(seed)
    dtype = np.int64 if wide else np.int32
    cb = rng.integers(0, n_b, n).astype(dtype)
    ca = rng.integers(0, n_a, n).astype(dtype)
    ids = np.full(n, -7, dtype=np.int64)
    keys = pair_keys(cb, ca, n_b, n_a, ids)
    want_keys, want_ids = np.unique(cb.astype(np.int64) * n_a + ca, return_inverse=True)
    assert keys.dtype == np.int64 and np.array_equal(keys, want_keys)
    assert np.array_equal(ids, want_ids.reshape(-1))
