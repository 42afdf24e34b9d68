"""The gradient of the exact Laplace criterion of a one-factor, scalar random-effect GLMM.

Model (rows sorted by level, level g has rows indptr[g]..indptr[g+1]-1): eta_i = f_i +
t z_i u_g with f = offset + X beta, t = theta (the relative SD), z_i = 1 for a random
intercept. With the conditional modes u_g (the minimizers of d_g(u) = sum_i dev_i + u^2,
found by `kernels.glmm.blockdiag_laplace` to ~1e-13) and the Fisher weights at the modes
w_i = prior_w mu'^2 / V(mu), the exact Laplace criterion is

    F(t, beta) = sum_i dev_i(eta_i) + sum_g u_g^2 + sum_g log(1 + t^2 S_g) + c,
    S_g = sum_{i in g} w_i z_i^2.

Its gradient (the modes are stationary points of d_g, so they enter the first two terms only
through eta; the log-determinant term sees them through the weights):

    dF/dbeta = sum_i dev_i' x_i + sum_g t^2 sum_i w_i' z_i^2 (x_i + t z_i du_g/dbeta) / L_g
    dF/dt    = sum_i dev_i' z_i u_g
               + sum_g [2 t S_g + t^2 sum_i w_i' z_i^2 (z_i u_g + t z_i du_g/dt)] / L_g

with L_g = 1 + t^2 S_g, the implicit derivatives of the mode du_g/dbeta = -sum_i dev_i'' t z_i
x_i / h_g, du_g/dt = -sum_i (dev_i'' t z_i^2 u_g + dev_i' z_i) / h_g, h_g = sum_i dev_i''
t^2 z_i^2 + 2, and ' the derivative in eta: dev' = -2 prior_w (y - mu) mu' / V,
dev'' = -2 prior_w [-mu'^2 / V + (y - mu)(mu'' / V - mu'^2 V' / V^2)], w' = prior_w
(2 mu' mu'' / V - mu'^3 V' / V^2).

Every kernel takes raw arrays; the per-chunk sums are added in chunk order (the chunks of
`glmm_level_chunks`), so the result does not depend on the number of threads.
"""
import math

import numpy as np
from numba import njit, prange

from .glm import (CLOGLOG, PROBIT, _dd_add, _dd_add_dd, _dev_resid, _link, _variance,
                  derivatives_at, row_derivatives, row_third_derivatives)
from .glmm import MAX_HALVINGS, _combine, _newton_level, glmm_level_chunks


@njit(cache=True, nogil=True)
def _gradient_chunk(lo_g, hi_g, indptr, eta_fixed, X, order, Z, unit_z, y, prior_w, t, family,
                    link, u, out, da):
    """Adds the gradient contributions of levels lo_g..hi_g-1 to out (1 + p); da: (p,) scratch.
    Row i of the sorted rows is row order[i] of X."""
    p = X.shape[1]
    for g in range(lo_g, hi_g):
        s, e = indptr[g], indptr[g + 1]
        ug = u[g]
        # pass 1: the mode's implicit derivatives and S_g
        S = 0.0
        h = 2.0
        a_t = 0.0
        for j in range(p):
            da[j] = 0.0
        for i in range(s, e):
            z = 1.0 if unit_z else Z[i, 0]
            eta = eta_fixed[i] + t * z * ug
            d1, d2, w, w1 = row_derivatives(eta, y[i], prior_w[i], family, link)
            S += w * z * z
            h += d2 * t * t * z * z
            a_t += d2 * t * z * z * ug + d1 * z
            c = d2 * t * z
            r = order[i]
            for j in range(p):
                da[j] += c * X[r, j]
        du_t = -a_t / h
        L = 1.0 + t * t * S
        # pass 2: the gradient
        g_t = 2.0 * t * S / L
        for i in range(s, e):
            z = 1.0 if unit_z else Z[i, 0]
            eta = eta_fixed[i] + t * z * ug
            d1, d2, w, w1 = row_derivatives(eta, y[i], prior_w[i], family, link)
            q = t * t * w1 * z * z / L
            g_t += d1 * z * ug + q * (z * ug + t * z * du_t)
            r = order[i]
            for j in range(p):
                out[1 + j] += d1 * X[r, j] + q * (X[r, j] - t * z * da[j] / h)
        out[0] += g_t


