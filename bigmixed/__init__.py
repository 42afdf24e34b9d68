"""bigmixed: linear mixed models by REML and ML at biobank scale.

    import bigmixed as bm
    fit = bm.lmm("y ~ x + (1 + x | g)", data=df).fit()
    print(fit.summary())
"""
import os as _os

# Numba's OpenMP worker threads spin after each parallel region by default; on a 2-core machine
# the spinning thread starves the main thread between kernel calls (a 0.1 ms objective evaluation
# took 40-60 ms). Passive waiting must be chosen before the OpenMP runtime starts.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import (
    BigmixedError,
    ColumnNameError,
    DataTypeError,
    DesignError,
    EmptyDataError,
    FamilyError,
    FormulaError,
    FormulaSyntaxError,
    GroupingError,
    GroupingExpressionError,
    IdentifiabilityError,
    MissingColumnError,
    ModelFormatError,
    NonFiniteValueError,
    ResidualStructureError,
    ResponseSupportError,
    ResponseTypeError,
    UnknownFunctionError,
    WeightsError,
)
from .inference.compare import anova, format_anova
from .api import lmm
from .fitting.glmm import GeneralizedLinearMixedModel, glmm
from .fitting.model import LinearMixedModel
from .results.glmm_fit import GLMMResults
from .spec.family import Binomial, Poisson
from .spec.residual import AR1, CompoundSymmetry, VarIdent
from .results.fit import LMMResults
from .warmup import warmup
from .fitting.batch import ManyFits, ResponseFit, fit_many, iter_fits
from .results.saved import load
from .inference.power import PowerResult, power_simulation
from .io import tidy
from .warnings import (
    BigmixedWarning,
    CollinearRandomEffectsWarning,
    ConvergenceWarning,
    RankDeficiencyWarning,
    RowsDroppedWarning,
    SingularFitWarning,
    SeparationWarning,
    BinaryResponseWarning,
)

from ._version import __version__  # noqa: E402

__all__ = [
    "AR1",
    "Binomial",
    "BigmixedError",
    "BigmixedWarning",
    "CollinearRandomEffectsWarning",
    "ColumnNameError",
    "CompoundSymmetry",
    "ConvergenceWarning",
    "DataTypeError",
    "DesignError",
    "EmptyDataError",
    "FamilyError",
    "FormulaError",
    "FormulaSyntaxError",
    "GroupingError",
    "GroupingExpressionError",
    "IdentifiabilityError",
    "GLMMResults",
    "GeneralizedLinearMixedModel",
    "ManyFits",
    "ModelFormatError",
    "LMMResults",
    "LinearMixedModel",
    "MissingColumnError",
    "NonFiniteValueError",
    "Poisson",
    "RankDeficiencyWarning",
    "ResidualStructureError",
    "ResponseFit",
    "ResponseSupportError",
    "ResponseTypeError",
    "RowsDroppedWarning",
    "SingularFitWarning",
    "SeparationWarning",
    "BinaryResponseWarning",
    "UnknownFunctionError",
    "VarIdent",
    "WeightsError",
    "__version__",
    "lmm",
    "glmm",
    "anova",
    "format_anova",
    "warmup",
    "fit_many",
    "iter_fits",
    "load",
    "power_simulation",
    "PowerResult",
    "tidy",
]
