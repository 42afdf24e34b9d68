"""GLMMs with one grouping factor: PIRLS, the Laplace approximation and adaptive Gauss-Hermite
quadrature, level by level.

With one grouping factor the conditional modes of different levels do not interact: for fixed
(theta, beta) the penalized deviance is a sum over levels,

    d(u) = sum_g d_g(u_g),   d_g(u_g) = sum_{i in g} dev_i(y_i, linkinv(eta_i)) + ||u_g||^2,
    eta_i = eta_fixed_i + z_i' T u_g,

(eta_fixed = offset + X beta, T the lower-triangular relative covariance factor, the same for
every level), and the PIRLS system T'Z'WZ T + I is block diagonal with one P x P block per
level. The rows are grouped by level: the caller sorts them once, and ``indptr`` (n_levels + 1)
gives level g the rows indptr[g]..indptr[g+1]-1, so each level's rows are contiguous in memory
and are read again while still in cache. Everything here is one pass over those rows per
iteration.

A PIRLS step at a linearization point eta_lin (mu, the working weights w, the working
residuals wres at eta_lin; z_i = (eta_lin_i - eta_fixed_i) + wres_i the working response, as
lme4's glmResp::wrkResp) solves

    (T'Z_g'W Z_g T + I) u_new = T'Z_g'W z            (the new u, not an increment: lme4's solveU)

which for eta_lin = eta_fixed + Z T u is the Fisher-scoring step u + (T'Z'WZT + I)^{-1}
(T'Z'W wres - u). The Laplace approximation of -2 log-likelihood at (theta, beta) is

    dev(u*) + ||u*||^2 + log det(T'Z'W Z T + I) + c        (c: `glm_aic_constant`)

which is lme4's glmResp::Laplace = ldL2 + sqrL + aic (aic = dev + c).

Two kernels find the modes:

* `blockdiag_laplace`: every level on its own until its own d_g has converged (a tight
  tolerance is cheap: each level's Newton iteration converges quadratically and its rows stay
  in cache); the determinant uses the weights at the final modes. The exact Laplace value.
* `blockdiag_pirls`: glmer's pwrssUpdate (uOnly, nAGQ >= 1) step for step: all levels take
  their steps together, the convergence test, the step halving and its failure are those of
  lme4 on the *total* penalized deviance, the first linearization may be at a given eta (glmer
  restarts every evaluation of its objective from the same lp0), and the determinant is taken
  where lme4 takes it: with the weights at the iterate *before* the last step. lme4 stops at a
  relative change of 1e-7 (tolPwrss) in the penalized deviance, where these weights, and so
  lme4's objective, still differ from the converged ones at ~1e-7 relative: to reproduce
  glmer's numbers to many digits, use this one with glmer's start and tolerance.

`blockdiag_agq` then computes glmerAGQ's adaptive Gauss-Hermite quadrature for one scalar
random effect (P = 1) at given modes.

Determinism: levels are independent and each level's rows are summed in row order, so
per-level results never depend on the threads. The levels are cut into a fixed number of
contiguous chunks of about LEVEL_CHUNK_ROWS rows (a function of indptr only, see
`glmm_level_chunks`), each chunk sums its levels' contributions in double-double, and the
chunks are added in order: totals are bit-identical for any thread count and between the
parallel and the ``_serial`` kernels.
"""
import math

import numpy as np
from numba import njit, prange

from .dense import chol_lower_inplace
from .glm import CLOGLOG, PROBIT, _dd_add, _dd_add_dd, _dev_resid, _link, _variance, row_derivatives

LEVEL_CHUNK_ROWS = 16384  # target rows per level chunk
MAX_LEVEL_CHUNKS = 256
MAX_HALVINGS = 20  # lme4's maxstephalfit
NEWTON_POLISH_STEPS = 4  # observed-information steps after Fisher scoring (probit, cloglog)

# blockdiag_pirls status codes
PIRLS_CONVERGED = 0
PIRLS_MAXIT = 1  # "pwrssUpdate did not converge in (maxit) iterations"
PIRLS_NAN = 2  # "PIRLS loop resulted in NaN value"
PIRLS_HALVING_FAILED = 3  # "(maxstephalfit) PIRLS step-halvings failed to reduce deviance"

_SQRT_2PI = math.sqrt(2.0 * math.pi)
_DBL_MAX = 1.7976931348623157e308  # lme4's sqrt2pi = std::sqrt(2. * M_PI)


@njit(cache=True, nogil=True)
def glmm_level_chunks(indptr):
    """The fixed chunks of levels of the kernels here.

    Parameters
    ----------
    indptr : (n_levels + 1,) int64, row ranges of the levels (indptr[0] = 0)

    Returns
    -------
    bounds : (n_chunks + 1,) int64, chunk c holds levels bounds[c]..bounds[c+1]-1, where
        n_chunks = min(MAX_LEVEL_CHUNKS, n_levels, ceil(n / LEVEL_CHUNK_ROWS)) (at least 1)
        and chunk c starts at the first level whose first row is >= c n / n_chunks
    """
    n_levels = indptr.shape[0] - 1
    n = indptr[n_levels]
    nc = (n + LEVEL_CHUNK_ROWS - 1) // LEVEL_CHUNK_ROWS
    nc = max(1, min(MAX_LEVEL_CHUNKS, min(nc, n_levels)))
    bounds = np.empty(nc + 1, np.int64)
    bounds[0] = 0
    bounds[nc] = n_levels
    g = 0
    for c in range(1, nc):
        target = (n * c) // nc
        while g < n_levels and indptr[g] < target:
            g += 1
        bounds[c] = g
    return bounds


