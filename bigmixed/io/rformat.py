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
    vals = [None if v is None else float(v) for v in values]
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
