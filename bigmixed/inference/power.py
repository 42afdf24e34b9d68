"""Power of a design by simulation (the job of R's pamm / simr).

    import bigmixed as bm
    res = bm.power_simulation(
        "y ~ treat + time + (1 | site)", design_frame,
        effects={"(Intercept)": 10.0, "treat": 0.3, "time": 0.1},
        variance_components={"site": 0.5},          # SD of the site intercept
        sigma=1.0, term="treat", nsim=200, seed=0)
    res.power, res.ci                                # rejection rate and its binomial CI
    res.p_values                                     # one row per simulation
    print(res.summary())

What is simulated. On the rows of `data` (the design: covariates and grouping columns; the
response column need not exist), y = X beta + Z b + e with beta from `effects` (coefficients
not named are 0), b ~ N(0, G_k) independently per level of each random-effects term (G_k from
`variance_components`) and e ~ N(0, sigma^2). Each simulated response is fitted on the same
design and the named term is tested:

* test="satterthwaite": t test (one coefficient) or F test (a term with several coefficients,
  e.g. a factor) of the term's coefficients = 0, with Satterthwaite's denominator df (lmerTest;
  ``bigmixed.inference.contest_md``, which for one coefficient is the t test of
  ``fit.fixed_effects_test()``), on the REML fit (``reml=True``, the default);
* test="lrt": likelihood-ratio test (``bm.anova``) of the ML fit against the ML fit of the
  model without the term's columns, chi2 with as many df as columns;
* test="wald": the same contrast as "satterthwaite" with a normal / chi2 reference (no df).

The rejection rate at `alpha` is returned with an exact (Clopper-Pearson) binomial confidence
interval, and the per-simulation p-values and estimates are kept. Simulation s draws from its
own stream ``SeedSequence(seed).spawn(nsim)[s]``: results are deterministic for a seed, and the
first k simulations of a run with nsim >= k are those of a run with nsim = k.

Cost. The design (formula evaluation, X, Z, grouping codes) is built once; every simulation
only swaps the response into it (``LinearMixedModel.from_design`` with the new y, as
``bootstrap`` does: one pass over the rows for the cross-products, then the fit, started at
the true variance parameters).
"""
from __future__ import annotations

import dataclasses
import math
import time
import types
import warnings as _warnings

import numpy as np
import pandas as pd

from ..warnings import BigmixedWarning, SingularFitWarning
from ..spec.design import build_design

__all__ = ["PowerResult", "power_simulation", "simulate_responses"]

TESTS = ("satterthwaite", "lrt", "wald")
_DUMMY = "__bigmixed_power_response__"


# ======================================================================================
# result
# ======================================================================================

@dataclasses.dataclass
class PowerResult:
    """Result of `power_simulation`.

    table : one row per tested term: term, coefficients, effect (the simulated values), test,
        nsim, n_ok (fits that gave a p-value), rejections, power, lower, upper (binomial CI).
    p_values : (nsim, terms) DataFrame of p-values (NaN where a fit failed).
    estimates : (nsim, p) DataFrame of the fixed-effect estimates of the full model.
    """

    table: pd.DataFrame
    p_values: pd.DataFrame
    estimates: pd.DataFrame
    alpha: float
    level: float
    test: str
    nsim: int
    seed: object
    formula: str
    n_failed: int = 0
    n_singular: int = 0
    failures: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def power(self):
        """The rejection rate: a float for one tested term, else a Series by term."""
        s = self.table.set_index("term")["power"]
        return float(s.iloc[0]) if len(s) == 1 else s

    @property
    def ci(self):
        """Clopper-Pearson interval of the rejection rate: (lower, upper) for one tested term,
        else a DataFrame by term."""
        t = self.table.set_index("term")[["lower", "upper"]]
        return (float(t.iloc[0, 0]), float(t.iloc[0, 1])) if len(t) == 1 else t

    def summary(self) -> str:
        test = {"satterthwaite": "t/F test, Satterthwaite df (REML)",
                "lrt": "likelihood-ratio test (ML) against the model without the term",
                "wald": "Wald z/chi2 test"}.get(self.test, self.test)
        lines = [f"Power by simulation: {self.formula}",
                 f"{self.nsim} simulations (seed {self.seed}), alpha = {self.alpha:g}, {test}"]
        if self.n_failed:
            lines.append(f"{self.n_failed} simulation(s) failed (excluded); e.g. {self.failures[0]}")
        if self.n_singular:
            lines.append(f"{self.n_singular} singular fit(s) (kept)")
        lines.append(f"{'term':<20} {'power':>7}   {self.level:.0%} CI           rejections")
        for r in self.table.itertuples():
            lines.append(f"{r.term:<20} {r.power:7.3f}   [{r.lower:.3f}, {r.upper:.3f}]   "
                         f"{r.rejections}/{r.n_ok}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        parts = ", ".join(f"{r.term}: {r.power:.3f} [{r.lower:.3f}, {r.upper:.3f}]"
                          for r in self.table.itertuples())
        return f"<PowerResult {self.test}, nsim {self.nsim}, alpha {self.alpha:g}: {parts}>"


