"""Generalized linear mixed models as lme4's glmer fits them: the Laplace approximation
(nAGQ = 1) or adaptive Gauss-Hermite quadrature (nAGQ > 1, one scalar random-effect term),
with PIRLS for the conditional modes on the same sparse Henderson system as the LMM.

formula -> design -> structure -> **PIRLS (weighted cross-products, factor)** -> objective ->
optimizer -> results.

glmer's two stages:

1. nAGQ = 0: BOBYQA over theta; at each theta PIRLS finds beta and the modes jointly
   (bigmixed.fitting.pirls, joint flavour); the criterion is dev + ||u||^2 + log det + c.
2. BOBYQA over (theta, beta) from stage 1's end, at each point PIRLS for the modes only and
   the Laplace (or quadrature) value. beta is searched in a well-conditioned basis: beta =
   beta_1 + C gamma, C = W R_X^{-1} from stage 1 (gamma in units of standard errors), which is
   what makes the ill-scaled covariates of registry data harmless (glmer's "failed to converge"
   on wbc ~ 6000). Newton steps on finite differences then converge to ~1e-8, and the
   Hessian there gives lme4's default Var(beta) (vcov with use.hessian).

pirls="exact" with one grouping factor and one random-effect column has the analytic gradient
of the Laplace criterion (kernels/glmm_gradient.py): stage 1 is then only the joint PIRLS at
the start theta (beta_1 and the basis C; the full BOBYQA stage 1 follows only if stage 2 does
not apply from there), stage 2 is quasi-Newton on the gradient, computed with the modes in one
kernel call per point (blockdiag_laplace_fused), from the analytic Hessian at its start
(blockdiag_laplace_hessian), which also gives Var(beta).

With glmer's criterion (pirls="lme4") and the same one-factor, one-column models, stage 2 is
quasi-Newton from stage 1's end on the analytic gradient of glmer's criterion itself
(forward-mode tangents through its PIRLS iterations: kernels/glmm_pirls_gradient.py), from the
exact Laplace criterion's analytic Hessian there (should that not apply: the exact optimum by
its analytic steps first); the differences of that gradient give the Hessian for Var(beta).
Stage 1's joint PIRLS runs level by level too (kernels/glmm_joint.py, `level_joint_pirls`).

With one grouping factor the modes of different levels do not interact and stage 2 runs level
by level in one compiled kernel over rows sorted by level (kernels/glmm.py): one pass over the
rows per evaluation.
"""
from __future__ import annotations

import time
import warnings as _warnings

import numpy as np

from ..crossprods.basis import FixedEffectsBasis
from ..crossprods.weighted import pair_plans
from ..errors import BigmixedError
from ..kernels.ghrule import MAX_AGQ, gauss_hermite_rule
from ..kernels.glm import glm_aic_constant, glm_deviance
from ..kernels.glmm import blockdiag_agq, blockdiag_pirls, level_order, sorted_fixed_eta
from ..kernels.glmm_gradient import blockdiag_laplace_fused, blockdiag_laplace_hessian
from ..kernels.glmm_pirls_gradient import blockdiag_pirls_gradient, start_level_sums
from ..results.rows import InMemoryRows
from ..spec import glm_inputs
from ..spec.design import build_design
from ..spec.family import family_from
from ..spec.structure import RandomEffectsStructure
from ..warnings import ConvergenceWarning, SingularFitWarning
from .control import FitControl
from ..solvers.blas import BlasThreads
from .optimize import minimize_scalar, minimize_theta, newton_polish, quasi_newton
from .pirls import (PIRLS_TOL, PirlsError, PirlsResult, WorkingSystem, level_joint_pirls,
                    linear_predictor, pirls)
from .record import OptimizerRecord, StageRecord

SOLVERS = ("auto", "blockdiag", "cholmod", "schur")
LEVEL_TOL = 1e-13  # per-level PIRLS convergence of the one-factor kernel
LEVEL_MAXIT = 60
# ... or when its next step would move a mode by at most this (relative to 1 + |u|): the
# exact criterion evaluations then skip the pass that would confirm it
LEVEL_STEP_TOL = 1e-10
LME4_TOL = 1e-7  # glmerControl's tolPwrss
# pirls="exact" with the analytic gradient: stage 2 from the joint PIRLS at the start theta (no
# BOBYQA over theta first; it follows only if stage 2 does not apply from there)
EXACT_STAGE2_FROM_START = True
# ... where the joint PIRLS only gives stage 2 a start and the beta basis: loosely converged
START_PIRLS_TOL = 1e-6
_EMPTY_Z = np.ones((0, 1))


def _link_eta(mu: np.ndarray, link: str) -> np.ndarray:
    """The link function g(mu) (for the start only)."""
    from scipy import special, stats

    if link == "logit":
        return special.logit(mu)
    if link == "probit":
        return stats.norm.ppf(mu)
    if link == "cloglog":
        return np.log(-np.log1p(-mu))
    return np.log(mu)


def start_eta(family, y: np.ndarray, prior_w: np.ndarray) -> np.ndarray:
    """R's starting linear predictor: the link of the family's starting means."""
    return _link_eta(family.start_mu(y, prior_w), family.link)


