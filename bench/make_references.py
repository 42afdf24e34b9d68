"""Make the lme4 reference fits that bigmixed's tests compare with.

    .venv/bin/python bench/make_references.py            # all data sets and fits
    .venv/bin/python bench/make_references.py ri slope   # only these models

For every data set below this script generates the data with
``bigmixed.data_gen`` and a fixed seed and writes ``bench/references/<data>.csv``;
then one ``Rscript bench/lme4_reference.R SPEC.json`` fits every model by REML
and by ML with lme4 (default settings, and again with tight tolerances) and
writes ``bench/references/<model>_<reml|ml>.json``.  ``index.json`` lists the
models, their data files, formulas and the generator calls.

The tests read the CSV files (never regenerate the data, never call R): the CSVs
hold every float with round-trip precision, so Python and R see the same numbers.
R with lme4, lmerTest and jsonlite is needed only to run this script.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from bigmixed.data_gen import generate_hdp, tablets

HERE = Path(__file__).resolve().parent
OUT = HERE / "references"
R_SCRIPT = HERE / "lme4_reference.R"


# ---------------------------------------------------------------------------
# data sets: name -> (description, generator call as text, function)
# ---------------------------------------------------------------------------
def _hdp(**kw) -> pd.DataFrame:
    return generate_hdp(**kw).data


def _add_arm(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A 3-level treatment arm per row (ctrl, drugA, drugB) with a main effect
    and an age-by-arm interaction added to mobility."""
    rng = np.random.default_rng([seed, 6])
    labels = np.array(["ctrl", "drugA", "drugB"], dtype=object)
    arm = rng.integers(0, 3, size=len(df))
    main = np.array([0.0, 0.6, -0.4])[arm]
    age_slope = np.array([0.0, 0.02, -0.015])[arm]
    df = df.copy()
    df["mobility"] = df["mobility"] + main + age_slope * (df["age"] - 57.0)
    df["arm"] = pd.Categorical.from_codes(arm, categories=list(labels))
    return df


