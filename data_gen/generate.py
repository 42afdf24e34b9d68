"""Deterministic generator of the seeds' hdp-style example, at any size.

The seed lecture notes use a hospital/doctor/patient ("hdp") data set: J = 407
doctors each see n_j patients (2 to 40, about 21 on average, N = 8525 in all);
the outcome is a continuous mobility score explained by Age, Married, Sex, WBC
and RBC, with a random intercept per doctor.  :func:`generate_hdp` simulates
data of that shape, from the seeds' size up to tens of millions of rows, and
returns the truth alongside it so that fitted models can be checked.

Model (one row = one patient visit)::

    mobility = b0 + b_age*age + b_married*married + b_sex*sex + b_wbc*wbc
               + b_rbc*rbc + b_time*time                     (fixed part)
               + u_doctor + s_doctor*time                    (doctor intercept / slope)
               + u_patient                                   (patient in doctor)
               + u_hospital                                  (crossed or nesting hospital)
               + e,            e ~ N(0, residual_sd^2)

with (intercept, age, married, sex, wbc, rbc) = (4.782, .025, .011, .012, 0,
-.009), doctor intercept SD 1 and, by our choice (the notes do not give one),
residual SD 1.  Covariates are drawn to look like the notes' example rows::

    age      N(57, 11) clipped to [18, 99], 2 decimals   (e.g. 64.97, 53.92)
    married  Bernoulli(0.6), 0/1 as float64
    sex      Bernoulli(0.5), 0 female / 1 male, as float64
    wbc      N(6000, 1000) clipped to [2000, 15000], whole numbers (e.g. 6087)
    rbc      N(4.7, 0.45) clipped to [3, 6.5], 2 decimals (e.g. 4.87)

Age, married and sex belong to the patient (constant across visits); wbc and
rbc are measured at every visit.

Binary and count outcomes (opt-in, for GLMMs; ``binary=True`` / ``counts=True``)::

    remission ~ Bernoulli(p),   g(p) = c0 + c_age*age + c_married*married + c_sex*sex
                                       + c_wbc*wbc + c_rbc*rbc
                                       + v_doctor + v_hospital
        g = logit (default), probit or cloglog (``binary_link``),
        v_doctor ~ N(0, binary_doctor_sd^2), v_hospital ~ N(0, binary_hospital_sd^2)

    n_events ~ Poisson(mu),     log(mu) = log(exposure) + d0 + d_age*age + ...
                                          + w_doctor + w_hospital
        exposure ~ U(0.5, 3) follow-up years, 2 decimals (the offset),
        w_doctor ~ N(0, count_doctor_sd^2), w_hospital ~ N(0, count_hospital_sd^2)

The coefficients are on the link scale (defaults in ``BINARY_BETA[link]`` and
``COUNT_BETA``: about 30% events for every link, mean count about 2).  Hospital
effects enter only when the frame has hospitals.  The outcomes use the visit's
covariates (before ``missing_share`` blanks any) and are never blanked
themselves.  Both come from their own random streams, which are drawn after
and independently of every other ingredient: turning them on leaves every
other column (and every other truth entry) bit for bit the same.

Determinism: every ingredient (group sizes, patient covariates, visit
covariates, doctor / patient / hospital effects, residuals, missingness, visit
times) has its own random stream spawned from ``np.random.SeedSequence(seed)``.
The same arguments therefore give the identical frame byte for byte, and
switching one option on (say ``missing_share``) leaves the draws of the other
ingredients unchanged.

Everything is vectorised numpy (no per-doctor Python loop): 10 million rows
for 500 000 doctors take a few seconds and about 0.6 GB.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

__all__ = ["GeneratedData", "generate_hdp", "tablets", "SEED_BETA",
           "SEED_N_DOCTORS", "SEED_N_PATIENTS", "BINARY_BETA", "BINARY_DOCTOR_SD",
           "COUNT_BETA", "BINARY_LINKS"]

#: True fixed effects of the seeds' hdp example, by predictor name.
SEED_BETA: dict[str, float] = {
    "intercept": 4.782,
    "age": 0.025,
    "married": 0.011,
    "sex": 0.012,
    "wbc": 0.0,
    "rbc": -0.009,
}
SEED_N_DOCTORS = 407
SEED_N_PATIENTS = 8525

#: Links of the binary outcome.
BINARY_LINKS = ("logit", "probit", "cloglog")
#: Default fixed effects (link scale) of the binary outcome ``remission``, per link.
#: With the default doctor SDs each gives about 30% events at the seeds' covariates.
BINARY_BETA: dict[str, dict[str, float]] = {
    "logit": {"intercept": -3.9, "age": 0.03, "married": 0.3, "sex": -0.4,
              "wbc": -0.0002, "rbc": 0.5},
    "probit": {"intercept": -2.3, "age": 0.018, "married": 0.18, "sex": -0.24,
               "wbc": -0.00012, "rbc": 0.3},
    "cloglog": {"intercept": -3.4, "age": 0.025, "married": 0.25, "sex": -0.35,
                "wbc": -0.00017, "rbc": 0.4},
}
#: Default doctor random-intercept SD of the binary outcome, per link.
BINARY_DOCTOR_SD: dict[str, float] = {"logit": 1.0, "probit": 0.6, "cloglog": 0.8}
#: Default fixed effects (log scale, events per year of exposure) of ``n_events``.
COUNT_BETA: dict[str, float] = {"intercept": -0.25, "age": 0.01, "married": -0.1,
                                "sex": 0.15, "wbc": 0.0001, "rbc": -0.2}
# follow-up years: U(EXPOSURE_RANGE), rounded to 2 decimals
EXPOSURE_RANGE = (0.5, 3.0)

COVARIATES = ("age", "married", "sex", "wbc", "rbc")
# Columns that ``missing_share`` may blank out.
MISSABLE = ("age", "wbc", "rbc", "mobility")

# Fixed roles of the spawned random streams (never reorder: it would change
# every generated data set).
_S_SIZES, _S_PATIENT, _S_VISIT, _S_DOCTOR, _S_PATIENT_RE, _S_HOSPITAL, \
    _S_RESID, _S_MISSING, _S_TIME, _S_BINARY, _S_COUNT = range(11)
# SeedSequence.spawn(n) gives children 0..n-1 whatever n is, so the binary and
# count streams (9, 10) were added without moving streams 0..8.
_N_STREAMS = 11


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


class TruthIO:
    """``truth`` (a dict of the generating parameters) as JSON; shared by the generators."""

    truth: dict

    def truth_jsonable(self) -> dict[str, Any]:
        """``truth`` with numpy arrays turned into lists (for json.dump)."""
        return {k: _jsonable(v) for k, v in self.truth.items()}

    def truth_to_json(self, path: str | os.PathLike) -> None:
        """Write ``truth`` as JSON."""
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(self.truth_jsonable(), fh, indent=1)
            fh.write("\n")


@dataclass
class GeneratedData(TruthIO):
    """A generated data set and the truth behind it.

    ``data``  -- pandas DataFrame, one row per patient visit, grouped by doctor.
    ``truth`` -- dict with ``beta`` (dict by predictor name), the variance
    parameters ``sd_doctor``, ``slope_sd``, ``slope_corr``, ``patient_sd``,
    ``hospital_sd``, ``residual_sd`` (0.0 for a component that is not in the
    model), the realised random effects ``u_doctor``, ``slope_doctor``,
    ``u_patient``, ``u_hospital`` (numpy arrays aligned with the categories of
    the matching id column, or None when absent), ``n_per_doctor`` (patients
    per doctor), and bookkeeping (``n_rows``, ``n_doctors``, ``n_patients``,
    ``n_visits``, ``hospital_design``, ``seed``, ``missing_share``).
    With ``binary=True`` it also has ``binary`` and with ``counts=True``
    ``count``: dicts with ``outcome`` (column name), ``family``, ``link``,
    ``beta`` (link scale, by predictor name), ``sd_doctor``, ``hospital_sd``
    (0.0 without hospitals) and the realised ``u_doctor`` / ``u_hospital`` of
    that outcome (``count`` adds ``offset`` and ``exposure_range``).
    """

    data: pd.DataFrame
    truth: dict[str, Any] = field(default_factory=dict)

    # -- output -------------------------------------------------------------
    def to_parquet(self, path: str | os.PathLike, **kwargs: Any) -> None:
        """Write ``data`` to a Parquet file (ids stay dictionary-encoded)."""
        kwargs.setdefault("index", False)
        self.data.to_parquet(path, **kwargs)

    def to_csv(self, path: str | os.PathLike, **kwargs: Any) -> None:
        """Write ``data`` to a CSV file (NaN as an empty field)."""
        kwargs.setdefault("index", False)
        self.data.to_csv(path, **kwargs)

    def summary(self) -> str:
        """One line: rows and groups."""
        t = self.truth
        parts = [f"{t['n_rows']} rows", f"{t['n_doctors']} doctors"]
        if t["n_visits"] > 1:
            parts.append(f"{t['n_patients']} patients x {t['n_visits']} visits")
        else:
            parts.append(f"{t['n_patients']} patients")
        if t["hospital_design"] is not None:
            parts.append(f"{t['n_hospitals']} hospitals ({t['hospital_design']})")
        return ", ".join(parts)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def _labels(prefix: str, n: int, width: int) -> np.ndarray:
    """``prefix`` + 1-based zero-padded numbers: sorted order == numeric order."""
    return np.char.add(prefix, np.char.zfill(np.arange(1, n + 1).astype(str), width))


def _categorical(codes: np.ndarray, labels: np.ndarray) -> pd.Categorical:
    # ``labels`` are already in sorted order, so the categories are sorted.
    return pd.Categorical.from_codes(codes, categories=pd.Index(labels.astype(object)))


def _draw_sizes(rng: np.random.Generator, n_doctors: int, mean: float,
                lo: int, hi: int, target: int) -> np.ndarray:
    """Patients per doctor in [lo, hi], mean ``mean``, summing to ``target``.

    n_j = lo + BetaBinomial(hi - lo, a, b) with a + b = 2 and mean ``mean``:
    for the seeds' (2, 40, mean 21) that is the discrete uniform on 2..40.
    The total is then moved to ``target`` by +-1 steps on randomly chosen
    doctors that still have room, so the shape of the distribution is kept.
    """
    span = hi - lo
    if span == 0:
        n = np.full(n_doctors, lo, dtype=np.int64)
    else:
        p = (mean - lo) / span
        if p <= 0.0 or p >= 1.0:
            n = np.full(n_doctors, lo if p <= 0.0 else hi, dtype=np.int64)
        else:
            pj = rng.beta(2.0 * p, 2.0 * (1.0 - p), size=n_doctors)
            n = lo + rng.binomial(span, pj).astype(np.int64)
    diff = int(target - n.sum())
    while diff != 0:  # at most span+1 rounds, each vectorised
        step = 1 if diff > 0 else -1
        room = np.flatnonzero(n < hi) if step > 0 else np.flatnonzero(n > lo)
        k = min(abs(diff), room.size)
        pick = rng.choice(room, size=k, replace=False)
        n[pick] += step
        diff -= step * k
    return n


def _clip_round(x: np.ndarray, lo: float, hi: float, decimals: int) -> np.ndarray:
    """Clip to [lo, hi] and round, in place (no temporaries at 10M rows)."""
    np.clip(x, lo, hi, out=x)
    return np.round(x, decimals, out=x)


def _linear_predictor(b: Mapping[str, float], covs, n: int) -> np.ndarray:
    eta = np.full(n, b["intercept"], dtype=np.float64)
    for name, x in covs:
        if b[name] != 0.0:
            eta += b[name] * x
    return eta


def _inverse_link(link: str, eta: np.ndarray) -> np.ndarray:
    """Mean (probability) of the binary outcome for a linear predictor."""
    from scipy.special import expit, ndtr
    if link == "logit":
        return expit(eta)
    if link == "probit":
        return ndtr(eta)
    if link == "cloglog":
        return -np.expm1(-np.exp(eta))
    raise ValueError(f"unknown link {link!r}")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


# ---------------------------------------------------------------------------
# the generator
# ---------------------------------------------------------------------------
def generate_hdp(
    n_doctors: int = SEED_N_DOCTORS,
    *,
    seed: int = 0,
    mean_patients: float = 21,
    min_patients: int = 2,
    max_patients: int = 40,
    n_patients: int | None = None,
    n_visits: int = 1,
    irregular_times: bool = False,
    slope_sd: float = 0.0,
    slope_corr: float = 0.0,
    patient_sd: float = 0.0,
    n_hospitals: int = 0,
    hospital_sd: float = 0.5,
    nested_in: int = 0,
    missing_share: float = 0.0,
    residual_sd: float = 1.0,
    doctor_sd: float = 1.0,
    time_effect: float = 0.0,
    beta: Mapping[str, float] | None = None,
    binary: bool = False,
    binary_link: str = "logit",
    binary_beta: Mapping[str, float] | None = None,
    binary_doctor_sd: float | None = None,
    binary_hospital_sd: float = 0.5,
    counts: bool = False,
    count_beta: Mapping[str, float] | None = None,
    count_doctor_sd: float = 0.5,
    count_hospital_sd: float = 0.3,
) -> GeneratedData:
    """Simulate the seeds' hdp-style data (see the module docstring).

    Parameters
    ----------
    n_doctors : number of doctors (groups of the random intercept).
    seed : seed of ``np.random.SeedSequence``; same arguments -> same frame.
    mean_patients, min_patients, max_patients : patients per doctor are drawn
        in [min_patients, max_patients] with mean ``mean_patients`` (for the
        defaults: discrete uniform on 2..40).
    n_patients : total number of patients.  Default: 8525 for the seeds'
        configuration (407 doctors, 2..40, mean 21), whatever the seed, and
        ``round(n_doctors * mean_patients)`` otherwise.  The draw is adjusted
        so that the total is exactly this.
    n_visits : visits per patient.  With more than one, the frame gets a
        ``patient`` column ("d0012_p03": doctor id + patient number, so unique
        overall) and a float ``time`` column 0..n_visits-1.
    irregular_times : with n_visits > 1, jitter visits 1.. by U(-0.4, 0.4)
        (the first visit stays at 0; times stay increasing within a patient).
    slope_sd, slope_corr : SD of a doctor random slope on ``time`` and its
        correlation with the doctor intercept (needs n_visits > 1).
    patient_sd : SD of a patient random intercept nested in doctor (needs
        n_visits > 1, otherwise it would be indistinguishable from the residual).
    n_hospitals, hospital_sd : > 0 adds a ``hospital`` factor crossed with
        doctor: every row draws its hospital independently (each hospital is
        guaranteed at least one row).  Effect SD ``hospital_sd``.
    nested_in : > 0 instead puts every doctor in one of this many hospitals
        (balanced random assignment); same ``hospital`` column and
        ``hospital_sd``.  Mutually exclusive with ``n_hospitals``.
    missing_share : each cell of age, wbc, rbc and mobility is independently
        set to NaN with this probability (after the outcome is computed).
    residual_sd : residual SD (default 1, our choice; the notes give none).
    doctor_sd : SD of the doctor random intercept (the notes: 1).  0 with all
        other SDs 0 gives a plain linear model.
    time_effect : fixed effect of ``time`` (only with n_visits > 1).
    beta : overrides of the fixed effects by name (keys of SEED_BETA).
    binary : add a 0/1 int64 column ``remission`` (see the module docstring).
    binary_link : "logit" (default), "probit" or "cloglog".
    binary_beta : overrides of ``BINARY_BETA[binary_link]`` by name (link scale).
    binary_doctor_sd : SD of the doctor intercept on the link scale (default
        ``BINARY_DOCTOR_SD[binary_link]``: 1 / 0.6 / 0.8).  0 gives a plain GLM
        (plus the hospital effect, if any).
    binary_hospital_sd : SD of the hospital intercept of ``remission`` (only
        with hospitals).
    counts : add ``exposure`` (float64 follow-up years, U(0.5, 3), 2 decimals)
        and ``n_events`` (int64, Poisson with log link and offset log(exposure)).
    count_beta : overrides of ``COUNT_BETA`` by name (log scale, per year).
    count_doctor_sd, count_hospital_sd : SDs of the doctor / hospital
        intercepts of ``n_events`` (hospital only with hospitals).

    Returns
    -------
    GeneratedData
    """
    # ---- validation --------------------------------------------------------
    n_doctors = int(n_doctors)
    _check(n_doctors >= 1, "n_doctors must be >= 1")
    _check(1 <= min_patients <= max_patients,
           "need 1 <= min_patients <= max_patients")
    _check(min_patients <= mean_patients <= max_patients,
           "mean_patients must lie in [min_patients, max_patients]")
    _check(int(n_visits) == n_visits and n_visits >= 1, "n_visits must be an integer >= 1")
    n_visits = int(n_visits)
    for name, v in (("slope_sd", slope_sd), ("patient_sd", patient_sd),
                    ("hospital_sd", hospital_sd), ("residual_sd", residual_sd),
                    ("doctor_sd", doctor_sd)):
        _check(v >= 0 and math.isfinite(v), f"{name} must be finite and >= 0")
    _check(-1.0 <= slope_corr <= 1.0, "slope_corr must lie in [-1, 1]")
    _check(0.0 <= missing_share < 1.0, "missing_share must lie in [0, 1)")
    _check(n_hospitals >= 0 and nested_in >= 0, "n_hospitals / nested_in must be >= 0")
    _check(not (n_hospitals > 0 and nested_in > 0),
           "n_hospitals (crossed) and nested_in (nested) are mutually exclusive")
    _check(nested_in <= n_doctors, "nested_in must be <= n_doctors")
    if n_visits == 1:
        _check(slope_sd == 0, "slope_sd > 0 needs n_visits > 1 (a time covariate)")
        _check(patient_sd == 0, "patient_sd > 0 needs n_visits > 1")
        _check(time_effect == 0, "time_effect needs n_visits > 1")
    _check(binary_link in BINARY_LINKS, f"binary_link must be one of {BINARY_LINKS}")
    if binary_doctor_sd is None:
        binary_doctor_sd = BINARY_DOCTOR_SD[binary_link]
    for name, v in (("binary_doctor_sd", binary_doctor_sd),
                    ("binary_hospital_sd", binary_hospital_sd),
                    ("count_doctor_sd", count_doctor_sd),
                    ("count_hospital_sd", count_hospital_sd)):
        _check(v >= 0 and math.isfinite(v), f"{name} must be finite and >= 0")
    b_bin = dict(BINARY_BETA[binary_link])
    if binary_beta is not None:
        unknown = set(binary_beta) - set(b_bin)
        _check(not unknown, f"unknown binary_beta names: {sorted(unknown)}")
        b_bin.update({k: float(v) for k, v in binary_beta.items()})
    b_cnt = dict(COUNT_BETA)
    if count_beta is not None:
        unknown = set(count_beta) - set(b_cnt)
        _check(not unknown, f"unknown count_beta names: {sorted(unknown)}")
        b_cnt.update({k: float(v) for k, v in count_beta.items()})
    b = dict(SEED_BETA)
    if beta is not None:
        unknown = set(beta) - set(b)
        _check(not unknown, f"unknown beta names: {sorted(unknown)}")
        b.update({k: float(v) for k, v in beta.items()})

    seeds_config = (n_doctors == SEED_N_DOCTORS and mean_patients == 21
                    and min_patients == 2 and max_patients == 40)
    if n_patients is None:
        n_patients = SEED_N_PATIENTS if seeds_config else int(round(n_doctors * mean_patients))
    n_patients = int(n_patients)
    _check(n_doctors * min_patients <= n_patients <= n_doctors * max_patients,
           "n_patients must lie in [n_doctors*min_patients, n_doctors*max_patients]")

    streams = [np.random.default_rng(s)
               for s in np.random.SeedSequence(seed).spawn(_N_STREAMS)]

    # ---- sizes and ids -----------------------------------------------------
    n_per_doctor = _draw_sizes(streams[_S_SIZES], n_doctors, float(mean_patients),
                               int(min_patients), int(max_patients), n_patients)
    P = n_patients
    V = n_visits
    n_rows = P * V
    if n_hospitals > 0:
        _check(n_hospitals <= n_rows, "n_hospitals must be <= number of rows")

    id_dtype = np.int32 if n_doctors < 2**31 else np.int64
    doc_of_patient = np.repeat(np.arange(n_doctors, dtype=id_dtype), n_per_doctor)
    doc_w = max(4, len(str(n_doctors)))
    doc_labels = _labels("d", n_doctors, doc_w)

    columns: dict[str, Any] = {}
    if V == 1:
        doc_row = doc_of_patient
        pat_row = None
    else:
        doc_row = np.repeat(doc_of_patient, V)
        pat_row = np.repeat(np.arange(P, dtype=np.int64 if P >= 2**31 else np.int32), V)
    columns["doctor"] = _categorical(doc_row, doc_labels)

    time = None
    if V > 1:
        # patient k (1-based) within its doctor: "d0012_p03"
        starts = np.concatenate(([0], np.cumsum(n_per_doctor)[:-1]))
        local = np.arange(P) - np.repeat(starts, n_per_doctor) + 1
        pat_w = len(str(int(max_patients)))
        pat_labels = np.char.add(
            np.char.add(doc_labels[doc_of_patient], "_p"),
            np.char.zfill(local.astype(str), pat_w))
        columns["patient"] = _categorical(pat_row, pat_labels)
        time = np.tile(np.arange(V, dtype=np.float64), P)
        if irregular_times:
            jitter = streams[_S_TIME].uniform(-0.4, 0.4, size=n_rows)
            jitter[::V] = 0.0
            time += jitter
        columns["time"] = time

    hosp_row = None
    u_hospital = None
    n_hosp = n_hospitals or nested_in
    if n_hosp > 0:
        rng = streams[_S_HOSPITAL]
        u_hospital = hospital_sd * rng.standard_normal(n_hosp)
        if n_hospitals > 0:  # crossed: every row its own hospital
            hosp_row = rng.integers(0, n_hosp, size=n_rows, dtype=np.int32)
            # make sure no hospital is empty
            hosp_row[rng.choice(n_rows, size=n_hosp, replace=False)] = np.arange(
                n_hosp, dtype=np.int32)
            hosp_of_doctor = None
        else:  # nested: a balanced random doctor -> hospital map
            hosp_of_doctor = rng.permutation(np.arange(n_doctors) % n_hosp).astype(np.int32)
            hosp_row = hosp_of_doctor[doc_row]
        columns["hospital"] = _categorical(hosp_row, _labels("h", n_hosp, max(2, len(str(n_hosp)))))

    # ---- covariates --------------------------------------------------------
    rng = streams[_S_PATIENT]
    age = _clip_round(rng.normal(57.0, 11.0, size=P), 18.0, 99.0, 2)
    married = (rng.random(P) < 0.6).astype(np.float64)
    sex = (rng.random(P) < 0.5).astype(np.float64)
    if V > 1:
        age, married, sex = (np.repeat(a, V) for a in (age, married, sex))
    rng = streams[_S_VISIT]
    wbc = _clip_round(rng.normal(6000.0, 1000.0, size=n_rows), 2000.0, 15000.0, 0)
    rbc = _clip_round(rng.normal(4.7, 0.45, size=n_rows), 3.0, 6.5, 2)

    # ---- outcome -----------------------------------------------------------
    rng = streams[_S_RESID]
    y = rng.standard_normal(n_rows)
    y *= residual_sd
    y += b["intercept"]
    for name, x in (("age", age), ("married", married), ("sex", sex),
                    ("wbc", wbc), ("rbc", rbc)):
        if b[name] != 0.0:
            y += b[name] * x
    if time is not None and time_effect != 0.0:
        y += time_effect * time

    rng = streams[_S_DOCTOR]
    z = rng.standard_normal((2, n_doctors))
    u_doctor = doctor_sd * z[0]
    slope_doctor = None
    if V > 1:
        slope_doctor = slope_sd * (slope_corr * z[0]
                                   + math.sqrt(max(0.0, 1.0 - slope_corr ** 2)) * z[1])
    if doctor_sd > 0:
        y += u_doctor[doc_row]
    if slope_doctor is not None and slope_sd > 0:
        y += slope_doctor[doc_row] * time

    u_patient = None
    if V > 1:
        u_patient = patient_sd * streams[_S_PATIENT_RE].standard_normal(P)
        if patient_sd > 0:
            y += u_patient[pat_row]
    if u_hospital is not None and hospital_sd > 0:
        y += u_hospital[hosp_row]

    # ---- binary and count outcomes (own streams, drawn last) ----------------
    glmm_cols: dict[str, Any] = {}
    glmm_truth: dict[str, Any] = {}
    covs = (("age", age), ("married", married), ("sex", sex), ("wbc", wbc), ("rbc", rbc))
    if binary:
        rng = streams[_S_BINARY]
        v_doctor = binary_doctor_sd * rng.standard_normal(n_doctors)
        v_hospital = (binary_hospital_sd * rng.standard_normal(n_hosp)
                      if n_hosp > 0 else None)
        unif = rng.random(n_rows)
        eta = _linear_predictor(b_bin, covs, n_rows)
        eta += v_doctor[doc_row]
        if v_hospital is not None:
            eta += v_hospital[hosp_row]
        glmm_cols["remission"] = (unif < _inverse_link(binary_link, eta)).astype(np.int64)
        glmm_truth["binary"] = {
            "outcome": "remission", "family": "binomial", "link": binary_link,
            "beta": b_bin, "sd_doctor": float(binary_doctor_sd),
            "hospital_sd": float(binary_hospital_sd) if n_hosp > 0 else 0.0,
            "u_doctor": v_doctor, "u_hospital": v_hospital,
        }
    if counts:
        rng = streams[_S_COUNT]
        w_doctor = count_doctor_sd * rng.standard_normal(n_doctors)
        w_hospital = (count_hospital_sd * rng.standard_normal(n_hosp)
                      if n_hosp > 0 else None)
        exposure = np.round(rng.uniform(*EXPOSURE_RANGE, size=n_rows), 2)
        eta = _linear_predictor(b_cnt, covs, n_rows)
        eta += w_doctor[doc_row]
        if w_hospital is not None:
            eta += w_hospital[hosp_row]
        eta += np.log(exposure)
        glmm_cols["exposure"] = exposure
        glmm_cols["n_events"] = rng.poisson(np.exp(eta)).astype(np.int64)
        glmm_truth["count"] = {
            "outcome": "n_events", "family": "poisson", "link": "log",
            "offset": "log(exposure)", "exposure_range": list(EXPOSURE_RANGE),
            "beta": b_cnt, "sd_doctor": float(count_doctor_sd),
            "hospital_sd": float(count_hospital_sd) if n_hosp > 0 else 0.0,
            "u_doctor": w_doctor, "u_hospital": w_hospital,
        }

    # ---- missingness -------------------------------------------------------
    cov = {"age": age, "married": married, "sex": sex, "wbc": wbc, "rbc": rbc,
           "mobility": y}
    if missing_share > 0:
        rng = streams[_S_MISSING]
        for name in MISSABLE:
            cov[name][rng.random(n_rows) < missing_share] = np.nan
    columns.update(cov)
    columns.update(glmm_cols)

    data = pd.DataFrame(columns, copy=False)

    truth: dict[str, Any] = {
        "beta": ({**b, "time": float(time_effect)} if V > 1 else b),
        "sd_doctor": float(doctor_sd),
        "slope_sd": float(slope_sd) if V > 1 else 0.0,
        "slope_corr": float(slope_corr) if (V > 1 and slope_sd > 0 and doctor_sd > 0) else 0.0,
        "patient_sd": float(patient_sd) if V > 1 else 0.0,
        "hospital_sd": float(hospital_sd) if n_hosp > 0 else 0.0,
        "residual_sd": float(residual_sd),
        "u_doctor": u_doctor,
        "slope_doctor": slope_doctor,
        "u_patient": u_patient,
        "u_hospital": u_hospital,
        "hospital_of_doctor": (hosp_of_doctor if n_hosp > 0 else None),
        "hospital_design": ("crossed" if n_hospitals > 0 else "nested" if nested_in > 0 else None),
        "n_per_doctor": n_per_doctor,
        "n_rows": int(n_rows),
        "n_doctors": int(n_doctors),
        "n_patients": int(P),
        "n_visits": int(V),
        "n_hospitals": int(n_hosp),
        "missing_share": float(missing_share),
        "seed": seed,
    }
    truth.update(glmm_truth)   # "binary" / "count" only when asked for
    return GeneratedData(data=data, truth=truth)


# ---------------------------------------------------------------------------
# the seeds' tablet data
# ---------------------------------------------------------------------------
_TABLETS_HPLC = [10.4, 10.6, 10.2, 10.1, 10.3, 10.7, 10.3, 10.9, 10.1, 9.8]
_TABLETS_NIR = [10.1, 10.8, 10.2, 9.9, 11.0, 10.5, 10.2, 10.9, 10.4, 9.9]
_TABLETS_NIR_ONLY = [10.8, 9.8, 10.5, 10.3, 9.7]   # tablets 11..15
_TABLETS_HPLC_ONLY = [10.3, 9.6, 10.0, 10.2, 9.9]  # tablets 16..20


def tablets(missing: bool = False) -> pd.DataFrame:
    """The seeds' tablet data: two assay methods on the same tablets.

    Columns: ``tablet`` (Categorical "1".."10", or "1".."20" with
    ``missing=True``, categories in numeric order), ``method`` (Categorical
    with categories ["nir", "hplc"], so nir is the reference level) and ``y``.
    One row per tablet and method, tablet by tablet, nir before hplc (20 rows,
    or 40).  With ``missing=True`` tablets 11..15 were measured by nir only and
    16..20 by hplc only: their other row has y = NaN.
    """
    nan = float("nan")
    hplc = list(_TABLETS_HPLC)
    nir = list(_TABLETS_NIR)
    if missing:
        nir += _TABLETS_NIR_ONLY + [nan] * 5
        hplc += [nan] * 5 + _TABLETS_HPLC_ONLY
    n = len(hplc)
    labels = [str(i) for i in range(1, n + 1)]
    tablet = np.repeat(np.arange(n), 2)
    method = np.tile([0, 1], n)
    y = np.column_stack([nir, hplc]).ravel()
    return pd.DataFrame({
        "tablet": pd.Categorical.from_codes(tablet, categories=labels),
        "method": pd.Categorical.from_codes(method, categories=["nir", "hplc"]),
        "y": y.astype(np.float64),
    })
