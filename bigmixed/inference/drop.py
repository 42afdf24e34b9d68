"""Single-term deletions: ``drop1`` (an LRT per fixed term, as lme4's ``drop1(fit, test =
"Chisq")``) and ``ranova`` (an LRT per random term, as lmerTest's ``ranova``).

    bm.drop1(fit)     # or fit.drop1(): npar, AIC, LRT, Pr(Chi) per droppable fixed term
    bm.ranova(fit)    # or fit.ranova(): npar, logLik, AIC, LRT, Df, Pr(>Chisq), Pr(>Chisq) boundary

drop1. Every reduced model is fitted by maximum likelihood (a REML fit is first refitted by
ML, as ``anova`` does); the reduced models are derived from the fit's design (its columns of
X minus the term's: no new pass over the data, the same rows), each fitted from the default
start as ``update(fit, . ~ . - term)`` would be. Only terms that no other term contains are
dropped (R's ``drop.scope``: with ``age * arm``, ``age:arm`` but not ``age`` or ``arm``).
Columns: ``npar`` the number of parameters removed (R's ``npar``/``Df``), ``AIC`` of the
model without the term (``<none>``: the full model), ``LRT`` = deviance(reduced) -
deviance(full), ``Pr(Chi)`` its chi-square(npar) p-value.

ranova. Each random term of the formula (after lme4's expansion of ``||`` and ``/``) is
reduced as lmerTest reduces it: each term of its left-hand side other than the intercept
is removed in turn (``(1 + time | g)`` -> ``(1 | g)``, row label ``time in (1 + time | g)``;
``(0 + time | g)`` -> no term, row label ``time in (0 + time | g)``); an intercept-only term
is removed (row label ``(1 | g)``). ``reduce_terms=False`` removes every term whole. The reduced models keep the fit's criterion (REML fits compare REML
likelihoods: the fixed effects are the same). When no random term is left, the reduced model
is the linear model of the fixed effects, with R's ``logLik(lm(...), REML =)``.

Two p-values:

* ``Pr(>Chisq)`` -- lmerTest's: the naive chi-square(Df) of the LRT (conservative when the
  removed variance is on the boundary of the parameter space).
* ``Pr(>Chisq) boundary`` -- the 0.5 chi2(q) + 0.5 chi2(q + 1) mixture (Self & Liang 1987;
  Stram & Lee 1994) when the reduction removes exactly one random effect: a whole term with
  one column (q = 0), or one column of a correlated term with q + 1 columns (its variance and
  its q covariances: Df = q + 1). NaN otherwise, with the reason in ``note``
  (``bigmixed.inference.compare.boundary_mixture`` decides).
"""
from __future__ import annotations

import math
import warnings as _warnings

import numpy as np
import pandas as pd

from ..warnings import BigmixedWarning
from .compare import BOUNDARY, NAIVE, boundary_mixture, mixture_pvalue, refit_ml
from .fixed_terms import fixed_terms
from .update import model_from_design, reduced_design, require_rows_in_memory

LOG_2PI = math.log(2.0 * math.pi)


def _quiet_fit(model, **kw):
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", BigmixedWarning)
        return model.fit(**kw)


def droppable_terms(fit) -> list:
    """The fixed terms R's ``drop.scope`` allows to drop: those no other term contains."""
    _, terms = fixed_terms(fit)
    sets = [frozenset(t.variables) for t in terms]
    return [t for t, s in zip(terms, sets) if t.columns and not any(s < u for u in sets)]


def _scope_terms(fit, scope) -> list:
    """The terms of `scope` (labels, or a one-sided formula "~ a + b:c"), as fixed terms."""
    from ..spec.formula import _term_label, r_term_order, to_python_expr

    _, terms = fixed_terms(fit)
    by_set = {frozenset(t.variables): t for t in terms if t.columns}
    if isinstance(scope, str):
        rhs = scope.split("~", 1)[-1]
        wanted = [frozenset(_term_label([f]) for f in t) for t in r_term_order(to_python_expr(rhs))[1]]
    else:
        wanted = [frozenset(str(x).replace(" ", "").split(":")) for x in scope]
    missing = [":".join(sorted(w)) for w in wanted if w not in by_set]
    if missing:
        raise ValueError(f"scope is not a subset of term labels: {missing} "
                         f"(terms: {[t.label for t in terms]})")
    return [by_set[w] for w in wanted]


