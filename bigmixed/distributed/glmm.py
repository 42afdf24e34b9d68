"""GLMMs from a Dask DataFrame: ``bm.glmm(formula, ddf, family=...)``.

    import dask.dataframe as dd
    import bigmixed as bm
    ddf = dd.read_parquet("registry/")
    fit = bm.glmm("died ~ age + sex + (1 | hospital)", ddf, family="binomial").fit()

The same fit as in memory (glmer's two stages, bigmixed.fitting.glmm), with the rows kept in
Dask. Passes 0 and 1 are the LMM's (levels, the global encoding; bigmixed.distributed.model),
then one pass finds X'X (for the fixed-effects basis and lme4's rank check) and the family's
log-likelihood constant, and the partitions are encoded once and persisted (X, the codes and Z,
the response, the prior weights and the offset; on the workers with a distributed Client).

Every PIRLS iteration is one pass over the partitions: each computes, at the current linear
predictor, the working weights and response and the weighted cross-products of [Z X z] (joint
PIRLS) or [Z z] (the modes), with its deviance, all as double-doubles in the global level
numbering; they are added in a fixed tree in partition order, rounded once, and the solver
(the same block-diagonal, Schur or CHOLMOD system as in memory) is refreshed with them. The
linear predictor never leaves the driver as rows: it is carried as coefficients,

    eta = a eta_start + c offset + X beta + sum_f Z_f b_f,

(`LinearPredictor`; eta_start is R's starting linear predictor, computed per partition from the
response), and each partition evaluates it on its rows. Step halving averages coefficients,
which is the average of the linear predictors. So the numbers follow the in-memory fit to
rounding (the sums are the same correctly rounded sums; the iterates' row values are
evaluated in another order), not bit for bit.

Not available with Dask data (clear errors): nAGQ > 1 (quadrature needs the rows of a level
together), cbind() or factor responses (give the proportion and weights= trials, or a 0/1
column), weights or offsets given as values, the separation check, and row-level results
in memory (fitted_dask() / resid_dask() give them as Dask collections).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ..crossprods.basis import FixedEffectsBasis
from ..crossprods.compensated import add_compensated
from ..fitting.glmm import GeneralizedLinearMixedModel, start_eta
from ..fitting.pirls import WorkingSystem
from ..kernels.glm import glm_aic_constant, glm_deviance, glm_working
from ..results.rows import QUANTILES
from ..spec.structure import RandomEffectsStructure
from .crossprods import (assemble, encode_partition, local_structure, merge_partials,
                         partition_sums, validate_partition)
from .model import drop_aliased, prepare_levels
from .plan import prior_values, reduce_tree, share
from .rows import DaskRows

__all__ = ["glmm_dask", "LinearPredictor", "DaskGeneralizedLinearMixedModel"]


@dataclass
class LinearPredictor:
    """eta = start * eta_start + off * offset + X beta + sum_f Z_f b_f[codes], as coefficients
    (b_f: (n_levels, P) per factor, on the scale of b = Lambda u)."""

    start: float
    off: float
    beta: np.ndarray
    b: tuple

    def __add__(self, other: "LinearPredictor") -> "LinearPredictor":
        return LinearPredictor(self.start + other.start, self.off + other.off,
                               self.beta + other.beta, tuple(x + y for x, y in zip(self.b, other.b)))

    def __rmul__(self, c: float) -> "LinearPredictor":
        return LinearPredictor(c * self.start, c * self.off, c * self.beta,
                               tuple(c * x for x in self.b))

    __mul__ = __rmul__

    def copy(self) -> "LinearPredictor":
        return LinearPredictor(self.start, self.off, self.beta.copy(), tuple(x.copy() for x in self.b))


@dataclass
class GLMPartition:
    """One partition's rows as the GLMM passes use them (encoded once, persisted)."""

    n: int
    y: np.ndarray
    prior_w: np.ndarray
    offset: np.ndarray
    X: np.ndarray
    structure: object  # local level numbering (bigmixed.distributed.crossprods.local_structure)
    ids_of: list
    n_global: list
    eta_start: np.ndarray
    index: object = None  # the kept rows' index labels (for row-level results)


def _empty_partial():
    from .crossprods import _Partial

    return _Partial(0, None, [], [], None)