@njit(parallel=True, cache=True, nogil=True)
def blockdiag_laplace_gradient(indptr, eta_fixed, X, order, Z, unit_z, y, prior_w, t, family,
                               link, u, grad_out):
    """The gradient of the exact Laplace criterion in (t, beta) at the modes u.

    Parameters
    ----------
    indptr : (n_levels + 1,) int64, row ranges of the levels (rows sorted by level)
    eta_fixed : (n,) float64, offset + X beta (sorted rows)
    X : (n, p) float64, fixed-effects columns
    order : (n,) int64, sorted row i is row order[i] of X (bigmixed passes X in level order
        with the identity: a gather through a permutation costs ~3x the pass)
    Z : (n, 1) float64, the random-effect column (ignored when unit_z; may be (0, 1))
    unit_z : bool, the random effect is an intercept
    y, prior_w : (n,) float64, response (binomial: proportion) and prior weights
    t : float, theta (the relative SD of the random effect)
    family, link : int, family and link ids (kernels.glm)
    u : (n_levels,) float64, the conditional modes (spherical: b = t u) at (t, beta)
    grad_out : (1 + p,) float64, receives (dF/dt, dF/dbeta)
    """
    p = X.shape[1]
    bounds = glmm_level_chunks(indptr)
    n_chunks = bounds.shape[0] - 1
    parts = np.zeros((n_chunks, 1 + p))
    for c in prange(n_chunks):
        da = np.empty(p)
        _gradient_chunk(bounds[c], bounds[c + 1], indptr, eta_fixed, X, order, Z, unit_z, y,
                        prior_w, t, family, link, u, parts[c], da)
    for j in range(1 + p):
        grad_out[j] = 0.0
    for c in range(n_chunks):
        for j in range(1 + p):
            grad_out[j] += parts[c, j]


# --------------------------------------------------------------------------------------
# one pass per level, fused with the modes (blockdiag_laplace_fused)
# --------------------------------------------------------------------------------------
@njit(cache=True, nogil=True, inline="always")
def _gradient_row(d1, d2, w, w1, z, ug, t, S, h, a_t, sd1z, B, X, r, da, d1x, wx):
    """One row's terms of `_level_gradient`'s per-level sums (row r of X); returns the new
    (S, h, a_t, sd1z, B), adds to da, d1x, wx."""
    zz = z * z
    S += w * zz
    h += d2 * t * t * zz
    a_t += d2 * t * zz * ug + d1 * z
    sd1z += d1 * z
    wz2 = w1 * zz
    B += wz2 * z
    c = d2 * t * z
    for j in range(X.shape[1]):
        x = X[r, j]
        da[j] += c * x
        d1x[j] += d1 * x
        wx[j] += wz2 * x
    return S, h, a_t, sd1z, B


@njit(cache=True, nogil=True, inline="always")
def _add_level_gradient(t, ug, S, h, a_t, sd1z, B, da, d1x, wx, out, du_out, g):
    """Level g's gradient contribution from its sums (`_level_gradient`'s formulas) added to
    out, and the mode's derivatives into du_out[g] (unless du_out has no rows)."""
    p = da.shape[0]
    du_t = -a_t / h
    L = 1.0 + t * t * S
    k = t * t / L
    out[0] += 2.0 * t * S / L + sd1z * ug + k * B * (ug + t * du_t)
    kb = k * B * t / h
    for j in range(p):
        out[1 + j] += d1x[j] + k * wx[j] - kb * da[j]
    if du_out.shape[0] > 0:
        du_out[g, 0] = du_t
        for j in range(p):
            du_out[g, 1 + j] = -da[j] / h


