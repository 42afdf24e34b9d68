"""The gradient of glmer's own criterion (`kernels.glmm.blockdiag_pirls`) for one grouping factor
and one random-effect column, by forward-mode tangents carried through its PIRLS iterations.

glmer's nAGQ = 1 objective at (t, beta) is not the exact Laplace value: PIRLS restarts from the
fixed linear predictor lp0, stops at a relative change of 1e-7 and takes the determinant with
the weights of the iterate before the last (kernels/glmm.py's module docstring). After the k
iterations it takes, the value is

    F(t, beta) = sum_i dev_i(eta_i^(k)) + sum_g (u_g^(k))^2 + sum_g log m_g^(k),

    u_g^(j) = t r_g^(j) / m_g^(j),   m_g^(j) = 1 + t^2 A_g^(j),
    A_g^(j) = sum_i w_i z_i^2,   r_g^(j) = sum_i w_i z_i zr_i   (at eta^(j-1)),
    eta_i^(j) = f_i + t z_i u_g^(j),   eta^(0) = lp0,   f = offset + X beta,
    zr_i = (eta_i - f_i) + (y_i - mu_i) / mu'_i   (lme4's working response),

with step halvings u <- (u_old + u) / 2 where lme4 takes them. For fixed k (and halvings) F is
a smooth function of xi = (t, beta), and its derivative follows the recursion: with the
tangent du = du_g/dxi (a 1 + p vector) and dv = d(t u) = (u + t du_0, t du_1..p),

    deta_i = z_i dv + (0, x_i)        (eta^(0) = lp0: deta = 0)
    dA     = sum w'_i z_i^2 deta_i
    dr     = sum z_i (w'_i zr_i + w_i c_i) deta_i - (0, sum z_i w_i x_i)
             with c_i = d[(y - mu) / mu'] / deta + 1 = -(y - mu) mu'' / mu'^2
    du^(j) = ((r, 0) + t dr - u^(j) ((2 t A, 0) + t^2 dA)) / m
    dF     = sum_i dev'_i deta_i^(k) + 2 sum_g u_g du_g + sum_g ((2 t A, 0) + t^2 dA) / m.

This is the exact derivative of the criterion glmer optimizes, wherever its iteration count does
not change nearby (the criterion jumps where it does); it steers stage 2 to glmer's optimum and
gives the Hessian of glmer's criterion (lme4's vcov) by differences of gradients.

The values (deviance, ||u||^2, log det, the modes, the factors and the status) are computed by
the arithmetic of `blockdiag_pirls`, except for the first step's right-hand side: the working
weights at lp0 do not depend on the parameters, so its sums are made once (`start_level_sums`)
and r_g = c_g - B_g' beta replaces a pass over the rows: the same iterations, the values equal
to rounding. Rows are sorted by
level (indptr); X is given as is, sorted row i being X[order[i]]. Per-chunk sums are added in
chunk order (`glmm_level_chunks`): the result does not depend on the number of threads.
"""
import math

import numpy as np
from numba import njit, prange

from .glm import (CLOGLOG, LOG, LOGIT, PROBIT, _dd_add, _dd_add_dd, _dev_resid, _link,
                  _variance, derivatives_at)
from .glmm import (MAX_HALVINGS, PIRLS_CONVERGED, PIRLS_HALVING_FAILED, PIRLS_MAXIT, PIRLS_NAN,
                   _DBL_MAX, _combine, _pdev, glmm_level_chunks)


@njit(cache=True, nogil=True, inline="always")
def _mu_eta_derivative(eta, mu, me, link):
    """d mu.eta / d eta (mu'' in eta) from mu and mu.eta at eta."""
    if link == LOGIT:
        return me * (1.0 - 2.0 * mu)
    if link == PROBIT:
        return -eta * me
    if link == CLOGLOG:
        return me * (1.0 - math.exp(eta))
    if link == LOG:
        return me
    return 0.0


