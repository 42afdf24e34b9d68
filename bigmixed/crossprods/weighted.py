"""Weighted cross-products of [Z X z] for one PIRLS iteration of a GLMM, written into the
arrays of a `CrossProducts` whose pattern (levels, co-occurring pairs) is fixed once.

Per iteration: Z'WZ per level, Z'W[X z] per level, [X z]'W[X z], and for several factors the
co-occurrence blocks Z_b'W Z_a -- one pass over the rows per factor (kernels/glm.py), every sum
a double-double rounded once, as the LMM's cross-products (bigmixed.crossprods.crossprod). A
solver built on these arrays (bigmixed.solvers) is told by ``refresh()`` that they changed: its
pattern and symbolic analysis stay.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kernels.glm import factor_crossprod_weighted, factor_crossprod_weighted_serial, pair_crossprod_weighted
from .crossprod import CrossProducts, PairBlocks, level_pairs, round_sum, sum_chunks

_EMPTY_Z = np.ones((0, 1))
# a PIRLS iteration's pass is on the critical path of every evaluation: two row chunks (the two
# cores) from this many rows on, where the LMM's one-off pass uses two from 200k (n_row_chunks)
PIRLS_TWO_CHUNKS_ROWS = 32_768


def pirls_row_chunks(n_rows: int) -> int:
    """The row chunks of the weighted cross-products of a PIRLS iteration (a function of the
    row count only: the sums, double-doubles rounded once, do not depend on the threads)."""
    return 1 if n_rows < PIRLS_TWO_CHUNKS_ROWS else 2


@dataclass
class PairPlan:
    """Which co-occurrence block each row of factors (b, a) adds to: computed once."""

    row_factor: int
    col_factor: int
    ids: np.ndarray  # (n,) int64: index of the row's (level_b, level_a) pair
    row_levels: np.ndarray
    col_levels: np.ndarray


def pair_plans(structure) -> list:
    """The pairs of factors (b > a) and each row's pair index (as CrossProducts.compute orders
    the pair blocks)."""
    plans = []
    for b in range(len(structure.factors)):
        for a in range(b):
            fb, fa = structure.factors[b], structure.factors[a]
            uniq, ids = level_pairs(fb, fa)
            plans.append(PairPlan(b, a, ids, uniq // fa.n_levels, uniq % fa.n_levels))
    return plans


def weighted_crossprods(structure, X: np.ndarray, z: np.ndarray, w: np.ndarray,
                        plans: list) -> CrossProducts:
    """The cross-products of [Z X z] with row weights w. X may have no columns (the
    modes-only PIRLS step)."""
    n, p = X.shape
    chunks = pirls_row_chunks(n)
    kernel = factor_crossprod_weighted if chunks > 1 else factor_crossprod_weighted_serial
    zz, zxy, gram = [], [], None
    for fi, f in enumerate(structure.factors):
        P, m = f.n_columns, p + 1
        zz_out = np.zeros((chunks, f.n_levels, P, P))
        zxy_out = np.zeros((chunks, f.n_levels, P, m))
        gram_out = np.zeros((chunks, m, m))
        zz_lo, zxy_lo, gram_lo = np.zeros_like(zz_out), np.zeros_like(zxy_out), np.zeros_like(gram_out)
        kernel(f.codes, _EMPTY_Z if f.unit_z else f.Z, f.unit_z, X, z, w, fi == 0, zz_out, zxy_out,
               gram_out, zz_lo, zxy_lo, gram_lo)
        zz.append(round_sum(*sum_chunks(zz_out, zz_lo)))
        zxy.append(round_sum(*sum_chunks(zxy_out, zxy_lo)))
        if fi == 0:
            gram = round_sum(*sum_chunks(gram_out, gram_lo))
    pairs = []
    for plan in plans:
        fb, fa = structure.factors[plan.row_factor], structure.factors[plan.col_factor]
        blocks = np.zeros((len(plan.row_levels), fb.n_columns, fa.n_columns))
        lo = np.zeros_like(blocks)
        pair_crossprod_weighted(plan.ids, _EMPTY_Z if fb.unit_z else fb.Z, fb.unit_z,
                                _EMPTY_Z if fa.unit_z else fa.Z, fa.unit_z, w, blocks, lo)
        pairs.append(PairBlocks(plan.row_factor, plan.col_factor, plan.row_levels,
                                plan.col_levels, round_sum(blocks, lo)))
    return CrossProducts(n, p, zz, zxy, gram, pairs)


def assign_crossprods(dst: CrossProducts, src: CrossProducts) -> None:
    """Copy src's values into dst's arrays (same shapes and pattern), in place: a solver built
    on dst then only needs ``refresh()``."""
    for a, b in zip(dst.zz, src.zz):
        a[...] = b
    for a, b in zip(dst.zxy, src.zxy):
        a[...] = b
    dst.gram[...] = src.gram
    for a, b in zip(dst.pairs, src.pairs):
        a.blocks[...] = b.blocks
