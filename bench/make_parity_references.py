"""Make the lme4 parity references (lmer verbs) that bigmixed's tests compare with.

    .venv/bin/python bench/make_parity_references.py            # every fit
    .venv/bin/python bench/make_parity_references.py ri_weights # only these models

Output: ``bench/references_parity/`` (see its README.md).  The data are the
committed CSVs of ``bench/references`` (read, never regenerated); two derived
CSVs add columns to them (``ri_wz.csv``: ri.csv + ``w``, ``z``; ``slope_ftime.csv``:
slope.csv + ``ftime``), with the rules in ``DERIVED``.  One
``Rscript bench/parity_reference.R SPEC.json`` fits every model (lmer defaults and
tight tolerances) and writes ``<model>_<reml|ml>.json``; ``index.json`` lists them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
REF = HERE / "references"
OUT = HERE / "references_parity"
R_SCRIPT = HERE / "parity_reference.R"


def _ri_wz(df: pd.DataFrame) -> pd.DataFrame:
    i = np.arange(len(df))
    df = df.copy()
    df["w"] = 1 + i % 5                       # prior weights 1..5, int
    df["z"] = ((i % 11) - 5) / 10.0           # offset -0.5..0.5
    return df


def _slope_ftime(df: pd.DataFrame) -> pd.DataFrame:
    i = np.arange(len(df))
    df = df.copy()
    df["ftime"] = np.round(df["time"].to_numpy() + (((i * 7919) % 801) - 400) / 1000.0, 3)
    return df


def _catint_w(df: pd.DataFrame) -> pd.DataFrame:
    i = np.arange(len(df))
    df = df.copy()
    df["w"] = 0.5 + (i % 7) / 2.0             # prior weights 0.5..3.5
    return df


# derived file -> (source CSV, rule as text, function)
DERIVED = {
    "ri_wz.csv": ("ri.csv", "ri.csv + w = 1 + i % 5 (i = 0-based row), "
                  "z = ((i % 11) - 5) / 10", _ri_wz),
    "slope_ftime.csv": ("slope.csv", "slope.csv + ftime = round(time + "
                        "(((i * 7919) % 801) - 400) / 1000, 3) (i = 0-based row)",
                        _slope_ftime),
    "catint_w.csv": ("catint.csv", "catint.csv + w = 0.5 + (i % 7) / 2 (i = 0-based row)",
                     _catint_w),
}

FACTORS = {"doctor": None, "patient": None, "arm": None, "hospital": None}  # C-locale sorted levels

F_RI = "mobility ~ age + married + sex + wbc + rbc + (1 | doctor)"
F_RI_FIXED = "age + married + sex + wbc + rbc"


def _nd(rows, new=(), set_=()):
    return {"rows": list(rows),
            "new_levels": [{"row": p, "factor": f, "level": "NEWLEVEL"} for p, f in new],
            "set": [{"row": p, "column": c, "value": v} for p, c, v in set_]}


ND_RI = _nd([0, 1, 630, 1259], new=[(3, "doctor")])
ND_AGE = _nd([0, 1, 630, 1259, 5, 6],
             new=[(3, "doctor")],
             set_=[(4, "age", 20.0), (5, "age", 98.5), (2, "age", 57.25)])
ND_SLOPE = _nd([0, 1, 720, 1439], new=[(3, "doctor")])

# name, data (relative to bench/references_parity), formula, fits, options, notes
MODELS = [
    ("ri", "../references/ri.csv", F_RI, ("reml", "ml"),
     dict(extras={"ml": ["drop1"], "reml": ["ranova"]}, newdata=ND_RI),
     "the base of ri_update; the same fit as bench/references/ri_*.json"),
    ("ri_update", "../references/ri.csv", F_RI, ("reml", "ml"),
     dict(update=". ~ . - rbc", newdata=ND_RI), "update(ri fit, . ~ . - rbc)"),
    ("ri_weights", "ri_wz.csv", F_RI, ("reml", "ml"),
     dict(weights="w", newdata=ND_RI), "prior weights w (1..5): residual variance sigma^2 / w"),
    ("ri_offset_formula", "ri_wz.csv",
     f"mobility ~ {F_RI_FIXED} + offset(z) + (1 | doctor)", ("reml", "ml"),
     dict(newdata=ND_RI), "offset(z) in the formula"),
    ("ri_offset_arg", "ri_wz.csv", F_RI, ("reml", "ml"),
     dict(offset="z", newdata=ND_RI), "offset = z as an argument"),
    ("ri_weights_offset", "ri_wz.csv",
     f"mobility ~ {F_RI_FIXED} + offset(z) + (1 | doctor)", ("reml", "ml"),
     dict(weights="w", newdata=ND_RI, extras={"reml": ["ranova"], "ml": ["drop1"]}),
     "weights = w and offset(z) together; REML: ranova (lm with weights and offset), ML: drop1"),
    ("sin_time", "slope_ftime.csv",
     "mobility ~ age + sex + sin(2 * pi * ftime) + cos(2 * pi * ftime) + (1 | doctor)",
     ("reml", "ml"), dict(newdata=ND_SLOPE),
     "ftime: fractional times (slope.csv's time is 0/1/2, where sin(2*pi*time) is 0)"),
    ("log_y", "../references/ri.csv",
     f"log(mobility) ~ {F_RI_FIXED} + (1 | doctor)", ("reml", "ml"),
     dict(newdata=ND_RI), "mobility > 0 in ri.csv (min 1.3349): no shift"),
    ("sqrt_y", "../references/ri.csv",
     f"sqrt(mobility) ~ {F_RI_FIXED} + (1 | doctor)", ("reml", "ml"),
     dict(newdata=ND_RI), "no shift"),
    ("scaled_y", "../references/ri.csv",
     f"I(mobility/100) ~ {F_RI_FIXED} + (1 | doctor)", ("reml", "ml"),
     dict(newdata=ND_RI), "the response divided by 100"),
    ("ns_age", "../references/ri.csv", "mobility ~ ns(age, df = 3) + sex + (1 | doctor)",
     ("reml", "ml"), dict(splines=["ns(age, df = 3)"], newdata=ND_AGE),
     "natural spline; newdata ages 57.25, 20 and 98.5 (the last two outside the "
     "data's range 20.48..86.54, the boundary knots)"),
    ("bs_age", "../references/ri.csv", "mobility ~ bs(age, df = 4) + sex + (1 | doctor)",
     ("reml", "ml"), dict(splines=["bs(age, df = 4)"], newdata=ND_AGE), "B-spline, degree 3"),
    ("slope", "../references/slope.csv", "mobility ~ age + sex + time + (time | doctor)",
     ("reml",), dict(extras={"reml": ["ranova", "kenward_roger"]}),
     "random slope: ranova and Kenward-Roger"),
    ("catint", "../references/catint.csv", "mobility ~ age * arm + sex + (1 | doctor)",
     ("reml", "ml"),
     dict(extras={"reml": ["kenward_roger", "emmeans:arm", "emmeans_by:arm | sex"],
                  "ml": ["drop1"]}),
     "3-level factor arm with an age interaction: emmeans at the mean age, also by sex"),
    ("catint_weights", "catint_w.csv", "mobility ~ age * arm + sex + (1 | doctor)",
     ("reml",), dict(weights="w", extras={"reml": ["anova_types"]}),
     "prior weights with a factor interaction: lmerTest's Type I (sequential, on the "
     "unweighted X'X), II and III tables differ"),
    ("catadd", "../references/catint.csv", "mobility ~ age + arm + sex + (1 | doctor)",
     ("reml",), dict(extras={"reml": ["kenward_roger", "emmeans:arm", "ranova"]}),
     "arm without the interaction"),
    ("crossed", "../references/crossed.csv",
     "mobility ~ age + sex + (1 | doctor) + (1 | hospital)", ("reml", "ml"),
     dict(extras={"reml": ["ranova", "kenward_roger"], "ml": ["drop1"]}),
     "two crossed factors: ranova removes each term in turn (an lmer fit remains), KR with "
     "two variance components"),
    ("uncorr", "../references/slope.csv", "mobility ~ age + sex + time + (time || doctor)",
     ("reml",), dict(extras={"reml": ["ranova", "kenward_roger"]}),
     "uncorrelated intercept and slope: ranova of the expanded terms"),
    ("nested", "../references/nested.csv", "mobility ~ age + sex + (1 | hospital/doctor)",
     ("reml",), dict(extras={"reml": ["ranova", "kenward_roger"]}),
     "nested factors: ranova of (1 | doctor:hospital) and (1 | hospital)"),
    ("slope_update", "../references/slope.csv", "mobility ~ age + sex + time + (time | doctor)",
     ("reml", "ml"), dict(update=". ~ . - (time | doctor) + (1 | doctor) + (0 + time | doctor)"),
     "update() of the random part: the correlated term replaced by two uncorrelated ones"),
]


def _setarch_works() -> bool:
    if shutil.which("setarch") is None:
        return False
    return subprocess.run(["setarch", "-R", "true"], capture_output=True).returncode == 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*")
    ap.add_argument("--rscript", default=os.environ.get("RSCRIPT", "Rscript"))
    args = ap.parse_args(argv)
    unknown = set(args.models) - {m[0] for m in MODELS}
    if unknown:
        ap.error(f"unknown models: {sorted(unknown)}")
    OUT.mkdir(parents=True, exist_ok=True)

    datasets = {}
    for f, (src, how, fn) in DERIVED.items():
        df = fn(pd.read_csv(REF / src, keep_default_na=False, na_values=[""]))
        df.to_csv(OUT / f, index=False, lineterminator="\n")
        back = pd.read_csv(OUT / f)
        orig = pd.read_csv(REF / src)
        for c in orig.columns:  # the source columns are unchanged, as text and as numbers
            assert back[c].astype(str).equals(orig[c].astype(str)), (f, c)
        datasets[f] = {"file": f, "rows": len(df), "made_by": how, "source": f"../references/{src}"}
        print(f"{f}: {len(df)} rows")
    for (_, data, *_rest) in MODELS:
        if data.startswith("../references/"):
            datasets.setdefault(data, {"file": data, "rows": len(pd.read_csv(OUT / data)),
                                       "made_by": "committed bench/references data, read as is"})

    specs = []
    for name, data, formula, fits, opt, _ in MODELS:
        if args.models and name not in args.models:
            continue
        for kind in fits:
            specs.append({
                "name": name, "data": str((OUT / data).resolve()), "data_file": data,
                "formula": formula, "reml": kind == "reml",
                "weights": opt.get("weights"), "offset": opt.get("offset"),
                "levels": FACTORS, "update": opt.get("update"),
                "splines": opt.get("splines", []), "newdata": opt.get("newdata"),
                "extras": opt.get("extras", {}).get(kind, []),
                "out": str(OUT / f"{name}_{kind}.json"),
            })
    with tempfile.TemporaryDirectory() as tmp:
        sp = Path(tmp) / "spec.json"
        sp.write_text(json.dumps(specs, indent=1))
        env = dict(os.environ, LC_ALL="C.UTF-8", LANG="C.UTF-8")
        cmd = [args.rscript, "--vanilla", str(R_SCRIPT), str(sp)]
        if _setarch_works():
            cmd = ["setarch", "-R"] + cmd
        subprocess.run(cmd, check=True, env=env)

    index = {"generated_by": "bench/make_parity_references.py",
             "r_script": "bench/parity_reference.R",
             "factor_columns": list(FACTORS),
             "levels": "every factor column sorted in the C locale (byte order)",
             "datasets": datasets, "models": []}
    problems = []
    for name, data, formula, fits, opt, notes in MODELS:
        e = {"name": name, "data": data, "formula": formula, "notes": notes,
             "weights": opt.get("weights"), "offset": opt.get("offset"),
             "update": opt.get("update"), "fits": {}}
        for kind in fits:
            f = OUT / f"{name}_{kind}.json"
            if not f.exists():
                continue
            r = json.loads(f.read_text())
            e["fits"][kind] = {"file": f.name,
                               "extras": opt.get("extras", {}).get(kind, []),
                               "isSingular": r["isSingular"],
                               "objective_default_minus_tight":
                                   r["objective_default_minus_tight"],
                               "warnings": sorted(set(r["fit_warnings"]
                                                      + r["conv_lme4_messages"]))}
            if r["objective_default_minus_tight"] < -1e-8:
                problems.append(f"{f.name}: tight fit worse than default")
            index.setdefault("lme4_version", r["lme4_version"])
            index.setdefault("lmerTest_version", r["lmerTest_version"])
            index.setdefault("R_version", r["R_version"])
        index["models"].append(e)
    (OUT / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    for p in problems:
        print("PROBLEM", p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
