"""glmer-style text summary of a fitted GLMM (lme4's summary of a glmerMod)."""
from __future__ import annotations

import numpy as np

from .summary import _fmt_table, _stage_log


def _method(fit) -> str:
    if fit.nAGQ == 0:
        return "maximum likelihood (nAGQ = 0: the PIRLS criterion at the fixed effects' PIRLS estimate)"
    if fit.nAGQ == 1:
        return "maximum likelihood (Laplace Approximation)"
    return f"maximum likelihood (Adaptive Gauss-Hermite Quadrature, nAGQ = {fit.nAGQ})"


def _stars(p: float) -> str:
    if not np.isfinite(p):
        return ""
    for cut, mark in ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, ".")):
        if p < cut:
            return mark
    return ""


def _format_p(p: float) -> str:
    """As R's format.pval with 3 significant digits (printCoefmat's), "< 2e-16" below eps."""
    if not np.isfinite(p):
        return "NA"
    if p < 2.2e-16:
        return "< 2e-16"
    return f"{p:.3g}"


def format_glmm_summary(fit, optimizer_log: bool = False) -> str:
    out = [f"Generalized linear mixed model fit by {_method(fit)} (bigmixed)",
           f" Family: {fit.family.describe()}", f"Formula: {fit.formula}", ""]
    # glmer's AIC table: its "deviance" column is -2 logLik
    out += _fmt_table(["AIC", "BIC", "logLik", "deviance", "df.resid"],
                      [[f"{fit.aic:.1f}", f"{fit.bic:.1f}", f"{fit.llf:.1f}",
                        f"{-2.0 * fit.llf:.1f}", str(fit.df_resid)]], 0)
    try:
        q = fit.resid_quantiles()
        out += ["", "Scaled residuals:"]
        out += ["    " + line for line in _fmt_table(["Min", "1Q", "Median", "3Q", "Max"],
                                                     [[f"{v:.4f}" for v in q]], 0)]
    except AttributeError:  # (no rows: a loaded fit whose residual quantiles were not saved)
        pass
    out += ["", "Random effects:"]
    rows = []
    for group, names, cov in fit.term_covariances():
        sd = np.sqrt(np.diag(cov))
        for i, name in enumerate(names):
            corr = [f"{cov[i, j] / (sd[i] * sd[j]):.2f}" if sd[i] * sd[j] > 0 else "NaN"
                    for j in range(i)]
            rows.append([group if i == 0 else "", name, f"{cov[i, i]:.6g}", f"{sd[i]:.6g}",
                         " ".join(corr)])
    has_corr = any(r[4] for r in rows)
    header = ["Groups", "Name", "Variance", "Std.Dev."] + (["Corr"] if has_corr else [])
    out += [" " + line for line in _fmt_table(header, [r if has_corr else r[:4] for r in rows], 2)]
    groups = "; ".join(f"{g}, {n}" for g, n in fit.n_groups.items())
    out.append(f"Number of obs: {fit.nobs}, groups:  {groups}")
    if fit.n_dropped:
        out.append(f"({fit.n_dropped} observations deleted due to missingness)")
    out += ["", "Fixed effects:"]
    fe = fit.fixed_effects
    rows = [[r.term, f"{r.estimate:.6g}", f"{r.std_error:.6g}", f"{r.z_value:.3f}",
             _format_p(r.p_value), _stars(r.p_value)] for r in fe.itertuples()]
    out += _fmt_table(["", "Estimate", "Std. Error", "z value", "Pr(>|z|)", ""], rows, 1)
    out.append("---")
    out.append("Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1")
    if 1 < len(fit.fixed_names) <= 12:
        out += ["", "Correlation of Fixed Effects:"]
        corr = fit.corr_fixed.to_numpy()
        abbrev = [n[:6] if n != "(Intercept)" else "(Intr)" for n in fit.fixed_names]
        rows = [[abbrev[i]] + [f"{corr[i, j]:.3f}" for j in range(i)] for i in range(1, len(abbrev))]
        out += _fmt_table([""] + abbrev[:-1], rows, 1)
    opt = fit.optimizer
    out += ["", f"optimizer ({opt.method}): {opt.n_evaluations} evaluations, {opt.message}; "
                f"vcov from the {fit.vcov_method}"]
    if optimizer_log:
        out += _stage_log(opt)
    for w in fit.warnings:
        out.append(f"warning: {type(w).__name__}: {w}")
    return "\n".join(out)
