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

from ._version import __version__  # noqa: E402

# The public names are loaded on first use (PEP 562): `import bigmixed` and `bigmixed --version`
# do not pay for pandas, formulaic, numba, scipy or dask until a name that needs them is used.
_EXPORTS = {
    "lmm": ".api",
    "BigmixedError": ".errors",
    "ColumnNameError": ".errors",
    "DataTypeError": ".errors",
    "DesignError": ".errors",
    "EmptyDataError": ".errors",
    "FamilyError": ".errors",
    "OptionError": ".errors",
    "DegenerateResponseError": ".errors",
    "FormulaError": ".errors",
    "FormulaSyntaxError": ".errors",
    "GroupingError": ".errors",
    "GroupingExpressionError": ".errors",
    "IdentifiabilityError": ".errors",
    "MissingColumnError": ".errors",
    "ModelFormatError": ".errors",
    "NonFiniteValueError": ".errors",
    "ResidualStructureError": ".errors",
    "ResponseSupportError": ".errors",
    "ResponseTypeError": ".errors",
    "SavedSectionMissingError": ".errors",
    "UnknownFunctionError": ".errors",
    "WeightsError": ".errors",
    "ManyFits": ".fitting.batch",
    "ResponseFit": ".fitting.batch",
    "fit_many": ".fitting.batch",
    "iter_fits": ".fitting.batch",
    "GeneralizedLinearMixedModel": ".fitting.glmm",
    "glmm": ".api",
    "LinearMixedModel": ".fitting.model",
    "anova": ".inference.compare",
    "emmeans": ".inference.emmeans",
    "pairs": ".inference.emmeans",
    "EMMeans": ".inference.emmeans",
    "vcov_kenward_roger": ".inference.kenward_roger",
    "KenwardRogerSizeError": ".inference.kenward_roger",
    "drop1": ".inference.drop",
    "ranova": ".inference.drop",
    "update": ".inference.update",
    "update_formula": ".inference.update",
    "UpdateNeedsDataError": ".inference.update",
    "format_anova": ".inference.compare",
    "PowerResult": ".inference.power",
    "power_simulation": ".inference.power",
    "tidy": ".io",
    "LMMResults": ".results.fit",
    "GLMMResults": ".results.glmm_fit",
    "load": ".results.saved",
    "Binomial": ".spec.family",
    "Poisson": ".spec.family",
    "AR1": ".spec.residual",
    "CompoundSymmetry": ".spec.residual",
    "VarIdent": ".spec.residual",
    "warmup": ".warmup",
    "BigmixedWarning": ".warnings",
    "BinaryResponseWarning": ".warnings",
    "CollinearRandomEffectsWarning": ".warnings",
    "ConvergenceWarning": ".warnings",
    "RankDeficiencyWarning": ".warnings",
    "RowsDroppedWarning": ".warnings",
    "SeparationWarning": ".warnings",
    "SingularFitWarning": ".warnings",
}


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bigmixed' has no attribute {name!r}")
    import importlib

    parent = importlib.import_module(module, __name__)
    try:
        value = getattr(parent, name)
    except AttributeError:  # a submodule (bigmixed.tidy is bigmixed.io.tidy)
        value = importlib.import_module(f"{module}.{name}", __name__)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


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
    "OptionError",
    "DegenerateResponseError",
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
    "emmeans",
    "pairs",
    "EMMeans",
    "vcov_kenward_roger",
    "KenwardRogerSizeError",
    "drop1",
    "ranova",
    "update",
    "update_formula",
    "UpdateNeedsDataError",
    "format_anova",
    "warmup",
    "fit_many",
    "iter_fits",
    "load",
    "power_simulation",
    "PowerResult",
    "tidy",
]
