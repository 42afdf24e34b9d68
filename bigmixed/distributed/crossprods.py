"""Pass 2: per partition, the cross-products in the global encoding; summed in a fixed
tree; aliased columns found on the reduced system."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any
import numpy as np
import pandas as pd
from ..crossprods.compensated import add_compensated
from ..crossprods.crossprod import CrossProducts, PairBlocks, factor_sums, pair_sums
from ..spec.structure import RandomEffectsStructure
from .levels import GlobalEncoding
from .plan import Plan, kept_rows, prior_values, validate_partition
from ..spec.design import RandomTerm, design_matrices_for_newdata
from ..spec.checks import check_finite
from ..spec.rank import clearly_full_rank, dqrdc2_rank
from ..spec.encoding import numeric_column

# ======================================================================================
# Pass 2: cross-products per partition, reduced in a fixed tree
# ======================================================================================


@dataclass
class _Partial:
    """One partition's (or a subtree's) cross-products, every sum a double-double (hi, lo)."""

    n_obs: int
    gram: Any  # (hi, lo), each (p + 1, p + 1); None when no rows
    factors: list  # per factor: (global level ids int64 sorted, zz_hi, zz_lo, zxy_hi, zxy_lo)
    pairs: list  # per pair: (row_factor, col_factor, keys int64 sorted, blocks_hi, blocks_lo)
    R: Any  # (<= p, p) R factor of a QR of X: R'R = X'X
    logw: Any = None  # (hi, lo), each (1,): sum(log w_i) of the prior weights; None without


def encode_partition(part: pd.DataFrame, plan: Plan, enc: GlobalEncoding, check: bool = True):
    """Kept rows of a partition -> (kept frame, y, X, [(codes, Z) per term]) in the global encoding."""
    keep, _ = kept_rows(part, plan)
    kept = part if keep.all() else part[keep]
    if len(kept) == 0:
        return kept, None, None, None
    y = numeric_column(kept[plan.response], plan.response)
    if check:
        check_finite(y, f"response column {plan.response!r}", kept.index)
        for v in plan.covariates:
            if enc.var_info[v].kind == "numeric":
                check_finite(numeric_column(kept[v], v), f"column {v!r}", kept.index)
    with np.errstate(divide="ignore", invalid="ignore"):
        X, per_term = design_matrices_for_newdata(enc.template, kept)
    if check:
        names = enc.template.fixed_spec.matrix.names
        for j in np.flatnonzero(~np.isfinite(X).all(axis=0)):
            check_finite(X[:, j], f"fixed-effects column {names[j]!r}", kept.index)
        for k, (codes, Z) in enumerate(per_term):
            t = enc.terms[k]
            for j in np.flatnonzero(~np.isfinite(Z).all(axis=0)):
                check_finite(Z[:, j], f"column {t.column_names[j]!r} of random-effects term "
                                 f"({t.expr} | ...)", kept.index)
            if len(codes) and codes.min() < 0:  # pragma: no cover - pass 1 saw every level
                raise RuntimeError(f"a level of {t.group!r} is missing from the global encoding")
    return kept, y, X, per_term


def pass2_partition(part: pd.DataFrame, plan: Plan, enc: GlobalEncoding) -> _Partial:
    validate_partition(part, plan)
    kept, y, X, per_term = encode_partition(part, plan, enc)
    if y is None:
        return _Partial(0, None, [], [], None)
    st, ids_of, n_global = local_structure(enc, per_term)
    w, off = prior_values(kept, plan)  # prior weights and offset: as in memory (model.py)
    logw = None
    if off is not None:
        y = np.ascontiguousarray(y - off)
    if w is not None:
        w = np.ascontiguousarray(w)
        from ..kernels.crossprod import dd_sum

        hi, lo = dd_sum(np.log(w))
        logw = (np.array([hi]), np.array([lo]))
    part_sums = partition_sums(st, ids_of, n_global, X, y, w)
    part_sums.logw = logw
    return part_sums


def local_structure(enc: GlobalEncoding, per_term):
    """A partition's random-effects structure with local level numbering (only the levels
    present in the partition get blocks) -> (structure, [global ids of the local levels],
    [global level counts])."""
    terms = [
        RandomTerm(expr=t.expr, group=t.group, column_names=t.column_names, levels=t.levels,
                   codes=codes, Z=Z, group_vars=t.group_vars, correlated=t.correlated)
        for t, (codes, Z) in zip(enc.terms, per_term)
    ]
    st = RandomEffectsStructure(terms)
    n_global = [f.n_levels for f in st.factors]
    ids_of = []
    for f in st.factors:
        codes = np.asarray(f.codes)
        if f.n_levels <= 4 * len(codes):
            present = np.bincount(codes, minlength=f.n_levels) > 0
            ids = np.flatnonzero(present)
            local = (np.cumsum(present) - 1)[codes]
        else:
            ids, local = np.unique(codes, return_inverse=True)
        f.codes = np.ascontiguousarray(local, dtype=np.int64)
        f.levels = ids
        ids_of.append(ids.astype(np.int64))
    return st, ids_of, n_global


def partition_sums(st, ids_of, n_global, X: np.ndarray, y: np.ndarray, w=None,
                   with_R: bool = True) -> _Partial:
    """The (weighted) cross-products of [Z X y] of one partition's rows, keyed by global level
    ids, every sum a double-double; with_R: and the R factor of a QR of X."""
    n, p = X.shape
    factors, gram = [], None
    for fi, f in enumerate(st.factors):
        zz_hi, zz_lo, zxy_hi, zxy_lo, g_hi, g_lo = factor_sums(f, X, y, fi == 0, 1, w)
        factors.append((ids_of[fi], zz_hi, zz_lo, zxy_hi, zxy_lo))
        if fi == 0:
            gram = (g_hi, g_lo)
    pairs = []
    for b in range(len(st.factors)):
        for a in range(b):
            local, hi, lo = pair_sums(st, b, a, w)
            n_a_local, n_a = np.int64(st.factors[a].n_levels), np.int64(n_global[a])
            keys = ids_of[b][local // n_a_local] * n_a + ids_of[a][local % n_a_local]
            order = np.argsort(keys, kind="stable")
            pairs.append((b, a, keys[order], np.ascontiguousarray(hi[order]),
                          np.ascontiguousarray(lo[order])))
    R = (np.linalg.qr(X, mode="r") if p else np.zeros((0, 0))) if with_R else None
    return _Partial(n, gram, factors, pairs, R)


def _sorted_union(id_arrays: list) -> np.ndarray:
    """Union of sorted int64 arrays (linear: timsort merges the sorted runs)."""
    ids = np.concatenate(id_arrays)
    ids.sort(kind="stable")
    if len(ids) > 1:
        ids = ids[np.r_[True, ids[1:] != ids[:-1]]]
    return ids


def _merge_keyed(items: list):
    """[(ids, hi_1, lo_1, hi_2, lo_2, ...), ...] in partition order -> (union of ids, the
    double-doubles (hi_j, lo_j) summed per id).

    Each id's blocks are added in the order of `items` (deterministic)."""
    items = [t for t in items if t is not None]
    if len(items) == 1:
        return items[0]
    first = items[0][0]
    if all(len(t[0]) == len(first) and np.array_equal(t[0], first) for t in items[1:]):
        out = [x.copy() for x in items[0][1:]]
        for t in items[1:]:
            for j in range(0, len(out), 2):
                add_compensated(out[j], out[j + 1], t[j + 1], t[j + 2])
        return (first,) + tuple(out)
    ids = _sorted_union([t[0] for t in items])
    out = [np.zeros((len(ids),) + x.shape[1:]) for x in items[0][1:]]
    for t in items:
        pos = np.searchsorted(ids, t[0])
        for j in range(0, len(out), 2):
            hi, lo = out[j][pos], out[j + 1][pos]
            add_compensated(hi, lo, t[j + 1], t[j + 2])
            out[j][pos], out[j + 1][pos] = hi, lo
    return (ids,) + tuple(out)


