"""lme4-style text summary of a fit."""
from __future__ import annotations

import numpy as np

from .rformat import print_coefmat


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
    prior = getattr(fit.design, "prior", None)
    if prior is not None:  # as lme4's call lines: the weights= and offset= arguments
        if prior.has_weights:
            out.append(f"Weights: {prior.weights if prior.weights is not None else '<values>'}")
        if prior.offset is not None or prior.offset_values:
            out.append(f"Offset: {prior.offset if prior.offset is not None else '<values>'}")
    if fit.reml:
        out.append(f"REML criterion at convergence: {fit.objective:.4f}")
    else:
        out += ["", *aic_table_lines([fit.aic, fit.bic, fit.llf, fit.objective,
                                      fit.nobs - fit.n_params])]
    out += ["", "Scaled residuals:"] + resid_quantile_lines(fit.resid_quantiles())

    out += ["", "Random effects:"]
    # lme4's .prt.VC: print(formatVC(varcor, digits = 4, comp = c("Variance", "Std.Dev.")));
    # terms in lme4's order, then the groups line with '; ' between factors
    out += VarCorr(fit).lines(digits=4, comp=("Variance", "Std.Dev."))
    out.append(groups_line(fit))
    if fit.n_dropped:
        out.append(f"({fit.n_dropped} observations deleted due to missingness)")
    if fit.residual is not None:
        out += [""] + fit.residual.describe(fit.residual_eta)

    out += ["", "Fixed effects:"]
    # lme4's printCoefmat(coefficients, digits = 4)
    out += print_coefmat(list(fit.fixed_names), ["Estimate", "Std. Error", "t value"],
                         np.column_stack([fit.beta, fit.bse.to_numpy(), fit.tvalues.to_numpy()]),
                         digits=4)
    if 1 < len(fit.fixed_names) <= 12:  # lme4.summary.cor.max = 12
        out += ["", "Correlation of Fixed Effects:"]
        out += corr_fixed_lines(fit.corr_fixed.to_numpy(), fit.fixed_names)
    opt = fit.optimizer
    out += ["", f"optimizer ({opt.method}): {opt.n_evaluations} evaluations, {opt.message}"]
    if optimizer_log:
        out += _stage_log(opt)
    for w in fit.warnings:
        out.append(f"warning: {type(w).__name__}: {w}")
    return "\n".join(out)


def aic_table_lines(values) -> list:
    """lme4's .prt.aictab: format(round(c(AIC, BIC, logLik, deviance, df.resid), 1)) with
    df.resid formatted alone, printed as R prints a named character vector."""
    from .rformat import r_format

    vals = r_format([round(float(v), 1) for v in values], 7)
    vals = [v.strip() for v in vals[:-1]] + r_format([round(float(values[-1]), 1)], 7)
    names = ["AIC", "BIC", "logLik", "deviance", "df.resid"]
    w = max(len(v) for v in vals + names)
    return ["".join(n.rjust(w) + " " for n in names), "".join(v.rjust(w) + " " for v in vals)]


def resid_quantile_lines(q, digits: int = 4) -> list:
    """lme4's .prt.resids: print(zapsmall(quantile(resid), digits + 1), digits = digits) as R
    prints a named vector (names over values, right-aligned, one common format)."""
    from .rformat import r_format

    q = np.asarray(q, dtype=np.float64)
    mx = float(np.max(np.abs(q))) if np.all(np.isfinite(q)) else 0.0
    if mx > 0:  # R's zapsmall(x, digits + 1)
        q = np.round(q, max(0, digits + 1 - int(np.ceil(np.log10(mx)))))
    vals = r_format(list(q), digits)
    names = ["Min", "1Q", "Median", "3Q", "Max"]
    w = max(len(v) for v in vals + names)
    return ["".join(n.rjust(w) + " " for n in names), "".join(v.rjust(w) + " " for v in vals)]


