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
from ..pages import small_pages
from ..crossprods.basis import FixedEffectsBasis
from ..crossprods.crossprod import CrossProducts
from .objective import NotPositiveDefinite, ProfiledState, profiled_state
from ..results.rows import InMemoryRows, RowSource
from .control import FitControl
from .record import OptimizerRecord
from .stages import run_stages
from ..spec.structure import RandomEffectsStructure
from ..solvers.choose import SYSTEMS, auto_solver
from ..warnings import CollinearRandomEffectsWarning, ConvergenceWarning, SingularFitWarning
from ..spec.design import build_design
from ..spec.glm_inputs import prior_arrays
from ..spec.checks import check_lmm_options, check_response_values, user_stacklevel

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
    weights : column name, expression or array, optional
        Prior weights (lme4's ``weights=``): the residual variance of row i is sigma^2 / w_i.
        Positive and finite; rows where they are missing are dropped (na.omit).
    offset : column name, expression or array, optional
        Added to the linear predictor (lme4's ``offset=``; ``offset(x)`` terms in the formula
        too): the model is fitted to y - offset and fitted values include it.
    """

    @small_pages()
    def __init__(self, formula: str, data, *, reml: bool = True, solver: str = "auto",
                 residual=None, variance=None, weights=None, offset=None):
        from ..spec.residual import residual_columns

        check_lmm_options("LinearMixedModel", reml=reml, solver=solver, residual=residual,
                          variance=variance)  # typed: bm.OptionError
        t0 = time.perf_counter()
        progress.report("design", rows=getattr(data, "shape", (None,))[0])  # progress hook
        extra = residual_columns(residual, variance)
        design = _prior_design(formula, data, weights, offset, extra)
        if design is None:
            # the fixed part's columns read in place by the cross-products (no n x p copy);
            # residual structures read X's rows themselves
            design = build_design(formula, data, extra_columns=extra, fixed_in_place=not extra)
        _warn_binary_response(design)
        check_response_values(design.y, design.response)  # constant / overflowing: typed error
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
                           solver: str = "auto", rows=None,
                           sum_log_weights: float | None = None) -> "LinearMixedModel":
        """Build from precomputed cross-products (e.g. summed over the partitions of a Dask
        DataFrame, see bigmixed.distributed) and a Design that needs no row arrays: formula,
        fixed_names, terms (levels and column names; codes and Z may be empty), n_dropped and
        warnings. `structure` defaults to RandomEffectsStructure(design.terms); `rows` says where
        the rows are (a bigmixed.results.rows.RowSource; default: none). With prior weights
        (`design.prior`), the cross-products are the weighted ones and `sum_log_weights` is
        sum(log w_i) over the rows (the criterion's -sum(log w_i) term)."""
        self = cls.__new__(cls)
        self._setup(design, reml, solver, design_time=0.0, crossprods=crossprods,
                    structure=structure, rows=rows if rows is not None else RowSource(),
                    sum_log_weights=sum_log_weights)
        return self

    def _setup(self, design, reml, solver, design_time, crossprods=None, structure=None,
               residual=None, variance=None, rows=None, template_system=None,
               sum_log_weights=None):
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, not {solver!r}")
        t1 = time.perf_counter()
        self.design = design
        self.formula = design.formula
        self.reml = bool(reml)
        self.structure = RandomEffectsStructure(design.terms) if structure is None else structure
        self.rows = InMemoryRows(design, self.structure) if rows is None else rows
        # prior weights and offset (bm.lmm(weights=, offset=)): None without them
        self.prior = getattr(design, "prior", None)
        self.prior_weights, self.offset = prior_arrays(design)
        if self.prior_weights is not None and residual is not None:
            raise NotImplementedError(
                "weights= with a correlation structure (residual=bm.AR1 / bm.CompoundSymmetry) "
                "is not supported yet; weights= with variance=bm.VarIdent(...) alone is")
        if sum_log_weights is None and self.prior_weights is not None:
            sum_log_weights = _sum_log(self.prior_weights)
        # the criterion's -sum(log w_i) (lme4's -ldW): the log det of the residual covariance / sigma^2
        self.sum_log_weights = None if sum_log_weights is None else float(sum_log_weights)
        self.prior_logdet = 0.0 if sum_log_weights is None else -float(sum_log_weights)
        if crossprods is None:
            progress.report("cross-products", rows=len(design.y))  # progress hook
            if self.prior is None:
                crossprods = CrossProducts.compute(design.X, design.y, self.structure)
            else:
                crossprods = CrossProducts.compute(design.X, self.working_y(design.y),
                                                   self.structure, self.prior_weights)
        self.crossprods = crossprods
        # The systems work in a well-conditioned basis of the fixed effects (see basis.py).
        self.basis = FixedEffectsBasis.from_gram(self.crossprods.gram, self.crossprods.n_fixed)
        self.work_crossprods = self.basis.apply(self.crossprods)
        self.residual = None
        self._loaded_eta = None
        if residual is not None or variance is not None:
            from ..crossprods.residual_weights import ResidualModel

            rdesign = design if self.offset is None else replace(design, y=self.working_y(design.y))
            self.residual = ResidualModel(residual, variance, rdesign, self.structure, self.crossprods,
                                          prior_weights=self.prior_weights)
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
        if template_system is not None:  # same pattern: keep its symbolic analysis
            self.system = template_system.with_crossprods(self.work_crossprods)
        else:
            self.system = SYSTEMS[solver](self.work_crossprods, self.structure)
        if self.residual is not None:
            self.load_residual(self.residual.eta0)
        t3 = time.perf_counter()
        self.timings = {"design": design_time, "crossprod": t2 - t1, "analyse": t3 - t2}
        if design.n_dropped:
            log.info("dropped %d rows with missing values", design.n_dropped)

    # ---- new models on the same design, and refits -------------------------------------
    def _derived(self, *, design=None, crossprods=None, reml=None) -> "LinearMixedModel":
        """A new, independent model sharing this one's structure and (unless given) design and
        cross-products; its system has the same pattern and buffers of its own."""
        new = type(self).__new__(type(self))
        spec = self.residual
        new._setup(self.design if design is None else design,
                   self.reml if reml is None else reml, self.solver, design_time=0.0,
                   crossprods=self.crossprods if crossprods is None else crossprods,
                   structure=self.structure,
                   residual=None if spec is None else spec.residual,
                   variance=None if spec is None else spec.variance,
                   rows=self.rows if design is None else None, template_system=self.system,
                   sum_log_weights=self.sum_log_weights)
        return new

    def working_y(self, y) -> np.ndarray:
        """The response the cross-products see: y - offset (y itself without an offset)."""
        if self.offset is None:
            return y
        return np.ascontiguousarray(np.asarray(y, dtype=np.float64) - self.offset)

    def with_response(self, y, *, response: str | None = None,
                      formula: str | None = None) -> "LinearMixedModel":
        """A new model for another response on the same rows: one pass over the rows for Z'y,
        X'y and y'y; the design, Z'Z, Z'X, X'X and the symbolic factorization are reused. The
        fit is bit-identical to building the model from the data with that response.
        `response` and `formula` rename the response (default: unchanged)."""
        from dataclasses import is_dataclass

        y = np.ascontiguousarray(y, dtype=np.float64)
        X = self.rows.X
        if y.shape != (X.shape[0],):
            raise ValueError(f"y must have one value per row used ({X.shape[0]}), got shape {y.shape}")
        changes = {"y": y}
        if response is not None:
            changes["response"] = response
        if formula is not None:
            changes["formula"] = formula
            parsed = self.design.parsed
            if self.prior is not None:  # the design's formula: without the offset() terms
                from ..spec.glm_inputs import split_offsets

                lhs, rhs = formula.split("~", 1)
                kept, _ = split_offsets(rhs)
                text = f"{lhs.rstrip()} ~ {' + '.join(t.strip() for t in kept)}"
                changes["prior"] = replace(self.prior, design_formula=text)
            else:
                text = formula
            if is_dataclass(parsed):
                changes["parsed"] = replace(parsed, text=text, response=response or parsed.response)
        design = replace(self.design, **changes)
        t0 = time.perf_counter()
        if self.prior is None:
            cp = self.crossprods.with_response(X, y, self.structure)
        else:
            cp = self.crossprods.with_response(X, self.working_y(y), self.structure,
                                               self.prior_weights)
        new = self._derived(design=design, crossprods=cp)
        new.timings = dict(new.timings, crossprod=time.perf_counter() - t0)
        return new

    def refit(self, y=None, reml: bool | None = None, theta0=None, **fit_options):
        """A new, independent fit of this model: to another response `y` (same rows; see
        `with_response`), by REML or ML (`reml`), from `theta0` (theta, then any residual
        parameters), with `fit` keywords. This model and every fit made from it are
        unchanged."""
        if reml is not None and not isinstance(reml, (bool, np.bool_)):
            raise TypeError(f"reml must be True or False, not {reml!r}")
        model = self.with_response(y) if y is not None else self
        if reml is not None and bool(reml) != model.reml or model is self:
            model = model._derived(reml=reml)
        return model.fit(theta0=theta0, **fit_options)

    def results_at(self, params):
        """The fit record of this model at `params` (theta, then any residual parameters)
        instead of at the optimum: estimates, BLUPs and criterion there (e.g. to check
        convergence away from the optimum)."""
        from ..results.fit import LMMResults

        params = np.array(params, dtype=np.float64)
        record = OptimizerRecord(method="evaluated at given parameters", n_evaluations=1,
                                 params=params, objective=float(self.objective(params)),
                                 converged=False, message="not optimized")
        return LMMResults.from_model(self, record, warnings=(), timings=self.timings)

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
        if self.prior_logdet:
            logdet_R = logdet_R + self.prior_logdet
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
            if self.prior_logdet:
                logdet_R = logdet_R + self.prior_logdet
            value = self.system.objective(theta, bool(reml), self.n_obs, self.n_fixed, self.basis.logdet_W) + logdet_R
            return value if np.isfinite(value) else np.inf
        try:
            value = self.state(params).criterion(reml)
        except NotPositiveDefinite:
            return np.inf
        return value if np.isfinite(value) else np.inf

    @property
    def has_gradient(self) -> bool:
        """`gradient` applies: the system has an analytic gradient (one grouping factor, or a
        SchurSystem with one effect per level of every factor) and there is no residual
        structure."""
        return self.system.has_gradient and self.residual is None

    def gradient(self, params) -> np.ndarray:
        """Analytic gradient of the criterion in theta (see SchurSystem.criterion_gradient);
        every theta > 0. Evaluate the criterion at params first: the gradient reuses its factor."""
        if not self.has_gradient:
            raise NotImplementedError("no analytic gradient for this model")
        theta = np.asarray(params, dtype=np.float64)
        if self.system.has_fused_objective:  # S of the evaluation just made, not a new pass
            state = profiled_state(0.0, self.system.schur_complement(theta), self.n_obs,
                                   self.n_fixed, self.basis, 0.0)
        else:
            state = self.state(theta)
        return self.system.criterion_gradient(theta, state, self.reml)

    @small_pages()
    def fit(self, *, theta0=None, restart_edge: bool | None = None, polish: bool | None = None,
            ftol_abs: float | None = None, ftol_rel: float | None = None,
            xtol_abs: float | None = None, maxeval: int | None = None,
            control: FitControl | None = None):
        """Optimize theta; solve beta, sigma and the conditional modes at the optimum.

        The optimizer is a chain of stages (bigmixed.fitting.stages): one-factor start,
        quasi-Newton on the analytic gradient (large crossed models; any one-factor model),
        refined start, BOBYQA, Newton polish, tight finish; each decides whether it applies.
        BOBYQA finds the optimum's neighbourhood; with polish (default) Newton steps on finite-difference
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
        # warnings raised when the design was built (e.g. RankDeficiencyWarning) are kept too
        results = LMMResults.from_model(self, record, warnings=list(self.design.warnings) + caught,
                                        timings=dict(self.timings, optimize=t1 - t0))
        for w in caught:
            _warnings.warn(w, stacklevel=user_stacklevel())
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


def _prior_design(formula, data, weights, offset, extra):
    """The design of a model with prior weights or an offset (weights=, offset=, offset()
    terms; bigmixed.spec.glm_inputs): built from the formula without the offset() terms, with
    the weights and offset as derived columns (na.omit applies to them), `formula` the user's
    and `prior` their spec. None without weights and offset, or when the formula or data are
    not what build_design takes (it then names the problem)."""
    import pandas as pd

    from ..spec import glm_inputs

    if not (isinstance(formula, str) and "~" in formula and isinstance(data, pd.DataFrame)
            and glm_inputs.has_prior(formula, weights, offset)):
        return None
    text, frame, prior_extra, prior = glm_inputs.lmm_inputs(formula, data, weights=weights,
                                                            offset=offset)
    design = build_design(text, frame, extra_columns=tuple(extra) + tuple(prior_extra))
    return replace(design, formula=formula, prior=prior)


def _sum_log(w) -> float:
    """sum(log w_i) as a double-double rounded once (the same number whatever the row split:
    bigmixed.distributed adds the partitions' double-doubles)."""
    from ..kernels.crossprod import dd_sum

    hi, lo = dd_sum(np.log(np.asarray(w, dtype=np.float64)))
    return float(hi + lo)


def _warn_binary_response(design) -> None:
    """A 0/1 response: warn (BinaryResponseWarning, kept in the design's warnings) that this is
    a linear model of a binary outcome and point to bm.glmm."""
    from ..spec.checks import user_stacklevel
    from ..warnings import BinaryResponseWarning

    y = design.y
    if len(y) < 2 or not np.all((y == 0.0) | (y == 1.0)) or y.min() == y.max():
        return
    w = BinaryResponseWarning(
        f"the response {design.response!r} holds only 0 and 1: this fits a linear mixed model "
        "of a binary outcome; for the logistic (or probit) GLMM use "
        "bm.glmm(formula, data, family='binomial')")
    _warnings.warn(w, stacklevel=user_stacklevel())
    design.warnings.append(w)
