"""Bit-level record of bigmixed's fits, to show that a refactoring changes no number.

    .venv/bin/python bench/bitwise.py --out before          # writes bench/results/bitwise_before.json
    .venv/bin/python bench/bitwise.py --out after --large   # also slope_10m and crossed_1m
    .venv/bin/python bench/bitwise.py --compare before after  # table: results/bitwise.md

Every committed reference fit (bench/references: lme4, with each solver that applies;
bench/references_nlme: residual structures), every bench problem (bench/problems.py), and the
refit-based numbers (anova's ML refit, a parametric bootstrap, profile intervals, fit_many,
power simulation) are written as hexadecimal floats (float.hex), so "equal" means equal to the
last bit.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bigmixed as bm  # noqa: E402

RESULTS = HERE / "results"
REF = HERE / "references"
REF_NLME = HERE / "references_nlme"


def _hex(a) -> list | str:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 0:
        return float(a).hex()
    return [float(v).hex() for v in a.ravel()]


def _record(fit) -> dict:
    return {
        "objective": _hex(fit.objective),
        "theta": _hex(fit.optimizer_params),
        "beta": _hex(fit.beta),
        "se": _hex(np.sqrt(np.diag(fit.vcov))),
        "sigma": _hex(fit.sigma),
        "n_evaluations": int(fit.optimizer.n_evaluations),
    }


def _lme4_data(file, index):
    df = pd.read_csv(REF / file)
    for col in index["factor_columns"]:
        if col in df.columns:
            levels = index["levels"].get(col)
            values = df[col].astype("string").astype(object).where(df[col].notna())
            if levels is None:
                levels = sorted(values.dropna().unique())
            df[col] = pd.Categorical(values, categories=levels)
    return df


def reference_fits(out: dict) -> None:
    index = json.loads((REF / "index.json").read_text())
    for m in index["models"]:
        df = _lme4_data(m["data"], index)
        for kind in ("reml", "ml"):
            if kind not in m["fits"]:
                continue
            model = bm.lmm(m["formula"], df, reml=(kind == "reml"))
            solvers = ["auto"]
            if len(model.structure.factors) > 1:
                solvers += ["cholmod", "schur"]
            for solver in solvers:
                key = f"lme4/{m['name']}/{kind}/{solver}"
                try:
                    fit = bm.lmm(m["formula"], df, reml=(kind == "reml"), solver=solver).fit()
                except ValueError as e:  # a solver that does not apply to this structure
                    out[key] = {"error": str(e)}
                    continue
                out[key] = _record(fit)
                if solver == "auto":
                    out[key]["ranef"] = _hex(np.concatenate(
                        [r.to_numpy().ravel() for r in fit.ranef().values()]))


NLME_MODELS = {
    "ar1_ri": ("y ~ time * treat + (1 | patient)", dict(residual=bm.AR1("visit", "patient"))),
    "ar1_slope": ("y ~ time * treat + (1 + time | patient)", dict(residual=bm.AR1("visit", "patient"))),
    "car1": ("y ~ time * treat + (1 | patient)", dict(residual=bm.AR1("time", "patient"))),
    "cs": ("y ~ time * treat + (1 | hospital)", dict(residual=bm.CompoundSymmetry("patient"))),
    "varident": ("y ~ time * treat + (1 | patient)", dict(variance="arm")),
    "ar1_varident": ("y ~ time * treat + (1 | patient)",
                     dict(residual=bm.AR1("visit", "patient"), variance="arm")),
}


def nlme_fits(out: dict) -> None:
    for name, (formula, kw) in NLME_MODELS.items():
        for kind in ("reml", "ml"):
            ref = json.loads((REF_NLME / f"{name}_{kind}.json").read_text())
            df = pd.read_csv(REF_NLME / ref["data"], dtype={"patient": str, "hospital": str, "arm": str})
            kw2 = dict(kw)
            if kw2.get("variance"):
                kw2["variance"] = bm.VarIdent(kw2["variance"], reference=ref["varStruct"]["reference"])
            fit = bm.lmm(formula, df, reml=(kind == "reml"), **kw2).fit()
            rec = _record(fit)
            rec["residual_parameters"] = _hex(fit.residual_parameters.to_numpy())
            out[f"nlme/{name}/{kind}"] = rec


def bench_problems(out: dict, large: bool) -> None:
    from problems import DEFAULT, make_data, PROBLEMS

    names = list(DEFAULT) + (["slope_10m", "crossed_1m"] if large else [])
    for name in names:
        df = make_data(name)
        for kind in ("reml", "ml"):
            fit = bm.lmm(PROBLEMS[name].formula, df, reml=(kind == "reml")).fit()
            out[f"bench/{name}/{kind}"] = _record(fit)
        del df


def refit_numbers(out: dict) -> None:
    """Numbers that come from refitting: anova's ML refit, bootstrap, profile, fit_many, power."""
    from bigmixed.data_gen import generate_hdp, generate_longitudinal

    df = generate_longitudinal(40, 5, residual="ar1", seed=3).data
    ar = bm.AR1(time="visit", group="patient")
    m0 = bm.lmm("y ~ time + treat + (1 + time | patient)", df, residual=ar).fit()
    m1 = bm.lmm("y ~ time * treat + (1 + time | patient)", df, residual=ar).fit()
    table = bm.anova(m0, m1)
    out["refit/anova_ar1/table"] = _hex(table[["logLik", "deviance", "Chisq"]].to_numpy(dtype=float))
    out["refit/anova_ar1/m1_after"] = _record(m1)

    hdp = generate_hdp(n_doctors=60, seed=5).data
    f = bm.lmm("mobility ~ age + sex + (1 | doctor)", hdp).fit()
    f1 = bm.lmm("mobility ~ age + sex + (1 + age | doctor)", hdp).fit()
    table = bm.anova(f, f1)
    out["refit/anova_hdp/table"] = _hex(table[["logLik", "deviance", "Chisq"]].to_numpy(dtype=float))
    boot = f.bootstrap(nsim=8, seed=1)
    out["refit/bootstrap_hdp"] = _hex(boot.replicates.to_numpy(dtype=float))
    ci = f.confint(method="profile")
    # (profiled estimate, lower, upper) per parameter, as the profile table had them: the
    # profiled (ML refit's) estimates are in the table's attrs since confint's tables share
    # one shape with the fit's own estimate column
    profiled = ci.attrs.get("profiled_estimates")
    est = (ci["estimate"] if profiled is None else ci["term"].map(profiled)).to_numpy(dtype=float)
    out["refit/profile_hdp"] = _hex(np.column_stack([est, ci["lower"].to_numpy(dtype=float),
                                                     ci["upper"].to_numpy(dtype=float)]))
    hdp2 = hdp.copy()
    rng = np.random.default_rng(7)
    for k in range(3):
        hdp2[f"marker_{k}"] = hdp2["mobility"] + rng.standard_normal(len(hdp2))
    many = bm.fit_many("~ age + sex + (1 | doctor)", hdp2, responses="marker_*", n_jobs=1)
    for r in many:
        out[f"refit/fit_many/{r.response}"] = _record(r.fit)
    pw = bm.power_simulation("mobility ~ age + (1 | doctor)", hdp, effects={"age": 0.02},
                             variance_components={"doctor": 1.0}, sigma=1.0, nsim=6, seed=0)
    out["refit/power"] = _hex(np.concatenate([pw.p_values.to_numpy(dtype=float).ravel(),
                                              pw.estimates.to_numpy(dtype=float).ravel()]))
    out["refit/after_all/base"] = _record(f)


