"""Typed errors for bad input.

Every problem with the model formula or the data is detected by `parse_formula` /
`build_design` -- before any cross-product is computed -- and raised as one of the
exceptions below. Each message names what is at fault (the column, term, function or
value) and, where there is one, the usual fix.

::

    BigmixedError                       base of everything bigmixed raises on bad input
    ├── FormulaError (ValueError)       the formula text cannot be understood
    │   ├── FormulaSyntaxError          no '~', unbalanced parentheses, '|' with an empty side, ...
    │   ├── UnknownFunctionError        a function in the formula that bigmixed does not know
    │   └── GroupingExpressionError     a grouping factor that is not a column or a:b of columns
    ├── DesignError (ValueError)        the data do not fit the formula
    │   ├── MissingColumnError          a column the formula uses is not in the data (KeyError too)
    │   ├── ColumnNameError             duplicated or non-string column names
    │   ├── DataTypeError               a column of the wrong type (dates, complex, mixed ids)
    │   │   └── ResponseTypeError       the response is not numeric
    │   ├── EmptyDataError              no rows, or every row has a missing value
    │   ├── NonFiniteValueError         +-Inf in the response or a covariate
    │   ├── GroupingError               a grouping factor with fewer than 2 levels
    │   ├── ResidualStructureError      a residual structure (AR1, CompoundSymmetry, VarIdent)
    │   │                               that the data do not fit: repeated times in a series,
    │   │                               series not nested in a grouping factor, ...
    │   ├── IdentifiabilityError        lme4's checks: levels >= observations, or
    │   │                               random effects >= observations for a term
    │   ├── ResponseSupportError        a GLMM response outside its family's support
    │   ├── WeightsError                prior weights that are negative, zero or not numeric
    │   └── DegenerateResponseError     an LMM response that is constant (all zero too) or so
    │                                   large that its sum of squares overflows
    ├── FamilyError (ValueError)        an unknown GLMM family or link
    ├── OptionError (TypeError, ValueError)  an option of the wrong type or value
    │                                   (reml="yes", solver=3, nAGQ="1", family= for lmm)
    └── ModelFormatError (ValueError)   a saved model (bm.load) that cannot be read: not a
        │                               bigmixed file, damaged, or from a newer format version
        └── SavedSectionMissingError    a loaded model asked for what its file does not hold
                                        (also AttributeError): re-save the model

Both families derive from ValueError, so ``except ValueError`` keeps working; catch
`BigmixedError` for everything bigmixed raises on bad input. `FormulaError` and
`DesignError` are also importable from `bigmixed.spec.formula` and `bigmixed.spec.design`.
"""
from __future__ import annotations

__all__ = [
    "BigmixedError",
    "FormulaError",
    "FormulaSyntaxError",
    "UnknownFunctionError",
    "GroupingExpressionError",
    "DesignError",
    "MissingColumnError",
    "ColumnNameError",
    "DataTypeError",
    "ResponseTypeError",
    "EmptyDataError",
    "NonFiniteValueError",
    "GroupingError",
    "ResidualStructureError",
    "IdentifiabilityError",
    "ResponseSupportError",
    "WeightsError",
    "FamilyError",
    "OptionError",
    "DegenerateResponseError",
    "ModelFormatError",
    "SavedSectionMissingError",
]


class BigmixedError(Exception):
    """Base class of the errors bigmixed raises on bad input (formula or data)."""


# ---- the formula -------------------------------------------------------------------------


class FormulaError(BigmixedError, ValueError):
    """The formula text cannot be understood; the message names the fault."""


class FormulaSyntaxError(FormulaError):
    """Malformed formula: no '~', unbalanced parentheses or quotes, a '|' with nothing on
    one side, a random-effects term that is not parenthesised, a dangling operator, ...
    """


class UnknownFunctionError(FormulaError):
    """A function called in the formula (``foo(x)``) is not one bigmixed can evaluate.

    Known: R's usual ones (log, exp, sqrt, abs, scale, center, poly, factor, ordered, I,
    C, ...), Python builtins and ``np.<name>``.
    """


