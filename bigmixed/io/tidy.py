"""Tidy outputs of a fit: pandas tables ready for Parquet, and a versioned JSON document.

    import bigmixed as bm
    fit = bm.lmm("y ~ x + (1 + x | g)", df).fit()
    bm.tidy.fixed_effects(fit)        # term, estimate, std_error, t_value
    bm.tidy.variance_components(fit)  # group, term1, term2, variance, sd, corr
    bm.tidy.ranef(fit)                # long form: group, level, term, estimate, cond_sd
    bm.tidy.tidy(fit)                 # broom.mixed-style: effect, group, term, estimate, ...
    bm.tidy.fit_document(fit)         # the JSON document `bigmixed fit` writes (fit.to_dict())

Every function takes an `LMMResults` (or a loaded one, `bm.load`). Columns have one dtype each
(strings, float64, bool), so the tables go to Parquet as they are.
"""
from __future__ import annotations

import math
import platform
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "DOCUMENT_FORMAT",
    "DOCUMENT_VERSION",
    "NDJSON_FORMAT",
    "NDJSON_VERSION",
    "fit_document",
    "fit_statistics",
    "fixed_effects",
    "jsonable",
    "ndjson_record",
    "ranef",
    "tidy",
    "variance_components",
    "versions",
    "warning_records",
]

DOCUMENT_FORMAT = "bigmixed.fit"
DOCUMENT_VERSION = 1
# one line of an NDJSON stream of fits (`bigmixed fit --responses ...`): response, index,
# status, then the document's entries (ok) or error: {type, message}
NDJSON_FORMAT = "bigmixed.fit.ndjson"
NDJSON_VERSION = 1

TIDY_COLUMNS = ["effect", "group", "term", "estimate", "std_error", "t_value"]


# ---- rows (plain Python: cheap enough to call once per response of a batch) ----------------


