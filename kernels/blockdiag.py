"""Penalized least squares for one grouping factor: a block-diagonal system, level by level.

For one factor with P random effects per level, Lambda'Z'Z Lambda + I is block diagonal with
one P x P block per level, so its Cholesky factor is too. Everything is O(n_levels), never O(n).
"""
import numpy as np
from numba import njit, prange

from .dense import chol_lower_inplace


def n_level_chunks(n_levels):
    """Fixed chunking over levels (depends on the level count only: thread-count invariant)."""
    return int(min(8, max(1, -(-n_levels // 20_000))))


@njit(cache=True, inline="always")
def _scaled_block(T, zz, zxy, g, P, m, W, M, R):
    """M <- T' zz[g] T + I and R <- T' zxy[g] (T lower triangular; W is a P x P work buffer)."""
    for a in range(P):
        for b in range(P):
            s = 0.0
            for k in range(b, P):
                s += zz[g, a, k] * T[k, b]
            W[a, b] = s
    for a in range(P):
        for b in range(P):
            s = 0.0
            for k in range(a, P):
                s += T[k, a] * W[k, b]
            M[a, b] = s
        M[a, a] += 1.0
    for a in range(P):
        for b in range(m):
            s = 0.0
            for k in range(a, P):
                s += T[k, a] * zxy[g, k, b]
            R[a, b] = s


@njit(cache=True, inline="always")
def _level_p1(T, zz, zxy, g, m, R):
    """One level, one random effect: R <- L^{-1} T' zxy[g]; returns log(T'AT + 1)."""
    t = T[0, 0]
    M = t * t * zz[g, 0, 0] + 1.0
    scale = t / np.sqrt(M)
    for b in range(m):
        R[0, b] = scale * zxy[g, 0, b]
    return np.log(M)


@njit(cache=True, inline="always")
def _level_p2(T, zz, zxy, g, m, R):
    """One level, two random effects (intercept and slope), written out in scalars."""
    t00 = T[0, 0]
    t10 = T[1, 0]
    t11 = T[1, 1]
    a00 = zz[g, 0, 0]
    a01 = zz[g, 1, 0]
    a11 = zz[g, 1, 1]
    m00 = t00 * t00 * a00 + 2.0 * t00 * t10 * a01 + t10 * t10 * a11 + 1.0
    m10 = t11 * (t00 * a01 + t10 * a11)
    m11 = t11 * t11 * a11 + 1.0
    l00 = np.sqrt(m00)
    l10 = m10 / l00
    d11 = m11 - l10 * l10
    l11 = np.sqrt(d11)
    inv00 = 1.0 / l00
    inv11 = 1.0 / l11
    for b in range(m):
        z0 = zxy[g, 0, b]
        z1 = zxy[g, 1, b]
        r0 = (t00 * z0 + t10 * z1) * inv00
        R[0, b] = r0
        R[1, b] = (t11 * z1 - l10 * r0) * inv11
    return np.log(m00 * d11)


@njit(cache=True, inline="always")
def _forward_solve(L, R, P, m):
    """R <- L^{-1} R for lower-triangular L (P x P), R (P x m)."""
    for b in range(m):
        for a in range(P):
            s = R[a, b]
            for k in range(a):
                s -= L[a, k] * R[k, b]
            R[a, b] = s / L[a, a]


@njit(cache=True, inline="always")
def _back_solve(L, R, P, m):
    """R <- L'^{-1} R for lower-triangular L (P x P), R (P x m)."""
    for b in range(m):
        for a in range(P - 1, -1, -1):
            s = R[a, b]
            for k in range(a + 1, P):
                s -= L[k, a] * R[k, b]
            R[a, b] = s / L[a, a]


@njit(cache=True, inline="always")
def _update_chunk(T, zz, zxy, lo, hi, c, schur_out):
    """Levels lo..hi-1: writes sum_g R_g'R_g into schur_out[c]; returns the sum of log dets."""
    P = zz.shape[1]
    m = zxy.shape[2]
    W = np.empty((P, P))
    M = np.empty((P, P))
    R = np.empty((P, m))
    acc = np.zeros((m, m))
    ld = 0.0
    for g in range(lo, hi):
        if P == 1:
            ld += _level_p1(T, zz, zxy, g, m, R)
        elif P == 2:
            ld += _level_p2(T, zz, zxy, g, m, R)
        else:
            _scaled_block(T, zz, zxy, g, P, m, W, M, R)
            ld += chol_lower_inplace(M, P)
            _forward_solve(M, R, P, m)
        for a in range(m):
            for b in range(a + 1):
                s = 0.0
                for k in range(P):
                    s += R[k, a] * R[k, b]
                acc[a, b] += s
    for a in range(m):
        for b in range(a + 1):
            schur_out[c, a, b] = acc[a, b]
            schur_out[c, b, a] = acc[a, b]
    return ld


@njit(parallel=True, cache=True, nogil=True)
def blockdiag_update(T, zz, zxy, n_chunks, schur_out):
    """Factor the block-diagonal system for one theta.

    Parameters
    ----------
    T : (P, P) float64, lower-triangular relative covariance factor (same for every level)
    zz : (n_levels, P, P) float64, Z_g'Z_g
    zxy : (n_levels, P, m) float64, Z_g'[X y]
    n_chunks : int, fixed chunking over levels (see `n_level_chunks`)
    schur_out : (n_chunks, m, m) float64, receives per chunk sum_g R_g'R_g where
        R_g = L_g^{-1} T' Z_g'[X y] and L_g L_g' = T' Z_g'Z_g T + I

    Returns
    -------
    log det(Lambda'Z'Z Lambda + I), summed in chunk order.
    """
    n_levels = zz.shape[0]
    per = (n_levels + n_chunks - 1) // n_chunks
    logdets = np.zeros(n_chunks)
    for c in prange(n_chunks):
        logdets[c] = _update_chunk(T, zz, zxy, c * per, min(n_levels, (c + 1) * per), c, schur_out)
    total = 0.0
    for c in range(n_chunks):
        total += logdets[c]
    return total


@njit(cache=True, nogil=True)
def blockdiag_update_serial(T, zz, zxy, n_chunks, schur_out):
    """`blockdiag_update` without a parallel region (same chunks, same numbers): for few levels,
    where waking the worker threads costs more than the work."""
    n_levels = zz.shape[0]
    per = (n_levels + n_chunks - 1) // n_chunks
    total = 0.0
    for c in range(n_chunks):
        total += _update_chunk(T, zz, zxy, c * per, min(n_levels, (c + 1) * per), c, schur_out)
    return total


@njit(parallel=True, cache=True, nogil=True)
def blockdiag_modes(T, zz, zxy, beta, u_out, cinv_out):
    """Spherical modes u_g and the blocks (T'Z_g'Z_g T + I)^{-1} at the optimum.

    Parameters
    ----------
    T : (P, P) lower triangular; zz : (n_levels, P, P); zxy : (n_levels, P, p + 1)
    beta : (p,) fixed effects
    u_out : (n_levels, P) float64, receives u_g = (T'A_g T + I)^{-1} T'Z_g'(y - X beta)
    cinv_out : (n_levels, P, P) float64, receives (T'A_g T + I)^{-1}
    """
    n_levels = zz.shape[0]
    P = zz.shape[1]
    m = zxy.shape[2]
    p = m - 1
    for g in prange(n_levels):
        W = np.empty((P, P))
        M = np.empty((P, P))
        R = np.empty((P, m))
        _scaled_block(T, zz, zxy, g, P, m, W, M, R)
        chol_lower_inplace(M, P)
        rhs = np.empty((P, 1))
        for a in range(P):
            s = R[a, p]
            for b in range(p):
                s -= R[a, b] * beta[b]
            rhs[a, 0] = s
        _forward_solve(M, rhs, P, 1)
        # back solve L' u = rhs
        for a in range(P - 1, -1, -1):
            s = rhs[a, 0]
            for k in range(a + 1, P):
                s -= M[k, a] * u_out[g, k]
            u_out[g, a] = s / M[a, a]
        # inverse of L L': columns of L^{-T} L^{-1}
        Linv = np.eye(P)
        _forward_solve(M, Linv, P, P)
        for a in range(P):
            for b in range(P):
                s = 0.0
                for k in range(max(a, b), P):
                    s += Linv[k, a] * Linv[k, b]
                cinv_out[g, a, b] = s


@njit(cache=True, nogil=True)
def profiled_criterion(logdet_L, gram, schur_out, n_obs, n_fixed, reml, logdet_W):
    """The profiled criterion from log det(L L') and the per-chunk sums of R_g'R_g.

    S = gram - sum_c schur_out[c] ((p+1) x (p+1)); its lower Cholesky factor holds R_X' and
    r = sqrt(penalized RSS) in the corner. REML: log det L + log det(R_X'R_X) - 2 logdet_W
    + (n - p)(1 + log(2 pi r^2 / (n - p))); ML: log det L + n (1 + log(2 pi r^2 / n)).
    logdet_W is log|det W| of the working basis of the fixed effects (see bigmixed/basis.py).
    Returns inf when S is not positive definite.
    """
    m = gram.shape[0]
    p = n_fixed
    S = gram.copy()
    for c in range(schur_out.shape[0]):
        for a in range(m):
            for b in range(m):
                S[a, b] -= schur_out[c, a, b]
    logdet_RX = 0.0
    for j in range(m):
        s = S[j, j]
        for k in range(j):
            s -= S[j, k] * S[j, k]
        if not s > 0.0:
            return np.inf
        d = np.sqrt(s)
        S[j, j] = d
        if j < p:
            logdet_RX += 2.0 * np.log(d)
        for i in range(j + 1, m):
            t = S[i, j]
            for k in range(j):
                t -= S[i, k] * S[j, k]
            S[i, j] = t / d
    r2 = S[p, p] * S[p, p]
    log2pi = np.log(2.0 * np.pi)
    if reml:
        nmp = n_obs - p
        return logdet_L + logdet_RX - 2.0 * logdet_W + nmp * (1.0 + log2pi + np.log(r2 / nmp))
    return logdet_L + n_obs * (1.0 + log2pi + np.log(r2 / n_obs))


@njit(cache=True, nogil=True)
def blockdiag_objective(theta, theta_row, theta_col, zz, zxy, gram, n_obs, n_fixed, reml,
                        logdet_W, schur_out):
    """One evaluation of the criterion for one grouping factor in a single call (one chunk).

    Fuses theta -> T, the level loop of `blockdiag_update_serial` and `profiled_criterion`: for
    small problems Python overhead, not arithmetic, dominates an evaluation.

    Parameters
    ----------
    theta, theta_row, theta_col : (n_theta,) values and their (row, column) in T (P x P)
    zz : (n_levels, P, P); zxy : (n_levels, P, p + 1); gram : (p + 1, p + 1)
    schur_out : (1, p + 1, p + 1) work buffer
    """
    P = zz.shape[1]
    T = np.zeros((P, P))
    for k in range(theta.shape[0]):
        T[theta_row[k], theta_col[k]] = theta[k]
    ld = _update_chunk(T, zz, zxy, 0, zz.shape[0], 0, schur_out)
    return profiled_criterion(ld, gram, schur_out, n_obs, n_fixed, reml, logdet_W)


@njit(cache=True, inline="always")
def _gradient_level(T, zz, zxy, g, P, m, TA, M, N, H, K):
    """One level of `blockdiag_gradient`, any P: N = M^{-1} T'A, H = M^{-1} T'G, K = G - A T H
    (M = T'A T + I, A = zz[g], G = zxy[g]); TA and M are work buffers."""
    _scaled_block(T, zz, zxy, g, P, m, TA, M, H)  # TA <- A T, M, H <- T'G
    for a in range(P):  # A T -> T'A = (A T)' (A symmetric)
        for b in range(a + 1, P):
            t = TA[a, b]
            TA[a, b] = TA[b, a]
            TA[b, a] = t
    chol_lower_inplace(M, P)
    for a in range(P):
        for b in range(P):
            N[a, b] = TA[a, b]
    _forward_solve(M, H, P, m)
    _forward_solve(M, N, P, P)
    _back_solve(M, H, P, m)
    _back_solve(M, N, P, P)
    # K = G - A T H, with A T = (T' A)' = TA'
    for a in range(P):
        for b in range(m):
            s = zxy[g, a, b]
            for k in range(P):
                s -= TA[k, a] * H[k, b]
            K[a, b] = s


@njit(cache=True, inline="always")
def _gradient_level_p1(T, zz, zxy, g, m, N, H, K):
    """`_gradient_level` for one random effect per level, in scalars."""
    t = T[0, 0]
    a = zz[g, 0, 0]
    inv = 1.0 / (t * t * a + 1.0)
    N[0, 0] = t * a * inv
    for b in range(m):
        G = zxy[g, 0, b]
        h = t * G * inv
        H[0, b] = h
        K[0, b] = G - a * t * h


@njit(cache=True, inline="always")
def _gradient_level_p2(T, zz, zxy, g, m, N, H, K):
    """`_gradient_level` for two random effects per level (intercept and slope), in scalars:
    M^{-1} by the closed-form inverse of a 2 x 2 matrix."""
    t00 = T[0, 0]
    t10 = T[1, 0]
    t11 = T[1, 1]
    a00 = zz[g, 0, 0]
    a01 = zz[g, 1, 0]
    a11 = zz[g, 1, 1]
    # TA = T'A
    ta00 = t00 * a00 + t10 * a01
    ta01 = t00 * a01 + t10 * a11
    ta10 = t11 * a01
    ta11 = t11 * a11
    # M = TA T + I (symmetric)
    m00 = ta00 * t00 + ta01 * t10 + 1.0
    m01 = ta01 * t11
    m11 = ta11 * t11 + 1.0
    det = m00 * m11 - m01 * m01
    i00 = m11 / det
    i01 = -m01 / det
    i11 = m00 / det
    N[0, 0] = i00 * ta00 + i01 * ta10
    N[0, 1] = i00 * ta01 + i01 * ta11
    N[1, 0] = i01 * ta00 + i11 * ta10
    N[1, 1] = i01 * ta01 + i11 * ta11
    for b in range(m):
        G0 = zxy[g, 0, b]
        G1 = zxy[g, 1, b]
        r0 = t00 * G0 + t10 * G1
        r1 = t11 * G1
        h0 = i00 * r0 + i01 * r1
        h1 = i01 * r0 + i11 * r1
        H[0, b] = h0
        H[1, b] = h1
        K[0, b] = G0 - ta00 * h0 - ta10 * h1
        K[1, b] = G1 - ta01 * h0 - ta11 * h1


@njit(cache=True, inline="always")
def _gradient_chunk(T, theta_row, theta_col, zz, zxy, Sxx_inv, v, lo, hi, c, parts_out):
    """Levels lo..hi-1 of `blockdiag_gradient`: writes the chunk's three sums per theta."""
    P = zz.shape[1]
    m = zxy.shape[2]
    p = m - 1
    n_theta = theta_row.shape[0]
    TA = np.empty((P, P))  # T' A_g
    M = np.empty((P, P))  # T' A_g T + I, then its Cholesky factor
    N = np.empty((P, P))  # M^{-1} T' A_g
    H = np.empty((P, m))  # M^{-1} T' G_g, G_g = Z_g'[X y]
    K = np.empty((P, m))  # G_g - A_g T H
    kv = np.empty(P)
    hv = np.empty(P)
    WK = np.empty((P, p))
    acc = np.zeros((n_theta, 3))
    for g in range(lo, hi):
        if P == 1:
            _gradient_level_p1(T, zz, zxy, g, m, N, H, K)
        elif P == 2:
            _gradient_level_p2(T, zz, zxy, g, m, N, H, K)
        else:
            _gradient_level(T, zz, zxy, g, P, m, TA, M, N, H, K)
        for a in range(P):
            s = 0.0
            t = 0.0
            for b in range(m):
                s += K[a, b] * v[b]
                t += H[a, b] * v[b]
            kv[a] = s
            hv[a] = t
            for b in range(p):
                s = 0.0
                for k in range(p):
                    s += Sxx_inv[b, k] * K[a, k]
                WK[a, b] = s
        for t_ in range(n_theta):
            i = theta_row[t_]
            j = theta_col[t_]
            acc[t_, 0] += N[j, i]
            s = 0.0
            for b in range(p):
                s += WK[i, b] * H[j, b]
            acc[t_, 1] += s
            acc[t_, 2] += kv[i] * hv[j]
    for t_ in range(n_theta):
        for k in range(3):
            parts_out[c, t_, k] = acc[t_, k]


@njit(parallel=True, cache=True, nogil=True)
def blockdiag_gradient(T, theta_row, theta_col, zz, zxy, Sxx_inv, v, n_chunks, parts_out):
    """Per-theta sums of the analytic gradient of the profiled criterion (one grouping factor).

    With A_g = Z_g'Z_g, G_g = Z_g'[X y], M_g = T'A_g T + I, H_g = M_g^{-1} T'G_g and
    K_g = G_g - A_g T H_g, and E = dT/dtheta_k the unit matrix at (i, j) = (theta_row[k],
    theta_col[k]), the derivative of the Schur complement S = [X y]'[X y] - sum_g G_g'T M_g^{-1}
    T'G_g is dS = -(D_k + D_k'), D_k = sum_g K_g[i]' H_g[j] (outer product of rows), and
    d log det M_g = 2 (M_g^{-1} T'A_g)[j, i]. The caller combines (see
    BlockDiagonalSystem.criterion_gradient):
        d log det(L L') = 2 sum_g N_g[j, i]                          (part 0, times 2)
        d log det S_XX  = -2 sum_g K_g[i, :p] S_XX^{-1} H_g[j, :p]'  (part 1, times -2)
        d r^2           = v'dS v = -2 sum_g (K_g[i] . v)(H_g[j] . v) (part 2, times -2)
    with v = (-beta_hat, 1).

    Parameters
    ----------
    T : (P, P) lower-triangular relative covariance factor at theta
    theta_row, theta_col : (n_theta,) int, position of each theta in T
    zz : (n_levels, P, P); zxy : (n_levels, P, p + 1)
    Sxx_inv : (p, p) inverse of the fixed-effects block of S at theta
    v : (p + 1,) (-beta_hat, 1) at theta
    n_chunks : fixed chunking over levels (`n_level_chunks`)
    parts_out : (n_chunks, n_theta, 3) float64, receives the per-chunk sums (added in chunk
        order by the caller, so the result does not depend on the thread count)
    """
    n_levels = zz.shape[0]
    per = (n_levels + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        _gradient_chunk(T, theta_row, theta_col, zz, zxy, Sxx_inv, v, c * per,
                        min(n_levels, (c + 1) * per), c, parts_out)


@njit(cache=True, nogil=True)
def blockdiag_gradient_serial(T, theta_row, theta_col, zz, zxy, Sxx_inv, v, n_chunks, parts_out):
    """`blockdiag_gradient` without a parallel region (same chunks, same numbers)."""
    n_levels = zz.shape[0]
    per = (n_levels + n_chunks - 1) // n_chunks
    for c in range(n_chunks):
        _gradient_chunk(T, theta_row, theta_col, zz, zxy, Sxx_inv, v, c * per,
                        min(n_levels, (c + 1) * per), c, parts_out)
