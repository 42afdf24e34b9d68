"""The factor step's interface: what every system solving Lambda'Z'Z Lambda + I offers.

formula -> design -> structure -> cross-products -> **factor** -> objective -> optimizer -> results.

A system is built once on cross-products (`CrossProducts`) and a `RandomEffectsStructure`; the
nonzero pattern (and CHOLMOD's symbolic analysis) is fixed then. Per theta it refactors
numerically. Operations:

- ``update(theta)`` -> (log det(L L'), S), S = [X y]'[X y] - R_ZXY' R_ZXY the (p+1)x(p+1) Schur
  complement whose Cholesky gives R_X, c_beta and the penalized RSS (MixedModels.jl's blocked
  factor: the last diagonal element is r). One failure convention: when L L' cannot be factored
  the log determinant is +inf and S is all NaN; update never raises for a bad theta.
- ``modes(theta, beta, condvar)`` -> per factor the spherical modes u (n_levels, P) and, with
  condvar, the diagonal blocks of (Lambda'Z'Z Lambda + I)^{-1} (n_levels, P, P) (else None).
  beta is in the basis of the cross-products the system was built on (the model builds systems
  on the well-conditioned working basis of basis.py: pass ProfiledState.beta_work()).
- ``refresh()``: re-read the cross-products after the caller changed the arrays of ``cp`` in
  place (same shapes, same pattern): a residual structure's weights, a GLMM's working weights.
- ``with_crossprods(cp)`` -> a new, independent system of the same kind on other cross-products
  with the same pattern (another response, other weights): the pattern and the symbolic
  analysis are shared, every buffer the numeric factorization writes is its own.

Declared capabilities (class attributes, never probed with getattr):

- ``has_fused_objective``: ``objective(theta, reml, n_obs, n_fixed, logdet_W)`` evaluates the
  profiled criterion in compiled code in one call;
- ``has_gradient``: ``criterion_gradient(theta, state, reml)`` is the analytic gradient (for
  some structures only: the property may depend on the instance);
- ``has_approx_update``: ``approx_update(theta)`` is a cheap approximation of ``update`` and
  ``dense_block_size`` the size of the dense block whose factorization it avoids.
"""
from __future__ import annotations

import copy

import numpy as np


class System:
    """Base class of the factor step's systems (see the module docstring)."""

    has_fused_objective = False
    has_gradient = False
    has_approx_update = False
    dense_block_size = 0

    def __init__(self, cp, structure):
        self.cp = cp
        self.structure = structure

    def update(self, theta):  # pragma: no cover - abstract
        raise NotImplementedError

    def modes(self, theta, beta, condvar=True):  # pragma: no cover - abstract
        raise NotImplementedError

    def refresh(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _failed_update(self):
        """update's result where L L' cannot be factored."""
        return np.inf, np.full_like(self.cp.gram, np.nan)

    def _own_buffers(self) -> None:
        """Give a shallow copy its own writable buffers (the arrays the numeric factorization
        and the evaluations write); the pattern's read-only arrays stay shared."""
        raise NotImplementedError  # pragma: no cover - abstract

    def with_crossprods(self, cp) -> "System":
        """A new system on `cp` (same shapes and pattern as this one's cross-products), sharing
        the pattern and symbolic analysis, with buffers of its own."""
        other = copy.copy(self)
        other.cp = cp
        other._own_buffers()
        other.refresh()
        return other