def encode_glm_partition(part, plan, enc, family) -> GLMPartition:
    validate_partition(part, plan)
    kept, y, X, per_term = encode_partition(part, plan, enc)
    if y is None:
        return GLMPartition(0, *(np.zeros(0),) * 3, np.zeros((0, 0)), None, [], [], np.zeros(0),
                            kept.index)
    w, off = prior_values(kept, plan)
    n = len(y)
    w = np.ones(n) if w is None else np.ascontiguousarray(w, dtype=np.float64)
    off = np.zeros(n) if off is None else np.ascontiguousarray(off, dtype=np.float64)
    family.check_response(y, w, f"response {plan.response!r}")
    st, ids_of, n_global = local_structure(enc, per_term)
    return GLMPartition(n, np.ascontiguousarray(y, dtype=np.float64), w, off,
                        np.ascontiguousarray(X), st, ids_of, n_global, start_eta(family, y, w),
                        kept.index)


def setup_sums(gp: GLMPartition, family_id: int):
    """(unweighted cross-products of [Z X y] with the R factor of X, the family's constant
    (hi, lo)) of a partition."""
    if gp.n == 0:
        return _empty_partial(), (0.0, 0.0)
    part = partition_sums(gp.structure, gp.ids_of, gp.n_global, gp.X, gp.y)
    hi, lo, _ = glm_aic_constant(gp.y, gp.prior_w, np.zeros(0), family_id)
    return part, (float(hi), float(lo))


def merge_setup(*items):
    parts = merge_partials(*[p for p, _ in items])
    hi, lo = np.zeros(1), np.zeros(1)
    for _, (h, l_) in items:
        add_compensated(hi, lo, np.array([h]), np.array([l_]))
    return parts, (float(hi[0]), float(lo[0]))


def partition_eta(gp: GLMPartition, lp: LinearPredictor) -> np.ndarray:
    """The linear predictor on the partition's rows."""
    eta = gp.X @ lp.beta if gp.X.shape[1] else np.zeros(gp.n)
    if lp.off != 0.0:
        eta = eta + (gp.offset if lp.off == 1.0 else lp.off * gp.offset)
    if lp.start != 0.0:
        eta = eta + (gp.eta_start if lp.start == 1.0 else lp.start * gp.eta_start)
    for f, ids, b in zip(gp.structure.factors, gp.ids_of, lp.b):
        local_b = b[ids]
        if f.unit_z:
            eta = eta + local_b[f.codes, 0]
        else:
            eta = eta + np.einsum("ij,ij->i", f.Z, local_b[f.codes])
    return eta


def working_sums(gp: GLMPartition, eta_lp: LinearPredictor, offset_lp: LinearPredictor,
                 joint: bool, family_id: int, link_id: int):
    """A partition's weighted cross-products of [Z X z] (joint) or [Z z] at eta, and its
    deviance (hi, lo) (the in-memory WorkingSystem's, row for row)."""
    if gp.n == 0:
        return _empty_partial(), (0.0, 0.0)
    eta = partition_eta(gp, eta_lp)
    mu, w, wres = np.empty(gp.n), np.empty(gp.n), np.empty(gp.n)
    hi, lo = glm_working(gp.y, eta, gp.prior_w, family_id, link_id, mu, w, wres)
    z = eta - partition_eta(gp, offset_lp) + wres
    X = gp.X if joint else np.zeros((gp.n, 0))
    part = partition_sums(gp.structure, gp.ids_of, gp.n_global, X, z, w, with_R=False)
    return part, (float(hi), float(lo))


def deviance_sums(gp: GLMPartition, eta_lp: LinearPredictor, family_id: int, link_id: int):
    if gp.n == 0:
        return 0.0, 0.0
    hi, lo = glm_deviance(gp.y, partition_eta(gp, eta_lp), gp.prior_w, family_id, link_id)
    return float(hi), float(lo)


def merge_deviances(*items):
    hi, lo = np.zeros(1), np.zeros(1)
    for h, l_ in items:
        add_compensated(hi, lo, np.array([h]), np.array([l_]))
    return float(hi[0]), float(lo[0])


class DaskWorkingSystem(WorkingSystem):
    """The in-memory WorkingSystem's system, its cross-products from one pass over the
    partitions per linearization (`DaskGeneralizedLinearMixedModel.working_pass`)."""

    def __init__(self, model, joint: bool, solver: str, eta):
        from ..fitting.pirls import SYSTEMS, auto_solver

        self.model = model
        self.joint = joint
        self.basis = model.basis if joint else None
        self.p = model.n_fixed if joint else 0
        self.deviance = np.nan
        self.cp = self._crossprods(eta, model.offset if joint else eta)
        if solver == "auto":
            solver = auto_solver(self.cp, model.structure)
        self.solver = solver
        self.system = SYSTEMS[solver](self.cp, model.structure)

    def _crossprods(self, eta, offset_z):
        cp, self.deviance = self.model.working_pass(eta, offset_z, self.joint)
        return self.basis.apply(cp) if self.basis is not None else cp


