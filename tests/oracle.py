"""Dense, slow, textbook reference implementation of LMM fitting (REML and ML).

This is the *oracle* for tests of the fast sparse engine.  Everything is done
with dense N x N matrices straight from the marginal model

    y ~ N(X beta, V),     V = Z G Z' + sigma^2 I = sigma^2 Vr(theta),
    Vr(theta) = Z Lambda Lambda' Z' + I,

so it costs O(N^3) per objective evaluation and is meant for N up to a few
hundred.  There are no sparse tricks and no penalised-least-squares tricks.

Random-effects terms
--------------------
``terms`` is a list of ``(codes, Zraw)``:

* ``codes``: int array (N,), the grouping level of each row, coded 0..l_k-1
  (l_k = codes.max() + 1; a level with no rows would simply have b = 0 and
  Var(b|y) = G_k, lme4 drops unused levels so callers should not pass them);
* ``Zraw``: float array (N, p_k) (or (N,) for p_k = 1), the raw model matrix
  of the term, e.g. a column of ones for ``(1|g)`` or ``[1, x]`` for ``(x|g)``.

Z_k has l_k * p_k columns; column ``j * p_k + c`` (level j, component c) is
``Zraw[:, c] * (codes == j)``.  Z = [Z_1, Z_2, ...].

theta (lme4's parameterisation)
-------------------------------
For each term, in order, p_k (p_k + 1) / 2 entries fill the lower triangle of
the relative covariance factor T_k column by column: (1,1), (2,1), (3,1), ...,
(2,2), (3,2), ...  G_k = sigma^2 T_k T_k' for every level of term k and
Lambda is block diagonal with l_k copies of T_k per term.  Diagonal entries of
T_k are constrained to be >= 0.

Criteria (profiled over beta and sigma; r2 = min_beta (y-Xb)' Vr^-1 (y-Xb))
-------------------------------------------------------------------------
ML deviance:     log|Vr| + n (1 + log(2 pi r2 / n))
REML criterion:  log|Vr| + log|X' Vr^-1 X| + (n-p) (1 + log(2 pi r2 / (n-p)))

These are exactly what lme4 reports as ``deviance`` / ``REMLcrit``.

Prior weights and offsets (lme4's ``lmer(weights=, offset=)``)
-------------------------------------------------------------
``weights=w``: the residual covariance is sigma^2 diag(1 / w), i.e. R0 = diag(1 / w) in
Vr = Z Lambda Lambda' Z' + R0, so log|Vr| carries lme4's -sum(log w) term. ``offset=o``: the
model is fitted to y - o.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os

import numpy as np
import scipy.linalg as sla
import scipy.optimize as sopt

__all__ = [
    "build_Z",
    "theta_to_factors",
    "theta_lower_bounds",
    "default_theta0",
    "dense_quantities",
    "dense_objective",
    "dense_fit",
]


# ----------------------------------------------------------------------------
# BLAS threads (performance only; no effect on results)
# ----------------------------------------------------------------------------
# The matrices here are small (N <= a few hundred).  A multi-threaded OpenBLAS on
# a busy machine (several pytest workers / other processes) spin-waits and makes
# a 200 x 200 Cholesky ~100x slower.  While the oracle runs we therefore ask every
# loaded OpenBLAS for one thread and restore the previous setting afterwards
# (what threadpoolctl does, which is not a dependency).  Best effort: if the
# symbols are not found nothing happens.  Set BIGMIXED_ORACLE_KEEP_BLAS_THREADS=1
# to disable.

_GET_NAMES = ("openblas_get_num_threads", "openblas_get_num_threads64_",
              "scipy_openblas_get_num_threads", "scipy_openblas_get_num_threads64_")
_SET_NAMES = ("openblas_set_num_threads", "openblas_set_num_threads64_",
              "scipy_openblas_set_num_threads", "scipy_openblas_set_num_threads64_")


@functools.lru_cache(maxsize=1)
def _openblas_handles():
    paths = set()
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 6 and "openblas" in os.path.basename(parts[-1]).lower():
                    paths.add(parts[-1])
    except OSError:
        return ()
    handles = []
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        get = next((getattr(lib, n) for n in _GET_NAMES if hasattr(lib, n)), None)
        set_ = next((getattr(lib, n) for n in _SET_NAMES if hasattr(lib, n)), None)
        if get is not None and set_ is not None:
            get.restype = ctypes.c_int
            set_.argtypes = [ctypes.c_int]
            handles.append((get, set_))
    return tuple(handles)


@contextlib.contextmanager
def _single_thread_blas():
    if os.environ.get("BIGMIXED_ORACLE_KEEP_BLAS_THREADS"):
        yield
        return
    saved = []
    try:
        for get, set_ in _openblas_handles():
            saved.append((set_, int(get())))
            set_(1)
    except Exception:  # pragma: no cover - best effort only
        pass
    try:
        yield
    finally:
        for set_, nthreads in saved:
            try:
                set_(nthreads)
            except Exception:  # pragma: no cover
                pass


def _blas1(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _single_thread_blas():
            return fn(*args, **kwargs)
    return wrapper


# ----------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------

def _as_terms(terms, n):
    """Normalise terms to a list of (codes int (N,), Zraw float (N, p), n_levels)."""
    out = []
    for codes, zraw in terms:
        codes = np.asarray(codes)
        if codes.shape != (n,):
            raise ValueError(f"codes must have shape ({n},), got {codes.shape}")
        if not np.issubdtype(codes.dtype, np.integer):
            if not np.all(codes == np.round(codes)):
                raise ValueError("codes must be integers")
        codes = codes.astype(np.int64)
        if codes.min() < 0:
            raise ValueError("codes must be >= 0")
        zraw = np.asarray(zraw, dtype=float)
        if zraw.ndim == 1:
            zraw = zraw[:, None]
        if zraw.shape[0] != n:
            raise ValueError("Zraw must have N rows")
        out.append((codes, zraw, int(codes.max()) + 1))
    return out


def _n_theta(p):
    return p * (p + 1) // 2


def build_Z(terms, n=None):
    """Dense Z = [Z_1, ..., Z_K]; column j*p_k + c of Z_k is Zraw[:, c] * (codes == j)."""
    if n is None:
        n = len(np.asarray(terms[0][0]))
    blocks = []
    for codes, zraw, nlev in _as_terms(terms, n):
        p = zraw.shape[1]
        Zk = np.zeros((n, nlev * p))
        for j in range(nlev):
            ind = (codes == j).astype(float)
            for c in range(p):
                Zk[:, j * p + c] = zraw[:, c] * ind
        blocks.append(Zk)
    return np.hstack(blocks) if blocks else np.zeros((n, 0))


def theta_to_factors(theta, ps):
    """Split theta into the lower-triangular T_k (p_k x p_k), filled column-wise."""
    theta = np.asarray(theta, dtype=float).ravel()
    need = sum(_n_theta(p) for p in ps)
    if theta.size != need:
        raise ValueError(f"theta has length {theta.size}, expected {need}")
    Ts = []
    pos = 0
    for p in ps:
        T = np.zeros((p, p))
        for col in range(p):
            for row in range(col, p):
                T[row, col] = theta[pos]
                pos += 1
        Ts.append(T)
    return Ts


def _diag_mask(ps):
    """Boolean mask over theta: True where the entry is a diagonal of some T_k."""
    mask = []
    for p in ps:
        for col in range(p):
            for row in range(col, p):
                mask.append(row == col)
    return np.array(mask, dtype=bool)


def theta_lower_bounds(ps):
    """lme4's lower bounds: 0 for diagonal entries, -inf for off-diagonal ones."""
    return np.where(_diag_mask(ps), 0.0, -np.inf)


