"""Several grouping factors (crossed or nested): CHOLMOD on a pattern fixed once."""
from __future__ import annotations

import threading

import numpy as np
from ..crossprods.crossprod import CrossProducts
from ..kernels import (
    fill_scaled_gram,
    lookup_entries,
    selected_inverse,
)
from ..spec.structure import RandomEffectsStructure
from .base import System
from .pattern import adopt_pattern, gram_pattern, raw_values

# CHOLMOD's factor copies are not safe to take from several threads at once
_COPY_LOCK = threading.Lock()


class SparseSystem(System):
    """Several grouping factors (crossed or nested): CHOLMOD on a pattern fixed once.

    Random effects are numbered factor by factor (lme4's order), level by level, then column
    within level. The lower triangle of Lambda'Z'Z Lambda is stored in CSC with every block
    dense (explicit zeros kept), so its pattern does not depend on theta.
    """

    def __init__(self, cp: CrossProducts, structure: RandomEffectsStructure):
        from sksparse.cholmod import analyze

        super().__init__(cp, structure)
        pat = gram_pattern(cp, structure, range(len(structure.factors)))
        adopt_pattern(self, pat)
        self.offsets = np.append(pat.start, pat.q)
        self._fill(structure.initial_theta())
        # Symbolic analysis once (fill-reducing permutation fixed here). CHOLMOD picks simplicial
        # for sparse factors (block-diagonal: 15x faster) and supernodal (BLAS) for dense fill-in.
        self.factor = analyze(self.A, mode="auto", ordering_method="default")

    def refresh(self):
        """Re-read the cross-product values after the caller changed the arrays of `self.cp` in
        place (same shapes, same pattern): rebuild `raw` from cp.zz and the pair blocks (Z'[X y]
        and the Gram matrix are read at each update)."""
        self.raw[:] = raw_values(self.cp)

    def _own_buffers(self) -> None:
        self.raw = self.raw.copy()
        with _COPY_LOCK:
            self.A = self.A.copy()
            self.factor = self.factor.copy()  # keeps the symbolic analysis

    def _fill(self, theta):
        T_all = self.structure.T_all(theta)
        fill_scaled_gram(
            T_all, self.structure.P_of, self.blk_row_factor, self.blk_col_factor,
            self.raw_offset, self.raw, self.pos, self.A.data,
        )

    def _scaled_zxy(self, theta):
        """Lambda' Z'[X y] as a dense (q, p + 1) array in the global effect order."""
        m = self.cp.n_fixed + 1
        out = np.empty((self.q, m))
        for fi in range(len(self.structure.factors)):
            T = self.structure.T_of(theta, fi)
            blk = np.einsum("ki,lkm->lim", T, self.cp.zxy[fi])
            out[self.offsets[fi]:self.offsets[fi + 1]] = blk.reshape(-1, m)
        return out

    def update(self, theta):
        from sksparse.cholmod import CholmodError

        self._fill(theta)
        try:
            self.factor.cholesky_inplace(self.A, beta=1.0)
        except CholmodError:
            return self._failed_update()
        logdet = self.factor.logdet()
        if not np.isfinite(logdet):  # e.g. a theta with non-finite entries
            return self._failed_update()
        B = self._scaled_zxy(theta)
        # B'(L L')^{-1} B through solve_A: valid for both LL' and LDL' factors.
        BtAinvB = B.T @ self.factor.solve_A(B)
        S = self.cp.gram - 0.5 * (BtAinvB + BtAinvB.T)
        return logdet, S

    def modes(self, theta, beta, condvar=True):
        self._fill(theta)
        self.factor.cholesky_inplace(self.A, beta=1.0)
        B = self._scaled_zxy(theta)
        rhs = B[:, -1] - B[:, :-1] @ beta
        u = self.factor.solve_A(rhs)
        us = [u[self.offsets[fi]:self.offsets[fi + 1]].reshape(f.n_levels, int(self.structure.P_of[fi]))
              for fi, f in enumerate(self.structure.factors)]
        return us, (self._inverse_diagonal_blocks() if condvar else None)

    def _inverse_diagonal_blocks(self):
        """Diagonal blocks of (L L')^{-1} by Takahashi's selected inverse on the factor's pattern."""
        # L() converts the factor to simplicial L L': work on a copy, keep ours as CHOLMOD chose.
        L = self.factor.copy().L().tocsc()
        L.sort_indices()
        indptr = L.indptr.astype(np.int64)
        indices = L.indices.astype(np.int64)
        zinv = np.zeros(L.nnz)
        selected_inverse(indptr, indices, L.data, zinv)
        perm = self.factor.P()
        inv_perm = np.empty_like(perm)
        inv_perm[perm] = np.arange(len(perm))
        cinvs = []
        for fi, f in enumerate(self.structure.factors):
            P = int(self.structure.P_of[fi])
            first = self.offsets[fi] + np.arange(f.n_levels, dtype=np.int64) * P
            cinv = np.empty((f.n_levels, P, P))
            where = np.empty(f.n_levels, dtype=np.int64)
            for a in range(P):
                for b in range(P):
                    i = inv_perm[first + a]
                    j = inv_perm[first + b]
                    lookup_entries(indptr, indices, np.maximum(i, j), np.minimum(i, j), where)
                    cinv[:, a, b] = zinv[where]
            cinvs.append(cinv)
        return cinvs
