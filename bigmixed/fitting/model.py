"""The model: the chain formula -> design -> structure -> cross-products -> factor -> objective.

    objective(theta) = criterion(profiled_state(system.update(theta)))

in the spirit of MixedModels.jl's ``objective!(m, θ) = objective(updateL!(setθ!(m, θ)))``.
"""
from __future__ import annotations

import logging
from dataclasses import replace
import time
import warnings as _warnings

import numpy as np

from .. import progress
from ..crossprods.basis import FixedEffectsBasis
from ..crossprods.crossprod import CrossProducts
from .objective import NotPositiveDefinite, ProfiledState, profiled_state
from .optimize import INITIAL_STEP, minimize_theta, newton_polish, quasi_newton
from .start import approx_newton_start, one_factor_start, refine_start
from ..spec.structure import RandomEffectsStructure
from ..solvers.schur import SYSTEMS, auto_solver
from ..warnings import CollinearRandomEffectsWarning, ConvergenceWarning, SingularFitWarning
from ..spec.design import build_design

log = logging.getLogger("bigmixed")

SOLVERS = ("auto", "blockdiag", "cholmod", "schur")

# BOBYQA's stopping rules: tight ones match lme4's precision and more; loose ones only need to
# reach the neighbourhood where one Newton step converges (tuned on bench/references and
# slope_105k: fewest evaluations with row-order invariance below 1e-8). No relative tolerance on
# the criterion: it carries an arbitrary additive constant (2 (n - p) log of the scale of y).
TIGHT_TOLERANCES = dict(ftol_abs=1e-10, ftol_rel=0.0, xtol_abs=1e-8)
LOOSE_TOLERANCES = dict(ftol_abs=1e-7, ftol_rel=0.0, xtol_abs=1e-5)
POLISH_MAX_FREE = 6
# BOBYQA's first trust radius (relative to |theta|) from a start that is already near the optimum
# (one-factor fits, refined): a full-size first step wastes evaluations walking back
NEAR_START_STEP = 0.05  # crossed_73k: 42 -> 34 evaluations; nested starts unaffected


