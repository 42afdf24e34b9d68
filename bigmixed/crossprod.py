"""Cross-products of [Z X y], computed once in one pass per grouping factor.

formula -> design -> structure -> **cross-products** -> factor -> objective -> optimizer -> results.

After this step the N rows are never read again by the optimizer: every evaluation of the
objective works from these arrays, whose size depends on the number of levels, not of rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernels import factor_crossprod, factor_crossprod_serial, n_row_chunks, pair_crossprod
from .structure import RandomEffectsStructure

_EMPTY_Z = np.ones((0, 1))


@dataclass
class PairBlocks:
    """Co-occurrence blocks between a later factor (rows) and an earlier one (columns)."""

    row_factor: int
    col_factor: int
    row_levels: np.ndarray  # (n_pairs,) int64
    col_levels: np.ndarray  # (n_pairs,) int64
    blocks: np.ndarray  # (n_pairs, P_row, P_col)


@dataclass
class CrossProducts:
    """Everything the objective needs.

    zz[f] : (n_levels_f, P_f, P_f)   Z_f,g' Z_f,g per level g
    zxy[f] : (n_levels_f, P_f, p + 1) Z_f,g' [X y]
    gram : (p + 1, p + 1)             [X y]'[X y]
    pairs : list[PairBlocks]          Z_b' Z_a between factors (only with several factors)
    """

    n_obs: int
    n_fixed: int
    zz: list
    zxy: list
    gram: np.ndarray
    pairs: list

    @classmethod
    def compute(cls, X: np.ndarray, y: np.ndarray, structure: RandomEffectsStructure) -> "CrossProducts":
        n, p = X.shape
        m = p + 1
        chunks = n_row_chunks(n)
        zz, zxy = [], []
        gram = None
        for fi, f in enumerate(structure.factors):
            P = f.n_columns
            zz_out = np.zeros((chunks, f.n_levels, P, P))
            zxy_out = np.zeros((chunks, f.n_levels, P, m))
            gram_out = np.zeros((chunks, m, m))
            Z = _EMPTY_Z if f.unit_z else f.Z
            kernel = factor_crossprod if chunks > 1 else factor_crossprod_serial
            kernel(f.codes, Z, f.unit_z, X, y, fi == 0, zz_out, zxy_out, gram_out)
            zz.append(_sum_chunks(zz_out))
            zxy.append(_sum_chunks(zxy_out))
            if fi == 0:
                gram = _sum_chunks(gram_out)
        pairs = []
        for b in range(len(structure.factors)):
            for a in range(b):
                pairs.append(_pair_blocks(structure, b, a))
        return cls(n, p, zz, zxy, gram, pairs)


def _sum_chunks(arr: np.ndarray) -> np.ndarray:
    """Sum the per-chunk partial results in chunk order (deterministic).

    The sum is accumulated in place in chunk 0 (the same additions, in the same order, as
    into a copy of it) and `arr` is then shrunk in place to that chunk, so that the memory of
    the other chunks is returned without a third copy at the peak. `arr` must own its data
    and have no views (the caller's freshly allocated kernel buffer).
    """
    for c in range(1, arr.shape[0]):
        arr[0] += arr[c]
    if arr.shape[0] > 1:
        arr.resize((1,) + arr.shape[1:], refcheck=False)
    return arr.reshape(arr.shape[1:])


def _pair_blocks(structure: RandomEffectsStructure, b: int, a: int) -> PairBlocks:
    fb, fa = structure.factors[b], structure.factors[a]
    key = fb.codes.astype(np.int64) * np.int64(fa.n_levels) + fa.codes.astype(np.int64)
    uniq, ids = np.unique(key, return_inverse=True)
    blocks = np.zeros((len(uniq), fb.n_columns, fa.n_columns))
    pair_crossprod(
        ids.astype(np.int64, copy=False),
        _EMPTY_Z if fb.unit_z else fb.Z,
        fb.unit_z,
        _EMPTY_Z if fa.unit_z else fa.Z,
        fa.unit_z,
        blocks,
    )
    return PairBlocks(b, a, uniq // fa.n_levels, uniq % fa.n_levels, blocks)
