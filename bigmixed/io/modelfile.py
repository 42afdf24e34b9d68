"""Saved models: ``fit.save(path)`` / ``bm.load(path)``, a portable format without pickle.

A saved model is one file, a zip archive (store it under any name; ``.bmfit`` is suggested):

    bigmixed-model.json     metadata (format name and version, formula, encodings, estimates'
                            scalars, statistics, optimizer record, warnings); readable with
                            ``unzip -p model.bmfit bigmixed-model.json``
    arrays/<name>.npy       numpy arrays (``np.lib.format``, never pickled): theta, beta, vcov,
                            the BLUPs and their conditional covariances per grouping factor, the
                            levels of every grouping factor, interaction keys, ...

What is stored is what re-encoding new data and reporting need, not the data: the formula,
for every covariate its kind and (factors) its levels in order and whether it is ordered,
formulaic's encoder state (the categories of every categorical expression, e.g.
``factor(g)``) and transform state (``scale(x)``'s centre and scale, ``poly(x, 2)``'s
coefficients), the kept / dropped fixed-effects columns, and per random-effects term its
columns and the levels of its grouping factor (with the keys of interactions ``a:b``).
Formulaic's ModelSpec objects are not serialised: `load` re-creates them from the formula by
evaluating it on a few prototype rows (factors as pandas Categoricals with the stored
categories) with the stored encoder and transform states, and checks that the columns come
out with the stored names.

`bm.load` (bigmixed.results.saved) reads a file back into an `LMMResults` without a model:
its estimates, BLUPs, tables, summary and predictions work as on the original; what needs the
data or the cross-products (fitted values, residuals, profiles, bootstrap, refits) raises an
AttributeError saying so. This module writes and reads the file; it knows nothing of the
results classes.

Versions. ``format_version`` grows when the layout changes; this bigmixed reads versions up to
`FORMAT_VERSION` and raises `bigmixed.ModelFormatError` for a newer file (or a file that is
not a bigmixed model). Version 2 adds a residual structure (AR1, CompoundSymmetry, VarIdent:
``residual_structure`` in the JSON, its unconstrained estimates in ``residual_eta.npy``); fits
without one are still written as version 1, which older readers understand. Version 3 adds an
LMM's offset (``prior`` in the JSON: the offset() terms and offset= column, and the prior
weights, as given; bigmixed.spec.glm_inputs.PriorSpec), which predictions on new data need:
fits with weights only are written as before with ``prior`` (older readers may ignore it).

``format_version_minor`` (absent: 0) counts additions that older readers may ignore. Minor 1
adds the ``inference`` section: what Satterthwaite's df and the Type I hypotheses need, so that
a loaded fit answers ``fixed_effects_test()``, ``anova_terms()`` and ``summary(ddf=...)`` as
the original (``inference/varpar.npy``: theta, a residual structure's parameters, sigma;
``inference/hessian.npy``: the Hessian of lmerTest's criterion f(varpar);
``inference/jacobian.npy``: dVar(beta)/dvarpar_i stacked (k, p, p); ``inference/fixed_gram.npy``:
X'X). A file without it loads; those methods then raise `SavedSectionMissingError`.
Sections are written by one function each (`_inference_section`); a GLMM's family section can
be added beside them.
"""
from __future__ import annotations

import datetime as _dt
import io as _io
import json
import math
import os
import tempfile
import warnings
import zipfile
import dataclasses
from dataclasses import fields as _dc_fields

import numpy as np
import pandas as pd

from ..errors import ModelFormatError

__all__ = ["FORMAT", "FORMAT_VERSION", "read_model", "rebuild_design", "save"]

FORMAT = "bigmixed.model"
FORMAT_VERSION = 3
FORMAT_VERSION_MINOR = 1  # 1: the "inference" section (Satterthwaite's H and J, X'X)
META = "bigmixed-model.json"


# ======================================================================================
# JSON encoding of transform / encoder state (tagged, exact for floats)
# ======================================================================================


