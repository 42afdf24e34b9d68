"""How long nlme takes on the AR(1) problem of the issue, and how much memory.

    nice -n 19 .venv/bin/python bench/nlme_scaling.py                      # 1k, 10k, 100k patients
    nice -n 19 .venv/bin/python bench/nlme_scaling.py --sizes 1000,10000   # small sizes only
    nohup nice -n 19 .venv/bin/python bench/nlme_scaling.py --sizes 100000 \\
        > bench/out/nlme_scaling_100k.log 2>&1 &                            # the 1M-row fit, in the background

The problem: ``generate_longitudinal(n_patients, 10, residual="ar1", phi=0.6,
seed=0)`` (random intercept SD 1, slope SD 0.3, correlation -0.3, sigma 1, no
missed visits), i.e. n_patients x 10 rows, fitted by REML with nlme's defaults::

    lme(y ~ time * treat, random = ~ 1 + time | patient,
        correlation = corAR1(form = ~ visit | patient))

Each size runs in its own ``Rscript`` process under ``/usr/bin/time`` (wall time,
peak RSS) with a timeout (default 40 min; the process group is killed and the
size recorded as "timeout").  R errors (e.g. memory) are recorded as they come.
Data go to ``bench/data/nlme_ar1_<n>.csv`` (git-ignored), per-size results to
``bench/out/nlme_scaling/<n>.json``; ``bench/results/nlme_ar1.md`` is rewritten
after every size from all per-size results present (so a later run of one size
adds its row to the earlier ones).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from bigmixed.data_gen import generate_longitudinal  # noqa: E402

OUTDIR = C.OUT / "nlme_scaling"
RESULT_MD = C.RESULTS / "nlme_ar1.md"
N_VISITS = 10
GEN = dict(n_visits=N_VISITS, residual="ar1", phi=0.6, seed=0)
FORMULA = ("lme(y ~ time * treat, random = ~ 1 + time | patient, "
           "correlation = corAR1(form = ~ visit | patient))")

R_CODE = r"""
args <- commandArgs(trailingOnly = TRUE)
csv <- args[[1]]; out <- args[[2]]
suppressPackageStartupMessages({ library(nlme); library(jsonlite) })
res <- list(status = "error", nlme_version = as.character(packageVersion("nlme")),
            R_version = R.version.string)
save <- function() writeLines(toJSON(res, auto_unbox = TRUE, digits = NA, null = "null",
                                     na = "null", pretty = TRUE), out)
t0 <- proc.time()[["elapsed"]]
d <- if (requireNamespace("data.table", quietly = TRUE)) {
    as.data.frame(data.table::fread(csv, showProgress = FALSE))
} else read.csv(csv)
d$patient <- factor(d$patient)
res$read_s <- proc.time()[["elapsed"]] - t0
res$rows <- nrow(d)
res$patients <- nlevels(d$patient)
save()
invisible(gc(reset = TRUE))
t1 <- proc.time()[["elapsed"]]
fit <- tryCatch(
    withCallingHandlers(
        lme(y ~ time * treat, data = d, random = ~ 1 + time | patient,
            correlation = corAR1(form = ~ visit | patient), method = "REML"),
        warning = function(w) {
            res$warnings <<- c(res$warnings, conditionMessage(w))
            invokeRestart("muffleWarning")
        }),
    error = function(e) e)
