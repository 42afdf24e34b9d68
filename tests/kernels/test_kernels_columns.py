"""Kernels that read a matrix from its columns' addresses (kernels/columns.py) against the same
kernels on the (n, p) copy and against slow numpy references."""
import numpy as np
from hypothesis import given, settings, strategies as st

from bigmixed.kernels.columns import columns_gram, columns_to_rows
from bigmixed.kernels.crossprod import factor_crossprod_columns_serial, factor_crossprod_serial
from bigmixed.spec.columns import ColumnMatrix, fixed_gram


def _columns(rng, n, p, ones_at):
    """p columns of n values, a column of ones (None) at the positions `ones_at`."""
    return [None if j in ones_at else rng.normal(size=n) * 10.0 ** rng.integers(-4, 5)
            for j in range(p)]


def _dense(cols, n):
    return np.column_stack([np.ones(n) if c is None else c for c in cols]) if cols else np.zeros((n, 0))


def _crossprods(kernel, codes, Z, unit, X_arg, y, n_levels, P, p, chunks):
    bufs = [np.zeros((chunks, n_levels, P, P)), np.zeros((chunks, n_levels, P, p + 1)),
            np.zeros((chunks, p + 1, p + 1))]
    lo = [np.zeros_like(b) for b in bufs]
    kernel(codes, Z, unit, X_arg, y, True, *bufs, *lo)
    return bufs + lo


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 80), n_levels=st.integers(1, 9), P=st.integers(1, 3), p=st.integers(0, 4),
       chunks=st.integers(1, 3), unit=st.booleans(), intercept=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_factor_crossprod_from_columns_has_the_bits_of_the_copy(n, n_levels, P, p, chunks, unit,
                                                                intercept, seed):
    """The same products in the same order: every output and rounding-error buffer equal bit for
    bit to factor_crossprod_serial's on the C-ordered copy (the columns given whole, or as the
    kept rows of longer columns)."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, n_levels, n).astype(np.int32)
    P = 1 if unit else P
    Z = np.ones((0, 1)) if unit else rng.normal(size=(n, P))
    cols = _columns(rng, n, p, {0} if intercept and p else set())
    y = rng.normal(size=n)
    X = np.ascontiguousarray(_dense(cols, n))
    # the same matrix as the kept rows of longer columns (every other position)
    long_cols = [None if c is None else np.repeat(c, 2) * np.tile([1.0, np.nan], n) for c in cols]
    kept = ColumnMatrix(long_cols, n, rows=np.arange(0, 2 * n, 2))
    want = _crossprods(factor_crossprod_serial, codes, Z, unit, X, y, n_levels, P, p, chunks)
    for M in (ColumnMatrix(cols, n), kept):
        got = _crossprods(lambda *a: factor_crossprod_columns_serial(*a[:3], M.addresses(),
                                                                     M.row_map(), *a[4:]),
                          codes, Z, unit, None, y, n_levels, P, p, chunks)
        for g, w in zip(got, want):
            assert np.array_equal(g, w)
        assert np.array_equal(np.asarray(kept), X)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 13000), p=st.integers(1, 6), chunks=st.integers(1, 3),
       seed=st.integers(0, 2**31 - 1))
def test_columns_gram_is_xtx(n, p, chunks, seed):
    """Blocks of 4096 rows (a short last block included) summed per chunk: X'X of the copy."""
    rng = np.random.default_rng(seed)
    cols = _columns(rng, n, p, {int(rng.integers(0, p))})
    X = _dense(cols, n)
    scale = max(1.0, float(np.abs(X).max(initial=0.0)) ** 2 * max(n, 1))
    rows = np.flatnonzero(rng.random(n) < 0.7)  # a subset of the rows, as after na.omit
    for M, Xm in ((ColumnMatrix(cols, n), X), (ColumnMatrix(cols, len(rows), rows=rows), X[rows])):
        out = np.full((chunks, p, p), np.nan)
        columns_gram(M.addresses(), M.row_map(), M.shape[0], out)
        np.testing.assert_allclose(out.sum(0), Xm.T @ Xm, rtol=0, atol=1e-13 * scale)


def test_columns_to_rows_and_the_matrix_interface():
    rng = np.random.default_rng(5)
    n = 1000
    cols = [None, rng.normal(size=n), np.arange(n, dtype=np.float64)]
    X = ColumnMatrix(cols, n)
    want = _dense(cols, n)
    assert X.shape == (n, 3) and len(X) == n and not X.is_materialized
    out = np.empty((n, 3))
    columns_to_rows(X.addresses(), X.row_map(), out)
    assert np.array_equal(out, want)
    rows = np.arange(3, n, 7)
    sub = ColumnMatrix(cols, len(rows), rows=rows)
    assert sub.shape == (len(rows), 3) and np.array_equal(np.asarray(sub), want[rows])
    beta = np.array([1.5, -2.0, 0.25])
    assert np.array_equal(X @ beta, want @ beta)  # the copy's gemv: the same bits
    assert X.is_materialized and X.materialize().flags.c_contiguous
    assert np.array_equal(X[:, 1], want[:, 1]) and np.array_equal(np.asarray(X), want)
    assert np.array_equal(X.T @ X, want.T @ want)
    np.testing.assert_allclose(fixed_gram(ColumnMatrix(cols, n)), want.T @ want, rtol=1e-13)
    import pickle

    assert np.array_equal(pickle.loads(pickle.dumps(X)), want)


def test_column_matrix_rejects_columns_it_cannot_read_in_place():
    n = 10
    for bad in (np.arange(n), np.ones(2 * n)[::2], np.ones(n + 1), np.ones((n, 1))):
        try:
            ColumnMatrix([bad], n)
        except ValueError as e:
            assert "C-contiguous float64" in str(e)
        else:  # pragma: no cover
            raise AssertionError(f"accepted {bad.dtype} {bad.shape} {bad.strides}")
    for rows in (np.array([0, 5, 10]), np.array([2, 1, 3]), np.array([0, 1])):
        try:
            ColumnMatrix([np.ones(n)], 3, rows=rows)
        except ValueError as e:
            assert "rows must" in str(e)
        else:  # pragma: no cover
            raise AssertionError(f"accepted rows {rows}")


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                                 st.sampled_from([np.nan, np.inf, -np.inf, 0.0])), max_size=50),
       single=st.booleans())
def test_count_nonfinite_counts_nan_and_inf(values, single):
    from bigmixed.kernels.columns import count_nonfinite

    x = np.array(values, dtype=np.float32 if single else np.float64)
    with np.errstate(over="ignore"):
        assert count_nonfinite(x) == (int(np.isnan(x).sum()), int(np.isinf(x).sum()))