def corr_fixed_lines(corr, names) -> list:
    """lme4's 'Correlation of Fixed Effects': format(round(corr, 3), nsmall = 3) over the
    matrix, the lower triangle, rows abbreviate(names, 11), columns abbreviate(names, 6),
    printed left-aligned as R prints a character matrix."""
    from .rformat import abbreviate, r_format

    p = len(names)
    cells = r_format([round(float(v), 3) for v in np.asarray(corr).ravel()], 7, nsmall=3)
    cc = [cells[i * p:(i + 1) * p] for i in range(p)]
    rows = abbreviate(names, 11)[1:]
    cols = abbreviate(names, 6)[:-1]
    body = [[cc[i][j] if j < i else "" for j in range(p - 1)] for i in range(1, p)]
    w0 = max(len(r) for r in rows)
    widths = [max(len(c), *(len(r[j]) for r in body)) for j, c in enumerate(cols)]
    lines = ["".ljust(w0) + "".join(" " + c.ljust(widths[j]) for j, c in enumerate(cols))]
    for r, row in zip(rows, body):
        lines.append(r.ljust(w0) + "".join(" " + c.ljust(widths[j]) for j, c in enumerate(row)))
    return lines


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


# ======================================================================================
# lme4's VarCorr(fit): print(VarCorr(fit)), as.data.frame(VarCorr(fit)), the groups line
# ======================================================================================

def _lme4_terms(fit) -> list:
    """(group, column names, covariance) per random-effects term in lme4's order (its reTrms:
    by decreasing number of levels, as theta is listed); several terms on one factor, as
    ``(x || g)`` makes, are named as lme4 names them (R's make.unique: g, g.1, ...)."""
    covs = fit.term_covariances()
    return _make_unique([covs[k] for k in fit.structure.term_order])


def _make_unique(terms) -> list:
    seen: dict = {}
    out = []
    for g, names, cov in terms:
        n = seen.get(g, 0)
        seen[g] = n + 1
        out.append((g if n == 0 else f"{g}.{n}", names, cov))
    return out


def groups_in_lme4_order(fit) -> list:
    """[(grouping factor, number of levels)] as lme4's ngrps(fit) lists them."""
    st = fit.structure
    out = {}
    for k in st.term_order:
        t = st.terms[k]
        out.setdefault(t.group, t.n_levels)
    return list(out.items())


def groups_line(fit) -> str:
    """lme4's 'Number of obs: 8525, groups:  doctor:hospital, 407; hospital, 35'."""
    groups = "; ".join(f"{g}, {n}" for g, n in groups_in_lme4_order(fit))
    return f"Number of obs: {fit.nobs}, groups:  {groups}"


