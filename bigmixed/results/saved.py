"""A fit read back from a file: ``bm.load(path)`` (the format: bigmixed.io.modelfile)."""
from __future__ import annotations

from dataclasses import fields
from types import MappingProxyType

import numpy as np

from ..errors import ModelFormatError, SavedSectionMissingError
from ..fitting.record import OptimizerRecord, StageRecord
from ..inference.satterthwaite import INPUTS_KEY, InputsUnavailable
from ..inference.terms import GRAM_KEY
from ..io.modelfile import (FORMAT_VERSION_MINOR, format_version_text, inference_section,
                            optimizer_fields, read_model, rebuild_design, warning_objects)
from ..spec.residual import ResidualParameters
from ..spec.structure import RandomEffectsStructure
from .fit import LMMResults
from .rows import SavedRows


def load(path) -> LMMResults:
    """Read a model written by ``fit.save(path)``: an `LMMResults` without a model or rows.

    Available as on the original fit: theta, beta, sigma, vcov, params / bse / tvalues,
    fixed_effects, variance_components, term_covariances(), objective, llf, aic, bic,
    deviance, nobs, n_dropped, n_groups, converged, is_singular, warnings, ranef(), coef(),
    conditional_variances(), summary(), predict() / predict_interval() on new data, save(),
    to_dict(), confint() (Wald), and -- from files of model format minor >= 1 (the
    "inference" section) -- fixed_effects_test(), anova_terms() and summary(ddf=
    "satterthwaite") with the original's numbers. From an older file those raise
    `bigmixed.SavedSectionMissingError` (re-save the model). Not available (AttributeError):
    fitted values and residuals of the fitting data, and everything that re-evaluates the
    objective (profiles, bootstrap, between-within df).

    Raises ModelFormatError for a file that is not a bigmixed model, is damaged, or was
    written in a newer format version (with ``format_version`` / ``supported_version``).
    """
    return read_model(path, lambda meta, read: _fit_from_file(meta, read, path))


def _missing(path, meta: dict, what: str, section: str, reason):
    def make():
        why = f" (when it was saved: {reason})" if reason else ""
        return SavedSectionMissingError(
            f"the model loaded from {str(path)!r} (model format {format_version_text(meta)}, "
            f"written by bigmixed {meta.get('bigmixed_version', '?')}) has no {what}{why}: "
            f"fixed_effects_test(), anova_terms() and summary(ddf=...) need it; files of model "
            f"format minor >= {FORMAT_VERSION_MINOR} hold it -- refit the model on its data "
            "with this bigmixed and save it again (fit.save(path))",
            section=section, format_version=meta.get("format_version"))
    return InputsUnavailable(make)


def _with_inference(fit: LMMResults, meta: dict, read, path) -> LMMResults:
    """The saved Satterthwaite inputs and X'X, where bigmixed.inference looks for them."""
    inputs, gram, reason = inference_section(meta, read)
    if inputs is not None and len(inputs.varpar) != fit.n_optimizer_params + 1:
        raise ModelFormatError(f"the saved Satterthwaite section has {len(inputs.varpar)} variance "
                               f"parameters, the model {fit.n_optimizer_params + 1}")
    fit.derived(INPUTS_KEY, lambda: inputs if inputs is not None else _missing(
        path, meta, "Satterthwaite section (the Hessian of the criterion in the variance "
        "parameters and the derivatives of Var(beta))", "inference.satterthwaite", reason))
    fit.derived(GRAM_KEY, lambda: gram if gram is not None else _missing(
        path, meta, "X'X of the fixed effects (Type I hypotheses)", "inference.fixed_gram", reason))
    return fit


def _fit_from_file(meta: dict, read, path=None) -> LMMResults:
    design = rebuild_design(meta, read)
    structure = RandomEffectsStructure(design.terms)
    if structure.theta_names != list(meta["theta_names"]):
        raise ModelFormatError("the saved random-effects structure does not match its terms")
    est = meta["estimates"]
    theta = np.asarray(read("theta"), dtype=np.float64)
    residual, eta = None, np.zeros(0)
    if meta.get("residual_structure"):
        residual = ResidualParameters.from_meta(meta["residual_structure"])
        eta = np.asarray(read("residual_eta"), dtype=np.float64)
    record = optimizer_fields(meta, read, {f.name for f in fields(OptimizerRecord)})
    record.update(params=np.concatenate((theta, eta)), history=(),
                  stages=tuple(StageRecord(**r) for r in record.get("stages") or ()))
    n_factors = len(meta["factors"])
    condvar = None
    if est.get("condvar"):
        condvar = [np.asarray(read(f"condvar/{fi}"), dtype=np.float64) for fi in range(n_factors)]
    deviance = est.get("deviance")
    glmm = meta.get("glmm")
    cls, extra = LMMResults, {}
    if glmm:
        from ..spec.family import family_from
        from .glmm_fit import GLMMResults

        cls = GLMMResults
        record["params"] = np.asarray(read(glmm["params"]), dtype=np.float64)
        extra = dict(family=family_from(glmm["family"], glmm["link"]), nAGQ=int(glmm["nAGQ"]),
                     _eta=np.zeros(0), _mu=np.zeros(0), vcov_method=glmm["vcov_method"],
                     offset_spec=MappingProxyType({"terms": tuple(glmm["offset_terms"]),
                                                   "argument": glmm["offset_argument"]}))
    fit = cls(
        _model=None, rows=SavedRows(est.get("resid_quantiles")), design=design, structure=structure,
        residual=residual, solver=meta.get("solver"), reml=bool(meta["reml"]),
        formula=(glmm or {}).get("formula", meta["formula"]),
        _fixed_names=list(meta["fixed"]["names"]), theta=theta,
        residual_eta=eta, beta=read("beta"), vcov=read("vcov"), sigma=float(est["sigma"]),
        objective=float(est["objective"]), _deviance=None if deviance is None else float(deviance),
        conditional_modes=[read(f"ranef/{fi}") for fi in range(n_factors)],
        _condvar_saved=condvar, _beta_work=None, n_obs=int(meta["n_obs"]),
        n_dropped_rows=int(meta["n_dropped"]), optimizer=OptimizerRecord(**record),
        _warnings=warning_objects(meta.get("warnings") or []),
        timings=dict(meta.get("timings") or {}), **extra,
    )
    return _with_inference(fit, meta, read, path)