@njit(cache=True, nogil=True)
def level_order(codes, indptr_out, order_out):
    """The rows sorted stably by level: a counting sort, O(n + n_levels) (np.argsort(codes,
    kind="stable") gives the same order in O(n log n) on rows not in level order).

    Parameters
    ----------
    codes : (n,) integer, level codes 0..n_levels-1
    indptr_out : (n_levels + 1,) int64, receives the row ranges of the levels
    order_out : (n,) int64, receives the sorted rows: sorted row i is row order_out[i]

    Returns
    -------
    in_order : bool, whether the rows already were in level order (order_out the identity)
    """
    n = codes.shape[0]
    n_levels = indptr_out.shape[0] - 1
    for g in range(n_levels + 1):
        indptr_out[g] = 0
    in_order = True
    for i in range(n):
        indptr_out[codes[i] + 1] += 1
        if i > 0 and codes[i] < codes[i - 1]:
            in_order = False
    for g in range(n_levels):
        indptr_out[g + 1] += indptr_out[g]
    if in_order:
        for i in range(n):
            order_out[i] = i
        return True
    nxt = indptr_out[:n_levels].copy()
    for i in range(n):
        g = codes[i]
        order_out[nxt[g]] = i
        nxt[g] += 1
    return False


# --------------------------------------------------------------------------------------
# one level
# --------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _tu(T, u, v, P):
    """v <- T u (T lower triangular)."""
    for a in range(P):
        s = 0.0
        for k in range(a + 1):
            s += T[a, k] * u[k]
        v[a] = s


@njit(cache=True, nogil=True)
def _eval_level(s, e, eta_fixed, Z, unit_z, y, prior_w, family, link, v, eta_lin, use_lin,
                with_cross, with_dev, A, r):
    """Rows s..e-1 of one level at eta = eta_fixed + z'v (or eta_lin when use_lin).

    Returns the level's deviance (hi, lo) (0 unless with_dev); when with_cross, A (P x P, lower
    triangle) <- Z_g'W Z_g and r (P) <- Z_g'W z with z = (eta - eta_fixed) + wres.
    """
    P = A.shape[0]
    hi = 0.0
    lo = 0.0
    if P == 1:
        z = 1.0
        v0 = v[0]
        a00 = 0.0
        r0 = 0.0
        for i in range(s, e):
            ef = eta_fixed[i]
            if not unit_z:
                z = Z[i, 0]
            eta = eta_lin[i] if use_lin else ef + z * v0
            mu, me = _link(eta, link)
            pw = prior_w[i]
            if with_dev:
                hi, lo = _dd_add(hi, lo, _dev_resid(y[i], mu, pw, family))
            if with_cross:
                sw = me * math.sqrt(pw / _variance(mu, family))
                w = sw * sw
                zr = (eta - ef) + (y[i] - mu) / me
                wz = z * w
                a00 += wz * z
                r0 += wz * zr
        if with_cross:
            A[0, 0] = a00
            r[0] = r0
        return hi, lo
    if with_cross:
        for a in range(P):
            r[a] = 0.0
            for b in range(P):
                A[a, b] = 0.0
    for i in range(s, e):
        ef = eta_fixed[i]
        if use_lin:
            eta = eta_lin[i]
        elif unit_z:
            eta = ef + v[0]
        else:
            acc = 0.0
            for a in range(P):
                acc += Z[i, a] * v[a]
            eta = ef + acc
        mu, me = _link(eta, link)
        pw = prior_w[i]
        if with_dev:
            hi, lo = _dd_add(hi, lo, _dev_resid(y[i], mu, pw, family))
        if with_cross:
            sw = me * math.sqrt(pw / _variance(mu, family))
            w = sw * sw
            zr = (eta - ef) + (y[i] - mu) / me
            if unit_z:
                A[0, 0] += w
                r[0] += w * zr
            else:
                for a in range(P):
                    wz = Z[i, a] * w
                    r[a] += wz * zr
                    for b in range(a + 1):
                        A[a, b] += wz * Z[i, b]
    return hi, lo


@njit(cache=True, nogil=True)
def _system(T, A, r, M, rhs, W, P):
    """M <- T'AT + I (A: lower triangle of a symmetric matrix) and rhs <- T'r; W is a P x P
    work buffer."""
    for k in range(P):
        for b in range(P):
            s = 0.0
            for l_ in range(b, P):
                s += (A[k, l_] if k >= l_ else A[l_, k]) * T[l_, b]
            W[k, b] = s  # (A T)[k, b]
    for a in range(P):
        for b in range(P):
            s = 0.0
            for k in range(a, P):
                s += T[k, a] * W[k, b]
            M[a, b] = s
        M[a, a] += 1.0
    for a in range(P):
        s = 0.0
        for k in range(a, P):
            s += T[k, a] * r[k]
        rhs[a] = s


@njit(cache=True, nogil=True)
def _chol_solve(M, rhs, u, P):
    """M holds the lower Cholesky factor L (upper triangle zero): u <- (L L')^{-1} rhs."""
    for a in range(P):
        s = rhs[a]
        for k in range(a):
            s -= M[a, k] * u[k]
        u[a] = s / M[a, a]
    for a in range(P - 1, -1, -1):
        s = u[a]
        for k in range(a + 1, P):
            s -= M[k, a] * u[k]
        u[a] = s / M[a, a]


