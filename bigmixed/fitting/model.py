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

from ..crossprods.basis import FixedEffectsBasis
from ..crossprods.crossprod import CrossProducts
from .objective import NotPositiveDefinite, ProfiledState, profiled_state
from .control import FitControl
from .stages import run_stages
from ..spec.structure import RandomEffectsStructure
from ..solvers.choose import SYSTEMS, auto_solver
from ..warnings import CollinearRandomEffectsWarning, ConvergenceWarning, SingularFitWarning
from ..spec.design import build_design

log = logging.getLogger("bigmixed")

SOLVERS = ("auto", "blockdiag", "cholmod", "schur")

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
            self.load_residual(self.residual.eta0)
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

    def load_residual(self, eta) -> float:
        """Put the residual structure's weighted cross-products for eta into the system."""
        if self.residual is None:
            return 0.0
        if self._loaded_eta is not None and np.array_equal(self._loaded_eta[0], eta):
            return self._loaded_eta[1]
        logdet = self.residual.load(eta)
        self.system.refresh()
        self._loaded_eta = (np.array(eta, dtype=np.float64), logdet)
        return logdet

    def state(self, params) -> ProfiledState:
        """Factor the system at params (theta, then any residual parameters) and return the
        profiled quantities."""
        theta, eta = self.split_params(params)
        logdet_R = self.load_residual(eta)
        logdet, S = self.system.update(theta)
        return profiled_state(logdet, S, self.n_obs, self.n_fixed, self.basis, logdet_R)

    def objective(self, params, reml: bool | None = None) -> float:
        """REML criterion or ML deviance at params (theta, then any residual parameters),
        profiled over beta and sigma; inf if undefined."""
        reml = self.reml if reml is None else reml
        theta, eta = self.split_params(params)
        if self.system.has_fused_objective:  # one grouping factor: all in compiled code
            try:
                logdet_R = self.load_residual(eta)
            except FloatingPointError:
                return np.inf
            value = self.system.objective(theta, bool(reml), self.n_obs, self.n_fixed, self.basis.logdet_W) + logdet_R
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
        return self.system.has_gradient and self.residual is None

    def gradient(self, params) -> np.ndarray:
        """Analytic gradient of the criterion in theta (see SchurSystem.criterion_gradient);
        every theta > 0. Evaluate the criterion at params first: the gradient reuses its factor."""
        if not self.has_gradient:
            raise NotImplementedError("no analytic gradient for this model")
        theta = np.asarray(params, dtype=np.float64)
        return self.system.criterion_gradient(theta, self.state(theta), self.reml)

    def fit(self, *, theta0=None, restart_edge: bool | None = None, polish: bool | None = None,
            ftol_abs: float | None = None, ftol_rel: float | None = None,
            xtol_abs: float | None = None, maxeval: int | None = None,
            control: FitControl | None = None):
        """Optimize theta; solve beta, sigma and the conditional modes at the optimum.

        The optimizer is a chain of stages (bigmixed.fitting.stages): one-factor start,
        quasi-Newton on the analytic gradient (large crossed models), refined start, BOBYQA,
        Newton polish, tight finish; each decides whether it applies. BOBYQA finds the
        optimum's neighbourhood; with polish (default) Newton steps on finite-difference
        derivatives then converge to ~1e-9 in theta, so results do not depend on the
        optimizer's path (row order, level order, threads). The keywords are those of
        `FitControl` (None: the control's value; defaults restart_edge=True, polish=True,
        maxeval=100000), which also holds the tuned constants (`control=` to change them); the
        optimizer record (``fit.optimizer``) keeps the tolerances used and a log of the stages.
        """
        from ..results.fit import LMMResults

        control = FitControl.from_options(
            control, theta0=theta0, restart_edge=restart_edge, polish=polish, ftol_abs=ftol_abs,
            ftol_rel=ftol_rel, xtol_abs=xtol_abs, maxeval=maxeval)
        t0 = time.perf_counter()
        record = run_stages(self, control)
        t1 = time.perf_counter()
        caught = self._fit_warnings(record)
        results = LMMResults(self, record)
        results.timings = dict(self.timings, optimize=t1 - t0, finalize=time.perf_counter() - t1)
        # warnings raised when the design was built (e.g. RankDeficiencyWarning) are kept too
        results.warnings = list(self.design.warnings) + caught
        for w in caught:
            _warnings.warn(w, stacklevel=2)
        return results

    def _fit_warnings(self, record) -> list:
        """Typed warnings of a fit: collinear random effects, no convergence, singular fit."""
        st = self.structure
        caught = self._collinearity_warnings()
        if not record.converged:
            caught.append(ConvergenceWarning(
                f"the optimizer did not converge ({record.message}) after {record.n_evaluations} evaluations"))
        if st.is_singular(record.params[:st.n_theta]):
            caught.append(SingularFitWarning(
                "boundary (singular) fit: a variance is estimated at zero or a correlation at +-1"))
        return caught

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
