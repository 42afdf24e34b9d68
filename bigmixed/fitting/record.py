"""What the optimizer did: one immutable record per fit, with a log of its stages."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class StageRecord:
    """One stage of a fit (bigmixed.fitting.stages): exact evaluations of the criterion it
    made, the best criterion known after it, and its wall time."""

    stage: str
    n_evaluations: int
    objective: float
    seconds: float
    note: str = ""


@dataclass(frozen=True, eq=False)
class OptimizerRecord:
    """What the optimizer did: evaluations, the final parameters and objective, convergence.

    params : the optimizer's vector at the end: theta (lme4's order), then a residual
        structure's unconstrained parameters.
    n_evaluations : evaluations of the criterion counted by the optimizers (lme4's feval).
    tolerances : the stopping rules of the run that produced `params`.
    stages : the stages that ran, in order (StageRecord).
    """

    method: str
    n_evaluations: int
    params: np.ndarray
    objective: float
    converged: bool
    message: str
    restarts: int = 0
    polish_steps: int = 0
    n_gradients: int = 0  # analytic gradients (quasi_newton), each about two evaluations' cost
    n_approx_evaluations: int = 0  # of an approximate criterion (start refinement), ~1/8 each
    gradient: np.ndarray | None = field(default=None, repr=False)  # at the end, free coordinates
    hessian: np.ndarray | None = field(default=None, repr=False)
    history: tuple = field(default=(), repr=False)
    tolerances: dict = field(default_factory=dict)
    stages: tuple = ()
