"""Random-effects structure: grouping factors, lme4's term order, and theta <-> Lambda.

formula -> design -> **structure** -> cross-products -> factor -> objective -> optimizer -> results.

lme4 orders random-effects terms by decreasing number of levels (stable) and lists theta as the
lower triangle of each term's relative covariance factor T_k, column by column. Terms that share
a grouping factor (e.g. the two halves of `(1 + x || g)`) are merged into one factor here whose T
is block diagonal, so one grouping factor always gives a block-diagonal system.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .design import RandomTerm


@dataclass
class GroupingFactor:
    """All random effects attached to one grouping factor.

    Z is the horizontal concatenation of its terms' columns (None when the factor carries only
    an intercept: Z is then implicitly a column of ones and never stored).
    """

    group: str
    levels: np.ndarray
    codes: np.ndarray
    Z: np.ndarray | None
    column_names: list
    term_ids: list  # indices (user order) of the terms merged here
    term_offsets: list  # first column of each merged term within this factor

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def n_columns(self) -> int:
        return len(self.column_names)

    @property
    def unit_z(self) -> bool:
        return self.Z is None


def lme4_term_order(n_levels: list) -> list:
    """lme4's mkReTrms: reorder only if some term has more levels than the one before it,
    and then by rev(order(n_levels)), which puts tied terms in reverse order."""
    K = len(n_levels)
    if any(n_levels[i + 1] > n_levels[i] for i in range(K - 1)):
        return sorted(range(K), key=lambda k: (n_levels[k], k))[::-1]
    return list(range(K))


class RandomEffectsStructure:
    """Maps theta (lme4's order) to the per-factor T matrices and back.

    Attributes
    ----------
    terms : list[RandomTerm], user order
    term_order : list[int], terms in lme4's order (see `lme4_term_order`)
    factors : list[GroupingFactor], in lme4's order of first appearance
    theta_factor, theta_row, theta_col : (n_theta,) int arrays, where each theta element lives
    lower_bounds : (n_theta,) float, 0 on diagonal elements, -inf elsewhere
    theta_names : list[str], lme4-style names ("doctor.(Intercept)", "doctor.time.(Intercept)")
    """

    def __init__(self, terms: list[RandomTerm]):
        if not terms:
            from ..errors import FormulaError

            raise FormulaError("the formula has no random-effects term such as (1 | group); "
                               "for a model without random effects use ordinary least squares")
        self.terms = terms
        self.term_order = lme4_term_order([t.n_levels for t in terms])
        self.factors: list[GroupingFactor] = []
        index_of_group: dict[str, int] = {}
        self.term_factor = [0] * len(terms)
        for k in self.term_order:
            t = terms[k]
            if t.group not in index_of_group:
                f = GroupingFactor(t.group, t.levels, t.codes, None, [], [], [])
                f._z_parts = []
                index_of_group[t.group] = len(self.factors)
                self.factors.append(f)
            f = self.factors[index_of_group[t.group]]
            f.term_ids.append(k)
            f.term_offsets.append(len(f.column_names))
            f.column_names.extend(t.column_names)
            f._z_parts.append(t)
            self.term_factor[k] = index_of_group[t.group]
        for f in self.factors:
            parts = f._z_parts
            del f._z_parts
            if len(parts) == 1 and list(parts[0].column_names) == ["(Intercept)"]:
                f.Z = None
            elif len(parts) == 1:
                f.Z = np.ascontiguousarray(parts[0].Z, dtype=np.float64)
            else:
                f.Z = np.ascontiguousarray(np.hstack([p.Z for p in parts]), dtype=np.float64)

        fac, row, col, names = [], [], [], []
        for k in self.term_order:
            t = terms[k]
            fi = self.term_factor[k]
            off = self.factors[fi].term_offsets[self.factors[fi].term_ids.index(k)]
            pk = t.n_columns
            for j in range(pk):
                for i in range(j, pk):
                    fac.append(fi)
                    row.append(off + i)
                    col.append(off + j)
                    if i == j:
                        names.append(f"{t.group}.{t.column_names[i]}")
                    else:
                        names.append(f"{t.group}.{t.column_names[i]}.{t.column_names[j]}")
        self.theta_factor = np.array(fac, dtype=np.int64)
        self.theta_row = np.array(row, dtype=np.int64)
        self.theta_col = np.array(col, dtype=np.int64)
        self.theta_names = names
        self.lower_bounds = np.where(self.theta_row == self.theta_col, 0.0, -np.inf)
        self.P_of = np.array([f.n_columns for f in self.factors], dtype=np.int64)
        self.P_max = int(self.P_of.max())

    @property
    def n_theta(self) -> int:
        return len(self.theta_row)

    def initial_theta(self) -> np.ndarray:
        """lme4's start: identity relative covariance (1 on diagonals, 0 elsewhere)."""
        return np.where(self.theta_row == self.theta_col, 1.0, 0.0)

    def T_all(self, theta: np.ndarray) -> np.ndarray:
        """(n_factors, P_max, P_max) lower-triangular T of each factor, zero padded."""
        T = np.zeros((len(self.factors), self.P_max, self.P_max))
        T[self.theta_factor, self.theta_row, self.theta_col] = theta
        return T

    def T_of(self, theta: np.ndarray, f: int) -> np.ndarray:
        P = self.P_of[f]
        return np.ascontiguousarray(self.T_all(theta)[f, :P, :P])

    def multi_column_diagonal(self) -> np.ndarray:
        """Mask of theta: diagonal elements of terms with two or more columns."""
        n_cols = np.array([self.terms[k].n_columns for k in self.term_order])
        term_of_theta = np.repeat(np.arange(len(n_cols)), n_cols * (n_cols + 1) // 2)
        return (self.theta_row == self.theta_col) & (n_cols[term_of_theta] >= 2)

    def is_singular(self, theta: np.ndarray, tol: float = 1e-4) -> bool:
        """lme4's isSingular: a diagonal element of some T at (or within tol of) zero."""
        diag = self.theta_row == self.theta_col
        return bool(np.any(theta[diag] < tol))