def default_theta0(ps):
    """lme4's default start: identity T_k (diagonal 1, off-diagonal 0)."""
    return np.where(_diag_mask(ps), 1.0, 0.0)


def _build_Lambda(Ts, nlevs):
    """Block-diagonal Lambda with l_k copies of T_k for each term."""
    blocks = []
    for T, nlev in zip(Ts, nlevs):
        blocks.extend([T] * nlev)
    if not blocks:
        return np.zeros((0, 0))
    return sla.block_diag(*blocks)


def _canonical_theta(theta, ps):
    """Flip the sign of any column of T_k with a negative diagonal (T T' unchanged)."""
    Ts = theta_to_factors(theta, ps)
    out = []
    for T in Ts:
        T = T.copy()
        for col in range(T.shape[0]):
            if T[col, col] < 0:
                T[:, col] = -T[:, col]
        p = T.shape[0]
        for col in range(p):
            for row in range(col, p):
                out.append(T[row, col])
    return np.array(out)


# ----------------------------------------------------------------------------
# Objective and everything at a fixed theta
# ----------------------------------------------------------------------------

class _Model:
    """Dense data for one model: y, X, Z, term structure."""

    def __init__(self, y, X, terms, weights=None, offset=None):
        y = np.asarray(y, dtype=float).ravel()
        if offset is not None:
            y = y - np.asarray(offset, dtype=float).ravel()
        self.R0 = None if weights is None else np.diag(1.0 / np.asarray(weights, dtype=float).ravel())
        n = y.size
        X = np.asarray(X, dtype=float)
        if X.ndim == 1:
            X = X[:, None]
        if X.shape[0] != n:
            raise ValueError("X must have N rows")
        tt = _as_terms(terms, n)
        self.y, self.X, self.n, self.p = y, X, n, X.shape[1]
        self.ps = [z.shape[1] for _, z, _ in tt]
        self.nlevs = [nl for _, _, nl in tt]
        self.Z = build_Z([(c, z) for c, z, _ in tt], n)
        if np.linalg.matrix_rank(X) < self.p:
            raise ValueError("X is rank deficient")

    def quantities(self, theta, reml=True, R0=None):
        """R0: (n, n) residual covariance / sigma^2 (nlme's correlation and variance
        structures, e.g. AR(1) within series); the identity when None."""
        n, p, y, X, Z = self.n, self.p, self.y, self.X, self.Z
        R0 = self.R0 if R0 is None else R0
        Ts = theta_to_factors(theta, self.ps)
        Lam = _build_Lambda(Ts, self.nlevs)
        ZL = Z @ Lam
        Vr = ZL @ ZL.T + (np.eye(n) if R0 is None else R0)   # V / sigma^2

        # log|Vr| via a dense Cholesky (Vr is SPD: I + PSD).
        cf = sla.cho_factor(Vr, lower=True)
        logdet_Vr = 2.0 * np.sum(np.log(np.diag(cf[0])))
        Vinv_X = sla.cho_solve(cf, X)
        Vinv_y = sla.cho_solve(cf, y)

        XtViX = X.T @ Vinv_X
        XtViy = X.T @ Vinv_y
        beta = np.linalg.solve(XtViX, XtViy)        # GLS estimate
        resid = y - X @ beta
        Vinv_r = sla.cho_solve(cf, resid)
        r2 = float(resid @ Vinv_r)                  # generalised RSS
        sign, logdet_XtViX = np.linalg.slogdet(XtViX)
        if sign <= 0:
            raise np.linalg.LinAlgError("X' Vr^-1 X is not positive definite")

        if reml:
            dof = n - p
            if dof <= 0:
                raise ValueError("REML needs n > p")
            obj = logdet_Vr + logdet_XtViX + dof * (1.0 + np.log(2.0 * np.pi * r2 / dof))
            sigma2 = r2 / dof
        else:
            obj = logdet_Vr + n * (1.0 + np.log(2.0 * np.pi * r2 / n))
            sigma2 = r2 / n

        return dict(
            objective=float(obj), sigma2=sigma2, beta=beta, r2=r2, Ts=Ts, Lam=Lam,
            Vr_cf=cf, XtViX=XtViX, resid=resid, Vinv_r=Vinv_r,
            logdet_Vr=logdet_Vr, logdet_XtViX=logdet_XtViX,
        )


