"""Tables of tests as lmerTest prints them."""
from __future__ import annotations

import numpy as np
import pandas as pd
from .satterthwaite import fixed_effects_test
from ..io.rformat import EPS, format_pval, r_format  # noqa: F401 (R's format, format.pval)

# ======================================================================================
# Text output
# ======================================================================================

def format_p(p: float) -> str:
    """One p-value as R's format.pval(p, digits = 4) prints it (tables format the column
    together: `format_pval`)."""
    return format_pval([p])[0]


def format_fixed_effects_test(table: pd.DataFrame) -> list:
    """lmerTest's coefficient table lines (Estimate, Std. Error, df, t value, Pr(>|t|)), as
    lme4's print.summary.merMod prints them: printCoefmat(digits = 4) with significance stars
    and R's legend (bigmixed.io.rformat.print_coefmat)."""
    from ..io.rformat import print_coefmat

    cols = ["estimate", "std_error", "df", "t_value", "p_value"]
    values = table[cols].to_numpy(dtype=float)
    return print_coefmat(list(table["term"]), ["Estimate", "Std. Error", "df", "t value",
                                               "Pr(>|t|)"], values, digits=4)


def format_anova_terms(table: pd.DataFrame) -> str:
    """lmerTest-style text of an `anova_terms` table."""
    header = ["", "Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"]
    # print.anova: digits 5, so format.pval(digits = 4)
    pvals = format_pval(table["p_value"].to_numpy(dtype=float), digits=4) if len(table) else []
    rows = [[r.term, f"{r.sum_sq:.5g}", f"{r.mean_sq:.5g}", f"{r.num_df:g}",
             f"{r.den_df:.5g}" if np.isfinite(r.den_df) else "Inf", f"{r.F_value:.4f}", p]
            for r, p in zip(table.itertuples(), pvals)]
    widths = [max(len(h), *(len(x[k]) for x in rows)) if rows else len(h) for k, h in enumerate(header)]
    lines = [table.attrs.get("heading", "")]
    lines += [" ".join(c.ljust(widths[k]) if k == 0 else c.rjust(widths[k]) for k, c in enumerate(line))
              for line in [header] + rows]
    return "\n".join(lines)


def summary_with_df(fit, ddf: str = "satterthwaite", optimizer_log: bool = False) -> str:
    """The fit's summary with lmerTest's coefficient table: df and p-values by `ddf`, and a
    line naming the method."""
    from ..io.summary import format_summary

    base = format_summary(fit, optimizer_log)
    table = fixed_effects_test(fit, ddf=ddf)
    block = ["Fixed effects:"] + format_fixed_effects_test(table)
    block.append(f"(df and p-values: {table.attrs['ddf_method']})")
    lines = base.split("\n")
    try:
        start = lines.index("Fixed effects:")
        end = start + 1
        while end < len(lines) and lines[end].strip():
            end += 1
        lines[start:end] = block
    except ValueError:
        lines += [""] + block
    return "\n".join(lines)