class GeneralizedLinearMixedModel:
    """A GLMM bound to data, ready to fit (see the module docstring; build with `bm.glmm`).

    Parameters
    ----------
    formula : str
        lme4 syntax; the response may be ``cbind(successes, failures)``, the fixed part may hold
        ``offset(...)`` terms.
    data : pandas.DataFrame
    family : "binomial", "poisson", bm.Binomial(link=...), bm.Poisson()
    link : str, optional: the family's link (logit, probit, cloglog; log)
    weights : column name, expression or array, optional: prior weights (binomial: trials for a
        proportion response)
    offset : column name, expression or array, optional: added to the linear predictor
    nAGQ : int: 1 (Laplace, default), 0 (stage 1 only, as glmer's nAGQ = 0), or up to 25
        quadrature points for a single scalar random-effect term
    solver : as `bm.lmm` ("auto", "blockdiag", "cholmod", "schur")
    pirls : "auto" (default: "lme4", except "exact" for the probit link), "lme4" or "exact".
        "lme4" evaluates the criterion as glmer does: each
        evaluation restarts PIRLS from the same linear predictor (lme4's lp0), stops at a
        relative change of 1e-7 in the penalized deviance and takes the determinant with the
        weights of the iterate before the last; the optimum is then glmer's (which differs
        from the exact Laplace optimum by ~1e-4 in beta on small data). "exact" converges the
        modes to 1e-13 and takes everything at them: the Laplace approximation itself.
    """

    def __init__(self, formula: str, data, *, family="binomial", link=None, weights=None,
                 offset=None, nAGQ: int = 1, solver: str = "auto", pirls: str = "auto"):
        t0 = time.perf_counter()
        self._options(family, link, nAGQ, solver, pirls)
        inputs = glm_inputs.prepare(formula, data, weights=weights, offset=offset)
        self.inputs = inputs
        # how predict re-evaluates the offset on new data: the formula's offset() terms, and
        # offset= as an expression (a column), or "values" when it was given as numbers
        self.offset_spec = {"terms": tuple(inputs.offset_terms),
                            "argument": None if offset is None else
                            (offset if isinstance(offset, str) else "values")}
        label = inputs.response_label
        try:
            design = build_design(inputs.formula, inputs.data, extra_columns=inputs.extra_columns,
                                  scale_free=True)
        except BigmixedError as e:
            if glm_inputs.RESPONSE in str(e):
                raise type(e)(str(e).replace(f"'{glm_inputs.RESPONSE}'", repr(label))
                              .replace(glm_inputs.RESPONSE, label)) from None
            raise
        self._setup(design, formula, label, solver, t0)

    @classmethod
    def from_design(cls, design, *, family="binomial", link=None, nAGQ: int = 1,
                    solver: str = "auto", pirls: str = "auto") -> "GeneralizedLinearMixedModel":
        """A GLMM on an already evaluated `Design` (no prior weights, no offset): e.g. the
        shared design of fit_many."""
        self = cls.__new__(cls)
        self._options(family, link, nAGQ, solver, pirls)
        self.inputs = glm_inputs.GLMInputs(design.formula, None)
        self.offset_spec = {"terms": (), "argument": None}
        self._setup(design, design.formula, design.response, solver, time.perf_counter())
        return self

    def _options(self, family, link, nAGQ, solver, pirls) -> None:
        self.family = family_from(family, link)
        self.family_id, self.link_id = self.family.ids
        from ..spec.checks import check_choice, check_int  # typed: bm.OptionError

        check_choice("bm.glmm", "solver", solver, SOLVERS)
        check_int("bm.glmm", "nAGQ", nAGQ, 0, MAX_AGQ)
        self.nAGQ = int(nAGQ)
        check_choice("bm.glmm", "pirls", pirls, ("auto", "lme4", "exact"))
        if pirls == "auto":
            # glmer's probit PIRLS converges slowly (no floor on mu.eta, linear convergence):
            # stopped at 1e-7, its criterion is rough at ~1e-6 and its optimum ill-defined; the
            # exact Laplace approximation is the well-defined target there
            pirls = "exact" if self.family.link == "probit" else "lme4"
        self.pirls_mode = pirls

    def _setup(self, design, formula, label, solver, t0) -> None:
        self.formula = formula
        self.response_label = label
        self.design = design
        self.structure = RandomEffectsStructure(design.terms)
        self.rows = InMemoryRows(design, self.structure)
        n, p = design.X.shape
        self.n_obs, self.n_fixed = n, p
        self.y = np.ascontiguousarray(design.y, dtype=np.float64)
        self.prior_weights = self._extra(glm_inputs.WEIGHTS, 1.0)
        self.offset = self._extra(glm_inputs.OFFSET, 0.0)
        self.family.check_response(self.y, self.prior_weights, f"response {label!r}")
        hi, lo, _ = glm_aic_constant(self.y, self.prior_weights, np.zeros(0), self.family_id)
        self.aic_constant = float(hi + lo)
        st = self.structure
        self.unit_Z = [_EMPTY_Z if f.unit_z else f.Z for f in st.factors]
        self.pair_plans = pair_plans(st)
        # a well-conditioned basis of X (from X'X alone: the working response changes)
        gram = np.zeros((p + 1, p + 1))
        gram[:p, :p] = design.X.T @ design.X
        gram[p, p] = 1.0
        self.basis = FixedEffectsBasis.from_gram(gram, p)
        self.eta_start = start_eta(self.family, self.y, self.prior_weights)
        if self.nAGQ > 1 and not (len(st.factors) == 1 and st.factors[0].n_columns == 1):
            raise ValueError("nAGQ > 1 is only available for models with a single, scalar "
                             "random-effects term (as in lme4)")
        self.solver_option = solver
        self.use_level_kernels = True
        self._joint = None
        self._modes = None
        self._one_factor = None
        self.timings = {"design": time.perf_counter() - t0}

    def with_response(self, y, *, response: str | None = None,
                      formula: str | None = None) -> "GeneralizedLinearMixedModel":
        """A new, independent model for another response on the same rows (fit_many, the
        bootstrap): the design, the structure, the co-occurrence plan, the basis of X and the
        order of the rows by level are shared; the working systems are its own."""
        import copy
        from dataclasses import replace

        y = np.ascontiguousarray(y, dtype=np.float64)
        if y.shape != self.y.shape:
            raise ValueError(f"y must have one value per row used ({self.y.shape[0]}), got shape {y.shape}")
        label = self.response_label if response is None else response
        self.family.check_response(y, self.prior_weights, f"response {label!r}")
        new = copy.copy(self)
        changes = {"y": y}
        if response is not None:
            changes["response"] = response
        if formula is not None:
            changes["formula"] = formula
            new.formula = formula
        new.design = replace(self.design, **changes)
        new.rows = InMemoryRows(new.design, self.structure)
        new.response_label = label
        new.y = y
        hi, lo, _ = glm_aic_constant(y, self.prior_weights, np.zeros(0), self.family_id)
        new.aic_constant = float(hi + lo)
        new.eta_start = start_eta(self.family, y, self.prior_weights)
        new._joint = new._modes = None
        new._lp0 = new._eta0 = new._u_warm = new._last0 = new._best0 = None
        new._joint_first_pass = new._lp0_stage1 = None
        new._modes_factors = new._modes_solved = None
        if self._one_factor is not None:
            of = self._one_factor
            new._one_factor = dict(of, y=np.ascontiguousarray(y[of["order"]]),
                                   u=np.zeros_like(of["u"]), u_exact=np.zeros_like(of["u"]),
                                   L=np.empty_like(of["L"]))
            new._one_factor.pop("lp0", None)
            new._one_factor.pop("exact_at", None)
            new._one_factor.pop("du", None)
            new._one_factor.pop("lme4_at", None)
            new._one_factor.pop("lp0_sums", None)
        new.timings = {"design": 0.0}
        return new

    def _extra(self, name, default):
        cols = {c for c, _ in self.inputs.extra_columns}
        key = next((c for c in cols if c.startswith(name)), None)
        if key is None:
            return np.full(self.design.y.shape[0], default)
        return np.ascontiguousarray(self.design.extra[key].to_numpy(dtype=np.float64))

    # ---- the two PIRLS systems, built on first use ------------------------------------
    @property
    def joint_system(self) -> WorkingSystem:
        if self._joint is None:
            solver = self.solver_option
            self._joint = WorkingSystem(self, True, solver, self.eta_start)
        return self._joint

    @property
    def modes_system(self) -> WorkingSystem:
        if self._modes is None:
            self._modes = WorkingSystem(self, False, self.solver, self.eta_start)
        return self._modes

    @property
    def solver(self) -> str:
        name = getattr(self, "_solver_name", None)
        if self._joint is None and name is None and self.level_joint:
            name = "blockdiag"  # (auto_solver's choice for one factor; no joint system built)
        return name if (self._joint is None and name is not None) else self.joint_system.solver

    @property
    def one_factor(self):
        """Rows sorted by level for the one-factor kernels (None with several factors, or when
        use_level_kernels is off: then PIRLS runs on the solver as for several factors)."""
        if len(self.structure.factors) != 1 or not self.use_level_kernels:
            return None
        if self._one_factor is None:
            f = self.structure.factors[0]
            indptr = np.empty(f.n_levels + 1, dtype=np.int64)
            order = np.empty(len(f.codes), dtype=np.int64)
            # rows already in level order (registries often are): the model's own arrays
            in_order = bool(level_order(np.ascontiguousarray(f.codes), indptr, order))

            def by_level(a):
                return np.ascontiguousarray(a if in_order else a[order])

            Z = _EMPTY_Z if f.unit_z else by_level(f.Z)
            # the fixed columns in level order too (the kernels read row x_order[i] of X): on
            # rows not in level order, reading them through `order` costs each pass a gather
            # (bin_1m shuffled: 5.5 s against 1.7 s in level order), the copy n p doubles
            X = np.ascontiguousarray(self.design.X, dtype=np.float64)
            self._one_factor = dict(order=order, indptr=indptr, Z=Z, unit=f.unit_z,
                                    X=by_level(X),
                                    x_order=order if in_order else np.arange(len(order)),
                                    y=by_level(self.y), w=by_level(self.prior_weights),
                                    offset=by_level(self.offset),
                                    u=np.zeros((f.n_levels, f.n_columns)),
                                    u_exact=np.zeros((f.n_levels, f.n_columns)),
                                    L=np.empty((f.n_levels, f.n_columns, f.n_columns)))
        return self._one_factor

    # ---- stage 1: nAGQ = 0 ------------------------------------------------------------
    def _pirls_options(self) -> dict:
        return (dict(lme4=True, tol=LME4_TOL) if self.pirls_mode == "lme4"
                else dict(lme4=False, tol=PIRLS_TOL))

    def objective0(self, theta, tol: float | None = None):
        """glmer's nAGQ = 0 criterion at theta (beta and the modes jointly by PIRLS from the
        stage's lp0), or inf. tol: PIRLS's tolerance instead of the mode's."""
        theta = np.asarray(theta, dtype=np.float64)
        u0 = [np.zeros((f.n_levels, f.n_columns)) for f in self.structure.factors]
        if self.pirls_mode == "lme4":
            eta0 = self.lp0
        else:  # warm start from the last modes: the exact value does not depend on it
            eta0 = self._eta0 if getattr(self, "_eta0", None) is not None else self.lp0
        options = self._pirls_options()
        if tol is not None:
            options["tol"] = tol
        try:
            r = self._joint_pirls(theta, eta0, u0, options)
        except PirlsError:
            return np.inf
        self._eta0 = r.eta
        self._last0 = (theta.copy(), r)
        value = r.laplace + self.aic_constant
        if not np.isfinite(value):
            return np.inf
        best = getattr(self, "_best0", None)
        if best is None or value < best[0]:
            self._best0 = (value, theta.copy(), r)
        return value

    @property
    def lp0(self) -> np.ndarray:
        """glmer's lp0: where every evaluation's PIRLS starts. Stage 1: the joint PIRLS at
        lme4's start theta from the family's starting means; stage 2: the linear predictor
        at stage 1's optimum (set by `fit`)."""
        if getattr(self, "_lp0", None) is None:
            u0 = [np.zeros((f.n_levels, f.n_columns)) for f in self.structure.factors]
            r = self._joint_pirls(self.structure.initial_theta(), self.eta_start, u0,
                                  self._pirls_options())
            self._lp0 = r.eta
        return self._lp0

    @property
    def level_joint(self) -> bool:
        """Whether the joint PIRLS runs level by level (`level_joint_pirls`: one grouping
        factor, one random-effect column, the block-diagonal solver) instead of on a solver."""
        return (self.one_factor is not None and self.structure.factors[0].n_columns == 1
                and self.solver_option in ("auto", "blockdiag"))

    def _joint_pirls(self, theta, eta0, u0, options) -> PirlsResult:
        """The joint PIRLS (stage 1) from eta0 with modes u0 (zeros); options of `pirls`
        (keep_solved: `level_joint_pirls`'s, the solver's PIRLS always keeps it)."""
        if self.level_joint:
            return level_joint_pirls(self, theta, eta0, **options)
        options = {k: v for k, v in options.items() if k != "keep_solved"}
        return pirls(self, self.joint_system, theta, eta0, u0, **options)

    # ---- the linear predictor on the rows (in memory: arrays; bigmixed.fitting.pirls) ---
    def fixed_eta(self, beta) -> np.ndarray:
        """offset + X beta."""
        return self.offset + self.design.X @ beta

    def linear_predictor(self, base, theta, us) -> np.ndarray:
        """base + Z Lambda(theta) u."""
        return linear_predictor(self, base, theta, us)

    def deviance_at(self, eta) -> float:
        """The deviance sum_i dev_i at the linear predictor eta."""
        hi, lo = glm_deviance(self.y, eta, self.prior_weights, self.family_id, self.link_id)
        return float(hi + lo)

    # ---- stage 2: (theta, beta) -------------------------------------------------------
    def beta_of(self, gamma) -> np.ndarray:
        return self._beta_ref + self._C @ np.asarray(gamma, dtype=np.float64)

    def objective(self, params, exact: bool | None = None) -> float:
        """The Laplace (nAGQ = 1) or quadrature criterion at params = (theta, gamma), beta =
        beta_ref + C gamma (see `set_beta_basis`); inf if undefined. exact=True: the exact
        Laplace value whatever pirls_mode is (one grouping factor only; warm-started from
        the last exact modes)."""
        params = np.asarray(params, dtype=np.float64)
        k = self.structure.n_theta
        theta, gamma = params[:k], params[k:]
        beta = self.beta_of(gamma)
        try:
            value = self._criterion(theta, beta, exact)
        except PirlsError:
            return np.inf
        return value if np.isfinite(value) else np.inf

    def sorted_fixed_eta(self, beta) -> np.ndarray:
        """offset + X beta of the rows sorted by level (one-factor models: `one_factor`)."""
        of = self.one_factor
        out = np.empty(self.n_obs)
        sorted_fixed_eta(of["x_order"], of["offset"], of["X"],
                         np.ascontiguousarray(beta, dtype=np.float64), out)
        return out

    def _criterion(self, theta, beta, exact: bool | None = None) -> float:
        of = self.one_factor
        exact = self.pirls_mode == "exact" if exact is None else exact
        if of is not None:
            st = self.structure
            T = np.ascontiguousarray(st.T_of(theta, 0))
            eta_fixed = self.sorted_fixed_eta(beta)
            if not exact:
                of["u"][...] = 0.0
                of["lme4_at"] = None
                if self.nAGQ == 1 and self.has_analytic_gradient:
                    # (glmer's iterations, the values equal to rounding, and the gradient of
                    # glmer's criterion)
                    grad = np.zeros(1 + self.n_fixed)
                    A0, c0, B0 = self._lp0_level_sums()
                    dev_hi, dev_lo, u2, logdet, status, _ = blockdiag_pirls_gradient(
                        of["indptr"], eta_fixed, of["X"], of["x_order"], of["Z"],
                        of["unit"], of["y"], of["w"], T, self.family_id, self.link_id,
                        A0, c0, B0, np.ascontiguousarray(beta, dtype=np.float64), of["u"],
                        of["L"], LME4_TOL, 100, grad)
                else:
                    grad = None
                    dev_hi, dev_lo, u2, logdet, status, _ = blockdiag_pirls(
                        of["indptr"], eta_fixed, of["Z"], of["unit"], of["y"], of["w"], T,
                        self.family_id, self.link_id, of["lp0"], of["u"], of["L"], LME4_TOL,
                        100)
                if status != 0:
                    raise PirlsError(f"PIRLS failed (status {status})")
                if grad is not None:
                    of["lme4_at"] = (theta.copy(), beta.copy(), grad, float(dev_hi + dev_lo))
            else:
                at = of.get("exact_at")
                if (self.nAGQ == 1 and at is not None and np.array_equal(at[0], theta)
                        and np.array_equal(at[1], beta)):
                    return at[3]  # (the modes there are in u_exact)
                # the modes warm-started from the last ones (blockdiag_laplace's rule) and,
                # where it applies, the gradient at them in the same pass
                with_gradient = self.has_analytic_gradient
                if with_gradient and at is not None and at[2] is not None and "du" in of:
                    # the start: the last modes moved by their derivatives there (first order:
                    # a Newton step fewer per level for a nearby point)
                    du = of["du"]
                    of["u_exact"][:, 0] += (du[:, 0] * (theta[0] - at[0][0])
                                            + du[:, 1:] @ (beta - at[1]))
                of["exact_at"] = None  # (u_exact changes now)
                grad = np.zeros(1 + self.n_fixed)
                if with_gradient and "du" not in of:
                    of["du"] = np.zeros((len(of["indptr"]) - 1, 1 + self.n_fixed))
                du_out = of["du"] if with_gradient else np.zeros((0, 1 + self.n_fixed))
                dev_hi, dev_lo, u2, logdet, n_bad, _ = blockdiag_laplace_fused(
                    of["indptr"], eta_fixed, of["X"], of["x_order"], of["Z"], of["unit"],
                    of["y"], of["w"], T, self.family_id, self.link_id, of["u_exact"], of["L"],
                    LEVEL_TOL, LEVEL_STEP_TOL, LEVEL_MAXIT, with_gradient, grad, du_out)
                if n_bad:
                    raise PirlsError(f"the conditional modes of {n_bad} level(s) did not converge")
                value = float(dev_hi + dev_lo) + u2 + logdet + self.aic_constant
                # (for `gradient`, and a second evaluation at the same point)
                of["exact_at"] = (theta.copy(), beta.copy(), grad if with_gradient else None,
                                  value, float(dev_hi + dev_lo))
            if self.nAGQ > 1:
                z, w, ld = self._gh_rule
                out = np.empty(st.factors[0].n_levels)
                u_mode = of["u_exact"] if exact else of["u"]
                hi, lo = blockdiag_agq(of["indptr"], eta_fixed, of["Z"], of["unit"], of["y"],
                                       of["w"], float(T[0, 0]), self.family_id, self.link_id,
                                       np.ascontiguousarray(u_mode[:, 0]),
                                       np.ascontiguousarray(of["L"][:, 0, 0]), z, w, ld, out)
                # (glmer reports the quadrature without the family's constant: lme4's glmerAGQ)
                return float(hi + lo)
            return float(dev_hi + dev_lo) + u2 + logdet + self.aic_constant
        fixed = self.fixed_eta(beta)
        ws = self.modes_system
        if not exact:
            u0 = [np.zeros((f.n_levels, f.n_columns)) for f in self.structure.factors]
            r = pirls(self, ws, theta, self.lp0, u0, fixed_eta=fixed, **self._pirls_options())
            return r.laplace + self.aic_constant
        u0 = self._u_warm if getattr(self, "_u_warm", None) is not None else [
            np.zeros((f.n_levels, f.n_columns)) for f in self.structure.factors]
        eta0 = self.linear_predictor(fixed, theta, u0)
        r = pirls(self, ws, theta, eta0, u0, fixed_eta=fixed, consistent_start=True)
        self._u_warm = r.u
        return r.laplace + self.aic_constant

    def _lp0_level_sums(self):
        """`start_level_sums` at stage 2's lp0 (one factor, one column), made once per lp0."""
        of = self.one_factor
        got = of.get("lp0_sums")
        if got is None or got[0] is not of["lp0"]:
            n_levels = len(of["indptr"]) - 1
            A0, c0 = np.empty(n_levels), np.empty(n_levels)
            B0 = np.empty((n_levels, self.n_fixed))
            start_level_sums(of["indptr"], of["x_order"], of["X"], of["offset"], of["Z"],
                             of["unit"], of["y"], of["w"], self.family_id, self.link_id,
                             of["lp0"], A0, c0, B0)
            got = of["lp0_sums"] = (of["lp0"], A0, c0, B0)
        return got[1:]

    # ---- the analytic gradient (one factor, one scalar random effect, exact Laplace) -----
    @property
    def has_analytic_gradient(self) -> bool:
        """Whether `gradient` applies: the exact Laplace criterion (nAGQ = 1) of a model with
        one grouping factor and one random-effect column (bigmixed.kernels.glmm_gradient).
        With pirls="lme4" it is the gradient of the exact Laplace value, not of glmer's
        criterion (which only approximates it): a guide to glmer's optimum, not its gradient."""
        of = self.one_factor
        # (for probit and cloglog the level kernel finishes the modes with Newton steps on the
        # observed information, so the exact value is smooth enough for it too)
        return of is not None and self.structure.factors[0].n_columns == 1 and self.nAGQ == 1

    def gradient(self, params) -> np.ndarray:
        """The gradient of `objective` at params = (theta, gamma) (see has_analytic_gradient);
        NaN where the criterion is undefined."""
        params = np.asarray(params, dtype=np.float64)
        theta, beta = self._exact_point(params)
        if theta is None:
            return np.full(len(params), np.nan)
        g = self.one_factor["exact_at"][2]
        return np.concatenate((g[:1], self._C.T @ g[1:]))

    def lme4_gradient(self, params) -> np.ndarray:
        """The gradient of glmer's criterion (`objective` with pirls="lme4") at params =
        (theta, gamma): exact where the number of PIRLS iterations glmer takes does not change
        nearby (kernels/glmm_pirls_gradient.py; one grouping factor, one random-effect column,
        nAGQ = 1: `has_analytic_gradient`); NaN where the criterion is undefined."""
        params = np.asarray(params, dtype=np.float64)
        k = self.structure.n_theta
        theta, beta = params[:k], self.beta_of(params[k:])
        of = self.one_factor
        at = of.get("lme4_at")
        if at is None or not (np.array_equal(at[0], theta) and np.array_equal(at[1], beta)):
            try:
                self._criterion(theta, beta, False)
            except PirlsError:
                return np.full(len(params), np.nan)
            at = of["lme4_at"]
        g = at[2]
        return np.concatenate((g[:1], self._C.T @ g[1:]))

    def _exact_point(self, params):
        """(theta, beta) of params = (theta, gamma) with the exact modes there (and the
        gradient: the last evaluation's, or a new one, warm-started); (None, None) where the
        criterion is undefined."""
        k = self.structure.n_theta
        theta, gamma = params[:k], params[k:]
        beta = self.beta_of(gamma)
        of = self.one_factor
        at = of.get("exact_at")
        if at is None or not (np.array_equal(at[0], theta) and np.array_equal(at[1], beta)):
            of["exact_at"] = None
            try:
                self._criterion(theta, beta, True)
            except PirlsError:
                return None, None
        return theta, beta

    def hessian(self, params) -> np.ndarray:
        """The Hessian of `objective` at params = (theta, gamma), analytic
        (kernels.glmm_gradient.blockdiag_laplace_hessian; where has_analytic_gradient); NaN
        where the criterion is undefined."""
        params = np.asarray(params, dtype=np.float64)
        theta, beta = self._exact_point(params)
        if theta is None:
            return np.full((len(params), len(params)), np.nan)
        of = self.one_factor
        H = np.empty((1 + self.n_fixed, 1 + self.n_fixed))
        blockdiag_laplace_hessian(of["indptr"], self.sorted_fixed_eta(beta), of["X"],
                                  of["x_order"], of["Z"], of["unit"], of["y"], of["w"],
                                  float(theta[0]), self.family_id, self.link_id,
                                  np.ascontiguousarray(of["u_exact"][:, 0]), H)
        J = np.zeros((len(params), 1 + self.n_fixed))
        J[0, 0] = 1.0
        J[1:, 1:] = self._C.T
        H = J @ H @ J.T
        return 0.5 * (H + H.T)

    @property
    def _gh_rule(self):
        return gauss_hermite_rule(self.nAGQ)

    def set_beta_basis(self, beta_ref: np.ndarray, C: np.ndarray) -> None:
        """Stage 2 searches beta = beta_ref + C gamma."""
        self._beta_ref = np.asarray(beta_ref, dtype=np.float64)
        self._C = np.asarray(C, dtype=np.float64)

    # ---- the fit ----------------------------------------------------------------------
    def refit(self, y=None, *, reml=None, theta0=None):
        """A new, independent fit of this model (y=None) or of the same design with another
        response (`with_response`: the design, the structure and the basis are shared);
        theta0 (theta, or the optimizer's (theta, gamma)) starts stage 1 (the bootstrap's
        refits start at the fitted theta). reml does not apply to a GLMM (False or None)."""
        if reml:
            raise ValueError("a GLMM is fitted by maximum likelihood (Laplace or quadrature): "
                             "reml=True does not apply")
        model = self if y is None else self.with_response(y)
        return model.fit(theta0=theta0)

    def fit(self, *, control: FitControl | None = None, theta0=None):
        """glmer's two stages (module docstring), then Newton steps; returns a GLMMResults.
        theta0: where stage 1 starts (default: lme4's start, 1 for SDs and 0 for
        correlations).

        BLAS runs on one thread meanwhile: the fit's only large BLAS call is offset + X beta
        before each evaluation, and a multi-threaded one leaves OpenBLAS's workers spinning on
        the cores the next parallel Numba kernel needs (1M rows, 2 cores: ~30 ms of each ~120
        ms level-kernel call). One thread gives the same bits (each row's sum is the same
        kernel's)."""
        with BlasThreads(1):
            return self._fit(control=control, theta0=theta0)

    def _fit(self, *, control: FitControl | None = None, theta0=None):

        control = FitControl() if control is None else control
        st = self.structure
        k = st.n_theta
        log = []
        t0 = time.perf_counter()
        calls = [0]

        def counted(fun):
            def f(x, *args):
                calls[0] += 1
                return fun(x, *args)
            return f

        # every fit starts from the same state (the warm starts of the exact modes), so that a
        # refit of the same model gives the same bits
        if self.one_factor is not None:
            self.one_factor["u"][...] = 0.0
            self.one_factor["u_exact"][...] = 0.0
            self.one_factor["exact_at"] = None
            self.one_factor["lme4_at"] = None
        self._u_warm = self._eta0 = self._best0 = self._joint_first_pass = None
        # stage 1: theta with beta from PIRLS
        obj0 = counted(self.objective0)
        self._lp0 = None
        start1 = st.initial_theta()
        if theta0 is not None:
            start1 = np.maximum(np.asarray(theta0, dtype=np.float64)[:k], st.lower_bounds)
            start1 = np.where((st.lower_bounds == 0) & (start1 < 1e-4), 1e-4, start1)
        p = self.n_fixed
        lower = np.concatenate((st.lower_bounds, np.full(p, -np.inf)))
        obj = counted(self.objective)
        exact_analytic = self.has_analytic_gradient and self.pirls_mode == "exact"
        rec1 = rec2 = None
        if exact_analytic and EXACT_STAGE2_FROM_START:
            # stage 1 only gives stage 2 its start and the beta basis; with the analytic
            # gradient stage 2 converges from the joint PIRLS at the start theta as well (one
            # PIRLS instead of a BOBYQA run over theta, each evaluation a PIRLS). Should
            # stage 2 not apply from there (a bound reached), the full stage 1 follows.
            t_1 = time.perf_counter()
            self._eta0 = self.eta_start
            v0 = obj0(start1, START_PIRLS_TOL)
            if np.isfinite(v0):
                rec1 = OptimizerRecord("joint PIRLS at the start (nAGQ = 0)", 1, start1.copy(),
                                       float(v0), True, "start only")
                self._stage1_basis(rec1, reuse_last=True)
                if self.one_factor is not None:
                    # the joint modes are the exact ones at stage 2's start to PIRLS's
                    # tolerance: its first evaluation then needs a step or two per level
                    self.one_factor["u_exact"][...] = self._last0[1].u[0]
                log.append(StageRecord("stage 1 (nAGQ = 0): the start only", 1, rec1.objective,
                                       time.perf_counter() - t_1))
                t1 = time.perf_counter()
                rec2 = _analytic_stage(obj, self.gradient, self.hessian,
                                       np.concatenate((start1, np.zeros(p))),
                                       lower, approximate_start=True)
        quick_note = ""
        if exact_analytic and EXACT_STAGE2_FROM_START and rec2 is None:
            log.clear()  # (the stages that ran are the full stage 1 and stage 2 below)
            quick_note = (f"after {time.perf_counter() - t0:.3g} s on stage 2 from the start, "
                          "which did not apply")
        if rec2 is None:
            t_1 = time.perf_counter()
            # nAGQ = 0 is the fit itself: tight; otherwise stage 1 only gives stage 2 its start
            # (theta, beta and the scale of the beta basis), and loose tolerances do. glmer's
            # criterion (pirls="lme4") also depends on where stage 1 ends (its lp0): loose
            # there only with one scalar random effect, where stage 2 starts from the exact
            # optimum and the end moves by ~3e-9 in beta (bin_105k; 5.6e-9 in the deviance of
            # Contraception's random slope with several thetas, so those stay tight)
            loose1 = self.pirls_mode != "lme4" or self.has_analytic_gradient
            tol1 = control.approx_tolerances if (self.nAGQ != 0 and loose1) else control.tight
            self._eta0 = None
            rec1 = None
            if k == 1 and self.nAGQ != 0 and loose1:
                # one theta, stage 1 a start only: parabolic steps (~6 evaluations, BOBYQA
                # ~13), to a tenth of BOBYQA's xtol (one evaluation more, where the last
                # errors are small: glmer's lp0 moves with stage 1's end)
                rec1 = minimize_scalar(obj0, float(start1[0]), float(st.lower_bounds[0]),
                                       xtol_abs=0.01 * tol1.xtol_abs,
                                       method="successive parabolic interpolation (nAGQ = 0)")
            if rec1 is None:
                rec1 = minimize_theta(obj0, start1, st.lower_bounds, **tol1.as_dict(),
                                      restart_edge=True, restartable=st.multi_column_diagonal())
            self._stage1_basis(rec1)
            log.append(StageRecord("stage 1 (nAGQ = 0)", rec1.n_evaluations, rec1.objective,
                                   time.perf_counter() - t_1, quick_note))
        theta1 = rec1.params
        if self.nAGQ == 0:
            record = OptimizerRecord("nlopt LN_BOBYQA (nAGQ = 0)", rec1.n_evaluations,
                                     np.concatenate((theta1, np.zeros(p))), rec1.objective,
                                     rec1.converged, rec1.message, stages=tuple(log),
                                     tolerances=rec1.tolerances)
            return self._results(record, control, t0)
        # stage 2: theta and beta (in the gamma basis) jointly
        if rec2 is None:
            t1 = time.perf_counter()
        start = np.concatenate((theta1, np.zeros(p)))
        restartable = np.concatenate((st.multi_column_diagonal(), np.zeros(p, bool)))
        if rec2 is None and exact_analytic:
            rec2 = _analytic_stage(obj, self.gradient, self.hessian, start, lower)
        elif rec2 is None and self.has_analytic_gradient:
            # glmer's criterion by its analytic gradient (kernels/glmm_pirls_gradient.py) from
            # stage 1's end, started from the exact Laplace criterion's analytic Hessian there
            H0 = _start_hessian(self.hessian, start, k, False)
            if H0 is not None:
                rec2 = quasi_newton(obj, self.lme4_gradient, start, H0, lower,
                                    xtol=1e-7, final_step=1e-5, max_iter=40,
                                    method="quasi-Newton (glmer's criterion's analytic gradient)")
                if rec2 is not None:
                    from dataclasses import replace

                    rec2 = replace(rec2, n_gradients=rec2.n_gradients + 1)
        if rec2 is None and self.has_analytic_gradient and self.pirls_mode != "exact":
            # (that did not apply) the exact Laplace value, which glmer's criterion
            # approximates: its optimum (a few analytic steps) and its Hessian start the steps
            # on glmer's criterion next to glmer's optimum
            exact = counted(lambda x: self.objective(x, exact=True))
            rec_exact = _analytic_stage(exact, self.gradient, self.hessian, start, lower,
                                        approximate_start=True)
            if rec_exact is not None:
                H0 = self.hessian(rec_exact.params)
                rec2 = quasi_newton(obj, self.lme4_gradient, rec_exact.params, H0, lower,
                                    xtol=1e-7, final_step=1e-5, max_iter=40,
                                    method="quasi-Newton (exact Laplace's analytic gradient, "
                                           "then glmer's criterion's)")
                if rec2 is not None:
                    from dataclasses import replace

                    rec2 = replace(rec2, n_evaluations=rec2.n_evaluations + rec_exact.n_evaluations,
                                   n_gradients=rec2.n_gradients + rec_exact.n_gradients + 1)
        if rec2 is None and not (self.has_analytic_gradient and self.pirls_mode == "exact"):
            rec2 = _quasi_newton_stage(obj, start, lower)
        if rec2 is not None:
            log.append(StageRecord(f"stage 2 (nAGQ = {self.nAGQ}): quasi-Newton",
                                   rec2.n_evaluations, rec2.objective, time.perf_counter() - t1,
                                   f"{rec2.n_gradients} analytic gradient(s)"
                                   if rec2.n_gradients else ""))
        else:  # a bound reached (a variance at zero) or no curvature: BOBYQA, then Newton
            calls0 = calls[0]
            rec2 = minimize_theta(obj, start, lower, **control.loose.as_dict(), restart_edge=True,
                                  restartable=restartable)
            log.append(StageRecord(f"stage 2 (nAGQ = {self.nAGQ}): BOBYQA", calls[0] - calls0,
                                   rec2.objective, time.perf_counter() - t1))
            t2 = time.perf_counter()
            x, value, grad, hess, n, steps = newton_polish(obj, rec2.params, lower,
                                                           max_free=k + p, max_steps=3)
            if value <= rec2.objective:
                rec2 = OptimizerRecord(rec2.method, rec2.n_evaluations + n, x, value,
                                       rec2.converged, rec2.message, restarts=rec2.restarts,
                                       polish_steps=steps, gradient=grad, hessian=hess,
                                       tolerances=rec2.tolerances)
            log.append(StageRecord("Newton polish", n, rec2.objective, time.perf_counter() - t2,
                                   f"{steps} step(s)"))
        record = OptimizerRecord(
            rec2.method, rec1.n_evaluations + rec2.n_evaluations, rec2.params, rec2.objective,
            rec2.converged, rec2.message, restarts=rec1.restarts + rec2.restarts,
            polish_steps=rec2.polish_steps, gradient=rec2.gradient, hessian=rec2.hessian,
            tolerances=rec2.tolerances, stages=tuple(log))
        return self._results(record, control, t0)

    def _stage1_basis(self, rec1, reuse_last: bool = False) -> None:
        """From stage 1's end (rec1.params): beta_1, the basis beta = beta_1 + C gamma with
        C = W R_X^{-1} (gamma in units of standard errors) and glmer's lp0 for stage 2.
        reuse_last: the last joint PIRLS was at rec1.params already."""
        theta1 = rec1.params
        last = getattr(self, "_last0", None)
        best = getattr(self, "_best0", None)
        if reuse_last and last is not None and np.array_equal(last[0], theta1):
            pass
        elif self.pirls_mode == "lme4" and best is not None and np.array_equal(best[1], theta1):
            # glmer's evaluations all start from lp0: the best one's PIRLS is what a new
            # evaluation there gives, bit for bit
            self._last0 = (best[1], best[2])
        else:
            self.objective0(theta1)
        _, r1 = self._last0
        W = self.basis.W
        beta1 = W @ r1.beta_work
        p = self.n_fixed
        RX = r1.state.chol_S[:p, :p].T  # R_X (working basis): Var(beta_work) ~ (R_X'R_X)^{-1}
        C = W @ np.linalg.solve(RX, np.eye(p)) if p else np.zeros((0, 0))
        self.set_beta_basis(beta1, C)
        self._lp0_stage1 = self._lp0  # (nAGQ = 0: the fit's modes are stage 1's, see modes_at)
        self._lp0 = r1.eta  # stage 2 restarts from stage 1's linear predictor (glmer's lp0)
        if self.one_factor is not None and self.pirls_mode == "lme4":
            self.one_factor["lp0"] = np.ascontiguousarray(r1.eta[self.one_factor["order"]])
            # the exact modes (stage 2's start Hessian) start from stage 1's: a step or two
            # per level instead of Newton from zero
            self.one_factor["u_exact"][...] = r1.u[0]
            self.one_factor["exact_at"] = None
        if self.one_factor is not None and self.nAGQ != 0 and self._joint is not None:
            # stage 2 and the results use the level kernels (and, for glmer's modes at the
            # end, the modes system): the joint system's arrays can go (refit rebuilds it)
            self._solver_name = self._joint.solver
            self._joint = None

    def _results(self, record, control, t0):
        from ..results.glmm_fit import GLMMResults

        caught = []
        if not record.converged:
            caught.append(ConvergenceWarning(
                f"the optimizer did not converge ({record.message}) after {record.n_evaluations} evaluations"))
        if self.structure.is_singular(record.params[:self.structure.n_theta]):
            caught.append(SingularFitWarning(
                "boundary (singular) fit: a variance is estimated at zero or a correlation at +-1"))
        fit = GLMMResults.from_model(self, record, warnings=list(self.design.warnings) + caught,
                                     timings=dict(self.timings, optimize=time.perf_counter() - t0))
        for w in fit.warnings[len(self.design.warnings):]:  # (with a separation warning)
            _warnings.warn(w, stacklevel=3)
        return fit

    def separation_warning(self, mu):
        """A SeparationWarning naming the separating columns, or None (binomial only; the
        linear program runs only when fitted means reach 0 or 1)."""
        from ..warnings import SeparationWarning
        from .separation import has_symptom, separating_direction

        if self.family.name != "binomial" or not has_symptom(np.asarray(mu)):
            return None
        d = separating_direction(self.design.X, self.y)
        if d is None:
            return None
        cols = [n for n, v in zip(self.design.fixed_names, d) if v != 0]
        return SeparationWarning(
            f"the response {self.response_label!r} is (quasi-)completely separated by the fixed "
            f"effects ({', '.join(cols)}): some rows' outcomes are predicted exactly, those "
            "coefficients diverge and their standard errors and tests are not meaningful; "
            "consider dropping or merging the separating categories")

    def modes_at(self, theta, beta):
        """PIRLS at (theta, beta) on the solver: (PirlsResult, fixed part eta) with the
        modes system holding the weights at the modes (for conditional variances, see
        `conditional_variances`). The modes of one grouping factor with one column come from
        the level kernel instead (the criterion's own evaluation there, no solver); those of an
        nAGQ = 0 fit with glmer's criterion from stage 1's joint PIRLS at theta, as glmer's."""
        of = self.one_factor
        lp0_1 = getattr(self, "_lp0_stage1", None)
        if self.nAGQ == 0 and self.pirls_mode == "lme4" and lp0_1 is not None:
            # glmer's nAGQ = 0 fit ends with stage 1's joint PIRLS at theta: its modes, and
            # lme4's L with the weights where its last solve linearized (condVar)
            u0 = [np.zeros((f.n_levels, f.n_columns)) for f in self.structure.factors]
            r = self._joint_pirls(np.asarray(theta, dtype=np.float64), lp0_1, u0,
                                  dict(self._pirls_options(), keep_solved=True))
            fixed = self.fixed_eta(beta)
            self._modes_factors = None
            self._modes_solved = (np.array(theta, copy=True), r.eta_solved, fixed)
            return r, fixed
        if self.pirls_mode != "lme4" and of is not None:
            theta = np.asarray(theta, dtype=np.float64)
            beta = np.asarray(beta, dtype=np.float64)
            self._criterion(theta, beta, exact=True)  # (the modes and factors there)
            fixed = self.fixed_eta(beta)
            u = [np.array(of["u_exact"], copy=True)]
            eta = self.linear_predictor(fixed, theta, u)
            deviance = of["exact_at"][4]  # (the level kernel's, at these modes)
            u2 = float(np.sum(u[0] * u[0]))
            L = of["L"]
            logdet = 2.0 * float(np.sum(np.log(np.diagonal(L, axis1=1, axis2=2))))
            self._modes_factors = (theta.copy(), np.array(L, copy=True))
            return PirlsResult(deviance, u2, logdet, eta, u, np.zeros(0), None, 0), fixed
        if of is not None and self.has_analytic_gradient:
            # glmer's evaluation at (theta, beta) by the level kernel: its modes, and its
            # factors (the weights of the iterate before the last, lme4's L) for condVar
            theta = np.asarray(theta, dtype=np.float64)
            beta = np.asarray(beta, dtype=np.float64)
            self._criterion(theta, beta, exact=False)
            fixed = self.fixed_eta(beta)
            u = [np.array(of["u"], copy=True)]
            eta = self.linear_predictor(fixed, theta, u)
            L = of["L"]
            logdet = 2.0 * float(np.sum(np.log(np.diagonal(L, axis1=1, axis2=2))))
            self._modes_factors = (theta.copy(), np.array(L, copy=True))
            return PirlsResult(of["lme4_at"][3], float(np.sum(u[0] * u[0])), logdet, eta, u,
                               np.zeros(0), None, 0), fixed
        self._modes_factors = self._modes_solved = None
        fixed = self.fixed_eta(beta)
        ws = self.modes_system
        if self.pirls_mode != "lme4" and of is not None and of.get("exact_at") is not None:
            # the exact modes of the level kernel (at the optimum, or next to it) start it: it
            # converges in one step instead of five from zero
            u0 = [np.array(of["u_exact"], copy=True)]
            start = self.linear_predictor(fixed, theta, u0)
            r = pirls(self, ws, theta, start, u0, fixed_eta=fixed, consistent_start=True,
                      **self._pirls_options())
            return r, fixed
        u0 = [np.zeros((f.n_levels, f.n_columns)) for f in self.structure.factors]
        start = self.lp0 if self.pirls_mode == "lme4" else fixed.copy()
        r = pirls(self, ws, theta, start, u0, fixed_eta=fixed, **self._pirls_options())
        if r.eta_solved is not None:
            self._modes_solved = (np.array(theta, copy=True), r.eta_solved, fixed)
        return r, fixed


    def conditional_variances(self, theta) -> list:
        """Per factor (n_levels, P, P): Var(b_g | y) = T (T'Z_g'W Z_g T + I)^{-1} T' with the
        weights of the last `modes_at` (from the level kernel's factors L_g, or the modes
        system's): with glmer's criterion those of its L, at the linearization point of
        PIRLS's last solve (the iterate before the modes), as lme4's condVar."""
        st = self.structure
        got = getattr(self, "_modes_factors", None)
        if got is not None and np.array_equal(got[0], theta):
            L_inv = np.linalg.inv(got[1])
            cinvs = [np.einsum("lji,ljk->lik", L_inv, L_inv)]  # (L L')^{-1} = L^-T L^-1
        else:
            solved = getattr(self, "_modes_solved", None)
            if solved is not None and np.array_equal(solved[0], theta):
                # lme4's L: the weights where glmer's last PIRLS solve linearized
                self.modes_system.load(solved[1], solved[2])
            _, cinvs = self.modes_system.system.modes(theta, np.zeros(0), condvar=True)
        return [np.einsum("ij,ljk,mk->lim", st.T_of(theta, fi), cinvs[fi], st.T_of(theta, fi))
                for fi in range(len(st.factors))]