@_blas1
def dense_objective(theta, y, X, terms, reml=True, R0=None, weights=None, offset=None):
    """Profiled REML criterion (reml=True) or ML deviance (reml=False) at theta; with R0,
    residual covariance sigma^2 R0 instead of sigma^2 I; with prior weights, sigma^2 / w_i;
    with an offset, of y - offset."""
    return _Model(y, X, terms, weights, offset).quantities(theta, reml, R0)["objective"]


@_blas1
def dense_quantities(theta, y, X, terms, reml=True, weights=None, offset=None):
    """All fit outputs (see dense_fit) evaluated at a fixed theta (no optimisation)."""
    m = _Model(y, X, terms, weights, offset)
    return _summarise(m, np.asarray(theta, dtype=float).ravel(), reml)


def _summarise(m, theta, reml):
    q = m.quantities(theta, reml)
    n, p = m.n, m.p
    sigma2 = q["sigma2"]
    sigma = float(np.sqrt(sigma2))
    beta = q["beta"]
    vcov_beta = sigma2 * np.linalg.inv(q["XtViX"])
    vcov_beta = 0.5 * (vcov_beta + vcov_beta.T)
    beta_se = np.sqrt(np.diag(vcov_beta))
    Ts = q["Ts"]
    varcov = [sigma2 * (T @ T.T) for T in Ts]

    # Conditional modes and conditional variances, in the marginal form:
    #   b | y ~ N(G Z' V^-1 (y - X beta),  G - G Z' V^-1 Z G)
    # with G = sigma^2 Lambda Lambda', V = sigma^2 Vr.
    Z = m.Z
    Lam = q["Lam"]
    Gr = Lam @ Lam.T                                 # G / sigma^2
    b = Gr @ (Z.T @ q["Vinv_r"])                     # = G Z' V^-1 r (sigma^2 cancels)
    GZt = Gr @ Z.T
    Vinv_ZG = sla.cho_solve(q["Vr_cf"], GZt.T)       # Vr^-1 Z Gr
    cond_full = sigma2 * (Gr - GZt @ Vinv_ZG)
    cond_full = 0.5 * (cond_full + cond_full.T)

    blups, cond_var = [], []
    off = 0
    for pk, nlev in zip(m.ps, m.nlevs):
        width = pk * nlev
        blups.append(b[off:off + width].reshape(nlev, pk))
        cv = np.empty((nlev, pk, pk))
        for j in range(nlev):
            s = off + j * pk
            cv[j] = cond_full[s:s + pk, s:s + pk]
        cond_var.append(cv)
        off += width

    obj = q["objective"]
    loglik = -0.5 * obj        # restricted log-likelihood for REML, as lme4's logLik
    k = len(theta) + p + 1
    aic = -2.0 * loglik + 2.0 * k
    bic = -2.0 * loglik + k * np.log(n)
    return dict(
        theta=np.array(theta, dtype=float), objective=obj, sigma=sigma, beta=beta,
        beta_se=beta_se, vcov_beta=vcov_beta, varcov=varcov, blups=blups,
        cond_var=cond_var, loglik=float(loglik), aic=float(aic), bic=float(bic),
        reml=bool(reml), nobs=n,
    )