def _enc(v):
    if v is None or isinstance(v, (str, bool)):
        return v
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        x = float(v)
        return x if math.isfinite(x) else {"__float__": repr(x)}
    if isinstance(v, np.ndarray):
        if v.dtype.kind not in "biuf":
            raise ModelFormatError(f"cannot save an array of dtype {v.dtype} in the model state")
        return {"__ndarray__": _enc(v.tolist()), "dtype": v.dtype.str, "shape": list(v.shape)}
    if isinstance(v, dict):
        return {"__map__": [[_enc(k), _enc(x)] for k, x in v.items()]}
    if isinstance(v, tuple):
        return {"__tuple__": [_enc(x) for x in v]}
    if isinstance(v, list):
        return [_enc(x) for x in v]
    raise ModelFormatError(f"cannot save a value of type {type(v).__name__} in the model state")


def _dec(v):
    if isinstance(v, list):
        return [_dec(x) for x in v]
    if isinstance(v, dict):
        if "__map__" in v:
            return {_hashable(_dec(k)): _dec(x) for k, x in v["__map__"]}
        if "__tuple__" in v:
            return tuple(_dec(x) for x in v["__tuple__"])
        if "__ndarray__" in v:
            return np.asarray(_dec(v["__ndarray__"]), dtype=np.dtype(v["dtype"])).reshape(v["shape"])
        if "__float__" in v:
            return float(v["__float__"])
        raise ModelFormatError(f"unexpected object in the model state: keys {sorted(v)[:5]}")
    return v


def _hashable(k):
    return tuple(k) if isinstance(k, list) else k


def _encoder_state(model_spec) -> dict:
    """formulaic's encoder state -> {expr: {"kind": ..., "categories": [...] or None}}."""
    out = {}
    for expr, (kind, state) in (getattr(model_spec, "encoder_state", None) or {}).items():
        cats = state.get("categories") if isinstance(state, dict) else None
        out[str(expr)] = {"kind": kind.value, "categories": None if cats is None else _enc(list(cats))}
    return out


# ======================================================================================
# Save
# ======================================================================================


def _str_array(values) -> np.ndarray:
    a = np.asarray([str(v) for v in values], dtype=str)
    return a if a.dtype.kind == "U" else a.astype("U1")


def _matrix_meta(mspec, arrays: dict, key: str) -> dict:
    """A design._MatrixSpec -> JSON (plus arrays)."""
    ms = mspec.model_spec
    meta = {
        "rhs": mspec.rhs,
        "intercept": bool(mspec.intercept),
        "n_terms": int(mspec.n_terms),
        "names": [str(n) for n in mspec.names],
        "keep": None if mspec.keep is None else [int(i) for i in np.asarray(mspec.keep)],
        "all_names": None if mspec.all_names is None else [str(n) for n in mspec.all_names],
        "has_spec": ms is not None,
        "transform_state": _enc(dict(getattr(ms, "transform_state", None) or {})) if ms is not None else None,
        "encoder_state": _encoder_state(ms) if ms is not None else None,
    }
    return meta


def _numeric_prototypes(variables: dict, specs: list) -> dict:
    """Values for numeric covariates in the prototype rows: a numeric column inside a
    categorical expression (factor(g), C(x)) needs values giving every stored category."""
    from ..spec.formula import expression_names

    out: dict = {}
    for ms in specs:
        for expr, (kind, state) in (getattr(ms, "encoder_state", None) or {}).items():
            if kind.value != "categorical" or expr in variables:
                continue
            cats = state.get("categories") if isinstance(state, dict) else None
            if not cats:
                continue
            try:
                names = [n for n in expression_names(expr) if n in variables and variables[n].kind == "numeric"]
            except Exception:  # noqa: BLE001, S112 - an expression we cannot analyse: no prototypes
                continue
            if len(names) != 1:
                continue
            vals = []
            for c in cats:
                try:
                    vals.append(float(c))
                except (TypeError, ValueError):
                    vals = None
                    break
            if vals:
                prev = out.get(names[0], [])
                out[names[0]] = prev + [v for v in vals if v not in prev]
    return out


