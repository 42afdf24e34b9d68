"""Fixed-effects terms and their contrasts: Type I and Type III hypotheses per term, as
lmerTest's anova builds them, and the F tests."""
from __future__ import annotations

import math
import numpy as np
import pandas as pd
from .satterthwaite import DDF_LABEL, InputsUnavailable, resolve_ddf, contest_md
from .between_within import between_within_df
from .fixed_terms import fixed_terms

# ---- terms and contrasts -------------------------------------------------------------







def _zapsmall(x, digits: int = 7):
    x = np.asarray(x, dtype=np.float64)
    mx = np.max(np.abs(x)) if x.size else 0.0
    if not np.isfinite(mx) or mx <= 0:
        return np.round(x, digits)
    return np.round(x, max(0, digits - int(math.ceil(math.log10(mx)))))


def doolittle(x, eps: float = 1e-6):
    """lmerTest's doolittle(): x = L U with unit lower L (entries below eps zeroed)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    L = np.eye(n)
    U = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            U[i, j] = x[i, j] - L[i, :i] @ U[:i, j]
        for j in range(i + 1, n):
            v = x[j, i] - L[j, :i] @ U[:i, i]
            L[j, i] = 0.0 if abs(U[i, i]) < eps else v / U[i, i]
    L[np.abs(L) < eps] = 0.0
    U[np.abs(U) < eps] = 0.0
    return L, U


GRAM_KEY = "fixed-gram"


def fixed_gram(fit) -> np.ndarray:
    """X'X of the fixed effects (Type I hypotheses): from the model's cross-products, or as a
    loaded fit's file holds it (raises bigmixed.SavedSectionMissingError when it has none)."""
    p = len(fit.beta)

    def live():
        model = fit._require_model("Type I hypotheses (X'X)")
        prior = getattr(model, "prior", None)
        if prior is not None and (prior.weights is not None or prior.weights_values):
            # lmerTest's Type I uses crossprod(model.matrix(m)), the unweighted X'X, also with
            # prior weights; the model's cross-products are the weighted ones
            X = getattr(model.design, "X", None)
            if X is None or X.shape[0] != model.n_obs:
                raise NotImplementedError(
                    "Type I hypotheses of a model with prior weights need the unweighted X'X, "
                    "which a model without its rows in memory (Dask) does not keep; use type=3")
            return np.array(X.T @ X, dtype=np.float64)
        gram = model.crossprods.gram
        return np.array(np.asarray(gram)[:p, :p], dtype=np.float64)

    gram = fit.derived(GRAM_KEY, live)
    if isinstance(gram, InputsUnavailable):
        raise gram.error()
    return gram


def contrasts_type1(fit) -> dict:
    """lmerTest's Type I (sequential) hypotheses: rows of t(doolittle(X'X)$L) per term."""
    _, terms = fixed_terms(fit)
    p = len(fit.beta)
    XtX = fixed_gram(fit)
    Lt = np.eye(1) if p == 1 else doolittle(XtX)[0].T
    return {t.label: Lt[t.columns] for t in terms if t.columns}


