"""Model comparison: likelihood-ratio tests between nested fits, as lme4's ``anova(m0, m1, ...)``.

    import bigmixed as bm
    table = bm.anova(m0, m1)          # DataFrame; print(bm.format_anova(table))

Like lme4 (``refit = TRUE``), fits made by REML are refitted by maximum likelihood first, and
the table then compares ML deviances; the table says so (``attrs["heading"]``,
``attrs["refitted"]``). With ``refit=False`` REML criteria are compared as they are, which is
only meaningful when the fixed effects are identical (a warning says so otherwise).

Variance components on the boundary. The naive chi2(Df) p-value (lme4's ``Pr(>Chisq)``) is
conservative when the bigger model adds a variance, whose null value 0 is on the boundary of
the parameter space. When the two models have the same fixed effects and the bigger one adds
exactly one random effect -- a new term with one column, or one more column in an existing
correlated term with q columns -- the likelihood-ratio statistic has the mixture null
distribution 0.5 chi2(q) + 0.5 chi2(q + 1) (Self & Liang 1987; Stram & Lee 1994; q = 0: a point
mass at 0 and chi2(1), so p = 0.5 P(chi2_1 > stat)). That p-value is in the column
``Pr(>Chisq) boundary``; ``null`` names the distribution used and ``note`` says why the mixture
does not apply when it does not.
"""
from __future__ import annotations

import math
import warnings as _warnings

import numpy as np
import pandas as pd

from ..results.base import FittedModel
from ..warnings import BigmixedWarning

NAIVE = "Pr(>Chisq)"
BOUNDARY = "Pr(>Chisq) boundary"


def refit_ml(fit):
    """The same model refitted by maximum likelihood (lme4's ``refitML``), started at the REML
    theta: a new, independent fit (``fit.model.refit(reml=False)``); the cross-products are
    reused, no new pass over the rows. An ML fit is returned as it is."""
    if not fit.reml:
        return fit
    model = fit._require_model("an ML refit")
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", BigmixedWarning)
        return model.refit(reml=False, theta0=np.asarray(fit.optimizer_params, dtype=np.float64))


def _random_terms(fit):
    """Covariance blocks of the random effects: [(group, frozenset(column names))]."""
    return [(t.group, frozenset(t.column_names)) for t in fit.structure.terms]


def _residual_key(fit):
    """The residual structure's specification (None, None without one)."""
    r = fit.residual
    return (None, None) if r is None else (r.residual, r.variance)


def _same_fixed(a, b) -> bool:
    if list(a.fixed_names) != list(b.fixed_names):
        return False
    try:
        return bool(np.array_equal(a.rows.X, b.rows.X))
    except AttributeError:  # rows not in memory: the names are all there is to compare
        return True


def boundary_mixture(small, big):
    """(q, None) if `big` adds one random effect to `small` -- the null is 0.5 chi2(q) +
    0.5 chi2(q+1) -- else (None, reason)."""
    if not _same_fixed(small, big):
        return None, "fixed effects differ: naive chi2 only"
    if _residual_key(small) != _residual_key(big):
        return None, ("residual structures differ; their parameters (phi, rho, SD ratios) have "
                      "null values inside the parameter space: naive chi2")
    ts, tb = _random_terms(small), _random_terms(big)
    rest_s, rest_b = list(ts), list(tb)
    for t in ts:
        if t in rest_b:
            rest_b.remove(t)
            rest_s.remove(t)
    if not rest_s and len(rest_b) == 1 and len(rest_b[0][1]) == 1:
        q = 0
    elif (len(rest_s) == 1 and len(rest_b) == 1 and rest_s[0][0] == rest_b[0][0]
          and rest_s[0][1] < rest_b[0][1] and len(rest_b[0][1]) == len(rest_s[0][1]) + 1):
        q = len(rest_s[0][1])
    else:
        if not rest_s and not rest_b:
            return None, "same random effects: naive chi2 only"
        if rest_s and not all(any(g == h and c <= d for h, d in tb) for g, c in rest_s):
            return None, "random effects not nested: naive chi2 only"
        cols = lambda terms: {(g, c) for g, cs in terms for c in cs}  # noqa: E731
        if cols(ts) == cols(tb):
            return None, "the bigger model adds covariances only (no variance on the boundary): naive chi2"
        return None, "the bigger model adds more than one random effect (or only covariances): naive chi2 only"
    expected = small.n_optimizer_params + q + 1
    if big.n_optimizer_params != expected:
        return None, "parameter counts do not match one added random effect: naive chi2 only"
    return q, None


