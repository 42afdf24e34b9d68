"""Typed warnings. Each one raised during a fit is also recorded on the result (``fit.warnings``)."""


class BigmixedWarning(UserWarning):
    """Base class of bigmixed's warnings."""


class SingularFitWarning(BigmixedWarning):
    """A variance is estimated at zero or a correlation at +-1 (lme4's isSingular)."""


class SeparationWarning(BigmixedWarning):
    """A binomial response is (quasi-)completely separated by the fixed effects: some
    coefficients diverge and their Wald tests are meaningless."""


class BinaryResponseWarning(BigmixedWarning):
    """A 0/1 response given to bm.lmm (a linear model of a binary outcome): bm.glmm fits the
    logistic (or probit) GLMM."""


class ConvergenceWarning(BigmixedWarning):
    """The optimizer stopped without meeting its convergence criteria."""


class RowsDroppedWarning(BigmixedWarning):
    """Rows with missing values in model columns were dropped (na.omit)."""


class RankDeficiencyWarning(BigmixedWarning):
    """The fixed-effects model matrix is rank deficient: aliased columns were dropped.

    As lme4 (``check.rankX = "message+drop.cols"``): a pivoted QR with tolerance 1e-7
    finds the columns that are linear combinations of earlier ones; they are dropped and
    listed in ``Design.dropped_fixed``.
    """


__all__ = [
    "BigmixedWarning",
    "ConvergenceWarning",
    "RankDeficiencyWarning",
    "RowsDroppedWarning",
    "SingularFitWarning",
    "SeparationWarning",
    "BinaryResponseWarning",
]


class CollinearRandomEffectsWarning(BigmixedWarning):
    """Columns of a random-effects term are nearly collinear: the variance components of that
    term are weakly identified and the optimum may lie far out on a flat ridge."""
