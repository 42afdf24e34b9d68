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
    "response_record",
    "table_rows",
    "tidy",
    "variance_components",
    "versions",
    "warning_records",
]

DOCUMENT_FORMAT = "bigmixed.fit"
# 2: fixed effects carry df, p_value (Satterthwaite, or null with ddf "none") and aliased
#    (dropped columns present with null numbers); GLMMs: z_value / p_value; "inference"
DOCUMENT_VERSION = 2
# one line of an NDJSON stream of fits (`bigmixed fit --responses ...`): response, index,
# status, then the document's entries (ok) or error: {type, message}
NDJSON_FORMAT = "bigmixed.fit.ndjson"
NDJSON_VERSION = 2

TIDY_COLUMNS = ["effect", "group", "term", "estimate", "std_error", "t_value"]

# the tidy table `bigmixed fit` writes as CSV / Parquet (one row per fixed effect or variance
# parameter and response): linear mixed models, and GLMMs (z tests)
TABLE_COLUMNS = ["response", "status", "effect", "group", "term", "estimate", "std_error",
                 "t_value", "df", "p_value", "aliased", "error"]
GLMM_TABLE_COLUMNS = ["response", "status", "effect", "group", "term", "estimate", "std_error",
                      "z_value", "p_value", "aliased", "error"]
TABLE_FLOAT_COLUMNS = ("estimate", "std_error", "t_value", "df", "p_value", "z_value")
TABLE_BOOL_COLUMNS = ("aliased",)

# --ddf / fit_document(ddf=): the denominator degrees of freedom of the t tests of an LMM
DDF_CHOICES = ("satterthwaite", "none")


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
    if not is_glmm(fit):  # (a GLMM has no residual scale)
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


# ---- coefficient tests: df, p-values, aliased columns ----------------------------------------


def is_glmm(fit) -> bool:
    """A GLMM fit (z tests, no residual scale) rather than a linear mixed model."""
    return getattr(fit, "family", None) is not None


def resolve_ddf(fit, ddf: str | None) -> str | None:
    """The ddf method a document of `fit` uses: None for a GLMM (z tests); for an LMM
    "satterthwaite" or "none" (`ddf=None`: "satterthwaite" unless the fit cannot give it --
    a model loaded from a file saved without the Satterthwaite section --, then "none").

    Raises ValueError for an unknown method, or a method given for a GLMM."""
    if ddf is not None and ddf not in DDF_CHOICES:
        raise ValueError(f"ddf must be one of {', '.join(repr(x) for x in DDF_CHOICES)} (or None), "
                         f"not {ddf!r}")
    if is_glmm(fit):
        if ddf is not None:
            raise ValueError(f"ddf={ddf!r} is for linear mixed models; a GLMM's fixed effects are "
                             "Wald z tests (z_value, p_value): leave ddf unset")
        return None
    if ddf is not None:
        return ddf
    from ..inference.satterthwaite import satterthwaite_available

    return "satterthwaite" if satterthwaite_available(fit) else "none"


def _full_order(fit) -> list:
    """[(name, index into fit.beta or None for an aliased column)] in the order of the full
    model matrix (R's ``fixef(fit, add.dropped = TRUE)``): dropped columns where they were."""
    names = list(fit.fixed_names)
    dropped = [str(d) for d in (getattr(fit.design, "dropped_fixed", None) or [])]
    kept = [(n, j) for j, n in enumerate(names)]
    if not dropped:
        return kept
    fs = getattr(fit.design, "fixed_spec", None)
    ms = getattr(fs, "matrix", None)
    all_names = getattr(ms, "all_names", None)
    keep = getattr(ms, "keep", None)
    if all_names is not None and keep is not None and len(all_names) == len(names) + len(dropped):
        pos = {int(k): j for j, k in enumerate(keep)}
        return [(str(n), pos.get(i)) for i, n in enumerate(all_names)]
    return kept + [(d, None) for d in dropped]


