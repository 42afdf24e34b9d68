"""Make the glmer (lme4) reference fits that bigmixed's GLMM tests compare with.

    .venv/bin/python bench/make_glmm_references.py              # every data set and fit
    .venv/bin/python bench/make_glmm_references.py cbpp hdp_logit  # only these models

Output: ``bench/references_glmm/`` (see its README.md).  Steps:

1. ``Rscript bench/glmer_reference.R export TMP`` writes lme4's ``cbpp``,
   ``grouseticks``, ``VerbAgg`` and mlmRev's ``Contraception`` (doubles as %.17g)
   and their factor levels; this script rewrites them as ``<data>.csv`` with
   pandas (floats as repr, the shortest round-trip form).  The hdp-style data sets
   are generated with ``bigmixed.data_gen`` and fixed seeds.
2. ``Rscript bench/glmer_reference.R csvcheck`` parses every CSV in R and prints
   each numeric cell as %.17g; the numbers must equal pandas' parse bit for bit
   (recorded in index.json as ``csv_parse_identical_r_pandas``).
3. ``Rscript bench/glmer_reference.R fit SPEC.json``: for every model and nAGQ,
   glmer is fitted with three controls (default, bobyqa, tight) and one JSON per
   fit is written, ``<model>_agq<k>_<control>.json``; for ``cbpp`` also
   ``cbpp_inference.json`` (anova, confint Wald / profile, drop1).
4. ``index.json``: data sets (file, rows, how made, factor levels, response
   coding), models, fits, the best control per model and nAGQ, lme4's warnings.

Tests read the CSVs and JSONs and never call R.
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

from bigmixed.data_gen import generate_hdp

HERE = Path(__file__).resolve().parent
OUT = HERE / "references_glmm"
R_SCRIPT = HERE / "glmer_reference.R"
RESCALED_R = HERE / "glmer_rescaled.R"

PACKAGE_DATA = {
    "cbpp": "lme4::cbpp",
    "grouseticks": "lme4::grouseticks",
    "VerbAgg": "lme4::VerbAgg",
    "Contraception": "mlmRev::Contraception",
}

# hdp-style data (bigmixed.data_gen), 8525 rows / 407 doctors unless stated
HDP_GLMM = dict(seed=0, binary=True, counts=True)
HDP_GLMM_CROSSED = dict(seed=1, n_hospitals=100, binary=True)
# 12 doctors, true doctor SD 0 on the logit scale: glmer's estimate is exactly 0 (seed 3)
GLMM_SINGULAR = dict(n_doctors=12, seed=3, mean_patients=42, min_patients=30,
                     max_patients=54, binary=True, binary_doctor_sd=0.0)
GLMM_SEPARATION = dict(n_doctors=40, seed=5, binary=True)
SEPARATION_SHARE = 0.1


def _call(kw: dict) -> str:
    return "generate_hdp(" + ", ".join(f"{k}={v!r}" for k, v in kw.items()) + ").data"


def _add_separation(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    """flag = 1 on a random ~10% of rows (rng [seed, 13]) and remission = 1 there:
    flag == 1 predicts the outcome perfectly (quasi-complete separation)."""
    rng = np.random.default_rng([seed, 13])
    flag = (rng.random(len(df)) < SEPARATION_SHARE).astype(np.int64)
    df = df.copy()
    df["flag"] = flag
    df.loc[flag == 1, "remission"] = 1
    return df


def _hdp(kw: dict) -> pd.DataFrame:
    # mobility (the LMM outcome, 17 significant digits) is not used by any GLMM
    # here and is left out; R's parser misreads about 1 in 10^4 of such numbers by
    # one ulp, the remaining columns parse identically in R and pandas.
    return generate_hdp(**kw).data.drop(columns="mobility")


_NO_MOB = ".drop(columns='mobility')"
HDP_DATASETS = {
    "hdp_glmm": (_call(HDP_GLMM) + _NO_MOB, lambda: _hdp(HDP_GLMM)),
    "hdp_glmm_crossed": (_call(HDP_GLMM_CROSSED) + _NO_MOB, lambda: _hdp(HDP_GLMM_CROSSED)),
    "glmm_singular": (_call(GLMM_SINGULAR) + _NO_MOB, lambda: _hdp(GLMM_SINGULAR)),
    "glmm_separation": (_call(GLMM_SEPARATION) + _NO_MOB + " + flag (make_glmm_references."
                        "_add_separation, seed 5: remission = 1 wherever flag = 1)",
                        lambda: _add_separation(_hdp(GLMM_SEPARATION), 5)),
}

HDP_FIXED = "age + married + sex + wbc + rbc"


def _nd(n: int, new_levels: list[tuple[int, str]]) -> dict:
    """newdata: rows 0, 1, n//2, n-1 (0-based); new_levels: (position, factor)."""
    return {"rows": [0, 1, n // 2, n - 1],
            "new_levels": [{"row": p, "factor": f, "level": "NEWLEVEL"}
                           for p, f in new_levels]}


# name, data, formula, family, link, nAGQs, weights, offset, new-level factors, notes
MODELS = [
    ("cbpp", "cbpp", "cbind(incidence, size - incidence) ~ period + (1 | herd)",
     "binomial", "logit", [0, 1, 25], None, None, [(3, "herd")],
     "lme4's example; anova / confint / drop1 in cbpp_inference.json"),
    ("cbpp_prop", "cbpp", "incidence/size ~ period + (1 | herd)",
     "binomial", "logit", [0, 1, 25], "size", None, [(3, "herd")],
     "cbpp as proportions with weights = size: the same estimates as cbind()"),
    ("grouseticks", "grouseticks",
     "TICKS ~ YEAR + scale(HEIGHT) + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)",
     "poisson", "log", [0, 1], None, None, [(3, "BROOD"), (2, "INDEX")],
     "INDEX has one level per row (an observation-level random effect)"),
    ("grouseticks_simple", "grouseticks",
     "TICKS ~ YEAR + HEIGHT + (1 | BROOD) + (1 | LOCATION)",
     "poisson", "log", [0, 1], None, None, [(3, "BROOD"), (2, "LOCATION")],
     "unscaled HEIGHT, no observation-level effect"),
    ("verbagg", "VerbAgg", "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)",
     "binomial", "logit", [0, 1], None, None, [(3, "id"), (2, "item")],
     "crossed id x item; r2 is a factor N/Y (N = failure)"),
    ("contraception", "Contraception",
     "use ~ age + I(age^2) + urban + livch + (1 | district)",
     "binomial", "logit", [0, 1, 10], None, None, [(3, "district")],
     "use is a factor N/Y (N = failure)"),
    ("contraception_slope", "Contraception",
     "use ~ age + I(age^2) + urban + livch + (1 + urban | district)",
     "binomial", "logit", [0, 1], None, None, [(3, "district")],
     "correlated random intercept and urban effect per district (Laplace only)"),
    ("hdp_logit", "hdp_glmm", f"remission ~ {HDP_FIXED} + (1 | doctor)",
     "binomial", "logit", [0, 1, 10], None, None, [(3, "doctor")], ""),
    ("hdp_probit", "hdp_glmm", f"remission ~ {HDP_FIXED} + (1 | doctor)",
     "binomial", "probit", [0, 1], None, None, [(3, "doctor")],
     "the logit data (no probit truth)"),
    ("hdp_cloglog", "hdp_glmm", f"remission ~ {HDP_FIXED} + (1 | doctor)",
     "binomial", "cloglog", [0, 1], None, None, [(3, "doctor")],
     "the logit data (no cloglog truth)"),
    ("hdp_pois_offset", "hdp_glmm",
     f"n_events ~ {HDP_FIXED} + offset(log(exposure)) + (1 | doctor)",
     "poisson", "log", [0, 1], None, None, [(3, "doctor")], "offset in the formula"),
    ("hdp_pois_offarg", "hdp_glmm", f"n_events ~ {HDP_FIXED} + (1 | doctor)",
     "poisson", "log", [0, 1], None, "log(exposure)", [(3, "doctor")],
     "offset = log(exposure) as an argument"),
    ("hdp_crossed", "hdp_glmm_crossed",
     f"remission ~ {HDP_FIXED} + (1 | doctor) + (1 | hospital)",
     "binomial", "logit", [0, 1], None, None, [(3, "doctor"), (2, "hospital")],
     "407 doctors crossed with 100 hospitals"),
    ("glmm_singular", "glmm_singular", "remission ~ age + sex + (1 | doctor)",
     "binomial", "logit", [0, 1], None, None, [(3, "doctor")],
     "true doctor SD 0, 12 doctors: theta = 0"),
    ("glmm_separation", "glmm_separation", "remission ~ age + sex + flag + (1 | doctor)",
     "binomial", "logit", [0, 1], None, None, [(3, "doctor")],
     "flag = 1 implies remission = 1 (quasi-complete separation)"),
]

CONTROLS = ["default", "bobyqa", "tight"]
# Badly scaled models: also fitted on standardised columns and mapped back
# (bench/glmer_rescaled.R -> <model>_agq<k>_rescaled.json), for nAGQ >= 1.
RESCALE = {
    "grouseticks_simple": ["HEIGHT"],
    "contraception": ["age"],
    "contraception_slope": ["age"],
    **{m: ["age", "wbc", "rbc"] for m in ("hdp_logit", "hdp_probit", "hdp_cloglog",
                                          "hdp_pois_offset", "hdp_pois_offarg",
                                          "hdp_crossed", "glmm_singular",
                                          "glmm_separation")},
}
RESCALE["glmm_singular"] = ["age"]
RESCALE["glmm_separation"] = ["age"]
ROWS_ALL_MAX = 2000  # per-row arrays in every fit up to this many rows
HDP_FACTORS = ("doctor", "hospital")


def write_csv(df: pd.DataFrame, path: Path) -> None:
    df.to_csv(path, index=False, lineterminator="\n")


def _setarch_works() -> bool:
    if shutil.which("setarch") is None:
        return False
    return subprocess.run(["setarch", "-R", "true"], capture_output=True).returncode == 0


def run_r(rscript: str, *args: str, script: Path = R_SCRIPT) -> None:
    env = dict(os.environ, LC_ALL="C.UTF-8", LANG="C.UTF-8")
    cmd = [rscript, "--vanilla", str(script), *args]
    if _setarch_works():
        cmd = ["setarch", "-R"] + cmd
    subprocess.run(cmd, check=True, env=env)


def make_datasets(names: set[str], rscript: str) -> dict:
    """Write the CSVs; return {name: {"file", "rows", "made_by", "levels", "types"}}."""
    info = {}
    pkg = [n for n in PACKAGE_DATA if n in names]
    if pkg:
        with tempfile.TemporaryDirectory() as tmp:
            run_r(rscript, "export", tmp)
            meta = json.loads((Path(tmp) / "levels.json").read_text())
            for n in pkg:
                types = meta[n]["types"]
                dtype = {c: (str if t in ("factor", "ordered") else
                             np.int64 if t == "integer" else np.float64)
                         for c, t in types.items()}
                df = pd.read_csv(Path(tmp) / f"{n}.csv", dtype=dtype, keep_default_na=False)
                write_csv(df, OUT / f"{n}.csv")
                info[n] = {"levels": meta[n]["levels"], "types": types,
                           "made_by": f"R package data {PACKAGE_DATA[n]}"}
    for n, (how, fn) in HDP_DATASETS.items():
        if n not in names:
            continue
        df = fn()
        levels, types = {}, {}
        for c in df.columns:
            if isinstance(df[c].dtype, pd.CategoricalDtype):
                levels[c] = [str(x) for x in df[c].cat.categories]
                types[c] = "factor"
            else:
                types[c] = "integer" if df[c].dtype.kind == "i" else "double"
        write_csv(df, OUT / f"{n}.csv")
        info[n] = {"levels": levels, "types": types, "made_by": how}
    for n, e in info.items():
        f = OUT / f"{n}.csv"
        e["file"] = f.name
        e["rows"] = sum(1 for _ in f.open()) - 1
        e["bytes"] = f.stat().st_size
        print(f"{f.name}: {e['rows']} rows, {e['bytes']} bytes")
    return info


def csv_check(info: dict, rscript: str) -> dict:
    """R's and pandas' parse of every numeric column: bit-identical?"""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        specs = []
        for n, e in info.items():
            num = [c for c, t in e["types"].items() if t in ("double", "integer")]
            specs.append({"data": str(OUT / e["file"]), "numeric": num,
                          "out": str(Path(tmp) / n)})
        sp = Path(tmp) / "spec.json"
        sp.write_text(json.dumps(specs))
        run_r(rscript, "csvcheck", str(sp))
        for n, e in info.items():
            df = pd.read_csv(OUT / e["file"])
            diff = {}
            for f in sorted((Path(tmp) / n).glob("*.txt")):
                c = f.stem
                a = np.array([float(v) for v in f.read_text().split()])
                b = df[c].to_numpy(dtype=np.float64)
                k = int(np.sum(~((a == b) | (np.isnan(a) & np.isnan(b)))))
                if k:
                    diff[c] = k
            out[n] = True if not diff else {"cells_differing_by_column": diff}
            if diff:
                print(f"WARNING {n}: R and pandas parse these columns differently: {diff}",
                      file=sys.stderr)
    return out


def model_specs(models, info) -> list[dict]:
    specs = []
    for (name, data, formula, family, link, agqs, weights, offset, newlv, _) in models:
        e = info[data]
        n = e["rows"]
        for k in agqs:
            group = f"{name}_agq{k}"
            rows = "all" if n <= ROWS_ALL_MAX else ("best" if k >= 1 else "none")
            spec = {
                "kind": "glmer", "name": group, "model": name,
                "data": str(OUT / e["file"]), "data_file": e["file"],
                "formula": formula, "family": family, "link": link, "nAGQ": k,
                "weights": weights, "offset": offset,
                "levels": e["levels"],
                "integer": [c for c, t in e["types"].items() if t == "integer"],
                "package_data": PACKAGE_DATA.get(data),
                "rows": rows, "newdata": _nd(n, newlv), "controls": CONTROLS,
                "out_prefix": str(OUT / group),
                "inference": None,
            }
            if name == "cbpp" and k == 1:
                spec["inference"] = {"null_formula":
                                     "cbind(incidence, size - incidence) ~ 1 + (1 | herd)",
                                     "out": str(OUT / "cbpp_inference.json")}
            specs.append(spec)
    return specs


def check(res: dict) -> list[str]:
    bad = []
    if "error" in res:
        return ["glmer failed: " + res["error"]]
    for k in ("theta", "beta", "logLik", "vcov", "ranef", "varcorr", "AIC", "BIC",
              "deviance", "df_resid", "isSingular", "feval", "newdata"):
        if k not in res:
            bad.append(f"missing {k}")
    nums = [res["logLik"], *res["beta"].values(), *res["theta"].values()]
    if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in nums):
        bad.append("non-finite numbers")
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="only these models (default: all)")
    ap.add_argument("--rscript", default=os.environ.get("RSCRIPT", "Rscript"))
    ap.add_argument("--only-rescaled", action="store_true",
                    help="skip the glmer_reference.R fits; only the rescaled fits and index")
    args = ap.parse_args(argv)
    names = {m[0] for m in MODELS}
    unknown = set(args.models) - names
    if unknown:
        ap.error(f"unknown models: {sorted(unknown)}")
    models = [m for m in MODELS if not args.models or m[0] in args.models]
    OUT.mkdir(parents=True, exist_ok=True)

    # every data set is (re)written, so that index.json always describes them all
    all_data = {m[1] for m in MODELS}
    info = make_datasets(all_data, args.rscript)
    parse_ok = csv_check(info, args.rscript)

    specs = model_specs(models, info)
    if not args.only_rescaled:
        with tempfile.TemporaryDirectory() as tmp:
            sp = Path(tmp) / "spec.json"
            sp.write_text(json.dumps(specs, indent=1))
            run_r(args.rscript, "fit", str(sp))
    rs = [dict(s, rescale=RESCALE[s["model"]],
               rescaled_out=s["out_prefix"] + "_rescaled.json")
          for s in specs if s["model"] in RESCALE and s["nAGQ"] >= 1]
    if rs:
        with tempfile.TemporaryDirectory() as tmp:
            sp = Path(tmp) / "spec.json"
            sp.write_text(json.dumps(rs, indent=1))
            run_r(args.rscript, str(sp), script=RESCALED_R)

    # ---- index.json --------------------------------------------------------
    index = {"generated_by": "bench/make_glmm_references.py",
             "r_script": "bench/glmer_reference.R",
             "controls": {
                 "default": "glmerControl()",
                 "bobyqa": "glmerControl(optimizer = 'bobyqa')",
                 "tight": "glmerControl(optimizer = 'bobyqa', optCtrl = list(maxfun = 1e5, "
                          "rhoend = 1e-10))"},
             "rows_all_max": ROWS_ALL_MAX,
             "datasets": {}, "models": []}
    for n, e in sorted(info.items()):
        index["datasets"][n] = {**e, "csv_parse_identical_r_pandas": parse_ok[n]}
    index["datasets"]["Contraception"]["response_coding"] = {
        "use": "factor N/Y; glmer: first level (N) = failure (0), Y = success (1)"}
    index["datasets"]["VerbAgg"]["response_coding"] = {
        "r2": "factor N/Y; glmer: first level (N) = failure (0), Y = success (1)"}
    problems = {}
    for (name, data, formula, family, link, agqs, weights, offset, _, notes) in MODELS:
        entry = {"name": name, "data": info[data]["file"], "formula": formula,
                 "family": family, "link": link, "weights": weights, "offset": offset,
                 "notes": notes, "fits": {}}
        for k in agqs:
            group = f"{name}_agq{k}"
            g = {"files": {}}
            for c in CONTROLS:
                f = OUT / f"{group}_{c}.json"
                if not f.exists():
                    continue
                res = json.loads(f.read_text())
                g["files"][c] = f.name
                bad = check(res)
                if bad:
                    problems[f.name] = bad
                if "error" in res:
                    g.setdefault("errors", {})[c] = res["error"]
                    continue
                g["best_control"] = res["best_control"]
                g["logLik_by_control"] = res["logLik_by_control"]
                g.setdefault("elapsed_seconds", {})[c] = res["elapsed_seconds"]
                g.setdefault("feval", {})[c] = res["feval"]
                g.setdefault("isSingular", {})[c] = res["isSingular"]
                w = res["fit_warnings"] + res["conv_lme4_messages"] + res["fit_messages"]
                if w:
                    g.setdefault("warnings", {})[c] = sorted(set(w))
                index.setdefault("lme4_version", res["lme4_version"])
                index.setdefault("Matrix_version", res["Matrix_version"])
                index.setdefault("R_version", res["R_version"])
            rf = OUT / f"{group}_rescaled.json"
            if rf.exists():
                r = json.loads(rf.read_text())
                g["rescaled"] = {"file": rf.name, "logLik": r["logLik"],
                                 "columns": list(r["rescaled_columns"]),
                                 "warnings": sorted(set(r["fit_warnings"]
                                                        + r["conv_lme4_messages"]))}
            if g["files"]:
                if "best_control" in g:
                    g["best_file"] = f"{group}_{g['best_control']}.json"
                    lls = dict(g["logLik_by_control"])
                    if "rescaled" in g:
                        lls["rescaled"] = g["rescaled"]["logLik"]
                    g["best_logLik_overall"] = max(lls.values())
                    g["best_overall"] = max(lls, key=lls.get)
                entry["fits"][f"agq{k}"] = g
        if name == "cbpp" and (OUT / "cbpp_inference.json").exists():
            entry["inference"] = "cbpp_inference.json"
        index["models"].append(entry)
    (OUT / "index.json").write_text(json.dumps(index, indent=1) + "\n")

    for f, bad in problems.items():
        print(f"PROBLEM {f}: " + "; ".join(bad), file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