def binomial_ci(k: int, n: int, level: float = 0.95) -> tuple:
    """Exact (Clopper-Pearson) interval for a binomial proportion k/n."""
    from scipy import stats

    if n <= 0:
        return (np.nan, np.nan)
    a = 1.0 - level
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


# ======================================================================================
# inputs
# ======================================================================================

def _prepare(formula: str, data: pd.DataFrame):
    """(formula with a response, data holding that response): the response column is only a
    placeholder (its values are replaced), so it may be absent from `data`."""
    if not isinstance(data, pd.DataFrame):
        from ..errors import DataTypeError

        raise DataTypeError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    if not isinstance(formula, str):
        from ..errors import FormulaError

        raise FormulaError(f"formula must be a string, got {type(formula).__name__}")
    text = formula.strip()
    if text.startswith("~"):
        name = _DUMMY
        while name in data.columns:
            name += "_"
        return f"{name} {text}", data.assign(**{name: 0.0})
    from ..spec.formula import parse_formula

    response = parse_formula(text).response
    if response not in data.columns:
        data = data.assign(**{response: 0.0})
    return text, data


def _fixed_vector(design, effects) -> np.ndarray:
    names = list(design.fixed_names)
    effects = dict(effects or {})
    beta = np.zeros(len(names))
    unknown = []
    for k, v in effects.items():
        if k in names:
            beta[names.index(k)] = float(v)
        elif k in getattr(design, "dropped_fixed", []):
            raise ValueError(f"effect {k!r} names a fixed-effects column dropped as aliased "
                             f"(rank deficient design); the columns are {names}")
        else:
            unknown.append(k)
    if unknown:
        raise ValueError(f"effects name unknown fixed-effect coefficient(s) {unknown}; the model's "
                         f"coefficients are {names}")
    return beta


def _group_columns(design) -> dict:
    """{group: [column names over its terms, in formula order]}."""
    out: dict = {}
    for t in design.terms:
        out.setdefault(t.group, []).extend(t.column_names)
    return out


def _as_cov(group, names, value) -> np.ndarray:
    P = len(names)
    if isinstance(value, pd.DataFrame):
        missing = [n for n in names if n not in value.index or n not in value.columns]
        if missing:
            raise ValueError(f"covariance of {group!r} lacks rows/columns {missing}; needs {names}")
        return value.loc[names, names].to_numpy(dtype=float)
    if isinstance(value, dict):
        if "sd" not in value:
            raise ValueError(f"variance_components[{group!r}] as a dict needs 'sd' (and optionally "
                             "'corr')")
        sd = np.atleast_1d(np.asarray(value["sd"], dtype=float))
        if len(sd) != P:
            raise ValueError(f"variance_components[{group!r}]['sd'] has {len(sd)} value(s); "
                             f"{group!r} has {P} random-effects column(s) {names}")
        corr = value.get("corr", 0.0)
        C = np.asarray(corr, dtype=float)
        if C.ndim == 0:
            C = np.full((P, P), float(C))
            np.fill_diagonal(C, 1.0)
        if C.shape != (P, P):
            raise ValueError(f"variance_components[{group!r}]['corr'] must be a number or a "
                             f"{P}x{P} matrix")
        return sd[:, None] * C * sd[None, :]
    a = np.asarray(value, dtype=float)
    if a.ndim == 0:
        if P != 1:
            raise ValueError(f"variance_components[{group!r}] is one number (an SD), but {group!r} "
                             f"has {P} random-effects columns {names}: give their SDs (uncorrelated), "
                             f"a {P}x{P} covariance matrix or {{'sd': [...], 'corr': ...}}")
        return np.array([[float(a) ** 2]])
    if a.ndim == 1:
        if len(a) != P:
            raise ValueError(f"variance_components[{group!r}] has {len(a)} SD(s); {group!r} has "
                             f"{P} random-effects column(s) {names}")
        return np.diag(a ** 2)
    if a.shape != (P, P):
        raise ValueError(f"variance_components[{group!r}] must be {P}x{P} (columns {names}), "
                         f"got shape {a.shape}")
    return a


