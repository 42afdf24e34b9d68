"""Many responses on one design: ``fit_many`` / ``iter_fits``.

    import bigmixed as bm
    res = bm.fit_many("~ age + sex + (1 | doctor)", df, responses=["y1", "y2", "y3"])
    res.fixed_effects        # response, term, estimate, std_error, t_value
    res.statistics           # one row per response: status, objective, logLik, AIC, ...
    res["y2"]                # the LMMResults of one response

    for r in bm.iter_fits("~ age + (1 | doctor)", df, responses="marker_*"):
        print(r.response, r.status, r.fit.beta if r.ok else r.error)   # streamed

What is shared. The fixed-effects matrix X, the grouping codes and Z, the cross-products that
do not involve y (Z'Z, Z'X, X'X, and the co-occurrence blocks between crossed factors) and
CHOLMOD's symbolic analysis are computed once per *missing pattern*. Each response pays only
for one pass computing Z'y, X'y and y'y (`bigmixed.kernels.response.response_crossprod`, the
same chunks and summation order as the full pass, so every fit is bit-identical to
``bm.lmm(f"{y} ~ ...", data).fit()``) and for its own search over theta.

Missing values. Rows with a missing value in a covariate or grouping column are dropped for
every response; rows where a response is missing are dropped for that response only. The
responses are grouped by their pattern of missing values (among the rows kept for the
covariates): one design per pattern, built when its first response is fitted and released
after its last one.

Failures. A response whose fit fails (a non-numeric column, +-Inf, too few rows left after its
missing values, a numerical failure) is reported with status "error" and the error's type and
message; the other responses go on. Problems shared by every response (a bad formula, a
missing covariate) raise at once, before any fit.

Parallelism. Responses are fitted on ``n_jobs`` threads (default: the cores available to the
process). The Numba kernels release the GIL; the optimizer's bookkeeping does not, so on small
designs (where one fit takes a millisecond or two) threads gain little and ``n_jobs=1`` is as
fast. Results come back in the order of `responses` (``ordered=False``: as they finish).

Warnings. Every warning of a fit is kept on it (``ResponseFit.fit.warnings``, the
``warnings`` column of ``statistics``). `iter_fits` lets Python's warnings machinery show them
as usual; `fit_many` records them instead of printing one per response, and issues a single
summary warning when some fits are singular or did not converge.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import math
import os
import re
import threading
import time
import warnings as _warnings
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import progress
from ..io import tidy as _tidy
from ..spec import glm_inputs
from ..spec.design import build_design
from ..errors import (
    BigmixedError,
    DataTypeError,
    FormulaError,
    FormulaSyntaxError,
    MissingColumnError,
    NonFiniteValueError,
    ResponseTypeError,
)
from ..spec.formula import parse_formula, quote_name
from .model import LinearMixedModel
from ..warnings import BigmixedWarning, ConvergenceWarning, SingularFitWarning

__all__ = ["ManyFits", "ResponseFit", "fit_many", "iter_fits", "match_responses"]

_DUMMY = "__bigmixed_response__"
_EMPTY_Z = np.ones((0, 1))


# ======================================================================================
# Records
# ======================================================================================


@dataclass
class ResponseFit:
    """The outcome for one response of a batch.

    response : the column name; index : its position in `responses`
    status : "ok" or "error"
    fit : the LMMResults (None on error)
    error_type, error : the exception's class name and message (on error)
    seconds : wall time spent on this response (cross-products, fit, results)
    """

    response: str
    index: int
    status: str
    fit: object = None
    error_type: str | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_record(self, *, include_versions: bool = False) -> dict:
        """A JSON-able dict: response, status and, for a fit, the `bigmixed.tidy.fit_document`
        entries (fixed effects, variance components, statistics, convergence, warnings,
        timings); for an error, ``error: {type, message}``."""
        head = {"response": self.response, "index": self.index, "status": self.status}
        if not self.ok:
            head["error"] = {"type": self.error_type, "message": self.error}
            head["seconds"] = self.seconds
            return _tidy.jsonable(head)
        doc = _tidy.fit_document(self.fit, include_versions=include_versions)
        doc.pop("format", None)
        doc.pop("format_version", None)
        doc["seconds"] = self.seconds
        return _tidy.jsonable({**head, **doc})


_STAT_COLUMNS = [
    "response", "status", "error_type", "error", "nobs", "n_dropped", "objective", "logLik",
    "AIC", "BIC", "sigma", "converged", "singular", "n_evaluations", "n_warnings", "warnings",
    "seconds",
]


def _stat_row(r: ResponseFit) -> tuple:
    if not r.ok:
        return (r.response, r.status, r.error_type, r.error, None, None, math.nan, math.nan,
                math.nan, math.nan, math.nan, None, None, None, None, None, r.seconds)
    f = r.fit
    ws = _tidy.warning_records(f)
    return (r.response, r.status, None, None, int(f.nobs), int(f.n_dropped), float(f.objective),
            float(f.llf), float(f.aic), float(f.bic), float(f.sigma), bool(f.converged),
            bool(f.is_singular), int(f.optimizer.n_evaluations), len(ws),
            "; ".join(f"{w['type']}: {w['message']}" for w in ws), r.seconds)


class ManyFits:
    """All responses of a batch (`fit_many`), in the order of `responses`.

    Attributes / methods
    --------------------
    results : list[ResponseFit]
    statistics : DataFrame, one row per response (status, error, nobs, n_dropped, objective,
        logLik, AIC, BIC, sigma, converged, singular, n_evaluations, warnings, seconds)
    fixed_effects : DataFrame (response, term, estimate, std_error, t_value)
    variance_components : DataFrame (response, group, term1, term2, variance, sd, corr)
    tidy() : broom.mixed-style long table of both, with a response column
    ranef() : BLUPs in long form with a response column (needs keep_fits=True)
    failed : the ResponseFits with status "error"
    m["y"] : the LMMResults of response "y" (KeyError if it failed or is unknown)
    """

    def __init__(self, results: list, *, keep_fits: bool = True, reml: bool = True,
                 formula: str = "", seconds: float = 0.0):
        self.formula = formula
        self.reml = reml
        self.seconds = seconds
        self._stats = [_stat_row(r) for r in results]
        self._fixed = []
        self._vc = []
        self._tidy = []
        for r in results:
            if r.ok:
                self._fixed.extend((r.response, *row) for row in _tidy.fixed_rows(r.fit))
                self._vc.extend((r.response, *row) for row in _tidy.variance_rows(r.fit))
                self._tidy.extend((r.response, *row) for row in _tidy.tidy_rows(r.fit))
        if not keep_fits:
            results = [dataclasses.replace(r, fit=None) for r in results]
        self.keep_fits = keep_fits
        self.results = results
        self._by_name = {r.response: r for r in results}

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[ResponseFit]:
        return iter(self.results)

    def __getitem__(self, response: str):
        r = self._by_name[response]
        if not r.ok:
            raise KeyError(f"the fit of {response!r} failed: {r.error_type}: {r.error}")
        if r.fit is None:
            raise KeyError(f"fits were not kept (keep_fits=False); {response!r} has only tidy rows")
        return r.fit

    @property
    def responses(self) -> list:
        return [r.response for r in self.results]

    @property
    def failed(self) -> list:
        return [r for r in self.results if not r.ok]

    @property
    def statistics(self) -> pd.DataFrame:
        df = pd.DataFrame(self._stats, columns=_STAT_COLUMNS)
        for c in ("nobs", "n_dropped", "n_evaluations", "n_warnings"):
            df[c] = df[c].astype("Int64")
        for c in ("converged", "singular"):
            df[c] = df[c].astype("boolean")
        return df

    @property
    def fixed_effects(self) -> pd.DataFrame:
        return pd.DataFrame(self._fixed, columns=["response", "term", "estimate", "std_error", "t_value"])

    @property
    def variance_components(self) -> pd.DataFrame:
        return pd.DataFrame(self._vc, columns=["response", "group", "term1", "term2", "variance", "sd", "corr"])

    def tidy(self) -> pd.DataFrame:
        return pd.DataFrame(self._tidy, columns=["response"] + _tidy.TIDY_COLUMNS)

    to_frame = tidy

    def ranef(self, condvar: bool = True) -> pd.DataFrame:
        if not self.keep_fits:
            raise ValueError("BLUPs need the fits: call fit_many(..., keep_fits=True)")
        parts = []
        for r in self.results:
            if r.ok:
                df = _tidy.ranef(r.fit, condvar=condvar)
                df.insert(0, "response", r.response)
                parts.append(df)
        if not parts:
            return pd.DataFrame(columns=["response", "group", "level", "term", "estimate", "cond_sd"])
        return pd.concat(parts, ignore_index=True)

    def __repr__(self) -> str:
        n_ok = sum(1 for r in self.results if r.ok)
        return (f"<ManyFits {'REML' if self.reml else 'ML'} {self.formula!r}: {len(self.results)} "
                f"responses, {n_ok} ok, {len(self.results) - n_ok} failed, {self.seconds:.2f} s>")


# ======================================================================================
# Formula and responses
# ======================================================================================


def _split_formula(formula: str, responses):
    """-> (rhs text, default responses or None). A one-sided '~ rhs' needs `responses`."""
    if not isinstance(formula, str):
        raise FormulaError(f"formula must be a string, got {type(formula).__name__}")
    text = formula.strip()
    if text.startswith("~"):
        rhs = text[1:].strip()
        parse_formula(_without_offsets(f"{_DUMMY} ~ {rhs}"))  # syntax errors name the user's text
        return rhs, None
    parsed = parse_formula(_without_offsets(text))
    if responses is not None:
        raise FormulaSyntaxError(
            f"formula {formula!r} names a response ({parsed.response!r}) and `responses` are "
            f"given too: write the formula without a response, e.g. '~ {text.split('~', 1)[1].strip()}'"
        )
    return text.split("~", 1)[1].strip(), [parsed.response]


def _without_offsets(text: str) -> str:
    """The formula without its offset() terms (they are the offset, glm_inputs.lmm_inputs)."""
    lhs, rhs = text.split("~", 1)
    kept, offsets = glm_inputs.split_offsets(rhs)
    return text if not offsets else f"{lhs.rstrip()} ~ {' + '.join(t.strip() for t in kept)}"


def match_responses(columns, pattern: str) -> list:
    """The column names matching a shell-style glob (``marker_*``), in the data's order."""
    return [c for c in columns if isinstance(c, str) and fnmatch.fnmatchcase(c, pattern)]