# ----------------------------------------------------------------------------
# Optimisation
# ----------------------------------------------------------------------------

def _starts(ps, theta0, n_random, rng):
    base = default_theta0(ps)
    diag = _diag_mask(ps)
    starts = []
    if theta0 is not None:
        starts.append(np.asarray(theta0, dtype=float).ravel())
    starts.append(base)
    for s in (0.1, 0.4, 2.5):
        starts.append(base * s)
    for _ in range(n_random):
        t = np.where(diag, rng.uniform(0.05, 2.0, base.size), rng.normal(0.0, 0.5, base.size))
        starts.append(t)
    return starts


@_blas1
def dense_fit(y, X, terms, reml=True, theta0=None, n_random_starts=3, seed=0, weights=None,
              offset=None):
    """Fit the LMM by REML (default) or ML by brute-force optimisation of the dense objective.

    Multiple L-BFGS-B starts, then a bounded Nelder-Mead polish and a final
    L-BFGS-B pass from the polished point; the best point found wins.

    Returns dict with: theta, objective, sigma, beta, beta_se, vcov_beta,
    varcov (sigma^2 T_k T_k' per term), blups (per term (l_k, p_k)),
    cond_var (per term (l_k, p_k, p_k)), loglik, aic, bic, reml, nobs.
    """
    m = _Model(y, X, terms, weights, offset)
    # A start can wander to huge theta where Vr is numerically singular; f returns
    # inf there and scipy's finite differences then compute inf - inf (harmless).
    with np.errstate(invalid="ignore", over="ignore"):
        theta = _optimise(m, reml, theta0, n_random_starts, seed)
    return _summarise(m, theta, reml)