def _from_table(table: pd.DataFrame, groups: dict):
    """A VarCorr-style table (group, term1, term2, variance; like fit.variance_components)."""
    need = {"group", "term1", "variance"}
    if not need <= set(table.columns):
        raise ValueError("a variance_components table needs the columns group, term1, term2, "
                         "variance (as fit.variance_components)")
    covs, sigma = {}, None
    for r in table.itertuples(index=False):
        g = r.group
        t1 = r.term1
        t2 = getattr(r, "term2", None)
        if g == "Residual":
            sigma = math.sqrt(float(r.variance))
            continue
        if g not in groups:
            raise ValueError(f"variance_components table names group {g!r}, not in the formula "
                             f"(groups: {list(groups)})")
        names = groups[g]
        M = covs.setdefault(g, np.full((len(names), len(names)), np.nan))
        if t1 not in names or (t2 is not None and not pd.isna(t2) and t2 not in names):
            raise ValueError(f"variance_components table: unknown column {t1!r}/{t2!r} of {g!r} "
                             f"(columns {names})")
        i = names.index(t1)
        j = i if t2 is None or pd.isna(t2) else names.index(t2)
        M[i, j] = M[j, i] = float(r.variance)
    for g, M in covs.items():
        d = np.diag(M)
        if np.isnan(d).any():
            raise ValueError(f"variance_components table lacks a variance of {g!r}")
        M[np.isnan(M)] = 0.0
    return covs, sigma


def _term_factors(design, variance_components, sigma):
    """Per random-effects term (user order): the lower Cholesky factor of its covariance G_k;
    and sigma."""
    from .profile import chol_psd

    groups = _group_columns(design)
    if isinstance(variance_components, pd.DataFrame):
        covs, table_sigma = _from_table(variance_components, groups)
        if sigma is None:
            sigma = table_sigma
    elif isinstance(variance_components, dict):
        extra = [g for g in variance_components if g not in groups]
        if extra:
            raise ValueError(f"variance_components names group(s) {extra} not in the formula "
                             f"(groups: {list(groups)})")
        covs = {g: _as_cov(g, groups[g], v) for g, v in variance_components.items() if g in groups}
    else:
        raise TypeError("variance_components must be a dict {group: SD, SDs, covariance matrix or "
                        "{'sd': ..., 'corr': ...}} or a table like fit.variance_components")
    missing = [g for g in groups if g not in covs]
    if missing:
        raise ValueError(f"variance_components lacks group(s) {missing}; the formula's groups and "
                         f"their columns: {groups}")
    if sigma is None:
        raise ValueError("give sigma, the residual SD (or a Residual row in the variance_components "
                         "table)")
    sigma = float(sigma)
    if not (sigma > 0 and np.isfinite(sigma)):
        raise ValueError(f"sigma must be a positive number, got {sigma}")
    for g, M in covs.items():
        M = np.asarray(M, dtype=float)
        if not np.all(np.isfinite(M)) or not np.allclose(M, M.T, rtol=1e-10, atol=1e-12):
            raise ValueError(f"the covariance of {g!r} must be a finite symmetric matrix")
        w = np.linalg.eigvalsh(M)
        if w.min() < -1e-10 * max(1.0, abs(w).max()):
            raise ValueError(f"the covariance of {g!r} is not positive semi-definite "
                             f"(eigenvalues {w})")
    factors = []
    offsets: dict = {}
    for t in design.terms:
        names = groups[t.group]
        off = offsets.get(t.group, 0)
        offsets[t.group] = off + t.n_columns
        sl = slice(off, off + t.n_columns)
        M = np.asarray(covs[t.group], dtype=float)
        outside = np.delete(M[sl, :], np.arange(off, off + t.n_columns), axis=1)
        if np.any(np.abs(outside) > 0):
            raise ValueError(f"the covariance of {t.group!r} correlates columns of separate terms "
                             f"({names}); separate (||) terms are independent")
        factors.append(chol_psd(0.5 * (M[sl, sl] + M[sl, sl].T)))
    return factors, sigma


def _start_theta(structure, design, factors, sigma):
    """theta of the simulated truth (lme4's order), a start for every fit; None if on a bound."""
    theta = []
    for k in structure.term_order:
        L = factors[k] / sigma
        nc = L.shape[0]
        theta += [L[i, j] for j in range(nc) for i in range(j, nc)]
    theta = np.asarray(theta, dtype=np.float64)
    diag = structure.theta_row == structure.theta_col
    if len(theta) != structure.n_theta or np.any(theta[diag] <= 1e-6):
        return None
    return theta