def contrasts_type3(fit) -> dict:
    """lmerTest's Type III hypotheses for treatment-coded factors (``extract_contrasts_type3``).

    lmerTest builds, per term, the over-parameterised ``model.matrix(~ 0 + term)`` (rdX), maps it
    on the parameters (L = t(ginv(X) rdX)), makes each term's columns orthogonal to the terms
    that contain it (highest order first) and keeps the rows of the X columns. ginv(X) rdX is
    the unique C with X C = rdX, which depends on the coding only, not on the rows: it is
    computed here on a synthetic grid (every combination of factor levels, random numeric
    values), so no pass over the data is needed.
    """
    has_icpt, terms = fixed_terms(fit)
    if not terms or len(fit.beta) <= 1 or len(terms) <= 1:
        return contrasts_type1(fit)
    design = fit.design
    fs = design.fixed_spec
    for info in fs.variables.values():
        if info.kind == "factor" and info.ordered:
            raise NotImplementedError(
                "Type III contrasts are implemented for treatment-coded factors only; "
                f"{info.name!r} is an ordered factor (contr.poly). Use type=1 or a plain Categorical.")
    grid = _reference_grid(fs, len(fit.beta))
    Xg = fs.matrix.matrix(grid)
    from ..spec.materialize import build_matrix
    from ..spec.formula import r_term_order

    _, term_factors = r_term_order(design.parsed.fixed)
    tstate = getattr(fs.matrix.model_spec, "transform_state", None) or {}
    rd_cols, rd_names, rd_term = [], [], []
    if has_icpt:
        rd_cols.append(np.ones((len(grid), 1)))
        rd_names.append("(Intercept)")
        rd_term.append(None)
    for t, facs in zip(terms, term_factors):
        Z, spec = build_matrix(t.label, False, [facs], grid, "Type III contrasts", tstate)
        rd_cols.append(Z)
        rd_names.extend(spec.names)
        rd_term.extend([t.label] * Z.shape[1])
    rdX = np.hstack(rd_cols)
    C, res, rank, _ = np.linalg.lstsq(Xg, rdX, rcond=None)
    if rank < Xg.shape[1] or not np.allclose(Xg @ C, rdX, atol=1e-8 * max(1.0, np.abs(rdX).max())):
        raise NotImplementedError(
            "could not map the over-parameterised Type III design on the model's parameters "
            "(aliased or transformed columns); use type=1")
    L = _zapsmall(C.T)  # rows: rdX columns, columns: X columns
    contains = {t.label: [u.label for u in terms
                          if set(t.variables) < set(u.variables) and set(t.numeric) == set(u.numeric)]
                for t in terms}
    cols_of = {t.label: t.columns for t in terms}
    for t in sorted(terms, key=lambda t: -len(t.variables)):
        cont = contains[t.label]
        if cont and t.columns:
            A = L[:, [c for u in cont for c in cols_of[u]]]
            B = L[:, t.columns]
            coef, *_ = np.linalg.lstsq(A, B, rcond=None)
            L[:, t.columns] = _zapsmall(B - A @ coef)
    pos = {n: i for i, n in enumerate(rd_names)}
    missing = [n for n in fit.fixed_names if n not in pos]
    if missing:
        raise NotImplementedError(f"Type III contrasts: columns {missing} are not treatment coded")
    L = L[[pos[n] for n in fit.fixed_names]]
    out = {}
    for t in terms:
        Lt = L[:, t.columns].T
        out[t.label] = Lt[np.abs(Lt).sum(axis=1) > 1e-8]
    return out


def _reference_grid(fs, p: int, max_cells: int = 20000, seed: int = 20240607) -> pd.DataFrame:
    """Every combination of the factors' levels (or a random sample of them), repeated with
    random numeric values in (1, 2) until there are comfortably more rows than parameters."""
    rng = np.random.default_rng(seed)
    factors = {v: info for v, info in fs.variables.items() if info.kind == "factor"}
    numerics = [v for v, info in fs.variables.items() if info.kind != "factor"]
    sizes = [len(info.levels) for info in factors.values()]
    cells = int(np.prod(sizes)) if sizes else 1
    reps = max(3, int(math.ceil(4 * p / cells)))
    if cells <= max_cells:
        grids = np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij") if sizes else []
        codes = [np.tile(g.ravel(), reps) for g in grids]
        n = cells * reps
    else:
        n = max(50 * p, 2000)
        codes = [rng.integers(0, s, n) for s in sizes]
    frame = {}
    for (v, info), c in zip(factors.items(), codes):
        frame[v] = pd.Categorical.from_codes(c, categories=list(info.levels), ordered=info.ordered)
    for v in numerics:
        frame[v] = rng.uniform(1.0, 2.0, n)
    return pd.DataFrame(frame)


def anova_terms(fit, type: int | str = 3, ddf: str = "satterthwaite") -> pd.DataFrame:
    """F tests per fixed-effects term (lmerTest's ``anova(fit, type, ddf)``).

    type: 3 (default; lmerTest's Type III for treatment contrasts), 1 (sequential) or
    "marginal" (each term's own coefficients). ddf: "satterthwaite", "between-within"
    (nlme's term df) or "asymptotic" (chi-square / q). The method is in
    ``table.attrs["heading"]``.
    """
    method = resolve_ddf(ddf)
    kind = str(type).lower()
    if kind in ("3", "iii"):
        Ls, label = contrasts_type3(fit), "Type III"
    elif kind in ("1", "i"):
        Ls, label = contrasts_type1(fit), "Type I"
    elif kind == "marginal":
        p = len(fit.beta)
        Ls = {t.label: np.eye(p)[t.columns] for t in fixed_terms(fit)[1] if t.columns}
        label = "Marginal"
    else:
        raise ValueError(f"type must be 3, 1 or 'marginal', not {type!r}")
    term_df = between_within_df(fit).term_df if method == "between-within" else None
    rows = {}
    for name, L in Ls.items():
        rows[name] = contest_md(fit, L, ddf=method,
                                den_df=None if term_df is None else term_df[name])
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "term"
    out = out.reset_index()
    out.attrs["heading"] = f"{label} Analysis of Variance Table with {DDF_LABEL[method]}"
    out.attrs["ddf_method"] = DDF_LABEL[method]
    return out
