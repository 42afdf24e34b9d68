"""Encoding the data's columns: covariate kinds, factor levels in R's order, integer
group codes (interactions of grouping columns included), and the same encodings
applied to new data."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any
import numpy as np
import pandas as pd
from ..errors import (
    DataTypeError,
    DesignError,
)
from .rlabels import r_label_scalar, r_labels

# --------------------------------------------------------------------------------------
# Columns: classification, R level labels, vectorised factorisation


@dataclass
class VarInfo:
    name: str
    kind: str  # "numeric" | "factor"
    levels: Any = None  # np.ndarray[object] of R labels, in level order (factor only)
    ordered: bool = False


def classify_column(s: pd.Series, name: str) -> str:
    dt = s.dtype
    if isinstance(dt, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(dt):
        return "factor"
    if pd.api.types.is_complex_dtype(dt):
        raise DataTypeError(f"column {name!r} is complex ({dt}); bigmixed needs real numbers")
    if pd.api.types.is_numeric_dtype(dt):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(dt) or pd.api.types.is_timedelta64_dtype(dt):
        raise DataTypeError(
            f"column {name!r} has dtype {dt}; convert dates to numbers (or strings for a "
            "factor) before fitting"
        )
    if dt == object:
        inferred = pd.api.types.infer_dtype(s, skipna=True)
        if inferred in ("integer", "floating", "mixed-integer-float", "decimal"):
            return "numeric"
    return "factor"


def numeric_column(s: pd.Series, name: str) -> np.ndarray:
    try:
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as e:
        raise DataTypeError(f"column {name!r} cannot be converted to numbers: {e}") from e


def factorize(s: pd.Series):
    """-> (integer codes with -1 for NA, labels object ndarray in level order, ordered).

    Level order: Categorical categories (unused dropped), else sorted unique values.
    Vectorised (pandas hashing + a sort of the unique values only). The codes are intp, except
    for a Categorical with every category used and no missing value: then its own codes
    (int8..int32, not copied; a read-only view).
    """
    dt = s.dtype
    if isinstance(dt, pd.CategoricalDtype):
        from ..kernels.columns import count_levels

        raw = np.asarray(s.array.codes)  # the Categorical's own (read-only) codes, not a copy
        cats = dt.categories
        counts = np.zeros(len(cats), dtype=np.int64)
        n_missing = count_levels(raw, counts)  # one read: no mask, no intp copy
        used = counts > 0
        codes = raw
        if n_missing or not used.all():
            codes = np.asarray(raw, dtype=np.intp)
            if not used.all():
                remap = np.cumsum(used) - 1
                codes = np.where(codes >= 0, remap[codes], -1)
                cats = cats[used]
        labels = r_labels(cats)
        ordered = bool(dt.ordered)
    elif _dense_int_range(s):
        # integers in a modest range: a counting pass instead of hashing (10x faster)
        v = s.to_numpy()
        lo = int(v.min())
        off = v - lo if lo != 0 else v
        present = np.bincount(off) > 0
        remap = np.cumsum(present) - 1
        codes = remap[off].astype(np.intp, copy=False)
        labels = r_labels(np.flatnonzero(present) + lo)
        ordered = False
    else:
        try:
            codes, uniques = pd.factorize(s, sort=True, use_na_sentinel=True)
        except TypeError:  # mixed types that do not sort: compare as R's character
            s = s.map(r_label_scalar, na_action="ignore")
            codes, uniques = pd.factorize(s, sort=True, use_na_sentinel=True)
        codes = np.asarray(codes, dtype=np.intp)
        labels = r_labels(uniques)
        ordered = False
    # distinct values with the same label (1 and "1"; 0.1 and 0.1+1e-17) are one level in
    # R, where factor() matches on as.character(): merge them (first = lowest stays). The
    # categories of a string dtype are distinct strings, their own labels: nothing to merge.
    distinct = isinstance(dt, pd.CategoricalDtype) and isinstance(dt.categories.dtype, pd.StringDtype)
    if len(labels) and not distinct and len(pd.unique(labels)) != len(labels):
        lab_codes, lab_uniques = pd.factorize(labels)
        codes = np.where(codes >= 0, lab_codes[codes], -1)
        labels = np.asarray(lab_uniques, dtype=object)
    return codes, labels, ordered


def _dense_int_range(s: pd.Series) -> bool:
    dt = s.dtype
    if not (isinstance(dt, np.dtype) and dt.kind in "iu") or len(s) == 0:
        return False
    v = s.to_numpy()
    lo, hi = int(v.min()), int(v.max())
    return hi - lo < max(4 * len(v), 1 << 20)


def as_categorical(codes: np.ndarray, labels: np.ndarray, ordered: bool) -> pd.Categorical:
    return pd.Categorical.from_codes(codes, categories=pd.Index(labels, dtype=object), ordered=ordered)


def code_dtype(n_levels: int):
    return np.int32 if n_levels < 2**31 else np.int64


# --------------------------------------------------------------------------------------
# Grouping factors


@dataclass
class GroupSpec:
    """How a grouping expression maps labels to codes (for new data)."""

    group_vars: tuple
    var_levels: list  # per variable: pd.Index of its labels (training level order)
    step_keys: list  # per interaction step k >= 1: sorted unique int64 keys
    levels: np.ndarray  # final labels

    def codes_for(self, var_codes: list) -> np.ndarray:
        """var_codes: per variable, codes into var_levels (-1 = unseen/NA) -> group codes."""
        cur = np.asarray(var_codes[0], dtype=np.int64)
        for k in range(1, len(var_codes)):
            ck = np.asarray(var_codes[k], dtype=np.int64)
            bad = (cur < 0) | (ck < 0)
            keys = cur * len(self.var_levels[k]) + ck
            uk = self.step_keys[k - 1]
            pos = np.searchsorted(uk, keys)
            pos_c = np.minimum(pos, len(uk) - 1)
            hit = (~bad) & (uk[pos_c] == keys)
            cur = np.where(hit, pos_c, -1)
        return cur.astype(code_dtype(len(self.levels)), copy=False)


def _join_labels(labels: list, codes: list) -> np.ndarray:
    """Level labels of an interaction: ":".join(labels[k][codes[k]]) element-wise.

    Vectorised over numpy object arrays; the ":" is appended to the (few) labels of each
    variable before they are gathered, so only one string concatenation per level and part.
    """
    last = len(labels) - 1
    out = None
    for k, (lab, c) in enumerate(zip(labels, codes)):
        lab = np.asarray(lab, dtype=object)
        if k < last:
            lab = lab + ":"
        piece = lab[c]
        out = piece if out is None else out + piece
    return np.asarray(out, dtype=object)


def group_codes(group_vars: tuple, var_factors: dict):
    """var_factors[v] = (codes, labels) of the kept rows -> (codes, levels, GroupSpec)."""
    codes0, labels0 = var_factors[group_vars[0]]
    if len(group_vars) == 1:
        levels = np.asarray(labels0, dtype=object)
        spec = GroupSpec(
            group_vars=tuple(group_vars),
            var_levels=[pd.Index(levels, dtype=object)],
            step_keys=[],
            levels=levels,
        )
        return _kernel_codes(codes0, len(levels)), levels, spec
    cur = np.asarray(codes0, dtype=np.int64)
    step_keys = []
    for v in group_vars[1:]:
        ck, lk = var_factors[v]
        keys = cur * len(lk) + np.asarray(ck, dtype=np.int64)
        inv, uniq = pd.factorize(keys, sort=True)
        step_keys.append(np.asarray(uniq, dtype=np.int64))
        cur = np.asarray(inv, dtype=np.int64)
    if step_keys:
        # decode the final unique keys into per-variable level codes
        per_var = [None] * len(group_vars)
        idx = np.arange(len(step_keys[-1]), dtype=np.int64)
        for k in range(len(group_vars) - 1, 0, -1):
            nk = len(var_factors[group_vars[k]][1])
            key = step_keys[k - 1][idx]
            per_var[k] = key % nk
            idx = key // nk
        per_var[0] = idx
        levels = _join_labels([var_factors[v][1] for v in group_vars], per_var)
    else:
        levels = np.asarray(labels0, dtype=object)
    spec = GroupSpec(
        group_vars=tuple(group_vars),
        var_levels=[pd.Index(var_factors[v][1], dtype=object) for v in group_vars],
        step_keys=step_keys,
        levels=levels,
    )
    return _kernel_codes(cur, len(levels)), levels, spec


def _kernel_codes(codes, n_levels: int) -> np.ndarray:
    """Group codes as the kernels take them: int32 (int64 from 2**31 levels), writable -- a
    categorical's own codes are a read-only view, a type Numba would compile kernels anew for."""
    out = np.asarray(codes).astype(code_dtype(n_levels), copy=False)
    return out if out.flags.writeable else out.copy()