@njit(cache=True, nogil=True)
def _tangent_level(s, e, eta_fixed, X, order, Z, unit_z, y, prior_w, family, link, t, u, du,
                   dA_out, dr_out, grad_out, sx1, sx2, sx3):
    """Rows s..e-1 of one level at eta = eta_fixed + z t u.

    Returns (dev_hi, dev_lo, A, r) with the arithmetic of `kernels.glmm._eval_level` (P = 1),
    and writes the tangents dA_out, dr_out (1 + p) and adds sum dev'_i deta_i to grad_out
    (1 + p). du: (1 + p) the mode's tangent; sx1..sx3: (p,) scratch."""
    p = X.shape[1]
    hi = 0.0
    lo = 0.0
    z = 1.0
    v0 = t * u
    a00 = 0.0
    r0 = 0.0
    s_d1z = 0.0  # sum dev' z
    s_wz3 = 0.0  # sum w' z^3
    s_rz2 = 0.0  # sum z^2 (w' zr + w c)
    for j in range(p):
        sx1[j] = 0.0  # sum dev' x
        sx2[j] = 0.0  # sum w' z^2 x
        sx3[j] = 0.0  # sum z (w' zr + w c - w) x
    for i in range(s, e):
        ef = eta_fixed[i]
        if not unit_z:
            z = Z[i, 0]
        eta = ef + z * v0
        mu, me = _link(eta, link)
        pw = prior_w[i]
        hi, lo = _dd_add(hi, lo, _dev_resid(y[i], mu, pw, family))
        sw = me * math.sqrt(pw / _variance(mu, family))
        w = sw * sw
        res = y[i] - mu
        zr = (eta - ef) + res / me
        wz = z * w
        a00 += wz * z
        r0 += wz * zr
        r = order[i]
        d1, _d2, _w, w1 = derivatives_at(eta, mu, me, y[i], pw, family, link)
        c = -res * _mu_eta_derivative(eta, mu, me, link) / (me * me)
        k_r = z * (w1 * zr + w * c)
        k_a = w1 * z * z
        s_d1z += d1 * z
        s_wz3 += k_a * z
        s_rz2 += k_r * z
        kx = k_r - wz
        for j in range(p):
            x = X[r, j]
            sx1[j] += d1 * x
            sx2[j] += k_a * x
            sx3[j] += kx * x
    dv0 = u + t * du[0]
    dA_out[0] = s_wz3 * dv0
    dr_out[0] = s_rz2 * dv0
    grad_out[0] += s_d1z * dv0
    for j in range(p):
        dvj = t * du[1 + j]
        dA_out[1 + j] = s_wz3 * dvj + sx2[j]
        dr_out[1 + j] = s_rz2 * dvj + sx3[j]
        grad_out[1 + j] += s_d1z * dvj + sx1[j]
    return hi, lo, a00, r0


@njit(cache=True, nogil=True)
def _start_sums_chunk(lo_g, hi_g, indptr, order, X, offset, Z, unit_z, y, prior_w, family, link,
                      eta_start, A_out, c_out, B_out):
    p = X.shape[1]
    z = 1.0
    for g in range(lo_g, hi_g):
        a = 0.0
        c = 0.0
        for j in range(p):
            B_out[g, j] = 0.0
        for i in range(indptr[g], indptr[g + 1]):
            if not unit_z:
                z = Z[i, 0]
            eta = eta_start[i]
            mu, me = _link(eta, link)
            sw = me * math.sqrt(prior_w[i] / _variance(mu, family))
            wz = z * (sw * sw)
            a += wz * z
            c += wz * ((eta - offset[i]) + (y[i] - mu) / me)
            r = order[i]
            for j in range(p):
                B_out[g, j] += wz * X[r, j]
        A_out[g] = a
        c_out[g] = c


@njit(parallel=True, cache=True, nogil=True)
def start_level_sums(indptr, order, X, offset, Z, unit_z, y, prior_w, family, link, eta_start,
                     A_out, c_out, B_out):
    """The sums of the first PIRLS step at a fixed linearization point eta_start (glmer's lp0):
    A_g = sum w z^2, c_g = sum w z ((eta_start - offset) + (y - mu) / mu') and B_g = sum w z x,
    so that the step's right-hand side at any beta is r_g = c_g - B_g' beta (the working
    response is relative to offset + X beta) and needs no pass over the rows.

    Parameters
    ----------
    indptr, order, X, Z, unit_z, y, prior_w, family, link : as `blockdiag_pirls_gradient`
    offset, eta_start : (n,) float64, sorted rows
    A_out, c_out : (n_levels,) float64; B_out : (n_levels, p) float64, receive the sums
    """
    bounds = glmm_level_chunks(indptr)
    for c in prange(bounds.shape[0] - 1):
        _start_sums_chunk(bounds[c], bounds[c + 1], indptr, order, X, offset, Z, unit_z, y,
                          prior_w, family, link, eta_start, A_out, c_out, B_out)