@njit(cache=True, nogil=True)
def _factor(T, A, r, M, rhs, W, P):
    """M <- chol(T'AT + I), rhs <- T'r; returns log det (nan if not positive definite)."""
    if P == 1:
        t = T[0, 0]
        m = t * t * A[0, 0] + 1.0
        rhs[0] = t * r[0]
        if not m > 0.0:
            return np.nan
        M[0, 0] = math.sqrt(m)
        return 2.0 * math.log(M[0, 0])
    _system(T, A, r, M, rhs, W, P)
    return chol_lower_inplace(M, P)


@njit(cache=True, inline="always")
def _sqnorm(u, P):
    s = 0.0
    for a in range(P):
        s += u[a] * u[a]
    return s


@njit(cache=True, nogil=True)
def _newton_level(g, indptr, eta_fixed, Z, unit_z, y, prior_w, T, family, link, eta_start,
                  use_start, u_inout, L_out, tol, max_iter, ucur, unew, v, A, r, An, rn, M, rhs, W,
                  step_tol=0.0):
    """Penalized IRLS for level g on its own (see `blockdiag_laplace`).

    step_tol > 0 (a warm start, not from eta_start): the level has also converged when the
    next full step would move u by at most step_tol (1 + |u|) in every coordinate; u is then
    kept without evaluating the step (the pass it would cost). step_tol = 0: `blockdiag_laplace`'s
    rule only.

    Returns (dev_hi, dev_lo, ||u||^2, log det, converged, iterations)."""
    P = T.shape[0]
    s = indptr[g]
    e = indptr[g + 1]
    for a in range(P):
        ucur[a] = u_inout[g, a]
    if use_start:
        _eval_level(s, e, eta_fixed, Z, unit_z, y, prior_w, family, link, v, eta_start, True,
                    True, False, A, r)
        dh = np.nan
        dl = 0.0
        d = np.inf  # the first step is taken whatever it gives (as lme4's)
    else:
        _tu(T, ucur, v, P)
        dh, dl = _eval_level(s, e, eta_fixed, Z, unit_z, y, prior_w, family, link, v, eta_start,
                             False, True, True, A, r)
        d = (dh + _sqnorm(ucur, P)) + dl
    it = 0
    conv = False
    while it < max_iter:
        it += 1
        ld = _factor(T, A, r, M, rhs, W, P)
        if ld != ld:
            break
        _chol_solve(M, rhs, unew, P)
        if step_tol > 0.0 and not use_start:
            small = True
            for a in range(P):
                if not abs(unew[a] - ucur[a]) <= step_tol * (1.0 + abs(ucur[a])):
                    small = False
            if small:  # the mode is u to ~step_tol: A, r, dh, dl are those at u
                conv = True
                break
        _tu(T, unew, v, P)
        nh, nl = _eval_level(s, e, eta_fixed, Z, unit_z, y, prior_w, family, link, v, eta_start,
                             False, True, True, An, rn)
        dn = (nh + _sqnorm(unew, P)) + nl
        h = 0
        while (dn != dn or dn - d > tol * (1.0 + abs(d))) and h < MAX_HALVINGS:
            for a in range(P):
                unew[a] = (ucur[a] + unew[a]) / 2.0
            _tu(T, unew, v, P)
            nh, nl = _eval_level(s, e, eta_fixed, Z, unit_z, y, prior_w, family, link, v,
                                 eta_start, False, True, True, An, rn)
            dn = (nh + _sqnorm(unew, P)) + nl
            h += 1
        if dn != dn or dn - d > tol * (1.0 + abs(d)):
            break
        conv = abs(d - dn) <= tol * (1.0 + abs(dn))
        for a in range(P):
            ucur[a] = unew[a]
            rn_a = rn[a]
            rn[a] = r[a]
            r[a] = rn_a
            for b in range(P):
                x = An[a, b]
                An[a, b] = A[a, b]
                A[a, b] = x
        d = dn
        dh = nh
        dl = nl
        if conv:
            break
    if conv and P == 1 and (link == PROBIT or link == CLOGLOG):
        # Fisher scoring converges only linearly for these links: it stops ~sqrt(tol) from
        # the mode. Newton steps on the observed information (dev'' instead of the working
        # weight) finish quadratically, so the exact Laplace value is smooth in the parameters
        t = T[0, 0]
        for _k in range(NEWTON_POLISH_STEPS):
            u0 = ucur[0]
            gsum = 2.0 * u0
            hsum = 2.0
            for i in range(s, e):
                z = 1.0 if unit_z else Z[i, 0]
                d1, d2, _w, _w1 = row_derivatives(eta_fixed[i] + t * z * u0, y[i], prior_w[i],
                                                  family, link)
                gsum += d1 * t * z
                hsum += d2 * t * t * z * z
            if not hsum > 0.0:
                break
            step = -gsum / hsum
            if abs(step) <= 1e-15 * (1.0 + abs(u0)):
                break
            unew[0] = u0 + step
            _tu(T, unew, v, P)
            nh, nl = _eval_level(s, e, eta_fixed, Z, unit_z, y, prior_w, family, link, v,
                                 eta_start, False, True, True, An, rn)
            dn = (nh + unew[0] * unew[0]) + nl
            if not dn <= d + 1e-13 * (1.0 + abs(d)):
                break
            ucur[0] = unew[0]
            rn_a = rn[0]
            rn[0] = r[0]
            r[0] = rn_a
            x = An[0, 0]
            An[0, 0] = A[0, 0]
            A[0, 0] = x
            d = dn
            dh = nh
            dl = nl
    # the factor with the weights at the final u (A, r hold the cross-products there)
    ld = _factor(T, A, r, M, rhs, W, P)
    for a in range(P):
        u_inout[g, a] = ucur[a]
        for b in range(P):
            L_out[g, a, b] = M[a, b] if b <= a else 0.0
    return dh, dl, _sqnorm(ucur, P), ld, conv, it


