"""GLMM benchmark: bigmixed against glmer (lme4) and gpboost, in one run, one process per fit.

    .venv/bin/python bench/glmm_bench.py                       # default problems
    .venv/bin/python bench/glmm_bench.py --problems bin_1m --peers gpboost
    .venv/bin/python bench/glmm_bench.py --list
    .venv/bin/python bench/glmm_bench.py --exact --glmer-timeout 300   # + pirls="exact"

Problems (hdp-style data from bigmixed.data_gen with binary/count outcomes, random intercept per
doctor unless crossed): bin_8k (8.5k rows, 407 doctors), bin_105k, pois_105k (offset
log(exposure)), crossed_105k (5k doctors x 100 hospitals), bin_1m (1.05M rows, 50k doctors);
not by default: bin_1m_shuffled (bin_1m's rows in random order).

- bigmixed: a fresh process reads the Parquet file, runs bm.warmup() and a tiny fit, then times
  ``bm.glmm(formula, df, family=...).fit()`` (design included).
- glmer: Rscript times ``glmer(formula, data, family)`` (default control) after reading the CSV.
- gpboost: ``GPModel(group_data=..., likelihood=...)`` fitted on X (with an intercept column;
  gpboost estimates by Laplace ML too) timed around ``fit``.
Reported: wall time, -2 log-likelihood (as each engine reports it), the speed-ups
(peer / bigmixed), the machine's load, and bigmixed's peak memory during the fit beyond what
the process held before it (ru_maxrss), as a multiple of the input columns' bytes (a lower
bound when the fit's peak stays under the earlier peak of reading the data). Results in bench/results/glmm.md (and .csv).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import ensure_dirs, loadavg, machine_header, markdown_table, write_csv  # noqa: E402

DATA = HERE / "data"
RESULTS = HERE / "results"
FIXED = "age + married + sex + wbc + rbc"
PROBLEMS = {
    "bin_8k": dict(gen=dict(n_doctors=407, seed=1), family="binomial",
                   formula=f"remission ~ {FIXED} + (1 | doctor)"),
    "bin_105k": dict(gen=dict(n_doctors=5000, seed=2), family="binomial",
                     formula=f"remission ~ {FIXED} + (1 | doctor)"),
    "pois_105k": dict(gen=dict(n_doctors=5000, seed=3), family="poisson",
                      formula=f"n_events ~ {FIXED} + offset(log(exposure)) + (1 | doctor)"),
    "crossed_105k": dict(gen=dict(n_doctors=5000, seed=4, n_hospitals=100), family="binomial",
                         formula=f"remission ~ {FIXED} + (1 | doctor) + (1 | hospital)"),
    "bin_1m": dict(gen=dict(n_doctors=50000, seed=5), family="binomial",
                   formula=f"remission ~ {FIXED} + (1 | doctor)"),
    # bin_1m's rows in random order (generate_hdp writes them doctor by doctor; registries
    # need not): the level kernels' reads of X are then through a sorted copy
    "bin_1m_shuffled": dict(gen=dict(n_doctors=50000, seed=5), family="binomial", shuffle=True,
                            formula=f"remission ~ {FIXED} + (1 | doctor)"),
}
DEFAULT = ["bin_8k", "bin_105k", "pois_105k", "crossed_105k", "bin_1m"]


def data_files(name: str):
    ensure_dirs()
    pq, csv = DATA / f"glmm_{name}.parquet", DATA / f"glmm_{name}.csv"
    if not pq.exists():
        from bigmixed.data_gen import generate_hdp

        df = generate_hdp(**PROBLEMS[name]["gen"], binary=True, counts=True).data
        if PROBLEMS[name].get("shuffle"):
            df = df.sample(frac=1.0, random_state=0).reset_index(drop=True)
        df.to_parquet(pq)
        df.to_csv(csv, index=False)
    return pq, csv


BIGMIXED = r'''
import json, sys, time, warnings
import pandas as pd, bigmixed as bm
spec = json.loads(sys.argv[1])
df = pd.read_parquet(spec["parquet"])
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    pirls = spec.get("pirls", "auto")
    bm.warmup()  # (as a pipeline would: the parallel kernels of large fits too)
    bm.glmm(spec["formula"], df.head(3000), family=spec["family"], pirls=pirls).fit()   # warm-up
    import gc, resource
    gc.collect()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t = time.perf_counter()
    fit = bm.glmm(spec["formula"], df, family=spec["family"], pirls=pirls).fit()
    el = time.perf_counter() - t
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
used = [c for c in df.columns if c in spec["formula"]]
input_bytes = int(df[used].memory_usage(index=False, deep=True).sum())
print(json.dumps({"seconds": el, "m2ll": fit.objective,
                  "peak_extra_over_input": (rss1 - rss0) / input_bytes,
                  "stages": [[s.stage, s.n_evaluations, s.seconds] for s in fit.optimizer.stages]}))
'''

GPBOOST = r'''
import json, sys, time
import numpy as np, pandas as pd, gpboost as gpb
spec = json.loads(sys.argv[1])
df = pd.read_parquet(spec["parquet"])
y_name = spec["formula"].split("~")[0].strip()
cols = ["age", "married", "sex", "wbc", "rbc"]
X = np.column_stack([np.ones(len(df))] + [df[c].to_numpy(float) for c in cols])
groups = df[["doctor", "hospital"]] if "hospital" in spec["formula"] else df[["doctor"]]
lik = "bernoulli_logit" if spec["family"] == "binomial" else "poisson"
kw = {}
t = time.perf_counter()
gp = gpb.GPModel(group_data=groups.astype(str).to_numpy(), likelihood=lik)
if "offset" in spec["formula"]:
    kw["offset"] = np.log(df["exposure"].to_numpy(float))
gp.fit(y=df[y_name].to_numpy(float), X=X, **kw)
el = time.perf_counter() - t
print(json.dumps({"seconds": el, "m2ll": 2.0 * float(gp.get_current_neg_log_likelihood())}))
'''

GLMER = r'''
suppressMessages({library(lme4); library(data.table); library(jsonlite)})
args <- commandArgs(TRUE); spec <- fromJSON(args[1])
d <- as.data.frame(fread(spec$csv))
for (g in c("doctor", "hospital")) if (g %in% names(d)) d[[g]] <- factor(d[[g]])
fam <- if (spec$family == "binomial") binomial else poisson
t <- system.time(fit <- glmer(as.formula(spec$formula), data = d, family = fam))[["elapsed"]]
msg <- fit@optinfo$conv$lme4$messages
cat(toJSON(list(seconds = t, m2ll = -2 * as.numeric(logLik(fit)),
                warnings = if (is.null(msg)) list() else msg), auto_unbox = TRUE, digits = NA))
'''


def run(cmd, timeout):
    t = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "seconds": float(timeout)}
    if r.returncode != 0:
        return {"status": f"error: {(r.stderr or r.stdout).strip().splitlines()[-1][:200]}"}
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out.update(status="ok", wall=time.perf_counter() - t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", default=",".join(DEFAULT))
    ap.add_argument("--peers", default="glmer,gpboost")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--out", default="glmm")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--exact", action="store_true",
                    help="also time bigmixed with pirls='exact' (the exact Laplace criterion)")
    ap.add_argument("--glmer-timeout", type=float, default=None,
                    help="timeout for glmer only (default: --timeout)")
    args = ap.parse_args()
    if args.list:
        for k, v in PROBLEMS.items():
            print(k, v)
        return 0
    peers = [p for p in args.peers.split(",") if p and p != "none"]
    rows = []
    for name in args.problems.split(","):
        spec = dict(PROBLEMS[name])
        pq, csv = data_files(name)
        spec.update(parquet=str(pq), csv=str(csv))
        js = json.dumps({k: spec[k] for k in ("formula", "family", "parquet", "csv")})
        res = {"bigmixed": run([sys.executable, "-c", BIGMIXED, js], args.timeout)}
        if args.exact:  # the exact Laplace criterion (pirls="exact": the analytic gradient)
            jx = json.dumps(dict(json.loads(js), pirls="exact"))
            res["bigmixed_exact"] = run([sys.executable, "-c", BIGMIXED, jx], args.timeout)
        if "gpboost" in peers:
            res["gpboost"] = run([sys.executable, "-c", GPBOOST, js], args.timeout)
        if "glmer" in peers:
            script = DATA / "glmer_bench.R"
            script.write_text(GLMER)
            res["glmer"] = run(["Rscript", str(script), js], args.glmer_timeout or args.timeout)
        b = res["bigmixed"].get("seconds")
        row = {"problem": name, "load": loadavg()}
        for eng, r in res.items():
            row[f"{eng}_s"] = r.get("seconds") if r["status"] in ("ok", "timeout") else None
            row[f"{eng}_status"] = r["status"]
            row[f"{eng}_m2ll"] = r.get("m2ll")
            if not eng.startswith("bigmixed") and b and r.get("seconds"):
                row[f"vs_{eng}"] = r["seconds"] / b
        row["peak_extra_x_input"] = res["bigmixed"].get("peak_extra_over_input")
        row["bigmixed_stages"] = "; ".join(f"{s[0]}: {s[1]} ev, {s[2]:.2f}s"
                                           for s in res["bigmixed"].get("stages", []))
        rows.append(row)
        print(json.dumps(row))
    for row in rows:  # the exact criterion's speed-ups
        bx = row.get("bigmixed_exact_s")
        for eng in ("glmer", "gpboost"):
            if bx and row.get(f"{eng}_s"):
                row[f"exact_vs_{eng}"] = row[f"{eng}_s"] / bx
    cols = ["problem", "bigmixed_s", "bigmixed_exact_s", "glmer_s", "gpboost_s", "vs_glmer",
            "vs_gpboost", "exact_vs_glmer", "exact_vs_gpboost", "bigmixed_m2ll",
            "bigmixed_exact_m2ll", "glmer_m2ll", "gpboost_m2ll", "glmer_status", "load",
            "peak_extra_x_input", "bigmixed_stages"]
    cols = [c for c in cols if any(c in r for r in rows)]
    RESULTS.mkdir(exist_ok=True)
    m2ll = {c: "{:.12g}" for c in cols if c.endswith("_m2ll")}  # (differences of ~1e-6 matter)
    text = "\n".join(machine_header()) + "\n\n" + markdown_table(rows, cols, m2ll) + "\n"
    (RESULTS / f"{args.out}.md").write_text(
        f"# GLMM benchmark (`.venv/bin/python bench/glmm_bench.py`)\n\n{text}")
    write_csv(RESULTS / f"{args.out}.csv", rows, cols)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
