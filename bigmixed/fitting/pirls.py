"""Penalized iteratively reweighted least squares (PIRLS): the conditional modes of a GLMM.

For fixed theta (and, for the modes-only flavour, fixed beta), PIRLS repeats: at the current
linear predictor eta, the working weights W and working response z (kernels/glm.py); the
weighted cross-products of [Z X z] (bigmixed.crossprods.weighted) written into the arrays a
solver was built on, and ``system.refresh()``; one solve of the penalized least-squares
problem min ||W^1/2 (z - X beta - Z Lambda u)||^2 + ||u||^2 -- the LMM's own, so every solver
(block-diagonal, CHOLMOD, Schur) serves -- giving the new (beta, u); step halving while the
penalized deviance dev + ||u||^2 does not decrease (lme4's pwrssUpdate).

Two flavours, as glmer's two stages:

* joint (nAGQ = 0): beta and u together; the criterion is dev + ||u||^2 + log det(L L') + c;
* modes (nAGQ >= 1): beta fixed (its part of eta goes into the offset), u only; the criterion
  (Laplace) is the same expression at the modes.

The iteration stops when the penalized deviance changes by less than `tol` (relative), and the
criterion is evaluated where the last weights were taken, so determinant and deviance belong to
the same point (the exact Laplace value at the converged modes).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..crossprods.weighted import assign_crossprods, weighted_crossprods
from ..kernels.glm import add_ranef, glm_working_response
from ..solvers.choose import SYSTEMS, auto_solver
from .objective import NotPositiveDefinite, ProfiledState, profiled_state

PIRLS_TOL = 1e-12  # relative change of the penalized deviance (lme4's tolPwrss: 1e-7)
PIRLS_MAXIT = 100
MAX_HALVINGS = 20  # lme4's maxstephalfit


class PirlsError(ArithmeticError):
    """PIRLS failed: no decrease after step halving, or NaN."""


@dataclass
class PirlsResult:
    """The converged point: criterion pieces and where they were taken."""

    deviance: float  # sum of the deviance residuals at eta
    u2: float  # ||u||^2
    logdet: float  # log det(Lambda'Z'WZ Lambda + I), W at eta
    eta: np.ndarray  # (n,) the linear predictor at the modes
    u: list  # per factor (n_levels, P): spherical modes
    beta_work: np.ndarray  # joint flavour: beta in the working basis (modes: empty)
    state: object  # ProfiledState of the last solve (joint flavour: R_X)
    iterations: int
    # lme4's flavour: the linearization point of the last solve (its weights are those of
    # lme4's L, which condVar uses), or None
    eta_solved: object = None

    @property
    def penalized_deviance(self) -> float:
        return self.deviance + self.u2

    @property
    def laplace(self) -> float:
        """dev + ||u||^2 + log det (the -2 log-likelihood without the family's constant)."""
        return self.deviance + self.u2 + self.logdet


class WorkingSystem:
    """The weighted penalized least-squares system of one PIRLS flavour on a model's rows:
    cross-products of [Z X z] (joint) or [Z z] (modes) whose arrays a solver was built on."""

    def __init__(self, model, joint: bool, solver: str, eta: np.ndarray):
        self.model = model
        self.joint = joint
        n = model.n_obs
        self.X = model.rows.X if joint else np.zeros((n, 0))
        self.basis = model.basis if joint else None
        self.p = self.X.shape[1]
        self.w = np.empty(n)
        self.z = np.empty(n)
        offset = model.offset if joint else eta  # any start: the arrays are overwritten
        cp = self._crossprods(eta, offset)
        self.cp = cp
        if solver == "auto":
            solver = auto_solver(cp, model.structure)
        self.solver = solver
        self.system = SYSTEMS[solver](cp, model.structure)
        self.deviance = np.nan

    def _crossprods(self, eta, offset_z):
        m = self.model
        fam, link = m.family_id, m.link_id
        # (w and z = (eta - offset_z) + wres in one pass, the same bits as glm_working's)
        hi, lo = glm_working_response(m.y, eta, np.ascontiguousarray(offset_z, dtype=np.float64),
                                      m.prior_weights, fam, link, self.w, self.z)
        self.deviance = float(hi + lo)
        cp = weighted_crossprods(m.structure, self.X, self.z, self.w, m.pair_plans)
        return self.basis.apply(cp) if self.basis is not None else cp

    def load(self, eta: np.ndarray, offset_z: np.ndarray) -> float:
        """Linearize at eta (working response relative to offset_z): the system now holds the
        weighted cross-products there. Returns the deviance at eta."""
        assign_crossprods(self.cp, self._crossprods(eta, offset_z))
        self.system.refresh()
        return self.deviance

    def solve(self, theta):
        """The penalized least-squares solution at theta with the loaded weights:
        (logdet, beta_work, spherical modes per factor, ProfiledState)."""
        logdet, S = self.system.update(theta)
        if not np.isfinite(logdet):
            raise PirlsError("Lambda'Z'WZ Lambda + I is not positive definite")
        try:
            state = profiled_state(logdet, S, self.model.n_obs, self.p)
        except NotPositiveDefinite as e:
            raise PirlsError(str(e)) from None
        beta_work = state.beta_work() if self.p else np.zeros(0)
        us, _ = self.system.modes(theta, beta_work, condvar=False)
        return logdet, beta_work, us, state


def linear_predictor(model, base: np.ndarray, theta, us) -> np.ndarray:
    """base + Z Lambda(theta) u (base: offset + X beta)."""
    st = model.structure
    eta = np.array(base, dtype=np.float64, copy=True)
    for fi, f in enumerate(st.factors):
        b = np.ascontiguousarray(us[fi] @ st.T_of(theta, fi).T)
        add_ranef(f.codes, model.unit_Z[fi], f.unit_z, b, eta)
    return eta


def pirls(model, ws, theta, eta0, u0: list, fixed_eta=None,
          consistent_start: bool = False, tol: float = PIRLS_TOL,
          maxit: int = PIRLS_MAXIT, lme4: bool = False) -> PirlsResult:
    """PIRLS from the linear predictor eta0, the first linearization point.

    ws.joint: beta and u (fixed_eta unused: eta = offset + X beta + Z Lambda u). Otherwise
    u only, with fixed_eta = offset + X beta. With consistent_start, eta0 is the linear
    predictor of the modes u0 (and beta) at this theta, and the first step must decrease the
    penalized deviance there; otherwise (glmer's lp0, a previous fit's eta) the first step is
    taken whatever it gives, as lme4 does.

    The linear predictors (eta0, fixed_eta, the iterates) are whatever the model represents
    them by -- row arrays in memory, coefficients for rows that stay in Dask -- and the model
    computes with them: ``model.deviance_at(eta)``, ``model.fixed_eta(beta)``,
    ``model.linear_predictor(base, theta, u)``; ``ws`` is a `WorkingSystem` or one with its
    interface (load, solve, joint, p).

    lme4: glmer's own evaluation (pwrssUpdate): the convergence test comes right after the
    deviance at the new iterate, and the determinant is the one of the step that led there,
    i.e. with the weights of the iterate before (lme4's ldL2 after its last decomposition).
    """
    offset_z = model.offset if ws.joint else fixed_eta
    eta = eta0
    u = [np.array(x, dtype=np.float64) for x in u0]
    beta = np.zeros(ws.p)
    prev = None  # (eta, u, beta, pdev) of the last accepted point
    last = None  # (logdet, state) of the last solve
    for it in range(1, maxit + 1):
        dev = ws.load(eta, offset_z)
        pdev = dev + sum(float(np.sum(x * x)) for x in u)
        if prev is not None and not (pdev <= prev[3]):
            # the full step raised the penalized deviance (or gave NaN): halve toward prev
            for _ in range(MAX_HALVINGS):
                eta = 0.5 * (prev[0] + eta)
                u = [0.5 * (a + b) for a, b in zip(prev[1], u)]
                beta = 0.5 * (prev[2] + beta)
                pdev = model.deviance_at(eta) + sum(float(np.sum(x * x)) for x in u)
                if pdev <= prev[3]:
                    break
            else:
                if not np.isfinite(pdev):
                    raise PirlsError("PIRLS gave NaN")
                if pdev - prev[3] > tol * abs(prev[3]):
                    raise PirlsError("step halving failed to reduce the penalized deviance")
            dev = ws.load(eta, offset_z)
            pdev = dev + sum(float(np.sum(x * x)) for x in u)
        if lme4 and last is not None and abs(prev[3] - pdev) < tol * abs(pdev):
            return PirlsResult(dev, pdev - dev, last[0], eta, u,
                               beta if ws.joint else np.zeros(0), last[1], it, prev[0])
        logdet, beta_new, u_new, state = ws.solve(theta)
        last = (logdet, state)
        if not lme4 and prev is not None and abs(prev[3] - pdev) <= tol * abs(pdev):
            return PirlsResult(dev, pdev - dev, logdet, eta, u,
                               beta if ws.joint else np.zeros(0), state, it)
        prev = (eta, u, beta, pdev if (prev is not None or consistent_start) else np.inf)
        base = model.fixed_eta(model.basis.W @ beta_new) if ws.joint else fixed_eta
        eta = model.linear_predictor(base, theta, u_new)
        u, beta = u_new, beta_new
    raise PirlsError(f"PIRLS did not converge in {maxit} iterations")


def level_joint_pirls(model, theta, eta0: np.ndarray, tol: float = PIRLS_TOL,
                      maxit: int = PIRLS_MAXIT, lme4: bool = False,
                      keep_solved: bool = False) -> PirlsResult:
    """`pirls` in its joint flavour from eta0 with u = 0 (stage 1's evaluations), step for step
    the same iteration, for one grouping factor and one random-effect column: each iteration is
    one pass over the rows sorted by level (kernels.glmm_joint.joint_pass) and a small solve
    (joint_solve) instead of the weighted cross-products and a solver. The iterates are (beta,
    u) (working basis, spherical); a step halving moves them toward the last accepted ones (eta
    is linear in them), never toward eta0, whose penalized deviance counts as infinite there
    as in `pirls`. keep_solved: the result's eta_solved (lme4's flavour), as `pirls` gives it
    (a copy of eta at every accepted point)."""
    from ..kernels.glmm_joint import joint_pass, joint_solve

    of = model.one_factor
    order = of["order"]
    n_levels = len(of["indptr"]) - 1
    p = model.n_fixed
    t = float(np.asarray(theta, dtype=np.float64)[0])
    X, x_order = of["X"], of["x_order"]  # (X in level order, see GeneralizedLinearMixedModel.one_factor)
    W = model.basis.W
    M = model.basis.matrix()
    offset = of["offset"]
    A = np.empty(n_levels)
    b = np.empty((n_levels, p + 1))
    G = np.empty((p + 1, p + 1))
    eta_sorted = np.empty(model.n_obs)
    no_eta = eta_sorted[:0]

    def load(beta_work, u, eta_lin=no_eta, with_sums=True):
        hi, lo = joint_pass(of["indptr"], x_order, X, offset, of["Z"], of["unit"], of["y"],
                            of["w"], t, model.family_id, model.link_id, eta_lin,
                            np.ascontiguousarray(W @ beta_work), u, with_sums, A, b, G,
                            eta_sorted)
        return float(hi + lo)

    def unsorted(a):
        out = np.empty(model.n_obs)
        out[order] = a
        return out

    def result(dev, u, beta_work, logdet, chol, it, solved=None):
        state = ProfiledState(float(logdet), chol, model.n_obs, p)
        return PirlsResult(dev, float(u @ u), float(logdet), unsorted(eta_sorted),
                           [u[:, None].copy()], beta_work, state, it,
                           None if solved is None else unsorted(solved))

    u = np.zeros(n_levels)
    beta = np.zeros(p)
    prev = None  # (u, beta, pdev) of the last accepted point
    last = None  # (logdet, chol) of the last solve
    # the first pass, at eta0, does not depend on theta: every evaluation of stage 1 starts
    # from the same lp0 (glmer's), so its sums are kept for the next ones (the same bits)
    cached = getattr(model, "_joint_first_pass", None)
    if cached is not None and cached[0] is eta0:
        _, dev, A0, b0, G0 = cached
        A[...] = A0
        b[...] = b0
        G[...] = G0
    else:
        dev = load(beta, u, np.ascontiguousarray(eta0[order]))
        model._joint_first_pass = (eta0, dev, A.copy(), b.copy(), G.copy())
    eta_prev = None  # keep_solved: eta (sorted) at the last accepted point
    for it in range(1, maxit + 1):
        if it > 1:
            # where lme4's convergence test may end the iteration, the deviance alone first:
            # the weighted sums only if it goes on (the same values either way)
            may_end = lme4 and last is not None and np.isfinite(prev[2])
            dev = load(beta, u, with_sums=not may_end)
            pdev = dev + float(u @ u)
            if may_end and not (pdev <= prev[2] and abs(prev[2] - pdev) < tol * abs(pdev)):
                dev = load(beta, u)
        pdev = dev + float(u @ u)
        if prev is not None and not (pdev <= prev[2]):
            for _ in range(MAX_HALVINGS):
                u = 0.5 * (prev[0] + u)
                beta = 0.5 * (prev[1] + beta)
                dev = load(beta, u)
                pdev = dev + float(u @ u)
                if pdev <= prev[2]:
                    break
            else:
                if not np.isfinite(pdev):
                    raise PirlsError("PIRLS gave NaN")
                if pdev - prev[2] > tol * abs(prev[2]):
                    raise PirlsError("step halving failed to reduce the penalized deviance")
        if lme4 and last is not None and abs(prev[2] - pdev) < tol * abs(pdev):
            return result(dev, u, beta, last[0], last[1], it, eta_prev)
        chol = np.empty((p + 1, p + 1))
        u_new = np.empty(n_levels)
        logdet, ok = joint_solve(A, b, G, M, t, chol, u_new)
        if not ok or not np.isfinite(logdet):
            raise PirlsError("the penalized least-squares system is not positive definite")
        last = (logdet, chol)
        if not lme4 and prev is not None and abs(prev[2] - pdev) <= tol * abs(pdev):
            return result(dev, u, beta, logdet, chol, it)
        prev = (u, beta, pdev if prev is not None else np.inf)
        if keep_solved:
            eta_prev = (np.ascontiguousarray(eta0[order]) if it == 1 and cached is not None
                        and cached[0] is eta0 else eta_sorted.copy())
        u, beta = u_new, ProfiledState(logdet, chol, model.n_obs, p).beta_work()
    raise PirlsError(f"PIRLS did not converge in {maxit} iterations")