@njit(cache=True, nogil=True)
def _level_gradient(s, e, eta_fixed, X, order, Z, unit_z, y, prior_w, t, family, link, ug,
                    out, da, d1x, wx, du_out, g):
    """Adds level g's (rows s..e-1, mode ug) gradient contribution to out (1 + p) in one pass
    over its rows: the two passes of `_gradient_chunk` rearranged into per-level sums,

        dF/dt    += 2 t S / L + ug sum d1 z + k B (ug + t du_t),
        dF/dbeta += sum d1 x + k sum w' z^2 x - k B t da / h,

    with k = t^2 / L, B = sum w' z^3 and S, h, du_t, da as in the module docstring (da, d1x,
    wx: (p,) scratch). du_out[g] (unless du_out has no rows) receives the mode's derivatives
    (du_g/dt, du_g/dbeta) = (du_t, -da / h)."""
    p = X.shape[1]
    S = 0.0
    h = 2.0
    a_t = 0.0
    sd1z = 0.0
    B = 0.0
    for j in range(p):
        da[j] = 0.0
        d1x[j] = 0.0
        wx[j] = 0.0
    for i in range(s, e):
        z = 1.0 if unit_z else Z[i, 0]
        eta = eta_fixed[i] + t * z * ug
        d1, d2, w, w1 = row_derivatives(eta, y[i], prior_w[i], family, link)
        S, h, a_t, sd1z, B = _gradient_row(d1, d2, w, w1, z, ug, t, S, h, a_t, sd1z, B, X,
                                           order[i], da, d1x, wx)
    _add_level_gradient(t, ug, S, h, a_t, sd1z, B, da, d1x, wx, out, du_out, g)


@njit(cache=True, nogil=True)
def _fused_chunk(lo_g, hi_g, indptr, eta_fixed, X, order, Z, unit_z, y, prior_w, T, family, link,
                 u_inout, L_out, tol, step_tol, max_iter, with_gradient, grad_part, sums, c,
                 counts, du_out):
    P = T.shape[0]
    p = X.shape[1]
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
    da = np.empty(p)
    d1x = np.empty(p)
    wx = np.empty(p)
    no_start = eta_fixed[:0]
    t = T[0, 0]
    dev_h = 0.0
    dev_l = 0.0
    u2_h = 0.0
    u2_l = 0.0
    ld_h = 0.0
    ld_l = 0.0
    n_fail = 0
    max_it = 0
    # one scalar random effect (not probit or cloglog, whose modes get Newton polish steps):
    # the gradient's sums in the modes' own evaluations
    scalar = with_gradient and P == 1 and link != PROBIT and link != CLOGLOG
    G = np.zeros(5 + 3 * p)
    Gn = np.zeros(5 + 3 * p)
    for g in range(lo_g, hi_g):
        if scalar:
            dh, dl, u2, ld, conv, it = _scalar_level_fused(
                g, indptr, eta_fixed, X, order, Z, unit_z, y, prior_w, t, family, link, u_inout,
                L_out, tol, step_tol, max_iter, grad_part, du_out, G, Gn)
        else:
            dh, dl, u2, ld, conv, it = _newton_level(
                g, indptr, eta_fixed, Z, unit_z, y, prior_w, T, family, link, no_start, False,
                u_inout, L_out, tol, max_iter, ucur, unew, v, A, r, An, rn, M, rhs, W, step_tol)
        dev_h, dev_l = _dd_add_dd(dev_h, dev_l, dh, dl)
        u2_h, u2_l = _dd_add(u2_h, u2_l, u2)
        ld_h, ld_l = _dd_add(ld_h, ld_l, ld)
        if not conv:
            n_fail += 1
        if it > max_it:
            max_it = it
        if with_gradient and not scalar:
            _level_gradient(indptr[g], indptr[g + 1], eta_fixed, X, order, Z, unit_z, y, prior_w,
                            t, family, link, u_inout[g, 0], grad_part, da, d1x, wx, du_out, g)
    sums[c, 0] = dev_h
    sums[c, 1] = dev_l
    sums[c, 2] = u2_h
    sums[c, 3] = u2_l
    sums[c, 4] = ld_h
    sums[c, 5] = ld_l
    counts[c, 0] = n_fail
    counts[c, 1] = max_it


