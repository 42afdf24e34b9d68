"""Sparse kernels: the selected inverse against a dense inverse."""
import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings, strategies as st

from bigmixed.kernels import fill_scaled_gram, lookup_entries, selected_inverse


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 25), density=st.floats(0.05, 0.5), seed=st.integers(0, 2**31 - 1))
def test_selected_inverse_matches_dense_inverse_on_the_pattern(n, density, seed):
    rng = np.random.default_rng(seed)
    B = sp.random(n, n, density=density, random_state=rng)
    A = (B @ B.T + sp.eye(n)).toarray()
    Ld = np.linalg.cholesky(A)
    # the pattern of a Cholesky factor: take every structurally nonzero entry of the dense L
    L = sp.csc_matrix(np.where(np.abs(Ld) > 0, Ld, 0.0))
    L.sort_indices()
    z = np.zeros(L.nnz)
    selected_inverse(L.indptr.astype(np.int64), L.indices.astype(np.int64), L.data, z)
    inv = np.linalg.inv(A)
    rows = L.indices
    cols = np.repeat(np.arange(n), np.diff(L.indptr))
    np.testing.assert_allclose(z, inv[rows, cols], rtol=1e-8, atol=1e-10)


def test_lookup_entries():
    M = sp.csc_matrix(np.tril(np.arange(1.0, 17.0).reshape(4, 4)))
    M.sort_indices()
    rows = np.array([0, 3, 2, 1], dtype=np.int64)
    cols = np.array([0, 1, 2, 3], dtype=np.int64)
    out = np.empty(4, dtype=np.int64)
    lookup_entries(M.indptr.astype(np.int64), M.indices.astype(np.int64), rows, cols, out)
    assert M.data[out[0]] == 1.0 and M.data[out[1]] == 14.0 and M.data[out[2]] == 11.0
    assert out[3] == -1  # (1, 3) is in the upper triangle: not stored


def test_fill_scaled_gram_one_block():
    T_all = np.array([[[2.0, 0.0], [1.0, 3.0]]])
    B = np.array([[4.0, 1.0], [1.0, 5.0]])
    raw = B.ravel().copy()
    pos = np.array([0, -1, 1, 2], dtype=np.int64)  # lower triangle of one 2x2 block
    data = np.zeros(3)
    fill_scaled_gram(T_all, np.array([2]), np.array([0]), np.array([0]), np.array([0]), raw, pos, data)
    want = T_all[0].T @ B @ T_all[0]
    np.testing.assert_allclose(data, [want[0, 0], want[1, 0], want[1, 1]])
