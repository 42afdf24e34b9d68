"""Deterministic generator of longitudinal data with structured residuals.

Patients (optionally nested in hospitals) are seen at visits 0..n_visits-1; the
outcome follows a random intercept and slope model whose residuals are
correlated within a patient (AR(1), continuous-time AR(1) or compound symmetry)
and may have a different SD in each treatment arm -- the models of nlme's
``corAR1``, ``corCAR1``, ``corCompSymm`` and ``varIdent``.

Model (one row = one patient visit, i = patient, j = visit)::

    y_ij = b0 + b1*time_ij + b2*treat_i + b3*time_ij*treat_i      (fixed part)
           + u0_i + u1_i*time_ij                                  (patient intercept / slope)
           + h_hospital(i)                                        (hospital intercept, optional)
           + e_ij

    (u0_i, u1_i) ~ N(0, [[intercept_sd^2, corr*intercept_sd*slope_sd],
                          [corr*intercept_sd*slope_sd, slope_sd^2]])
    h ~ N(0, hospital_sd^2)
    e_ij = sigma * ratio[arm_ij] * r_ij,     Var(r_ij) = 1, and within patient i
        residual="ar1":  corr(r_ij, r_ik) = phi^|visit_j - visit_k|
                         (phi^|time_j - time_k| when continuous_times=True)
        residual="car1": corr(r_ij, r_ik) = phi^|time_j - time_k|
        residual="cs":   corr(r_ij, r_ik) = rho_cs            (j != k)
        residual="iid":  independent

``ratio`` is ``arm_sd_ratios`` (1 for every arm when not given), so ``sigma``
is the residual SD of an arm whose ratio is 1.  The correlation is that of the
full visit grid: the series is drawn at every visit 0..n_visits-1 and missed
visits are dropped afterwards, so with gaps the correlation of two kept visits
is phi^(visit difference), not phi^(position difference).

Columns of ``data``::

    patient   categorical, "p000001".. (sorted categories)
    hospital  categorical, "h01".. (only with n_hospitals; patients nested:
              each patient belongs to one hospital)
    visit     int64 visit number 0..n_visits-1 (with missed_visit_share some
              are missing, so gaps > 1 occur; visit 0 is always kept)
    time      float64 years: visit * 0.5, or with continuous_times=True
              irregular times (0 at visit 0, then cumulative sums of gaps
              0.5 * U(0.3, 1.7), i.e. 0.15..0.85 years, mean 0.5)
    treat     int64 0/1 per patient (Bernoulli 0.5)
    arm       categorical "a", "b", "c" (or the keys of arm_sd_ratios), per
              patient, or per visit with arm_within_patient=True
    y         float64 outcome

Rows are ordered by patient then visit (patients contiguous per hospital)
unless ``shuffle=True``, which applies a random permutation of the rows (and
resets the index) -- the same rows, in another order.

Determinism: every ingredient has its own random stream spawned from
``np.random.SeedSequence(seed)``, so the same arguments give the identical frame,
and switching one option on (say ``missed_visit_share``) leaves the draws of the
other ingredients unchanged.

Everything is vectorised numpy: the only Python loop runs over the visit index
(the AR(1) recursion).  1M rows (100,000 patients x 10 visits) take about a
second.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .generate import TruthIO

__all__ = ["LongitudinalData", "generate_longitudinal", "LONGITUDINAL_BETA",
           "RESIDUAL_STRUCTURES"]

#: Default fixed effects (names as in the module docstring's formula).
LONGITUDINAL_BETA: dict[str, float] = {
    "intercept": 5.0,
    "time": 0.8,
    "treat": 0.5,
    "time:treat": -0.4,
}

#: Accepted values of ``residual``.
RESIDUAL_STRUCTURES = ("ar1", "car1", "cs", "iid")

#: Default arm labels (when arm_sd_ratios does not name them).
DEFAULT_ARMS = ("a", "b", "c")

#: Years between two scheduled visits.
VISIT_SPACING = 0.5

# Fixed roles of the spawned random streams (never reorder: it would change
# every generated data set).
_S_PATIENT, _S_RE, _S_HOSPITAL, _S_RESID, _S_MISSING, _S_TIME, _S_ARM, \
    _S_SHUFFLE = range(8)
_N_STREAMS = 8


@dataclass
class LongitudinalData(TruthIO):
    """A generated longitudinal data set and the truth behind it.

    ``data``  -- pandas DataFrame (columns: see the module docstring).
    ``truth`` -- dict with ``beta`` (dict: intercept, time, treat, time:treat),
    ``residual`` (structure name), ``phi`` (AR(1)/CAR(1) parameter, or None),
    ``rho_cs`` (or None), ``sigma``, ``intercept_sd``, ``slope_sd``, ``corr``
    (intercept-slope correlation; 0 when an SD is 0), ``hospital_sd`` (0 without
    hospitals), ``arm_levels`` (list), ``arm_sd_ratios`` (dict level -> ratio,
    all 1 when not given), ``arm_within_patient``, ``continuous_times``,
    ``missed_visit_share``, realised effects ``u0``, ``u1`` (arrays by patient
    category), ``u_hospital`` (by hospital category, or None),
    ``hospital_of_patient`` (codes or None), ``n_obs_per_patient``, and
    bookkeeping (``n_rows``, ``n_patients``, ``n_visits``, ``n_hospitals``,
    ``shuffled``, ``seed``).
    """

    data: pd.DataFrame
    truth: dict[str, Any] = field(default_factory=dict)

    # convenient access to the main true parameters
    @property
    def beta(self) -> dict[str, float]:
        return self.truth["beta"]

    @property
    def phi(self) -> float | None:
        return self.truth["phi"]

    @property
    def sigma(self) -> float:
        return self.truth["sigma"]

    def to_parquet(self, path: str | os.PathLike, **kwargs: Any) -> None:
        """Write ``data`` to a Parquet file."""
        kwargs.setdefault("index", False)
        self.data.to_parquet(path, **kwargs)

    def to_csv(self, path: str | os.PathLike, **kwargs: Any) -> None:
        """Write ``data`` to a CSV file with round-trip floats."""
        kwargs.setdefault("index", False)
        kwargs.setdefault("lineterminator", "\n")
        self.data.to_csv(path, **kwargs)

    def summary(self) -> str:
        t = self.truth
        parts = [f"{t['n_rows']} rows", f"{t['n_patients']} patients x <= {t['n_visits']} visits"]
        if t["n_hospitals"]:
            parts.append(f"{t['n_hospitals']} hospitals")
        parts.append(f"residual {t['residual']}")
        return ", ".join(parts)


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _labels(prefix: str, n: int, width: int) -> np.ndarray:
    return np.char.add(prefix, np.char.zfill(np.arange(1, n + 1).astype(str), width))


def _categorical(codes: np.ndarray, labels: Sequence[str]) -> pd.Categorical:
    return pd.Categorical.from_codes(codes, categories=pd.Index(np.asarray(labels, dtype=object)))


def _arm_setup(arm_sd_ratios: Mapping[str, float] | Sequence[float] | None
               ) -> tuple[list[str], np.ndarray]:
    if arm_sd_ratios is None:
        return list(DEFAULT_ARMS), np.ones(len(DEFAULT_ARMS))
    if isinstance(arm_sd_ratios, Mapping):
        levels = [str(k) for k in arm_sd_ratios]
        ratios = np.array([float(v) for v in arm_sd_ratios.values()])
        _check(levels == sorted(levels), "arm_sd_ratios keys must be given in sorted order")
    else:
        ratios = np.asarray(arm_sd_ratios, dtype=float).ravel()
        _check(len(ratios) <= 26, "at most 26 arms")
        levels = [chr(ord("a") + k) for k in range(len(ratios))]
    _check(len(levels) >= 1, "arm_sd_ratios must name at least one arm")
    _check(len(set(levels)) == len(levels), "arm names must be unique")
    _check(bool(np.all(np.isfinite(ratios)) and np.all(ratios > 0)),
           "arm_sd_ratios must be finite and > 0")
    return levels, ratios


def generate_longitudinal(
    n_patients: int,
    n_visits: int = 10,
    *,
    n_hospitals: int | None = None,
    residual: str = "ar1",
    phi: float = 0.6,
    rho_cs: float = 0.3,
    sigma: float = 1.0,
    intercept_sd: float = 1.0,
    slope_sd: float = 0.3,
    corr: float = -0.3,
    hospital_sd: float = 0.5,
    arm_sd_ratios: Mapping[str, float] | Sequence[float] | None = None,
    arm_within_patient: bool = False,
    missed_visit_share: float = 0.0,
    continuous_times: bool = False,
    beta: Mapping[str, float] | None = None,
    shuffle: bool = False,
    seed: int = 0,
) -> LongitudinalData:
    """Simulate longitudinal data (see the module docstring for the model).

    Parameters
    ----------
    n_patients, n_visits : patients and scheduled visits per patient.
    n_hospitals : None/0 for no hospitals; otherwise patients are nested in this
        many hospitals (contiguous blocks of patients, every hospital at least
        one patient, sizes 1 + multinomial) with intercept SD ``hospital_sd``.
    residual : "ar1", "car1", "cs" or "iid".  "ar1" correlates on the visit
        number (on time when ``continuous_times``); "car1" always on time.
    phi : AR(1)/CAR(1) correlation at lag 1 (one visit, or one year of time
        for the continuous-time forms); in (-1, 1) for "ar1" on visits, in
        [0, 1) on time.
    rho_cs : compound-symmetry correlation, in (-1/(n_visits-1), 1).
    sigma : residual SD (of an arm whose ratio is 1).
    intercept_sd, slope_sd, corr : patient random intercept and time slope.
    hospital_sd : SD of the hospital intercept (used with n_hospitals).
    arm_sd_ratios : None, a dict {level: ratio} (keys in sorted order) or a
        sequence of ratios for arms "a", "b", ...; residual SD multipliers.
    arm_within_patient : draw the arm at every visit (default: per patient).
    missed_visit_share : probability that a visit other than visit 0 is missed
        (dropped), creating gaps in ``visit``.
    continuous_times : irregular visit times instead of visit * 0.5.
    beta : overrides of the fixed effects by name (keys of LONGITUDINAL_BETA).
    shuffle : permute the rows at random (index reset to 0..n-1).
    seed : seed of ``np.random.SeedSequence``.
    """
    # ---- validation --------------------------------------------------------
    _check(int(n_patients) == n_patients and n_patients >= 1, "n_patients must be an integer >= 1")
    _check(int(n_visits) == n_visits and n_visits >= 1, "n_visits must be an integer >= 1")
    P, V = int(n_patients), int(n_visits)
    _check(residual in RESIDUAL_STRUCTURES, f"residual must be one of {RESIDUAL_STRUCTURES}")
    for name, v in (("sigma", sigma), ("intercept_sd", intercept_sd), ("slope_sd", slope_sd),
                    ("hospital_sd", hospital_sd)):
        _check(math.isfinite(v) and v >= 0, f"{name} must be finite and >= 0")
    _check(-1.0 <= corr <= 1.0, "corr must lie in [-1, 1]")
    _check(0.0 <= missed_visit_share < 1.0, "missed_visit_share must lie in [0, 1)")
    on_time = residual == "car1" or (residual == "ar1" and continuous_times)
    if residual in ("ar1", "car1"):
        if on_time:
            _check(0.0 <= phi < 1.0, "phi must lie in [0, 1) for a continuous-time AR(1)")
        else:
            _check(-1.0 < phi < 1.0, "phi must lie in (-1, 1)")
    if residual == "cs" and V > 1:
        _check(-1.0 / (V - 1) < rho_cs < 1.0, "rho_cs must lie in (-1/(n_visits-1), 1)")
    n_hosp = int(n_hospitals or 0)
    _check(0 <= n_hosp <= P, "n_hospitals must lie in [0, n_patients]")
    b = dict(LONGITUDINAL_BETA)
    if beta is not None:
        unknown = set(beta) - set(b)
        _check(not unknown, f"unknown beta names: {sorted(unknown)}")
        b.update({k: float(v) for k, v in beta.items()})
    arm_levels, arm_ratio = _arm_setup(arm_sd_ratios)
    n_arms = len(arm_levels)

    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(_N_STREAMS)]

    # ---- patients ----------------------------------------------------------
    rng = streams[_S_PATIENT]
    treat_p = (rng.random(P) < 0.5).astype(np.int64)
    arm_p = rng.integers(0, n_arms, size=P)

    rng = streams[_S_RE]
    z = rng.standard_normal((2, P))
    u0 = intercept_sd * z[0]
    u1 = slope_sd * (corr * z[0] + math.sqrt(max(0.0, 1.0 - corr * corr)) * z[1])

    hosp_p = None
    u_hosp = None
    if n_hosp > 0:
        rng = streams[_S_HOSPITAL]
        sizes = 1 + rng.multinomial(P - n_hosp, np.full(n_hosp, 1.0 / n_hosp))
        hosp_p = np.repeat(np.arange(n_hosp, dtype=np.int32), sizes)
        u_hosp = hospital_sd * rng.standard_normal(n_hosp)

    # ---- the visit grid (P x V), everything computed on it -----------------
    visit = np.broadcast_to(np.arange(V, dtype=np.int64), (P, V))
    if continuous_times:
        gaps = VISIT_SPACING * streams[_S_TIME].uniform(0.3, 1.7, size=(P, V))
        gaps[:, 0] = 0.0
        time = np.cumsum(gaps, axis=1)
    else:
        time = visit * VISIT_SPACING

    rng = streams[_S_RESID]
    r = rng.standard_normal((P, V))
    if residual == "ar1" and not on_time:
        c = math.sqrt(1.0 - phi * phi)
        for j in range(1, V):
            r[:, j] *= c
            r[:, j] += phi * r[:, j - 1]
    elif on_time:
        for j in range(1, V):
            a = np.power(phi, time[:, j] - time[:, j - 1])
            r[:, j] *= np.sqrt(1.0 - a * a)
            r[:, j] += a * r[:, j - 1]
    elif residual == "cs" and V > 1:
        # (1-rho) I + rho J  =  (1-rho) (I - J/V) + (1 - rho + V rho) J/V
        m = r.mean(axis=1, keepdims=True)
        r -= m
        r *= math.sqrt(1.0 - rho_cs)
        r += math.sqrt(1.0 - rho_cs + V * rho_cs) * m
    # "iid": r as drawn

    if arm_within_patient:
        arm = streams[_S_ARM].integers(0, n_arms, size=(P, V))
    else:
        arm = np.broadcast_to(arm_p[:, None], (P, V))

    treat = treat_p[:, None]
    y = (b["intercept"] + b["time"] * time + b["treat"] * treat
         + b["time:treat"] * time * treat + u0[:, None] + u1[:, None] * time)
    if u_hosp is not None:
        y += u_hosp[hosp_p][:, None]
    y += sigma * arm_ratio[arm] * r

    # ---- missed visits -----------------------------------------------------
    if missed_visit_share > 0:
        keep = streams[_S_MISSING].random((P, V)) >= missed_visit_share
        keep[:, 0] = True
    else:
        keep = np.ones((P, V), dtype=bool)
    keep_flat = keep.ravel()
    n_obs = keep.sum(axis=1)

    pid_dtype = np.int32 if P < 2**31 else np.int64
    pat_row = np.repeat(np.arange(P, dtype=pid_dtype), n_obs)

    def flat(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.broadcast_to(a, (P, V))).ravel()[keep_flat]

    columns: dict[str, Any] = {}
    columns["patient"] = _categorical(pat_row, _labels("p", P, max(6, len(str(P)))))
    if hosp_p is not None:
        columns["hospital"] = _categorical(hosp_p[pat_row],
                                           _labels("h", n_hosp, max(2, len(str(n_hosp)))))
    columns["visit"] = flat(visit)
    columns["time"] = flat(time).astype(np.float64)
    columns["treat"] = treat_p[pat_row]
    columns["arm"] = _categorical(flat(arm).astype(np.int8 if n_arms < 128 else np.int32),
                                  arm_levels)
    columns["y"] = flat(y)
    data = pd.DataFrame(columns, copy=False)

    if shuffle:
        perm = streams[_S_SHUFFLE].permutation(len(data))
        data = data.iloc[perm].reset_index(drop=True)

    has_corr = residual in ("ar1", "car1")
    truth: dict[str, Any] = {
        "beta": b,
        "residual": residual,
        "correlation_on": ("time" if on_time else "visit") if has_corr else None,
        "phi": float(phi) if has_corr else None,
        "rho_cs": float(rho_cs) if residual == "cs" else None,
        "sigma": float(sigma),
        "intercept_sd": float(intercept_sd),
        "slope_sd": float(slope_sd),
        "corr": float(corr) if (intercept_sd > 0 and slope_sd > 0) else 0.0,
        "hospital_sd": float(hospital_sd) if n_hosp > 0 else 0.0,
        "arm_levels": list(arm_levels),
        "arm_sd_ratios": {k: float(v) for k, v in zip(arm_levels, arm_ratio)},
        "arm_within_patient": bool(arm_within_patient),
        "continuous_times": bool(continuous_times),
        "visit_spacing": VISIT_SPACING,
        "missed_visit_share": float(missed_visit_share),
        "u0": u0,
        "u1": u1,
        "u_hospital": u_hosp,
        "hospital_of_patient": hosp_p,
        "n_obs_per_patient": n_obs,
        "n_rows": int(len(data)),
        "n_patients": P,
        "n_visits": V,
        "n_hospitals": n_hosp,
        "shuffled": bool(shuffle),
        "seed": seed,
    }
    return LongitudinalData(data=data, truth=truth)