def merge_partials(*parts: _Partial) -> _Partial:
    """Sum partials in double-double, in the order given (partition order)."""
    parts = [p for p in parts if p.n_obs > 0] or [parts[0]]
    if len(parts) == 1:
        return parts[0]
    hi, lo = parts[0].gram[0].copy(), parts[0].gram[1].copy()
    for p in parts[1:]:
        add_compensated(hi, lo, *p.gram)
    gram = (hi, lo)
    n_f = len(parts[0].factors)
    factors = [_merge_keyed([p.factors[f] for p in parts]) for f in range(n_f)]
    pairs = []
    for k, (b, a, *_) in enumerate(parts[0].pairs):
        ids, hi, lo = _merge_keyed([p.pairs[k][2:] for p in parts])
        pairs.append((b, a, ids, hi, lo))
    R = None
    if parts[0].R is not None:
        stacked = np.vstack([p.R for p in parts])
        R = np.linalg.qr(stacked, mode="r") if stacked.shape[0] > stacked.shape[1] else stacked
    logw = None
    if parts[0].logw is not None:
        logw = (parts[0].logw[0].copy(), parts[0].logw[1].copy())
        for p in parts[1:]:
            add_compensated(logw[0], logw[1], *p.logw)
    return _Partial(sum(p.n_obs for p in parts), gram, factors, pairs, R, logw)


def assemble(total: _Partial, structure: RandomEffectsStructure) -> CrossProducts:
    """The reduced partials as the CrossProducts of the whole data (dense per-level blocks),
    each double-double rounded once (as `CrossProducts.compute` does)."""
    p = total.gram[0].shape[0] - 1
    zz, zxy = [], []
    for f, (ids, zz_hi, zz_lo, zxy_hi, zxy_lo) in zip(structure.factors, total.factors):
        if len(ids) != f.n_levels or not np.array_equal(ids, np.arange(f.n_levels)):
            raise RuntimeError(f"levels of {f.group!r} without rows after the reduction")  # pragma: no cover
        zz.append(zz_hi + zz_lo)
        zxy.append(zxy_hi + zxy_lo)
    pairs = []
    for b, a, keys, hi, lo in total.pairs:
        n_a = np.int64(structure.factors[a].n_levels)
        pairs.append(PairBlocks(b, a, keys // n_a, keys % n_a, hi + lo))
    gram = total.gram[0] + total.gram[1]  # symmetric: the kernel mirrors both parts
    return CrossProducts(total.n_obs, p, zz, zxy, gram, pairs)


# ======================================================================================
# Rank deficiency on the reduced system
# ======================================================================================


def kept_columns(gram: np.ndarray, R: np.ndarray, n_obs: int) -> np.ndarray:
    """Columns of X lme4 keeps: `design._aliased_columns` from X'X and M (M'M = X'X)."""
    p = gram.shape[0] - 1
    if p == 0:
        return np.arange(0)
    if clearly_full_rank(gram[:p, :p], n_obs):
        return np.arange(p)
    rank, pivot = dqrdc2_rank(R)
    return pivot[:rank]


def drop_columns(cp: CrossProducts, keep: np.ndarray) -> CrossProducts:
    cols = np.r_[keep, cp.n_fixed]
    return CrossProducts(
        cp.n_obs, len(keep), cp.zz, [np.ascontiguousarray(z[:, :, cols]) for z in cp.zxy],
        np.ascontiguousarray(cp.gram[np.ix_(cols, cols)]), cp.pairs)
