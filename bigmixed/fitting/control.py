"""What a fit may be told: the fit's keywords and the optimizer's tuned constants, frozen.

`FitControl` holds every number the optimizer stages (bigmixed.fitting.stages) read, so that a
test or a user changes a field (``dataclasses.replace(FitControl(), polish=False)``) instead of
a module global. The defaults are the tuned values; each says what it was tuned on.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np


@dataclass(frozen=True)
class Tolerances:
    """BOBYQA's stopping rules (nlopt's ftol_abs, ftol_rel, xtol_abs)."""

    ftol_abs: float
    ftol_rel: float
    xtol_abs: float

    def as_dict(self) -> dict:
        return {"ftol_abs": self.ftol_abs, "ftol_rel": self.ftol_rel, "xtol_abs": self.xtol_abs}


@dataclass(frozen=True, eq=False)
class FitControl:
    """The fit's options (the keywords of ``LinearMixedModel.fit``) and tuned constants.

    theta0 : start (theta, then a residual structure's parameters); None: lme4's start, or
        one-factor fits for several grouping factors.
    restart_edge : lme4's restart when a variance ends at zero.
    polish : Newton steps on finite differences after BOBYQA (theta accurate to ~1e-9).
    ftol_abs, ftol_rel, xtol_abs : BOBYQA's stopping rules chosen by the user (None: the tuned
        ones below). Giving any of them also turns off the quasi-Newton path.
    maxeval : at most this many evaluations per BOBYQA run.
    """

    theta0: np.ndarray | None = None
    restart_edge: bool = True
    polish: bool = True
    ftol_abs: float | None = None
    ftol_rel: float | None = None
    xtol_abs: float | None = None
    maxeval: int = 100_000
    # BOBYQA's stopping rules: tight ones match lme4's precision and more; loose ones only need
    # to reach the neighbourhood where one Newton step converges (tuned on bench/references and
    # slope_105k: fewest evaluations with row-order invariance below 1e-8). No relative tolerance
    # on the criterion: it carries an arbitrary additive constant (2 (n - p) log of y's scale).
    tight: Tolerances = Tolerances(1e-10, 0.0, 1e-8)
    loose: Tolerances = Tolerances(1e-7, 0.0, 1e-5)
    # the Newton polish applies up to this many free parameters (loose BOBYQA tolerances too)
    polish_max_free: int = 6
    # BOBYQA's first trust radius relative to |theta| (0.1 to 0.75 all do alike)
    initial_step: float = 0.25
    # ... from a start already near the optimum (one-factor fits, refined): a full-size first
    # step wastes evaluations walking back (crossed_73k: 42 -> 34 evaluations)
    near_start_step: float = 0.05
    # quasi-Newton on the analytic gradient, relative to max(|theta|, 0.1): stop when the next
    # step is below qn_xtol; a step below qn_final_step taken after at least one Hessian update
    # is the last one (its error is ~1e-2 of it on crossed models), checked by the criterion
    qn_xtol: float = 1e-7
    qn_final_step: float = 1e-5
    qn_max_iter: int = 25
    # one grouping factor: BFGS on the block-diagonal system's analytic gradient from lme4's
    # start (False: BOBYQA and the Newton polish). The step tolerance is tighter than the
    # crossed path's: from a far start BFGS's last steps are its most accurate (slope_1m:
    # 13 evaluations and gradients, theta within 2e-8 of BOBYQA + polish, criterion equal
    # to rounding). A diagonal element of T below qn_one_factor_min_diagonal hands over to
    # BOBYQA from that point with the element on the boundary: gradient steps only creep
    # towards a zero variance (on the log scale), BOBYQA with lme4's edge rules settles it
    # (the singular references: 6-19 BFGS iterations, then fewer BOBYQA evaluations than from
    # lme4's start)
    qn_one_factor: bool = True
    qn_one_factor_xtol: float = 1e-8
    qn_one_factor_max_iter: int = 60
    qn_one_factor_min_diagonal: float = 1e-2
    # ... from this many levels, BFGS first on about qn_subsample_levels of them (every k-th
    # level) to a loose tolerance: the full criterion then starts near its optimum with a
    # good inverse Hessian (slope_10m: fewer full evaluations and gradients)
    qn_subsample_min_levels: int = 100_000
    qn_subsample_levels: int = 20_000
    qn_subsample_xtol: float = 1e-4
    # start refinement on the approximate criterion (bigmixed.fitting.start): only when the
    # exact evaluation is expensive (a dense block of at least refine_min_dense columns) and
    # theta is short; the Newton step is taken only if below refine_max_step (relative), and
    # only when the approximate minimum moved the start by more than refine_min_change
    refine_min_dense: int = 256
    refine_max_theta: int = 6
    refine_max_step: float = 0.02
    refine_min_change: float = 0.005
    approx_tolerances: Tolerances = Tolerances(1e-5, 0.0, 1e-4)
    # quasi-Newton on the approximate criterion stops at a step below this (relative): its
    # minimum is itself ~2e-3 from the exact one on crossed_73k (InstEval's shape)
    approx_newton_xtol: float = 5e-4

    @classmethod
    def from_options(cls, control: "FitControl | None" = None, **options) -> "FitControl":
        """`control` (default: the defaults) with the keyword options that are not None."""
        base = control if control is not None else cls()
        names = {f.name for f in fields(cls)}
        unknown = set(options) - names
        if unknown:
            raise TypeError(f"unknown fit option(s): {', '.join(sorted(unknown))}")
        given = {k: v for k, v in options.items() if v is not None}
        if "theta0" in given:
            given["theta0"] = np.array(given["theta0"], dtype=np.float64)
        return replace(base, **given)

    @property
    def user_tolerances(self) -> dict:
        """The BOBYQA tolerances the user set (empty: none)."""
        return {k: v for k, v in (("ftol_abs", self.ftol_abs), ("ftol_rel", self.ftol_rel),
                                  ("xtol_abs", self.xtol_abs)) if v is not None}

    def bobyqa_tolerances(self, loose: bool) -> dict:
        """The stopping rules of the main BOBYQA run: loose before a Newton polish, else tight,
        with the user's own taking precedence."""
        tol = (self.loose if loose else self.tight).as_dict()
        tol.update(self.user_tolerances)
        return tol
