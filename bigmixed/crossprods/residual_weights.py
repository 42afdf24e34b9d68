"""Residual covariance structures: nlme's corAR1 / corCAR1, corCompSymm and varIdent.

formula -> design -> structure -> cross-products -> **residual weights** -> factor -> objective.

The model becomes y ~ N(X beta, sigma^2 (Z Lambda Lambda' Z' + R0(eta))) with R0 block diagonal
by series (the rows of one patient) and diagonal across strata (varIdent). Whitening by R0^{-1/2}
turns it into the ordinary model on whitened rows, so the engine needs only

    the R0^{-1}-weighted cross-products [Z X y]' R0^{-1} [Z X y]  and  log det R0,

which enters the -2 log-likelihood as an additive term. Whitening keeps each row in its series,
and every grouping factor is constant within a series (checked, as nlme requires), so the
weighted cross-products keep the per-level block pattern.

None of this touches the rows per evaluation: for each structure the weighted cross-products are
a fixed linear combination, with coefficients that depend on eta, of the ordinary cross-products
of a few derived row sets computed once (kernels/residual.py builds the derived rows).

AR(1) (Markov in time; r_k = phi^(t_k - t_{k-1}) between consecutive rows of a series, s_k the
varIdent stratum of row k with SD ratio delta_s). Row k whitens to
    w_k = (a_k / delta_{s_k} - r_k a_{k-1} / delta_{s_{k-1}}) / sqrt(1 - r_k^2)
(w_k = a_k / delta_{s_k} for the first row of a series), and a' R0^{-1} b = sum_k w_k(a) w_k(b).
Grouping the rows by key = (gap, s_k, s_{k-1}), with u = 1 / (1 - r^2) and the sums
    CUR = sum a_k b_k,  PRV = sum a_{k-1} b_{k-1},  DIF = sum (a_k - a_{k-1})(b_k - b_{k-1}),
each key contributes
    u (1/delta_k^2 - r/(delta_k delta_p)) CUR + u (r^2/delta_p^2 - r/(delta_k delta_p)) PRV
    + u r/(delta_k delta_p) DIF,
and the first rows of each stratum FIRST / delta_s^2 (DIF instead of a lag sum keeps the
combination well conditioned when phi is near 1: the intercept's DIF is exactly 0).
log det R0 = sum_s 2 n_s log delta_s + sum_keys n_key log(1 - r_key^2). With many distinct keys
(continuous times: corCAR1) the whitened rows are built afresh per evaluation instead, in one
pass over the rows.

Compound symmetry, Corr = (1 - rho) I + rho 11' within a series of size n:
    a' C^{-1} b = [a'b - rho / (1 + (n - 1) rho) (1'a)(1'b)] / (1 - rho),
    log det C = (n - 1) log(1 - rho) + log(1 + (n - 1) rho),
so the derived sets are the rows of series with >= 2 rows, the rows of single-row series,
and the series sums grouped by series size.

varIdent alone: one set per stratum, weight 1 / delta_s^2.

Parameters are optimized unconstrained, as nlme does: phi = tanh(eta / 2) (corAR1),
phi = logistic(eta) (corCAR1), rho = lo + (1 - lo) logistic(eta) with lo = -1/(n_max - 1)
(corCompSymm), delta_s = exp(eta_s) for every stratum but the reference (delta = 1).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from types import SimpleNamespace
import numpy as np
import pandas as pd
from .crossprod import CrossProducts, PairBlocks
from ..errors import DataTypeError, ResidualStructureError
from ..kernels import n_row_chunks
from ..kernels.residual import (
    ar1_whitening_coefficients,
    combine_rows,
    segment_sums,
    whitened_crossprod,
    whitened_pair_crossprod,
)
from ..spec.structure import GroupingFactor
from ..spec.residual import AR1, CompoundSymmetry, ResidualParameters, VarIdent, check_specs, group_label, logit
from ..spec.residual import group_columns

# Above this many derived sets, whitened rows are built per evaluation instead (one pass).
MAX_COMPONENTS = 48
_ONES = np.ones((0, 1))  # stands for an intercept-only Z (the kernels' unit flag)


# ---- the structure bound to the data ----------------------------------------------------------


@dataclass
class _RowSet:
    """Derived rows: coef_cur * row `rows` + coef_prev * row `prev` (kernels.combine_rows), or,
    with `starts`, sums of the rows `rows[starts[s]:starts[s+1]]` (kernels.segment_sums)."""

    rows: np.ndarray
    prev: np.ndarray | None = None
    coef_cur: np.ndarray | None = None
    coef_prev: np.ndarray | None = None
    starts: np.ndarray | None = None

    def level_rows(self) -> np.ndarray:
        """A raw row of each derived row (its levels are the derived row's levels)."""
        return self.rows if self.starts is None else self.rows[self.starts[:-1]]

    def apply(self, A: np.ndarray) -> np.ndarray:
        A = np.ascontiguousarray(A, dtype=np.float64)
        if A.ndim == 1:
            return self.apply(A[:, None])[:, 0]
        if self.starts is not None:
            out = np.empty((len(self.starts) - 1, A.shape[1]))
            segment_sums(self.rows, self.starts, A, out)
            return out
        out = np.empty((len(self.rows), A.shape[1]))
        combine_rows(self.rows, self.prev, self.coef_cur, self.coef_prev, A, out)
        return out

    def ones(self) -> np.ndarray:
        """The derived rows of a column of ones."""
        if self.starts is not None:
            return np.diff(self.starts).astype(np.float64)
        return self.coef_cur + np.where(self.prev >= 0, self.coef_prev, 0.0)


def _subset(rows) -> _RowSet:
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    m = len(rows)
    return _RowSet(rows, np.full(m, -1, dtype=np.int64), np.ones(m), np.zeros(m))


class ResidualModel(ResidualParameters):
    """Residual structure bound to the model's rows; maps eta to weighted cross-products.

    Attributes
    ----------
    names : list[str], natural-scale parameter names ("Phi", "Rho", "arm=b", ...)
    eta0 : (k,) starting values (phi = 0 or nlme's 0.2 for corCAR1, rho = 0, ratios 1)
    """

    def __init__(self, residual, variance, design, structure, crossprods, prior_weights=None):
        check_specs(residual, variance)
        if prior_weights is not None and residual is not None:
            raise NotImplementedError(
                "weights= with a correlation structure (residual=bm.AR1 / bm.CompoundSymmetry) "
                "is not supported yet; weights= with variance=bm.VarIdent(...) alone is")
        # prior weights (bm.lmm(weights=)): residual variance sigma^2 delta_s^2 / w_i; with
        # varIdent alone every derived set is a subset of the rows, weighted as in memory
        self._w = None if prior_weights is None else np.ascontiguousarray(prior_weights, dtype=np.float64)
        self.residual = residual
        self.variance = variance
        self.structure = structure
        self.n_obs = len(design.y)
        self._X = design.X
        self._y = design.y
        self._pairs = crossprods.pairs  # the pattern every derived set is put on
        extra = design.extra
        n = self.n_obs

        # strata (varIdent)
        if variance is not None:
            self.strata, self.stratum_levels = _strata(extra[variance.by], variance)
        else:
            self.strata, self.stratum_levels = np.zeros(n, dtype=np.int64), np.array(["all"], dtype=object)
        S = len(self.stratum_levels)
        self.stratum_counts = np.bincount(self.strata, minlength=S)

        self.kind = None
        self.names: list = []
        eta0: list = []
        if isinstance(residual, AR1):
            series = _series_codes(extra, residual.group)
            time = _numeric_time(extra[residual.time], residual.time)
            integer = bool(np.all(time == np.round(time)))
            continuous = (not integer) if residual.continuous is None else bool(residual.continuous)
            if not continuous and not integer:
                raise ResidualStructureError(
                    f"AR1(continuous=False) needs integer times, but {residual.time!r} has "
                    "non-integer values; leave continuous=None for corCAR1 on these times")
            self.residual = replace(residual, continuous=continuous)
            self.kind = "car1" if continuous else "ar1"
            self.names.append("Phi")
            eta0.append(logit(0.2) if continuous else 0.0)  # nlme's starting values
            self._setup_ar1(series, time, residual)
        elif isinstance(residual, CompoundSymmetry):
            series = _series_codes(extra, residual.group)
            self.kind = "cs"
            self.names.append("Rho")
            self._setup_cs(series, residual)
            eta0.append(logit(-self.rho_lower / (1.0 - self.rho_lower)))
        else:
            self._setup_strata_only()
        if variance is not None:
            self.names += [f"{variance.by}={lv}" for lv in self.stratum_levels[1:]]
            eta0 += [0.0] * (S - 1)
        self.eta0 = np.array(eta0, dtype=np.float64)
        self._work = None

    # ---- set-up per structure ------------------------------------------------------------
    def _check_nested(self, order, same_series, label):
        """Every grouping factor must be constant within a series (consecutive rows in `order`)."""
        for f in self.structure.factors:
            c = f.codes[order]
            bad = np.flatnonzero(same_series & (c[1:] != c[:-1]))
            if len(bad):
                raise ResidualStructureError(
                    f"the residual series ({label}) must be nested within every grouping factor, "
                    f"but grouping factor {f.group!r} changes within a series "
                    f"({len(bad)} time(s), e.g. between rows {order[bad[0]]} and {order[bad[0] + 1]}"
                    " of the model frame); nlme has the same requirement")

    def _setup_ar1(self, series, time, spec):
        order = np.lexsort((time, series))
        s_o = series[order]
        same = s_o[1:] == s_o[:-1]
        gaps = np.diff(time[order])
        label = group_label(spec.group)
        dup = np.flatnonzero(same & (gaps == 0))
        if len(dup):
            r = order[dup[0] + 1]
            raise ResidualStructureError(
                f"AR(1) times must be unique within a series: {spec.time!r} repeats the value "
                f"{time[r]:g} in series {label} ({len(dup)} repeat(s), e.g. row {r} of the model "
                "frame); nlme: 'covariate must have unique values within groups'")
        self._check_nested(order, same, label)
        if not same.any():
            raise ResidualStructureError(
                f"AR(1) within {label}: every series has a single row, so the correlation is "
                "not defined")
        self._order, self._same = order, same
        cur = order[1:][same]
        prev = order[:-1][same]
        first = np.setdiff1d(order, cur, assume_unique=True)
        self.n_series = len(first)
        self._first = first
        self._cur, self._prev = cur, prev
        self._gap = gaps[same]
        s = self.strata
        # keys (gap, stratum of the row, stratum of its predecessor)
        key_gap, key_inv = np.unique(self._gap, return_inverse=True)
        S = len(self.stratum_levels)
        full = (key_inv.astype(np.int64) * S + s[cur]) * S + s[prev]
        keys, inv = np.unique(full, return_inverse=True)
        n_sets = S + 3 * len(keys)
        self.per_evaluation = n_sets > MAX_COMPONENTS
        if self.per_evaluation:
            return
        self.key_gap = key_gap[keys // (S * S)]
        self.key_s = (keys // S) % S
        self.key_sp = keys % S
        self.key_count = np.bincount(inv, minlength=len(keys))
        sets = [_subset(np.sort(first[s[first] == j])) for j in range(S)]
        for k in range(len(keys)):
            sel = np.flatnonzero(inv == k)
            c, p = cur[sel], prev[sel]
            m = len(sel)
            sets.append(_subset(c))
            sets.append(_subset(p))
            sets.append(_RowSet(c, p, np.ones(m), -np.ones(m)))
        self._sets = sets

    def _setup_cs(self, series, spec):
        order = np.argsort(series, kind="stable")
        s_o = series[order]
        same = s_o[1:] == s_o[:-1]
        self._check_nested(order, same, group_label(spec.group))
        sizes = np.bincount(series)
        sizes = sizes[sizes > 0]
        if sizes.max() < 2:
            raise ResidualStructureError(
                f"compound symmetry within {group_label(spec.group)}: every series has one row, "
                "so the correlation is not defined")
        self.n_series = len(sizes)
        self.rho_lower = -1.0 / (sizes.max() - 1.0)
        size_of_row = np.bincount(series)[series]
        starts_all = np.concatenate(([0], np.flatnonzero(~same) + 1, [len(order)]))
        seg_size = np.diff(starts_all)
        sets = [_subset(np.flatnonzero(size_of_row == 1)), _subset(np.flatnonzero(size_of_row >= 2))]
        self.cs_sizes = np.unique(seg_size[seg_size >= 2])
        self.cs_size_count = np.array([np.sum(seg_size == m) for m in self.cs_sizes])
        for m in self.cs_sizes:
            segs = np.flatnonzero(seg_size == m)
            rows = order[np.repeat(starts_all[segs], m) + np.tile(np.arange(m), len(segs))]
            starts = np.arange(len(segs) + 1, dtype=np.int64) * m
            sets.append(_RowSet(np.ascontiguousarray(rows, dtype=np.int64), starts=starts))
        self._sets = sets
        self._cs_series = series
        self.per_evaluation = False

    def _setup_strata_only(self):
        S = len(self.stratum_levels)
        self._sets = [_subset(np.flatnonzero(self.strata == j)) for j in range(S)]
        self.per_evaluation = False

    # ---- weights ------------------------------------------------------------------------------
    def coefficients(self, eta):
        """(weights of the derived sets, log det R0) at eta (component path)."""
        corr = self.correlation(eta)
        delta = self.stratum_sd_ratio(eta)
        inv2 = 1.0 / delta**2
        logdet = float(np.sum(self.stratum_counts * 2.0 * np.log(delta)))
        if self.kind in ("ar1", "car1"):
            r = _power(corr, self.key_gap)
            one_m = 1.0 - r * r
            u = 1.0 / one_m
            dk, dp = delta[self.key_s], delta[self.key_sp]
            cross = u * r / (dk * dp)
            w = np.empty(len(inv2) + 3 * len(r))
            w[:len(inv2)] = inv2
            w[len(inv2)::3] = u / dk**2 - cross
            w[len(inv2) + 1::3] = u * r * r / dp**2 - cross
            w[len(inv2) + 2::3] = cross
            logdet += float(np.sum(self.key_count * np.log(one_m)))
            return w, logdet
        if self.kind == "cs":
            rho = corr
            m = self.cs_sizes.astype(np.float64)
            w = np.concatenate(([1.0, 1.0 / (1.0 - rho)], -rho / ((1.0 - rho) * (1.0 + (m - 1.0) * rho))))
            logdet += float(np.sum(self.cs_size_count * ((m - 1.0) * np.log1p(-rho) + np.log1p((m - 1.0) * rho))))
            return w, logdet
        return inv2, logdet

    # ---- cross-products ------------------------------------------------------------------------
    def attach(self, basis, work_cp: CrossProducts) -> None:
        """Compute the derived sets' cross-products once (component path), in the model's
        working basis; `work_cp` is the model's CrossProducts whose arrays `load` overwrites."""
        self._basis = basis
        self._work = work_cp
        targets = [*work_cp.zz, *work_cp.zxy, work_cp.gram, *(pb.blocks for pb in work_cp.pairs)]
        if not all(a.flags.c_contiguous and a.flags.writeable for a in targets):
            # load() writes through reshape(-1) views: a copy would be written instead, silently
            raise ValueError("the working cross-products must be writable C-contiguous arrays")
        if self.per_evaluation:
            self._setup_whitening(basis)
            return
        cps = [basis.apply(self._derived_crossprods(rs)) for rs in self._sets]
        del self._sets  # row indices are no longer needed
        K = len(cps)
        self._stack_zz = [np.stack([c.zz[f] for c in cps]).reshape(K, -1) for f in range(len(work_cp.zz))]
        self._stack_zxy = [np.stack([c.zxy[f] for c in cps]).reshape(K, -1) for f in range(len(work_cp.zxy))]
        self._stack_gram = np.stack([c.gram for c in cps]).reshape(K, -1)
        self._stack_pairs = [np.stack([c.pairs[i].blocks for c in cps]).reshape(K, -1)
                             for i in range(len(work_cp.pairs))]

    def load(self, eta) -> float:
        """Write the R0(eta)^{-1}-weighted cross-products into the model's working arrays;
        return log det R0(eta)."""
        w = self._work
        if self.per_evaluation:
            return self._load_whitened(eta)
        c, logdet = self.coefficients(eta)
        for f in range(len(w.zz)):
            np.dot(c, self._stack_zz[f], out=w.zz[f].reshape(-1))
            np.dot(c, self._stack_zxy[f], out=w.zxy[f].reshape(-1))
        np.dot(c, self._stack_gram, out=w.gram.reshape(-1))
        for i in range(len(w.pairs)):
            np.dot(c, self._stack_pairs[i], out=w.pairs[i].blocks.reshape(-1))
        return logdet

    def _setup_whitening(self, basis):
        """What one whitening pass per evaluation needs, with the rows copied once into series
        order (sequential reads; gathering rows in random order was 10x slower): [X y] in the
        working basis, Z and the level codes of every factor, each row's index on every pair
        list, and the gap to the predecessor of each row (0 for the first row of a series)."""
        order, same = self._order, self._same
        n = len(order)
        self._wh_rows = np.arange(n, dtype=np.int64)
        self._wh_prev = np.where(np.concatenate(([False], same)), self._wh_rows - 1, -1)
        self._wh_coef_cur, self._wh_coef_prev = np.empty(n), np.empty(n)
        self._wh_gap = np.zeros(n)
        self._wh_gap[1:][same] = self._gap
        self._wh_strata = self.strata[order]
        self._wh_xy = np.ascontiguousarray((np.column_stack((self._X, self._y)) @ basis.matrix())[order])
        self._wh_codes = [np.ascontiguousarray(f.codes[order]) for f in self.structure.factors]
        self._wh_z = [_ONES if f.unit_z else np.ascontiguousarray(f.Z[order]) for f in self.structure.factors]
        self._wh_pair_ids = []
        for full in self._pairs:
            cb, ca = self._wh_codes[full.row_factor], self._wh_codes[full.col_factor]
            n_col = self.structure.factors[full.col_factor].n_levels
            key = cb.astype(np.int64) * n_col + ca.astype(np.int64)
            full_key = full.row_levels * n_col + full.col_levels
            self._wh_pair_ids.append(np.searchsorted(full_key, key).astype(np.int64))

    def _load_whitened(self, eta) -> float:
        """Whitened cross-products at eta, one Numba pass over the rows per grouping factor
        (many distinct gaps, e.g. corCAR1 on irregular times), into the working arrays."""
        delta = self.stratum_sd_ratio(eta)
        rows, prev, xy = self._wh_rows, self._wh_prev, self._wh_xy
        coef_cur, coef_prev = self._wh_coef_cur, self._wh_coef_prev
        log_one_m = ar1_whitening_coefficients(prev, self._wh_gap, self._wh_strata, delta,
                                               self.correlation(eta), coef_cur, coef_prev)
        logdet = float(np.sum(self.stratum_counts * 2.0 * np.log(delta)) + log_one_m)
        w = self._work
        m = xy.shape[1]
        chunks = n_row_chunks(len(rows))
        factors = self.structure.factors
        for fi, f in enumerate(factors):
            P = f.n_columns
            zz = np.zeros((chunks, f.n_levels, P, P))
            zxy = np.zeros((chunks, f.n_levels, P, m))
            gram = np.zeros((chunks, m, m))
            whitened_crossprod(rows, prev, coef_cur, coef_prev, self._wh_codes[fi], self._wh_z[fi],
                               f.unit_z, xy, fi == 0, zz, zxy, gram)
            _sum_chunks_into(zz, w.zz[fi])
            _sum_chunks_into(zxy, w.zxy[fi])
            if fi == 0:
                _sum_chunks_into(gram, w.gram)
        for full, ids, out in zip(self._pairs, self._wh_pair_ids, w.pairs):
            b, a = full.row_factor, full.col_factor
            out.blocks[...] = 0.0
            whitened_pair_crossprod(ids, rows, prev, coef_cur, coef_prev, self._wh_z[b],
                                    factors[b].unit_z, self._wh_z[a], factors[a].unit_z, out.blocks)
        return logdet

    def _derived_crossprods(self, rs: _RowSet) -> CrossProducts:
        """Ordinary cross-products of the derived rows, on the full model's pair pattern."""
        lr = rs.level_rows()
        factors = []
        for f in self.structure.factors:
            Z = rs.ones()[:, None] if f.unit_z else rs.apply(f.Z)
            factors.append(GroupingFactor(f.group, f.levels, f.codes[lr], Z, f.column_names,
                                          f.term_ids, f.term_offsets))
        view = SimpleNamespace(factors=factors)
        if self._w is not None:  # varIdent alone: rs is a subset of the rows (coefficient 1)
            cp = CrossProducts.compute(rs.apply(self._X), rs.apply(self._y), view,
                                       np.ascontiguousarray(self._w[rs.rows]))
        else:
            cp = CrossProducts.compute(rs.apply(self._X), rs.apply(self._y), view)
        cp.pairs = [_on_pattern(pb, full, self.structure) for pb, full in zip(cp.pairs, self._pairs)]
        return cp

    # ---- simulation --------------------------------------------------------------------------
    def simulate_errors(self, eta, sigma: float, rng) -> np.ndarray:
        """(n,) residuals drawn from N(0, sigma^2 R0(eta)), in the model's row order."""
        n = self.n_obs
        delta = self.stratum_sd_ratio(eta)
        z = rng.standard_normal(n)
        e = z.copy()
        if self.kind in ("ar1", "car1"):
            r = _power(self.correlation(eta), self._gap)
            # series are short: walk position by position, all series at once
            step_of = np.full(n, -1, dtype=np.int64)
            step_of[self._cur] = np.arange(len(self._cur))
            # rank of each row within its series: follow predecessors
            prev_of = np.full(n, -1, dtype=np.int64)
            prev_of[self._cur] = self._prev
            frontier = self._first
            next_of = np.full(n, -1, dtype=np.int64)
            next_of[self._prev] = self._cur
            while len(frontier):
                nxt = next_of[frontier]
                frontier = nxt[nxt >= 0]
                if len(frontier):
                    k = step_of[frontier]
                    e[frontier] = r[k] * e[prev_of[frontier]] + np.sqrt(1.0 - r[k] ** 2) * z[frontier]
        elif self.kind == "cs":
            rho = self.correlation(eta)
            series = self._cs_series
            sizes = np.bincount(series).astype(np.float64)
            m = sizes[series]
            alpha = (-np.sqrt(1.0 - rho) + np.sqrt(1.0 - rho + m * rho)) / m
            sums = np.bincount(series, weights=z)[series]
            e = np.sqrt(1.0 - rho) * z + alpha * sums
        if self._w is not None:  # prior weights: sigma^2 delta_s^2 / w_i
            return sigma * delta[self.strata] * e / np.sqrt(self._w)
        return sigma * delta[self.strata] * e


def _sum_chunks_into(parts: np.ndarray, out: np.ndarray) -> None:
    """out = sum of the per-chunk partial results, in chunk order (deterministic)."""
    out[...] = parts[0]
    for c in range(1, parts.shape[0]):
        out += parts[c]


def _on_pattern(pb: PairBlocks, full: PairBlocks, structure) -> PairBlocks:
    """Put a derived set's co-occurrence blocks on the full data's pair list (a superset)."""
    n_col = structure.factors[full.col_factor].n_levels
    full_key = full.row_levels * n_col + full.col_levels
    pos = np.searchsorted(full_key, pb.row_levels * n_col + pb.col_levels)
    blocks = np.zeros_like(full.blocks)
    blocks[pos] = pb.blocks
    return PairBlocks(full.row_factor, full.col_factor, full.row_levels, full.col_levels, blocks)


def _series_codes(extra, group) -> np.ndarray:
    cols = group_columns(group)
    if len(cols) == 1:
        codes, _ = pd.factorize(extra[cols[0]], sort=True)
        return codes.astype(np.int64)
    frame = pd.DataFrame({c: extra[c] for c in cols})
    return frame.groupby(list(cols), sort=True, observed=True).ngroup().to_numpy().astype(np.int64)


def _numeric_time(s: pd.Series, name: str) -> np.ndarray:
    if not (pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)):
        raise DataTypeError(f"the AR(1) time column {name!r} must be numeric, not {s.dtype}")
    t = s.to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(t)):
        raise DataTypeError(f"the AR(1) time column {name!r} has infinite values")
    return t


def _strata(s: pd.Series, spec: VarIdent):
    if isinstance(s.dtype, pd.CategoricalDtype):
        levels = np.array(s.cat.categories, dtype=object)
        codes = s.cat.codes.to_numpy().astype(np.int64)
        used = np.unique(codes)
        levels, codes = levels[used], np.searchsorted(used, codes)
    else:
        codes, levels = pd.factorize(s, sort=True)
        levels = np.array(levels, dtype=object)
    if spec.reference is not None:
        hit = np.flatnonzero([lv == spec.reference or str(lv) == str(spec.reference) for lv in levels])
        if len(hit) == 0:
            raise ResidualStructureError(
                f"VarIdent reference {spec.reference!r} is not a level of {spec.by!r} "
                f"(levels: {', '.join(map(str, levels[:8]))})")
        order = np.concatenate((hit[:1], np.delete(np.arange(len(levels)), hit[0])))
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        levels, codes = levels[order], rank[codes]
    if len(levels) < 2:
        raise ResidualStructureError(f"VarIdent: {spec.by!r} has a single level ({levels[0]!r}) in the "
                                     "rows used, so there is nothing to compare")
    return np.asarray(codes, dtype=np.int64), levels


def _power(base: float, exponent: np.ndarray) -> np.ndarray:
    # a negative phi (corAR1) only meets integer gaps, for which pow is exact in sign
    return np.power(base, exponent)