def compare(a: str, b: str) -> int:
    A = json.loads((RESULTS / f"bitwise_{a}.json").read_text())
    B = json.loads((RESULTS / f"bitwise_{b}.json").read_text())
    rows, bad = [], 0
    for key in A["fits"]:
        ra, rb = A["fits"][key], B["fits"].get(key)
        same = ra == rb
        bad += not same
        obj = ra.get("objective") if isinstance(ra, dict) else None
        theta = ra.get("theta") if isinstance(ra, dict) else None
        fmt = (lambda h: repr(float.fromhex(h))) if obj else (lambda h: "")
        rows.append((key, fmt(obj) if obj else "", ", ".join(repr(float.fromhex(t)) for t in theta)
                     if theta else "", "equal" if same else "DIFFERENT"))
    missing = [k for k in B["fits"] if k not in A["fits"]]
    lines = [f"# Bit-level comparison: `{a}` ({A['commit']}) against `{b}` ({B['commit']})", "",
             f"Command: `.venv/bin/python bench/bitwise.py --compare {a} {b}`. Every stored number "
             "(objective, theta with residual parameters, beta, SEs, sigma, evaluation count, "
             "BLUPs, refit tables) compared as float.hex.", "",
             f"{len(rows) - bad} of {len(rows)} entries equal to the last bit"
             + (f"; only in `{b}`: {', '.join(missing)}" if missing else "") + ".", "",
             "| fit | objective | theta | all numbers |", "|---|---|---|---|"]
    lines += [f"| {k} | {o} | {t} | {s} |" for k, o, t, s in rows]
    (RESULTS / "bitwise.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:8]))
    for k, o, t, s in rows:
        if s != "equal":
            print("DIFFERENT:", k)
    return 1 if bad else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="name: writes results/bitwise_NAME.json")
    ap.add_argument("--large", action="store_true", help="also slope_10m and crossed_1m")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"))
    args = ap.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    import subprocess

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=HERE).stdout.strip()
    out: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        reference_fits(out)
        nlme_fits(out)
        refit_numbers(out)
        bench_problems(out, args.large)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"bitwise_{args.out}.json"
    path.write_text(json.dumps({"commit": commit, "fits": out}, indent=0) + "\n")
    print(f"wrote {path} ({len(out)} entries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
