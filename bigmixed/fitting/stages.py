"""The optimizer as a chain of stages, each deciding whether it applies.

formula -> design -> structure -> cross-products -> factor -> objective -> **optimizer** -> results.

A fit runs `STAGES` in order on one `FitState`:

1. `OneFactorStart`: several grouping factors and no user start: theta from one-factor fits
   (bigmixed.fitting.start).
2. `QuasiNewton`: a system with an analytic gradient (large crossed models with scalar factors)
   and no user tolerances: quasi-Newton steps on the gradient from the approximate criterion's
   minimum; the result is kept only when it is no worse than the criterion at lme4's start.
3. `OneFactorQuasiNewton`: one grouping factor (block-diagonal system, any number of random
   effects per level), no residual structure and no user tolerances: BFGS on the analytic
   gradient from the start, variances on the log scale; a variance heading to zero hands over
   to BOBYQA.
4. `RefinedStart`: without a quasi-Newton result, the one-factor start refined on the
   approximate criterion, used when it beats lme4's start (BOBYQA's first step is then small).
5. `Bobyqa`: without a result yet, BOBYQA under lme4's bounds with lme4's edge restart; loose
   tolerances when a Newton polish follows, tight otherwise.
6. `NewtonPolish`: after BOBYQA, Newton steps on finite differences (theta to ~1e-9).
7. `TightFinish`: when the polish could take no step (e.g. at a boundary) after loose
   tolerances, BOBYQA again to tight tolerances from its end point.

Every number a stage uses comes from the frozen `FitControl`. Each stage that runs adds a
`StageRecord` (exact evaluations, best criterion, seconds) to the fit's optimizer record.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from .. import progress
from .control import FitControl
from .optimize import minimize_theta, newton_polish, quasi_newton, quasi_newton_interior
from .record import OptimizerRecord, StageRecord
from .start import approx_newton_start, one_factor_start, refine_start

BOBYQA = "nlopt LN_BOBYQA"


@dataclass
class FitState:
    """The working state of one fit while its stages run (not kept after the fit)."""

    model: object
    control: FitControl
    lower: np.ndarray  # bounds of the parameter vector (theta, then residual parameters)
    eta0: np.ndarray  # the residual structure's starting parameters (empty without one)
    start: np.ndarray  # BOBYQA's start: lme4's, the user's, or a better one found
    initial_step: float
    guess: np.ndarray | None = None  # the one-factor start (with eta0 appended)
    quasi: bool = False  # the quasi-Newton path applies
    loose: bool = False  # BOBYQA runs to loose tolerances (a polish follows)
    polish_steps: int | None = None  # Newton steps the polish took (None: no polish ran)
    record: OptimizerRecord | None = None
    n_calls: int = 0  # exact evaluations of the criterion, all stages
    best: float = np.inf
    log: list = field(default_factory=list)

    def objective(self, params) -> float:
        """The model's criterion, counted (the stage log's evaluations)."""
        self.n_calls += 1
        value = self.model.objective(params)
        if value < self.best:
            self.best = value
        progress.report("optimizer", evaluations=self.n_calls, objective=self.best)
        return value


class Stage:
    """One step of the optimizer: `applies(state)` decides, `run(state)` acts on the state."""

    name = "stage"

    def applies(self, s: FitState) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self, s: FitState) -> str:  # pragma: no cover - abstract
        """Act on the state; return a short note for the stage log."""
        raise NotImplementedError


class OneFactorStart(Stage):
    name = "one-factor start"

    def applies(self, s):
        return s.control.theta0 is None and len(s.model.structure.factors) > 1

    def run(self, s):
        m, c = s.model, s.control
        m.load_residual(s.eta0)
        s.quasi = c.polish and not c.user_tolerances and m.has_gradient
        guess = one_factor_start(m, c, refine=False, objective=s.objective)
        if guess is None:
            return "no start (a one-factor fit failed)"
        s.guess = np.concatenate((guess, s.eta0))
        return "quasi-Newton path" if s.quasi else ""


class QuasiNewton(Stage):
    name = "quasi-Newton"

    def applies(self, s):
        return s.guess is not None and s.quasi

    def run(self, s):
        m, c = s.model, s.control
        f_start = s.objective(s.start)  # lme4's start first: the optimum's factor stays cached
        approx = approx_newton_start(m, s.guess, c)
        if approx is None:
            return "no approximate criterion: BOBYQA"
        theta_a, H, n_approx = approx
        # the approximation can be biased (on lme4's InstEval its minimum is 58% off in one
        # variance, and worse than the one-factor start): start from the better of the two
        f_guess = s.objective(s.guess)
        start = theta_a if s.objective(theta_a) <= f_guess else s.guess
        rec = quasi_newton(s.objective, m.gradient, start, H, s.lower, xtol=c.qn_xtol,
                           final_step=c.qn_final_step, max_iter=c.qn_max_iter)
        if rec is None:
            return "no convergence or a bound reached: BOBYQA"
        # (+2: lme4's start and the one-factor start)
        rec = replace(rec, n_approx_evaluations=n_approx, n_evaluations=rec.n_evaluations + 2)
        if not rec.objective <= f_start:  # never worse than BOBYQA from lme4's start could be
            return "worse than lme4's start: BOBYQA"
        s.record = rec
        return ""


class OneFactorQuasiNewton(Stage):
    """One grouping factor: BFGS on the block-diagonal system's analytic gradient from the start
    (lme4's or the user's), with the variances on the log scale, instead of BOBYQA and a
    difference-derivative polish (slope_1m: 68 evaluations -> 13 evaluations and gradients).
    A boundary optimum (a variance going to zero) is left to BOBYQA and lme4's edge restart."""

    name = "quasi-Newton (one factor)"

    def applies(self, s):
        m, c = s.model, s.control
        return (s.record is None and c.qn_one_factor and len(m.structure.factors) == 1
                and c.polish and not c.user_tolerances and m.has_gradient)

    def run(self, s):
        m, c = s.model, s.control
        diagonal = m.structure.lower_bounds == 0
        start, Hinv, note = s.start, None, ""
        n_levels = m.structure.factors[0].n_levels
        if n_levels >= c.qn_subsample_min_levels:
            start, Hinv, note = _subsample_start(m, c, s.start, diagonal)
        rec = quasi_newton_interior(s.objective, m.gradient, start, diagonal,
                                    xtol=c.qn_one_factor_xtol, max_iter=c.qn_one_factor_max_iter,
                                    min_diagonal=c.qn_one_factor_min_diagonal,
                                    inverse_hessian=Hinv)
        if rec is not None and not rec.converged and Hinv is not None:
            # the subsample's start did not serve: from lme4's start, as without it
            note += "; not used"
            rec = quasi_newton_interior(s.objective, m.gradient, s.start, diagonal,
                                        xtol=c.qn_one_factor_xtol,
                                        max_iter=c.qn_one_factor_max_iter,
                                        min_diagonal=c.qn_one_factor_min_diagonal)
        if rec is None:
            return "start on the boundary: BOBYQA"
        if rec.converged:
            s.record = rec
            return note
        if rec.message == "a variance near zero" and rec.objective <= s.objective(s.start):
            # BOBYQA from there, with that variance on the boundary (lme4's edge): it ends
            # at a boundary optimum in a few evaluations instead of walking from lme4's start
            start = rec.params.copy()
            start[(m.structure.lower_bounds == 0) & (start < c.qn_one_factor_min_diagonal)] = 0.0
            s.start, s.initial_step = start, c.near_start_step
            return "a variance near zero: BOBYQA from its end point"
        return f"{rec.message}: BOBYQA"


