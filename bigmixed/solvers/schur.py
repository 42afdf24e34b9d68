"""Several grouping factors, one of which has many levels and the others few in all: a
blocked Cholesky with a dense LAPACK block, as MixedModels.jl. `schur_block_density` measures the
dense block that `bigmixed.solvers.choose.auto_solver` weighs."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from ..crossprods.crossprod import CrossProducts
from ..kernels import (
    dense_lower_from_csc,
    fill_scaled_gram,
    fill_scaled_scalar,
    schur_diag_blocks,
    schur_first_block,
    schur_first_condvar,
    schur_first_inverse_trace,
    schur_pattern_nnz,
    schur_solve_lower,
    schur_solve_upper,
    schur_trailing_rows,
    sparse_syrk_lower,
    syrk_plan,
)
from ..spec.structure import RandomEffectsStructure
from .base import System
from .blas import BlasThreads, SCHUR_BLAS_THREADS
from .pattern import adopt_pattern, gram_pattern, raw_values

# SchurSystem.approx_update keeps the smallest other factors exactly, up to this many effects
# in all; it approximates the larger ones.
SCHUR_APPROX_DENSE = 256
# The rows of L21 of the smallest other factors are handled as dense rows (schur_trailing_rows)
# when at least this fraction of them is filled, within SCHUR_TRAILING_MAX entries of storage.
SCHUR_TRAILING_MIN_FILL = 0.25
SCHUR_TRAILING_MAX = 4_000_000
# Largest dense Schur complement SchurSystem takes (its LAPACK Cholesky costs r^3 / 3 flops).
SCHUR_MAX_DENSE = 3000
# Fraction of the dense block's lower triangle that must be structurally nonzero before the dense
# Cholesky is chosen over CHOLMOD (below it, e.g. nested factors, the sparse factor is cheaper).
SCHUR_MIN_DENSITY = 0.05


def schur_leading_factor(structure: RandomEffectsStructure) -> int:
    """The factor SchurSystem numbers first: the one with most random effects (first on ties)."""
    sizes = [f.n_levels * int(P) for f, P in zip(structure.factors, structure.P_of)]
    return int(np.argmax(sizes))


def schur_block_density(cp: CrossProducts, structure: RandomEffectsStructure,
                        stop_early: bool = False) -> tuple[int, float]:
    """(r, density): the size of SchurSystem's dense block and the fraction of its lower triangle
    that is structurally nonzero (the other factors' own blocks and co-occurrences, plus the
    fill from eliminating the leading factor), counted on levels; density 0 when r exceeds
    SCHUR_MAX_DENSE. With stop_early the count stops at SCHUR_MIN_DENSITY (all that
    solver="auto" needs to know)."""
    st = structure
    lead = schur_leading_factor(st)
    others = [fi for fi in range(len(st.factors)) if fi != lead]
    lv_start = {}
    n = 0
    for fi in others:
        lv_start[fi] = n
        n += st.factors[fi].n_levels
    r = int(sum(st.factors[fi].n_levels * int(st.P_of[fi]) for fi in others))
    if r == 0 or r > SCHUR_MAX_DENSE:
        return r, 0.0
    # rows (other factors' levels) linked to each level of the leading factor, and the other pairs
    link_lead, link_row, pr, pc = [], [], [], []
    for pb in cp.pairs:
        if pb.col_factor == lead:
            link_lead.append(pb.col_levels)
            link_row.append(lv_start[pb.row_factor] + pb.row_levels)
        elif pb.row_factor == lead:
            link_lead.append(pb.row_levels)
            link_row.append(lv_start[pb.col_factor] + pb.col_levels)
        else:
            pr.append(lv_start[pb.row_factor] + pb.row_levels)
            pc.append(lv_start[pb.col_factor] + pb.col_levels)
    n_lead = st.factors[lead].n_levels
    if link_lead:
        M = sp.csc_matrix((np.ones(sum(len(x) for x in link_lead)),
                           (np.concatenate(link_row), np.concatenate(link_lead))), shape=(n, n_lead))
    else:
        M = sp.csc_matrix((n, n_lead))
    M.sum_duplicates()
    M.sort_indices()
    if pr:
        i, j = np.concatenate(pr), np.concatenate(pc)
        B = sp.csc_matrix((np.ones(len(i)), (np.maximum(i, j), np.minimum(i, j))), shape=(n, n))
    else:
        B = sp.csc_matrix((n, n))
    B.sum_duplicates()
    m_indptr, m_indices = M.indptr.astype(np.int64), M.indices.astype(np.int64)
    t_indptr, t_cols, t_pos, _, _ = syrk_plan(m_indptr, m_indices, n, 1)
    full = n * (n + 1) // 2
    stop_at = int(np.ceil(SCHUR_MIN_DENSITY * full)) if stop_early else full
    nnz_levels = schur_pattern_nnz(m_indptr, m_indices, t_indptr, t_cols, t_pos,
                                   B.indptr.astype(np.int64), B.indices.astype(np.int64), stop_at)
    return r, float(nnz_levels / full)


class SchurSystem(System):
    """Several grouping factors, one of which has many levels and the others few in all: a
    blocked Cholesky as in MixedModels.jl.

    The factor with most random effects (the leading factor) is numbered first. Its diagonal
    block of A = Lambda'Z'Z Lambda + I is block diagonal (one P x P block per level), so its
    part of L is too (L11), the off-diagonal part L21 = A21 L11^{-T} keeps the sparse pattern of
    the co-occurrences, and the Schur complement A22 - L21 L21' of the other factors (r x r,
    r <= SCHUR_MAX_DENSE) is a dense matrix factored by LAPACK. Per theta: fill lower(A)'s fixed
    CSC pattern (`fill_scaled_scalar` / `fill_scaled_gram`), factor the level blocks and scale
    L21 (`schur_first_block`), forward-solve [X y] (`schur_solve_lower`), build the dense block
    (`dense_lower_from_csc`; `sparse_syrk_lower` for the large other factors, and
    `schur_trailing_rows`, dense column operations, for the rows of the small ones, numbered
    last) and factor it bordered by the right-hand side (one dpotrf on one thread gives L22,
    log det and the (p + 1) x (p + 1) Schur complement S). No symbolic analysis, no ordering.
    The last few (theta -> logdet, S) are cached: the fit evaluates its start and its optimum
    twice.
    """

    has_approx_update = True

    def __init__(self, cp: CrossProducts, structure: RandomEffectsStructure):
        if len(structure.factors) < 2:
            raise ValueError("SchurSystem needs at least two grouping factors")
        super().__init__(cp, structure)
        lead = schur_leading_factor(structure)
        sizes = [f.n_levels * int(P) for f, P in zip(structure.factors, structure.P_of)]
        # the other factors by decreasing size: the small ones last (see approx_update)
        others = sorted((fi for fi in range(len(sizes)) if fi != lead), key=lambda fi: -sizes[fi])
        order = [lead] + others
        self.lead = lead
        self.order = order
        pat = gram_pattern(cp, structure, order)
        adopt_pattern(self, pat)
        self.start = pat.start
        self.P1 = int(structure.P_of[lead])
        self.n1 = structure.factors[lead].n_levels
        self.q1 = self.n1 * self.P1
        self.r = self.q - self.q1
        if self.r > SCHUR_MAX_DENSE:
            raise ValueError(f"SchurSystem: the dense block would have {self.r} columns "
                             f"(at most {SCHUR_MAX_DENSE})")
        self.indptr = self.A.indptr.astype(np.int64)
        self.indices = self.A.indices.astype(np.int64)
        # L21: the rows >= q1 of the first q1 columns (after the P - a rows of the level's block)
        c = np.arange(self.q1, dtype=np.int64)
        first = self.indptr[:self.q1] + (self.P1 - c % self.P1)
        counts = self.indptr[1:self.q1 + 1] - first
        self.l21_indptr = np.zeros(self.q1 + 1, dtype=np.int64)
        np.cumsum(counts, out=self.l21_indptr[1:])
        take = np.repeat(first - self.l21_indptr[:-1], counts) + np.arange(self.l21_indptr[-1])
        self.l21_indices = np.ascontiguousarray(self.indices[take] - self.q1)
        self.l21 = np.empty(int(self.l21_indptr[-1]))
        self.L11 = np.empty((self.n1, self.P1, self.P1))
        # The dense block bordered by the p + 1 columns of [X y]: one dpotrf gives L22 (top left),
        # L22^{-1} times the right-hand side (bottom left) and chol(S) (bottom right).
        m = cp.n_fixed + 1
        self.W = np.zeros((self.r + m, self.r + m), order="F")
        self.S22 = self.W[:self.r, :self.r]  # a view: L22 after a factorization
        # The other factors are numbered by decreasing size. Trailing ones (the smallest):
        # - s0: from this row on, the rows of L21 are mostly full (e.g. a factor of a few levels
        #   crossed with everything): the update of rows >= s0 runs as dense column operations
        #   (schur_trailing_rows), the sparse product only over rows < s0;
        # - s0_approx: approx_update keeps rows >= s0_approx exactly and approximates the other
        #   factors by their level blocks (big_blocks: (lo, hi, P) in the dense block's numbering).
        row_fill = np.bincount(self.l21_indices, minlength=self.r)
        self.s0 = self.s0_approx = self.r
        dense_rows = keep_rows = True
        for fi in reversed(others):
            lo = int(self.start[fi] - self.q1)
            room = (self.r - lo) * self.q1 <= SCHUR_TRAILING_MAX
            full = row_fill[lo:lo + sizes[fi]].sum() >= SCHUR_TRAILING_MIN_FILL * sizes[fi] * self.q1
            dense_rows = dense_rows and room and full
            keep_rows = keep_rows and room and self.r - lo <= SCHUR_APPROX_DENSE
            if dense_rows:
                self.s0 = lo
            if keep_rows:
                self.s0_approx = lo
        self.big_blocks = [(int(self.start[fi] - self.q1), int(self.start[fi] - self.q1) + sizes[fi],
                            int(structure.P_of[fi]))
                           for fi in others if self.start[fi] - self.q1 < self.s0_approx]
        self.syrk_plan = syrk_plan(self.l21_indptr, self.l21_indices, self.r, row_stop=self.s0)
        self._trailing_buffers = {}
        # every factor with one effect per level: Z'Z in CSC order, scaled entry by entry
        self.scalar = bool(np.all(structure.P_of == 1))
        if self.scalar:
            stored = self.pos >= 0
            block = np.repeat(np.arange(len(self.raw_offset)), np.diff(np.append(
                self.raw_offset, len(self.raw))))
            self.fac_row = np.zeros(self.A.nnz, dtype=np.int64)
            self.fac_col = np.zeros(self.A.nnz, dtype=np.int64)
            self.fac_row[self.pos[stored]] = self.blk_row_factor[block[stored]]
            self.fac_col[self.pos[stored]] = self.blk_col_factor[block[stored]]
            self.raw_csc = np.zeros(self.A.nnz)
            self.raw_csc[self.pos[stored]] = self.raw[stored]
        self._factored = None  # theta the buffers hold the factor of
        self._result = None  # (logdet, S) at self._factored
        self._cache = []  # [(theta, logdet, S)] of recent updates, most recent last

    CACHE_SIZE = 8  # the optimizer and the fit revisit points (start, best point): no refactoring

    def refresh(self):
        """Re-read the cross-product values after the caller changed the arrays of `self.cp` in
        place (same shapes, same pattern): rebuild `raw` from cp.zz and the pair blocks and drop
        everything computed from the old values."""
        self.raw[:] = raw_values(self.cp)
        if self.scalar:
            stored = self.pos >= 0
            self.raw_csc[self.pos[stored]] = self.raw[stored]
        self._factored = None
        self._result = None
        self._cache = []

    def _own_buffers(self) -> None:
        self.raw = self.raw.copy()
        self.A = self.A.copy()
        if self.scalar:
            self.raw_csc = self.raw_csc.copy()
        self.l21 = np.empty_like(self.l21)
        self.L11 = np.empty_like(self.L11)
        self.W = np.zeros_like(self.W, order="F")
        self.S22 = self.W[:self.r, :self.r]
        self._trailing_buffers = {}

    @property
    def dense_block_size(self) -> int:
        """Columns of the dense Schur complement (what `approx_update` avoids factoring)."""
        return self.r

    def _leading(self, theta):
        """Fill lower(A), factor the leading block (L11, L21) and forward-solve the right-hand
        side: returns (log det(L11 L11') (nan if not PD), C = [L11^{-1} B1; B2 - L21 L11^{-1} B1])."""
        self._factored = None  # the buffers are overwritten
        T_all = self.structure.T_all(theta)
        if self.scalar:
            fill_scaled_scalar(np.ascontiguousarray(T_all[:, 0, 0]), self.raw_csc, self.fac_row,
                               self.fac_col, self.A.data)
        else:
            fill_scaled_gram(T_all, self.structure.P_of, self.blk_row_factor, self.blk_col_factor,
                             self.raw_offset, self.raw, self.pos, self.A.data)
        logdet = schur_first_block(self.indptr, self.indices, self.A.data, 1.0, self.P1, self.n1,
                                   self.l21_indptr, self.L11, self.l21)
        if not np.isfinite(logdet):
            return np.nan, None
        C = self._scaled_zxy(theta)
        schur_solve_lower(self.L11, self.l21_indptr, self.l21_indices, self.l21, C)
        return logdet, C

    def _trailing_rows(self, s0):
        """Rows [s0, r) of the exact Schur complement (after `_leading`), (r - s0, r)."""
        if s0 not in self._trailing_buffers:
            s = self.r - s0
            self._trailing_buffers[s0] = (np.empty((s, self.q1), order="F"),
                                          np.empty((s, self.r), order="F"))
        work, out = self._trailing_buffers[s0]
        schur_trailing_rows(self.indptr, self.indices, self.A.data, 1.0, self.q1, s0,
                            self.l21_indptr, self.l21_indices, self.l21, work, out)
        return out

    def _factor(self, theta):
        """L11, L21 and L22 at theta, and (log det(L L'), S); logdet is nan if L L' is not
        positive definite, S then None."""
        theta = np.asarray(theta, dtype=np.float64)
        if self._factored is not None and np.array_equal(self._factored, theta):
            return self._result
        from scipy.linalg import lapack

        logdet, C = self._leading(theta)
        if not np.isfinite(logdet):
            return np.nan, None
        r, q1 = self.r, self.q1
        c1 = C[:q1]
        G = self.cp.gram - c1.T @ c1
        W = self.W
        dense_lower_from_csc(self.indptr, self.indices, self.A.data, 1.0, q1, self.S22)
        sparse_syrk_lower(self.l21_indptr, self.l21_indices, self.l21, *self.syrk_plan, self.S22)
        if self.s0 < r:  # the small factors' rows (upper part of their square: ignored by dpotrf)
            self.S22[self.s0:, :] = self._trailing_rows(self.s0)
        W[r:, :r] = C[q1:].T
        W[r:, r:] = G
        with BlasThreads(SCHUR_BLAS_THREADS):
            out, info = lapack.dpotrf(W, lower=1, overwrite_a=1, clean=0)
        if not np.shares_memory(out, W):
            W[...] = out
        if 0 < info <= r:
            return np.nan, None
        logdet += 2.0 * float(np.sum(np.log(np.diagonal(W)[:r])))
        if info == 0:
            Lb = np.tril(W[r:, r:])
            S = Lb @ Lb.T
        else:  # S itself is not positive definite: form it the long way (the criterion fails)
            with BlasThreads(SCHUR_BLAS_THREADS):
                c2, _ = lapack.dtrtrs(self.S22, C[q1:], lower=1)
            S = G - c2.T @ c2
        S = 0.5 * (S + S.T)
        self._factored = theta.copy()
        self._result = (logdet, S)
        return self._result

    def _scaled_zxy(self, theta):
        """Lambda' Z'[X y] as a dense (q, p + 1) array in this system's effect order."""
        m = self.cp.n_fixed + 1
        out = np.empty((self.q, m))
        for fi, f in enumerate(self.structure.factors):
            P = int(self.structure.P_of[fi])
            T = self.structure.T_of(theta, fi)
            blk = np.einsum("ki,lkm->lim", T, self.cp.zxy[fi])
            out[self.start[fi]:self.start[fi] + f.n_levels * P] = blk.reshape(-1, m)
        return out

    def update(self, theta):
        theta = np.asarray(theta, dtype=np.float64)
        for t, logdet, S in self._cache:
            if np.array_equal(t, theta):
                return logdet, S.copy()
        logdet, S = self._factor(theta)
        if S is None:
            return self._failed_update()
        self._cache = self._cache[-(self.CACHE_SIZE - 1):] + [(theta.copy(), logdet, S.copy())]
        return logdet, S

    def approx_update(self, theta):
        """(log det, S) as `update`, with the dense Schur complement A22 - L21 L21' replaced by
        an approximation that costs no dense factorization: the smallest other factors (rows
        >= s0_approx, at most SCHUR_APPROX_DENSE effects) are kept exactly, of the larger ones
        only each level's own P x P block. On a crossed model of InstEval's shape (hospital
        approximated, dept exact) its optimum is within 0.2% of the exact one and its Hessian
        within 1%; bigmixed.start uses it to refine starting values. Not cached; it
        overwrites the factor the buffers hold."""
        theta = np.asarray(theta, dtype=np.float64)
        logdet, C = self._leading(theta)
        m = self.cp.n_fixed + 1
        if not np.isfinite(logdet):
            return np.inf, np.full((m, m), np.nan)
        r, q1, s0 = self.r, self.q1, self.s0_approx
        s = r - s0
        c1, C2 = C[:q1], C[q1:]
        S = self.cp.gram - c1.T @ c1
        trailing = self._trailing_rows(s0) if s else np.empty((0, r))
        small = np.tril(trailing[:, s0:])
        small = small + np.tril(small, -1).T
        small_rhs = C2[s0:].copy()
        try:
            for lo, hi, P in self.big_blocks:
                n = (hi - lo) // P
                D = np.empty((n, P, P))
                schur_diag_blocks(self.indptr, self.indices, self.A.data, 1.0, q1, lo, hi, P,
                                  self.l21_indptr, self.l21_indices, self.l21, D)
                if P == 1:  # scalars: L^{-1} is a division
                    d = D[:, 0, 0]
                    if not np.all(d > 0):
                        raise np.linalg.LinAlgError("not positive definite")
                    logdet += float(np.sum(np.log(d)))
                    y = C2[lo:hi] / np.sqrt(d)[:, None]
                    S -= y.T @ y
                    if s:
                        X = trailing[:, lo:hi] / np.sqrt(d)[None, :]
                        small -= X @ X.T
                        small_rhs -= X @ y
                    continue
                L = np.linalg.cholesky(D)
                logdet += 2.0 * float(np.sum(np.log(np.diagonal(L, axis1=1, axis2=2))))
                y = np.linalg.solve(L, C2[lo:hi].reshape(n, P, m))  # L^{-1} C2, level by level
                S -= np.einsum("lpa,lpb->ab", y, y)
                if s:
                    X = np.linalg.solve(L, trailing[:, lo:hi].reshape(s, n, P).transpose(1, 2, 0))
                    small -= np.einsum("lps,lpt->st", X, X)
                    small_rhs -= np.einsum("lps,lpm->sm", X, y)
            if s:
                Ls = np.linalg.cholesky(small)
                logdet += 2.0 * float(np.sum(np.log(np.diagonal(Ls))))
                ys = np.linalg.solve(Ls, small_rhs)
                S -= ys.T @ ys
        except np.linalg.LinAlgError:
            return np.inf, np.full((m, m), np.nan)
        return logdet, 0.5 * (S + S.T)

    def modes(self, theta, beta, condvar=True):
        theta = np.asarray(theta, dtype=np.float64)
        logdet, _ = self._factor(theta)
        if not np.isfinite(logdet):
            raise np.linalg.LinAlgError("Lambda'Z'Z Lambda + I is not positive definite")
        B = self._scaled_zxy(theta)
        u = self._solve(np.ascontiguousarray((B[:, -1] - B[:, :-1] @ beta)[:, None]))[:, 0]
        us = []
        for fi, f in enumerate(self.structure.factors):
            P = int(self.structure.P_of[fi])
            us.append(u[self.start[fi]:self.start[fi] + f.n_levels * P].reshape(f.n_levels, P).copy())
        return us, (self._inverse_diagonal_blocks() if condvar else None)

    @property
    def has_gradient(self) -> bool:
        """`criterion_gradient` applies: every factor has one effect per level (scalar theta)."""
        return self.scalar

    def _solve(self, B):
        """A^{-1} B in place (B: (q, m), C order) with the factor in the buffers: through L11 and
        L21, the dense L22, then back."""
        from scipy.linalg import lapack

        schur_solve_lower(self.L11, self.l21_indptr, self.l21_indices, self.l21, B)
        if self.r:
            L22 = np.asfortranarray(self.S22)
            with BlasThreads(SCHUR_BLAS_THREADS):
                x, _ = lapack.dtrtrs(L22, B[self.q1:], lower=1)
                x, _ = lapack.dtrtrs(L22, x, lower=1, trans=1)
            B[self.q1:] = x
        schur_solve_upper(self.L11, self.l21_indptr, self.l21_indices, self.l21, B)
        return B

    def criterion_gradient(self, theta, state, reml: bool) -> np.ndarray:
        """Gradient in theta of the profiled criterion (REML or ML) at theta, every element > 0;
        `state` is the ProfiledState of `update(theta)`.

        With one scalar theta_k per factor, A = Lambda'Z'Z Lambda + I and dA/dtheta_k =
        (E_k (A - I) + (A - I) E_k) / theta_k (E_k: the factor's effects), so
            d log det A / dtheta_k = 2 (q_k - tr_k(A^{-1})) / theta_k,
        tr_k the trace of the factor's diagonal block. With REML the determinant is that of the
        matrix bordered by Lambda'Z'X and X'X, whose inverse's block is A^{-1} + Y Y', Y =
        A^{-1} Lambda'Z'X R_X^{-1}. The penalized RSS is minimized over (u, beta), so its
        derivative holds them fixed: d r^2 / dtheta_k = -2 ||u_k||^2 / theta_k (the normal
        equations give Lambda'Z'(y - X beta - Z Lambda u) = u). Together
            d criterion / dtheta_k = (2 / theta_k) (q_k - tr_k(A^{-1}) [- ||Y_k||^2] - ||u_k||^2 / sigma^2)
        with sigma^2 = r^2 / (n - p) (REML) or r^2 / n (ML). Costs one dpotri of the dense block
        (S^{-1}, about two factorizations) and a solve with p + 1 right-hand sides.
        """
        theta = np.asarray(theta, dtype=np.float64)
        if not self.scalar or np.any(theta <= 0):
            raise ValueError("criterion_gradient needs scalar factors and theta > 0")
        logdet, _ = self._factor(theta)
        if not np.isfinite(logdet):
            raise np.linalg.LinAlgError("Lambda'Z'Z Lambda + I is not positive definite")
        p = self.cp.n_fixed
        sol = self._solve(self._scaled_zxy(theta))  # A^{-1} Lambda'Z'[X y]
        beta = state.beta_work()
        u = sol[:, -1] - sol[:, :-1] @ beta
        sigma2 = state.pwrss / (state.n_obs - p if reml else state.n_obs)
        traces = self._inverse_block_traces()
        Y = None
        if reml and p:
            Lx = state.chol_S[:p, :p]  # R_X'
            Y = np.linalg.solve(Lx, sol[:, :-1].T)  # (p, q): (A^{-1} Lambda'Z'X R_X^{-1})'
        st = self.structure
        g = np.empty(st.n_theta)
        for k in range(st.n_theta):
            fi = int(st.theta_factor[k])
            lo, n_levels = int(self.start[fi]), st.factors[fi].n_levels
            tr = traces[fi]
            if Y is not None:
                tr += float(np.sum(Y[:, lo:lo + n_levels] ** 2))
            uk2 = float(np.sum(u[lo:lo + n_levels] ** 2))
            g[k] = 2.0 / theta[k] * (n_levels - tr - uk2 / sigma2)
        return g

    def _inverse_block_traces(self) -> list:
        """Per factor, the trace of its diagonal block of A^{-1} (scalar factors): the other
        factors' from the diagonal of S^{-1} (dpotri), the leading one's by
        `schur_first_inverse_trace`."""
        from scipy.linalg import lapack

        Sinv = np.zeros((0, 0), order="F")
        if self.r:
            with BlasThreads(SCHUR_BLAS_THREADS):
                Sinv, info = lapack.dpotri(np.array(self.S22, order="F"), lower=1, overwrite_c=1)
            if info != 0:
                raise np.linalg.LinAlgError("dpotri failed on the dense Schur complement")
        diag = np.diagonal(Sinv)
        traces = []
        for fi, f in enumerate(self.structure.factors):
            if fi == self.lead:
                traces.append(schur_first_inverse_trace(self.L11, self.l21_indptr, self.l21_indices,
                                                        self.l21, Sinv))
            else:
                lo = int(self.start[fi] - self.q1)
                traces.append(float(diag[lo:lo + f.n_levels].sum()))
        return traces

    def _inverse_diagonal_blocks(self):
        """Diagonal blocks of A^{-1}: S^{-1} = (L22 L22')^{-1} in full (dpotri) gives the other
        factors' blocks, and the leading factor's follow by `schur_first_condvar`."""
        from scipy.linalg import lapack

        if self.r:
            with BlasThreads(SCHUR_BLAS_THREADS):
                Sinv, info = lapack.dpotri(np.asfortranarray(self.S22), lower=1, overwrite_c=0)
            if info != 0:
                raise np.linalg.LinAlgError("dpotri failed on the dense Schur complement")
            Sinv = np.asfortranarray(Sinv)
        else:
            Sinv = np.zeros((0, 0), order="F")
        lead_blocks = np.empty((self.n1, self.P1, self.P1))
        schur_first_condvar(self.L11, self.l21_indptr, self.l21_indices, self.l21, Sinv, lead_blocks)
        cinvs = []
        for fi, f in enumerate(self.structure.factors):
            P = int(self.structure.P_of[fi])
            if fi == self.lead:
                cinvs.append(lead_blocks)
                continue
            base = self.start[fi] - self.q1 + np.arange(f.n_levels, dtype=np.int64)[:, None] * P
            idx = base + np.arange(P)[None, :]  # (n_levels, P)
            a = idx[:, :, None]
            b = idx[:, None, :]
            cinvs.append(Sinv[np.maximum(a, b), np.minimum(a, b)])
        return cinvs
