"""One grouping factor: L is block diagonal with one P x P block per level."""
from __future__ import annotations

import numpy as np
from ..crossprods.crossprod import CrossProducts
from ..kernels import (
    blockdiag_gradient,
    blockdiag_gradient_serial,
    blockdiag_modes,
    blockdiag_objective,
    blockdiag_update,
    blockdiag_update_serial,
    n_level_chunks,
    profiled_criterion,
)
from ..spec.structure import RandomEffectsStructure
from .base import System


class BlockDiagonalSystem(System):
    """One grouping factor: L is block diagonal with one P x P block per level; the whole
    evaluation of the criterion runs in compiled code (`objective`)."""

    has_fused_objective = True
    has_gradient = True  # any number of random effects per level (criterion_gradient)

    def __init__(self, cp: CrossProducts, structure: RandomEffectsStructure):
        if len(structure.factors) != 1:
            raise ValueError("BlockDiagonalSystem needs exactly one grouping factor")
        super().__init__(cp, structure)
        self.zz = cp.zz[0]
        self.zxy = cp.zxy[0]
        m = cp.n_fixed + 1
        self.n_chunks = n_level_chunks(self.zz.shape[0])
        self._schur_out = np.empty((self.n_chunks, m, m))
        # one chunk: no parallel region (waking the OpenMP workers costs more than the work)
        self._update_kernel = blockdiag_update if self.n_chunks > 1 else blockdiag_update_serial
        self._gradient_kernel = (blockdiag_gradient if self.n_chunks > 1
                                 else blockdiag_gradient_serial)
        self._schur_theta = None  # theta whose chunk sums `_schur_out` holds (None: stale)

    def refresh(self):
        """Re-read the cross-products after the caller changed the arrays of `self.cp` in place
        (same shapes): the kernels read cp.zz[0], cp.zxy[0] and cp.gram directly, so only the
        references are taken again (in case an array of the lists was replaced)."""
        self.zz = self.cp.zz[0]
        self.zxy = self.cp.zxy[0]
        self._schur_theta = None

    def _own_buffers(self) -> None:
        self._schur_out = np.empty_like(self._schur_out)
        self._schur_theta = None

    def objective(self, theta, reml, n_obs, n_fixed, logdet_W):
        """The profiled criterion at theta, all in compiled code (inf if undefined)."""
        theta = np.asarray(theta, dtype=np.float64)
        st = self.structure
        if self.n_chunks == 1:
            value = blockdiag_objective(theta, st.theta_row, st.theta_col, self.zz, self.zxy,
                                        self.cp.gram, n_obs, n_fixed, reml, logdet_W, self._schur_out)
        else:
            T = st.T_of(theta, 0)
            logdet = self._update_kernel(T, self.zz, self.zxy, self.n_chunks, self._schur_out)
            value = profiled_criterion(logdet, self.cp.gram, self._schur_out, n_obs, n_fixed, reml,
                                       logdet_W)
        self._schur_theta = theta.copy()
        return value

    def update(self, theta):
        T = self.structure.T_of(theta, 0)
        logdet = self._update_kernel(T, self.zz, self.zxy, self.n_chunks, self._schur_out)
        self._schur_theta = np.array(theta, dtype=np.float64)
        if not np.isfinite(logdet):
            return self._failed_update()
        return logdet, self._schur_sum()

    def _schur_sum(self) -> np.ndarray:
        S = self.cp.gram.copy()
        for c in range(self.n_chunks):
            S -= self._schur_out[c]
        return S

    def schur_complement(self, theta) -> np.ndarray:
        """S at theta ((p+1) x (p+1)), from the last evaluation when it was at this theta (the
        gradient follows an evaluation at the same point), else by a pass over the levels."""
        theta = np.asarray(theta, dtype=np.float64)
        if self._schur_theta is None or not np.array_equal(theta, self._schur_theta):
            self.update(theta)
        return self._schur_sum()

    def criterion_gradient(self, theta, state, reml: bool) -> np.ndarray:
        """Gradient in theta of the profiled criterion (REML or ML) at theta; `state` is the
        ProfiledState at theta (only its Cholesky factor of S, n_obs and n_fixed are read).

        One pass over the levels (`blockdiag_gradient`, whose docstring derives the three sums):
            d criterion / dtheta_k = 2 sum_g (M_g^{-1} T'A_g)[j, i] [- 2 tr(S_XX^{-1} D_k)]
                                     - 2 dof sum_g (K_g[i] . v)(H_g[j] . v) / r^2
        with the bracket for REML only, dof = n - p (REML) or n (ML). Valid at every theta,
        also on the boundary (T'A_g T + I is positive definite for any T).
        """
        theta = np.asarray(theta, dtype=np.float64)
        st = self.structure
        p = state.n_fixed
        L = state.chol_S
        Lxx_inv = np.linalg.inv(L[:p, :p])  # lower triangular, p x p
        Sxx_inv = np.ascontiguousarray(Lxx_inv.T @ Lxx_inv)
        v = np.empty(p + 1)
        v[:p] = -state.beta_work()
        v[p] = 1.0
        parts = np.empty((self.n_chunks, st.n_theta, 3))
        self._gradient_kernel(st.T_of(theta, 0), st.theta_row, st.theta_col, self.zz, self.zxy,
                              Sxx_inv, v, self.n_chunks, parts)
        total = parts[0].copy()
        for c in range(1, self.n_chunks):
            total += parts[c]
        r2 = state.pwrss
        dof = state.n_obs - p if reml else state.n_obs
        grad = 2.0 * total[:, 0] - 2.0 * dof * total[:, 2] / r2
        if reml:
            grad -= 2.0 * total[:, 1]
        return grad

    def subsample(self, step: int) -> "BlockDiagonalSystem":
        """A system on every `step`-th level (levels 0, step, 2 step, ...), with [X y]'[X y]
        scaled by the fraction of levels kept: the criterion of a model of those levels'
        rows, approximately (exactly where every level has the same share of the fixed-effects
        cross-products). Cheap starting values for the full criterion, never its estimates."""
        import copy as _copy

        keep = slice(0, None, step)
        zz = np.ascontiguousarray(self.zz[keep])
        zxy = np.ascontiguousarray(self.zxy[keep])
        cp = _copy.copy(self.cp)
        cp.zz, cp.zxy = [zz], [zxy]
        cp.gram = self.cp.gram * (zz.shape[0] / self.zz.shape[0])
        return BlockDiagonalSystem(cp, self.structure)

    def modes(self, theta, beta, condvar=True):
        T = self.structure.T_of(theta, 0)
        l, P = self.zz.shape[0], self.zz.shape[1]
        u = np.empty((l, P))
        cinv = np.empty((l, P, P))
        blockdiag_modes(T, self.zz, self.zxy, np.ascontiguousarray(beta, dtype=np.float64), u, cinv)
        return [u], [cinv]
