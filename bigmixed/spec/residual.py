"""Residual structures as the user gives them (nlme's corAR1 / corCAR1 / corCompSymm /
varIdent) and the mapping between their unconstrained parameters and nlme's scale.
Their weighted cross-products are bigmixed.crossprods.residual_weights."""
from __future__ import annotations

from dataclasses import dataclass
import numpy as np

# ---- what the user writes ------------------------------------------------------------------


@dataclass(frozen=True)
class AR1:
    """First-order autoregressive residuals within each series (nlme's corAR1 / corCAR1).

    time : column of the measurement times; rows of a series are ordered by it, and two rows
        of a series t apart have residual correlation phi^|t| (integer gaps in visit numbers
        are therefore handled as nlme's corAR1 does).
    group : column (or tuple of columns) identifying a series, e.g. "patient". Every grouping
        factor of the random effects must be constant within a series (as nlme requires).
    continuous : None (default) uses corAR1 (-1 < phi < 1) when all times are integers and
        corCAR1 (0 <= phi < 1, continuous time) otherwise; True or False forces one.
    """

    time: str
    group: str | tuple
    continuous: bool | None = None

    def describe(self) -> str:
        kind = "continuous AR(1)" if self.continuous else "AR(1)"
        return f"{kind} within {group_label(self.group)}, ordered by {self.time!r}"


@dataclass(frozen=True)
class CompoundSymmetry:
    """Equal residual correlation rho between any two rows of a series (nlme's corCompSymm)."""

    group: str | tuple

    def describe(self) -> str:
        return f"compound symmetry within {group_label(self.group)}"


@dataclass(frozen=True)
class VarIdent:
    """A separate residual SD per stratum of `by` (nlme's varIdent(form = ~ 1 | by)).

    Estimated as ratios delta_s to the reference stratum (`reference`, default the first level
    in sorted order, or the first category of a categorical column), whose SD is sigma.
    """

    by: str
    reference: object = None

    def describe(self) -> str:
        return f"separate residual SD per level of {self.by!r}"


def group_label(group) -> str:
    return repr(group) if isinstance(group, str) else "/".join(group)


def group_columns(group) -> tuple:
    return (group,) if isinstance(group, str) else tuple(group)


def residual_columns(residual, variance) -> list:
    """(column, role) pairs the structures read from the data (see build_design's extra_columns)."""
    check_specs(residual, variance)
    out = []
    if isinstance(residual, AR1):
        out.append((residual.time, "AR(1) time"))
    if residual is not None:
        out += [(g, "residual series") for g in group_columns(residual.group)]
    if variance is not None:
        out.append((variance.by, "varIdent stratum"))
    return list(dict.fromkeys(out))


def check_specs(residual, variance) -> None:
    if residual is not None and not isinstance(residual, (AR1, CompoundSymmetry)):
        raise TypeError(f"residual must be bm.AR1(...) or bm.CompoundSymmetry(...), not {residual!r}")
    if variance is not None and not isinstance(variance, VarIdent):
        raise TypeError(f"variance must be bm.VarIdent(...), not {variance!r}")
    if isinstance(residual, CompoundSymmetry) and variance is not None:
        raise NotImplementedError(
            "compound symmetry combined with VarIdent is not supported yet (its series sums would "
            "depend on the strata); use AR1 + VarIdent, or either structure alone")


