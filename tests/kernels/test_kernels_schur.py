"""Schur-complement kernels (kernels/schur.py) against slow, obvious dense references."""
import numpy as np
import scipy.sparse as sp
from bigmixed.kernels import (
    dense_lower_from_csc,
    n_syrk_chunks,
    schur_diag_blocks,
    schur_first_block,
    schur_first_condvar,
    schur_first_inverse_trace,
    schur_pattern_nnz,
    schur_solve_lower,
    schur_solve_upper,
    schur_trailing_rows,
    sparse_syrk_lower,
    syrk_plan,
)
from hypothesis import given, settings
from hypothesis import strategies as st


def _random_csc(rng, r, n, density):
    M = sp.random(r, n, density=density, random_state=rng, format="csc")
    M.sort_indices()
    return M


def _syrk_reference(M):
    """lower(M M') entry by entry, the slow obvious way."""
    D = M.toarray()
    r = D.shape[0]
    out = np.zeros((r, r))
    for i in range(r):
        for j in range(i + 1):
            out[i, j] = sum(D[i, c] * D[j, c] for c in range(D.shape[1]))
    return out


@settings(max_examples=40, deadline=None)
@given(r=st.integers(1, 30), n=st.integers(1, 40), density=st.floats(0.0, 0.6),
       n_chunks=st.integers(1, 5), stop=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1))
