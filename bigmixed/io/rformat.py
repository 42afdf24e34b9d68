"""R's number formatting: ``format(x, digits, nsmall)`` (formatReal: one notation and common
decimals for a vector) and ``format.pval`` -- what lme4's and lmerTest's printed tables use."""
from __future__ import annotations

import math

import numpy as np


def _sig_kp(x: float, digits: int):
    """(number of significant digits needed, decimal exponent) of |x| to `digits` digits (R's
    scientific() in format.c)."""
    if x == 0:
        return 1, 0
    mant, exp = f"{abs(x):.{digits - 1}e}".split("e")
    mant = mant.replace(".", "").rstrip("0")
    return max(1, len(mant)), int(exp)


def r_format(values, digits: int = 7, nsmall: int = 0) -> list:
    """R's ``format(x, digits = digits, nsmall = nsmall)`` of a numeric vector: one common
    notation (fixed unless scientific is narrower, R's formatReal with scipen = 0), common
    decimals, right-justified to a common width. NaN prints as "NaN", NA (None) as "NA"."""
    vals = [None if v is None else float(v) + 0.0 for v in values]  # -0.0 prints as 0, as R
    fin = [v for v in vals if v is not None and math.isfinite(v)]
    if not fin:
        strs = ["NA" if v is None else "NaN" if math.isnan(v) else ("Inf" if v > 0 else "-Inf")
                for v in vals]
    else:
        neg = any(v < 0 for v in fin)
        rgt = mxsl = mxns = -10 ** 9
        mxe, mne = -10 ** 9, 10 ** 9
        mxl = -10 ** 9
        for v in fin:
            nsig, kp = _sig_kp(v, digits)
            left = kp + 1
            sleft = (v < 0) + (1 if left <= 0 else left)
            rgt, mxl, mxsl = max(rgt, nsig - left), max(mxl, left), max(mxsl, sleft)
            mxns, mxe, mne = max(mxns, nsig), max(mxe, kp), min(mne, kp)
        if mxl < 0:
            mxsl = 1 + neg
        rgt = max(rgt, 0)
        wF = mxsl + rgt + (rgt != 0)
        e = 2 if (mxe >= 100 or mne <= -99) else 1
        d = mxns - 1
        wE = neg + (d > 0) + d + 4 + e
        if wF <= wE:
            rgt = max(rgt, nsmall)
            strs = [f"{v:.{rgt}f}" if v is not None and math.isfinite(v) else None for v in vals]
        else:
            strs = [f"{v:.{d}e}" if v is not None and math.isfinite(v) else None for v in vals]
        strs = [s if s is not None else ("NA" if v is None else "NaN" if math.isnan(v) else
                                         ("Inf" if v > 0 else "-Inf"))
                for s, v in zip(strs, vals)]
    width = max(len(s) for s in strs) if strs else 0
    return [s.rjust(width) for s in strs]


EPS = 2.220446049250313e-16  # R's .Machine$double.eps


def format_pval(pv, digits: int = 4, eps: float = EPS, na_form: str = "NA") -> list:
    """R's ``format.pval(pv, digits, eps)``: p-values below eps as "<2e-16" / "< 2.2e-16"
    (digits decide), the others formatted together as R's format() does. digits = 4 is
    printCoefmat's (lmerTest's and anova's tables)."""
    pv = [None if p is None or (isinstance(p, float) and math.isnan(p)) else float(p) for p in
          (pv if np.ndim(pv) else [pv])]
    out = [na_form] * len(pv)
    idx = [i for i, p in enumerate(pv) if p is not None]
    is0 = [i for i in idx if pv[i] < eps]
    rest = [i for i in idx if pv[i] >= eps]
    rr = []
    if rest:
        expo = {i: math.floor(math.log10(pv[i])) if pv[i] > 0 else -50 for i in rest}
        fixp = [i for i in rest if expo[i] >= -3 or (expo[i] == -4 and digits > 1)]
        sci = [i for i in rest if i not in fixp]
        for group in (fixp, sci):
            if group:
                for i, s in zip(group, r_format([pv[i] for i in group], digits)):
                    out[i] = s
                    rr.append(s)
    if is0:
        d = max(1, digits - 2)
        if rest:
            nc = max(len(s) for s in rr)
            if d > 1 and d + 6 > nc:
                d = max(1, nc - 7)
            sep = "" if d == 1 and nc <= 6 else " "
        else:
            sep = "" if d == 1 else " "
        text = "<" + sep + r_format([eps], d)[0]
        for i in is0:
            out[i] = text
    return out


# R's legend as R prints it outside a UTF-8 locale (ASCII quotes: safe for any output encoding)
SIGNIF_LEGEND = "Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1"


def _stars(p: float) -> str:
    """R's symnum with printCoefmat's cutpoints (0, 0.001, 0.01, 0.05, 0.1, 1)."""
    if p is None or not math.isfinite(p):
        return ""
    for cut, sym in ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, ".")):
        if p <= cut:
            return sym
    return " "