@njit(cache=True, nogil=True)
def _laplace_chunk(lo_g, hi_g, indptr, eta_fixed, Z, unit_z, y, prior_w, T, family, link,
                   eta_start, use_start, u_inout, L_out, tol, max_iter):
    P = T.shape[0]
    ucur = np.empty(P)
    unew = np.empty(P)
    v = np.empty(P)
    A = np.zeros((P, P))
    r = np.zeros(P)
    An = np.zeros((P, P))
    rn = np.zeros(P)
    M = np.zeros((P, P))
    rhs = np.empty(P)
    W = np.empty((P, P))
    dev_h = 0.0
    dev_l = 0.0
    u2_h = 0.0
    u2_l = 0.0
    ld_h = 0.0
    ld_l = 0.0
    n_fail = 0
    max_it = 0
    for g in range(lo_g, hi_g):
        dh, dl, u2, ld, conv, it = _newton_level(g, indptr, eta_fixed, Z, unit_z, y, prior_w, T,
                                                 family, link, eta_start, use_start, u_inout,
                                                 L_out, tol, max_iter, ucur, unew, v, A, r, An,
                                                 rn, M, rhs, W)
        dev_h, dev_l = _dd_add_dd(dev_h, dev_l, dh, dl)
        u2_h, u2_l = _dd_add(u2_h, u2_l, u2)
        ld_h, ld_l = _dd_add(ld_h, ld_l, ld)
        if not conv:
            n_fail += 1
        if it > max_it:
            max_it = it
    return dev_h, dev_l, u2_h, u2_l, ld_h, ld_l, n_fail, max_it


@njit(cache=True, nogil=True)
def _combine(sums, n_chunks):
    """Adds the per-chunk double-doubles sums[c] = (dev_h, dev_l, u2_h, u2_l, ld_h, ld_l) in
    chunk order; returns (dev_hi, dev_lo, u2, logdet)."""
    dh = 0.0
    dl = 0.0
    uh = 0.0
    ul = 0.0
    lh = 0.0
    ll = 0.0
    for c in range(n_chunks):
        dh, dl = _dd_add_dd(dh, dl, sums[c, 0], sums[c, 1])
        uh, ul = _dd_add_dd(uh, ul, sums[c, 2], sums[c, 3])
        lh, ll = _dd_add_dd(lh, ll, sums[c, 4], sums[c, 5])
    return dh, dl, uh + ul, lh + ll


@njit(parallel=True, cache=True, nogil=True)
def blockdiag_laplace(indptr, eta_fixed, Z, unit_z, y, prior_w, T, family, link, eta_start,
                      u_inout, L_out, tol, max_iter):
    """Conditional modes, level by level, and the pieces of the Laplace approximation.

    For each level g on its own, penalized IRLS (Fisher scoring) for the mode of
    d_g(u) = sum_{i in g} dev_i + ||u||^2: each step solves (T'Z_g'W Z_g T + I) u_new =
    T'Z_g'W z at the current iterate (see the module docstring), with step halving (u_new <-
    (u + u_new)/2, at most 20 times) while d_g(u_new) > d_g(u) + tol (1 + |d_g(u)|) or is nan.

    Convergence: level g has converged after a step that changed d_g by at most
    tol * (1 + |d_g|) (relative and absolute). For the probit and cloglog links with one
    random-effect column, where Fisher scoring converges only linearly, up to
    NEWTON_POLISH_STEPS Newton steps on the observed information (dev'') then finish the mode
    (each kept only if d_g does not rise beyond rounding); L_out still has the working weights. Newton's convergence is quadratic, so the
    modes are then accurate to ~tol (not sqrt(tol)): tol = 1e-12 gives the Laplace value to
    ~1e-12 per level, at one extra iteration over tol = 1e-8. Levels whose halving fails, or
    that reach max_iter, keep their last accepted iterate and are counted as not converged.

    Parameters
    ----------
    indptr : (n_levels + 1,) int64, level g has rows indptr[g]..indptr[g+1]-1
    eta_fixed : (n,) float64, offset + X beta, rows sorted by level
    Z : (n, P) float64, random-effects columns (ignored when unit_z; may be (0, 1))
    unit_z : bool, P = 1 and the column is the intercept
    y : (n,) float64, response (binomial: proportion); prior_w : (n,) float64, prior weights
    T : (P, P) float64, lower-triangular relative covariance factor (Lambda's block)
    family, link : int, family and link ids (kernels.glm)
    eta_start : (n,) float64, or shape (0,): the linearization point of each level's first
        step (glmer's lp0: the first step is then taken whatever it gives, halving toward
        u_inout only if it is nan); shape (0,): start at u_inout (warm start: the first step
        must decrease d_g, a level already at its mode converges in one step)
    u_inout : (n_levels, P) float64, start (see eta_start); receives the modes
    L_out : (n_levels, P, P) float64, receives the lower Cholesky factor of
        T'Z_g'W Z_g T + I with W at the final modes (upper triangle zero)
    tol : float, convergence tolerance (see above)
    max_iter : int, maximum number of steps per level

    Returns
    -------
    (dev_hi, dev_lo, u2, logdet, n_unconverged, max_iterations) :
        dev_hi + dev_lo: the deviance at the modes (double-double); u2: sum_g ||u_g||^2;
        logdet: sum_g log det(T'Z_g'W Z_g T + I) = 2 sum log diag L; the number of levels
        that did not converge; the largest number of steps a level took. The Laplace
        -2 log-likelihood is dev + u2 + logdet + c (c from `glm_aic_constant`).
    """
    n_levels = indptr.shape[0] - 1
    bounds = glmm_level_chunks(indptr)
    n_chunks = bounds.shape[0] - 1
    sums = np.zeros((n_chunks, 6))
    counts = np.zeros((n_chunks, 2), np.int64)
    use_start = eta_start.shape[0] > 0
    for c in prange(n_chunks):
        out = _laplace_chunk(bounds[c], bounds[c + 1], indptr, eta_fixed, Z, unit_z, y, prior_w,
                             T, family, link, eta_start, use_start, u_inout, L_out, tol,
                             max_iter)
        sums[c, 0] = out[0]
        sums[c, 1] = out[1]
        sums[c, 2] = out[2]
        sums[c, 3] = out[3]
        sums[c, 4] = out[4]
        sums[c, 5] = out[5]
        counts[c, 0] = out[6]
        counts[c, 1] = out[7]
    dh, dl, u2, ld = _combine(sums, n_chunks)
    n_fail = 0
    max_it = 0
    for c in range(n_chunks):
        n_fail += counts[c, 0]
        max_it = max(max_it, counts[c, 1])
    if n_levels == 0:
        return 0.0, 0.0, 0.0, 0.0, 0, 0
    return dh, dl, u2, ld, n_fail, max_it