def model_meta(fit, with_condvar: bool = True, with_inference: bool = True) -> tuple:
    """(metadata dict, arrays dict) describing `fit` (an LMMResults)."""
    from .._version import __version__
    from . import tidy as _tidy

    design = fit.design
    st = fit.structure
    arrays: dict = {}
    fs = design.fixed_spec
    variables = []
    for name, info in fs.variables.items():
        variables.append({
            "name": str(name),
            "kind": info.kind,
            "levels": None if info.levels is None else [str(x) for x in info.levels],
            "ordered": bool(info.ordered),
        })
    specs = [fs.matrix.model_spec] + [ts.matrix.model_spec for ts in design.term_specs]
    prototypes = _numeric_prototypes(fs.variables, [s for s in specs if s is not None])

    # grouping expressions (shared by terms on the same columns)
    groups: list = []
    group_index: dict = {}
    term_meta = []
    for k, ts in enumerate(design.term_specs):
        gs = ts.group_spec
        key = tuple(gs.group_vars)
        if key not in group_index:
            gi = len(groups)
            group_index[key] = gi
            arrays[f"groups/{gi}/levels"] = _str_array(gs.levels)
            for v, lv in enumerate(gs.var_levels):
                arrays[f"groups/{gi}/var_levels/{v}"] = _str_array(list(lv))
            for s, keys in enumerate(gs.step_keys):
                arrays[f"groups/{gi}/step_keys/{s}"] = np.asarray(keys, dtype=np.int64)
            groups.append({"group_vars": list(key), "n_vars": len(gs.var_levels),
                           "n_steps": len(gs.step_keys)})
        term = st.terms[k]
        term_meta.append({
            "expr": ts.expr,
            "group": ts.group,
            "group_vars": list(ts.group_vars),
            "correlated": bool(getattr(term, "correlated", True)),
            "column_names": [str(c) for c in term.column_names],
            "covariates": [str(c) for c in ts.covariates],
            "grouping": group_index[key],
            "matrix": _matrix_meta(ts.matrix, arrays, f"terms/{k}"),
        })

    arrays["theta"] = np.asarray(fit.theta, dtype=np.float64)
    residual = fit.residual
    if residual is not None:
        arrays["residual_eta"] = np.asarray(fit.residual_eta, dtype=np.float64)
    arrays["beta"] = np.asarray(fit.beta, dtype=np.float64)
    arrays["vcov"] = np.asarray(fit.vcov, dtype=np.float64)
    modes = fit.conditional_modes
    for fi in range(len(st.factors)):
        arrays[f"ranef/{fi}"] = np.asarray(modes[fi], dtype=np.float64)
    condvar = _maybe_condvar(fit) if with_condvar else None
    if condvar is not None:
        for fi, f in enumerate(st.factors):
            arrays[f"condvar/{fi}"] = np.asarray(condvar[f.group], dtype=np.float64)
    opt = fit.optimizer
    opt_meta = {}
    for f in _dc_fields(opt):
        v = getattr(opt, f.name)
        if f.name in ("params", "theta", "history"):
            continue
        if f.name == "stages":
            opt_meta[f.name] = [_enc(dataclasses.asdict(r)) for r in v]
        elif isinstance(v, np.ndarray):
            arrays[f"optimizer/{f.name}"] = np.asarray(v, dtype=np.float64)
            opt_meta[f.name] = {"__array__": f"optimizer/{f.name}"}
        else:
            opt_meta[f.name] = _enc(v)
    try:
        rq = np.asarray(fit.resid_quantiles(), dtype=np.float64)
        if not np.all(np.isfinite(rq)):
            rq = None
    except Exception:  # noqa: BLE001 - e.g. a fit without its data
        rq = None
    inference = (_inference_section(fit, arrays) if with_inference else
                 {"satterthwaite": None, "fixed_gram": None, "reason": "saved with satterthwaite=False"})
    meta = {
        "format": FORMAT,
        "format_version": 1 if residual is None else 2,
        "format_version_minor": FORMAT_VERSION_MINOR,
        "bigmixed_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "formula": design.formula,
        "response": design.response,
        "reml": bool(fit.reml),
        "solver": fit.solver,
        "n_obs": int(fit.nobs),
        "n_dropped": int(fit.n_dropped),
        "fixed": {
            "names": [str(n) for n in fit.fixed_names],
            "dropped": [str(n) for n in design.dropped_fixed],
            "fixed_vars": [str(v) for v in fs.fixed_vars],
            "matrix": _matrix_meta(fs.matrix, arrays, "fixed"),
        },
        "variables": variables,
        "numeric_prototypes": {k: [float(x) for x in v] for k, v in prototypes.items()},
        "terms": term_meta,
        "groupings": groups,
        "factors": [
            {"group": f.group, "column_names": [str(c) for c in f.column_names],
             "term_ids": [int(t) for t in f.term_ids], "n_levels": int(f.n_levels)}
            for f in st.factors
        ],
        "theta_names": list(st.theta_names),
        "residual_structure": None if residual is None else residual.to_meta(),
        "prior": None if getattr(design, "prior", None) is None else design.prior.to_meta(),
        "estimates": {
            "sigma": float(fit.sigma),
            "objective": float(fit.objective),
            "deviance": _float_or_none(lambda: fit.deviance),
            "condvar": condvar is not None,
            "resid_quantiles": None if rq is None else [float(x) for x in rq],
        },
        "optimizer": opt_meta,
        "inference": inference,
        "warnings": _tidy.warning_records(fit),
        "timings": {k: float(v) for k, v in fit.timings.items()},
        # for people reading the JSON; load() recomputes these from the arrays
        "summary": _tidy.jsonable({
            "statistics": _tidy.fit_statistics(fit),
            "fixed_effects": [dict(zip(("term", "estimate", "std_error", "t_value"), r))
                              for r in _tidy.fixed_rows(fit)],
            "variance_components": [dict(zip(("group", "term1", "term2", "variance", "sd", "corr"), r))
                                    for r in _tidy.variance_rows(fit)],
        }),
    }
    if meta["prior"] is not None and design.prior.has_offset:
        meta["format_version"] = 3  # predictions need the offset: older readers must refuse
    family = getattr(fit, "family", None)
    meta["glmm"] = None
    if family is not None:
        # a GLMM: older readers would take it for an LMM, so they must refuse it
        meta["format_version"] = 3
        meta["response"] = fit.response_label
        arrays["glmm/params"] = np.asarray(fit.optimizer.params, dtype=np.float64)
        meta["glmm"] = {"formula": fit.formula, "family": family.name, "link": family.link,
                        "nAGQ": int(fit.nAGQ),
                        "vcov_method": str(fit.vcov_method),
                        "offset_terms": [str(t) for t in fit.offset_spec.get("terms", ())],
                        "offset_argument": fit.offset_spec.get("argument"),
                        "params": "glmm/params"}
    return meta, arrays


