"""Make the nlme reference fits (residual correlation / variance structures).

    .venv/bin/python bench/make_nlme_references.py             # all data sets and fits
    .venv/bin/python bench/make_nlme_references.py ar1_ri cs   # only these models

For every data set below this script generates the data with
``bigmixed.data_gen.generate_longitudinal`` and a fixed seed and writes
``bench/references_nlme/<data>.csv``; then one
``Rscript bench/nlme_reference.R SPEC.json`` fits every model with nlme::lme by
REML and by ML (nlme's default control, and again with tight tolerances) and
writes ``bench/references_nlme/<model>_<reml|ml>.json``, the likelihood-ratio
tests ``lrt_<model>.json`` and the nlme-vs-lme4 comparison ``plain.json``.
``index.json`` lists the data sets, models, formulas and generator calls.

The tests read the CSV files (never regenerate the data, never call R).
R with nlme, lme4 and jsonlite is needed only to run this script.
See bench/references_nlme/README.md for the fields and nlme's parametrization.
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

import pandas as pd

from bigmixed.data_gen import generate_longitudinal

HERE = Path(__file__).resolve().parent
OUT = HERE / "references_nlme"
R_SCRIPT = HERE / "nlme_reference.R"

ARMS = {"a": 1.0, "b": 1.6, "c": 0.6}

# data set name -> keyword arguments of generate_longitudinal
DATA = {
    # random intercept, AR(1) on visits, ~15% missed visits (gaps > 1)
    "ar1": dict(n_patients=300, n_visits=8, residual="ar1", phi=0.6, sigma=1.0,
                intercept_sd=1.0, slope_sd=0.0, missed_visit_share=0.15, seed=101),
    # random intercept and slope, AR(1) on visits, complete visits (no gaps)
    "ar1_slope": dict(n_patients=300, n_visits=8, residual="ar1", phi=0.6, sigma=1.0,
                      intercept_sd=1.0, slope_sd=0.5, corr=-0.3, seed=102),
    # irregular times, continuous-time AR(1): corr = phi^|dt| (dt in years)
    "car1": dict(n_patients=300, n_visits=7, residual="car1", phi=0.4, sigma=1.0,
                 intercept_sd=1.0, slope_sd=0.0, continuous_times=True, seed=103),
    # 30 hospitals, compound symmetry within patient, no patient random effects
    "cs": dict(n_patients=300, n_visits=6, n_hospitals=30, hospital_sd=0.7, residual="cs",
               rho_cs=0.4, sigma=1.0, intercept_sd=0.0, slope_sd=0.0, seed=104),
    # iid residuals, SD by arm (arm per patient)
    "varident": dict(n_patients=300, n_visits=6, residual="iid", sigma=1.0, intercept_sd=1.0,
                     slope_sd=0.0, arm_sd_ratios=ARMS, seed=105),
    # AR(1) on visits with gaps and SD by arm (arm varies within patient)
    "ar1_varident": dict(n_patients=300, n_visits=8, residual="ar1", phi=0.5, sigma=1.0,
                         intercept_sd=1.0, slope_sd=0.0, arm_sd_ratios=ARMS,
                         arm_within_patient=True, missed_visit_share=0.1, seed=106),
}

FACTOR_COLUMNS = ("patient", "hospital", "arm")
FIXED = "y ~ time * treat"

# name, data, random, correlation, weights, extra
MODELS = [
    ("ar1_ri", "ar1", "~ 1 | patient", "corAR1(form = ~ visit | patient)", None,
     {"gap_check": True}),
    ("ar1_slope", "ar1_slope", "~ 1 + time | patient", "corAR1(form = ~ visit | patient)",
     None, {}),
    ("car1", "car1", "~ 1 | patient", "corCAR1(form = ~ time | patient)", None, {}),
    ("cs", "cs", "~ 1 | hospital", "corCompSymm(form = ~ 1 | hospital/patient)", None, {}),
    ("varident", "varident", "~ 1 | patient", None, "varIdent(form = ~ 1 | arm)", {}),
    ("ar1_varident", "ar1_varident", "~ 1 | patient", "corAR1(form = ~ visit | patient)",
     "varIdent(form = ~ 1 | arm)", {"order_check": True}),
]
# likelihood-ratio tests (REML): name -> model whose structure is tested
LRTS = {"lrt_ar1_ri": "ar1_ri", "lrt_varident": "varident"}
PLAIN = dict(name="plain", data="ar1", random="~ 1 | patient",
             lmer_formula="y ~ time * treat + (1 | patient)")


def _call(kw: dict) -> str:
    return "generate_longitudinal(" + ", ".join(f"{k}={v!r}" for k, v in kw.items()) + ").data"


def write_csv(df: pd.DataFrame, path: Path) -> None:
    # floats with round-trip precision (17 significant digits)
    df.to_csv(path, index=False, lineterminator="\n", float_format="%.17g")


def _finite(*xs) -> bool:
    return all(isinstance(x, (int, float)) and math.isfinite(x) for x in xs)


def check_lme(res: dict, truth: dict) -> tuple[list[str], list[str]]:
    """Sanity checks of one lme JSON against the generator's truth: (problems, notes)."""
    bad, notes = [], []
    need = ["logLik", "m2logLik", "sigma", "beta", "se", "vcov", "random", "ranef",
            "tight", "nlme_version", "R_version", "nobs"]
    bad += [f"missing key {k}" for k in need if k not in res]
    if bad:
        return bad, notes
    if not _finite(res["logLik"], res["sigma"], *res["beta"].values(), *res["se"].values()):
        bad.append("non-finite numbers")
    t = res["tight"]
    if t.get("fallback_to_default"):
        notes.append("tight fit failed: " + str(t.get("error")))
    gap = res["logLik_gap_tight_minus_default"]
    if gap < -1e-6:
        bad.append(f"tight logLik below the default's by {-gap:.3g}")
    elif gap > 1e-6:
        notes.append(f"tight logLik above the default's by {gap:.3g}")
    if res["fit_warnings"]:
        notes.append("default fit warnings: " + "; ".join(res["fit_warnings"]))
    # estimates near the truth (loose: ~300 patients)
    cs = t.get("corStruct")
    if cs is not None:
        est = next(iter(cs["natural"].values()))
        true = truth["phi"] if truth["residual"] in ("ar1", "car1") else truth["rho_cs"]
        if abs(est - true) > 0.15:
            bad.append(f"correlation parameter {est:.3f} far from the truth {true}")
    vs = t.get("varStruct")
    if vs is not None:
        ref = vs["reference"]
        tr = truth["arm_sd_ratios"]
        for lev, r in vs["all"].items():
            want = tr[lev] / tr[ref]
            if abs(math.log(r / want)) > 0.2:
                bad.append(f"varIdent ratio {lev}/{ref} = {r:.3f}, truth {want:.3f}")
        if abs(t["sigma"] * 1.0 / (truth["sigma"] * tr[ref]) - 1) > 0.15:
            bad.append(f"sigma {t['sigma']:.3f} far from the reference arm's SD")
    for k, v in truth["beta"].items():
        name = {"intercept": "(Intercept)"}.get(k, k)
        if abs(t["beta"][name] - v) > 4 * t["se"][name] + 1e-9:
            bad.append(f"beta {name} = {t['beta'][name]:.3f}, truth {v} (SE {t['se'][name]:.3f})")
    return bad, notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="only these models (default: all, with LRTs "
                    "and plain)")
    ap.add_argument("--rscript", default=os.environ.get("RSCRIPT", "Rscript"))
    args = ap.parse_args(argv)

    all_names = [m[0] for m in MODELS] + list(LRTS) + [PLAIN["name"]]
    unknown = set(args.models) - set(all_names)
    if unknown:
        ap.error(f"unknown models: {sorted(unknown)} (known: {all_names})")
    want = set(args.models or all_names)
    if shutil.which(args.rscript) is None:
        print(f"{args.rscript} not found: R with nlme, lme4 and jsonlite is needed",
              file=sys.stderr)
        return 2

    models = {m[0]: m for m in MODELS}
    need_data = {models[n][1] for n in want if n in models}
    need_data |= {models[LRTS[n]][1] for n in want if n in LRTS}
    if PLAIN["name"] in want:
        need_data.add(PLAIN["data"])

    OUT.mkdir(parents=True, exist_ok=True)
    frames, truths = {}, {}
    for data in sorted(need_data):
        g = generate_longitudinal(**DATA[data])
        write_csv(g.data, OUT / f"{data}.csv")
        frames[data], truths[data] = g.data, g.truth
        print(f"{data}.csv: {len(g.data)} rows, {g.summary()}")

    def base(name: str, data: str) -> dict:
        df = frames[data]
        return {"name": name, "data": str(OUT / f"{data}.csv"), "data_file": f"{data}.csv",
                "fixed": FIXED, "factors": [c for c in FACTOR_COLUMNS if c in df.columns]}

    specs = []
    for name, data, random, corr, weights, extra in MODELS:
        if name not in want:
            continue
        for reml in (True, False):
            specs.append({**base(name, data), "kind": "lme", "random": random,
                          "correlation": corr, "weights": weights, "reml": reml,
                          "gap_check": bool(extra.get("gap_check")),
                          "order_check": bool(extra.get("order_check")),
                          "out": str(OUT / f"{name}_{'reml' if reml else 'ml'}.json")})
    for name, model in LRTS.items():
        if name not in want:
            continue
        _, data, random, corr, weights, _ = models[model]
        specs.append({**base(name, data), "kind": "lrt", "random": random,
                      "correlation": corr, "weights": weights,
                      "out": str(OUT / f"{name}.json")})
    if PLAIN["name"] in want:
        specs.append({**base(PLAIN["name"], PLAIN["data"]), "kind": "plain",
                      "random": PLAIN["random"], "lmer_formula": PLAIN["lmer_formula"],
                      "out": str(OUT / f"{PLAIN['name']}.json")})

    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(specs, indent=1))
        env = dict(os.environ, LC_ALL="C.UTF-8", LANG="C.UTF-8")
        cmd = [args.rscript, "--vanilla", str(R_SCRIPT), str(spec_path)]
        if shutil.which("setarch") and subprocess.run(["setarch", "-R", "true"],
                                                      capture_output=True).returncode == 0:
            cmd = ["setarch", "-R"] + cmd
        subprocess.run(cmd, check=True, env=env)

    # ---- index.json (complete even after a partial run) and checks -----------
    problems: dict[str, list[str]] = {}
    index: dict = {"generated_by": "bench/make_nlme_references.py",
                   "r_script": "bench/nlme_reference.R",
                   "factor_columns": list(FACTOR_COLUMNS),
                   "fixed": FIXED, "datasets": {}, "models": [], "lrt": [], "plain": None}
    for data, kw in DATA.items():
        f = OUT / f"{data}.csv"
        if not f.exists():
            continue
        g = generate_longitudinal(**kw)
        t = g.truth
        index["datasets"][data] = {
            "file": f.name, "rows": len(g.data), "made_by": _call(kw),
            "truth": {k: t[k] for k in ("beta", "residual", "correlation_on", "phi", "rho_cs",
                                        "sigma", "intercept_sd", "slope_sd", "corr",
                                        "hospital_sd", "arm_sd_ratios", "arm_within_patient",
                                        "continuous_times", "missed_visit_share",
                                        "n_patients", "n_visits", "n_hospitals")},
        }
        truths.setdefault(data, t)
    for name, data, random, corr, weights, _ in MODELS:
        entry = {"name": name, "data": f"{data}.csv", "fixed": FIXED, "random": random,
                 "correlation": corr, "weights": weights, "fits": {}}
        for key in ("reml", "ml"):
            f = OUT / f"{name}_{key}.json"
            if not f.exists():
                continue
            res = json.loads(f.read_text())
            entry["fits"][key] = f.name
            bad, notes = check_lme(res, truths[data])
            if bad:
                problems[f.name] = bad
            if notes:
                entry.setdefault("notes", {})[key] = notes
            entry.setdefault("corStruct_class", (res["corStruct"] or {}).get("class"))
            if res.get("varStruct"):
                entry["varIdent_reference"] = res["varStruct"]["reference"]
            entry.setdefault("tight_failed", {})[key] = bool(res["tight"]["fallback_to_default"])
            index.setdefault("nlme_version", res["nlme_version"])
            index.setdefault("R_version", res["R_version"])
        index["models"].append(entry)
    for name, model in LRTS.items():
        f = OUT / f"{name}.json"
        entry = {"name": name, "model": model, "data": f"{models[model][1]}.csv",
                 "file": f.name if f.exists() else None}
        if f.exists():
            res = json.loads(f.read_text())
            for how in ("default", "tight"):
                if "error" in res[how]:
                    problems.setdefault(f.name, []).append(f"{how}: {res[how]['error']}")
        index["lrt"].append(entry)
    f = OUT / "plain.json"
    index["plain"] = {"name": "plain", "data": f"{PLAIN['data']}.csv", "fixed": FIXED,
                      "random": PLAIN["random"], "lmer_formula": PLAIN["lmer_formula"],
                      "file": f.name if f.exists() else None}
    if f.exists():
        res = json.loads(f.read_text())
        d = res["reml"]["logLik_nlme_minus_lme4"]
        h = res["half_logdet_XtX"]
        index["plain"]["reml_logLik_nlme_minus_lme4"] = d
        index["plain"]["half_logdet_XtX"] = h
        index["plain"]["ml_logLik_nlme_minus_lme4"] = res["ml"]["logLik_nlme_minus_lme4"]
        if abs(res["ml"]["logLik_nlme_minus_lme4"]) > 1e-5 or min(abs(d), abs(d - h)) > 1e-5:
            problems["plain.json"] = [
                f"REML logLik nlme - lme4 = {d:.6g} (log|X'X|/2 = {h:.6g}), ML nlme - lme4 = "
                f"{res['ml']['logLik_nlme_minus_lme4']:.3g}"]
        else:
            print(f"plain: REML logLik nlme - lme4 = {d:.3g} (log|X'X|/2 = {h:.6g}); "
                  f"ML nlme - lme4 = {res['ml']['logLik_nlme_minus_lme4']:.3g}")
    (OUT / "index.json").write_text(json.dumps(index, indent=1) + "\n")

    for entry in index["models"]:
        for fit, notes in entry.get("notes", {}).items():
            print(f"note {entry['name']}_{fit}: " + "; ".join(notes))
    for f, bad in problems.items():
        print(f"PROBLEM {f}: " + "; ".join(bad), file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