@njit(cache=True, nogil=True)
def blockdiag_laplace_serial(indptr, eta_fixed, Z, unit_z, y, prior_w, T, family, link,
                             eta_start, u_inout, L_out, tol, max_iter):
    """`blockdiag_laplace` without a parallel region (same chunks, same bits)."""
    n_levels = indptr.shape[0] - 1
    bounds = glmm_level_chunks(indptr)
    n_chunks = bounds.shape[0] - 1
    sums = np.zeros((n_chunks, 6))
    use_start = eta_start.shape[0] > 0
    n_fail = 0
    max_it = 0
    for c in range(n_chunks):
        out = _laplace_chunk(bounds[c], bounds[c + 1], indptr, eta_fixed, Z, unit_z, y, prior_w,
                             T, family, link, eta_start, use_start, u_inout, L_out, tol,
                             max_iter)
        sums[c, 0] = out[0]
        sums[c, 1] = out[1]
        sums[c, 2] = out[2]
        sums[c, 3] = out[3]
        sums[c, 4] = out[4]
        sums[c, 5] = out[5]
        n_fail += out[6]
        max_it = max(max_it, out[7])
    dh, dl, u2, ld = _combine(sums, n_chunks)
    if n_levels == 0:
        return 0.0, 0.0, 0.0, 0.0, 0, 0
    return dh, dl, u2, ld, n_fail, max_it


# --------------------------------------------------------------------------------------
# glmer's schedule
# --------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _pirls_cross_chunk(lo_g, hi_g, indptr, eta_fixed, Z, unit_z, y, prior_w, T, family, link,
                       eta_start, use_start, u_old, A_buf, r_buf):
    """Cross-products at the first linearization point (eta_start, or u_old)."""
    P = T.shape[0]
    v = np.empty(P)
    A = np.zeros((P, P))
    r = np.zeros(P)
    for g in range(lo_g, hi_g):
        if not use_start:
            _tu(T, u_old[g], v, P)
        _eval_level(indptr[g], indptr[g + 1], eta_fixed, Z, unit_z, y, prior_w, family, link, v,
                    eta_start, use_start, True, False, A, r)
        for a in range(P):
            r_buf[g, a] = r[a]
            for b in range(P):
                A_buf[g, a, b] = A[a, b]


