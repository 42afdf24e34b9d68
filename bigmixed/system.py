"""The factor step: Cholesky of Lambda'Z'Z Lambda + I for a given theta.

formula -> design -> structure -> cross-products -> **factor** -> objective -> optimizer -> results.

Both systems expose the same two operations:
- ``update(theta)`` -> (log det(L L'), S) where S = [X y]'[X y] - R_ZXY' R_ZXY is the (p+1)x(p+1)
  Schur complement whose Cholesky gives R_X, c_beta and the penalized RSS (MixedModels.jl's
  blocked factor: the last diagonal element is r).
- ``modes(theta, beta, condvar)`` -> per factor the spherical modes u (n_levels, P) and, with
  condvar, the diagonal blocks of (Lambda'Z'Z Lambda + I)^{-1} (n_levels, P, P) (else None).
  beta is in the basis of the cross-products the system was built on (the model builds systems
  on the well-conditioned working basis of basis.py: pass ProfiledState.beta_work()).

`BlockDiagonalSystem` serves one grouping factor (level-by-level Numba kernel);
`SparseSystem` serves several (CHOLMOD, symbolic analysis once, numeric refactorization per theta).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .crossprod import CrossProducts
from .kernels import (
    blockdiag_modes,
    blockdiag_objective,
    blockdiag_update,
    blockdiag_update_serial,
    fill_scaled_gram,
    lookup_entries,
    n_level_chunks,
    profiled_criterion,
    selected_inverse,
)
from .structure import RandomEffectsStructure


class BlockDiagonalSystem:
    """One grouping factor: L is block diagonal with one P x P block per level."""

    def __init__(self, cp: CrossProducts, structure: RandomEffectsStructure):
        if len(structure.factors) != 1:
            raise ValueError("BlockDiagonalSystem needs exactly one grouping factor")
        self.cp = cp
        self.structure = structure
        self.zz = cp.zz[0]
        self.zxy = cp.zxy[0]
        m = cp.n_fixed + 1
        self.n_chunks = n_level_chunks(self.zz.shape[0])
        self._schur_out = np.empty((self.n_chunks, m, m))
        # one chunk: no parallel region (waking the OpenMP workers costs more than the work)
        self._update_kernel = blockdiag_update if self.n_chunks > 1 else blockdiag_update_serial

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


class SparseSystem:
    """Several grouping factors (crossed or nested): CHOLMOD on a pattern fixed once.

    Random effects are numbered factor by factor (lme4's order), level by level, then column
    within level. The lower triangle of Lambda'Z'Z Lambda is stored in CSC with every block
    dense (explicit zeros kept), so its pattern does not depend on theta.
    """

    def __init__(self, cp: CrossProducts, structure: RandomEffectsStructure):
        from sksparse.cholmod import analyze

        self.cp = cp
        self.structure = structure
        factors = structure.factors
        P_of = structure.P_of
        self.offsets = np.zeros(len(factors) + 1, dtype=np.int64)
        for i, f in enumerate(factors):
            self.offsets[i + 1] = self.offsets[i] + f.n_levels * P_of[i]
        q = int(self.offsets[-1])
        self.q = q

        # Stored blocks: the diagonal blocks of each factor, then the co-occurrence blocks.
        raw_parts, rows, cols, brow, bcol, boff = [], [], [], [], [], []
        raw_len = 0
        for fi, f in enumerate(factors):
            P = int(P_of[fi])
            lv = np.arange(f.n_levels, dtype=np.int64)
            a, b = np.meshgrid(np.arange(P), np.arange(P), indexing="ij")
            r = self.offsets[fi] + lv[:, None, None] * P + a[None]
            c = self.offsets[fi] + lv[:, None, None] * P + b[None]
            rows.append(r.ravel())
            cols.append(c.ravel())
            raw_parts.append(cp.zz[fi].ravel())
            brow.append(np.full(f.n_levels, fi, dtype=np.int64))
            bcol.append(np.full(f.n_levels, fi, dtype=np.int64))
            boff.append(raw_len + lv * P * P)
            raw_len += f.n_levels * P * P
        for pb in cp.pairs:
            Pr, Pc = int(P_of[pb.row_factor]), int(P_of[pb.col_factor])
            a, b = np.meshgrid(np.arange(Pr), np.arange(Pc), indexing="ij")
            r = self.offsets[pb.row_factor] + pb.row_levels[:, None, None] * Pr + a[None]
            c = self.offsets[pb.col_factor] + pb.col_levels[:, None, None] * Pc + b[None]
            rows.append(r.ravel())
            cols.append(c.ravel())
            raw_parts.append(pb.blocks.ravel())
            npairs = len(pb.row_levels)
            brow.append(np.full(npairs, pb.row_factor, dtype=np.int64))
            bcol.append(np.full(npairs, pb.col_factor, dtype=np.int64))
            boff.append(raw_len + np.arange(npairs, dtype=np.int64) * Pr * Pc)
            raw_len += npairs * Pr * Pc
        rows = np.concatenate(rows)
        cols = np.concatenate(cols)
        self.raw = np.ascontiguousarray(np.concatenate(raw_parts))
        self.blk_row_factor = np.concatenate(brow)
        self.blk_col_factor = np.concatenate(bcol)
        self.raw_offset = np.concatenate(boff)

        lower = rows >= cols
        entry = np.flatnonzero(lower)
        index_dtype = np.int32 if q < 2**31 - 1 and len(entry) < 2**31 - 1 else np.int64
        # Build the CSC pattern once; data = entry id + 1 tells where each raw entry landed.
        coo = sp.coo_matrix(
            (entry.astype(np.float64) + 1.0, (rows[lower], cols[lower])), shape=(q, q)
        )
        A = coo.tocsc()
        A.sort_indices()
        if A.nnz != len(entry):
            raise RuntimeError("duplicate entries in the random-effects pattern")
        self.pos = np.full(len(self.raw), -1, dtype=np.int64)
        self.pos[A.data.astype(np.int64) - 1] = np.arange(A.nnz, dtype=np.int64)
        A.indices = A.indices.astype(index_dtype)
        A.indptr = A.indptr.astype(index_dtype)
        A.data = np.zeros(A.nnz)
        self.A = A
        self._fill(structure.initial_theta())
        # Symbolic analysis once (fill-reducing permutation fixed here). CHOLMOD picks simplicial
        # for sparse factors (block-diagonal: 15x faster) and supernodal (BLAS) for dense fill-in.
        self.factor = analyze(self.A, mode="auto", ordering_method="default")
        self._zxy_flat_cache = None

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
        self._fill(theta)
        self.factor.cholesky_inplace(self.A, beta=1.0)
        B = self._scaled_zxy(theta)
        # B'(L L')^{-1} B through solve_A: valid for both LL' and LDL' factors.
        BtAinvB = B.T @ self.factor.solve_A(B)
        S = self.cp.gram - 0.5 * (BtAinvB + BtAinvB.T)
        return self.factor.logdet(), S

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
