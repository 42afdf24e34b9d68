"""bigmixed: linear mixed models by REML and ML at biobank scale.

    import bigmixed as bm
    fit = bm.lmm("y ~ x + (1 + x | g)", data=df).fit()
    print(fit.summary())
"""
from .model import LinearMixedModel, lmm
from .results import LMMResults
from .warnings import BigmixedWarning, ConvergenceWarning, RowsDroppedWarning, SingularFitWarning

__version__ = "0.1.0"

__all__ = [
    "BigmixedWarning",
    "ConvergenceWarning",
    "LMMResults",
    "LinearMixedModel",
    "RowsDroppedWarning",
    "SingularFitWarning",
    "__version__",
    "lmm",
]