def drop1(fit, test: str = "Chisq", scope=None) -> pd.DataFrame:
    """lme4's ``drop1(fit, scope, test = "Chisq")``: an ML likelihood-ratio test per droppable
    fixed term (or per term of `scope`: labels or "~ a + b"). Index ``<none>`` then the terms;
    columns npar, AIC, LRT, Pr(Chi). ``attrs``: heading, refitted (True when a REML fit was
    refitted by ML).
    """
    from scipy import stats

    if str(test).lower() not in ("chisq", "lrt"):
        raise ValueError(f"test must be 'Chisq' (likelihood-ratio test), not {test!r}")
    require_rows_in_memory(fit, "drop1 (it refits the reduced models)")
    full = refit_ml(fit)
    rows = {"<none>": {"npar": np.nan, "AIC": full.aic, "LRT": np.nan, "Pr(Chi)": np.nan}}
    for t in (droppable_terms(fit) if scope is None else _scope_terms(fit, scope)):
        design = reduced_design(fit.design, t.columns)
        red = _quiet_fit(model_from_design(fit, design, reml=False))
        k = len(t.columns)
        lrt = red.deviance - full.deviance
        rows[t.label] = {"npar": k, "AIC": red.aic, "LRT": lrt,
                         "Pr(Chi)": stats.chi2.sf(max(lrt, 0.0), k)}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out["npar"] = out["npar"].astype("Int64")
    out.index.name = "term"
    out.attrs["heading"] = ["Single term deletions", "", "Model:", fit.formula]
    if fit.reml:
        out.attrs["heading"].insert(1, "refitting model with ML (instead of REML)")
    out.attrs["refitted"] = bool(fit.reml)
    return out


# ======================================================================================
# ranova
# ======================================================================================

def _term_column_groups(design, k) -> list:
    """[(label, column indices)] of the k-th random term's left-hand side terms (R's assign
    of its model matrix); the intercept is labelled "1"."""
    t = design.terms[k]
    names = list(t.column_names)
    ts = design.term_specs[k] if len(design.term_specs) == len(design.terms) else None
    ms = None if ts is None else ts.matrix
    if ms is not None and ms.model_spec is not None:
        out, col = [], 0
        all_names = ms.names if ms.all_names is None else ms.all_names
        keep = list(range(len(all_names))) if ms.keep is None else list(ms.keep)
        pos = {old: new for new, old in enumerate(keep)}
        for st in ms.model_spec.structure:
            facs = [f.expr for f in st.term.factors if f.eval_method.value != "literal"]
            idx = [pos[c] for c in range(col, col + len(st.columns)) if c in pos]
            col += len(st.columns)
            out.append(("1" if not facs else ":".join(facs), idx))
        return [(lab, idx) for lab, idx in out if idx]
    return [("1" if n == "(Intercept)" else n, [j]) for j, n in enumerate(names)]


