"""Named benchmark problems of the "scale and speed" issue, built with bigmixed.data_gen.

Every problem is deterministic (fixed seeds).  ``make_data(name)`` returns the frame with only
the columns the formula needs; ``make_data(name, tiny=True)`` a small frame of the same shape,
used to warm Numba's JIT before the timed bigmixed fit.

    hdp          8,525 rows, 407 doctors                 (1 | doctor)             the seeds' example
    slope_105k   105,000 rows, 5,000 doctors              (time | doctor)
    slope_1m     1,050,000 rows, 50,000 doctors           (time | doctor)
    slope_10m    10,500,000 rows, 500,000 doctors         (time | doctor)          on request
    crossed_73k  73,421 rows, 2,972 x 1,128 x 14 levels   (1|doctor)+(1|hospital)+(1|dept)
                 (the shape of lme4's InstEval: s, d, dept)
    crossed_1m   1,000,000 rows, 50,000 x 2,000 levels    (1|doctor)+(1|hospital)  on request
    nested_1m    1,000,000 rows, 20,000 doctors in 1,000 hospitals  (1 | hospital/doctor)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

HDP_FIXED = "mobility ~ age + married + sex + wbc + rbc"
SLOPE_GEN = dict(mean_patients=7, min_patients=2, max_patients=12, n_visits=3, slope_sd=0.3,
                 slope_corr=0.3, time_effect=0.05)


@dataclass
class Problem:
    name: str
    description: str
    gen: dict                       # generate_hdp keyword arguments
    tiny_gen: dict                  # same shape, a few hundred rows (JIT warm-up)
    formula: str                    # lme4 syntax, used by bigmixed and lme4
    columns: list                   # columns kept in the data files
    factors: list                   # grouping columns (factors in R)
    statsmodels: dict | None = None  # smf.mixedlm spec, or None
    statsmodels_reason: str = ""    # why statsmodels is not run
    optional: bool = False          # only on request (--problems)
    add_dept: int = 0               # add a crossed random factor "dept" with this many levels
    extra: dict = field(default_factory=dict)


PROBLEMS: dict[str, Problem] = {}


def _add(p: Problem) -> None:
    PROBLEMS[p.name] = p


_add(Problem(
    "hdp", "8,525 rows, 407 doctors, random intercept (the seeds' example)",
    gen=dict(n_doctors=407, seed=1),
    tiny_gen=dict(n_doctors=30, seed=101),
    formula=HDP_FIXED + " + (1 | doctor)",
    columns=["mobility", "age", "married", "sex", "wbc", "rbc", "doctor"],
    factors=["doctor"],
    statsmodels=dict(fixed=HDP_FIXED, groups="doctor", re_formula="1",
                     re_names={"doctor": "doctor"}),
))

for _name, _nd, _opt in (("slope_105k", 5_000, False), ("slope_1m", 50_000, False),
                         ("slope_10m", 500_000, True)):
    _add(Problem(
        _name, f"{_nd * 21:,} rows, {_nd:,} doctors, correlated random intercept and slope on time",
        gen=dict(n_doctors=_nd, seed=2, **SLOPE_GEN),
        tiny_gen=dict(n_doctors=40, seed=102, **SLOPE_GEN),
        formula=HDP_FIXED + " + time + (time | doctor)",
        columns=["mobility", "age", "married", "sex", "wbc", "rbc", "time", "doctor"],
        factors=["doctor"],
        statsmodels=dict(fixed=HDP_FIXED + " + time", groups="doctor", re_formula="~time",
                         re_names={"doctor": "doctor"}),
        optional=_opt,
    ))

_add(Problem(
    "crossed_73k", "73,421 rows, crossed doctor (2,972) x hospital (1,128) x dept (14): InstEval's shape",
    gen=dict(n_doctors=2972, seed=4, n_patients=73_421, mean_patients=73_421 / 2972,
             n_hospitals=1128, hospital_sd=0.5),
    tiny_gen=dict(n_doctors=40, seed=104, n_hospitals=12),
    formula="mobility ~ age + sex + wbc + (1 | doctor) + (1 | hospital) + (1 | dept)",
    columns=["mobility", "age", "sex", "wbc", "doctor", "hospital", "dept"],
    factors=["doctor", "hospital", "dept"],
    statsmodels=None,
    statsmodels_reason=("MixedLM needs one all-encompassing group with a dense "
                        "73k x 4,114 random-effects design (vc_formula), ~2.4 GB and O(n q^2) per "
                        "evaluation"),
    add_dept=14,
))

_add(Problem(
    "crossed_1m", "1,000,000 rows, crossed doctor (50,000) x hospital (2,000)",
    gen=dict(n_doctors=50_000, seed=5, mean_patients=20, n_hospitals=2000, hospital_sd=0.5),
    tiny_gen=dict(n_doctors=40, seed=105, n_hospitals=12),
    formula="mobility ~ age + sex + wbc + (1 | doctor) + (1 | hospital)",
    columns=["mobility", "age", "sex", "wbc", "doctor", "hospital"],
    factors=["doctor", "hospital"],
    statsmodels=None,
    statsmodels_reason=("crossed factors need one group with a dense "
                        "1M x 52,000 random-effects design"),
    optional=True,
))

_add(Problem(
    "nested_1m", "1,000,000 rows, 20,000 doctors nested in 1,000 hospitals",
    gen=dict(n_doctors=20_000, seed=6, mean_patients=50, min_patients=2, max_patients=98,
             nested_in=1000, hospital_sd=0.5),
    tiny_gen=dict(n_doctors=40, seed=106, nested_in=8),
    formula="mobility ~ age + sex + wbc + (1 | hospital/doctor)",
    columns=["mobility", "age", "sex", "wbc", "doctor", "hospital"],
    factors=["doctor", "hospital"],
    # hospital = group (random intercept), doctor = variance component within hospital
    statsmodels=dict(fixed="mobility ~ age + sex + wbc", groups="hospital", re_formula="1",
                     vc_formula={"doctor": "0 + C(doctor)"},
                     re_names={"hospital": "hospital"}, vc_names={"doctor": "doctor:hospital"}),
))

DEFAULT = [n for n, p in PROBLEMS.items() if not p.optional]


def make_data(name: str, tiny: bool = False) -> pd.DataFrame:
    """The problem's data frame (only the needed columns), deterministic."""
    from bigmixed.data_gen import generate_hdp

    p = PROBLEMS[name]
    g = generate_hdp(**(p.tiny_gen if tiny else p.gen))
    df = g.data
    if p.add_dept:
        # A third crossed factor, drawn per row with its own fixed seed; its effect (SD 0.3) is
        # added to the outcome so that its variance is not zero.
        rng = np.random.default_rng(20_000 + (1 if tiny else 0))
        k = p.add_dept
        dept = rng.integers(0, k, size=len(df))
        dept[rng.choice(len(df), size=k, replace=False)] = np.arange(k)  # every level used
        u = 0.3 * rng.standard_normal(k)
        df["mobility"] = df["mobility"].to_numpy() + u[dept]
        labels = [f"e{i + 1:02d}" for i in range(k)]
        df["dept"] = pd.Categorical.from_codes(dept, categories=labels)
    return df[p.columns].copy()


def spec_key(name: str) -> dict:
    """What determines the data files (to know when cached files are stale)."""
    p = PROBLEMS[name]
    return {"gen": {k: (float(v) if isinstance(v, float) else v) for k, v in p.gen.items()},
            "columns": p.columns, "add_dept": p.add_dept, "version": 1}
