"""The profiled criterion: -2 log-likelihood (ML) or -2 restricted log-likelihood (REML).

formula -> design -> structure -> cross-products -> factor -> **objective** -> optimizer -> results.

From the factor step we get log det(L L') and the Schur complement
S = [X y]'[X y] - R_ZXY'R_ZXY. Its lower Cholesky factor C (C C' = S) holds R_X' in the top-left
p x p block, c_beta' in the last row and r (sqrt of the penalized RSS) in the corner.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class ProfiledState:
    """Quantities at one theta, enough for the criterion and for beta/sigma at the optimum."""

    logdet_L: float  # log det(L L') = log det(Lambda'Z'Z Lambda + I)
    chol_S: np.ndarray  # (p+1, p+1) lower Cholesky of the Schur complement (working basis)
    n_obs: int
    n_fixed: int
    basis: object = None  # FixedEffectsBasis of the working basis (None: X itself)
    logdet_R: float = 0.0  # log det R0 of a residual structure (bigmixed.residual); 0 without

    @property
    def pwrss(self) -> float:
        """Penalized weighted residual sum of squares r^2."""
        r = self.chol_S[-1, -1]
        return float(r * r)

    @property
    def logdet_RX(self) -> float:
        """log det(R_X' R_X) for the original X (the working basis shifts it by 2 log|det W|)."""
        p = self.n_fixed
        shift = 2.0 * self.basis.logdet_W if self.basis is not None else 0.0
        return float(2.0 * np.sum(np.log(np.diag(self.chol_S)[:p])) - shift)

    def criterion(self, reml: bool) -> float:
        n, p = self.n_obs, self.n_fixed
        r2 = self.pwrss
        if reml:
            nmp = n - p
            return (self.logdet_L + self.logdet_RX + nmp * (1.0 + LOG_2PI + math.log(r2 / nmp))
                    + self.logdet_R)
        return self.logdet_L + n * (1.0 + LOG_2PI + math.log(r2 / n)) + self.logdet_R

    def beta_work(self) -> np.ndarray:
        """beta in the working basis (what the systems' `modes` expect)."""
        p = self.n_fixed
        RXt = self.chol_S[:p, :p]  # = R_X'
        c_beta = self.chol_S[p, :p]
        return _solve_upper(RXt.T, c_beta)

    def beta(self) -> np.ndarray:
        b = self.beta_work()
        return self.basis.beta(b) if self.basis is not None else b

    def sigma(self, reml: bool) -> float:
        dof = self.n_obs - self.n_fixed if reml else self.n_obs
        return math.sqrt(self.pwrss / dof)

    def unscaled_vcov(self) -> np.ndarray:
        """(R_X'R_X)^{-1}: multiply by sigma^2 for Var(beta_hat)."""
        p = self.n_fixed
        RX = self.chol_S[:p, :p].T
        RXinv = _solve_upper(RX, np.eye(p))
        v = RXinv @ RXinv.T
        return self.basis.unscaled_vcov(v) if self.basis is not None else v


def _solve_upper(U, b):
    """Back substitution for a small upper-triangular U (p x p): plain numpy, no LAPACK call
    (scipy's solve_triangular cost ~3 ms a call here through threaded BLAS start-up)."""
    b = np.array(b, dtype=np.float64, copy=True)
    p = U.shape[0]
    for i in range(p - 1, -1, -1):
        if i + 1 < p:
            b[i] -= U[i, i + 1:] @ b[i + 1:]
        b[i] /= U[i, i]
    return b


class NotPositiveDefinite(ArithmeticError):
    """The Schur complement is not positive definite (collinear fixed effects or zero residual)."""


def profiled_state(logdet_L: float, S: np.ndarray, n_obs: int, n_fixed: int, basis=None,
                   logdet_R: float = 0.0) -> ProfiledState:
    try:
        C = np.linalg.cholesky(S)
    except np.linalg.LinAlgError as exc:
        raise NotPositiveDefinite(str(exc)) from None
    if not np.all(np.isfinite(C)) or C[-1, -1] <= 0.0:
        raise NotPositiveDefinite("the penalized residual sum of squares is zero")
    return ProfiledState(float(logdet_L), C, n_obs, n_fixed, basis, float(logdet_R))