# quasi-Newton on (theta, gamma): central-difference gradients with this step (relative to
# max(|x|, 0.1)), started from a forward-difference Hessian with a 10x larger one
QN_GRADIENT_STEP = 1e-4
QN_HESSIAN_STEP = 1e-3
# ... central differences for a gradient whose Newton step is below this (relative), forward
# ones (corrected by the start Hessian) before
QN_CENTRAL_BELOW = 1e-3


def _quasi_newton_stage(fun, x0, lower):
    """Stage 2 by quasi-Newton steps (bigmixed.fitting.optimize.quasi_newton) on difference
    gradients, from a difference Hessian at the start: the start (stage 1's theta and beta) is
    close, and gamma is in units of standard errors, so a few steps converge. None when it does
    not apply (a bound reached, no curvature): the caller uses BOBYQA.

    The gradients far from the end (their Newton step on H0 above QN_CENTRAL_BELOW) are forward
    differences from the value at the point (which the optimizer has just evaluated) corrected
    by the start Hessian's diagonal, (f(x + h_a) - f(x)) / h_a - h_a H0_aa / 2: n evaluations
    instead of the central differences' 2n, good enough to steer; the ones that place the
    optimum are central."""
    from .optimize import forward_hessian, quasi_newton

    x0 = np.asarray(x0, dtype=np.float64)
    if np.any(x0[lower == 0] <= 0):
        return None
    idx = np.arange(len(x0))
    last = {"x": None, "f": None}
    extra = [0]
    n_grad_evals = [0]

    def value(x):
        if last["x"] is not None and np.array_equal(last["x"], x):
            return last["f"]
        v = fun(x)
        last["x"], last["f"] = np.array(x, copy=True), v
        return v

    f0 = value(x0)
    if not np.isfinite(f0):
        return None
    H0 = forward_hessian(fun, x0, idx, f0, rel_step=QN_HESSIAN_STEP)
    n_start = 1 + len(x0) * (len(x0) + 3) // 2
    if not np.all(np.isfinite(H0)):
        return None
    diag = np.diag(H0).copy()

    def gradient(x):
        h = QN_GRADIENT_STEP * np.maximum(np.abs(x), 0.1)
        if not (last["x"] is not None and np.array_equal(last["x"], x)):
            extra[0] += 1
        fx = value(x)
        n_grad_evals[0] += len(x)
        fp = np.empty(len(x))
        for a in idx:
            e = np.zeros_like(x)
            e[a] = h[a]
            fp[a] = fun(x + e)
        g = (fp - fx) / h - 0.5 * h * diag
        # next to the optimum (the Newton step this predicts is below QN_CENTRAL_BELOW) the
        # gradient places the end point: central differences (reusing the forward points)
        try:
            step = np.linalg.solve(H0, -g)
        except np.linalg.LinAlgError:
            step = np.full(len(x), np.inf)
        if not float(np.max(np.abs(step) / np.maximum(np.abs(x), 0.1))) >= QN_CENTRAL_BELOW:
            n_grad_evals[0] += len(x)
            for a in idx:
                e = np.zeros_like(x)
                e[a] = h[a]
                g[a] = (fp[a] - fun(x - e)) / (2.0 * h[a])
        return g

    rec = quasi_newton(value, gradient, x0, H0, lower, xtol=1e-7, final_step=1e-5, max_iter=40,
                       method="quasi-Newton (difference gradients)")
    if rec is None:
        return None
    # (quasi_newton's first evaluation is x0's, counted in n_start)
    evals = rec.n_evaluations - 1 + n_grad_evals[0] + n_start + extra[0]
    from dataclasses import replace

    return replace(rec, n_evaluations=evals, n_gradients=0)