def _inference_section(fit, arrays: dict) -> dict:
    """The "inference" section (format minor 1): Satterthwaite's inputs (bigmixed.inference.
    satterthwaite.SatterthwaiteInputs) and X'X into `arrays`; what could not be computed is
    null with the reason (a loaded fit from an older file has none to pass on)."""
    from ..inference.satterthwaite import satterthwaite_inputs
    from ..inference.terms import fixed_gram

    out: dict = {"satterthwaite": None, "fixed_gram": None}
    if getattr(fit, "family", None) is not None:
        out["reason"] = "Satterthwaite's df are for linear mixed models"
        return out
    reasons = []
    try:
        inp = satterthwaite_inputs(fit)
    except Exception as e:  # noqa: BLE001 - saved without it; the loaded fit says why
        reasons.append(f"Satterthwaite: {type(e).__name__}: {e}")
    else:
        arrays["inference/varpar"] = np.asarray(inp.varpar, dtype=np.float64)
        arrays["inference/hessian"] = np.asarray(inp.hessian, dtype=np.float64)
        p = len(fit.beta)
        jac = np.asarray(inp.jacobian, dtype=np.float64).reshape(len(inp.jacobian), p, p)
        arrays["inference/jacobian"] = jac
        out["satterthwaite"] = {"varpar": "inference/varpar", "hessian": "inference/hessian",
                                "jacobian": "inference/jacobian", "reml": bool(fit.reml)}
    try:
        arrays["inference/fixed_gram"] = np.asarray(fixed_gram(fit), dtype=np.float64)
        out["fixed_gram"] = "inference/fixed_gram"
    except Exception as e:  # noqa: BLE001
        reasons.append(f"X'X: {type(e).__name__}: {e}")
    if reasons:
        out["reason"] = "; ".join(reasons)
    return out


