"""Make the R references for the formula vocabulary (issue #16 item 2): R's ``pi``,
transformed responses, splines (``splines::ns`` / ``splines::bs``) and quoted names.

    .venv/bin/python bench/references_parity/vocab_make_references.py

Writes ``vocab_data.csv`` (an hdp-style data set from ``bigmixed.data_gen`` with a few
missing values and a column with a space in its name; floats with round-trip precision) and
``vocab_newdata.csv`` (rows to predict, ages and times outside the fitted range included),
then runs ``Rscript vocab_formula_vocab.R``, which fits the models of ``VOCAB_MODELS`` with
lme4 and evaluates the spline bases of ``vocab_bases.json`` with the splines package, and
writes ``vocab_references.json``. The tests read the committed files and never call R.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bigmixed.data_gen import generate_hdp

HERE = Path(__file__).resolve().parent
DATA = HERE / "vocab_data.csv"
NEWDATA = HERE / "vocab_newdata.csv"
MODELS = HERE / "vocab_models.json"
BASES = HERE / "vocab_bases.json"
OUT = HERE / "vocab_references.json"
R_SCRIPT = HERE / "vocab_formula_vocab.R"

HDP = dict(n_doctors=60, seed=21, n_visits=3, irregular_times=True, mean_patients=8,
           min_patients=2, max_patients=14, slope_sd=0.3, time_effect=0.3)  # 1440 rows

# name -> lme4 formula (every one fitted by REML)
VOCAB_MODELS = {
    "sin_pi": "mobility ~ sin(2 * pi * time) + cos(2*pi*time) + age + (1 | doctor)",
    "log_response": "log(score) ~ age + sex + (1 | doctor)",
    "sqrt_response": "sqrt(mobility) ~ age + sex + (1 | doctor)",
    "I_response": "I(mobility / 100) ~ age + (1 | doctor)",
    "exp_response": "exp(mobility/10) ~ age + (1 | doctor)",
    "ns_df": "mobility ~ ns(age, df = 3) + sex + (1 | doctor)",
    "ns_knots_bk": "mobility ~ ns(age, knots = c(45, 60), Boundary.knots = c(30, 80)) + (1 | doctor)",
    "ns_intercept": "mobility ~ 0 + ns(age, df = 4, intercept = TRUE) + (1 | doctor)",
    "bs_df": "mobility ~ bs(age, df = 5) + sex + (1 | doctor)",
    "bs_knots_deg2": "mobility ~ bs(age, knots = c(50, 65), degree = 2) + (1 | doctor)",
    "bs_bk": "mobility ~ bs(age, df = 4, Boundary.knots = c(30, 80)) + (1 | doctor)",
    "backtick": "mobility ~ `my var` + age + (1 | doctor)",
    "combo": "log(score) ~ ns(age, df = 3) + sin(2 * pi * time) + (1 + time | doctor)",
    "ns_random_slope": "mobility ~ age + (ns(time, df = 2) | doctor)",
}

# spline bases evaluated directly (x: where the basis is built; newx: predict(basis, newx))
_GRID = [20.0, 29.09, 30.0, 35.5, 45.0, 57.25, 60.0, 72.0, 80.0, 88.0, 90.14, 95.0, 110.0]
VOCAB_BASES = {
    "ns(age, df = 3)": "ns(x, df = 3)",
    "ns(age, df = 5, intercept = TRUE)": "ns(x, df = 5, intercept = TRUE)",
    "ns(age, knots = c(45, 60), Boundary.knots = c(30, 80))":
        "ns(x, knots = c(45, 60), Boundary.knots = c(30, 80))",
    "ns(age, df = 1)": "ns(x, df = 1)",
    "bs(age, df = 5)": "bs(x, df = 5)",
    "bs(age, df = 6, degree = 2, intercept = TRUE)": "bs(x, df = 6, degree = 2, intercept = TRUE)",
    "bs(age, knots = c(50, 65), degree = 1)": "bs(x, knots = c(50, 65), degree = 1)",
    "bs(age, df = 4, Boundary.knots = c(30, 80))": "bs(x, df = 4, Boundary.knots = c(30, 80))",
    "bs(age)": "bs(x)",
}


def make_data() -> pd.DataFrame:
    """The hdp-style data with what the vocabulary needs: `score` (a response with a few
    values <= 0, for log()), `my var` (a name with a space), and a few missing ages and
    responses (R computes spline knots on every non-missing x, rows missing the response
    included: the model frame is evaluated before na.omit)."""
    d = generate_hdp(**HDP).data
    rng = np.random.default_rng([21, 16])
    d["score"] = d["mobility"] - 2.0
    d["my var"] = d["wbc"] / 1000.0
    d.loc[rng.choice(len(d), 25, replace=False), "age"] = np.nan
    d.loc[rng.choice(len(d), 25, replace=False), "mobility"] = np.nan
    return d


def make_newdata(d: pd.DataFrame) -> pd.DataFrame:
    """Rows to predict: fitted doctors, ages inside and outside the fitted range (the
    boundary knots), times beyond the last visit."""
    doctors = list(d["doctor"].cat.categories[:4])
    ages = [18.0, 29.5, 45.0, 57.0, 66.6, 79.0, 85.0, 95.0]
    times = [0.0, 0.5, 1.25, 2.0, 3.5]
    rows = []
    for k, age in enumerate(ages * 2):
        rows.append({"doctor": doctors[k % len(doctors)], "age": age,
                     "time": times[k % len(times)], "sex": float(k % 2),
                     "my var": 4.0 + 0.37 * k})
    return pd.DataFrame(rows)


def main() -> int:
    rscript = os.environ.get("RSCRIPT", "Rscript")
    if shutil.which(rscript) is None:
        print(f"{rscript} not found: R with lme4, splines and jsonlite is needed", file=sys.stderr)
        return 2
    d = make_data()
    d.to_csv(DATA, index=False, lineterminator="\n")
    make_newdata(d).to_csv(NEWDATA, index=False, lineterminator="\n")
    MODELS.write_text(json.dumps(VOCAB_MODELS, indent=1) + "\n")
    BASES.write_text(json.dumps({"x_from": "age of vocab_data.csv", "newx": _GRID,
                                 "bases": VOCAB_BASES}, indent=1) + "\n")
    env = dict(os.environ, LC_ALL="C.UTF-8", LANG="C.UTF-8")
    subprocess.run([rscript, "--vanilla", str(R_SCRIPT), str(HERE)], check=True, env=env)
    print(f"wrote {OUT.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