@njit(cache=True, nogil=True)
def _pirls_step_chunk(lo_g, hi_g, indptr, eta_fixed, Z, unit_z, y, prior_w, T, family, link,
                      eta_start, A_buf, r_buf, L_out, u_prop, halve, u_old, sums, c):
    """One step for levels lo_g..hi_g-1: unless halve, factor the system in A_buf, r_buf into
    L_out and solve for u_prop; if halve, u_prop <- (u_old + u_prop)/2. Then evaluate at
    u_prop: deviance and ||u||^2 into sums[c, 0:4] (and, with the factors, log det into
    sums[c, 4:6]), and the cross-products there into A_buf, r_buf."""
    P = T.shape[0]
    v = np.empty(P)
    A = np.zeros((P, P))
    r = np.zeros(P)
    M = np.zeros((P, P))
    rhs = np.empty(P)
    W = np.empty((P, P))
    u = np.empty(P)
    dh = 0.0
    dl = 0.0
    uh = 0.0
    ul = 0.0
    lh = 0.0
    ll = 0.0
    for g in range(lo_g, hi_g):
        if halve:
            for a in range(P):
                u[a] = (u_old[g, a] + u_prop[g, a]) / 2.0
        else:
            for a in range(P):
                r[a] = r_buf[g, a]
                for b in range(P):
                    A[a, b] = A_buf[g, a, b]
            ld = _factor(T, A, r, M, rhs, W, P)
            lh, ll = _dd_add(lh, ll, ld)
            for a in range(P):
                for b in range(P):
                    L_out[g, a, b] = M[a, b] if b <= a else 0.0
            _chol_solve(M, rhs, u, P)
        for a in range(P):
            u_prop[g, a] = u[a]
        _tu(T, u, v, P)
        h, l_ = _eval_level(indptr[g], indptr[g + 1], eta_fixed, Z, unit_z, y, prior_w, family,
                            link, v, eta_start, False, True, True, A, r)
        dh, dl = _dd_add_dd(dh, dl, h, l_)
        uh, ul = _dd_add(uh, ul, _sqnorm(u, P))
        for a in range(P):
            r_buf[g, a] = r[a]
            for b in range(P):
                A_buf[g, a, b] = A[a, b]
    sums[c, 0] = dh
    sums[c, 1] = dl
    sums[c, 2] = uh
    sums[c, 3] = ul
    if not halve:
        sums[c, 4] = lh
        sums[c, 5] = ll


@njit(cache=True, nogil=True)
def _pdev(sums, n_chunks):
    """lme4's pdev = resDev() + sqrL(1.), from the chunk sums (dev, u2 in double-double)."""
    dh, dl, u2, _ld = _combine(sums, n_chunks)
    return dh + (u2 + dl)


@njit(parallel=True, cache=True, nogil=True)
def blockdiag_pirls(indptr, eta_fixed, Z, unit_z, y, prior_w, T, family, link, eta_start,
                    u_inout, L_out, tol, max_iter):
    """glmer's PIRLS for the modes (pwrssUpdate with uOnly, the nAGQ >= 1 objective), exactly.

    Every iteration, every level g takes the step (T'Z_g'W Z_g T + I) u_prop = T'Z_g'W z at the
    current linearization point (the first: eta_start, if given; then the last accepted
    u), writing the factor of T'Z_g'W Z_g T + I into L_out[g]. With pdev = deviance(u_prop) +
    ||u_prop||^2 summed over all levels and oldpdev the previous one (DBL_MAX at first):

    * |(oldpdev - pdev) / pdev| < tol: converged, u_prop is the result;
    * else, while pdev is nan or pdev > oldpdev (at most 20 times): u_prop <- (u_old +
      u_prop) / 2 for all levels (u_old: the last accepted u; at the first iteration
      u_inout) and pdev recomputed (the factors are not recomputed, as in lme4); then a nan
      stops with PIRLS_NAN and pdev - oldpdev > tol with PIRLS_HALVING_FAILED;
    * u_old <- u_prop, oldpdev <- pdev, next iteration (at most max_iter: PIRLS_MAXIT).

    So at convergence L_out holds the factors with the weights at the iterate *before* the
    last step, the u that lme4's ldL2 and its AGQ scale 1/L use (see the module docstring).
    glmer's defaults: tol = glmerControl's tolPwrss = 1e-7, max_iter = 100 (mkdevfun's
    maxit), and eta_start = lp0, the linear predictor glmer keeps from its
    start/previous stage (its objective restarts from there at each evaluation).

    Parameters
    ----------
    indptr, eta_fixed, Z, unit_z, y, prior_w, T, family, link : as `blockdiag_laplace`
    eta_start : (n,) float64 or (0,): the first linearization point (rows sorted by level);
        (0,): eta_fixed + Z T u_inout
    u_inout : (n_levels, P) float64, the start (and the target of a step halving at the first
        iteration); receives the final u
    L_out : (n_levels, P, P) float64, receives the factors of the last step (see above)
    tol : float, relative tolerance on the penalized deviance (lme4's tolPwrss)
    max_iter : int, maximum number of iterations (lme4's maxit)

    Returns
    -------
    (dev_hi, dev_lo, u2, logdet, status, iterations) : the deviance at the final u
        (double-double), sum ||u_g||^2, log det from L_out (lme4's ldL2), a PIRLS_* status,
        the number of iterations. lme4's Laplace objective is logdet + u2 + dev + c.
    """
    n_levels = indptr.shape[0] - 1
    P = T.shape[0]
    bounds = glmm_level_chunks(indptr)
    n_chunks = bounds.shape[0] - 1
    sums = np.zeros((n_chunks, 6))
    use_start = eta_start.shape[0] > 0
    u_old = u_inout.copy()
    u_prop = np.zeros((n_levels, P))
    A_buf = np.zeros((n_levels, P, P))
    r_buf = np.zeros((n_levels, P))
    for c in prange(n_chunks):
        _pirls_cross_chunk(bounds[c], bounds[c + 1], indptr, eta_fixed, Z, unit_z, y, prior_w, T,
                           family, link, eta_start, use_start, u_old, A_buf, r_buf)
    oldpdev = _DBL_MAX
    status = PIRLS_MAXIT
    it = 0
    while it < max_iter:
        it += 1
        for c in prange(n_chunks):
            _pirls_step_chunk(bounds[c], bounds[c + 1], indptr, eta_fixed, Z, unit_z, y, prior_w,
                              T, family, link, eta_start, A_buf, r_buf, L_out, u_prop, False,
                              u_old, sums, c)
        pdev = _pdev(sums, n_chunks)
        if abs((oldpdev - pdev) / pdev) < tol:
            status = PIRLS_CONVERGED
            break
        if pdev != pdev or pdev > oldpdev:
            k = 0
            while k < MAX_HALVINGS and (pdev != pdev or pdev > oldpdev):
                for c in prange(n_chunks):
                    _pirls_step_chunk(bounds[c], bounds[c + 1], indptr, eta_fixed, Z, unit_z, y,
                                      prior_w, T, family, link, eta_start, A_buf, r_buf, L_out,
                                      u_prop, True, u_old, sums, c)
                pdev = _pdev(sums, n_chunks)
                k += 1
            if pdev != pdev:
                status = PIRLS_NAN
                break
            if pdev - oldpdev > tol:
                status = PIRLS_HALVING_FAILED
                break
        oldpdev = pdev
        for g in range(n_levels):
            for a in range(P):
                u_old[g, a] = u_prop[g, a]
    for g in range(n_levels):
        for a in range(P):
            u_inout[g, a] = u_prop[g, a]
    dh, dl, u2, ld = _combine(sums, n_chunks)
    return dh, dl, u2, ld, status, it