def inference_section(meta: dict, read) -> tuple:
    """(SatterthwaiteInputs or None, X'X or None, reason or None) from a file's metadata."""
    from ..inference.satterthwaite import SatterthwaiteInputs

    sec = meta.get("inference") or {}
    sat = sec.get("satterthwaite")
    inputs = None
    if sat:
        jac = np.asarray(read(sat["jacobian"]), dtype=np.float64)
        varpar = np.asarray(read(sat["varpar"]), dtype=np.float64)
        hess = np.asarray(read(sat["hessian"]), dtype=np.float64)
        k = len(varpar)
        if hess.shape != (k, k) or jac.ndim != 3 or jac.shape[0] != k:
            raise ModelFormatError(f"the saved Satterthwaite section has inconsistent shapes: "
                                   f"varpar {varpar.shape}, hessian {hess.shape}, jacobian {jac.shape}")
        inputs = SatterthwaiteInputs(varpar, hess, tuple(jac[i] for i in range(k)))
    gram = np.asarray(read(sec["fixed_gram"]), dtype=np.float64) if sec.get("fixed_gram") else None
    return inputs, gram, sec.get("reason")


def format_version_text(meta: dict) -> str:
    """"2.1": a file's format version and minor."""
    return f"{meta.get('format_version')}.{int(meta.get('format_version_minor') or 0)}"


def _maybe_condvar(fit):
    try:
        return fit.conditional_variances()
    except AttributeError:
        return None


def _float_or_none(f):
    try:
        x = float(f())
        return x if math.isfinite(x) else None
    except Exception:  # noqa: BLE001 - a statistic that cannot be computed is left out
        return None


def save(fit, path, *, condvar: bool = True, satterthwaite: bool = True) -> str:
    """Write `fit` to `path` (one zip file, see the module docstring); returns the path.

    The file is written atomically (a temporary file in the same directory, then renamed):
    a failed save leaves no partial file. condvar=False skips the conditional covariances of
    the BLUPs (they need a selected inverse on crossed designs); the loaded fit's
    ``ranef(condvar=True)`` then raises. satterthwaite=False skips the "inference" section
    (its Hessian costs about 8 k^2 evaluations of the criterion, k = number of variance
    parameters); the loaded fit's fixed_effects_test() / anova_terms() then raise
    SavedSectionMissingError.
    """
    meta, arrays = model_meta(fit, with_condvar=condvar, with_inference=satterthwaite)
    # the encodings must be re-creatable before anything is written
    rebuild_design(meta, _ArrayReader(arrays))
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".bigmixed-", suffix=".tmp", dir=directory)
    try:
        os.chmod(tmp, _file_mode(path))
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                zf.writestr(META, json.dumps(meta, indent=1, allow_nan=False))
                for name, arr in arrays.items():
                    buf = _io.BytesIO()
                    np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
                    zf.writestr(f"arrays/{name}.npy", buf.getvalue())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _file_mode(path: str) -> int:
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


# ======================================================================================
# Load
# ======================================================================================


class _ArrayReader:
    def __init__(self, source):
        self.source = source  # dict name -> array, or an open ZipFile

    def __call__(self, name: str) -> np.ndarray:
        if isinstance(self.source, dict):
            if name not in self.source:
                raise ModelFormatError(f"the saved model has no array {name!r}")
            return self.source[name]
        member = f"arrays/{name}.npy"
        try:
            with self.source.open(member) as fh:
                return np.lib.format.read_array(_io.BytesIO(fh.read()), allow_pickle=False)
        except KeyError:
            raise ModelFormatError(f"the saved model has no array {name!r} (damaged file?)") from None
        except ValueError as e:
            raise ModelFormatError(f"array {name!r} of the saved model cannot be read: {e}") from e


def _prototype_frame(meta: dict) -> pd.DataFrame:
    """A few rows on which the formula evaluates to the stored encodings."""
    variables = meta["variables"]
    protos = meta.get("numeric_prototypes") or {}
    n = 2
    for v in variables:
        if v["kind"] == "factor" and v["levels"]:
            n = max(n, len(v["levels"]))
        elif v["name"] in protos:
            n = max(n, len(protos[v["name"]]))
    cols = {}
    for v in variables:
        if v["kind"] == "factor":
            levels = v["levels"] or []
            codes = np.arange(n) % max(len(levels), 1)
            cols[v["name"]] = pd.Categorical.from_codes(
                codes, categories=pd.Index(levels, dtype=object), ordered=bool(v["ordered"]))
        else:
            vals = protos.get(v["name"]) or [1.0]
            cols[v["name"]] = np.asarray(vals, dtype=np.float64)[np.arange(n) % len(vals)]
    return pd.DataFrame(cols, index=pd.RangeIndex(n))