class ResidualParameters:
    """The parameters of a residual structure: nlme's scale <-> the unconstrained eta the
    optimizer sees, and their report. Enough for a saved fit (bigmixed.io) without the data."""

    residual = None
    variance = None
    kind = None  # None (VarIdent alone), "ar1", "car1" or "cs"
    rho_lower = -1.0  # compound symmetry: rho > -1 / (largest series - 1)

    @classmethod
    def from_meta(cls, meta: dict) -> "ResidualParameters":
        """Rebuild from `to_meta()` (a saved fit)."""
        self = cls.__new__(cls)
        res, var = meta.get("residual"), meta.get("variance")
        if res is not None:
            group = res["group"] if isinstance(res["group"], str) else tuple(res["group"])
            self.residual = (AR1(res["time"], group, res["continuous"]) if res["type"] == "AR1"
                             else CompoundSymmetry(group))
        if var is not None:
            self.variance = VarIdent(var["by"], var.get("reference"))
        self.kind = meta["kind"]
        self.rho_lower = float(meta["rho_lower"])
        self.names = list(meta["names"])
        self.stratum_levels = np.array(meta["stratum_levels"], dtype=object)
        self.eta0 = np.zeros(len(self.names))
        return self

    def to_meta(self) -> dict:
        """JSON-able description (the estimates are saved separately, as eta)."""
        res = self.residual
        out = {"kind": self.kind, "rho_lower": float(self.rho_lower), "names": list(self.names),
               "stratum_levels": [str(v) for v in self.stratum_levels], "residual": None,
               "variance": None}
        if res is not None:
            group = res.group if isinstance(res.group, str) else list(res.group)
            out["residual"] = ({"type": "AR1", "time": res.time, "group": group,
                                "continuous": bool(res.continuous)} if isinstance(res, AR1)
                               else {"type": "CompoundSymmetry", "group": group})
        if self.variance is not None:
            ref = self.variance.reference
            out["variance"] = {"type": "VarIdent", "by": self.variance.by,
                               "reference": None if ref is None else str(ref)}
        return out

    # ---- parameters --------------------------------------------------------------------------
    @property
    def n_params(self) -> int:
        return len(self.eta0)

    def _split(self, eta):
        eta = np.asarray(eta, dtype=np.float64)
        if self.kind is None:
            return None, np.concatenate(([1.0], np.exp(eta)))
        return eta[0], np.concatenate(([1.0], np.exp(eta[1:])))

    def correlation(self, eta) -> float | None:
        e = self._split(eta)[0]
        if self.kind == "ar1":
            return float(np.tanh(0.5 * e))
        if self.kind == "car1":
            return float(logistic(e))
        if self.kind == "cs":
            return float(self.rho_lower + (1.0 - self.rho_lower) * logistic(e))
        return None

    def natural(self, eta) -> np.ndarray:
        """Parameters on nlme's reporting scale, in the order of `names`."""
        corr = self.correlation(eta)
        delta = self._split(eta)[1]
        return np.array(([corr] if corr is not None else []) + list(delta[1:]))

    def to_eta(self, natural) -> np.ndarray:
        """Inverse of `natural`."""
        natural = np.asarray(natural, dtype=np.float64)
        out = []
        i = 0
        if self.kind is not None:
            c = natural[0]
            if self.kind == "ar1":
                out.append(2.0 * np.arctanh(c))
            elif self.kind == "car1":
                out.append(logit(c))
            else:
                out.append(logit((c - self.rho_lower) / (1.0 - self.rho_lower)))
            i = 1
        out += list(np.log(natural[i:]))
        return np.array(out)

    def stratum_sd_ratio(self, eta) -> np.ndarray:
        """(n_strata,) residual SD ratios to the reference stratum (1 for it)."""
        return self._split(eta)[1]

    def describe(self, eta) -> list:
        """Lines for the summary (nlme's 'Correlation Structure' / 'Variance function')."""
        lines = []
        vals = self.natural(eta)
        if self.kind is not None:
            label = {"ar1": "AR(1)", "car1": "Continuous AR(1)", "cs": "Compound symmetry"}[self.kind]
            lines.append(f"Correlation structure: {label}, within {group_label(self.residual.group)}"
                         + (f", time {self.residual.time!r}" if self.kind != "cs" else ""))
            lines.append(f"  {self.names[0]}: {vals[0]:.6g}")
        if self.variance is not None:
            lines.append(f"Variance function: different residual SD per level of {self.variance.by!r}"
                         f" (ratios to {self.stratum_levels[0]!r})")
            ratios = [1.0] + list(vals[-(len(self.stratum_levels) - 1):] if len(self.stratum_levels) > 1 else [])
            lines.append("  " + "  ".join(f"{lv}: {v:.6g}" for lv, v in zip(self.stratum_levels, ratios)))
        return lines


def logistic(x):
    return 1.0 / (1.0 + np.exp(-x))


def logit(p):
    return float(np.log(p / (1.0 - p)))
