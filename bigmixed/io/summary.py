"""lme4-style text summary of a fit."""
from __future__ import annotations

import numpy as np


def _fmt_table(header, rows, align_left_cols=1):
    rows = [list(r) + [""] * (len(header) - len(r)) for r in rows]  # ragged rows (triangles)
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(header)]
    lines = []
    for row in [header] + rows:
        cells = []
        for i, cell in enumerate(row):
            cells.append(str(cell).ljust(widths[i]) if i < align_left_cols else str(cell).rjust(widths[i]))
        lines.append(" ".join(cells).rstrip())
    return lines


def format_summary(fit, optimizer_log: bool = False) -> str:
    kind = "REML" if fit.reml else "maximum likelihood"
    out = [f"Linear mixed model fit by {kind} (bigmixed)", f"Formula: {fit.formula}"]
    if fit.reml:
        out.append(f"REML criterion at convergence: {fit.objective:.4f}")
    else:
        out += ["", *_fmt_table(["AIC", "BIC", "logLik", "deviance", "df.resid"],
                                [[f"{fit.aic:.1f}", f"{fit.bic:.1f}", f"{fit.llf:.1f}",
                                  f"{fit.objective:.1f}", str(fit.nobs - fit.n_params)]], 0)]
    q = fit.resid_quantiles()
    out += ["", "Scaled residuals:"]
    out += ["    " + l for l in _fmt_table(["Min", "1Q", "Median", "3Q", "Max"], [[f"{v:.4f}" for v in q]], 0)]

    out += ["", "Random effects:"]
    rows = []
    for group, names, cov in fit.term_covariances():
        sd = np.sqrt(np.diag(cov))
        for i, name in enumerate(names):
            corr = []
            for j in range(i):
                c = cov[i, j] / (sd[i] * sd[j]) if sd[i] * sd[j] > 0 else float("nan")
                corr.append(f"{c:.2f}")
            rows.append([group if i == 0 else "", name, f"{cov[i, i]:.6g}", f"{sd[i]:.6g}", " ".join(corr)])
    rows.append(["Residual", "", f"{fit.sigma ** 2:.6g}", f"{fit.sigma:.6g}", ""])
    has_corr = any(r[4] for r in rows)
    header = ["Groups", "Name", "Variance", "Std.Dev."] + (["Corr"] if has_corr else [])
    rows = [r if has_corr else r[:4] for r in rows]
    out += [" " + l for l in _fmt_table(header, rows, 2)]
    groups = ", ".join(f"{g}, {n}" for g, n in fit.n_groups.items())
    out.append(f"Number of obs: {fit.nobs}, groups:  {groups}")
    if fit.n_dropped:
        out.append(f"({fit.n_dropped} observations deleted due to missingness)")
    if fit.residual is not None:
        out += [""] + fit.residual.describe(fit.residual_eta)

    out += ["", "Fixed effects:"]
    rows = [[name, f"{b:.6g}", f"{s:.6g}", f"{t:.3f}"] for name, b, s, t in
            zip(fit.fixed_names, fit.beta, fit.bse, fit.tvalues)]
    out += _fmt_table(["", "Estimate", "Std. Error", "t value"], rows, 1)
    if 1 < len(fit.fixed_names) <= 12:
        out += ["", "Correlation of Fixed Effects:"]
        corr = fit.corr_fixed.to_numpy()
        abbrev = [n[:6] if n != "(Intercept)" else "(Intr)" for n in fit.fixed_names]
        rows = [[abbrev[i]] + [f"{corr[i, j]:.3f}" for j in range(i)] for i in range(1, len(abbrev))]
        out += _fmt_table([""] + abbrev[:-1], rows, 1)
    opt = fit.optimizer
    out += ["", f"optimizer ({opt.method}): {opt.n_evaluations} evaluations, {opt.message}"]
    if optimizer_log:
        out += _stage_log(opt)
    for w in fit.warnings:
        out.append(f"warning: {type(w).__name__}: {w}")
    return "\n".join(out)


def _stage_log(opt) -> list:
    """The optimizer's stages (bigmixed.fitting.stages) and the tolerances of its last run."""
    rows = [[r.stage, str(r.n_evaluations), f"{r.objective:.10g}" if np.isfinite(r.objective) else "",
             f"{r.seconds:.3f}", r.note]
            for r in opt.stages]
    out = [" " + line for line in _fmt_table(["stage", "evaluations", "objective", "seconds", "note"],
                                               rows, 1)]
    if opt.tolerances:
        out.append(" tolerances: " + ", ".join(f"{k} = {v:g}" for k, v in opt.tolerances.items()))
    return out