@njit(cache=True, nogil=True)
def blockdiag_pirls_serial(indptr, eta_fixed, Z, unit_z, y, prior_w, T, family, link, eta_start,
                           u_inout, L_out, tol, max_iter):
    """`blockdiag_pirls` without a parallel region (same chunks, same bits)."""
    n_levels = indptr.shape[0] - 1
    P = T.shape[0]
    bounds = glmm_level_chunks(indptr)
    n_chunks = bounds.shape[0] - 1
    sums = np.zeros((n_chunks, 6))
    use_start = eta_start.shape[0] > 0
    u_old = u_inout.copy()
    u_prop = np.zeros((n_levels, P))
    A_buf = np.zeros((n_levels, P, P))
    r_buf = np.zeros((n_levels, P))
    for c in range(n_chunks):
        _pirls_cross_chunk(bounds[c], bounds[c + 1], indptr, eta_fixed, Z, unit_z, y, prior_w, T,
                           family, link, eta_start, use_start, u_old, A_buf, r_buf)
    oldpdev = _DBL_MAX
    status = PIRLS_MAXIT
    it = 0
    while it < max_iter:
        it += 1
        for c in range(n_chunks):
            _pirls_step_chunk(bounds[c], bounds[c + 1], indptr, eta_fixed, Z, unit_z, y, prior_w,
                              T, family, link, eta_start, A_buf, r_buf, L_out, u_prop, False,
                              u_old, sums, c)
        pdev = _pdev(sums, n_chunks)
        if abs((oldpdev - pdev) / pdev) < tol:
            status = PIRLS_CONVERGED
            break
        if pdev != pdev or pdev > oldpdev:
            k = 0
            while k < MAX_HALVINGS and (pdev != pdev or pdev > oldpdev):
                for c in range(n_chunks):
                    _pirls_step_chunk(bounds[c], bounds[c + 1], indptr, eta_fixed, Z, unit_z, y,
                                      prior_w, T, family, link, eta_start, A_buf, r_buf, L_out,
                                      u_prop, True, u_old, sums, c)
                pdev = _pdev(sums, n_chunks)
                k += 1
            if pdev != pdev:
                status = PIRLS_NAN
                break
            if pdev - oldpdev > tol:
                status = PIRLS_HALVING_FAILED
                break
        oldpdev = pdev
        for g in range(n_levels):
            for a in range(P):
                u_old[g, a] = u_prop[g, a]
    for g in range(n_levels):
        for a in range(P):
            u_inout[g, a] = u_prop[g, a]
    dh, dl, u2, ld = _combine(sums, n_chunks)
    return dh, dl, u2, ld, status, it


# --------------------------------------------------------------------------------------
# adaptive Gauss-Hermite quadrature (one scalar random effect)
# --------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _agq_chunk(lo_g, hi_g, indptr, eta_fixed, Z, unit_z, y, prior_w, t, family, link, u_mode,
               L_diag, gh_z, gh_w, gh_ldnorm, out):
    v = np.empty(1)
    A = np.zeros((1, 1))
    r = np.zeros(1)
    hi = 0.0
    lo = 0.0
    for g in range(lo_g, hi_g):
        s = indptr[g]
        e = indptr[g + 1]
        um = u_mode[g]
        v[0] = t * um
        h0, l0 = _eval_level(s, e, eta_fixed, Z, unit_z, y, prior_w, family, link, v, eta_fixed,
                             False, False, True, A, r)
        h0, l0 = _dd_add(h0, l0, um * um)  # devc0: deviance + u^2 at the mode
        sd = 1.0 / L_diag[g]
        mult = 0.0
        for k in range(gh_z.shape[0]):
            zk = gh_z[k]
            if zk == 0.0:
                mult += gh_w[k]
                continue
            uk = zk * sd + um
            v[0] = t * uk
            h, l_ = _eval_level(s, e, eta_fixed, Z, unit_z, y, prior_w, family, link, v,
                                eta_fixed, False, False, True, A, r)
            h, l_ = _dd_add(h, l_, uk * uk)
            diff = (h - h0) + (l_ - l0)
            mult += math.exp(-0.5 * diff - gh_ldnorm[k]) * gh_w[k] / _SQRT_2PI
        val = (h0 + l0) + 2.0 * math.log(L_diag[g]) - 2.0 * math.log(mult)
        out[g] = val
        hi, lo = _dd_add(hi, lo, val)
    return hi, lo