def mixture_pvalue(stat: float, q: int) -> float:
    """P(X > stat) for X ~ 0.5 chi2(q) + 0.5 chi2(q + 1) (chi2(0) is a point mass at 0)."""
    from scipy import stats

    if not np.isfinite(stat):
        return np.nan
    upper = stats.chi2.sf(stat, q + 1)
    lower = stats.chi2.sf(stat, q) if q > 0 else float(stat <= 0)
    return 0.5 * lower + 0.5 * upper


def anova(*fits, refit: bool = True, names=None) -> pd.DataFrame:
    """Likelihood-ratio tests between fits of nested models on the same data (lme4's anova).

    Parameters
    ----------
    *fits : LMMResults (two or more)
    refit : bool
        Refit REML fits by ML first (lme4's default, ``refit = TRUE``).
    names : list of str, optional
        Row labels (default "model1", "model2", ... in the order given).

    Returns
    -------
    DataFrame indexed by model name, ordered by number of parameters: npar (len(theta) + p + 1),
    AIC, BIC, logLik, deviance (-2 logLik), Chisq, Df, ``Pr(>Chisq)`` (naive chi2(Df), as lme4),
    ``Pr(>Chisq) boundary`` (the 0.5 chi2(q) + 0.5 chi2(q+1) mixture when the row adds one random
    effect to the row above, NaN otherwise), ``null`` and ``note``. ``attrs``: heading, formulas,
    refitted (names of the models refitted by ML), criterion ("ML" or "REML").
    """
    from scipy import stats

    if len(fits) == 1 and isinstance(fits[0], (list, tuple)):
        fits = tuple(fits[0])
    if len(fits) < 2:
        raise ValueError("anova() compares two or more fits; for F tests of the fixed-effects "
                         "terms of one fit use fit.anova_terms()")
    for f in fits:
        if not isinstance(f, FittedModel):
            raise TypeError(f"anova() takes fitted models (LMMResults), got {type(f).__name__}")
    names = [f"model{i + 1}" for i in range(len(fits))] if names is None else [str(n) for n in names]
    if len(names) != len(fits) or len(set(names)) != len(names):
        raise ValueError("names must give one distinct name per model")
    nobs = {f.nobs for f in fits}
    if len(nobs) > 1:
        raise ValueError(f"models were not all fitted to the same size of dataset (nobs {sorted(nobs)})")
    y0 = fits[0].model.design.y
    for f in fits[1:]:
        if not np.array_equal(f.model.design.y, y0):
            raise ValueError("models were not all fitted to the same data (the responses differ)")

    heading = []
    refitted = []
    any_reml = any(f.reml for f in fits)
    if refit:
        if any_reml:
            refitted = [n for n, f in zip(names, fits) if f.reml]
            heading.append("refitting model(s) with ML (instead of REML): " + ", ".join(refitted))
        used = [refit_ml(f) for f in fits]
        criterion = "ML"
    else:
        used = list(fits)
        if any_reml and not all(f.reml for f in fits):
            _warnings.warn("some models fit with REML, some not: their criteria are not comparable",
                           BigmixedWarning, stacklevel=2)
        criterion = "REML" if all(f.reml for f in fits) else "mixed"
        if all(f.reml for f in fits) and not all(_same_fixed(fits[0], f) for f in fits[1:]):
            _warnings.warn("REML criteria of models with different fixed effects are not comparable; "
                           "use refit=True (ML)", BigmixedWarning, stacklevel=2)

    npar = np.array([f.n_params for f in used])
    order = np.argsort(npar, kind="stable")
    used = [used[i] for i in order]
    orig = [fits[i] for i in order]
    labels = [names[i] for i in order]
    llk = np.array([f.llf for f in used])
    npar = npar[order]
    n = used[0].nobs
    rows = []
    for i, f in enumerate(used):
        row = {
            "npar": int(npar[i]),
            "AIC": -2 * llk[i] + 2 * npar[i],
            "BIC": -2 * llk[i] + npar[i] * math.log(n),
            "logLik": llk[i],
            "deviance": -2 * llk[i],
            "Chisq": np.nan, "Df": np.nan, NAIVE: np.nan, BOUNDARY: np.nan, "null": "", "note": "",
        }
        if i > 0:
            chisq = 2 * max(0.0, llk[i] - llk[i - 1])
            df = int(npar[i] - npar[i - 1])
            row["Chisq"], row["Df"] = chisq, df
            row[NAIVE] = stats.chi2.sf(chisq, df) if df > 0 else np.nan
            q, why = boundary_mixture(orig[i - 1], orig[i])
            if q is not None and df == q + 1:
                row[BOUNDARY] = mixture_pvalue(chisq, q)
                row["null"] = ("0.5 chi2(0) + 0.5 chi2(1)" if q == 0
                               else f"0.5 chi2({q}) + 0.5 chi2({q + 1})")
                row["note"] = "one added random effect: variance on the boundary (Self & Liang; Stram & Lee)"
            else:
                row["null"] = f"chi2({df})" if df > 0 else ""
                row["note"] = why or ""
        rows.append(row)
    out = pd.DataFrame(rows, index=pd.Index(labels, name="model"))
    out["Df"] = out["Df"].astype("Int64")
    forms = [f"{lab}: {f.formula}" for lab, f in zip(labels, orig)]
    heading += ["Models:"] + forms
    heading.append(f"{NAIVE}: naive chi2(Df) p-value (lme4's); {BOUNDARY}: boundary-corrected "
                   "mixture when one random effect is added")
    out.attrs["heading"] = heading
    out.attrs["formulas"] = dict(zip(labels, [f.formula for f in orig]))
    out.attrs["refitted"] = refitted
    out.attrs["criterion"] = criterion
    return out