res$fit_s <- proc.time()[["elapsed"]] - t1
g <- gc()
res$R_gc_max_used_mb <- sum(g[, ncol(g)])   # "max used" (Mb) of Ncells and Vcells
if (inherits(fit, "error")) {
    res$error <- conditionMessage(fit)
    save()
    quit(status = 0)
}
re <- as.matrix(fit$modelStruct$reStruct[[1]]) * fit$sigma^2
res$status <- "ok"
res$logLik <- as.numeric(logLik(fit))
res$sigma <- fit$sigma
res$phi <- unname(coef(fit$modelStruct$corStruct, unconstrained = FALSE))[1]
res$corStruct_class <- class(fit$modelStruct$corStruct)[1]
res$sd_intercept <- sqrt(re[1, 1])
res$sd_time <- sqrt(re[2, 2])
res$corr <- re[1, 2] / sqrt(re[1, 1] * re[2, 2])
res$beta <- as.list(fixef(fit))
res$apVar <- if (is.character(fit$apVar)) fit$apVar else "ok"
save()
"""


def prepare(n: int) -> Path:
    C.DATA.mkdir(parents=True, exist_ok=True)
    path = C.DATA / f"nlme_ar1_{n}.csv"
    if not path.exists():
        t0 = time.perf_counter()
        g = generate_longitudinal(n, **GEN)
        tmp = path.with_suffix(".csv.tmp")
        g.data.to_csv(tmp, index=False, lineterminator="\n", float_format="%.17g")
        tmp.replace(path)
        print(f"[nlme] wrote {path.name} ({len(g.data)} rows) in {time.perf_counter() - t0:.1f}s",
              file=sys.stderr)
    return path


def parse_time(timef: Path) -> dict:
    """Peak RSS, CPU time and exit status from a ``/usr/bin/time -v`` report."""
    out: dict = {}
    if not timef.exists():
        return out
    cpu = 0.0
    for line in timef.read_text().splitlines():
        key, _, val = line.strip().rpartition(":")
        if "Maximum resident set size" in key:
            out["peak_rss_mb"] = int(val) / 1024
        elif key in ("User time (seconds)", "System time (seconds)"):
            cpu += float(val)
            out["cpu_s"] = cpu
        elif key == "Exit status":
            out["exit_status"] = val.strip()
        elif "Command terminated by signal" in line:
            out["signal"] = line.strip()
    return out


def run_size(n: int, timeout: float, rscript: str, nice: int) -> dict:
    OUTDIR.mkdir(parents=True, exist_ok=True)
    csv = prepare(n)
    rfile = OUTDIR / "fit.R"
    rfile.write_text(R_CODE)
    out_json = OUTDIR / f"{n}.json"
    timef = OUTDIR / f"{n}.time"
    for f in (out_json, timef):
        if f.exists():
            f.unlink()
    cmd = [rscript, "--vanilla", str(rfile), str(csv), str(out_json)]
    if nice:
        cmd = ["nice", "-n", str(nice)] + cmd
    cmd = ["/usr/bin/time", "-v", "-o", str(timef)] + cmd
    load0 = C.loadavg()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the session started here: time + Rscript
        stdout, stderr = proc.communicate()
        timed_out = True
    wall = time.perf_counter() - t0
    res: dict = {}
    if out_json.exists():
        try:
            res = json.loads(out_json.read_text())
        except json.JSONDecodeError as exc:
            res = {"status": "error", "error": f"bad JSON: {exc}"}
    if timed_out:
        res["status"] = "timeout"
        res["error"] = f"killed after {timeout:.0f} s"
    elif res.get("status") != "ok" and not res.get("error"):
        res["status"] = "error"
        res["error"] = ((stderr or "") + (stdout or "")).strip()[-600:] or \
            f"Rscript exit status {proc.returncode}"
    res.update(patients=n, rows=res.get("rows", n * N_VISITS), wall_s=wall,
               started=started, load_start=load0, load_end=C.loadavg(),
               returncode=proc.returncode)
    res.update(parse_time(timef))
    out_json.write_text(json.dumps(res, indent=1) + "\n")
    return res


def write_md() -> None:
    rows = []
    for f in sorted(OUTDIR.glob("*.json"), key=lambda p: int(p.stem)):
        r = json.loads(f.read_text())
        r["fit"] = r.get("status")
        if r.get("status") != "ok":
            r["fit"] = f"{r.get('status')}: {str(r.get('error', ''))[:160]}".replace("\n", " ")
        r["wall_min"] = r.get("wall_s", float("nan")) / 60
        r["fit_min"] = (r["fit_s"] / 60) if r.get("fit_s") is not None else None
        r["peak_rss_gb"] = r.get("peak_rss_mb", float("nan")) / 1024
        r["cpu_min"] = r["cpu_s"] / 60 if r.get("cpu_s") is not None else None
        b = r.get("beta") or {}
        r["beta_time_treat"] = b.get("time:treat")
        rows.append(r)
    cols = ["patients", "rows", "fit", "wall_min", "fit_min", "cpu_min", "peak_rss_gb", "logLik",
            "phi", "sd_intercept", "sd_time", "corr", "sigma", "beta_time_treat", "apVar",
            "started", "load_start", "load_end"]
    versions = next(((r.get("R_version"), r.get("nlme_version")) for r in rows
                     if r.get("nlme_version")), (None, None))
    lines = ["# nlme on the AR(1) longitudinal problem", ""]
    lines += C.machine_header({"R": versions[0], "nlme": versions[1]})
    lines += [
        "",
        f"Model (REML, nlme defaults): `{FORMULA}`.",
        f"Data: `generate_longitudinal(n_patients, {N_VISITS}, residual=\"ar1\", phi=0.6, "
        "seed=0)`: random intercept SD 1, slope SD 0.3, correlation -0.3, sigma 1, "
        "phi 0.6, no missed visits.",
        "Each size is one `Rscript` process run with `nice -n 19` under `/usr/bin/time -v`: "
        "wall = the whole process (reading the CSV with data.table::fread included), "
        "fit = `lme()` alone, cpu = user + system time of the process, "
        "peak RSS = the process's maximum resident set size. "
        "apVar = nlme's approximate covariance of the variance parameters "
        "(\"ok\" or nlme's message). "
        "Per-fit timeout as given on the command line; `timeout` = killed.",
        "The machine is shared (see the load averages) and R ran at niceness 19, so wall "
        "time includes time spent waiting for a CPU; `cpu_min` (lme is effectively "
        "single-threaded here) is closer to what an idle machine would take.",
        "",
        C.markdown_table(rows, cols, {"wall_min": "{:.2f}", "fit_min": "{:.2f}",
                                      "cpu_min": "{:.2f}",
                                      "peak_rss_gb": "{:.2f}", "logLik": "{:.3f}",
                                      "phi": "{:.4f}", "sd_intercept": "{:.4f}",
                                      "sd_time": "{:.4f}", "corr": "{:.4f}", "sigma": "{:.4f}",
                                      "beta_time_treat": "{:.4f}"}),
        "",
        "True values: phi 0.6, sd_intercept 1, sd_time 0.3, corr -0.3, sigma 1, "
        "time:treat -0.4.",
        "",
        "Reproduce: `nice -n 19 .venv/bin/python bench/nlme_scaling.py --sizes 1000,10000,100000 "
        "--timeout 2400`.",
        "",
    ]
    C.RESULTS.mkdir(parents=True, exist_ok=True)
    RESULT_MD.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000",
                    help="numbers of patients, comma separated (10 visits each)")
    ap.add_argument("--timeout", type=float, default=2400.0, help="per fit, seconds (40 min)")
    ap.add_argument("--rscript", default=os.environ.get("RSCRIPT", "Rscript"))
    ap.add_argument("--nice", type=int, default=19, help="niceness of the R processes")
    ap.add_argument("--md-only", action="store_true",
                    help="only rewrite the table from the per-size results present")
    args = ap.parse_args(argv)
    if args.md_only:
        for f in OUTDIR.glob("*.json"):
            r = json.loads(f.read_text())
            r.update(parse_time(f.with_suffix(".time")))
            f.write_text(json.dumps(r, indent=1) + "\n")
        write_md()
        print(f"[nlme] wrote {RESULT_MD}", file=sys.stderr)
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    for n in sizes:
        print(f"[nlme] {n} patients x {N_VISITS} visits ...", file=sys.stderr, flush=True)
        r = run_size(n, args.timeout, args.rscript, args.nice)
        print(f"[nlme] {n}: {r.get('status')} wall {r['wall_s']:.1f}s "
              f"fit {r.get('fit_s')} peak {r.get('peak_rss_mb', float('nan')):.0f} MB "
              f"{r.get('error', '')}", file=sys.stderr, flush=True)
        write_md()
    print(f"[nlme] wrote {RESULT_MD}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