def _resolve_responses(data: pd.DataFrame, responses, default) -> list:
    if responses is None:
        if default is None:
            raise FormulaSyntaxError("a one-sided formula ('~ x + (1 | g)') needs `responses`")
        responses = default
    if isinstance(responses, str):
        if any(ch in responses for ch in "*?["):
            out = match_responses(data.columns, responses)
            if not out:
                raise MissingColumnError(f"no column matches the pattern {responses!r}")
            return out
        responses = [responses]
    out = list(responses)
    if not out:
        raise ValueError("`responses` is empty")
    bad = [r for r in out if not isinstance(r, str)]
    if bad:
        raise DataTypeError(f"response names must be strings, got {bad[:3]!r}")
    dup = sorted({r for r in out if out.count(r) > 1})
    if dup:
        raise ValueError(f"responses named more than once: {dup[:5]!r}")
    missing = [r for r in out if r not in data.columns]
    if missing:
        import difflib

        hint = difflib.get_close_matches(missing[0], [str(c) for c in data.columns], n=3)
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise MissingColumnError(
            f"response column {missing[0]!r}{more} is not in the data"
            + (f"; did you mean {', '.join(repr(h) for h in hint)}?" if hint else "")
        )
    return out


def _columns_named_in(text: str, columns) -> list:
    """Columns whose name occurs in `text` as a whole R name (over-inclusive, never misses a
    plain or backquoted name)."""
    out = []
    for c in columns:
        if isinstance(c, str) and c and re.search(r"(?<![A-Za-z0-9._])" + re.escape(c) + r"(?![A-Za-z0-9._])", text):
            out.append(c)
    return out