class LinearMixedModel:
    """A linear mixed model bound to data, ready to fit.

    Parameters
    ----------
    formula : str
        lme4 syntax, e.g. ``"y ~ x + (1 + x | g)"``.
    data : pandas.DataFrame
    reml : bool
        REML (default) or maximum likelihood.
    solver : {"auto", "blockdiag", "cholmod", "schur"}
        "auto" uses the block-diagonal Numba path for one grouping factor; for several, the
        blocked dense Schur complement ("schur") when the factors other than the largest are
        small and crossed with it, CHOLMOD otherwise (see bigmixed.system.auto_solver).
    residual : bm.AR1 or bm.CompoundSymmetry, optional
        Correlated residuals within series (nlme's corAR1 / corCAR1 / corCompSymm).
    variance : bm.VarIdent, optional
        A separate residual SD per stratum (nlme's varIdent).
    """

    def __init__(self, formula: str, data, *, reml: bool = True, solver: str = "auto",
                 residual=None, variance=None):
        from ..spec.residual import residual_columns

        t0 = time.perf_counter()
        progress.report("design", rows=getattr(data, "shape", (None,))[0])  # progress hook
        design = build_design(formula, data,
                                      extra_columns=residual_columns(residual, variance))
        self._setup(design, reml, solver, design_time=time.perf_counter() - t0,
                    residual=residual, variance=variance)

    @classmethod
    def from_design(cls, design, *, reml: bool = True, solver: str = "auto", residual=None,
                    variance=None) -> "LinearMixedModel":
        """Build from an already evaluated `Design` (arrays), skipping the formula step. With a
        residual structure, `design.extra` must hold its columns (build_design's extra_columns)."""
        self = cls.__new__(cls)
        self._setup(design, reml, solver, design_time=0.0, residual=residual, variance=variance)
        return self

    @classmethod
    def from_crossproducts(cls, design, crossprods, structure=None, *, reml: bool = True,
                           solver: str = "auto") -> "LinearMixedModel":
        """Build from precomputed cross-products (e.g. summed over the partitions of a Dask
        DataFrame, see bigmixed.distributed) and a Design-like object that needs no row arrays:
        formula, fixed_names, terms (levels and column names; codes and Z may be empty),
        n_dropped and warnings. `structure` defaults to RandomEffectsStructure(design.terms)."""
        self = cls.__new__(cls)
        self._setup(design, reml, solver, design_time=0.0, crossprods=crossprods,
                    structure=structure)
        return self

    def _setup(self, design, reml, solver, design_time, crossprods=None, structure=None,
               residual=None, variance=None):
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, not {solver!r}")
        t1 = time.perf_counter()
        self.design = design
        self.formula = design.formula
        self.reml = bool(reml)
        self.structure = RandomEffectsStructure(design.terms) if structure is None else structure
        if crossprods is None:
            progress.report("cross-products", rows=len(design.y))  # progress hook
            crossprods = CrossProducts.compute(design.X, design.y, self.structure)
        self.crossprods = crossprods
        # The systems work in a well-conditioned basis of the fixed effects (see basis.py).
        self.basis = FixedEffectsBasis.from_gram(self.crossprods.gram, self.crossprods.n_fixed)
        self.work_crossprods = self.basis.apply(self.crossprods)
        self.residual = None
        self._loaded_eta = None
        if residual is not None or variance is not None:
            from ..crossprods.residual_weights import ResidualModel

            self.residual = ResidualModel(residual, variance, design, self.structure, self.crossprods)
            # the residual weights overwrite the working arrays: give them their own copies
            w = self.work_crossprods
            self.work_crossprods = replace(
                w, zz=[np.array(a, order="C") for a in w.zz],
                pairs=[replace(pb, blocks=np.array(pb.blocks, order="C")) for pb in w.pairs])
            self.residual.attach(self.basis, self.work_crossprods)
        t2 = time.perf_counter()
        if solver == "auto":
            solver = auto_solver(self.work_crossprods, self.structure)
        if solver == "blockdiag" and len(self.structure.factors) != 1:
            raise ValueError("solver='blockdiag' needs a single grouping factor")
        self.solver = solver
        system_cls = SYSTEMS[solver]
        self.system = system_cls(self.work_crossprods, self.structure)
        if self.residual is not None:
            self._load_residual(self.residual.eta0)
        t3 = time.perf_counter()
        self.timings = {"design": design_time, "crossprod": t2 - t1, "analyse": t3 - t2}
        if design.n_dropped:
            log.info("dropped %d rows with missing values", design.n_dropped)

    @property
    def n_obs(self) -> int:
        return self.crossprods.n_obs

    @property
    def n_fixed(self) -> int:
        return self.crossprods.n_fixed

    @property
    def n_params(self) -> int:
        """Length of the optimizer's parameter vector: theta, then the residual structure's."""
        return self.structure.n_theta + (self.residual.n_params if self.residual is not None else 0)

    def split_params(self, params):
        """params (theta, then the residual structure's unconstrained eta) -> (theta, eta)."""
        params = np.asarray(params, dtype=np.float64)
        k = self.structure.n_theta
        if len(params) != self.n_params:
            raise ValueError(f"expected {self.n_params} parameters (theta: {k}, residual structure: "
                             f"{self.n_params - k}), got {len(params)}")
        return params[:k], params[k:]

    def _load_residual(self, eta) -> float:
        """Put the residual structure's weighted cross-products for eta into the system."""
        if self.residual is None:
            return 0.0
        if self._loaded_eta is not None and np.array_equal(self._loaded_eta[0], eta):
            return self._loaded_eta[1]
        logdet = self.residual.load(eta)
        refresh = getattr(self.system, "refresh", None)
        if refresh is not None:
            refresh()
        self._loaded_eta = (np.array(eta, dtype=np.float64), logdet)
        return logdet

    def state(self, params) -> ProfiledState:
        """Factor the system at params (theta, then any residual parameters) and return the
        profiled quantities."""
        theta, eta = self.split_params(params)
        logdet_R = self._load_residual(eta)
        logdet, S = self.system.update(theta)
        return profiled_state(logdet, S, self.n_obs, self.n_fixed, self.basis, logdet_R)

    def objective(self, params, reml: bool | None = None) -> float:
        """REML criterion or ML deviance at params (theta, then any residual parameters),
        profiled over beta and sigma; inf if undefined."""
        reml = self.reml if reml is None else reml
        theta, eta = self.split_params(params)
        fused = getattr(self.system, "objective", None)
        if fused is not None:  # one grouping factor: the whole evaluation in compiled code
            try:
                logdet_R = self._load_residual(eta)
            except FloatingPointError:
                return np.inf
            value = fused(theta, bool(reml), self.n_obs, self.n_fixed, self.basis.logdet_W) + logdet_R
            return value if np.isfinite(value) else np.inf
        try:
            value = self.state(params).criterion(reml)
        except NotPositiveDefinite:
            return np.inf
        return value if np.isfinite(value) else np.inf

    @property
    def has_gradient(self) -> bool:
        """`gradient` applies: the system has an analytic gradient (SchurSystem with one effect
        per level of every factor) and there is no residual structure."""
        return bool(getattr(self.system, "has_gradient", False)) and self.residual is None

    def gradient(self, params) -> np.ndarray:
        """Analytic gradient of the criterion in theta (see SchurSystem.criterion_gradient);
        every theta > 0. Evaluate the criterion at params first: the gradient reuses its factor."""
        if not self.has_gradient:
            raise NotImplementedError("no analytic gradient for this model")
        theta = np.asarray(params, dtype=np.float64)
        return self.system.criterion_gradient(theta, self.state(theta), self.reml)

    def _quasi_newton_fit(self, guess, lower, objective=None):
        """The fit by quasi-Newton steps on the analytic gradient from the minimum of the
        approximate criterion (bigmixed.start.approx_newton_start), or None when that does not
        apply (no approximation, a start or step on a bound, no convergence): BOBYQA then."""
        approx = approx_newton_start(self, guess)
        if approx is None:
            return None
        theta_a, H, n_approx = approx
        # the approximation can be biased (on lme4's InstEval its minimum is 58% off in one
        # variance, and worse than the one-factor start): start from the better of the two
        objective = self.objective if objective is None else objective  # (progress-counted)
        f_guess = objective(guess)
        start = theta_a if objective(theta_a) <= f_guess else guess
        record = quasi_newton(objective, self.gradient, start, H, lower)
        if record is not None:
            record.n_approx_evaluations = n_approx
        return record

    def fit(self, *, theta0=None, restart_edge: bool = True, polish: bool = True,
            ftol_abs: float | None = None, ftol_rel: float | None = None,
            xtol_abs: float | None = None, maxeval: int = 100_000):
        """Optimize theta; solve beta, sigma and the conditional modes at the optimum.

        BOBYQA finds the optimum's neighbourhood; with polish (default) Newton steps on
        finite-difference derivatives then converge to ~1e-9 in theta, so results do not depend
        on the optimizer's path (row order, level order, threads), and the gradient and Hessian
        at the optimum are recorded. When the polish applies (at most 6 free parameters),
        BOBYQA's tolerances are looser (it only has to reach the neighbourhood); otherwise, or
        if the polish cannot take a step, BOBYQA runs to tight tolerances.

        Crossed models whose system has an analytic gradient and a large dense block (see
        `has_gradient` and bigmixed.start.approx_criterion) are fitted instead by quasi-Newton
        steps on that gradient from the approximate criterion's minimum (same precision, a few
        evaluations), when no tolerance or start is given; if the steps reach a bound or fail,
        the fit falls back to BOBYQA as above.
        """
        from ..results.fit import LMMResults

        # progress hook: reports stage "optimizer" (evaluations, best objective) on each call
        objective = progress.counted(self.objective, "optimizer")
        st = self.structure
        eta0 = self.residual.eta0 if self.residual is not None else np.zeros(0)
        start = (np.concatenate((st.initial_theta(), eta0)) if theta0 is None
                 else np.asarray(theta0, float))
        initial_step = INITIAL_STEP
        # residual parameters are unconstrained (nlme's scale)
        lower = np.concatenate((st.lower_bounds, np.full(len(eta0), -np.inf)))
        record = None
        t0 = time.perf_counter()
        if theta0 is None and len(st.factors) > 1:
            # several factors: start from one-factor fits when that is better than lme4's start
            self._load_residual(eta0)
            quasi = (polish and ftol_abs is None and ftol_rel is None and xtol_abs is None
                     and self.has_gradient)
            guess = one_factor_start(self, LOOSE_TOLERANCES, refine=not quasi)
            if guess is not None:
                guess = np.concatenate((guess, eta0))
                if quasi:
                    # lme4's start first: the factor of the optimum stays in the buffers
                    f_start = objective(start)
                    record = self._quasi_newton_fit(guess, lower, objective)
                    if record is not None:
                        record.n_evaluations += 2  # (lme4's start, the one-factor start)
                        if not record.objective <= f_start:
                            record = None  # never worse than BOBYQA from lme4's start could be
                    if record is None:  # fall back to BOBYQA from the refined start
                        guess = refine_start(self, guess)
                if record is None and objective(guess) < objective(start):
                    start = guess
                    initial_step = NEAR_START_STEP
        loose = polish and self.n_params <= POLISH_MAX_FREE
        tol = dict(LOOSE_TOLERANCES if loose else TIGHT_TOLERANCES)
        tol.update({k: v for k, v in (("ftol_abs", ftol_abs), ("ftol_rel", ftol_rel),
                                      ("xtol_abs", xtol_abs)) if v is not None})
        run = dict(maxeval=maxeval, restart_edge=restart_edge, initial_step=initial_step,
                   restartable=np.concatenate((st.multi_column_diagonal(), np.zeros(len(eta0), bool))))
        if record is None:
            record = minimize_theta(objective, start, lower, **tol, **run)
        if polish and record.method == "nlopt LN_BOBYQA":
            theta, value, grad, hess, n, steps = newton_polish(
                objective, record.theta, lower, max_free=POLISH_MAX_FREE, max_steps=1)
            record.n_evaluations += n
            record.gradient, record.hessian = grad, hess
            if value <= record.objective:
                record.theta, record.objective, record.polish_steps = theta, value, steps
            if steps == 0 and loose and np.any(record.theta != 0):
                # no Newton step possible (e.g. a boundary): finish with BOBYQA's tight settings
                tight = minimize_theta(objective, record.theta, lower, **TIGHT_TOLERANCES, **run)
                tight.n_evaluations += record.n_evaluations
                tight.restarts += record.restarts
                tight.gradient, tight.hessian = record.gradient, record.hessian
                if tight.objective <= record.objective:
                    record = tight
        t1 = time.perf_counter()
        caught = self._collinearity_warnings()
        if not record.converged:
            caught.append(ConvergenceWarning(
                f"the optimizer did not converge ({record.message}) after {record.n_evaluations} evaluations"))
        if st.is_singular(record.theta[:st.n_theta]):
            caught.append(SingularFitWarning(
                "boundary (singular) fit: a variance is estimated at zero or a correlation at +-1"))
        results = LMMResults(self, record)
        results.timings = dict(self.timings, optimize=t1 - t0, finalize=time.perf_counter() - t1)
        # warnings raised when the design was built (e.g. RankDeficiencyWarning) are kept too
        results.warnings = list(getattr(self.design, "warnings", [])) + caught
        for w in caught:
            _warnings.warn(w, stacklevel=2)
        return results


    def _collinearity_warnings(self, max_condition: float = 1e7) -> list:
        """Warn when a factor's random-effects columns are nearly collinear (condition number of
        their correlation matrix, from the summed Z'Z blocks, above max_condition)."""
        out = []
        for f, zz in zip(self.structure.factors, self.crossprods.zz):
            if f.n_columns < 2:
                continue
            C = zz.sum(axis=0)
            d = np.sqrt(np.maximum(np.diag(C), np.finfo(float).tiny))
            w = np.linalg.eigvalsh(C / np.outer(d, d))
            cond = w[-1] / max(w[0], np.finfo(float).tiny)
            if cond > max_condition:
                out.append(CollinearRandomEffectsWarning(
                    f"the random-effects columns {f.column_names} of grouping factor {f.group!r} are "
                    f"nearly collinear (condition number {cond:.2g}): their variance components are "
                    "weakly identified; consider dropping or combining columns"))
        return out


def lmm(formula: str, data, *, reml: bool = True, solver: str = "auto", residual=None,
        variance=None) -> LinearMixedModel:
    """Set up a linear mixed model; call ``.fit()`` on the result.

    `data` is a pandas DataFrame, or a Dask DataFrame (e.g. ``dd.read_parquet(...)``): then the
    cross-products are computed per partition on the active Dask scheduler and summed (see
    bigmixed.distributed). `residual` (bm.AR1, bm.CompoundSymmetry) and `variance`
    (bm.VarIdent) add nlme's residual structures (see bigmixed.residual)."""
    from ..distributed.plan import is_dask_dataframe

    if is_dask_dataframe(data):
        if residual is not None or variance is not None:
            raise NotImplementedError("residual structures (residual=, variance=) are not "
                                      "supported with Dask data yet; fit from a pandas DataFrame")
        from ..distributed.model import lmm_dask

        return lmm_dask(formula, data, reml=reml, solver=solver)
    return LinearMixedModel(formula, data, reml=reml, solver=solver, residual=residual,
                            variance=variance)