def _rebuild_matrix(mm: dict, frame: pd.DataFrame, what: str):
    """A design._MatrixSpec from its JSON, evaluated on the prototype frame."""
    from formulaic import ModelSpec
    from formulaic.formula import SimpleFormula
    from formulaic.parser.types import Factor, Term

    from ..spec.transforms import FORMULA_CONTEXT
    from ..spec.materialize import (MatrixSpec, RMaterializer, as_formulaic_factor,
                                    model_spec_column_names)
    from ..spec.formula import r_term_order

    intercept, terms = r_term_order(mm["rhs"], what) if mm["n_terms"] else (mm["intercept"], [])
    if not mm["has_spec"]:
        spec = MatrixSpec(mm["rhs"], bool(mm["intercept"]), 0, None, list(mm["names"]))
    else:
        fterms = [Term([Factor("1", eval_method="literal")])] if intercept else []
        fterms += [Term([as_formulaic_factor(f) for f in facs]) for facs in terms]
        enc = {}
        for expr, e in (mm.get("encoder_state") or {}).items():
            kind = Factor.Kind(e["kind"])
            state = {"categories": _dec(e["categories"])} if e.get("categories") is not None else {}
            enc[expr] = (kind, state)
        ms = ModelSpec(
            formula=SimpleFormula(fterms, _ordering="none"),
            materializer=RMaterializer,
            output="numpy",
            na_action="ignore",
            transform_state=_dec(mm["transform_state"]) or {},
            encoder_state=enc,
        )
        # the prototype rows are not data: no warnings about them (e.g. bs() beyond its knots)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                mat = ms.get_model_matrix(frame, context=FORMULA_CONTEXT)
            except Exception as e:
                raise ModelFormatError(f"cannot re-create the encoding of {what} {mm['rhs']!r}: {e}") from e
        fitted = mat.model_spec
        names = model_spec_column_names(fitted)
        spec = MatrixSpec(mm["rhs"], bool(intercept), len(terms), fitted, names)
    expected = mm["all_names"] if mm.get("keep") is not None else mm["names"]
    if list(spec.names) != list(expected):
        raise ModelFormatError(
            f"re-creating the encoding of {what} {mm['rhs']!r} gives the columns {spec.names} "
            f"instead of the saved {list(expected)}")
    if mm.get("keep") is not None:
        spec.all_names = list(spec.names)
        spec.names = list(mm["names"])
        spec.keep = np.asarray(mm["keep"], dtype=np.intp)
    return spec


