"""Cross-products of [Z X y], computed once in one pass per grouping factor.

formula -> design -> structure -> **cross-products** -> factor -> objective -> optimizer -> results.

After this step the N rows are never read again by the optimizer: every evaluation of the
objective works from these arrays, whose size depends on the number of levels, not of rows.

Every sum is a double-double (the kernels' ``*_out`` + ``*_lo``, chunks added with
`bigmixed.compensated.add_compensated`) rounded once at the end: the cross-products are the
correctly rounded sums of the rows' products whatever the split into chunks or partitions
and the row order (see bigmixed.compensated), so a fit from a partitioned Dask DataFrame
(bigmixed.distributed) gets the same bits, hence the same optimizer path, as in memory.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .compensated import add_compensated
from ..kernels import factor_crossprod_serial, n_row_chunks, pair_crossprod
from ..kernels.crossprod import pair_keys
from ..kernels.crossprod import factor_crossprod_by_level, factor_crossprod_columns_serial
from ..kernels.response import response_crossprod
from ..spec.columns import ColumnMatrix
from ..spec.structure import RandomEffectsStructure

_EMPTY_Z = np.ones((0, 1))
_NO_X = np.zeros((0, 0))
_NO_ADDRS = np.zeros(0, dtype=np.int64)


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
    def compute(cls, X: np.ndarray, y: np.ndarray, structure: RandomEffectsStructure,
                w: np.ndarray | None = None) -> "CrossProducts":
        """The cross-products of [Z X y]; with prior weights w: Z'WZ, Z'W[X y], [X y]'W[X y]
        and the weighted co-occurrence blocks (each row's products times w_i, in the same
        one pass and the same double-double sums)."""
        n, p = X.shape
        chunks = n_row_chunks(n)
        zz, zxy = [], []
        gram = None
        for fi, f in enumerate(structure.factors):
            zz_hi, zz_lo, zxy_hi, zxy_lo, gram_hi, gram_lo = factor_sums(f, X, y, fi == 0, chunks, w)
            zz.append(round_sum(zz_hi, zz_lo))
            zxy.append(round_sum(zxy_hi, zxy_lo))
            if fi == 0:
                gram = round_sum(gram_hi, gram_lo)
        pairs = []
        for b in range(len(structure.factors)):
            for a in range(b):
                pairs.append(_pair_blocks(structure, b, a, w))
        return cls(n, p, zz, zxy, gram, pairs)

    def with_response(self, X: np.ndarray, y: np.ndarray,
                      structure: RandomEffectsStructure,
                      w: np.ndarray | None = None) -> "CrossProducts":
        """These cross-products with another response on the same rows: one pass computing
        Z'y, X'y and y'y (kernels/response.py); Z'Z, Z'X and X'X are shared. The same bits as
        `compute(X, y, structure)` (every sum is correctly rounded). With prior weights w
        (those these cross-products were computed with): Z'Wy, X'Wy and y'Wy, the same bits
        as `compute(X, y, structure, w)`."""
        X = np.asarray(X)  # a ColumnMatrix: its array (the response kernel reads rows of X)
        if w is not None:
            return self._with_weighted_response(X, y, structure, w)
        n, p = X.shape
        chunks = n_row_chunks(n)
        zxy = []
        xy = None
        for fi, f in enumerate(structure.factors):
            zy_out = np.zeros((chunks, f.n_levels, f.n_columns))
            xy_out = np.zeros((chunks, p + 1))
            zy_lo, xy_lo = np.zeros(zy_out.shape), np.zeros(xy_out.shape)
            response_crossprod(f.codes, _EMPTY_Z if f.unit_z else f.Z, f.unit_z, X, y, fi == 0,
                               zy_out, xy_out, zy_lo, xy_lo)
            z = self.zxy[fi].copy()
            z[:, :, p] = round_sum(*sum_chunks(zy_out, zy_lo))
            zxy.append(z)
            if fi == 0:
                xy = round_sum(*sum_chunks(xy_out, xy_lo))
        gram = self.gram.copy()
        gram[p, :p] = xy[:p]
        gram[:p, p] = xy[:p]
        gram[p, p] = xy[p]
        return replace(self, zxy=zxy, gram=gram)

    def _with_weighted_response(self, X, y, structure, w) -> "CrossProducts":
        """`with_response` with prior weights, bit-identical to `compute(X, y, structure, w)`:
        the weighted kernel on no X columns gives Z_g'Wy = sum (z w) y and y'Wy = sum (y w) y
        as `compute` forms them, and the response kernel on the values y w gives X'Wy = sum
        (y w) x (the products `compute` adds, in the same chunks and order)."""
        n, p = X.shape
        chunks = n_row_chunks(n)
        no_x = np.zeros((n, 0))
        zxy = []
        yy = None
        for fi, f in enumerate(structure.factors):
            _, _, zy_hi, zy_lo, g_hi, g_lo = factor_sums(f, no_x, y, fi == 0, chunks, w)
            z = self.zxy[fi].copy()
            z[:, :, p] = round_sum(zy_hi, zy_lo)[:, :, 0]
            zxy.append(z)
            if fi == 0:
                yy = round_sum(g_hi, g_lo)[0, 0]
        f = structure.factors[0]
        zy_out = np.zeros((chunks, f.n_levels, f.n_columns))
        xy_out = np.zeros((chunks, p + 1))
        zy_lo, xy_lo = np.zeros(zy_out.shape), np.zeros(xy_out.shape)
        response_crossprod(f.codes, _EMPTY_Z if f.unit_z else f.Z, f.unit_z, X, y * w, True,
                           zy_out, xy_out, zy_lo, xy_lo)
        xy = round_sum(*sum_chunks(xy_out, xy_lo))
        gram = self.gram.copy()
        gram[p, :p] = xy[:p]
        gram[:p, p] = xy[:p]
        gram[p, p] = yy
        return replace(self, zxy=zxy, gram=gram)


def sum_chunks(hi: np.ndarray, lo: np.ndarray):
    """Add the per-chunk double-doubles (hi[c], lo[c]) in chunk order (deterministic) ->
    (hi, lo) of the total, not rounded.

    The sum is accumulated in place in chunk 0 and the buffers are then shrunk in place to
    that chunk, so that the memory of the other chunks is returned without a third copy at
    the peak. `hi` and `lo` must own their data and have no views (the caller's freshly
    allocated kernel buffers).
    """
    for c in range(1, hi.shape[0]):
        add_compensated(hi[0], lo[0], hi[c], lo[c])
    out = []
    for arr in (hi, lo):
        if arr.shape[0] > 1:
            arr.resize((1,) + arr.shape[1:], refcheck=False)
        out.append(arr.reshape(arr.shape[1:]))
    return out[0], out[1]


def round_sum(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """The double-double (hi, lo) rounded once to float64, in place in hi."""
    hi += lo
    return hi


def factor_sums(f, X: np.ndarray, y: np.ndarray, with_gram: bool, chunks: int,
                w: np.ndarray | None = None):
    """One factor's blocks Z_g'Z_g, Z_g'[X y] and (with_gram) [X y]'[X y] as double-doubles
    summed over `chunks` row chunks: (zz_hi, zz_lo, zxy_hi, zxy_lo, gram_hi, gram_lo), the gram
    pair None without with_gram. `f` needs codes (0..n_levels-1), n_levels, n_columns, unit_z, Z.
    With row weights w: Z_g'WZ_g, Z_g'W[X y], [X y]'W[X y] (kernels/glm.py's weighted kernel).
    """
    m = X.shape[1] + 1
    P = f.n_columns
    # unweighted, several chunks: the threads split the levels, one copy of the level blocks
    by_level = w is None and chunks > 1
    level_chunks = 1 if by_level else chunks
    zz_out = np.zeros((level_chunks, f.n_levels, P, P))
    zxy_out = np.zeros((level_chunks, f.n_levels, P, m))
    gram_out = np.zeros((chunks, m, m))
    # np.zeros, not zeros_like: calloc's pages are zeroed on first touch, by the chunk's own
    # thread in the kernel, instead of by one memset here (0.5 s of 320 MB at 10M rows)
    zz_lo, zxy_lo, gram_lo = np.zeros(zz_out.shape), np.zeros(zxy_out.shape), np.zeros(gram_out.shape)
    if by_level:
        in_place = isinstance(X, ColumnMatrix)  # X's columns read in place: the same bits
        factor_crossprod_by_level(
            f.codes, _EMPTY_Z if f.unit_z else f.Z, f.unit_z, _NO_X if in_place else X,
            X.addresses() if in_place else _NO_ADDRS, X.row_map() if in_place else _NO_ADDRS,
            in_place, y, with_gram, zz_out, zxy_out, gram_out, zz_lo, zxy_lo, gram_lo)
    elif w is None and isinstance(X, ColumnMatrix):  # one chunk
        factor_crossprod_columns_serial(
            f.codes, _EMPTY_Z if f.unit_z else f.Z, f.unit_z, X.addresses(), X.row_map(), y,
            with_gram, zz_out, zxy_out, gram_out, zz_lo, zxy_lo, gram_lo)
    elif w is None:  # one chunk
        factor_crossprod_serial(f.codes, _EMPTY_Z if f.unit_z else f.Z, f.unit_z, X, y, with_gram,
                                zz_out, zxy_out, gram_out, zz_lo, zxy_lo, gram_lo)
    else:
        X = np.asarray(X)
        from ..kernels.glm import factor_crossprod_weighted, factor_crossprod_weighted_serial

        kernel = factor_crossprod_weighted if chunks > 1 else factor_crossprod_weighted_serial
        kernel(f.codes, _EMPTY_Z if f.unit_z else f.Z, f.unit_z, X, y, w, with_gram, zz_out,
               zxy_out, gram_out, zz_lo, zxy_lo, gram_lo)
    gram = sum_chunks(gram_out, gram_lo) if with_gram else (None, None)
    return sum_chunks(zz_out, zz_lo) + sum_chunks(zxy_out, zxy_lo) + gram


def pair_sums(structure: RandomEffectsStructure, b: int, a: int, w: np.ndarray | None = None):
    """Co-occurrence blocks of factors b (rows) and a (columns) as double-doubles: (sorted
    keys level_b * n_levels_a + level_a of the pairs that occur, blocks_hi, blocks_lo); with
    row weights w the blocks Z_b'WZ_a."""
    fb, fa = structure.factors[b], structure.factors[a]
    uniq, ids = level_pairs(fb, fa)
    blocks = np.zeros((len(uniq), fb.n_columns, fa.n_columns))
    lo = np.zeros(blocks.shape)
    if w is not None:
        from ..kernels.glm import pair_crossprod_weighted

        pair_crossprod_weighted(ids.astype(np.int64, copy=False), _EMPTY_Z if fb.unit_z else fb.Z,
                                fb.unit_z, _EMPTY_Z if fa.unit_z else fa.Z, fa.unit_z, w, blocks, lo)
        return uniq, blocks, lo
    pair_crossprod(
        ids.astype(np.int64, copy=False),
        _EMPTY_Z if fb.unit_z else fb.Z,
        fb.unit_z,
        _EMPTY_Z if fa.unit_z else fa.Z,
        fa.unit_z,
        blocks,
        lo,
    )
    return uniq, blocks, lo


def level_pairs(fb, fa):
    """The level pairs of two grouping factors that occur: (sorted keys level_b * n_levels_a +
    level_a, each row's index into them as int64), as np.unique(keys, return_inverse=True)
    gives them, by two counting sorts."""
    ids = np.empty(len(fb.codes), dtype=np.int64)
    uniq = pair_keys(fb.codes, fa.codes, fb.n_levels, fa.n_levels, ids)
    return uniq, ids


def _pair_blocks(structure: RandomEffectsStructure, b: int, a: int, w=None) -> PairBlocks:
    uniq, hi, lo = pair_sums(structure, b, a, w)
    n_a = structure.factors[a].n_levels
    return PairBlocks(b, a, uniq // n_a, uniq % n_a, round_sum(hi, lo))
