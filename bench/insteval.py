"""lme4's real InstEval data (73,421 ratings; 2,972 students x 1,128 lecturers x 14 departments):
bigmixed against lme4 on the crossed models of the InstEval literature, REML and ML.

    .venv/bin/python bench/insteval.py            # writes bench/results/insteval.md

R exports the data (lme4::InstEval, with studage and lectage turned into unordered factors so
that both sides use treatment contrasts and the REML criteria are comparable) to bench/data/,
then fits each model with lme4's default control, once with the system's BLAS and once with the
reference BLAS preloaded (run_bench.REF_BLAS_PRELOAD). bigmixed fits each model in a fresh
process after warming the JIT on a tiny model (design building included, data in memory).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from run_bench import REF_BLAS_PRELOAD  # noqa: E402

MODELS = [
    "y ~ service + lectage + studage + (1 | s) + (1 | d) + (1 | dept)",
    "y ~ service + (1 | s) + (1 | d) + (1 | dept:service)",
    "y ~ service * dept + (1 | s) + (1 | d)",
]
CSV = C.DATA / "insteval.csv"

R_SCRIPT = r"""
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
d <- InstEval
d$studage <- factor(d$studage, ordered = FALSE)
d$lectage <- factor(d$lectage, ordered = FALSE)
if (!file.exists(args[1])) write.csv(d, args[1], row.names = FALSE)
models <- fromJSON(args[2])
out <- list()
for (f in models) for (reml in c(TRUE, FALSE)) {
    t <- system.time(m <- lmer(as.formula(f), d, REML = reml))[["elapsed"]]
    out[[length(out) + 1]] <- list(formula = f, reml = reml, wall_s = t,
        objective = if (reml) REMLcrit(m) else deviance(m), theta = unname(getME(m, "theta")),
        n_evals = m@optinfo$feval, blas = sessionInfo()$BLAS)
}
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE), args[3])
"""

PY_WORKER = r"""
import json, sys, time, warnings
import numpy as np, pandas as pd
import bigmixed as bm
df = pd.read_csv(sys.argv[1])
for c in ["s", "d", "dept", "studage", "lectage", "service"]:
    df[c] = df[c].astype(str).astype("category")
formula, reml = sys.argv[2], sys.argv[3] == "1"
bm.warmup()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    tiny = df[df["d"].isin(df["d"].cat.categories[:60])].copy()
    bm.lmm(formula, tiny, reml=reml).fit()
    t = time.perf_counter()
    fit = bm.lmm(formula, df, reml=reml).fit()
    wall = time.perf_counter() - t
o = fit.optimizer
print(json.dumps(dict(wall_s=wall, objective=float(fit.objective), theta=[float(x) for x in fit.theta],
                      optimizer=o.method, n_evals=int(o.n_evaluations), n_gradients=int(o.n_gradients),
                      n_approx_evals=int(o.n_approx_evaluations))))
"""


def run_r(preload: bool) -> list[dict]:
    script = C.OUT / "insteval.R"
    script.write_text(R_SCRIPT, encoding="utf-8")
    out = C.OUT / f"insteval_lme4{'_refblas' if preload else ''}.json"
    cmd = ["Rscript", "--vanilla", str(script), str(CSV), json.dumps(MODELS), str(out)]
    if preload:
        cmd = ["env", "LD_PRELOAD=" + " ".join(REF_BLAS_PRELOAD)] + cmd
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text(encoding="utf-8"))


def run_bigmixed(formula: str, reml: bool) -> dict:
    res = subprocess.run([sys.executable, "-c", PY_WORKER, str(CSV), formula, "1" if reml else "0"],
                         check=True, capture_output=True, text=True, cwd=C.ROOT)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    C.ensure_dirs()
    start = C.uptime_line()
    lme4 = run_r(preload=False)  # also writes the CSV
    lme4_ref = run_r(preload=True)
    rows = []
    for ref, refb in zip(lme4, lme4_ref):
        bmx = run_bigmixed(ref["formula"], ref["reml"])
        theta_ref = ref["theta"] if isinstance(ref["theta"], list) else [ref["theta"]]
        rel = max(abs(a - b) / max(abs(b), 1e-3) for a, b in zip(bmx["theta"], theta_ref))
        rows.append({
            "model": ref["formula"], "criterion": "REML" if ref["reml"] else "ML",
            "lme4_s": ref["wall_s"], "lme4_refblas_s": refb["wall_s"], "bigmixed_s": bmx["wall_s"],
            "vs_lme4": ref["wall_s"] / bmx["wall_s"], "vs_lme4_refblas": refb["wall_s"] / bmx["wall_s"],
            "lme4_evals": ref["n_evals"], "optimizer": bmx["optimizer"], "evals": bmx["n_evals"],
            "gradients": bmx["n_gradients"], "approx_evals": bmx["n_approx_evals"],
            "d_objective": bmx["objective"] - ref["objective"], "theta_maxreldiff": rel,
        })
        print(rows[-1], flush=True)
    cols = list(rows[0])
    fmts = {"lme4_s": "{:.2f}", "lme4_refblas_s": "{:.2f}", "bigmixed_s": "{:.3f}",
            "vs_lme4": "{:.1f}x", "vs_lme4_refblas": "{:.1f}x", "lme4_evals": "{:d}",
            "evals": "{:d}", "gradients": "{:d}", "approx_evals": "{:d}",
            "d_objective": "{:.2e}", "theta_maxreldiff": "{:.1e}"}
    md = [
        "# lme4's InstEval: bigmixed vs lme4 (bench/insteval.py)", "",
        f"- date: {time.strftime('%Y-%m-%dT%H:%M:%S')}", f"- bigmixed git: {C.git_rev()}",
        f"- uptime at start: `{start}`", f"- uptime at end: `{C.uptime_line()}`",
        f"- lme4 BLAS: {lme4[0]['blas']}; lme4_refblas BLAS: {lme4_ref[0]['blas']}", "",
        "studage and lectage as unordered factors (treatment contrasts on both sides). "
        "`d_objective`: bigmixed's REML criterion or deviance minus lme4's (negative: lower). "
        "`theta_maxreldiff`: max |theta - theta_lme4| / max(|theta_lme4|, 1e-3).", "",
        C.markdown_table(rows, cols, fmts), "",
    ]
    text = "\n".join(md)
    (C.RESULTS / "insteval.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
