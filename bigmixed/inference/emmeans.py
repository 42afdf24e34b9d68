"""Estimated marginal means and their pairwise contrasts, as R's emmeans computes them for
an lmer fit.

    emm = bm.emmeans(fit, "arm")            # or "~ arm", ["arm", "sex"]; ddf="kenward-roger"
    emm.emmeans                             # arm, emmean, SE, df, lower.CL, upper.CL
    emm.pairs()                             # contrast, estimate, SE, df, t.ratio, p.value (Tukey)
    emm.pairs(adjust="bonferroni", infer=True)  # with adjusted confidence limits
    bm.emmeans(fit, "arm", by="sex")        # or "~ arm | sex": means and pairs within each sex
    bm.emmeans(fit, "arm", contrasts="pairwise").contrasts   # the same table as .pairs()

The reference grid (emmeans' ``ref_grid``): every combination of the levels of the factors of
the fixed part; every numeric covariate at its mean over the rows used, except those with at
most ``cov_keep`` (default 2, emmeans' ``cov.keep = "2"``) distinct values, which take each of
their values like a factor's levels (a 0/1 covariate such as ``sex`` gives the rows sex = 0 and
sex = 1). ``at={"age": [40, 60]}`` fixes values. The model matrix of the grid is made by the
fit's own encoding (contrasts, transforms such as ``scale(x)`` with their stored state).

A marginal mean of a level of the specs is the equal-weight average of the grid's predictions
over the other variables (emmeans' default ``weights = "equal"``): its linear function is
the average row L of the grid's model matrix, the estimate L beta, the SE sqrt(L V L'), and
the df are those of the t test of L beta (``ddf``: "satterthwaite" -- lmerTest's, emmeans'
``lmer.df = "satterthwaite"`` -- or "kenward-roger", where V is KR's adjusted covariance, as
in emmeans; "asymptotic": z). Pairwise contrasts are differences of the marginal means
("a - b" for every a listed before b; within each ``by`` group), each with its own df; p-values adjusted by "tukey"
(the default for pairwise comparisons, the studentized range over the family of means, as
emmeans), "bonferroni", "holm", "sidak" or "none". Tukey's confidence limits use the
studentized range quantile; Bonferroni's the t quantile at 1 - alpha / (2 m).

The numeric covariates' means need the covariate's values: a plain numeric column of the fixed
part is read from X; a covariate used only inside a transform (``log(wbc)``) needs ``data=``
(the frame the model was fitted to; the rows used are taken from it).
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

ADJUST = ("tukey", "bonferroni", "holm", "sidak", "none")


def _names(s: str) -> list:
    parts = [p.strip() for p in s.replace("*", "+").replace(":", "+").split("+")]
    return [p for p in parts if p]


def _specs_list(specs) -> tuple:
    """specs -> (names, by names): "arm", "~ arm", "~ arm | sex", ["arm", "sex"]."""
    if isinstance(specs, str):
        s = specs.strip()
        if s.startswith("~"):
            s = s[1:]
        main, _, by = s.partition("|")
        return _names(main), _names(by)
    return [str(x) for x in specs], []


def _design_variables(fit):
    fs = fit.design.fixed_spec
    if fs is None:
        raise ValueError("emmeans needs the fit's fixed-effects encoding (a fit from a design)")
    names = list(fs.fixed_vars) if fs.fixed_vars is not None else list(fs.variables)
    return fs, [(v, fs.variables[v]) for v in names if v in fs.variables]


def _covariate_values(fit, name, data):
    if name in fit.fixed_names:
        j = list(fit.fixed_names).index(name)
        return np.asarray(fit.design.X[:, j], dtype=np.float64)
    if data is None:
        raise ValueError(f"the covariate {name!r} enters the model only through a transformation: "
                         "pass data= (the frame the model was fitted to) for its mean")
    idx = fit.design.row_index
    col = data[name]
    try:
        vals = col.loc[idx]
    except (KeyError, TypeError):
        vals = col.iloc[np.asarray(idx)]
    return np.asarray(vals, dtype=np.float64)


def reference_grid(fit, *, at: dict | None = None, cov_keep: int = 2, data=None) -> pd.DataFrame:
    """emmeans' ``ref_grid(fit)``: one row per combination (the first variable varying
    fastest, as R's expand.grid), factors as Categoricals with the fit's levels."""
    fs, variables = _design_variables(fit)
    at = dict(at or {})
    values, kinds = {}, {}
    for v, info in variables:
        if v in at:
            vals = list(np.atleast_1d(at[v]))
            kinds[v] = info.kind
        elif info.kind == "factor":
            vals = list(info.levels)
            kinds[v] = "factor"
        else:
            x = _covariate_values(fit, v, data)
            u = np.unique(x)
            vals = list(u) if len(u) <= cov_keep else [float(np.mean(x))]
            kinds[v] = "numeric"
        values[v] = vals
    names = [v for v, _ in variables]
    combos = list(itertools.product(*[values[v] for v in reversed(names)]))
    frame = {}
    for k, v in enumerate(reversed(names)):
        col = [c[k] for c in combos]
        info = fs.variables[v]
        if kinds[v] == "factor":
            frame[v] = pd.Categorical([str(x) for x in col] if info.levels is not None else col,
                                      categories=list(info.levels), ordered=info.ordered)
        else:
            frame[v] = np.asarray(col, dtype=np.float64)
    grid = pd.DataFrame({v: frame[v] for v in names}) if names else pd.DataFrame(index=[0])
    return grid


def _grid_matrix(fit, grid) -> np.ndarray:
    fs = fit.design.fixed_spec
    X = fs.matrix.matrix(grid)
    if X.shape[1] != len(fit.beta):
        raise ValueError("the reference grid's model matrix does not match the fit's coefficients")
    return X


class EMMeans:
    """Marginal means of a fit over a reference grid (see the module docstring)."""

    def __init__(self, fit, specs, *, by=None, ddf="satterthwaite", level=0.95, at=None,
                 cov_keep=2, data=None, contrasts=None, adjust=None):
        from .satterthwaite import DDF_LABEL, resolve_ddf

        self.fit = fit
        main, by_spec = _specs_list(specs)
        if by is not None:
            by_spec = by_spec + ([by] if isinstance(by, str) else [str(b) for b in by])
        self.by = [b for b in by_spec if b not in main]
        self.n_spec = len(main)
        self.specs = main + self.by  # the by variables vary slowest
        self.ddf = resolve_ddf(ddf)
        self.level = float(level)
        grid = reference_grid(fit, at=at, cov_keep=cov_keep, data=data)
        unknown = [s for s in self.specs if s not in grid.columns]
        if unknown:
            raise ValueError(f"{unknown} are not variables of the fixed part "
                             f"(variables: {list(grid.columns)})")
        self.grid = grid
        Xg = _grid_matrix(fit, grid)
        keys = [tuple(grid[s].iloc[i] for s in self.specs) for i in range(len(grid))]
        levels = list(dict.fromkeys(keys))  # first-fastest order, as emmeans lists them
        levels = sorted(levels, key=lambda k: tuple(
            reversed([self._pos(s, x) for s, x in zip(self.specs, k)])))
        self.levels = levels
        L = np.array([Xg[[i for i, k in enumerate(keys) if k == lev]].mean(axis=0)
                      for lev in levels])
        self.L = L
        others = [c for c in grid.columns if c not in self.specs and len(pd.unique(grid[c])) > 1]
        self.messages = []
        if others:
            self.messages.append("Results are averaged over the levels of: " + ", ".join(others))
        self.messages.append(f"Degrees-of-freedom method: {DDF_LABEL[self.ddf]}")
        self.messages.append(f"Confidence level used: {self.level:g}")
        self.emmeans = self._table()
        self.contrasts = None
        if contrasts is not None:
            if str(contrasts).lower() not in ("pairwise", "revpairwise"):
                raise ValueError(f"contrasts must be 'pairwise' or 'revpairwise', not {contrasts!r}")
            self.contrasts = self.pairs(adjust=adjust or "tukey",
                                        reverse=str(contrasts).lower() == "revpairwise")

    def _pos(self, spec, x):
        col = self.grid[spec]
        if isinstance(col.dtype, pd.CategoricalDtype):
            return list(col.cat.categories).index(x)
        return float(x)

    def _rows(self, L):
        from .satterthwaite import contest1d

        return [contest1d(self.fit, l, ddf=self.ddf) for l in L]

    def _label(self, lev) -> str:
        return " ".join(str(x) for x in lev)

    def _table(self) -> pd.DataFrame:
        from scipy import stats

        rows = self._rows(self.L)
        out = pd.DataFrame({s: [lev[k] for lev in self.levels] for k, s in enumerate(self.specs)})
        out["emmean"] = [r["estimate"] for r in rows]
        out["SE"] = [r["std_error"] for r in rows]
        out["df"] = [r["df"] for r in rows]
        q = [stats.t.ppf(0.5 + self.level / 2, d) if np.isfinite(d) else
             stats.norm.ppf(0.5 + self.level / 2) for d in out["df"]]
        out["lower.CL"] = out["emmean"] - np.array(q) * out["SE"]
        out["upper.CL"] = out["emmean"] + np.array(q) * out["SE"]
        out.attrs["messages"] = list(self.messages)
        return out

    def pairs(self, adjust: str = "tukey", infer=False, reverse: bool = False) -> pd.DataFrame:
        """emmeans' ``pairs(emm)``: every difference "a - b" (a before b; reverse: "b - a"),
        estimate, SE, df, t.ratio, p.value adjusted by `adjust`; with infer=True also
        lower.CL and upper.CL (adjusted likewise)."""
        adjust = str(adjust).lower()
        if adjust not in ADJUST:
            raise ValueError(f"adjust must be one of {ADJUST}, not {adjust!r}")
        ns = self.n_spec
        groups: dict = {}
        for i, lev in enumerate(self.levels):
            groups.setdefault(lev[ns:], []).append(i)
        tables = []
        for g, idx in groups.items():
            t = self._pairs_of(idx, adjust, infer, reverse)
            for b, v in zip(self.by, g):
                t[b] = v
            tables.append(t)
        out = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
        if self.by:
            out = out[["contrast"] + self.by + [c for c in out.columns
                                                if c not in ["contrast"] + self.by]]
        k = len(next(iter(groups.values())))
        m = k * (k - 1) // 2
        label = {"tukey": f"tukey method for comparing a family of {k} estimates",
                 "bonferroni": f"bonferroni method for {m} tests",
                 "holm": f"holm method for {m} tests",
                 "sidak": f"sidak method for {m} tests", "none": None}[adjust]
        if adjust == "tukey" and k <= 2:
            label = None
        msgs = [x for x in self.messages if not x.startswith("Confidence")]
        if label:
            msgs.append(f"P value adjustment: {label}")
        out.attrs["messages"] = msgs
        out.attrs["adjust"] = adjust
        return out

    def _pairs_of(self, idx, adjust, infer, reverse) -> pd.DataFrame:
        from scipy import stats

        ns = self.n_spec
        k = len(idx)
        pairs = [(idx[a], idx[b]) for a in range(k) for b in range(a + 1, k)]
        if reverse:
            pairs = [(j, i) for i, j in pairs]
        C = np.array([self.L[i] - self.L[j] for i, j in pairs]).reshape(len(pairs), -1)
        rows = self._rows(C)
        out = pd.DataFrame({"contrast": [f"{self._label(self.levels[i][:ns])} - "
                                         f"{self._label(self.levels[j][:ns])}" for i, j in pairs]})
        est = np.array([r["estimate"] for r in rows])
        se = np.array([r["std_error"] for r in rows])
        df = np.array([r["df"] for r in rows])
        t = est / se
        m = len(pairs)
        p_raw = np.array([2 * (stats.t.sf(abs(x), d) if np.isfinite(d) else stats.norm.sf(abs(x)))
                          for x, d in zip(t, df)])
        if adjust == "tukey" and k > 2:
            p = np.array([_ptukey_sf(abs(x) * math.sqrt(2), k, d) for x, d in zip(t, df)])
        elif adjust == "bonferroni":
            p = np.minimum(1.0, p_raw * m)
        elif adjust == "sidak":
            p = 1 - (1 - p_raw) ** m
        elif adjust == "holm":
            order = np.argsort(p_raw)
            adj = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p_raw[order]))
            p = np.empty(m)
            p[order] = adj
        else:
            p = p_raw
        out["estimate"], out["SE"], out["df"] = est, se, df
        if infer:
            alpha = 1 - self.level
            if adjust == "tukey" and k > 2:
                q = np.array([_qtukey(self.level, k, d) / math.sqrt(2) for d in df])
            elif adjust == "bonferroni":
                q = np.array([_qt(1 - alpha / (2 * m), d) for d in df])
            elif adjust == "sidak":
                q = np.array([_qt(0.5 + 0.5 * (1 - alpha) ** (1 / m), d) for d in df])
            else:
                q = np.array([_qt(1 - alpha / 2, d) for d in df])
            out["lower.CL"], out["upper.CL"] = est - q * se, est + q * se
        out["t.ratio"] = t
        out["p.value"] = p
        return out

    def __repr__(self) -> str:
        with pd.option_context("display.width", 120):
            return self.emmeans.to_string(index=False) + "\n\n" + "\n".join(self.messages)


def _qt(p, d):
    from scipy import stats

    return stats.t.ppf(p, d) if np.isfinite(d) else stats.norm.ppf(p)


def _ptukey_sf(q, k, d):
    from scipy import stats

    return float(stats.studentized_range.sf(q, k, d if np.isfinite(d) else 1e6))


def _qtukey(p, k, d):
    from scipy import stats

    return float(stats.studentized_range.ppf(p, k, d if np.isfinite(d) else 1e6))


def emmeans(fit, specs, *, by=None, ddf: str = "satterthwaite", level: float = 0.95,
            at: dict | None = None, cov_keep: int = 2, data=None, contrasts: str | None = None,
            adjust: str | None = None) -> EMMeans:
    """R's ``emmeans(fit, specs, lmer.df = ddf)``: marginal means over the reference grid with
    equal weights; ``contrasts="pairwise"`` also computes ``.contrasts`` (= ``.pairs(adjust)``,
    Tukey by default). See bigmixed.inference.emmeans."""
    return EMMeans(fit, specs, by=by, ddf=ddf, level=level, at=at, cov_keep=cov_keep, data=data,
                   contrasts=contrasts, adjust=adjust)


def pairs(emm: EMMeans, adjust: str = "tukey", infer=False, reverse: bool = False) -> pd.DataFrame:
    """emmeans' ``pairs()``: the pairwise differences of the marginal means `emm`."""
    return emm.pairs(adjust=adjust, infer=infer, reverse=reverse)