def _subsample_start(m, c, start, diagonal):
    """BFGS on every k-th level's criterion (`BlockDiagonalSystem.subsample`, about
    c.qn_subsample_levels levels) from `start`: its end point and inverse Hessian (scaled to the
    full criterion, which sums over k times the levels) start the full BFGS near the optimum,
    where a few steps converge. -> (start, inverse Hessian or None, note)."""
    from .objective import NotPositiveDefinite, profiled_state

    n_levels = m.structure.factors[0].n_levels
    step = max(2, n_levels // c.qn_subsample_levels)
    sub = m.system.subsample(step)
    frac = sub.zz.shape[0] / n_levels
    n_sub = max(m.n_fixed + 2, int(round(m.n_obs * frac)))
    reml, logdet_W = m.reml, m.basis.logdet_W

    def fun(theta):
        value = sub.objective(np.asarray(theta, dtype=np.float64), reml, n_sub, m.n_fixed, logdet_W)
        return value if np.isfinite(value) else np.inf

    def grad(theta):
        state = profiled_state(0.0, sub.schur_complement(theta), n_sub, m.n_fixed, m.basis, 0.0)
        return sub.criterion_gradient(theta, state, reml)

    out: dict = {}
    try:
        rec = quasi_newton_interior(fun, grad, start, diagonal, xtol=c.qn_subsample_xtol,
                                    max_iter=c.qn_one_factor_max_iter,
                                    min_diagonal=c.qn_one_factor_min_diagonal, state_out=out)
    except (NotPositiveDefinite, np.linalg.LinAlgError):  # the subsample's S: not PD
        rec = None  # only a start: the full fit goes on without it
    if rec is None or not rec.converged:
        return start, None, "subsample start failed"
    return (rec.params, out["inverse_hessian"] * frac,
            f"start from one level in {step}: {rec.n_evaluations} cheap evaluations")


class RefinedStart(Stage):
    name = "refined start"

    def applies(self, s):
        return s.guess is not None and s.record is None

    def run(self, s):
        guess = refine_start(s.model, s.guess, s.control, objective=s.objective)
        if s.objective(guess) < s.objective(s.start):
            s.start = guess
            s.initial_step = s.control.near_start_step
            return "used"
        return "lme4's start kept"


class Bobyqa(Stage):
    name = "BOBYQA"

    def applies(self, s):
        return s.record is None

    def run(self, s):
        m, c = s.model, s.control
        s.loose = c.polish and m.n_params <= c.polish_max_free
        s.record = minimize_theta(s.objective, s.start, s.lower, **c.bobyqa_tolerances(s.loose),
                                  **_bobyqa_run(s))
        return "loose tolerances" if s.loose else "tight tolerances"


class NewtonPolish(Stage):
    name = "Newton polish"

    def applies(self, s):
        return s.control.polish and s.record.method == BOBYQA

    def run(self, s):
        rec = s.record
        theta, value, grad, hess, n, steps = newton_polish(
            s.objective, rec.params, s.lower, max_free=s.control.polish_max_free, max_steps=1)
        rec = replace(rec, n_evaluations=rec.n_evaluations + n, gradient=grad, hessian=hess)
        if value <= rec.objective:
            rec = replace(rec, params=theta, objective=value, polish_steps=steps)
        s.record = rec
        s.polish_steps = steps
        return f"{steps} step(s)"


class TightFinish(Stage):
    name = "tight finish"

    def applies(self, s):
        return s.polish_steps == 0 and s.loose and bool(np.any(s.record.params != 0))

    def run(self, s):
        rec = s.record
        tight = minimize_theta(s.objective, rec.params, s.lower, **s.control.tight.as_dict(),
                               **_bobyqa_run(s))
        if tight.objective <= rec.objective:
            s.record = replace(tight, n_evaluations=tight.n_evaluations + rec.n_evaluations,
                               restarts=tight.restarts + rec.restarts, gradient=rec.gradient,
                               hessian=rec.hessian)
            return "used"
        return "kept BOBYQA's loose end point"


def _bobyqa_run(s: FitState) -> dict:
    c, st = s.control, s.model.structure
    restartable = np.concatenate((st.multi_column_diagonal(), np.zeros(len(s.eta0), bool)))
    return dict(maxeval=c.maxeval, restart_edge=c.restart_edge, initial_step=s.initial_step,
                restart_step=c.initial_step, restartable=restartable)


STAGES = (OneFactorStart(), QuasiNewton(), OneFactorQuasiNewton(), RefinedStart(), Bobyqa(),
          NewtonPolish(), TightFinish())


def run_stages(model, control: FitControl, stages=STAGES) -> OptimizerRecord:
    """Run the stages on `model` (a LinearMixedModel) and return the optimizer record with the
    stage log."""
    st = model.structure
    eta0 = model.residual.eta0 if model.residual is not None else np.zeros(0)
    start = (np.concatenate((st.initial_theta(), eta0)) if control.theta0 is None
             else np.asarray(control.theta0, dtype=np.float64))
    # residual parameters are unconstrained (nlme's scale)
    lower = np.concatenate((st.lower_bounds, np.full(len(eta0), -np.inf)))
    s = FitState(model, control, lower, eta0, start, control.initial_step)
    for stage in stages:
        if not stage.applies(s):
            continue
        calls, t0 = s.n_calls, time.perf_counter()
        note = stage.run(s)
        best = s.record.objective if s.record is not None else s.best
        s.log.append(StageRecord(stage.name, s.n_calls - calls, float(best),
                                 time.perf_counter() - t0, note))
    return replace(s.record, stages=tuple(s.log))
