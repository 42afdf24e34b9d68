"""Typed warnings. Each one raised during a fit is also recorded on the result (``fit.warnings``)."""


class BigmixedWarning(UserWarning):
    """Base class of bigmixed's warnings."""


class SingularFitWarning(BigmixedWarning):
    """A variance is estimated at zero or a correlation at +-1 (lme4's isSingular)."""


class ConvergenceWarning(BigmixedWarning):
    """The optimizer stopped without meeting its convergence criteria."""


class RowsDroppedWarning(BigmixedWarning):
    """Rows with missing values in model columns were dropped (na.omit)."""


__all__ = ["BigmixedWarning", "ConvergenceWarning", "RowsDroppedWarning", "SingularFitWarning"]
