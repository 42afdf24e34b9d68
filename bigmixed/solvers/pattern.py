"""The fixed nonzero pattern of lower(Lambda'Z'Z Lambda) in CSC form, shared by the
CHOLMOD and Schur systems: built once, refilled per theta."""
from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import scipy.sparse as sp
from ..crossprods.crossprod import CrossProducts
from ..spec.structure import RandomEffectsStructure

def raw_values(cp: CrossProducts) -> np.ndarray:
    """The blocks of Z'Z in one flat array: each factor's diagonal blocks (factor order), then
    the pair blocks (cp.pairs order), each block row-major. `gram_pattern` indexes into it."""
    parts = [np.asarray(z, dtype=np.float64).ravel() for z in cp.zz]
    parts += [np.asarray(pb.blocks, dtype=np.float64).ravel() for pb in cp.pairs]
    return np.ascontiguousarray(np.concatenate(parts))


@dataclass
class GramPattern:
    """lower(Lambda'Z'Z Lambda) as a CSC matrix whose pattern is fixed once.

    Effects are numbered factor by factor in a chosen order (`start[f]`: first effect of factor
    f), level by level, then column within level. Every stored block (a level of one factor
    against a level of another, or a level's diagonal block) is dense, explicit zeros kept, so
    the pattern does not depend on theta. `pos[k]` is where raw entry k lands in A.data (-1 for
    the upper halves of diagonal blocks); the block tables feed `fill_scaled_gram`.
    """

    start: np.ndarray  # (n_factors,) int64
    q: int
    raw: np.ndarray
    blk_row_factor: np.ndarray
    blk_col_factor: np.ndarray
    raw_offset: np.ndarray
    pos: np.ndarray
    A: sp.csc_matrix  # sorted indices, zero data


def adopt_pattern(system, pat: GramPattern) -> None:
    """The pattern's arrays as attributes of a system (what `fill_scaled_gram` and the
    factorizations read)."""
    for name in ("q", "raw", "blk_row_factor", "blk_col_factor", "raw_offset", "pos", "A"):
        setattr(system, name, getattr(pat, name))


def gram_pattern(cp: CrossProducts, structure: RandomEffectsStructure, order) -> GramPattern:
    """The CSC pattern of lower(Lambda'Z'Z Lambda) with the factors' effects placed in `order`."""
    factors = structure.factors
    P_of = structure.P_of
    start = np.zeros(len(factors), dtype=np.int64)
    q = 0
    for fi in order:
        start[fi] = q
        q += factors[fi].n_levels * int(P_of[fi])
    rows, cols, brow, bcol, boff = [], [], [], [], []
    raw_len = 0
    for fi, f in enumerate(factors):
        P = int(P_of[fi])
        lv = np.arange(f.n_levels, dtype=np.int64)
        a, b = np.meshgrid(np.arange(P), np.arange(P), indexing="ij")
        rows.append((start[fi] + lv[:, None, None] * P + a[None]).ravel())
        cols.append((start[fi] + lv[:, None, None] * P + b[None]).ravel())
        brow.append(np.full(f.n_levels, fi, dtype=np.int64))
        bcol.append(np.full(f.n_levels, fi, dtype=np.int64))
        boff.append(raw_len + lv * P * P)
        raw_len += f.n_levels * P * P
    for pb in cp.pairs:
        Pr, Pc = int(P_of[pb.row_factor]), int(P_of[pb.col_factor])
        a, b = np.meshgrid(np.arange(Pr), np.arange(Pc), indexing="ij")
        r = (start[pb.row_factor] + pb.row_levels[:, None, None] * Pr + a[None]).ravel()
        c = (start[pb.col_factor] + pb.col_levels[:, None, None] * Pc + b[None]).ravel()
        if start[pb.row_factor] < start[pb.col_factor]:
            r, c = c, r  # the block lies above the diagonal in this order: store its transpose
        rows.append(r)
        cols.append(c)
        npairs = len(pb.row_levels)
        brow.append(np.full(npairs, pb.row_factor, dtype=np.int64))
        bcol.append(np.full(npairs, pb.col_factor, dtype=np.int64))
        boff.append(raw_len + np.arange(npairs, dtype=np.int64) * Pr * Pc)
        raw_len += npairs * Pr * Pc
    rows = np.concatenate(rows)
    cols = np.concatenate(cols)
    raw = raw_values(cp)
    if len(raw) != raw_len:
        raise ValueError("cross-product blocks do not match the random-effects structure")

    lower = rows >= cols
    entry = np.flatnonzero(lower)
    index_dtype = np.int32 if q < 2**31 - 1 and len(entry) < 2**31 - 1 else np.int64
    # Build the CSC pattern once; data = entry id + 1 tells where each raw entry landed.
    coo = sp.coo_matrix((entry.astype(np.float64) + 1.0, (rows[lower], cols[lower])), shape=(q, q))
    A = coo.tocsc()
    A.sort_indices()
    if A.nnz != len(entry):
        raise RuntimeError("duplicate entries in the random-effects pattern")
    pos = np.full(len(raw), -1, dtype=np.int64)
    pos[A.data.astype(np.int64) - 1] = np.arange(A.nnz, dtype=np.int64)
    A.indices = A.indices.astype(index_dtype)
    A.indptr = A.indptr.astype(index_dtype)
    A.data = np.zeros(A.nnz)
    return GramPattern(start, q, raw, np.concatenate(brow), np.concatenate(bcol),
                        np.concatenate(boff), pos, A)