@njit(cache=True, nogil=True)
def _tangent_start_chunk(lo_g, hi_g, start_A, start_c, start_B, beta, A_buf, r_buf, dA_buf,
                         dr_buf):
    """The first linearization of levels lo_g..hi_g-1 from `start_level_sums`: A, r = c -
    B'beta, and their tangents (dA = 0, dr = (0, -B))."""
    p = start_B.shape[1]
    for g in range(lo_g, hi_g):
        A_buf[g, 0, 0] = start_A[g]
        r = start_c[g]
        for j in range(p):
            r -= start_B[g, j] * beta[j]
        r_buf[g, 0] = r
        dA_buf[g, 0] = 0.0
        dr_buf[g, 0] = 0.0
        for j in range(p):
            dA_buf[g, 1 + j] = 0.0
            dr_buf[g, 1 + j] = -start_B[g, j]


@njit(cache=True, nogil=True)
def _tangent_step_chunk(lo_g, hi_g, indptr, eta_fixed, X, order, Z, unit_z, y, prior_w, t,
                        family, link, A_buf, r_buf, dA_buf, dr_buf, L_out, u_prop,
                        du_prop, halve, u_old, du_old, sums, grads, c):
    """`kernels.glmm._pirls_step_chunk` (P = 1) with the tangents: unless halve, the step from
    the buffers (its log det's gradient into grads[c, 1 + p:]); if halve, the midpoint with
    u_old. Then the evaluation at u_prop: sums[c] as there, grads[c, :1 + p] the gradient of
    deviance + ||u||^2 there, and A, r with their tangents into the buffers."""
    p = X.shape[1]
    q = 1 + p
    sx1 = np.empty(p)
    sx2 = np.empty(p)
    sx3 = np.empty(p)
    du = np.empty(q)
    dh = 0.0
    dl = 0.0
    uh = 0.0
    ul = 0.0
    lh = 0.0
    ll = 0.0
    for j in range(q):
        grads[c, j] = 0.0
    if not halve:
        for j in range(q):
            grads[c, q + j] = 0.0
    for g in range(lo_g, hi_g):
        if halve:
            u = (u_old[g, 0] + u_prop[g, 0]) / 2.0
            for j in range(q):
                du[j] = (du_old[g, j] + du_prop[g, j]) / 2.0
        else:
            a = A_buf[g, 0, 0]
            m = t * t * a + 1.0
            rhs = t * r_buf[g, 0]
            # (kernels.glmm._factor and _chol_solve for P = 1, operation for operation)
            if not m > 0.0:
                ld = np.nan
                M = np.nan
            else:
                M = math.sqrt(m)
                ld = 2.0 * math.log(M)
            lh, ll = _dd_add(lh, ll, ld)
            L_out[g, 0, 0] = M
            u = (rhs / M) / M
            dm0 = 2.0 * t * a
            du[0] = (r_buf[g, 0] + t * dr_buf[g, 0] - u * (dm0 + t * t * dA_buf[g, 0])) / m
            grads[c, q] += (dm0 + t * t * dA_buf[g, 0]) / m
            for j in range(1, q):
                dmj = t * t * dA_buf[g, j]
                du[j] = (t * dr_buf[g, j] - u * dmj) / m
                grads[c, q + j] += dmj / m
        u_prop[g, 0] = u
        for j in range(q):
            du_prop[g, j] = du[j]
        h, l_, a, r = _tangent_level(indptr[g], indptr[g + 1], eta_fixed, X, order, Z, unit_z,
                                     y, prior_w, family, link, t, u, du, dA_buf[g], dr_buf[g], grads[c], sx1, sx2, sx3)
        A_buf[g, 0, 0] = a
        r_buf[g, 0] = r
        for j in range(q):
            grads[c, j] += 2.0 * u * du[j]
        dh, dl = _dd_add_dd(dh, dl, h, l_)
        uh, ul = _dd_add(uh, ul, u * u)
    sums[c, 0] = dh
    sums[c, 1] = dl
    sums[c, 2] = uh
    sums[c, 3] = ul
    if not halve:
        sums[c, 4] = lh
        sums[c, 5] = ll


