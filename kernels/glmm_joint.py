"""Joint PIRLS (beta and the modes together: glmer's nAGQ = 0 stage) for one grouping factor and
one random-effect column, level by level.

At a linearization point eta (rows sorted by level: level g has rows indptr[g]..indptr[g+1]-1)
with working weights w and working response zw = (eta - offset) + (y - mu) / mu', the
penalized least-squares problem

    min_{beta, u} sum_i w_i (zw_i - x_i' beta - t z_i u_g)^2 + sum_g u_g^2

has one 1 x 1 block per level in its random-effects part: with A_g = sum w z^2,
b_g = sum w z [x; zw] and G = sum w [x; zw][x; zw]' (all in the well-conditioned working
basis [X W, zw] of `bigmixed.crossprods.basis`, whose matrix M maps [x; zw] to it),

    m_g = 1 + t^2 A_g,   S = G - sum_g t^2 b_g b_g' / m_g   ((p + 1) x (p + 1)),

S's Cholesky factor gives beta (working basis) as for the LMM, u_g = t (b_g[p] - b_g[:p]'
beta) / m_g, and log det(Lambda'Z'W Z Lambda + I) = sum_g log m_g.

`joint_pass` is one pass over the rows at eta = offset + X beta + t z u (or a given eta):
the deviance there and the sums above; `joint_solve` is the small solve from them. The
per-chunk sums (chunks of `kernels.glmm.glmm_level_chunks`) are added in chunk order: the
results do not depend on the number of threads.
"""
import math

import numpy as np
from numba import njit, prange

from .glm import _dd_add, _dev_resid, _link, _variance
from .glmm import glmm_level_chunks


@njit(cache=True, nogil=True)
def _joint_chunk(lo_g, hi_g, indptr, order, X, offset, Z, unit_z, y, prior_w, t, family, link,
                 eta_lin, use_lin, beta, u, with_sums, A_out, b_out, G_part, dev_part, eta_out):
    p = X.shape[1]
    q = p + 1
    xz = np.empty(q)
    bg = np.empty(q)
    dh = 0.0
    dl = 0.0
    z = 1.0
    for a in range(q):
        for b in range(q):
            G_part[a, b] = 0.0
    for g in range(lo_g, hi_g):
        a_g = 0.0
        for a in range(q):
            bg[a] = 0.0
        tu = t * u[g]
        for i in range(indptr[g], indptr[g + 1]):
            r = order[i]
            if not unit_z:
                z = Z[i, 0]
            off = offset[i]
            if use_lin:
                eta = eta_lin[i]
            else:
                f = off
                for j in range(p):
                    f += X[r, j] * beta[j]
                eta = f + z * tu
            if eta_out.shape[0] > 0:
                eta_out[i] = eta
            mu, me = _link(eta, link)
            pw = prior_w[i]
            dh, dl = _dd_add(dh, dl, _dev_resid(y[i], mu, pw, family))
            if not with_sums:
                continue
            sw = me * math.sqrt(pw / _variance(mu, family))
            w = sw * sw
            for j in range(p):
                xz[j] = X[r, j]
            xz[p] = (eta - off) + (y[i] - mu) / me
            wz = w * z
            a_g += wz * z
            for a in range(q):
                bg[a] += wz * xz[a]
                wa = w * xz[a]
                for b in range(a + 1):
                    G_part[a, b] += wa * xz[b]
        if with_sums:
            A_out[g] = a_g
            for a in range(q):
                b_out[g, a] = bg[a]
    dev_part[0] = dh
    dev_part[1] = dl