def _add_arm2(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A 2-level arm (ctrl, trt) per row whose doctor effect differs by arm:
    (u_ctrl, u_trt) per doctor ~ N(0, [[1, .48], [.48, .64]]) (SDs 1 and .8,
    correlation .6), plus a fixed trt effect of .4."""
    rng = np.random.default_rng([seed, 9])
    arm = rng.integers(0, 2, size=len(df))
    doc = df["doctor"].cat.codes.to_numpy()
    n_doc = len(df["doctor"].cat.categories)
    cov = np.array([[1.0, 0.6 * 0.8], [0.6 * 0.8, 0.64]])
    u = rng.standard_normal((n_doc, 2)) @ np.linalg.cholesky(cov).T
    df = df.copy()
    df["mobility"] = df["mobility"] + 0.4 * arm + u[doc, arm]
    df["arm2"] = pd.Categorical.from_codes(arm, categories=["ctrl", "trt"])
    return df


HDP_RI = dict(n_doctors=60, seed=1)                                      # 1260 rows
HDP_RI_NA = dict(n_doctors=60, seed=11, missing_share=0.03)               # 1260 rows, ~10% incomplete
HDP_SLOPE = dict(n_doctors=60, seed=2, mean_patients=8, min_patients=2, max_patients=14,
                 n_visits=3, slope_sd=0.5, slope_corr=0.4, time_effect=0.3)  # 1440 rows
HDP_CROSSED = dict(n_doctors=50, seed=4, mean_patients=20, n_hospitals=12,
                   hospital_sd=0.7)                                       # 1000 rows
HDP_NESTED = dict(n_doctors=80, seed=5, mean_patients=15, min_patients=2, max_patients=28,
                  nested_in=10, hospital_sd=0.7)                          # 1200 rows
HDP_CATINT = dict(n_doctors=60, seed=6)                                   # 1260 rows
# True slope SD 0, 3 visits: the (time | doctor) fit puts the slope on the boundary.
HDP_SING_SLOPE = dict(n_doctors=30, seed=9, mean_patients=6, min_patients=2, max_patients=10,
                      n_visits=3, slope_sd=0.0)                           # 540 rows
# True doctor SD 0, 12 doctors: the (1 | doctor) fit puts the intercept SD at 0.
HDP_SING_RI = dict(n_doctors=12, seed=7, mean_patients=42, min_patients=30, max_patients=54,
                   doctor_sd=0.0)                                         # 504 rows
HDP_CATTERM = dict(n_doctors=60, seed=9, mean_patients=20, doctor_sd=0.0)  # 1200 rows


def _call(kw: dict) -> str:
    return "generate_hdp(" + ", ".join(f"{k}={v!r}" for k, v in kw.items()) + ").data"


DATASETS = {
    "ri": (_call(HDP_RI), lambda: _hdp(**HDP_RI)),
    "ri_na": (_call(HDP_RI_NA), lambda: _hdp(**HDP_RI_NA)),
    "slope": (_call(HDP_SLOPE), lambda: _hdp(**HDP_SLOPE)),
    "crossed": (_call(HDP_CROSSED), lambda: _hdp(**HDP_CROSSED)),
    "nested": (_call(HDP_NESTED), lambda: _hdp(**HDP_NESTED)),
    "catint": (_call(HDP_CATINT) + " + arm (make_references._add_arm, seed 6)",
               lambda: _add_arm(_hdp(**HDP_CATINT), 6)),
    "singular_slope": (_call(HDP_SING_SLOPE), lambda: _hdp(**HDP_SING_SLOPE)),
    "singular_ri": (_call(HDP_SING_RI), lambda: _hdp(**HDP_SING_RI)),
    "catterm": (_call(HDP_CATTERM) + " + arm2 (make_references._add_arm2, seed 9)",
                lambda: _add_arm2(_hdp(**HDP_CATTERM), 9)),
    "tablets": ("tablets(missing=False)", lambda: tablets(missing=False)),
    "tablets_missing": ("tablets(missing=True)", lambda: tablets(missing=True)),
}

# Factor columns (read as factors by R; levels sorted in the C locale unless
# LEVELS says otherwise).
FACTOR_COLUMNS = ("doctor", "patient", "hospital", "arm", "arm2", "tablet", "method")
LEVELS = {"method": ["nir", "hplc"]}

# name, data set, formula, expectation ("singular" / "regular")
MODELS = [
    ("ri", "ri", "mobility ~ age + married + sex + wbc + rbc + (1 | doctor)", "regular"),
    ("ri_na", "ri_na", "mobility ~ age + married + sex + wbc + rbc + (1 | doctor)", "regular"),
    ("slope", "slope", "mobility ~ age + sex + time + (time | doctor)", "regular"),
    ("uncorr", "slope", "mobility ~ age + sex + time + (time || doctor)", "regular"),
    ("crossed", "crossed", "mobility ~ age + sex + (1 | doctor) + (1 | hospital)", "regular"),
    ("nested", "nested", "mobility ~ age + sex + (1 | hospital/doctor)", "regular"),
    ("catint", "catint", "mobility ~ age * arm + sex + (1 | doctor)", "regular"),
    ("singular_slope", "singular_slope", "mobility ~ age + sex + time + (time | doctor)",
     "singular"),
    ("singular_uncorr", "singular_slope", "mobility ~ age + sex + time + (time || doctor)",
     "singular"),
    ("singular_ri", "singular_ri", "mobility ~ age + sex + (1 | doctor)", "singular"),
    ("tablets", "tablets", "y ~ method + (1 | tablet)", "regular"),
    ("tablets_missing", "tablets_missing", "y ~ method + (1 | tablet)", "regular"),
    ("catterm", "catterm", "mobility ~ arm2 + (0 + arm2 | doctor)", "regular"),
    ("catterm_contrast", "catterm", "mobility ~ arm2 + (arm2 | doctor)", "regular"),
]


def write_csv(df: pd.DataFrame, path: Path) -> None:
    # pandas writes floats with repr (shortest round-trip), NaN as an empty field.
    df.to_csv(path, index=False, lineterminator="\n")


def check(res: dict, expect: str) -> tuple[list[str], list[str]]:
    """Sanity checks of one reference JSON: (problems, notes)."""
    bad, notes = [], []
    need = ["formula", "reml", "data", "nobs", "ngrps", "objective", "theta", "sigma",
            "beta", "se", "vcov", "fixed_names", "varcorr", "ranef", "logLik", "AIC",
            "BIC", "df", "isSingular", "optinfo", "fevals", "lme4_version", "R_version",
            "precise", "satterthwaite"]
    bad += [f"missing key {k}" for k in need if k not in res]
    for k in ("objective", "theta", "sigma", "beta", "se"):
        if k not in res.get("precise", {}):
            bad.append(f"precise lacks {k}")
    nums = [res["objective"], res["sigma"], *res["beta"].values(), *res["se"].values(),
            *res["theta"].values(), res["precise"]["objective"]]
    if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in nums):
        bad.append("non-finite numbers")
    gap = res["objective"] - res["precise"]["objective"]
    if gap < -1e-8:
        bad.append("precise objective above the default fit's")
    if gap > 1e-7:
        notes.append(f"default fit's objective is {gap:.3g} above the precise fit's")
    if "error" in res["satterthwaite"]:
        bad.append("lmerTest failed: " + str(res["satterthwaite"]["error"]))
    if expect == "singular" and not res["isSingular"]:
        bad.append("expected a singular fit")
    if expect == "regular" and res["isSingular"]:
        bad.append("unexpectedly singular")
    msgs = [m for m in res["optinfo"]["conv_lme4_messages"]
            if not (expect == "singular" and m.startswith("boundary (singular) fit"))]
    if msgs:
        notes.append("lme4 (default fit): " + "; ".join(msgs))
    return bad, notes


def _setarch_works() -> bool:
    if shutil.which("setarch") is None:
        return False
    return subprocess.run(["setarch", "-R", "true"], capture_output=True).returncode == 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="only these models (default: all)")
    ap.add_argument("--rscript", default=os.environ.get("RSCRIPT", "Rscript"))
    args = ap.parse_args(argv)

    models = [m for m in MODELS if not args.models or m[0] in args.models]
    unknown = set(args.models) - {m[0] for m in MODELS}
    if unknown:
        ap.error(f"unknown models: {sorted(unknown)}")
    if shutil.which(args.rscript) is None:
        print(f"{args.rscript} not found: R with lme4, lmerTest and jsonlite is needed",
              file=sys.stderr)
        return 2

    OUT.mkdir(parents=True, exist_ok=True)
    frames = {}
    for data in sorted({m[1] for m in models}):
        df = DATASETS[data][1]()
        write_csv(df, OUT / f"{data}.csv")
        frames[data] = df
        print(f"{data}.csv: {len(df)} rows, columns {list(df.columns)}")

    specs = []
    for name, data, formula, _ in models:
        df = frames[data]
        factors = [c for c in FACTOR_COLUMNS if c in df.columns]
        levels = {c: v for c, v in LEVELS.items() if c in df.columns}
        for reml in (True, False):
            specs.append({
                "name": name,
                "data": str(OUT / f"{data}.csv"),
                "data_file": f"{data}.csv",
                "formula": formula,
                "reml": reml,
                "factors": factors,
                "levels": levels,
                "out": str(OUT / f"{name}_{'reml' if reml else 'ml'}.json"),
            })

    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(specs, indent=1))
        env = dict(os.environ, LC_ALL="C.UTF-8", LANG="C.UTF-8")
        cmd = [args.rscript, "--vanilla", str(R_SCRIPT), str(spec_path)]
        # lme4's results depend on where the data land in memory (SIMD sums in
        # Eigen/CHOLMOD), in the ~1e-10 digits: without address randomisation the
        # output of a rerun is byte for byte the same.
        if _setarch_works():
            cmd = ["setarch", "-R"] + cmd
        subprocess.run(cmd, check=True, env=env)

    # index.json: everything (kept in sync with MODELS even for a partial run)
    problems = {}
    index = {"generated_by": "bench/make_references.py", "r_script": "bench/lme4_reference.R",
             "factor_columns": list(FACTOR_COLUMNS), "levels": LEVELS,
             "datasets": {}, "models": []}
    for name, data, formula, expect in MODELS:
        entry = {"name": name, "data": f"{data}.csv", "formula": formula,
                 "expect": expect, "fits": {}}
        for reml in (True, False):
            f = OUT / f"{name}_{'reml' if reml else 'ml'}.json"
            if not f.exists():
                continue
            res = json.loads(f.read_text())
            entry["fits"]["reml" if reml else "ml"] = f.name
            bad, notes = check(res, expect)
            if bad:
                problems[f.name] = bad
            entry.setdefault("isSingular", {})["reml" if reml else "ml"] = res["isSingular"]
            if notes:
                entry.setdefault("notes", {})["reml" if reml else "ml"] = notes
            index.setdefault("lme4_version", res["lme4_version"])
            index.setdefault("lmerTest_version", res.get("lmerTest_version"))
            index.setdefault("R_version", res["R_version"])
        index["models"].append(entry)
    for data, (how, _) in DATASETS.items():
        f = OUT / f"{data}.csv"
        if f.exists():
            n = sum(1 for _ in f.open()) - 1
            index["datasets"][data] = {"file": f.name, "rows": n, "made_by": how}
    (OUT / "index.json").write_text(json.dumps(index, indent=1) + "\n")

    # the seeds' published numbers for the tablet data (REML)
    tab = OUT / "tablets_reml.json"
    if tab.exists():
        t = json.loads(tab.read_text())
        vc = dict(zip(t["varcorr"]["grp"], t["varcorr"]["vcov"]))
        ok = (abs(vc["tablet"] - 0.089333) < 5e-6 and abs(vc["Residual"] - 0.043611) < 5e-6
              and abs(t["beta"]["(Intercept)"] - 10.39) < 5e-3
              and abs(t["se"]["(Intercept)"] - 0.11530) < 5e-5)
        print(f"tablets REML: tablet var {vc['tablet']:.6f}, residual {vc['Residual']:.6f}, "
              f"intercept {t['beta']['(Intercept)']:.5f} (SE {t['se']['(Intercept)']:.5f}): "
              + ("as published" if ok else "DIFFERS from the published numbers"))
        if not ok:
            problems["tablets_reml.json"] = ["differs from the published numbers"]

    for entry in index["models"]:
        for fit, notes in entry.get("notes", {}).items():
            print(f"note {entry['name']}_{fit}: " + "; ".join(notes))
    for f, bad in problems.items():
        print(f"PROBLEM {f}: " + "; ".join(bad), file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
