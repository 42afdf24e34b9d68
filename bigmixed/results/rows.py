"""Where a fit's rows are: in memory, in a Dask DataFrame, or nowhere (a loaded model).

A fit keeps its estimates; fitted values and residuals need the rows again. The row source
says where they are and computes what needs them (one pass, on request), or says clearly why
it cannot.
"""
from __future__ import annotations

import numpy as np

from ..spec.glm_inputs import prior_arrays

QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)


class RowSource:
    """Base class: no rows (every row-level quantity raises AttributeError with `message`)."""

    kind = "none"
    message = "no {what}: the rows are not available"

    def missing(self, what: str) -> AttributeError:
        return AttributeError(self.message.format(what=what))

    @property
    def X(self) -> np.ndarray:
        raise self.missing("rows of X")

    @property
    def y(self) -> np.ndarray:
        raise self.missing("responses")

    def fitted(self, fit, conditional: bool = True) -> np.ndarray:
        raise self.missing("fitted values")

    def scaled_residual_quantiles(self, fit) -> np.ndarray:
        """Min, quartiles and max of the scaled conditional residuals (the summary's)."""
        raise self.missing("residuals")

    def same_response(self, other: "RowSource") -> bool | None:
        """Whether two fits saw the same response values (None: cannot tell)."""
        return None

    def dask_frame(self, fit, what: str):
        """Fitted values / residuals as a Dask collection (fits from Dask data only)."""
        raise TypeError("fitted_dask(), resid_dask(), fitted_frame_dask() and write_fitted() are "
                        "for fits from a Dask DataFrame; use fit.fittedvalues / fit.resid")


class InMemoryRows(RowSource):
    """The rows of an in-memory design (X, y, and the structure's codes and Z)."""

    kind = "memory"

    def __init__(self, design, structure):
        self.design = design
        self.structure = structure

    @property
    def X(self) -> np.ndarray:
        return self.design.X

    @property
    def y(self) -> np.ndarray:
        return self.design.y

    def fitted(self, fit, conditional: bool = True) -> np.ndarray:
        """X beta (+ Z b with `conditional`), plus any offset: one pass over the rows."""
        out = self.design.X @ fit.beta
        _, offset = prior_arrays(self.design)
        if offset is not None:
            out += offset
        if conditional:
            for f, b in zip(self.structure.factors, fit.conditional_modes):
                if f.unit_z:
                    out += b[f.codes, 0]
                else:
                    out += np.einsum("ij,ij->i", f.Z, b[f.codes])
        return out

    def scaled_residual_quantiles(self, fit) -> np.ndarray:
        w, _ = prior_arrays(self.design)
        if w is not None:  # lme4's summary: Pearson residuals sqrt(w) (y - fitted) / sigma
            return np.quantile(np.sqrt(w) * fit.resid_scaled, QUANTILES)
        return np.quantile(fit.resid_scaled, QUANTILES)

    def same_response(self, other) -> bool | None:
        if not isinstance(other, InMemoryRows):
            return None
        return bool(np.array_equal(self.design.y, other.design.y))


class SavedRows(RowSource):
    """A loaded model: the data are not saved; the scaled residuals' quantiles may be."""

    kind = "saved"
    message = "a loaded model has no {what}: the data are not saved"

    def __init__(self, resid_quantiles=None):
        self.resid_quantiles = None if resid_quantiles is None else np.asarray(resid_quantiles)

    def scaled_residual_quantiles(self, fit) -> np.ndarray:
        return np.full(5, np.nan) if self.resid_quantiles is None else self.resid_quantiles