@njit(cache=True, nogil=True)
def _fused_finish(sums, counts, parts, n_chunks, n_levels, grad_out):
    dh, dl, u2, ld = _combine(sums, n_chunks)
    n_fail = 0
    max_it = 0
    for c in range(n_chunks):
        n_fail += counts[c, 0]
        max_it = max(max_it, counts[c, 1])
    for j in range(grad_out.shape[0]):
        grad_out[j] = 0.0
    for c in range(n_chunks):
        for j in range(grad_out.shape[0]):
            grad_out[j] += parts[c, j]
    if n_levels == 0:
        return 0.0, 0.0, 0.0, 0.0, 0, 0
    return dh, dl, u2, ld, n_fail, max_it


@njit(parallel=True, cache=True, nogil=True)
def blockdiag_laplace_fused(indptr, eta_fixed, X, order, Z, unit_z, y, prior_w, T, family, link,
                            u_inout, L_out, tol, step_tol, max_iter, with_gradient, grad_out,
                            du_out):
    """`kernels.glmm.blockdiag_laplace` from a warm start (no eta_start), and with_gradient
    the gradient of the exact Laplace criterion (`blockdiag_laplace_gradient`, P = 1 only) at
    the modes it finds: one kernel, each level's gradient taken right after its mode, in one
    pass over its rows (still in cache); for links other than probit and cloglog (whose modes
    end with Newton polish steps) its sums are taken in the modes' own evaluations instead
    (`_scalar_level_fused`: the same modes and criterion sums, bit for bit).

    Parameters
    ----------
    indptr, eta_fixed, Z, unit_z, y, prior_w, T, family, link, u_inout, L_out, tol,
    max_iter : as `blockdiag_laplace` (u_inout: the warm start, receives the modes)
    X, order : as `blockdiag_laplace_gradient` (X as given, sorted row i is X[order[i]])
    step_tol : float, a level has also converged when the next full Fisher step would move
        its mode by at most step_tol (1 + |u|) (0: `blockdiag_laplace`'s rule only, then the
        modes and sums are bit-identical to it)
    with_gradient : bool, also the gradient (needs P = 1)
    grad_out : (1 + p,) float64, receives (dF/dt, dF/dbeta) (zeros unless with_gradient)
    du_out : (n_levels, 1 + p) float64 or shape (0, 1 + p): with_gradient, receives each mode's
        derivatives (du_g/dt, du_g/dbeta) (the implicit ones of the module docstring): a
        first-order prediction of the modes at nearby parameters, the next warm start

    Returns
    -------
    as `blockdiag_laplace`. Chunks of `glmm_level_chunks`, added in order: the same bits for
    any number of threads and as `blockdiag_laplace_fused_serial`.
    """
    n_levels = indptr.shape[0] - 1
    p = X.shape[1]
    bounds = glmm_level_chunks(indptr)
    n_chunks = bounds.shape[0] - 1
    sums = np.zeros((n_chunks, 6))
    counts = np.zeros((n_chunks, 2), np.int64)
    parts = np.zeros((n_chunks, 1 + p))
    for c in prange(n_chunks):
        _fused_chunk(bounds[c], bounds[c + 1], indptr, eta_fixed, X, order, Z, unit_z, y, prior_w,
                     T, family, link, u_inout, L_out, tol, step_tol, max_iter, with_gradient,
                     parts[c], sums, c, counts, du_out)
    return _fused_finish(sums, counts, parts, n_chunks, n_levels, grad_out)


@njit(cache=True, nogil=True)
def blockdiag_laplace_fused_serial(indptr, eta_fixed, X, order, Z, unit_z, y, prior_w, T, family,
                                   link, u_inout, L_out, tol, step_tol, max_iter, with_gradient,
                                   grad_out, du_out):
    """`blockdiag_laplace_fused` without a parallel region (same chunks, same bits)."""
    n_levels = indptr.shape[0] - 1
    p = X.shape[1]
    bounds = glmm_level_chunks(indptr)
    n_chunks = bounds.shape[0] - 1
    sums = np.zeros((n_chunks, 6))
    counts = np.zeros((n_chunks, 2), np.int64)
    parts = np.zeros((n_chunks, 1 + p))
    for c in range(n_chunks):
        _fused_chunk(bounds[c], bounds[c + 1], indptr, eta_fixed, X, order, Z, unit_z, y, prior_w,
                     T, family, link, u_inout, L_out, tol, step_tol, max_iter, with_gradient,
                     parts[c], sums, c, counts, du_out)
    return _fused_finish(sums, counts, parts, n_chunks, n_levels, grad_out)