def test_sparse_syrk_lower_matches_the_obvious_sum(r, n, density, n_chunks, stop, seed):
    rng = np.random.default_rng(seed)
    M = _random_csc(rng, r, n, density)
    ip, ix = M.indptr.astype(np.int64), M.indices.astype(np.int64)
    row_stop = round(stop * r)
    plan = syrk_plan(ip, ix, r, n_chunks, row_stop)
    S0 = rng.normal(size=(r, r))
    S = np.asfortranarray(S0.copy())
    sparse_syrk_lower(ip, ix, M.data, *plan, S)
    want = S0.copy()
    k = row_stop
    want[:k, :k] -= np.tril(_syrk_reference(M))[:k, :k]
    np.testing.assert_allclose(np.tril(S), np.tril(want), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(np.triu(S, 1), np.triu(S0, 1))  # upper triangle untouched
    np.testing.assert_array_equal(S[k:, :], S0[k:, :])  # rows from row_stop on untouched


def test_syrk_result_does_not_depend_on_the_split():
    rng = np.random.default_rng(7)
    M = _random_csc(rng, 300, 500, 0.05)
    ip, ix = M.indptr.astype(np.int64), M.indices.astype(np.int64)
    outs = []
    for n_chunks in (1, 3, n_syrk_chunks(5_000_000), 16, None):
        S = np.zeros((300, 300), order="F")
        sparse_syrk_lower(ip, ix, M.data, *syrk_plan(ip, ix, 300, n_chunks, 250), S)
        outs.append(S)
    for S in outs[1:]:
        np.testing.assert_array_equal(S, outs[0])


def test_dense_lower_from_csc():
    rng = np.random.default_rng(3)
    q, col0 = 9, 4
    full = rng.normal(size=(q, q))
    full = full + full.T
    low = sp.csc_matrix(np.tril(full))
    low.sort_indices()
    S = np.full((q - col0, q - col0), 99.0, order="F")
    dense_lower_from_csc(low.indptr.astype(np.int64), low.indices.astype(np.int64), low.data, 2.5,
                         col0, S)
    want = np.tril(full[col0:, col0:]) + 2.5 * np.eye(q - col0)
    np.testing.assert_array_equal(np.tril(S), want)
    assert np.all(S[np.triu_indices(q - col0, 1)] == 99.0)  # strict upper triangle untouched


def test_schur_pattern_nnz_counts_the_dense_pattern():
    rng = np.random.default_rng(5)
    for r, n, dens in ((12, 20, 0.15), (30, 10, 0.05), (8, 3, 0.0)):
        M = _random_csc(rng, r, n, dens)
        B = sp.csc_matrix(np.tril(rng.random((r, r)) < 0.1).astype(float))
        ip, ix = M.indptr.astype(np.int64), M.indices.astype(np.int64)
        t_indptr, t_cols, t_pos, _, _ = syrk_plan(ip, ix, r, 1)
        args = (ip, ix, t_indptr, t_cols, t_pos, B.indptr.astype(np.int64),
                B.indices.astype(np.int64))
        Mb = (M.toarray() != 0).astype(float)
        want = np.count_nonzero(np.tril((Mb @ Mb.T) + B.toarray() + np.eye(r)))
        assert schur_pattern_nnz(*args, r * r) == want
        assert want // 2 <= schur_pattern_nnz(*args, want // 2) <= want  # stops early


def _blocked_problem(rng, n_levels, P, r, density):
    """A random SPD A = M + I whose leading n_levels P columns are block diagonal (P x P) and whose
    rows of a level's columns share one pattern; returns (dense A, lower CSC of M)."""
    q1 = n_levels * P
    q = q1 + r
    M = np.zeros((q, q))
    for lv in range(n_levels):
        G = rng.normal(size=(P + 2, P))
        M[lv * P:(lv + 1) * P, lv * P:(lv + 1) * P] = G.T @ G
        rows = np.flatnonzero(rng.random(r) < density)
        M[q1 + rows[:, None], lv * P + np.arange(P)[None, :]] = rng.normal(size=(len(rows), P))
    W = rng.normal(size=(r, r + 3))
    M[q1:, q1:] = W @ W.T / r
    M[:q1, q1:] = M[q1:, :q1].T
    # make M + I positive definite whatever the random couplings
    A = M + np.eye(q)
    shift = max(0.0, -np.linalg.eigvalsh(A).min()) + 0.5
    M[q1:, q1:] += shift * np.eye(r)
    M[:q1, :q1] += shift * np.eye(q1)
    A = M + np.eye(q)
    pattern = (np.tril(M) != 0) | np.eye(q, dtype=bool)
    for lv in range(n_levels):  # the whole lower half of each diagonal block is stored
        blk = slice(lv * P, (lv + 1) * P)
        pattern[blk, blk] = np.tril(np.ones((P, P), bool))
    # from coordinates, so that explicit zeros of the pattern are kept
    ri, ci = np.nonzero(pattern)
    low = sp.csc_matrix((M[ri, ci], (ri, ci)), shape=(q, q))
    low.sort_indices()
    return A, low


def _l21_arrays(low, n_levels, P):
    q1 = n_levels * P
    ip = low.indptr.astype(np.int64)
    c = np.arange(q1)
    first = ip[:q1] + (P - c % P)
    counts = ip[1:q1 + 1] - first
    l21_indptr = np.zeros(q1 + 1, dtype=np.int64)
    np.cumsum(counts, out=l21_indptr[1:])
    take = np.repeat(first - l21_indptr[:-1], counts) + np.arange(l21_indptr[-1])
    return l21_indptr, low.indices.astype(np.int64)[take] - q1


def test_blocked_factor_solves_and_inverse_blocks_match_dense_linear_algebra():
    rng = np.random.default_rng(11)
    for n_levels, P, r, density in ((7, 1, 5, 0.5), (6, 2, 4, 0.6), (4, 3, 6, 0.4), (5, 2, 0, 0.0)):
        A, low = _blocked_problem(rng, n_levels, P, r, density)
        q1 = n_levels * P
        q = q1 + r
        ip, ix = low.indptr.astype(np.int64), low.indices.astype(np.int64)
        l21_indptr, l21_indices = _l21_arrays(low, n_levels, P)
        L11 = np.empty((n_levels, P, P))
        l21 = np.empty(l21_indptr[-1])
        logdet1 = schur_first_block(ip, ix, low.data, 1.0, P, n_levels, l21_indptr, L11, l21)
        L = np.linalg.cholesky(A)
        for lv in range(n_levels):
            blk = slice(lv * P, (lv + 1) * P)
            np.testing.assert_allclose(L11[lv], L[blk, blk], rtol=1e-10, atol=1e-12)
        L21 = sp.csc_matrix((l21, l21_indices, l21_indptr), shape=(r, q1)).toarray()
        np.testing.assert_allclose(L21, L[q1:, :q1], rtol=1e-10, atol=1e-12)
        S = np.full((r, r), np.nan, order="F")
        dense_lower_from_csc(ip, ix, low.data, 1.0, q1, S)
        plan = syrk_plan(l21_indptr, l21_indices, r, 2)
        sparse_syrk_lower(l21_indptr, l21_indices, l21, *plan, S)
        L22 = np.linalg.cholesky(np.tril(S) + np.tril(S, -1).T) if r else np.zeros((0, 0))
        np.testing.assert_allclose(L22, L[q1:, q1:], rtol=1e-10, atol=1e-12)
        schur = A[q1:, q1:] - L[q1:, :q1] @ L[q1:, :q1].T  # the complement, dense

        # its trailing rows, and the diagonal blocks of a leading range of rows
        for s0 in {0, r // 2, r}:
            out = np.full((r - s0, r), np.nan, order="F")
            schur_trailing_rows(ip, ix, low.data, 1.0, q1, s0, l21_indptr, l21_indices, l21,
                                np.empty((r - s0, q1), order="F"), out)
            np.testing.assert_allclose(np.tril(out, s0), np.tril(schur[s0:], s0), rtol=1e-10,
                                       atol=1e-12)
        for Pb in (1, 2):
            hi = (r // Pb) * Pb
            blocks = np.empty((hi // Pb, Pb, Pb))
            schur_diag_blocks(ip, ix, low.data, 1.0, q1, 0, hi, Pb, l21_indptr, l21_indices, l21,
                              blocks)
            for b in range(hi // Pb):
                sl = slice(b * Pb, (b + 1) * Pb)
                np.testing.assert_allclose(blocks[b], schur[sl, sl], rtol=1e-10, atol=1e-12)
        logdet = logdet1 + 2.0 * np.sum(np.log(np.diag(L22)))
        np.testing.assert_allclose(logdet, np.linalg.slogdet(A)[1], rtol=1e-12)

        # forward solve L c = B, then backward L' x = c
        B = rng.normal(size=(q, 3))
        c = B.copy()
        schur_solve_lower(L11, l21_indptr, l21_indices, l21, c)
        if r:
            c[q1:] = np.linalg.solve(L22, c[q1:])
        np.testing.assert_allclose(c, np.linalg.solve(L, B), rtol=1e-9, atol=1e-11)
        x = c.copy()
        if r:
            x[q1:] = np.linalg.solve(L22.T, x[q1:])
        schur_solve_upper(L11, l21_indptr, l21_indices, l21, x)
        np.testing.assert_allclose(x, np.linalg.solve(A, B), rtol=1e-9, atol=1e-11)

        # diagonal blocks of A^{-1} for the leading levels
        Sinv = np.asfortranarray(np.linalg.inv(L22 @ L22.T)) if r else np.zeros((0, 0), order="F")
        out = np.empty((n_levels, P, P))
        schur_first_condvar(L11, l21_indptr, l21_indices, l21, np.tril(Sinv).copy(order="F"), out)
        Ainv = np.linalg.inv(A)
        for lv in range(n_levels):
            blk = slice(lv * P, (lv + 1) * P)
            np.testing.assert_allclose(out[lv], Ainv[blk, blk], rtol=1e-9, atol=1e-12)
        if P == 1:  # the trace of the leading block, without the blocks (upper triangle unread)
            garbage = Sinv + np.triu(np.full_like(Sinv, np.nan), 1)
            got = schur_first_inverse_trace(L11, l21_indptr, l21_indices, l21,
                                            np.asfortranarray(garbage))
            np.testing.assert_allclose(got, np.trace(Ainv[:q1, :q1]), rtol=1e-11)


def test_schur_first_block_reports_a_matrix_that_is_not_positive_definite():
    low = sp.csc_matrix(np.array([[-2.0]]))
    L11 = np.empty((1, 1, 1))
    got = schur_first_block(low.indptr.astype(np.int64), low.indices.astype(np.int64), low.data,
                            1.0, 1, 1, np.zeros(2, dtype=np.int64), L11, np.empty(0))
    assert np.isnan(got)
