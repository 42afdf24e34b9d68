"""Kernels for the general (crossed / nested) system solved with CHOLMOD.

The lower triangle of Lambda'Z'Z Lambda is stored in a CSC matrix whose pattern is fixed once:
every stored block (one level of a row factor against one level of a column factor) is kept
dense, explicit zeros included, so the pattern never depends on theta and the symbolic analysis
is reused. `fill_scaled_gram` writes the new values straight into the CSC data array.
"""
import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, nogil=True)
def fill_scaled_gram(T_all, P_of, blk_row_factor, blk_col_factor, raw_offset, raw, pos, data_out):
    """data_out[pos] <- entries of T_r' B T_c for every stored block B.

    Parameters
    ----------
    T_all : (n_factors, Pmax, Pmax) float64, lower-triangular T of each factor (zero padded)
    P_of : (n_factors,) int64, random effects per level of each factor
    blk_row_factor, blk_col_factor : (n_blocks,) int64, factor of the block's rows / columns
    raw_offset : (n_blocks,) int64, start of the block's P_r x P_c row-major values in `raw`
    raw : (n_raw,) float64, the blocks of Z'Z (row factor' x column factor)
    pos : (n_raw,) int64, position in the CSC data array of each raw entry, or -1 if not stored
        (upper-triangle halves of diagonal blocks)
    data_out : (nnz,) float64, the CSC data array of lower(Lambda'Z'Z Lambda)
    """
    n_blocks = raw_offset.shape[0]
    for k in prange(n_blocks):
        fr = blk_row_factor[k]
        fc = blk_col_factor[k]
        Pr = P_of[fr]
        Pc = P_of[fc]
        off = raw_offset[k]
        if Pr == 1 and Pc == 1:  # intercept-only factors: one scalar per block
            idx = pos[off]
            if idx >= 0:
                data_out[idx] = T_all[fr, 0, 0] * raw[off] * T_all[fc, 0, 0]
            continue
        for a in range(Pr):
            for b in range(Pc):
                idx = pos[off + a * Pc + b]
                if idx < 0:
                    continue
                # (T_r' B T_c)[a, b] = sum_{i >= a, j >= b} T_r[i, a] B[i, j] T_c[j, b]
                s = 0.0
                for i in range(a, Pr):
                    tia = T_all[fr, i, a]
                    if tia == 0.0:
                        continue
                    for j in range(b, Pc):
                        s += tia * raw[off + i * Pc + j] * T_all[fc, j, b]
                data_out[idx] = s


@njit(cache=True, inline="always")
def _find(indptr, indices, col, row):
    lo = indptr[col]
    hi = indptr[col + 1] - 1
    while lo <= hi:
        mid = (lo + hi) >> 1
        r = indices[mid]
        if r == row:
            return mid
        if r < row:
            lo = mid + 1
        else:
            hi = mid - 1
    return -1


@njit(cache=True, nogil=True)
def selected_inverse(indptr, indices, data, zinv_out):
    """Takahashi's selected inverse: entries of (L L')^{-1} on the pattern of L.

    Parameters
    ----------
    indptr, indices, data : CSC arrays of a lower-triangular Cholesky factor L (n x n), row
        indices sorted within each column, the diagonal entry first, and the full symbolic
        pattern kept (as CHOLMOD keeps it: if L[i, j] and L[k, j] are stored, so is L[i, k]).
    zinv_out : (nnz,) float64, receives (L L')^{-1}[i, j] for every stored (i, j) of L.

    Uses Z L = L^{-T}: for i >= j, Z[i, j] = (delta_ij / L[j, j] - sum_{k > j} Z[i, k] L[k, j]) / L[j, j],
    processing columns from last to first. For column j, each pair (i, k) of its rows with
    i >= k is met once, by walking column k of Z with the rows of column j scattered into `slot`
    (O(1) look-ups; no searching).
    """
    n = indptr.shape[0] - 1
    slot = np.full(n, -1, dtype=np.int64)
    acc = np.empty(n)
    for j in range(n - 1, -1, -1):
        start = indptr[j]
        end = indptr[j + 1]
        ljj = data[start]
        cnt = end - start - 1
        for t in range(cnt):
            slot[indices[start + 1 + t]] = t
            acc[t] = 0.0
        for t in range(cnt):
            k = indices[start + 1 + t]
            lkj = data[start + 1 + t]
            for e in range(indptr[k], indptr[k + 1]):
                s = slot[indices[e]]
                if s < 0:
                    continue
                zik = zinv_out[e]  # Z[i, k], i >= k, column k already final
                acc[s] += zik * lkj
                if s != t:
                    acc[t] += zik * data[start + 1 + s]
        diag = 0.0
        for t in range(cnt):
            z = -acc[t] / ljj
            zinv_out[start + 1 + t] = z
            diag += z * data[start + 1 + t]
            slot[indices[start + 1 + t]] = -1
        zinv_out[start] = 1.0 / (ljj * ljj) - diag / ljj


@njit(cache=True, nogil=True)
def lookup_entries(indptr, indices, rows, cols, pos_out):
    """pos_out[k] <- position of entry (rows[k], cols[k]) in a CSC pattern with sorted rows (-1 if absent)."""
    for k in range(rows.shape[0]):
        pos_out[k] = _find(indptr, indices, cols[k], rows[k])


@njit(cache=True, nogil=True)
def fill_scaled_scalar(t, raw_csc, fac_row, fac_col, data_out):
    """data_out[k] <- t[fac_row[k]] * raw_csc[k] * t[fac_col[k]]: `fill_scaled_gram` when every
    factor has one random effect per level (T is the scalar t[f]), with the Z'Z values already
    in CSC order (no scatter).

    Parameters
    ----------
    t : (n_factors,) float64, theta of each factor
    raw_csc : (nnz,) float64, the entries of lower(Z'Z) in the CSC order of data_out
    fac_row, fac_col : (nnz,) int64, factor of each entry's row / column
    data_out : (nnz,) float64, the CSC data array of lower(Lambda'Z'Z Lambda)
    """
    for k in range(raw_csc.shape[0]):
        data_out[k] = t[fac_row[k]] * raw_csc[k] * t[fac_col[k]]