# --------------------------------------------------------------------------------------
# the Hessian (at the modes)
# --------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _hessian_chunk(lo_g, hi_g, indptr, eta_fixed, X, order, Z, unit_z, y, prior_w, t, family,
                   link, u, H_out):
    """Adds the Hessian (1 + p, 1 + p) of levels lo_g..hi_g-1 to H_out (the module docstring
    of `blockdiag_laplace_hessian` has the formulas); u: the modes."""
    p = X.shape[1]
    n = 1 + p
    du = np.empty(n)
    b = np.empty(n)
    a = np.empty(n)
    q = np.empty(n)
    dS = np.empty(n)
    gG = np.empty(n)
    M1 = np.empty((n, n))
    M3 = np.empty((n, n))
    M4 = np.empty((n, n))
    d2u = np.empty((n, n))
    for g in range(lo_g, hi_g):
        s, e = indptr[g], indptr[g + 1]
        ug = u[g]
        # pass 1: S, h and the mode's derivatives du = -d_u,psi / h
        S = 0.0
        h = 2.0
        s2 = 0.0
        B3 = 0.0
        for j in range(n):
            du[j] = 0.0
        for i in range(s, e):
            z = 1.0 if unit_z else Z[i, 0]
            d1, d2, w, w1 = row_derivatives(eta_fixed[i] + t * z * ug, y[i], prior_w[i], family,
                                            link)
            S += w * z * z
            s2 += d2 * z * z
            B3 += w1 * z * z * z
            du[0] += d2 * t * z * z * ug + d1 * z
            c = d2 * t * z
            r = order[i]
            for j in range(p):
                du[1 + j] += c * X[r, j]
        h += t * t * s2
        for j in range(n):
            du[j] = -du[j] / h
        # pass 2: the sums over the level's rows of the outer products
        for j in range(n):
            q[j] = 0.0
            dS[j] = 0.0
            for k in range(n):
                M1[j, k] = 0.0
                M3[j, k] = 0.0
                M4[j, k] = 0.0
        for i in range(s, e):
            z = 1.0 if unit_z else Z[i, 0]
            d1, d2, d3, w, w1, w2 = row_third_derivatives(eta_fixed[i] + t * z * ug, y[i],
                                                          prior_w[i], family, link)
            r = order[i]
            b[0] = z * ug
            for j in range(p):
                b[1 + j] = X[r, j]
            for j in range(n):
                a[j] = b[j] + t * z * du[j]  # d eta_i / d psi along the mode
            c3 = z * d3
            c4 = z * z * w2
            for j in range(n):
                q[j] += z * d2 * a[j]
                dS[j] += w1 * z * z * a[j]
                for k in range(j, n):
                    M1[j, k] += d2 * b[j] * b[k]
                    M3[j, k] += c3 * a[j] * a[k]
                    M4[j, k] += c4 * a[j] * a[k]
        L = 1.0 + t * t * S
        for j in range(n):
            q[j] += t * s2 * du[j]
            gG[j] = t * t * dS[j] / L
        gG[0] += 2.0 * t * S / L
        for j in range(n):
            for k in range(j, n):
                # the mode's second derivatives d2u = -(e_t q' + q e_t' + t M3) / h
                v = t * M3[j, k]
                if j == 0:
                    v += q[k]
                if k == 0:
                    v += q[j]
                d2u[j, k] = -v / h
        for j in range(n):
            for k in range(j, n):
                # the penalized deviance at the mode: d_psi,psi - h du du'
                hd = M1[j, k] - h * du[j] * du[k]
                # log L: d2S = M4 + B3 (e_t du' + du e_t') + t B3 d2u
                d2S = M4[j, k] + t * B3 * d2u[j, k]
                if j == 0:
                    d2S += B3 * du[k]
                if k == 0:
                    d2S += B3 * du[j]
                hg = t * t * d2S
                if j == 0:
                    hg += 2.0 * t * dS[k]
                if k == 0:
                    hg += 2.0 * t * dS[j]
                if j == 0 and k == 0:
                    hg += 2.0 * S
                hg = hg / L - gG[j] * gG[k]
                H_out[j, k] += hd + hg