class GroupingExpressionError(FormulaError):
    """The right of '|' is not a column, an interaction of columns (a:b) or a nesting (a/b)."""


# ---- the data ----------------------------------------------------------------------------


class DesignError(BigmixedError, ValueError):
    """The data do not fit the formula: a missing column, a non-numeric response, ..."""


class MissingColumnError(DesignError, KeyError):
    """A column the formula uses is not in the data (close names are suggested)."""

    def __str__(self) -> str:  # KeyError would otherwise show the message in quotes
        return str(self.args[0]) if self.args else ""


class ColumnNameError(DesignError):
    """Column names of the data frame that cannot be used: duplicated or not strings."""


class DataTypeError(DesignError):
    """A column has a type bigmixed cannot use in its role (dates, complex numbers, a
    grouping column mixing numbers and strings, data that is not a DataFrame, ...)."""


class ResponseTypeError(DataTypeError):
    """The response column is not numeric (or boolean)."""


class EmptyDataError(DesignError):
    """No observations to fit: the frame has no rows, or every row has a missing value in
    a column the model uses."""


class NonFiniteValueError(DesignError):
    """Infinite values (+-Inf) in the response or a covariate (after transformations such
    as log). Missing values (NaN/None) are dropped; infinite ones are not."""


class GroupingError(DesignError):
    """A grouping factor that cannot carry a random effect (fewer than 2 levels).

    lme4: "grouping factors must have > 1 sampled level".
    """


class ResidualStructureError(DesignError):
    """A residual covariance structure the data do not fit (names the column and the rows)."""


class IdentifiabilityError(DesignError):
    """The random effects cannot be told apart from the residual (lme4's checks
    check.nobs.vs.nlev and check.nobs.vs.nRE): a grouping factor with as many levels as
    observations, or a term with at least as many random effects as observations."""


class ResponseSupportError(DesignError):
    """A GLMM response outside its family's support: a binomial response outside [0, 1] or
    with fractional successes, successes above the trials, negative or non-integer counts."""


class WeightsError(DesignError):
    """Prior weights that cannot be used: negative, zero where not allowed, or not numeric."""


class DegenerateResponseError(DesignError):
    """A linear mixed model's response with no usable variation: constant (all zero too), so
    the residual variance is 0 (lme4 returns sigma = 0 and a meaningless theta), or so large
    that its sum of squares overflows (lme4 returns sigma = Inf). Names the response."""


# ---- model options -----------------------------------------------------------------------


class FamilyError(BigmixedError, ValueError):
    """An unknown GLMM family or a link the family does not offer."""


class OptionError(BigmixedError, TypeError, ValueError):
    """An option of `bm.lmm`, `bm.glmm` or `bm.fit_many` of the wrong type or value
    (``reml="yes"``, ``solver=3``, ``nAGQ="1"``), or one that does not apply (``family=`` to
    lmm). Names the option and the value. A TypeError and a ValueError, so either ``except``
    keeps working."""


# ---- saved models ------------------------------------------------------------------------


class ModelFormatError(BigmixedError, ValueError):
    """A saved model (`bm.load`) cannot be read: the file is not a bigmixed model, is damaged,
    or was written in a newer format version than this bigmixed reads (upgrade bigmixed).
    Attributes ``format_version`` and ``supported_version`` are set when the version is the
    problem (else None)."""

    def __init__(self, message: str, *, format_version=None, supported_version=None):
        super().__init__(message)
        self.format_version = format_version
        self.supported_version = supported_version


class SavedSectionMissingError(ModelFormatError, AttributeError):
    """A loaded model was asked for something its file does not hold (e.g. Satterthwaite's df
    from a file saved before they were saved): attribute ``section`` names what is missing;
    re-saving the model from a fit of the data with this bigmixed adds it. Also an
    AttributeError, as everything a loaded model cannot give."""

    def __init__(self, message: str, *, section: str, format_version=None):
        super().__init__(message, format_version=format_version)
        self.section = section