def _resolve_terms(design, term, effects) -> list:
    """[(label, column indices)] of the tested terms: a coefficient name or a term label of
    the fixed part (R's term labels, e.g. 'group' for a factor's columns, 'age:sex')."""
    from .fixed_terms import fixed_terms

    names = list(design.fixed_names)
    if term is None:
        term = [k for k in dict(effects or {}) if k != "(Intercept)"]
        if not term:
            raise ValueError("name the term to test: term='x' (or give its effect in `effects`)")
    if isinstance(term, str):
        term = [term]
    shim = types.SimpleNamespace(design=design)
    try:
        _, fterms = fixed_terms(shim)
    except Exception:  # noqa: BLE001 - no term structure available: coefficients only
        fterms = []
    labels = {ft.label: list(ft.columns) for ft in fterms}
    out = []
    for t in term:
        if t in names:
            out.append((t, [names.index(t)]))
        elif labels.get(t):
            out.append((t, labels[t]))
        else:
            raise ValueError(f"cannot test {t!r}: not a fixed-effect coefficient {names} nor a "
                             f"term {list(labels)}")
    return out


# ======================================================================================
# the simulation
# ======================================================================================

class _Simulator:
    """The design built once, and y = X beta + Z b + e for simulation s of a seed."""

    def __init__(self, formula, data, effects, variance_components, sigma, seed, nsim):

        text, frame = _prepare(formula, data)
        design = build_design(text, frame)
        self.design = dataclasses.replace(design, warnings=[])
        self.beta = _fixed_vector(self.design, effects)
        self.factors, self.sigma = _term_factors(self.design, variance_components, sigma)
        self.mean = self.design.X @ self.beta
        self.children = np.random.SeedSequence(seed).spawn(int(nsim))

    def draw(self, s: int) -> np.ndarray:
        rng = np.random.default_rng(self.children[s])
        y = self.mean.copy()
        for t, L in zip(self.design.terms, self.factors):
            b = rng.standard_normal((t.n_levels, t.n_columns)) @ L.T
            if t.n_columns == 1:
                y += t.Z[:, 0] * b[t.codes, 0]
            else:
                y += np.einsum("ij,ij->i", t.Z, b[t.codes])
        y += self.sigma * rng.standard_normal(len(y))
        return np.ascontiguousarray(y)


def simulate_responses(formula: str, data: pd.DataFrame, effects: dict, variance_components,
                       sigma: float | None = None, *, nsim: int = 1, seed=0) -> pd.DataFrame:
    """The responses `power_simulation` fits, with the same arguments and seed: an (n, nsim)
    DataFrame indexed by the labels of the rows used (rows with a missing value in a model
    column are dropped), column s = simulation s."""
    sim = _Simulator(formula, data, effects, variance_components, sigma, seed, nsim)
    out = np.column_stack([sim.draw(s) for s in range(int(nsim))])
    return pd.DataFrame(out, index=sim.design.row_index)

