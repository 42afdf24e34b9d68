"""Richardson-extrapolated numerical derivatives (numDeriv's jacobian and hessian, as
lmerTest uses them)."""
from __future__ import annotations

import math
import numpy as np

_ZERO_TOL = math.sqrt(np.finfo(float).eps / 7e-7)  # numDeriv's zero.tol


# ======================================================================================
# numDeriv's Richardson extrapolation (Gilbert & Varadhan), ported to reproduce lmerTest
# ======================================================================================

def richardson_jacobian(func, x, *, d=1e-4, eps=1e-4, r=4, v=2) -> np.ndarray:
    """numDeriv::jacobian(func, x) (method "Richardson"): (len(func(x)), len(x)) array."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    f0 = np.atleast_1d(np.asarray(func(x), dtype=np.float64))
    a = np.empty((len(f0), r, n))
    h = np.abs(d * x) + eps * (np.abs(x) < _ZERO_TOL)
    for k in range(r):
        for i in range(n):
            e = np.zeros(n)
            e[i] = h[i]
            a[:, k, i] = (np.atleast_1d(func(x + e)) - np.atleast_1d(func(x - e))) / (2 * h[i])
        h = h / v
    for m in range(1, r):
        a = (a[:, 1:r + 1 - m, :] * 4.0 ** m - a[:, :r - m, :]) / (4.0 ** m - 1)
    return a[:, 0, :]


def richardson_hessian(func, x, *, d=0.1, eps=1e-4, r=4, v=2) -> np.ndarray:
    """numDeriv::hessian(func, x) (genD with d = 0.1): the (n, n) Hessian of a scalar func."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    f0 = float(func(x))
    h0 = np.abs(d * x) + eps * (np.abs(x) < _ZERO_TOL)

    def extrapolate(vals):
        vals = list(vals)
        for m in range(1, r):
            for k in range(r - m):
                vals[k] = (vals[k + 1] * 4.0 ** m - vals[k]) / (4.0 ** m - 1)
        return vals[0]

    hdiag = np.empty(n)
    for i in range(n):
        h = h0.copy()
        approx = []
        for _ in range(r):
            e = np.zeros(n)
            e[i] = h[i]
            f1, f2 = float(func(x + e)), float(func(x - e))
            approx.append((f1 - 2 * f0 + f2) / h[i] ** 2)
            h = h / v
        hdiag[i] = extrapolate(approx)
    H = np.diag(hdiag)
    for i in range(n):
        for j in range(i):
            h = h0.copy()
            approx = []
            for _ in range(r):
                e = np.zeros(n)
                e[i] += h[i]
                e[j] += h[j]
                f1, f2 = float(func(x + e)), float(func(x - e))
                approx.append((f1 - 2 * f0 + f2 - hdiag[i] * h[i] ** 2 - hdiag[j] * h[j] ** 2)
                              / (2 * h[i] * h[j]))
                h = h / v
            H[i, j] = H[j, i] = extrapolate(approx)
    return H