def coefficient_tests(fit, ddf: str | None = None) -> tuple:
    """(rows, inference): one dict per fixed-effects column of the full model matrix, and what
    the tests are.

    LMM rows: term, estimate, std_error, t_value, df, p_value, aliased (df and p_value from
    Satterthwaite's method as lmerTest's summary, null with ddf "none"); GLMM rows: term,
    estimate, std_error, z_value, p_value, aliased. An aliased (dropped, rank-deficient)
    column has null numbers and ``aliased: true``, as lme4 reports NA. `inference` is
    ``{"ddf", "statistic", "method", "messages"}``.
    """
    from ..inference.distributions import norm_sf

    method = resolve_ddf(fit, ddf)
    beta = np.asarray(fit.beta, dtype=np.float64)
    se = np.sqrt(np.diag(np.asarray(fit.vcov, dtype=np.float64)))
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = beta / se
    messages: list = []
    if method is None:
        df = None
        p = 2.0 * norm_sf(np.abs(stat))
        info = {"ddf": None, "statistic": "z", "method": "Wald z tests (lme4's glmer)"}
    elif method == "satterthwaite":
        from ..inference.satterthwaite import DDF_LABEL, satterthwaite_state

        if len(beta):
            tab = fit.fixed_effects_test(ddf="satterthwaite")
            df = tab["df"].to_numpy(dtype=np.float64)
            p = tab["p_value"].to_numpy(dtype=np.float64)
            messages = list(satterthwaite_state(fit).messages)
        else:  # no fixed effects (y ~ 0 + (1 | g)): nothing to test
            df = p = np.zeros(0)
        info = {"ddf": "satterthwaite", "statistic": "t", "method": DDF_LABEL["satterthwaite"]}
    else:
        df = p = None
        info = {"ddf": "none", "statistic": "t",
                "method": "none: t values without df or p-values (lme4's summary)"}
    info["messages"] = messages
    key = "z_value" if method is None else "t_value"
    rows = []
    for name, j in _full_order(fit):
        if j is None:
            row = {"term": name, "estimate": None, "std_error": None, key: None}
            if method is not None:
                row["df"] = None
            row.update(p_value=None, aliased=True)
        else:
            row = {"term": name, "estimate": float(beta[j]), "std_error": float(se[j]),
                   key: float(stat[j])}
            if method is not None:
                row["df"] = None if df is None else float(df[j])
            row.update(p_value=None if p is None else float(p[j]), aliased=False)
        rows.append(row)
    return rows, info


def table_columns(fit_or_glmm) -> list:
    """The columns of the tidy table (TABLE_COLUMNS, GLMM_TABLE_COLUMNS for a GLMM; pass a
    fit or a bool)."""
    glmm = fit_or_glmm if isinstance(fit_or_glmm, bool) else is_glmm(fit_or_glmm)
    return GLMM_TABLE_COLUMNS if glmm else TABLE_COLUMNS


def table_rows(fit, response: str, ddf: str | None = None) -> list:
    """The tidy table's rows of one fit (tuples in the order of `table_columns(fit)`): the
    fixed effects (with the aliased ones), then the variance parameters as `tidy_rows`."""
    rows, _ = coefficient_tests(fit, ddf)
    cols = table_columns(fit)
    out = []
    for r in rows:
        d = {"response": response, "status": "ok", "effect": "fixed", "group": None, **r,
             "error": None}
        out.append(tuple(d.get(c) for c in cols))
    for effect, group, term, est, _se, _t in tidy_rows(fit)[len(fit.fixed_names):]:
        d = {"response": response, "status": "ok", "effect": effect, "group": group,
             "term": term, "estimate": est}
        out.append(tuple(d.get(c) for c in cols))
    return out


def error_table_row(response: str, error_type: str, message: str, glmm: bool = False) -> tuple:
    """The tidy table's row of a response that failed."""
    d = {"response": response, "status": "error", "error": f"{error_type}: {message}"}
    return tuple(d.get(c) for c in table_columns(bool(glmm)))


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


def fit_document(fit, *, include_versions: bool = True, extra: dict | None = None,
                 ddf: str | None = None) -> dict:
    """The versioned JSON document of a fit (what ``bigmixed fit`` writes; ``fit.to_dict()``).

    Keys: format, format_version, model (formula, response, reml, family), fixed_effects
    (`coefficient_tests`: with df / p-values and aliased columns), inference (ddf method),
    variance_components, residual_structure (null without one), theta, statistics,
    convergence, warnings, timings, versions (unless include_versions=False), and the entries
    of `extra`. Missing numbers (an undefined correlation, the sd of a covariance row, an
    aliased coefficient) are null. `ddf`: "satterthwaite", "none" or None (see `resolve_ddf`).
    The JSON Schema: ``bigmixed.io.schemas.load_schema("fit")``.
    """
    design = fit.design
    coefs, inference = coefficient_tests(fit, ddf)
    family = None
    if is_glmm(fit):
        family = {"family": str(fit.family.name), "link": str(fit.family.link),
                  "nAGQ": int(getattr(fit, "nAGQ", 1))}
    doc: dict = {
        "format": DOCUMENT_FORMAT,
        "format_version": DOCUMENT_VERSION,
        "model": {
            "formula": fit.formula,
            "response": getattr(fit, "response_label", design.response),
            "reml": bool(fit.reml),
            "family": family,
            # an LMM's weights= and offset= (offset() terms in the formula too): as given
            **({} if getattr(design, "prior", None) is None else design.prior.describe()),
        },
        "fixed_effects": coefs,
        "inference": inference,
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


def response_record(r, *, ddf: str | None = None, include_versions: bool = False) -> dict:
    """One response of a batch (a ResponseFit) as an NDJSON line's object: format,
    format_version, response, index, status, then the fit's document entries (`fit_document`
    with `ddf`) and seconds, or ``error: {type, message}`` and seconds."""
    head = {"response": r.response, "index": int(r.index), "status": r.status}
    if not r.ok:
        head["error"] = {"type": r.error_type, "message": r.error}
        head["seconds"] = r.seconds
        return ndjson_record(jsonable(head))
    doc = fit_document(r.fit, include_versions=include_versions, ddf=ddf)
    doc.pop("format", None)
    doc.pop("format_version", None)
    doc["seconds"] = r.seconds
    return ndjson_record(jsonable({**head, **doc}))


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
