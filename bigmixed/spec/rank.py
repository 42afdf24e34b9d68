"""Aliased fixed-effects columns, found and dropped as lme4 does (check.rankX =
"message+drop.cols"): R's pivoted QR (dqrdc2) with tol = 1e-7."""
from __future__ import annotations

import warnings
import numpy as np
from ..warnings import RankDeficiencyWarning  # noqa: E402
from .checks import user_stacklevel

# --------------------------------------------------------------------------------------
# Rank deficiency of X (lme4's chkRank.drop.cols)

_RANK_TOL = 1e-7  # lme4: chkRank.drop.cols(X, kind, tol = 1e-7)


def dqrdc2_rank(a: np.ndarray, tol: float = _RANK_TOL):
    """R's LINPACK dqrdc2 (qr(x, tol, LAPACK = FALSE)): -> (rank, pivot).

    Householder QR with "limited column pivoting": a column whose norm, after projecting
    out the columns accepted before it, falls below `tol` times its original norm is moved
    to the right-hand edge; the others keep their order. pivot[:rank] are the columns R's
    lm() and lme4 keep. A re-implementation of the algorithm in R's src/appl/dqrdc2.f
    (including its norm downdating with re-computation when the norm drops a lot).
    """
    x = np.array(a, dtype=np.float64, order="F", copy=True)
    n, p = x.shape
    pivot = np.arange(p)
    qraux = np.sqrt(np.einsum("ij,ij->j", x, x)) if n > 0 else np.zeros(p)
    work1 = qraux.copy()
    work2 = np.where(qraux == 0.0, 1.0, qraux)
    k = p  # columns k..p-1 are the negligible ones moved to the end
    for l in range(min(n, p)):
        # cycle negligible columns to the end (l < k avoids infinite cycling)
        while l < k and qraux[l] < work2[l] * tol:
            order = np.r_[np.arange(l), np.arange(l + 1, p), l]
            x = np.asfortranarray(x[:, order])
            pivot, qraux, work1, work2 = pivot[order], qraux[order], work1[order], work2[order]
            k -= 1
        if l == n - 1:
            continue
        v = x[l:, l]
        nrmxl = float(np.sqrt(v @ v))
        if nrmxl == 0.0:
            continue
        if v[0] != 0.0:
            nrmxl = np.copysign(nrmxl, v[0])
        v /= nrmxl
        v[0] += 1.0
        if l + 1 < p:
            rest = x[l:, l + 1 :]
            t = -(v @ rest) / v[0]
            rest += np.outer(v, t)
            nz = qraux[l + 1 :] != 0.0
            with np.errstate(divide="ignore", invalid="ignore"):
                tt = np.maximum(1.0 - (np.abs(rest[0]) / qraux[l + 1 :]) ** 2, 0.0)
            for jj in np.flatnonzero(nz):
                j = l + 1 + jj
                if abs(tt[jj]) >= 1e-6:
                    qraux[j] *= np.sqrt(tt[jj])
                else:
                    qraux[j] = np.sqrt(x[l + 1 :, j] @ x[l + 1 :, j])
                    work1[j] = qraux[j]
        qraux[l] = v[0]
        x[l, l] = -nrmxl
    return min(k, n), pivot


def _small_equivalent(X: np.ndarray, chunk_rows: int = 16384) -> np.ndarray:
    """A small matrix M (at most max(p, small n) rows) with M'M = X'X, by a chunked QR.

    dqrdc2's decisions depend on the columns' norms and the norms of their projections
    onto the earlier columns only, i.e. on X'X: any M with M'M = X'X computed by orthogonal
    transformations gives the same pivots, while X is read once, a block of rows at a time.
    Each block (C-contiguous rows = a Fortran-ordered X^T) is reduced in place by LAPACK's
    RQ factorisation, X_b^T = R Q, so M_b = R^T; blocks are stacked under the running M.
    """
    from scipy.linalg import lapack

    n, p = X.shape
    chunk_rows = max(int(chunk_rows), 4 * p)
    if n <= chunk_rows:
        return X
    m = None
    for start in range(0, n, chunk_rows):
        block = X[start : start + chunk_rows]
        if m is not None:
            block = np.vstack([m, block])
        at = np.array(block.T, order="F", copy=True)  # p x rows, rows >= p
        rq, _, _, info = lapack.dgerqf(at, overwrite_a=1)
        if info != 0:  # pragma: no cover - LAPACK argument error
            raise RuntimeError(f"LAPACK dgerqf failed (info={info})")
        m = np.ascontiguousarray(np.triu(rq[:, rq.shape[1] - p :]).T)
    return m


def clearly_full_rank(xtx: np.ndarray, n_obs: int) -> bool:
    """True when X (given by X'X) is of full rank by a wide margin: the Cholesky factor of the
    scaled Gram matrix gives each column's norm after projecting out the earlier ones, relative
    to its own norm; if none is below 1e-3 (>> lme4's 1e-7 and >> the Gram's rounding), the
    pivoted QR would keep every column too."""
    p = xtx.shape[0]
    d = np.sqrt(np.diag(xtx))
    if not (np.all(d > 0) and np.all(np.isfinite(d)) and n_obs >= p):
        return False
    try:
        chol = np.linalg.cholesky(xtx / np.outer(d, d))
    except np.linalg.LinAlgError:
        return False
    return bool(np.all(np.diag(chol) > 1e-3))


def aliased_columns(X: np.ndarray, tol: float = _RANK_TOL, xtx=None) -> np.ndarray:
    """Indices of the columns of X that lme4 keeps (in order); all of them if full rank.
    `xtx`: X'X if already computed."""
    n, p = X.shape
    if p == 0:
        return np.arange(0)
    if clearly_full_rank(X.T @ X if xtx is None else xtx, n):
        return np.arange(p)
    rank, pivot = dqrdc2_rank(_small_equivalent(X), tol)
    return pivot[:rank]


def drop_aliased(X: np.ndarray, names: list, xtx=None):
    """lme4's check.rankX = "message+drop.cols" -> (X, kept names, dropped names, warning)."""
    keep = aliased_columns(X, xtx=xtx)
    if len(keep) == X.shape[1]:
        return X, list(names), [], None, None
    dropped = [names[j] for j in range(X.shape[1]) if j not in set(keep.tolist())]
    n_drop = len(dropped)
    msg = (
        "fixed-effect model matrix is rank deficient so dropping "
        + (f"{n_drop} column / coefficient" if n_drop == 1 else f"{n_drop} columns / coefficients")
        + f": {', '.join(dropped)} (a linear combination of the columns before "
        + ("it" if n_drop == 1 else "them")
        + ")"
    )
    w = RankDeficiencyWarning(msg)
    warnings.warn(w, stacklevel=user_stacklevel())
    X = np.ascontiguousarray(X[:, keep])
    return X, [names[j] for j in keep], dropped, keep, w
