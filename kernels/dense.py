"""Small dense kernels shared by the level-by-level factorizations (blockdiag, schur)."""
import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def chol_lower_inplace(M, P):
    """In-place lower Cholesky of the leading P x P block of M (upper triangle set to 0).

    Returns log det(L L') = 2 sum log diag, or nan as soon as a pivot is not positive (the
    matrix is not positive definite; M is then left partly factored).
    """
    logdet = 0.0
    for j in range(P):
        s = M[j, j]
        for k in range(j):
            s -= M[j, k] * M[j, k]
        if not s > 0.0:
            return np.nan
        d = np.sqrt(s)
        M[j, j] = d
        logdet += 2.0 * np.log(d)
        for i in range(j + 1, P):
            s = M[i, j]
            for k in range(j):
                s -= M[i, k] * M[j, k]
            M[i, j] = s / d
        for i in range(j):
            M[i, j] = 0.0
    return logdet