def lm_loglik(X, y, reml: bool, weights=None, offset=None) -> float:
    """R's ``logLik(lm(y ~ X - 1, weights =, offset =), REML =)``."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if offset is not None:
        y = y - np.asarray(offset, dtype=np.float64)
    slw = 0.0
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        X, y = X * np.sqrt(w)[:, None], y * np.sqrt(w)
        slw = float(np.sum(np.log(w)))
    n, p = X.shape
    Q, R = np.linalg.qr(X)
    res = y - Q @ (Q.T @ y)
    rss = float(res @ res)
    if not reml:
        return 0.5 * (slw - n * (LOG_2PI + 1.0 - math.log(n) + math.log(rss)))
    N = n - p
    return (0.5 * (slw - N * (LOG_2PI + 1.0 - math.log(N) + math.log(rss)))
            - float(np.sum(np.log(np.abs(np.diag(R))))))


def ranova(fit, reduce_terms: bool = True) -> pd.DataFrame:
    """lmerTest's ``ranova(fit, reduce.terms = TRUE)``: an LRT per random term, by the fit's
    criterion (REML or ML). Index ``<none>`` then one row per reduction; columns npar,
    logLik, AIC, LRT, Df, ``Pr(>Chisq)`` (lmerTest's naive chi-square), ``Pr(>Chisq) boundary``
    (the mixture where one random effect is removed, else NaN), null, note. ``attrs``:
    heading, formulae (the random part of each reduced model), criterion."""
    from scipy import stats

    model = require_rows_in_memory(fit, "ranova (it refits the reduced models)")
    design = fit.design
    n_terms = len(design.terms)
    reml = bool(fit.reml)
    rows = {"<none>": {"npar": fit.n_params, "logLik": fit.llf, "AIC": -2 * fit.llf + 2 * fit.n_params,
                       "LRT": np.nan, "Df": np.nan, NAIVE: np.nan, BOUNDARY: np.nan,
                       "null": "", "note": ""}}
    formulae = {}
    for k, t in enumerate(design.terms):
        whole = f"({t.expr} | {t.group})"
        groups = _term_column_groups(design, k)
        has_icpt = any(lab == "1" for lab, _ in groups)
        reductions = []  # (label, columns kept or None: the term removed)
        if reduce_terms and not (has_icpt and len(groups) == 1):
            for lab, idx in groups:
                if lab == "1":
                    continue
                keep = [j for j in range(len(t.column_names)) if j not in idx]
                reductions.append((f"{lab} in {whole}", keep or None))
        else:
            reductions.append((whole, None))
        for label, keep in reductions:
            plan = [(j, None) for j in range(n_terms) if j != k]
            if keep is not None:
                plan.insert(k, (k, keep))
            others = [str_term(design.terms[j], None if j != k else keep) for j, _ in plan]
            formulae[label] = " + ".join(others) if others else "(none)"
            if not plan:
                if model.residual is not None:
                    raise NotImplementedError("ranova: removing the last random term of a model "
                                              "with a residual structure (a gls) is not supported")
                ll = lm_loglik(design.X, design.y, reml, getattr(model, "prior_weights", None),
                               getattr(model, "offset", None))
                npar = design.X.shape[1] + 1
                red = None
                q, why = 0, None
            else:
                red = _quiet_fit(model_from_design(fit, reduced_design(design, (), plan), reml))
                ll, npar = red.llf, red.n_params
                q, why = boundary_mixture(red, fit)
            df = fit.n_params - npar
            lrt = max(0.0, 2.0 * (fit.llf - ll))
            row = {"npar": npar, "logLik": ll, "AIC": -2 * ll + 2 * npar, "LRT": lrt, "Df": df,
                   NAIVE: stats.chi2.sf(lrt, df) if df > 0 else np.nan, BOUNDARY: np.nan,
                   "null": f"chi2({df})", "note": why or ""}
            if q is not None and df == q + 1:
                row[BOUNDARY] = mixture_pvalue(lrt, q)
                row["null"] = ("0.5 chi2(0) + 0.5 chi2(1)" if q == 0
                               else f"0.5 chi2({q}) + 0.5 chi2({q + 1})")
                row["note"] = "one random effect removed: variance on the boundary (Self & Liang; Stram & Lee)"
            rows[label] = row
    out = pd.DataFrame.from_dict(rows, orient="index")
    out["Df"] = out["Df"].astype("Int64")
    out["npar"] = out["npar"].astype("Int64")
    out.index.name = "term"
    out.attrs["heading"] = ["ANOVA-like table for random-effects: Single term deletions", "",
                            "Model:", fit.formula,
                            f"{NAIVE}: naive chi2(Df) (lmerTest's); {BOUNDARY}: 0.5 chi2(q) + "
                            "0.5 chi2(q+1) mixture where one random effect is removed"]
    out.attrs["formulae"] = formulae
    out.attrs["criterion"] = "REML" if reml else "ML"
    return out


def str_term(t, keep=None) -> str:
    if keep is None:
        return f"({t.expr} | {t.group})"
    names = [t.column_names[j] for j in keep]
    if names == ["(Intercept)"]:
        return f"(1 | {t.group})"
    lhs = " + ".join((["1"] if "(Intercept)" in names else ["0"]) + [x for x in names if x != "(Intercept)"])
    return f"({lhs} | {t.group})"


def format_table(table: pd.DataFrame, digits: int = 4) -> str:
    """The table as R prints it (heading, then the columns), for drop1 and ranova."""
    lines = [h for h in table.attrs.get("heading", [])]
    shown = table[[c for c in table.columns if c not in ("null", "note")]]

    def fmt(v, c):
        if pd.isna(v):
            return ""
        if c in ("npar", "Df"):
            return str(int(v))
        if c.startswith("Pr("):
            return "< 2.2e-16" if v < 2.2e-16 else f"{v:.{digits}g}"
        return f"{v:.{digits + 2}g}"

    body = [[str(i)] + [fmt(r[c], c) for c in shown.columns] for i, r in shown.iterrows()]
    header = [""] + list(shown.columns)
    widths = [max(len(h), *(len(b[j]) for b in body)) for j, h in enumerate(header)]
    lines.append(" ".join(h.ljust(widths[0]) if j == 0 else h.rjust(widths[j]) for j, h in enumerate(header)))
    for b in body:
        lines.append(" ".join(x.ljust(widths[0]) if j == 0 else x.rjust(widths[j]) for j, x in enumerate(b)))
    return "\n".join(lines)