@njit(parallel=True, cache=True, nogil=True)
def blockdiag_laplace_hessian(indptr, eta_fixed, X, order, Z, unit_z, y, prior_w, t, family,
                              link, u, hess_out):
    """The Hessian in (t, beta) of the exact Laplace criterion F of the module docstring, at
    the conditional modes u (converged: `blockdiag_laplace_fused`): two passes over each
    level's rows. Per level, with b_i = (z_i u_g, x_i) (d eta_i at fixed u), du the mode's
    derivatives, a_i = b_i + t z_i du (d eta_i along the mode), h = 2 + t^2 sum dev_i'' z_i^2,
    S = sum w_i z_i^2, L = 1 + t^2 S and e_t the first unit vector:

        d2 [sum dev + u^2] = sum dev_i'' b_i b_i' - h du du'
        d2 u = -(e_t q' + q e_t' + t sum z_i dev3_i a_i a_i') / h,
               q = sum z_i dev_i'' a_i + t (sum z_i^2 dev_i'') du
        dS = sum w_i' z_i^2 a_i,
        d2S = sum z_i^2 w_i'' a_i a_i' + B (e_t du' + du e_t') + t B d2u, B = sum w_i' z_i^3
        d2 log L = (2 S e_t e_t' + 2 t (e_t dS' + dS e_t') + t^2 d2S) / L - g g',
               g = (2 t S e_t + t^2 dS) / L

    (dev3 and w'': kernels.glm.row_third_derivatives.)

    Parameters
    ----------
    indptr, eta_fixed, X, order, Z, unit_z, y, prior_w, t, family, link, u : as
        `blockdiag_laplace_gradient`
    hess_out : (1 + p, 1 + p) float64, receives the Hessian (symmetric)

    Chunks of `glmm_level_chunks`, added in order: the same bits for any number of threads.
    """
    n = X.shape[1] + 1
    bounds = glmm_level_chunks(indptr)
    n_chunks = bounds.shape[0] - 1
    parts = np.zeros((n_chunks, n, n))
    for c in prange(n_chunks):
        _hessian_chunk(bounds[c], bounds[c + 1], indptr, eta_fixed, X, order, Z, unit_z, y,
                       prior_w, t, family, link, u, parts[c])
    for j in range(n):
        for k in range(n):
            hess_out[j, k] = 0.0
    for c in range(n_chunks):
        for j in range(n):
            for k in range(j, n):
                hess_out[j, k] += parts[c, j, k]
    for j in range(n):
        for k in range(j):
            hess_out[j, k] = hess_out[k, j]


# --------------------------------------------------------------------------------------
# one scalar random effect: the gradient's sums taken in the modes' own evaluations
# --------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _eval_scalar_level(s, e, eta_fixed, X, order, Z, unit_z, y, prior_w, family, link, t, u,
                       sums, da, d1x, wx):
    """Rows s..e-1 of one level at eta = eta_fixed + z (t u), as `kernels.glmm._eval_level`
    (P = 1, with the cross-products and the deviance), and the sums of `_level_gradient` at
    the same eta (from the same mu and mu.eta): sums[:5] <- (S, h, a_t, sum dev' z, B), da,
    d1x, wx (p) as there. Returns (dev_hi, dev_lo, Z'WZ, Z'Wz)."""
    p = X.shape[1]
    hi = 0.0
    lo = 0.0
    a00 = 0.0
    r0 = 0.0
    S = 0.0
    h = 2.0
    a_t = 0.0
    sd1z = 0.0
    B = 0.0
    for j in range(p):
        da[j] = 0.0
        d1x[j] = 0.0
        wx[j] = 0.0
    z = 1.0
    v0 = t * u
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
        zr = (eta - ef) + (y[i] - mu) / me
        wz = z * w
        a00 += wz * z
        r0 += wz * zr
        d1, d2, wf, w1 = derivatives_at(eta, mu, me, y[i], pw, family, link)
        S, h, a_t, sd1z, B = _gradient_row(d1, d2, wf, w1, z, u, t, S, h, a_t, sd1z, B, X,
                                           order[i], da, d1x, wx)
    sums[0] = S
    sums[1] = h
    sums[2] = a_t
    sums[3] = sd1z
    sums[4] = B
    return hi, lo, a00, r0


