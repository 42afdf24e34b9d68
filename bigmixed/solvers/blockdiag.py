"""One grouping factor: L is block diagonal with one P x P block per level."""
from __future__ import annotations

import numpy as np
from ..crossprods.crossprod import CrossProducts
from ..kernels import (
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

    def refresh(self):
        """Re-read the cross-products after the caller changed the arrays of `self.cp` in place
        (same shapes): the kernels read cp.zz[0], cp.zxy[0] and cp.gram directly, so only the
        references are taken again (in case an array of the lists was replaced)."""
        self.zz = self.cp.zz[0]
        self.zxy = self.cp.zxy[0]

    def _own_buffers(self) -> None:
        self._schur_out = np.empty_like(self._schur_out)

    def objective(self, theta, reml, n_obs, n_fixed, logdet_W):
        """The profiled criterion at theta, all in compiled code (inf if undefined)."""
        theta = np.asarray(theta, dtype=np.float64)
        st = self.structure
        if self.n_chunks == 1:
            return blockdiag_objective(theta, st.theta_row, st.theta_col, self.zz, self.zxy,
                                       self.cp.gram, n_obs, n_fixed, reml, logdet_W, self._schur_out)
        T = st.T_of(theta, 0)
        logdet = self._update_kernel(T, self.zz, self.zxy, self.n_chunks, self._schur_out)
        return profiled_criterion(logdet, self.cp.gram, self._schur_out, n_obs, n_fixed, reml, logdet_W)

    def update(self, theta):
        T = self.structure.T_of(theta, 0)
        logdet = self._update_kernel(T, self.zz, self.zxy, self.n_chunks, self._schur_out)
        if not np.isfinite(logdet):
            return self._failed_update()
        S = self.cp.gram.copy()
        for c in range(self.n_chunks):
            S -= self._schur_out[c]
        return logdet, S

    def modes(self, theta, beta, condvar=True):
        T = self.structure.T_of(theta, 0)
        l, P = self.zz.shape[0], self.zz.shape[1]
        u = np.empty((l, P))
        cinv = np.empty((l, P, P))
        blockdiag_modes(T, self.zz, self.zxy, np.ascontiguousarray(beta, dtype=np.float64), u, cinv)
        return [u], [cinv]
