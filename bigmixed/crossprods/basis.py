"""A well-conditioned working basis for the fixed effects.

The optimizer never sees X itself, only cross-products, and those can be badly scaled (wbc
around 6000 beside 0/1 columns: X'X spans 12 orders of magnitude). Each evaluation subtracts
large, nearly equal numbers (S = [X y]'[X y] - R_ZXY'R_ZXY), so rounding noise makes the
criterion rough at the 1e-12 level and the optimizer's end point depends on summation order.

Working with X~ = X W (W = R^{-1}, R'R = X'X) and y~ = y - X a (a the OLS coefficients) keeps every
quantity O(1). The change is exact algebra done once on the cross-products: the profiled ML
deviance is unchanged, the REML criterion shifts by the constant 2 log|det W|, and
beta = W beta~ + a, Var(beta) = W Var(beta~) W'.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .crossprod import CrossProducts


@dataclass
class FixedEffectsBasis:
    W: np.ndarray  # (p, p) upper triangular: X~ = X W
    a: np.ndarray  # (p,): y~ = y - X a
    logdet_W: float  # log |det W|

    @classmethod
    def identity(cls, p: int) -> "FixedEffectsBasis":
        return cls(np.eye(p), np.zeros(p), 0.0)

    @classmethod
    def from_gram(cls, gram: np.ndarray, p: int) -> "FixedEffectsBasis":
        if p == 0:
            return cls.identity(0)
        XtX = gram[:p, :p]
        Xty = gram[:p, p]
        try:
            R = np.linalg.cholesky(XtX).T  # R'R = X'X
            W = np.linalg.solve(R, np.eye(p))
            W = np.triu(W)
            a = W @ (W.T @ Xty)
            if not (np.all(np.isfinite(W)) and np.all(np.isfinite(a))):
                raise np.linalg.LinAlgError("non-finite basis")
        except np.linalg.LinAlgError:
            d = np.sqrt(np.maximum(np.diag(XtX), np.finfo(float).tiny))
            W = np.diag(1.0 / d)
            a = np.zeros(p)
        logdet_W = float(np.sum(np.log(np.abs(np.diag(W)))))
        return cls(W, a, logdet_W)

    def matrix(self) -> np.ndarray:
        """(p+1, p+1) M with [X~ y~] = [X y] M."""
        p = len(self.a)
        M = np.zeros((p + 1, p + 1))
        M[:p, :p] = self.W
        M[:p, p] = -self.a
        M[p, p] = 1.0
        return M

    def apply(self, cp: CrossProducts) -> CrossProducts:
        """The cross-products of [Z X~ y~] from those of [Z X y] (Z'Z blocks unchanged)."""
        M = self.matrix()
        gram = M.T @ cp.gram @ M
        gram = 0.5 * (gram + gram.T)
        zxy = [np.ascontiguousarray(block @ M) for block in cp.zxy]
        return replace(cp, zxy=zxy, gram=gram)

    def beta(self, beta_work: np.ndarray) -> np.ndarray:
        return self.W @ beta_work + self.a

    def unscaled_vcov(self, vcov_work: np.ndarray) -> np.ndarray:
        return self.W @ vcov_work @ self.W.T