@njit(parallel=True, cache=True, nogil=True)
def blockdiag_agq(indptr, eta_fixed, Z, unit_z, y, prior_w, t, family, link, u_mode, L_diag,
                  gh_z, gh_w, gh_ldnorm, out):
    """Adaptive Gauss-Hermite quadrature for one scalar random effect, as lme4's glmerAGQ.

    Per level g, with D_g(u) = sum_{i in g} dev_i(eta_fixed_i + z_i t u) + u^2, the mode u_g,
    sd_g = 1 / L_diag[g] and the rule (z_k, w_k, ldnorm_k) (`gauss_hermite_rule`):

        mult_g = sum_k w_k                                                    if z_k == 0
                       exp(-(D_g(u_g + z_k sd_g) - D_g(u_g)) / 2 - ldnorm_k) w_k / sqrt(2 pi)
        out[g] = D_g(u_g) + 2 log L_diag[g] - 2 log mult_g

    the quadrature of -2 log of the integral over u of exp(-D_g(u)/2) / sqrt(2 pi). lme4
    returns sum_g out[g] (as devc0.sum() + ldL2 - 2 log(prod mult), without the constant c of
    the family's aic); the -2 log-likelihood is that plus c (`glm_aic_constant`). With one
    node (z = 0, w = 1) mult = 1 and the value is the Laplace one (dev + u2 + logdet) exactly.
    D_g is summed in double-double and differenced as such (lme4 sums naively).

    Parameters
    ----------
    indptr, eta_fixed, Z, unit_z, y, prior_w, family, link : as `blockdiag_laplace` (P = 1)
    t : float, the relative standard deviation T[0, 0]
    u_mode : (n_levels,) float64, the conditional modes (from blockdiag_pirls/laplace)
    L_diag : (n_levels,) float64, the factors sqrt(t^2 Z_g'W Z_g + 1) (L_out[:, 0, 0]; lme4
        uses those of its last PIRLS step: `blockdiag_pirls`)
    gh_z, gh_w, gh_ldnorm : (n_agq,) float64, the Gauss-Hermite rule
    out : (n_levels,) float64, receives each level's contribution

    Returns
    -------
    (hi, lo) : sum_g out[g] as a double-double (chunks of `glmm_level_chunks`, in order)
    """
    bounds = glmm_level_chunks(indptr)
    n_chunks = bounds.shape[0] - 1
    his = np.zeros(n_chunks)
    los = np.zeros(n_chunks)
    for c in prange(n_chunks):
        h, l_ = _agq_chunk(bounds[c], bounds[c + 1], indptr, eta_fixed, Z, unit_z, y, prior_w, t,
                           family, link, u_mode, L_diag, gh_z, gh_w, gh_ldnorm, out)
        his[c] = h
        los[c] = l_
    hi = 0.0
    lo = 0.0
    for c in range(n_chunks):
        hi, lo = _dd_add_dd(hi, lo, his[c], los[c])
    return hi, lo


@njit(cache=True, nogil=True)
def blockdiag_agq_serial(indptr, eta_fixed, Z, unit_z, y, prior_w, t, family, link, u_mode,
                         L_diag, gh_z, gh_w, gh_ldnorm, out):
    """`blockdiag_agq` without a parallel region (same chunks, same bits)."""
    bounds = glmm_level_chunks(indptr)
    n_chunks = bounds.shape[0] - 1
    hi = 0.0
    lo = 0.0
    for c in range(n_chunks):
        h, l_ = _agq_chunk(bounds[c], bounds[c + 1], indptr, eta_fixed, Z, unit_z, y, prior_w, t,
                           family, link, u_mode, L_diag, gh_z, gh_w, gh_ldnorm, out)
        hi, lo = _dd_add_dd(hi, lo, h, l_)
    return hi, lo


@njit(parallel=True, cache=True, nogil=True)
def sorted_fixed_eta(order, offset, X, beta, eta_out):
    """The fixed part of the linear predictor, offset + X beta, of the rows sorted by level
    (the `eta_fixed` of the level kernels) in one pass, without the (n,) array in the rows'
    own order that ``(offset + X @ beta)[order]`` makes first.

    Parameters
    ----------
    order : (n,) int64, sorted row i is row order[i] of offset and X
    offset : (n,) float64, in the rows' own order
    X : (n, p) float64, in the rows' own order
    beta : (p,) float64
    eta_out : (n,) float64, receives offset[order[i]] + X[order[i]] . beta (the products
        added left to right: the same bits for any number of threads)
    """
    n = order.shape[0]
    p = X.shape[1]
    n_chunks = max(1, (n + LEVEL_CHUNK_ROWS - 1) // LEVEL_CHUNK_ROWS)
    for c in prange(n_chunks):
        for i in range(c * LEVEL_CHUNK_ROWS, min(n, (c + 1) * LEVEL_CHUNK_ROWS)):
            r = order[i]
            s = 0.0
            for j in range(p):
                s += X[r, j] * beta[j]
            eta_out[i] = offset[r] + s