def print_coefmat(rownames, colnames, values, digits: int = 4, signif_stars: bool = True,
                  has_p: bool | None = None, legend: bool = True) -> list:
    """R's ``printCoefmat(x, digits, signif.stars)`` as lines: the columns before the test
    statistic (estimates, SEs and any df) rounded and formatted together, the statistic (the
    column before a p-value column, else the last) rounded to dig.tst = digits - 1 decimals,
    the p-values by format.pval(digits = dig.tst) with significance stars and R's legend."""
    x = np.array(values, dtype=np.float64, ndmin=2)
    nr, nc = x.shape
    if has_p is None:
        has_p = nc >= 4 and str(colnames[-1])[:3] in ("Pr(", "p-v")
    dig_tst = max(1, min(5, digits - 1))
    k = nc - has_p - 1
    cs, tst = list(range(k)), k
    cf = [[""] * nc for _ in range(nr)]
    if cs:
        block = x[:, cs]
        acs = np.abs(block[np.isfinite(block) & (block != 0)])
        digmin = 1 + (np.floor(np.log10([acs.min(), acs.max()])) if acs.size else np.zeros(2))
        dec = int(max(1, digits - digmin.min()))
        flat = [float(np.round(v, dec)) if np.isfinite(v) else (None if np.isnan(v) else v)
                for v in block.ravel()]
        cells = r_format(flat, digits)
        for idx, s in enumerate(cells):
            i, j = divmod(idx, len(cs))
            cf[i][cs[j]] = s
    tcol = [float(np.round(v, dig_tst)) if np.isfinite(v) else None for v in x[:, tst]]
    for i, s in enumerate(r_format(tcol, digits)):
        cf[i][tst] = s
    # a nonzero estimate printed as 0 (or the reverse) gets more digits, as R does
    fixes = [(i, j) for i in range(nr) for j in cs
             if np.isfinite(x[i, j]) and ((x[i, j] == 0) != (float(cf[i][j]) == 0))]
    if fixes:
        for (i, j), s in zip(fixes, r_format([x[i, j] for i, j in fixes], max(1, digits - 1))):
            cf[i][j] = s
    for i in range(nr):
        for j in range(nc - has_p):
            if np.isnan(x[i, j]):
                cf[i][j] = "NA"
    header = [str(c) for c in colnames]
    stars = False
    if has_p:
        pv = x[:, -1]
        ok = np.isfinite(pv)
        for i, s in zip(np.flatnonzero(ok), format_pval(pv[ok], digits=dig_tst)):
            cf[i][-1] = s
        for i in np.flatnonzero(~ok):
            cf[i][-1] = "NA"
        stars = signif_stars and bool(ok.any()) and bool((pv[ok] < 0.1).any())
        if stars:
            sym = [_stars(p) for p in pv]
            w = max(len(s) for s in sym)
            for i in range(nr):
                cf[i].append(sym[i].ljust(w))
            header.append("")
    w0 = max([len(str(r)) for r in rownames] + [0])
    widths = [max(len(h), *(len(r[j]) for r in cf)) for j, h in enumerate(header)]
    lines = ["".ljust(w0) + "".join(" " + h.rjust(widths[j]) for j, h in enumerate(header))]
    for r, row in zip(rownames, cf):
        lines.append(str(r).ljust(w0) + "".join(" " + c.rjust(widths[j]) for j, c in enumerate(row)))
    if stars and legend:
        lines += ["---", SIGNIF_LEGEND]
    return lines


def _strip_chars(s: str, minlen: int) -> str:
    """R's C stripchars (abbreviate with use.classes = TRUE): drop lower-case vowels at word
    ends, then other lower-case vowels, then lower-case letters at word ends, then other
    lower-case letters, then anything, from the right and never a word's first character."""
    b = list(s.lstrip())
    if len(b) < minlen:
        return "".join(b)

    def first(i):  # the character before i is a space: i starts a word
        return b[i - 1].isspace()

    def last(i):
        return (not b[i - 1].isspace()) and (i + 1 >= len(b) or b[i + 1].isspace())

    nspace = 0
    j = True
    i = len(b) - 1
    while i > 0:
        if b[i].isspace():
            if j:
                del b[i]
            else:
                nspace += 1
        else:
            j = False
        if len(b) - nspace <= minlen:
            return _drop_spaces(b, minlen)
        i -= 1
    vowel = set("aeiou")
    tests = (lambda i: b[i] in vowel and last(i), lambda i: b[i] in vowel and not first(i),
             lambda i: b[i].islower() and last(i), lambda i: b[i].islower() and not first(i),
             lambda i: not first(i) and not b[i].isspace())
    for test in tests:
        i = len(b) - 1
        while i > 0:
            if i < len(b) and test(i):
                del b[i]
            if len(b) - nspace <= minlen:
                return _drop_spaces(b, minlen)
            i -= 1
    return _drop_spaces(b, minlen)


def _drop_spaces(b, minlen) -> str:
    if len(b) > minlen:
        b = [b[0]] + [c for c in b[1:] if not c.isspace()]
    return "".join(b)


def abbreviate(names, minlength: int = 4) -> list:
    """R's ``abbreviate(names, minlength)`` (method "left.kept", not strict): duplicated
    abbreviations are made again with a larger minlength."""
    names = [str(n) for n in names]
    out = list(names)
    redo = [True] * len(names)
    while True:
        for k in range(len(names)):
            if redo[k]:
                out[k] = _strip_chars(names[k], minlength)
        seen, dup = set(), [False] * len(out)
        for k, v in enumerate(out):
            dup[k] = v in seen
            seen.add(v)
        if not any(dup):
            return out
        minlength += 1
        dups = {out[k] for k in range(len(out)) if dup[k]}
        redo = [dup[k] or out[k] in dups for k in range(len(out))]