def _r_print_matrix(header, rows) -> list:
    """R's print(<character matrix>, quote = FALSE) with empty row names: left-aligned
    columns, one space before each (trailing spaces kept, as R prints them)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    return ["".join(" " + c.ljust(widths[i]) for i, c in enumerate(line))
            for line in [header] + rows]


class VarCorr:
    """lme4's ``VarCorr(fit)``: the random-effects covariance matrices per term (lme4's order)
    and the residual SD.

    ``print(fit.VarCorr())`` prints as lme4's ``print(VarCorr(fit))`` (Std.Dev. and Corr;
    ``.format(comp=("Variance", "Std.Dev."))`` for both), ``vc["Subject"]`` is the covariance
    matrix of a term as a DataFrame, ``vc.as_data_frame()`` is ``as.data.frame(VarCorr(fit))``
    (columns grp, var1, var2, vcov, sdcor), ``vc.sigma`` the residual SD (None for a GLMM
    without a scale parameter).
    """

    def __init__(self, fit):
        self.terms = _lme4_terms(fit)
        has_scale = "Residual" in set(fit.variance_components["group"])
        self.sigma = float(fit.sigma) if has_scale else None

    @classmethod
    def from_terms(cls, terms, sigma=None) -> "VarCorr":
        """From [(group, column names, covariance matrix)] in lme4's order and the residual SD
        (None: no scale parameter)."""
        self = cls.__new__(cls)
        self.terms = _make_unique([(g, list(n), np.asarray(c, dtype=np.float64))
                                   for g, n, c in terms])
        self.sigma = None if sigma is None else float(sigma)
        return self

    # ---- mapping access ---------------------------------------------------------------
    def keys(self) -> list:
        return [g for g, _, _ in self.terms]

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.terms)

    def __getitem__(self, group):
        import pandas as pd

        for g, names, cov in self.terms:
            if g == group:
                return pd.DataFrame(cov, index=list(names), columns=list(names))
        raise KeyError(f"no random-effects term on {group!r}; terms: {self.keys()}")

    def as_data_frame(self):
        """as.data.frame(VarCorr(fit)): per term the variances, then the covariances (lower
        triangle by column), then the residual; sdcor is the SD or the correlation."""
        import pandas as pd

        rows = []
        for g, names, cov in self.terms:
            sd = np.sqrt(np.diag(cov))
            for i, n in enumerate(names):
                rows.append((g, n, None, cov[i, i], sd[i]))
            for j in range(len(names)):
                for i in range(j + 1, len(names)):
                    d = sd[i] * sd[j]
                    rows.append((g, names[j], names[i], cov[i, j], cov[i, j] / d if d > 0 else np.nan))
        if self.sigma is not None:
            rows.append(("Residual", None, None, self.sigma ** 2, self.sigma))
        return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])

    # ---- printing (lme4's formatVC) ----------------------------------------------------
    def lines(self, digits: int = 5, comp=("Std.Dev.",)) -> list:
        from .rformat import r_format

        comp = (comp,) if isinstance(comp, str) else tuple(comp)
        bad = [c for c in comp if c not in ("Variance", "Std.Dev.")]
        if bad or not comp:
            raise ValueError(f"comp must hold 'Variance' and/or 'Std.Dev.', not {comp!r}")
        groups, names, sds, corr_rows = [], [], [], []
        maxlen = max([len(n) for _, n, _ in self.terms] + [1])
        dig = max(2, digits - 2)
        for g, cols, cov in self.terms:
            sd = np.sqrt(np.diag(cov))
            groups += [g] + [""] * (len(cols) - 1)
            names += list(cols)
            sds += list(sd)
            if maxlen > 1:
                den = np.outer(sd, sd)
                with np.errstate(invalid="ignore", divide="ignore"):
                    cor = np.where(den > 0, cov / np.where(den > 0, den, 1.0), np.nan)
                np.fill_diagonal(cor, 1.0)
                cells = r_format([round(v, dig) for v in cor.ravel()], 7, nsmall=dig)
                cc = np.array(cells, dtype=object).reshape(cor.shape)
                for i in range(len(cols)):
                    row = [cc[i, j] if j < i else "" for j in range(len(cols))]
                    corr_rows.append((row + [""] * maxlen)[:maxlen - 1])
        if self.sigma is not None:
            groups.append("Residual")
            names.append("")
            sds.append(self.sigma)
            if maxlen > 1:
                corr_rows.append([""] * (maxlen - 1))
        header = ["Groups", "Name"]
        cols = [groups, names]
        if "Variance" in comp:
            header.append("Variance")
            cols.append(r_format([s * s for s in sds], digits))
        if "Std.Dev." in comp:
            header.append("Std.Dev.")
            cols.append(r_format(sds, digits))
        if maxlen > 1:
            header += ["Corr"] + [""] * (maxlen - 2)
            cols += [[r[j] for r in corr_rows] for j in range(maxlen - 1)]
        rows = [list(r) for r in zip(*cols)]
        return _r_print_matrix(header, rows)

    def format(self, digits: int = 5, comp=("Std.Dev.",)) -> str:
        return "\n".join(self.lines(digits, comp))

    def __str__(self) -> str:
        return self.format()

    def __repr__(self) -> str:
        return self.format()