def rebuild_design(meta: dict, read):
    """-> (Design with specs but no rows, list of RandomTerm with levels but no rows)."""
    from ..spec.design import Design, FixedSpec, RandomTerm, TermSpec
    from ..spec.encoding import GroupSpec, VarInfo
    from ..spec.formula import parse_formula

    frame = _prototype_frame(meta)
    variables = {}
    for v in meta["variables"]:
        levels = None if v["levels"] is None else np.asarray(v["levels"], dtype=object)
        variables[v["name"]] = VarInfo(v["name"], v["kind"], levels, bool(v["ordered"]))
    fixed = meta["fixed"]
    fmat = _rebuild_matrix(fixed["matrix"], frame, "the fixed effects")
    if list(fmat.names) != list(fixed["names"]):
        raise ModelFormatError(f"fixed-effects columns {fmat.names} differ from the saved {fixed['names']}")
    fixed_spec = FixedSpec(matrix=fmat, variables=variables, fixed_vars=list(fixed["fixed_vars"]))

    group_specs = []
    for gi, g in enumerate(meta["groupings"]):
        var_levels = [pd.Index(read(f"groups/{gi}/var_levels/{v}").astype(object), dtype=object)
                      for v in range(g["n_vars"])]
        step_keys = [np.asarray(read(f"groups/{gi}/step_keys/{s}"), dtype=np.int64) for s in range(g["n_steps"])]
        levels = read(f"groups/{gi}/levels").astype(object)
        group_specs.append(GroupSpec(tuple(g["group_vars"]), var_levels, step_keys, levels))

    matrices: dict = {}
    terms, term_specs = [], []
    for t in meta["terms"]:
        key = t["expr"]
        if key not in matrices:
            matrices[key] = _rebuild_matrix(t["matrix"], frame, "the random-effects term")
        mspec = matrices[key]
        gs = group_specs[t["grouping"]]
        ncol = len(t["column_names"])
        code_dtype = np.int32 if len(gs.levels) < 2**31 else np.int64
        terms.append(RandomTerm(
            expr=t["expr"], group=t["group"], column_names=list(t["column_names"]),
            levels=gs.levels, codes=np.zeros(0, dtype=code_dtype), Z=np.zeros((0, ncol)),
            group_vars=tuple(t["group_vars"]), correlated=bool(t["correlated"]),
        ))
        term_specs.append(TermSpec(expr=t["expr"], group=t["group"], group_vars=tuple(t["group_vars"]),
                                   matrix=mspec, covariates=list(t["covariates"]), group_spec=gs))
    from ..spec.glm_inputs import PriorSpec

    prior = PriorSpec.from_meta(meta.get("prior"))
    try:
        parsed = parse_formula(prior.design_formula if prior is not None else meta["formula"])
    except Exception:  # noqa: BLE001 # pragma: no cover - the formula parsed when the model was fitted
        parsed = None
    p = len(fixed["names"])
    design = Design(
        formula=meta["formula"], response=meta["response"], y=np.zeros(0), X=np.zeros((0, p)),
        fixed_names=list(fixed["names"]), terms=terms, n_dropped=int(meta["n_dropped"]),
        row_index=pd.RangeIndex(0), fixed_spec=fixed_spec, term_specs=term_specs, parsed=parsed,
        dropped_fixed=list(fixed["dropped"]), warnings=[], prior=prior,
    )
    return design


def optimizer_fields(meta: dict, read, names) -> dict:
    """The saved optimizer record's fields among `names`, decoded (arrays read)."""
    out = {}
    for k, v in (meta.get("optimizer") or {}).items():
        if k not in names:
            continue
        if isinstance(v, dict) and "__array__" in v:
            out[k] = np.asarray(read(v["__array__"]), dtype=np.float64)
        else:
            out[k] = _dec(v)
    return out


def warning_objects(records):
    from .. import warnings as W

    out = []
    for r in records:
        cls = getattr(W, str(r.get("type")), None)
        if not (isinstance(cls, type) and issubclass(cls, Warning)):
            cls = UserWarning
        out.append(cls(r.get("message", "")))
    return out


def read_model(path, build):
    """Open a model written by `save` and return ``build(meta, read)`` (read(name) -> array),
    with the file still open; errors of `build` are reported as a damaged file.

    Raises ModelFormatError for a file that is not a bigmixed model, is damaged, or was
    written in a newer format version (with ``format_version`` / ``supported_version``).
    """
    path = os.fspath(path)
    try:
        zf = zipfile.ZipFile(path, "r")
    except zipfile.BadZipFile:
        raise ModelFormatError(f"{path!r} is not a saved bigmixed model (not a zip archive)") from None
    with zf:
        try:
            meta = json.loads(zf.read(META).decode("utf-8"))
        except KeyError:
            raise ModelFormatError(f"{path!r} is not a saved bigmixed model (no {META})") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelFormatError(f"the metadata of {path!r} cannot be read: {e}") from e
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ModelFormatError(f"{path!r} is not a saved bigmixed model (format "
                                   f"{meta.get('format') if isinstance(meta, dict) else None!r})")
        version = meta.get("format_version")
        if not isinstance(version, int) or version < 1:
            raise ModelFormatError(f"{path!r} has an invalid format version {version!r}")
        if version > FORMAT_VERSION:
            from .._version import __version__

            raise ModelFormatError(
                f"{path!r} was written by bigmixed {meta.get('bigmixed_version', '?')} in model "
                f"format version {version}; this bigmixed ({__version__}) reads format versions "
                f"up to {FORMAT_VERSION}: upgrade bigmixed to load it",
                format_version=version, supported_version=FORMAT_VERSION)
        try:
            return build(meta, _ArrayReader(zf))
        except ModelFormatError:
            raise
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ModelFormatError(f"the saved model {path!r} is damaged or incomplete: "
                                   f"{type(e).__name__}: {e}") from e