def format_anova(table: pd.DataFrame) -> str:
    """lme4-style text of an `anova()` table, heading included."""
    lines = list(table.attrs.get("heading", []))
    cols = ["npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", NAIVE, BOUNDARY]
    shown = table[[c for c in cols if c in table.columns]].copy()
    # p-values as R's print.anova prints them: format.pval(digits = 4) of the column
    from ..io.rformat import format_pval

    pcols = {c: format_pval([None if pd.isna(v) else float(v) for v in shown[c]], digits=4,
                            na_form="")
             for c in (NAIVE, BOUNDARY) if c in shown.columns}

    def fmt(v, c, k):
        if c in pcols:
            return pcols[c][k]
        if pd.isna(v):
            return ""
        if c in ("npar", "Df"):
            return str(int(v))
        return f"{v:.4f}" if c == "Chisq" else f"{v:.2f}"

    body = [[str(i)] + [fmt(r[c], c, k) for c in shown.columns]
            for k, (i, r) in enumerate(shown.iterrows())]
    header = [""] + list(shown.columns)
    widths = [max(len(h), *(len(b[k]) for b in body)) for k, h in enumerate(header)]
    lines.append(" ".join(h.ljust(widths[0]) if k == 0 else h.rjust(widths[k]) for k, h in enumerate(header)))
    for b in body:
        lines.append(" ".join(x.ljust(widths[0]) if k == 0 else x.rjust(widths[k]) for k, x in enumerate(b)))
    for i, r in table.iterrows():
        if r.get("note"):
            lines.append(f"{i}: {r['note']}" + (f" (null: {r['null']})" if r.get("null") else ""))
    return "\n".join(lines)