# --------------------------------------------------------------------------------------
# Column bookkeeping








def prepare_covariate(s: pd.Series, name: str):
    """kept-row Series -> (values for formulaic, VarInfo)."""
    kind = classify_column(s, name)
    if kind == "numeric":
        return numeric_column(s, name), VarInfo(name, "numeric")
    codes, labels, ordered = factorize(s)
    return as_categorical(codes, labels, ordered), VarInfo(name, "factor", labels, ordered)


def covariate_for_newdata(s: pd.Series, info: VarInfo):
    name = info.name
    if info.kind == "numeric":
        if classify_column(s, name) != "numeric":
            raise DataTypeError(f"column {name!r} was numeric when fitting but is {s.dtype} in the new data")
        return numeric_column(s, name)
    codes, labels, _ = factorize(s)
    idx = pd.Index(info.levels, dtype=object)
    pos = idx.get_indexer(pd.Index(labels, dtype=object))
    if (pos < 0).any():
        new = [str(x) for x in np.asarray(labels, dtype=object)[pos < 0][:5]]
        raise DesignError(f"factor {name!r} has new levels {', '.join(new)} in the new data")
    # a missing value gets the first level here; the caller blanks those rows to NaN
    new_codes = np.where(codes >= 0, pos[np.maximum(codes, 0)], 0) if len(pos) else np.zeros_like(codes)
    return as_categorical(new_codes, info.levels, info.ordered)