def power_simulation(formula: str, data: pd.DataFrame, effects: dict, variance_components,
                     sigma: float | None = None, *, term=None, nsim: int = 200,
                     alpha: float = 0.05, seed=0, test: str = "satterthwaite",
                     reml: bool = True, level: float = 0.95, progress=None) -> PowerResult:
    """Power of a test of fixed effects for a design, by simulation.

    Parameters
    ----------
    formula : str
        lme4 formula; the response (left of ``~``, may be omitted: ``"~ x + (1 | g)"``) is
        simulated, so its column need not be in `data`.
    data : DataFrame
        The design: covariates and grouping columns for every planned observation. Rows with
        a missing value in a column the model uses are dropped, as in a fit.
    effects : dict
        Fixed-effect coefficients by lme4 name ("(Intercept)", "x", "groupB", "x:z", ...);
        those not named are 0.
    variance_components : dict or DataFrame
        Per grouping factor (as written after the ``|``): an SD (one random-effects column), a
        sequence of SDs (uncorrelated columns), a covariance matrix (columns in formula order,
        e.g. ["(Intercept)", "time"]) or ``{"sd": [...], "corr": r or matrix}``. Or a table like
        ``fit.variance_components`` of a pilot fit (its Residual row gives sigma).
    sigma : float
        Residual SD.
    term : str or list of str, optional
        What to test: a coefficient name or a term label of the fixed part (a factor's
        several coefficients are tested jointly). Default: every name in `effects` except the
        intercept.
    nsim, alpha, seed : simulations, test level, seed (any numpy SeedSequence entropy).
    test : {"satterthwaite", "lrt", "wald"}
        See the module docstring.
    reml : bool
        REML fits for the "satterthwaite" and "wald" tests (the LRT always uses ML fits).
    level : float
        Confidence level of the binomial interval of the power.
    progress : callable(done, total), optional

    Returns
    -------
    PowerResult : ``.power`` (rejection rate), ``.ci`` (Clopper-Pearson), ``.p_values``,
    ``.estimates``, ``.table``, ``.summary()``.
    """
    from .compare import anova
    from .satterthwaite import contest_md
    from ..fitting.model import LinearMixedModel

    test = str(test).lower()
    if test in ("lr", "likelihood-ratio", "likelihood_ratio", "anova"):
        test = "lrt"
    if test not in TESTS:
        raise ValueError(f"test must be one of {TESTS}, not {test!r}")
    nsim = int(nsim)
    if nsim < 1:
        raise ValueError("nsim must be >= 1")
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    t_start = time.perf_counter()
    sim = _Simulator(formula, data, effects, variance_components, sigma, seed, nsim)
    design, beta = sim.design, sim.beta
    tested = _resolve_terms(design, term, effects)
    names = list(design.fixed_names)
    p = design.X.shape[1]

    # reduced designs for the LRT: the term's columns removed from X
    reduced = {}
    if test == "lrt":
        for label, cols in tested:
            keep = [j for j in range(p) if j not in set(cols)]
            reduced[label] = dataclasses.replace(
                design, X=np.ascontiguousarray(design.X[:, keep]),
                fixed_names=[names[j] for j in keep], formula=f"{design.formula} without {label}")
    fit_reml = bool(reml) if test != "lrt" else False
    from ..spec.structure import RandomEffectsStructure

    structure = RandomEffectsStructure(design.terms)
    theta0 = _start_theta(structure, design, sim.factors, sim.sigma)
    L_rows = {label: np.eye(p)[cols] for label, cols in tested}

    # one model per design, refitted to each simulated response (one pass for y; the
    # symbolic factorization reused)
    full_model = LinearMixedModel.from_design(design, reml=fit_reml)
    reduced_models = {label: LinearMixedModel.from_design(d, reml=False) for label, d in reduced.items()}
    pvals = np.full((nsim, len(tested)), np.nan)
    ests = np.full((nsim, p), np.nan)
    failures, n_failed, n_singular = [], 0, 0
    for s in range(nsim):
        y = sim.draw(s)
        try:
            with _warnings.catch_warnings(record=True) as caught:
                _warnings.simplefilter("always", BigmixedWarning)
                fit = full_model.refit(y=y, theta0=theta0)
                ests[s] = fit.beta
                for k, (label, cols) in enumerate(tested):
                    if test == "lrt":
                        fit0 = reduced_models[label].refit(y=y, theta0=np.asarray(fit.theta))
                        tab = anova(fit0, fit)
                        pvals[s, k] = float(tab["Pr(>Chisq)"].iloc[-1])
                    else:
                        ddf = "satterthwaite" if test == "satterthwaite" else "asymptotic"
                        pvals[s, k] = float(contest_md(fit, L_rows[label], ddf=ddf)["p_value"])
            if any(issubclass(w.category, SingularFitWarning) for w in caught):
                n_singular += 1
        except Exception as exc:  # noqa: BLE001 - a failed simulation is counted, not fatal
            n_failed += 1
            pvals[s] = np.nan
            if len(failures) < 5:
                failures.append(f"simulation {s}: {type(exc).__name__}: {exc}")
        if progress is not None:
            progress(s + 1, nsim)

    rows = []
    for k, (label, cols) in enumerate(tested):
        pv = pvals[:, k]
        ok = np.isfinite(pv)
        n_ok = int(ok.sum())
        rej = int((pv[ok] < alpha).sum())
        lo, hi = binomial_ci(rej, n_ok, level)
        rows.append({"term": label, "coefficients": [names[j] for j in cols],
                     "effect": [float(beta[j]) for j in cols] if len(cols) > 1 else float(beta[cols[0]]),
                     "test": test, "nsim": nsim, "n_ok": n_ok, "rejections": rej,
                     "power": rej / n_ok if n_ok else np.nan, "lower": lo, "upper": hi})
    table = pd.DataFrame(rows)
    p_values = pd.DataFrame(pvals, columns=[label for label, _ in tested])
    p_values.index.name = "simulation"
    estimates = pd.DataFrame(ests, columns=names)
    estimates.index.name = "simulation"
    return PowerResult(table=table, p_values=p_values, estimates=estimates, alpha=float(alpha),
                       level=float(level), test=test, nsim=nsim, seed=seed, formula=formula,
                       n_failed=n_failed, n_singular=n_singular, failures=failures,
                       seconds=time.perf_counter() - t_start)