@njit(parallel=True, cache=True, nogil=True)
def joint_pass(indptr, order, X, offset, Z, unit_z, y, prior_w, t, family, link, eta_lin, beta,
               u, with_sums, A_out, b_out, G_out, eta_out):
    """One pass over the rows at eta = offset + X beta + t z u_g (or eta_lin, if not empty):
    the deviance there and, with_sums, the sums of the next step (else A_out, b_out, G_out are
    left as they were: a pass for a convergence test, cheaper by the weighted sums).

    Parameters
    ----------
    indptr : (n_levels + 1,) int64, row ranges of the levels (rows sorted by level)
    order : (n,) int64, sorted row i is row order[i] of X
    X : (n, p) float64, fixed-effects columns (rows as given)
    offset, y, prior_w : (n,) float64, sorted rows
    Z : (n, 1) float64 sorted (ignored when unit_z; may be (0, 1)); unit_z : bool
    t : float, theta; family, link : int ids (kernels.glm)
    eta_lin : (n,) float64 sorted, or (0,): the linearization point instead of beta, u
    beta : (p,) float64 (original coordinates); u : (n_levels,) float64 spherical modes
    with_sums : bool, also A_out, b_out, G_out
    A_out : (n_levels,) receives A_g = sum w z^2
    b_out : (n_levels, p + 1) receives sum w z [x; zw] (original coordinates)
    G_out : (p + 1, p + 1) receives the lower triangle of sum w [x; zw][x; zw]'
    eta_out : (n,) float64 or (0,): receives eta (sorted rows)

    Returns
    -------
    (dev_hi, dev_lo) : the deviance at eta in double-double
    """
    p = X.shape[1]
    q = p + 1
    bounds = glmm_level_chunks(indptr)
    n_chunks = bounds.shape[0] - 1
    G_parts = np.zeros((n_chunks, q, q))
    devs = np.zeros((n_chunks, 2))
    use_lin = eta_lin.shape[0] > 0
    for c in prange(n_chunks):
        _joint_chunk(bounds[c], bounds[c + 1], indptr, order, X, offset, Z, unit_z, y, prior_w,
                     t, family, link, eta_lin, use_lin, beta, u, with_sums, A_out, b_out,
                     G_parts[c], devs[c], eta_out)
    if not with_sums:
        dh = 0.0
        dl = 0.0
        for c in range(n_chunks):
            dh, dl = _dd_add(dh, dl, devs[c, 0])
            dh, dl = _dd_add(dh, dl, devs[c, 1])
        return dh, dl
    for a in range(q):
        for b in range(q):
            G_out[a, b] = 0.0
    dh = 0.0
    dl = 0.0
    for c in range(n_chunks):
        for a in range(q):
            for b in range(a + 1):
                G_out[a, b] += G_parts[c, a, b]
        dh, dl = _dd_add(dh, dl, devs[c, 0])
        dh, dl = _dd_add(dh, dl, devs[c, 1])
    for a in range(q):
        for b in range(a + 1, q):
            G_out[a, b] = G_out[b, a]
    return dh, dl


@njit(cache=True, nogil=True)
def joint_solve(A, b, G, M, t, chol_out, u_out):
    """The penalized least-squares solution from `joint_pass`'s sums.

    Parameters
    ----------
    A : (n_levels,), b : (n_levels, p + 1), G : (p + 1, p + 1) symmetric: `joint_pass`'s
    M : (p + 1, p + 1), the working basis's matrix ([x; zw] -> M'[x; zw])
    t : float, theta
    chol_out : (p + 1, p + 1) receives the lower Cholesky factor of S = M'GM - sum t^2
        (M'b_g)(M'b_g)' / m_g (working basis; the LMM's `ProfiledState.chol_S`)
    u_out : (n_levels,) receives u_g = t (b~_g[p] - b~_g[:p]' beta_work) / m_g, with
        beta_work from S (as `bigmixed.fitting.objective.ProfiledState.beta_work`)

    Returns
    -------
    (logdet, ok) : sum_g log m_g, and False if S is not positive definite (u_out unset)
    """
    n_levels = A.shape[0]
    q = G.shape[0]
    p = q - 1
    MG = M.T @ G @ M
    bt = b @ M  # (rows: M' b_g)
    logdet = 0.0
    S = np.empty((q, q))
    for a in range(q):
        for c in range(q):
            S[a, c] = 0.5 * (MG[a, c] + MG[c, a])
    t2 = t * t
    for g in range(n_levels):
        m = 1.0 + t2 * A[g]
        logdet += math.log(m)
        k = t2 / m
        for a in range(q):
            ka = k * bt[g, a]
            for c in range(a + 1):
                S[a, c] -= ka * bt[g, c]
    # Cholesky (lower) of S, then beta_work from its last row
    L = np.zeros((q, q))
    for a in range(q):
        for c in range(a + 1):
            s = S[a, c]
            for k2 in range(c):
                s -= L[a, k2] * L[c, k2]
            if a == c:
                if not s > 0.0:
                    return logdet, False
                L[a, a] = math.sqrt(s)
            else:
                L[a, c] = s / L[c, c]
    beta_w = np.empty(p)
    for a in range(p - 1, -1, -1):  # R_X beta = c_beta with R_X = L[:p, :p]', c_beta = L[p, :p]
        s = L[p, a]
        for c in range(a + 1, p):
            s -= L[c, a] * beta_w[c]
        beta_w[a] = s / L[a, a]
    for g in range(n_levels):
        m = 1.0 + t2 * A[g]
        s = bt[g, p]
        for a in range(p):
            s -= bt[g, a] * beta_w[a]
        u_out[g] = t * s / m
    for a in range(q):
        for c in range(q):
            chol_out[a, c] = L[a, c]
    return logdet, True