def _glmm_fitted_task(part, ctx):
    plan, enc, family, beta, modes = ctx
    gp = encode_glm_partition(part, plan, enc, family)
    cols = ("fitted", "linear_predictor", "resid", "resid_pearson", "resid_response")
    if gp.n == 0:
        return pd.DataFrame({c: np.empty(0) for c in cols}, index=gp.index)
    from ..kernels.glm import glm_dev_resids, glm_linkinv, glm_variance

    fid, lid = family.ids
    lp = LinearPredictor(0.0, 1.0, beta, tuple(modes))
    eta = partition_eta(gp, lp)
    mu, me = np.empty(gp.n), np.empty(gp.n)
    glm_linkinv(eta, lid, mu, me)
    d, v = np.empty(gp.n), np.empty(gp.n)
    glm_dev_resids(gp.y, mu, gp.prior_w, fid, d)
    glm_variance(mu, fid, v)
    r = gp.y - mu
    return pd.DataFrame({"fitted": mu, "linear_predictor": eta,
                         "resid": np.sign(r) * np.sqrt(np.maximum(d, 0.0)),
                         "resid_pearson": r * np.sqrt(gp.prior_w) / np.sqrt(v),
                         "resid_response": r}, index=gp.index)


class DaskGLMRows(DaskRows):
    """A Dask GLMM fit's rows: the mean, the linear predictor and the residuals (deviance,
    Pearson, response) per partition, as Dask collections."""

    def __init__(self, data, plan, encoding, family):
        super().__init__(data, plan, encoding)
        self.family = family

    def dask_frame(self, fit, what: str):
        import dask.dataframe as dd
        from dask import delayed

        modes = tuple(np.ascontiguousarray(b) for b in fit.conditional_modes)
        ctx = share((self.plan, self.encoding, self.family, np.asarray(fit.beta), modes))
        cols = ["fitted", "linear_predictor", "resid", "resid_pearson", "resid_response"]
        frame = self.data[self.plan.used]
        meta = pd.DataFrame({c: np.empty(0) for c in cols})
        meta.index = frame._meta.index
        parts = [delayed(_glmm_fitted_task, pure=True)(p, ctx) for p in frame.to_delayed()]
        divisions = frame.divisions if frame.known_divisions else None
        return dd.from_delayed(parts, meta=meta, divisions=divisions, verify_meta=False)

    def scaled_residual_quantiles(self, fit) -> np.ndarray:
        """Min, quartiles and max of the Pearson residuals (Dask's quartiles are approximate)."""
        import dask

        r = self.dask_frame(fit, "all")["resid_pearson"]
        lo, q, hi = dask.compute(r.min(), r.quantile(list(QUANTILES[1:-1])), r.max())
        return np.r_[lo, np.asarray(q), hi]


class DaskGeneralizedLinearMixedModel(GeneralizedLinearMixedModel):
    """A GLMM whose rows stay in Dask (module docstring); built by `glmm_dask`."""

    use_level_kernels = False  # (the level-by-level kernels need a level's rows together)

    @property
    def joint_system(self):
        if self._joint is None:
            self._joint = DaskWorkingSystem(self, True, self.solver_option, self.eta_start)
        return self._joint

    @property
    def modes_system(self):
        if self._modes is None:
            self._modes = DaskWorkingSystem(self, False, self.joint_system.solver, self.eta_start)
        return self._modes

    # ---- the linear predictor as coefficients -----------------------------------------
    def _zero_b(self) -> tuple:
        return tuple(np.zeros((f.n_levels, f.n_columns)) for f in self.structure.factors)

    def fixed_eta(self, beta) -> LinearPredictor:
        return LinearPredictor(0.0, 1.0, np.asarray(beta, dtype=np.float64), self._zero_b())

    def linear_predictor(self, base, theta, us) -> LinearPredictor:
        st = self.structure
        b = tuple(np.ascontiguousarray(us[fi] @ st.T_of(theta, fi).T) for fi in range(len(st.factors)))
        return base + LinearPredictor(0.0, 0.0, np.zeros(self.n_fixed), b)

    # ---- the passes ------------------------------------------------------------------
    def working_pass(self, eta, offset_z, joint: bool):
        from dask import compute, delayed

        items = [delayed(working_sums, pure=True)(gp, eta, offset_z, joint, self.family_id,
                                                  self.link_id) for gp in self.partitions]
        (merged,) = compute(reduce_tree(items, _merge_working, self.split_every))
        total, (hi, lo) = merged
        return assemble(total, self.structure), float(hi + lo)

    def deviance_at(self, eta) -> float:
        from dask import compute, delayed

        items = [delayed(deviance_sums, pure=True)(gp, eta, self.family_id, self.link_id)
                 for gp in self.partitions]
        (hi, lo), = compute(reduce_tree(items, merge_deviances, self.split_every))
        return float(hi + lo)

    # ---- what needs the rows in memory ---------------------------------------------------
    def with_response(self, *args, **kwargs):
        raise NotImplementedError("a new response on Dask data: fit bm.glmm with that column")

    def separation_warning(self, mu):
        return None  # (the linear program needs X and y in memory)

    def refit(self, y=None, *, reml=None, theta0=None):
        if y is not None:
            raise NotImplementedError("refitting a Dask GLMM to new responses (the bootstrap, "
                                      "simulation) needs the rows in memory")
        return super().refit(reml=reml, theta0=theta0)