def fixed_rows(fit) -> list:
    """[(term, estimate, std_error, t_value)] in the order of ``fit.fixed_names``."""
    se = np.sqrt(np.diag(fit.vcov))
    beta = np.asarray(fit.beta, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = beta / se
    return [(str(n), float(b), float(s), float(v)) for n, b, s, v in zip(fit.fixed_names, beta, se, t)]


def variance_rows(fit) -> list:
    """[(group, term1, term2, variance, sd, corr)]: the rows of ``fit.variance_components``."""
    rows = []
    for group, names, cov in fit.term_covariances():
        sd = np.sqrt(np.diag(cov))
        for i, name in enumerate(names):
            rows.append((group, name, None, float(cov[i, i]), float(sd[i]), math.nan))
        for j in range(len(names)):
            for i in range(j + 1, len(names)):
                denom = sd[i] * sd[j]
                corr = float(cov[i, j] / denom) if denom > 0 else math.nan
                rows.append((group, names[j], names[i], float(cov[i, j]), math.nan, corr))
    rows.append(("Residual", None, None, float(fit.sigma ** 2), float(fit.sigma), math.nan))
    return rows


def tidy_rows(fit) -> list:
    """broom.mixed-style rows (effect, group, term, estimate, std_error, t_value):
    fixed effects, then for each random-effects term ``sd__<name>`` and
    ``cor__<name1>.<name2>``, and ``sd__Observation`` for the residual."""
    rows = [("fixed", None, term, est, se, t) for term, est, se, t in fixed_rows(fit)]
    for group, t1, t2, _var, sd, corr in variance_rows(fit):
        if group == "Residual":
            rows.append(("ran_pars", "Residual", "sd__Observation", sd, math.nan, math.nan))
        elif t2 is None:
            rows.append(("ran_pars", group, f"sd__{t1}", sd, math.nan, math.nan))
        else:
            rows.append(("ran_pars", group, f"cor__{t1}.{t2}", corr, math.nan, math.nan))
    return rows


# ---- tables ------------------------------------------------------------------------------


def _strings(values) -> pd.Series:
    return pd.Series(values, dtype=object)


def fixed_effects(fit) -> pd.DataFrame:
    """term, estimate, std_error, t_value (one row per fixed effect)."""
    rows = fixed_rows(fit)
    return pd.DataFrame({
        "term": [r[0] for r in rows],
        "estimate": np.array([r[1] for r in rows], dtype=np.float64),
        "std_error": np.array([r[2] for r in rows], dtype=np.float64),
        "t_value": np.array([r[3] for r in rows], dtype=np.float64),
    })


def variance_components(fit) -> pd.DataFrame:
    """group, term1, term2, variance, sd, corr (as ``fit.variance_components``)."""
    rows = variance_rows(fit)
    return pd.DataFrame(rows, columns=["group", "term1", "term2", "variance", "sd", "corr"])


def tidy(fit) -> pd.DataFrame:
    """Fixed effects and variance parameters in one long table (broom.mixed's ``tidy()``):
    effect ("fixed" / "ran_pars"), group, term, estimate, std_error, t_value."""
    return pd.DataFrame(tidy_rows(fit), columns=TIDY_COLUMNS)


def ranef(fit, condvar: bool = True) -> pd.DataFrame:
    """Conditional modes (BLUPs) in long form: group, level, term, estimate, cond_sd.

    Ordered as lme4's ``as.data.frame(ranef(fit))``: by grouping factor, then term, then
    level (in the fit's level order). ``cond_sd`` is the conditional SD (sqrt of lme4's
    postVar diagonal), NaN without condvar.
    """
    parts = []
    names = {f.group: list(f.column_names) for f in fit.structure.factors}
    for group, df in fit.ranef(condvar=condvar).items():
        cols = names[group]
        levels = np.asarray(df.index, dtype=object).astype(str)
        for c in cols:
            est = df[c].to_numpy(dtype=np.float64)
            sd = df[f"{c}_sd"].to_numpy(dtype=np.float64) if condvar else np.full(len(df), np.nan)
            parts.append(pd.DataFrame({
                "group": _strings([group] * len(df)),
                "level": _strings(levels),
                "term": _strings([c] * len(df)),
                "estimate": est,
                "cond_sd": sd,
            }))
    if not parts:
        return pd.DataFrame(columns=["group", "level", "term", "estimate", "cond_sd"])
    return pd.concat(parts, ignore_index=True)


# ---- statistics, warnings, versions -------------------------------------------------------


def fit_statistics(fit) -> dict:
    """objective, criterion, logLik, AIC, BIC, deviance, sigma, nobs, n_dropped, groups, df."""
    return {
        "objective": float(fit.objective),
        "criterion": "REML" if fit.reml else "deviance",
        "logLik": float(fit.llf),
        "AIC": float(fit.aic),
        "BIC": float(fit.bic),
        "deviance": _maybe(lambda: float(fit.deviance)),
        "sigma": float(fit.sigma),
        "nobs": int(fit.nobs),
        "n_dropped": int(fit.n_dropped),
        "groups": {str(k): int(v) for k, v in fit.n_groups.items()},
        "df": int(fit.n_params),
    }


def _maybe(f):
    try:
        return f()
    except Exception:  # noqa: BLE001 # pragma: no cover - a statistic that cannot be computed is left out
        return None


def warning_records(fit) -> list:
    """[{"type": class name, "message": text}] for each warning recorded on the fit."""
    out = []
    for w in getattr(fit, "warnings", []) or []:
        if isinstance(w, dict):
            out.append({"type": str(w.get("type")), "message": str(w.get("message"))})
        else:
            out.append({"type": type(w).__name__, "message": str(w)})
    return out


def versions() -> dict:
    """Versions of bigmixed, Python and the libraries that compute the numbers."""
    from importlib import metadata

    from .._version import __version__

    out = {"bigmixed": __version__, "python": platform.python_version()}
    for key, dist in (("numpy", "numpy"), ("scipy", "scipy"), ("numba", "numba"),
                      ("scikit-sparse", "scikit-sparse"), ("formulaic", "formulaic"),
                      ("pandas", "pandas"), ("nlopt", "nlopt"), ("pyarrow", "pyarrow")):
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    return out


def convergence(fit) -> dict:
    opt = fit.optimizer
    return {
        "converged": bool(fit.converged),
        "singular": bool(fit.is_singular),
        "optimizer": str(opt.method),
        "n_evaluations": int(opt.n_evaluations),
        "message": str(opt.message),
        "restarts": int(getattr(opt, "restarts", 0)),
    }


def fit_document(fit, *, include_versions: bool = True, extra: dict | None = None) -> dict:
    """The versioned JSON document of a fit (what ``bigmixed fit`` writes; ``fit.to_dict()``).

    Keys: format, format_version, model (formula, response, reml), fixed_effects,
    variance_components, residual_structure (null without one), theta, statistics, convergence, warnings, timings, versions (unless
    include_versions=False), and the entries of `extra`. Missing numbers (an undefined
    correlation, the sd of a covariance row) are null.
    """
    design = fit.design
    doc: dict = {
        "format": DOCUMENT_FORMAT,
        "format_version": DOCUMENT_VERSION,
        "model": {
            "formula": fit.formula,
            "response": design.response,
            "reml": bool(fit.reml),
        },
        "fixed_effects": [
            {"term": t, "estimate": e, "std_error": s, "t_value": v} for t, e, s, v in fixed_rows(fit)
        ],
        "variance_components": [
            {"group": g, "term1": t1, "term2": t2, "variance": var, "sd": sd, "corr": c}
            for g, t1, t2, var, sd, c in variance_rows(fit)
        ],
        "residual_structure": residual_structure(fit),
        "theta": [float(x) for x in fit.theta],
        "theta_names": list(fit.structure.theta_names),
        "statistics": fit_statistics(fit),
        "convergence": convergence(fit),
        "warnings": warning_records(fit),
        "timings": {k: float(v) for k, v in fit.timings.items()},
    }
    if include_versions:
        doc["versions"] = versions()
    if extra:
        doc.update(extra)
    return jsonable(doc)


def ndjson_record(record: dict) -> dict:
    """A per-response record (``ResponseFit.to_record()``) as an NDJSON line's object: ``format``
    and ``format_version`` first, then the record's entries."""
    return {"format": NDJSON_FORMAT, "format_version": NDJSON_VERSION,
            **{k: v for k, v in record.items() if k not in ("format", "format_version")}}


def residual_structure(fit) -> dict | None:
    """The residual structure (AR1, CompoundSymmetry, VarIdent) and its estimates, or None."""
    r = fit.residual
    if r is None:
        return None
    doc = {"parameters": {k: float(v) for k, v in fit.residual_parameters.items()}}
    if r.residual is not None:
        doc["correlation"] = {"type": r.kind, "description": r.residual.describe()}
    if r.variance is not None:
        doc["variance"] = {"type": "varIdent", "by": r.variance.by,
                           "sd_by_stratum": {str(k): float(v) for k, v in fit.residual_sd().items()}}
    return doc


def jsonable(obj: Any) -> Any:
    """numpy scalars and arrays to Python, NaN and +-Inf to None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else None
    return obj