def _start_hessian(hess, x0, n_theta, approximate: bool):
    """The analytic Hessian at x0 as quasi-Newton's start; None if not finite, or not positive
    definite at a start taken from stage 1's end. From lme4's start (approximate), which can
    lie where the criterion is concave in theta (a Poisson fit far above its optimum), the
    theta block is then replaced by its curvatures' magnitudes (and the theta-gamma block by
    zero): the steps toward theta = 0 are capped, BFGS learns the rest."""
    H = np.array(hess(x0), dtype=np.float64)
    if not np.all(np.isfinite(H)):
        return None
    try:
        np.linalg.cholesky(H)
        return H
    except np.linalg.LinAlgError:
        if not approximate:
            return None
    curvature = np.maximum(np.abs(np.diag(H)[:n_theta]), 1e-8)
    H[:n_theta, :] = 0.0
    H[:, :n_theta] = 0.0
    H[:n_theta, :n_theta] = np.diag(curvature)
    try:
        np.linalg.cholesky(H)
    except np.linalg.LinAlgError:
        return None
    return H


def _analytic_stage(fun, grad, hess, x0, lower, approximate_start: bool = False,
                    n_theta: int = 1):
    """Stage 2 by quasi-Newton steps on the analytic gradient (`has_analytic_gradient`) from
    the analytic Hessian at the start (`_start_hessian`; approximate_start: lme4's start, far
    from the optimum); None when it does not apply (a bound reached, no curvature): the
    caller uses BOBYQA."""
    from .optimize import quasi_newton

    x0 = np.asarray(x0, dtype=np.float64)
    if np.any(x0[lower == 0] <= 0):
        return None
    H0 = _start_hessian(hess, x0, n_theta, approximate_start)
    if H0 is None:
        return None
    rec = quasi_newton(fun, grad, x0, H0, lower, xtol=1e-8, final_step=1e-6, max_iter=60,
                       method="quasi-Newton (analytic gradient and start Hessian)",
                       bound_cap=0.5 if approximate_start else None)
    if rec is None:
        return None
    from dataclasses import replace

    return replace(rec, n_gradients=rec.n_gradients + 1)  # (+ the Hessian's passes)