@njit(cache=True, nogil=True)
def _scalar_level_fused(g, indptr, eta_fixed, X, order, Z, unit_z, y, prior_w, t, family, link,
                        u_inout, L_out, tol, step_tol, max_iter, out, du_out, G, Gn):
    """`kernels.glmm._newton_level` for one scalar random effect from a warm start (the same
    steps, tests and halvings; no Newton polish: not for probit or cloglog) with the
    gradient's sums taken in each evaluation, and level g's gradient contribution (as
    `_level_gradient`) added to out from those at the final mode: one pass over the level's
    rows fewer. G, Gn: (5 + 3 p,) scratch (the sums at the current and the new point).
    Returns (dev_hi, dev_lo, u^2, log det, converged, iterations)."""
    p = X.shape[1]
    s = indptr[g]
    e = indptr[g + 1]
    ucur = u_inout[g, 0]
    dh, dl, A, r = _eval_scalar_level(s, e, eta_fixed, X, order, Z, unit_z, y, prior_w, family,
                                      link, t, ucur, G[:5], G[5:5 + p], G[5 + p:5 + 2 * p],
                                      G[5 + 2 * p:])
    d = (dh + ucur * ucur) + dl
    it = 0
    conv = False
    while it < max_iter:
        it += 1
        m = t * t * A + 1.0
        if not m > 0.0:
            break
        M = math.sqrt(m)
        unew = ((t * r) / M) / M
        if step_tol > 0.0 and abs(unew - ucur) <= step_tol * (1.0 + abs(ucur)):
            conv = True
            break
        nh, nl, An, rn = _eval_scalar_level(s, e, eta_fixed, X, order, Z, unit_z, y, prior_w,
                                            family, link, t, unew, Gn[:5], Gn[5:5 + p],
                                            Gn[5 + p:5 + 2 * p], Gn[5 + 2 * p:])
        dn = (nh + unew * unew) + nl
        k = 0
        while (dn != dn or dn - d > tol * (1.0 + abs(d))) and k < MAX_HALVINGS:
            unew = (ucur + unew) / 2.0
            nh, nl, An, rn = _eval_scalar_level(s, e, eta_fixed, X, order, Z, unit_z, y, prior_w,
                                                family, link, t, unew, Gn[:5], Gn[5:5 + p],
                                                Gn[5 + p:5 + 2 * p], Gn[5 + 2 * p:])
            dn = (nh + unew * unew) + nl
            k += 1
        if dn != dn or dn - d > tol * (1.0 + abs(d)):
            break
        conv = abs(d - dn) <= tol * (1.0 + abs(dn))
        ucur = unew
        A = An
        r = rn
        for j in range(G.shape[0]):
            G[j] = Gn[j]
        d = dn
        dh = nh
        dl = nl
        if conv:
            break
    # the factor with the weights at the final u (A holds the cross-product there)
    m = t * t * A + 1.0
    M = math.sqrt(m) if m > 0.0 else np.nan
    ld = 2.0 * math.log(M) if m > 0.0 else np.nan
    u_inout[g, 0] = ucur
    L_out[g, 0, 0] = M
    # the gradient contribution from the sums at ucur
    _add_level_gradient(t, ucur, G[0], G[1], G[2], G[3], G[4], G[5:5 + p], G[5 + p:5 + 2 * p],
                        G[5 + 2 * p:], out, du_out, g)
    return dh, dl, ucur * ucur, ld, conv, it