# ======================================================================================
# The batch
# ======================================================================================


class _Group:
    """Responses with one pattern of missing values: one design, built on first use."""

    def __init__(self, missing_pos, count):
        self.missing_pos = missing_pos  # positions (in the frame) dropped on top of the base rows
        self.remaining = count
        self.lock = threading.Lock()
        self.state = None
        self.error = None

    def acquire(self, build):
        with self.lock:
            if self.state is None and self.error is None:
                try:
                    self.state = build(self.missing_pos)
                except BigmixedError as e:
                    self.error = e
            if self.error is not None:
                raise self.error
            return self.state

    def release(self):
        with self.lock:
            self.remaining -= 1
            if self.remaining <= 0:
                self.state = None  # free the design of a finished pattern


@dataclass
class _State:
    design: object  # Design with the user's row labels
    rows: np.ndarray  # positions (in the data) of the rows used
    model: LinearMixedModel  # template: y-free cross-products, analysed system
    seconds: float


class _Batch:
    def __init__(self, formula, data, responses, *, reml, solver, fit_kwargs, glmm=None,
                 weights=None, offset=None):
        if not isinstance(data, pd.DataFrame):
            raise DataTypeError(f"data must be a pandas DataFrame, got {type(data).__name__}")
        rhs, default = _split_formula(formula, responses)
        self.rhs = rhs
        self.responses = _resolve_responses(data, responses, default)
        self.reml = bool(reml)
        self.glmm = glmm  # None: LMMs; else dict(family=, link=, nAGQ=) for GLMMs
        # prior weights and offset (as bm.lmm's), the same for every response
        self.weights, self.offset = weights, offset
        self.prior = glmm is None and glm_inputs.has_prior(f"y ~ {rhs}", weights, offset)
        if glmm is not None and (weights is not None or offset is not None):
            raise NotImplementedError("weights= / offset= in fit_many are for LMMs; with "
                                      "family= fit the GLMMs one by one with bm.glmm")
        self.solver = solver
        self.fit_kwargs = fit_kwargs
        self.data = data
        self.dummy = _DUMMY
        while self.dummy in data.columns:
            self.dummy += "_"
        self.dummy_formula = f"{self.dummy} ~ {rhs}"
        self.formula = f"~ {rhs}"

        # the columns the design needs, on a RangeIndex (row labels = positions)
        named = rhs + "".join(f" {v}" for v in (weights, offset) if isinstance(v, str))
        used = [c for c in _columns_named_in(named, data.columns) if c != self.dummy]
        frame = data[used].reset_index(drop=True) if used else pd.DataFrame(index=pd.RangeIndex(len(data)))
        self.frame = frame
        t0 = time.perf_counter()
        try:
            base = self._build(None)
        except MissingColumnError:
            # let the full frame name the close matches
            build_design(self.dummy_formula, data.assign(**{self.dummy: 0.0}))
            raise
        self.base_seconds = time.perf_counter() - t0
        base_rows = base.rows

        # group the responses by missing pattern among the base rows
        groups: dict = {None: _Group(None, 0)}
        groups[None].state = base
        self.group_of: list = []
        for name in self.responses:
            key = None
            s = data[name]
            if pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype) or s.dtype == object:
                na = np.asarray(s.isna().to_numpy(), dtype=bool)[base_rows]
                if na.any():
                    pos = base_rows[na]
                    key = pos.tobytes()
                    if key not in groups:
                        groups[key] = _Group(pos, 0)
            groups[key].remaining += 1
            self.group_of.append(groups[key])
        if groups[None].remaining == 0:
            groups[None].state = None
        self.groups = groups

    # ---- designs ----------------------------------------------------------------------
    def _build(self, missing_pos) -> _State:
        t0 = time.perf_counter()
        y = np.zeros(len(self.frame))
        if missing_pos is not None:
            y[missing_pos] = np.nan
        frame = self.frame.assign(**{self.dummy: y})
        progress.report("design", rows=len(frame))  # progress hook
        if self.prior:
            text, frame, extra, prior = glm_inputs.lmm_inputs(
                self.dummy_formula, frame, weights=self.weights, offset=self.offset)
            design = build_design(text, frame, extra_columns=extra)
            design = dataclasses.replace(design, formula=self.dummy_formula, prior=prior)
        else:
            design = build_design(self.dummy_formula, frame, scale_free=self.glmm is not None)
        rows = np.asarray(design.row_index, dtype=np.int64)
        design = dataclasses.replace(design, row_index=self.data.index[rows])
        if self.glmm is not None:
            from .glmm import GeneralizedLinearMixedModel

            model = GeneralizedLinearMixedModel.from_design(design, solver=self.solver, **self.glmm)
        else:
            model = LinearMixedModel.from_design(design, reml=self.reml, solver=self.solver)
        return _State(design, rows, model, time.perf_counter() - t0)

    # ---- one response -----------------------------------------------------------------
    def response_values(self, name: str) -> np.ndarray:
        s = self.data[name]
        dt = s.dtype
        ok = pd.api.types.is_bool_dtype(dt) or (
            pd.api.types.is_numeric_dtype(dt) and not pd.api.types.is_complex_dtype(dt))
        if not ok and dt == object:
            ok = pd.api.types.infer_dtype(s, skipna=True) in ("integer", "floating", "mixed-integer-float",
                                                            "decimal", "boolean", "empty")
        if not ok:
            sample = pd.unique(s.dropna().head(1000))[:3]
            raise ResponseTypeError(
                f"response column {name!r} must be numeric, but it holds values such as "
                f"{', '.join(repr(v) for v in sample)} (dtype {dt})"
            )
        try:
            return s.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as e:
            raise ResponseTypeError(f"response column {name!r} cannot be converted to numbers: {e}") from e

    def model_for(self, st: _State, name: str, y: np.ndarray) -> LinearMixedModel:
        """The template's model with this response (one pass for Z'y, X'y, y'y)."""
        m = st.model.with_response(y, response=name, formula=f"{quote_name(name)} ~ {self.rhs}")
        m.timings = dict(m.timings, design=st.seconds)
        return m

    def fit_one(self, j: int) -> ResponseFit:
        name = self.responses[j]
        group = self.group_of[j]
        t0 = time.perf_counter()
        try:
            values = self.response_values(name)
            st = group.acquire(self._build)
            y = np.ascontiguousarray(values[st.rows])
            bad = ~np.isfinite(y)
            if bad.any():
                labels = list(st.design.row_index[np.flatnonzero(bad)[:5]])
                raise NonFiniteValueError(
                    f"response column {name!r} has {int(bad.sum())} infinite value(s) (+-Inf) in "
                    f"the rows used (row labels {', '.join(map(str, labels))}); replace them with NaN "
                    "or drop those rows"
                )
            if self.glmm is None:  # constant / overflowing: DegenerateResponseError, as bm.lmm
                from ..spec.checks import check_response_values

                check_response_values(y, name)
            model = self.model_for(st, name, y)
            fit = model.fit(**self.fit_kwargs)
            return ResponseFit(name, j, "ok", fit=fit, seconds=time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - one response's failure never stops the batch
            msg = str(e)
            if self.dummy in msg:  # a design error of this response's rows: name the response
                msg = msg.replace(f"'{self.dummy}'", repr(name)).replace(self.dummy, name)
            return ResponseFit(name, j, "error", error_type=type(e).__name__, error=msg,
                               seconds=time.perf_counter() - t0)
        finally:
            group.release()

    # ---- the stream -------------------------------------------------------------------
    def run(self, n_jobs: int, ordered: bool) -> Iterator[ResponseFit]:
        k = len(self.responses)
        if n_jobs <= 1 or k <= 1:
            for j in range(k):
                yield self.fit_one(j)
            return
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        window = 4 * n_jobs
        ex = ThreadPoolExecutor(max_workers=n_jobs, initializer=_worker_init,
                                thread_name_prefix="bigmixed-fit")
        try:
            todo = iter(range(k))
            if ordered:
                pending = deque(ex.submit(self.fit_one, j) for j in _take(todo, window))
                while pending:
                    res = pending.popleft().result()
                    for j in _take(todo, 1):
                        pending.append(ex.submit(self.fit_one, j))
                    yield res
            else:
                pending = {ex.submit(self.fit_one, j) for j in _take(todo, window)}
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        for j in _take(todo, 1):
                            pending.add(ex.submit(self.fit_one, j))
                        yield fut.result()
        finally:
            ex.shutdown(wait=True, cancel_futures=True)


def _take(it, n):
    out = []
    for _ in range(n):
        try:
            out.append(next(it))
        except StopIteration:
            break
    return out


def _worker_init():
    # each worker thread fits one response at a time: no nested Numba parallelism
    try:
        import numba

        numba.set_num_threads(1)
    except Exception:  # noqa: BLE001, S110 # pragma: no cover - numba missing or old
        pass


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _n_jobs(n_jobs) -> int:
    if n_jobs is None:
        return available_cores()
    n_jobs = int(n_jobs)
    if n_jobs < 0:  # joblib's convention: -1 = all cores, -2 = all but one
        return max(1, available_cores() + 1 + n_jobs)
    return max(1, n_jobs)


# ======================================================================================
# Public API
# ======================================================================================


def iter_fits(formula: str, data: pd.DataFrame, responses: Sequence[str] | str | None = None, *,
              reml: bool = True, n_jobs: int | None = None, solver: str = "auto",
              ordered: bool = True, family=None, link: str | None = None, nAGQ: int = 1,
              weights=None, offset=None, **fit_kwargs) -> Iterator[ResponseFit]:
    """Fit one model per response on a shared design; yield a `ResponseFit` per response.

    Parameters
    ----------
    formula : "~ x + (1 | g)" (one-sided, with `responses`) or "y ~ x + (1 | g)" (one response)
    data : pandas.DataFrame holding the covariates and the responses
    responses : list of column names, or a glob pattern such as "marker_*"
    reml : REML (default) or ML
    n_jobs : threads (None: the cores available; 1: in the calling thread)
    solver : as in `bm.lmm`
    ordered : yield in the order of `responses` (default) or as fits finish
    family, link, nAGQ : a GLMM per response (as `bm.glmm`; e.g. family="binomial" for binary
        phenotypes); `reml` does not apply
    weights, offset : prior weights and an offset as in `bm.lmm` (a column name, an expression
        or an array over the rows of `data`; offset() terms in the formula too), the same for
        every response (LMMs only)
    fit_kwargs : passed to the model's ``fit`` (e.g. polish=True)

    Problems shared by all responses (formula, covariates, a response column that does not
    exist) raise here, before anything is fitted; the fits run as the iterator is consumed.
    """
    from ..spec.checks import as_pandas, check_bool, check_int, check_lmm_options

    check_lmm_options("fit_many", reml=reml, solver=solver)  # typed: bm.OptionError
    check_int("fit_many", "n_jobs", n_jobs, allow_none=True)
    check_bool("fit_many", "ordered", ordered)
    if family is not None:
        check_int("fit_many", "nAGQ", nAGQ, 0)
    if responses is not None and not isinstance(responses, str):
        responses = list(responses)
    names = [] if responses is None else [responses] if isinstance(responses, str) else responses
    data = as_pandas(data, formula, *[r for r in names if isinstance(r, str)])
    glmm = None if family is None else dict(family=family, link=link, nAGQ=nAGQ)
    batch = _Batch(formula, data, responses, reml=reml, solver=solver, fit_kwargs=fit_kwargs,
                   glmm=glmm, weights=weights, offset=offset)
    # progress hook: reports stage "responses" (responses_done / _total / _failed) per result
    return progress.iterate(batch.run(_n_jobs(n_jobs), ordered), total=len(batch.responses))


def fit_many(formula: str, data: pd.DataFrame, responses: Sequence[str] | str | None = None, *,
             reml: bool = True, n_jobs: int | None = None, solver: str = "auto",
             keep_fits: bool = True, family=None, link: str | None = None, nAGQ: int = 1,
             weights=None, offset=None, **fit_kwargs) -> ManyFits:
    """Fit one model per response on a shared design and collect the results (`ManyFits`).

    Same arguments as `iter_fits`; with keep_fits=False only the tidy tables are kept (no
    LMMResults per response: less memory for many responses on a large design).
    The fits' warnings are recorded (``statistics.warnings``) rather than printed; one summary
    warning says how many fits were singular or did not converge.
    """
    from ..spec.checks import check_bool

    check_bool("fit_many", "keep_fits", keep_fits)
    t0 = time.perf_counter()
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", BigmixedWarning)
        results = list(iter_fits(formula, data, responses, reml=reml, n_jobs=n_jobs, solver=solver,
                                 ordered=True, family=family, link=link, nAGQ=nAGQ,
                                 weights=weights, offset=offset, **fit_kwargs))
    out = ManyFits(results, keep_fits=keep_fits, reml=reml, formula=formula,
                   seconds=time.perf_counter() - t0)
    n_sing = sum(1 for r in results if r.ok and any(isinstance(w, SingularFitWarning) for w in r.fit.warnings))
    n_conv = sum(1 for r in results if r.ok and any(isinstance(w, ConvergenceWarning) for w in r.fit.warnings))
    if n_sing or n_conv:
        parts = []
        if n_sing:
            parts.append(f"{n_sing} singular (boundary) fit(s)")
        if n_conv:
            parts.append(f"{n_conv} fit(s) that did not converge")
        _warnings.warn(f"fit_many: {' and '.join(parts)} among {len(results)} responses; "
                       "see .statistics (columns singular, converged, warnings)",
                       BigmixedWarning, stacklevel=2)
    return out