def _optimise(m, reml, theta0, n_random_starts, seed):
    ps = m.ps
    lb = theta_lower_bounds(ps)
    if len(lb) == 0:
        raise ValueError("no random-effects terms")
    bounds = [(None if not np.isfinite(l) else l, None) for l in lb]
    rng = np.random.default_rng(seed)

    def f(t):
        try:
            v = m.quantities(t, reml)["objective"]
        except (np.linalg.LinAlgError, ValueError):
            return np.inf
        return v if np.isfinite(v) else np.inf

    best_x, best_f = None, np.inf

    def consider(x):
        nonlocal best_x, best_f
        x = np.maximum(np.asarray(x, dtype=float), np.where(np.isfinite(lb), lb, -np.inf))
        fx = f(x)
        if fx < best_f:
            best_x, best_f = x.copy(), fx

    lbfgs_opts = dict(ftol=1e-15, gtol=1e-11, maxiter=20000, maxfun=100000)
    for s in _starts(ps, theta0, n_random_starts, rng):
        s = np.maximum(s, np.where(np.isfinite(lb), lb, -np.inf))
        r = sopt.minimize(f, s, method="L-BFGS-B", bounds=bounds, options=lbfgs_opts)
        consider(r.x)

    # Nelder-Mead polish (bounded) from the best point, restarted until no gain.
    nm_bounds = [(l if np.isfinite(l) else None, None) for l in lb]
    for _ in range(5):
        before = best_f
        # fatol must stay above the rounding noise of the objective (~1e-13 |f|),
        # otherwise the simplex never meets both tolerances.
        r = sopt.minimize(
            f, best_x, method="Nelder-Mead", bounds=nm_bounds,
            options=dict(xatol=1e-9, fatol=max(1e-11, 1e-13 * abs(best_f)),
                         maxiter=5000 * len(lb), maxfev=5000 * len(lb),
                         adaptive=len(lb) > 2),
        )
        consider(r.x)
        r = sopt.minimize(f, best_x, method="L-BFGS-B", bounds=bounds, options=lbfgs_opts)
        consider(r.x)
        if before - best_f < 1e-12:
            break

    if best_x is None:
        raise RuntimeError("dense oracle: the objective could not be evaluated at any start")

    # Snap tiny diagonal entries to the boundary if that is no worse.
    snapped = best_x.copy()
    snapped[_diag_mask(ps) & (np.abs(snapped) < 1e-6)] = 0.0
    if f(snapped) <= best_f + 1e-12:
        best_x = snapped

    return _canonical_theta(best_x, ps)