def _merge_working(*items):
    parts = merge_partials(*[p for p, _ in items])
    return parts, merge_deviances(*[d for _, d in items])


def glmm_dask(formula: str, data, *, family="binomial", link=None, weights=None, offset=None,
              nAGQ: int = 1, solver: str = "auto", pirls: str = "auto",
              split_every: int = 8) -> DaskGeneralizedLinearMixedModel:
    """Set up a GLMM from a Dask DataFrame (module docstring); call ``.fit()`` on the result."""
    from dask import compute, delayed, persist

    t0 = time.perf_counter()
    if isinstance(formula, str) and "~" in formula and "cbind(" in formula.split("~", 1)[0]:
        raise NotImplementedError(
            "cbind() responses with Dask data: give the proportion of successes as the response "
            "and the numbers of trials as weights= (as glmer's weights=), e.g. "
            "ddf.assign(p=ddf.succ / (ddf.succ + ddf.fail), n=ddf.succ + ddf.fail)")
    model = DaskGeneralizedLinearMixedModel.__new__(DaskGeneralizedLinearMixedModel)
    model._options(family, link, nAGQ, solver, pirls)
    if model.nAGQ > 1:
        raise NotImplementedError("nAGQ > 1 (adaptive quadrature) with Dask data: the quadrature "
                                  "needs each level's rows together; use nAGQ = 1 (Laplace)")
    plan, enc, lv, prior, parts, plan_d, _ = prepare_levels(
        formula, data, weights=weights, offset=offset, split_every=split_every)
    enc_d = share(enc)
    fam = model.family
    # the setup pass: X'X, the R factor of X and the family's constant
    encoded = [delayed(encode_glm_partition, pure=True)(p, plan_d, enc_d, fam) for p in parts]
    items = [delayed(setup_sums, pure=True)(gp, model.family_id) for gp in encoded]
    (merged,) = compute(reduce_tree(items, merge_setup, split_every))
    total, (c_hi, c_lo) = merged
    structure = RandomEffectsStructure(enc.terms)
    cp = assemble(total, structure)
    tpl = enc.template
    cp, names, dropped, design_warnings = drop_aliased(tpl, cp, total.R)
    # encoded once more (with the kept columns only), and kept
    encoded = [delayed(encode_glm_partition, pure=True)(p, plan_d, enc_d, fam) for p in parts]
    model.partitions = list(persist(*encoded))
    model.split_every = split_every
    p = len(names)
    design = replace(
        tpl, formula=formula, response=plan.response, y=np.zeros(0), X=np.zeros((0, p)),
        fixed_names=names, terms=enc.terms, n_dropped=lv.n_rows - lv.n_kept,
        row_index=pd.RangeIndex(0), dropped_fixed=dropped, warnings=design_warnings, extra={},
        prior=prior)
    model.formula = formula
    model.response_label = plan.response
    from ..spec import glm_inputs

    model.inputs = glm_inputs.GLMInputs(formula, None)
    model.offset_spec = {"terms": tuple(prior.offset_terms) if prior is not None else (),
                         "argument": prior.offset if prior is not None else None}
    model.design = design
    model.structure = structure
    model.rows = DaskGLMRows(data, plan, enc, fam)
    model.n_obs, model.n_fixed = cp.n_obs, p
    model.aic_constant = float(c_hi + c_lo)
    gram = np.zeros((p + 1, p + 1))
    gram[:p, :p] = cp.gram[:p, :p]
    gram[p, p] = 1.0
    model.basis = FixedEffectsBasis.from_gram(gram, p)
    zero_b = model._zero_b()
    model.eta_start = LinearPredictor(1.0, 0.0, np.zeros(p), zero_b)
    model.offset = LinearPredictor(0.0, 1.0, np.zeros(p), zero_b)
    model.solver_option = solver
    model._joint = model._modes = model._one_factor = None
    model.timings = {"design": time.perf_counter() - t0}
    return model