@njit(parallel=True, cache=True, nogil=True)
def blockdiag_pirls_gradient(indptr, eta_fixed, X, order, Z, unit_z, y, prior_w, T, family, link,
                             start_A, start_c, start_B, beta, u_inout, L_out, tol, max_iter,
                             grad_out):
    """`kernels.glmm.blockdiag_pirls` from eta_start = glmer's lp0 for one random-effect
    column (T is 1 x 1), with the gradient of its criterion (deviance + ||u||^2 + log det) in
    (t, beta) (module docstring). The first step comes from `start_level_sums` at lp0 (made
    once: the working weights there do not depend on the parameters) instead of a pass.

    Parameters
    ----------
    indptr, eta_fixed, Z, unit_z, y, prior_w, T, family, link, u_inout, L_out, tol, max_iter :
        as `blockdiag_pirls` (u_inout: the start of a step halving at the first iteration)
    X : (n, p) float64, the fixed-effects columns (rows as given, not sorted)
    order : (n,) int64, sorted row i is row order[i] of X
    start_A, start_c, start_B : `start_level_sums` at lp0
    beta : (p,) float64, the beta of eta_fixed = offset + X beta
    grad_out : (1 + p,) float64, receives d(dev + u2 + logdet) / d(t, beta)

    Returns
    -------
    as `blockdiag_pirls` with eta_start = lp0: the same iterations, values equal to rounding
    (the first step's right-hand side is c - B'beta instead of a sum over the rows)
    """
    n_levels = indptr.shape[0] - 1
    p = X.shape[1]
    q = 1 + p
    t = T[0, 0]
    bounds = glmm_level_chunks(indptr)
    n_chunks = bounds.shape[0] - 1
    sums = np.zeros((n_chunks, 6))
    grads = np.zeros((n_chunks, 2 * q))
    u_old = u_inout.copy()
    du_old = np.zeros((n_levels, q))
    u_prop = np.zeros((n_levels, 1))
    du_prop = np.zeros((n_levels, q))
    A_buf = np.zeros((n_levels, 1, 1))
    r_buf = np.zeros((n_levels, 1))
    dA_buf = np.zeros((n_levels, q))
    dr_buf = np.zeros((n_levels, q))
    for c in prange(n_chunks):
        _tangent_start_chunk(bounds[c], bounds[c + 1], start_A, start_c, start_B, beta, A_buf,
                             r_buf, dA_buf, dr_buf)
    oldpdev = _DBL_MAX
    status = PIRLS_MAXIT
    it = 0
    while it < max_iter:
        it += 1
        for c in prange(n_chunks):
            _tangent_step_chunk(bounds[c], bounds[c + 1], indptr, eta_fixed, X, order, Z, unit_z,
                                y, prior_w, t, family, link, A_buf, r_buf, dA_buf,
                                dr_buf, L_out, u_prop, du_prop, False, u_old, du_old, sums,
                                grads, c)
        pdev = _pdev(sums, n_chunks)
        if abs((oldpdev - pdev) / pdev) < tol:
            status = PIRLS_CONVERGED
            break
        if pdev != pdev or pdev > oldpdev:
            k = 0
            while k < MAX_HALVINGS and (pdev != pdev or pdev > oldpdev):
                for c in prange(n_chunks):
                    _tangent_step_chunk(bounds[c], bounds[c + 1], indptr, eta_fixed, X, order, Z,
                                        unit_z, y, prior_w, t, family, link, A_buf,
                                        r_buf, dA_buf, dr_buf, L_out, u_prop, du_prop, True,
                                        u_old, du_old, sums, grads, c)
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
            u_old[g, 0] = u_prop[g, 0]
            for j in range(q):
                du_old[g, j] = du_prop[g, j]
    for g in range(n_levels):
        u_inout[g, 0] = u_prop[g, 0]
    for j in range(q):
        grad_out[j] = 0.0
    for c in range(n_chunks):
        for j in range(2 * q):
            grad_out[j % q] += grads[c, j]
    dh, dl, u2, ld = _combine(sums, n_chunks)
    return dh, dl, u2, ld, status, it
