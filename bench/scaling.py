"""bigmixed fit time against rows and against groups.

    .venv/bin/python bench/scaling.py                    # both sweeps, both models
    .venv/bin/python bench/scaling.py --sweep rows --max-rows 3e6 --models intercept

- rows sweep: 50,000 doctors, N = 1e5, 3e5, 1e6, 3e6, 1e7 rows (2 visits per patient, N / 1e5
  patients per doctor on average).
- groups sweep: N = 1e6 rows, 1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 5e5 doctors.

Models: ``intercept`` = ``mobility ~ age + sex + wbc + time + (1 | doctor)`` and ``slope`` =
``... + (time | doctor)`` (correlated), REML, solver "auto" (block-diagonal for one factor).
Every point runs in its own process (so memory is returned between points): the data are
generated (not timed), Numba's JIT is warmed on a tiny fit, then ``bm.lmm(formula, df).fit()`` is
timed; the peak RSS during the fit is VmHWM after resetting it just before the fit.

Writes bench/out/scaling.{md,csv} and copies them into bench/results/.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

FIXED = "mobility ~ age + sex + wbc + time"
MODELS = {"intercept": FIXED + " + (1 | doctor)", "slope": FIXED + " + (time | doctor)"}
ROWS = [100_000, 300_000, 1_000_000, 3_000_000, 10_000_000]
ROWS_GROUPS = 50_000
GROUPS = [1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 500_000]
GROUPS_ROWS = 1_000_000
VISITS = 2


def gen_kwargs(n_rows: int, n_groups: int) -> dict:
    mean = n_rows / (n_groups * VISITS)
    if mean < 1:
        raise ValueError(f"{n_rows} rows cannot fill {n_groups} groups with {VISITS} visits")
    return dict(n_doctors=n_groups, seed=7, n_patients=int(round(n_rows / VISITS)),
                mean_patients=mean, min_patients=1, max_patients=max(1, int(2 * mean - 1) + 1),
                n_visits=VISITS, slope_sd=0.3, slope_corr=0.3, time_effect=0.05)


def worker(model: str, n_rows: int, n_groups: int, solver: str) -> dict:
    import warnings

    import numba

    import bigmixed as bm
    from bigmixed.data_gen import generate_hdp

    formula = MODELS[model]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bm.lmm(formula, generate_hdp(**gen_kwargs(2000, 100)).data, solver=solver).fit()
    t0 = time.perf_counter()
    df = generate_hdp(**gen_kwargs(n_rows, n_groups)).data
    df = df[["mobility", "age", "sex", "wbc", "time", "doctor"]]
    gen_s = time.perf_counter() - t0
    rss0 = _kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        fit = bm.lmm(formula, df, solver=solver).fit()
        wall = time.perf_counter() - t0
    peak = _kb("VmHWM")
    t = fit.timings
    return {
        "model": model, "N": int(fit.nobs), "groups": int(fit.n_groups["doctor"]),
        "rows_per_group": fit.nobs / fit.n_groups["doctor"], "solver": fit.solver,
        "wall_s": wall, "design_s": t["design"], "crossprod_s": t["crossprod"],
        "optimize_s": t["optimize"], "finalize_s": t["finalize"],
        "n_evals": int(fit.optimizer.n_evaluations),
        "ms_per_eval": 1e3 * t["optimize"] / max(1, fit.optimizer.n_evaluations),
        "data_mb": rss0 / 1024, "fit_peak_mb": peak / 1024,
        "objective": float(fit.objective), "converged": bool(fit.converged),
        "warnings": "; ".join(sorted({w.category.__name__ for w in caught})),
        "gen_s": gen_s, "threads": numba.get_num_threads(),
        "load": os.getloadavg()[0],
    }


def _kb(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return float(line.split()[1])
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", default="rows,groups", help="rows, groups or both (comma list)")
    ap.add_argument("--models", default="intercept,slope")
    ap.add_argument("--max-rows", type=float, default=1e7, help="skip rows-sweep points above")
    ap.add_argument("--solver", default="auto")
    ap.add_argument("--timeout", type=float, default=1200)
    ap.add_argument("--worker", nargs=3, metavar=("MODEL", "ROWS", "GROUPS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        m, n, g = args.worker
        print("JSON " + json.dumps(worker(m, int(n), int(g), args.solver)))
        return 0

    C.ensure_dirs()
    models = [s.strip() for s in args.models.split(",") if s.strip()]
    sweeps = [s.strip() for s in args.sweep.split(",") if s.strip()]
    points = []
    if "rows" in sweeps:
        points += [("rows", m, n, ROWS_GROUPS) for m in models for n in ROWS if n <= args.max_rows]
    if "groups" in sweeps:
        points += [("groups", m, GROUPS_ROWS, g) for m in models for g in GROUPS]
    header = C.machine_header({"solver": args.solver, "visits per patient": VISITS})
    rows = []
    for sweep, model, n, g in points:
        cmd = [sys.executable, __file__, "--solver", args.solver, "--worker", model, str(n), str(g)]
        print(f"[scaling] {sweep}: {model} N={n:,} groups={g:,} (load {C.loadavg()})",
              file=sys.stderr, flush=True)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                                  cwd=C.ROOT)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("JSON ")]
            if proc.returncode == 0 and lines:
                r = json.loads(lines[-1][5:])
                r["status"] = "ok"
            else:
                last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                status = "unidentifiable" if "IdentifiabilityError" in last else "error"
                r = {"model": model, "N": n, "groups": g, "status": status, "error": last}
        except subprocess.TimeoutExpired:
            r = {"model": model, "N": n, "groups": g, "status": "timeout"}
        r["sweep"] = sweep
        rows.append(r)
        if r["status"] == "ok":
            print(f"[scaling]   {r['wall_s']:.2f}s, {r['n_evals']} evals, "
                  f"{r['ms_per_eval']:.2f} ms/eval, peak {r['fit_peak_mb']:.0f} MB",
                  file=sys.stderr, flush=True)
        _write(rows, header)
    print((C.OUT / "scaling.md").read_text())
    return 0


COLS = ["sweep", "model", "N", "groups", "rows_per_group", "status", "wall_s", "design_s",
        "crossprod_s", "optimize_s", "finalize_s", "n_evals", "ms_per_eval", "data_mb",
        "fit_peak_mb", "load"]
FMTS = {"N": "{:,d}", "groups": "{:,d}", "rows_per_group": "{:.0f}", "wall_s": "{:.2f}",
        "design_s": "{:.2f}", "crossprod_s": "{:.3f}", "optimize_s": "{:.2f}",
        "finalize_s": "{:.3f}", "n_evals": "{:d}", "ms_per_eval": "{:.2f}", "data_mb": "{:,.0f}",
        "fit_peak_mb": "{:,.0f}", "load": "{:.1f}"}


def _write(rows, header):
    md = ["# bigmixed fit time against rows and groups (bench/scaling.py)", "",
          *header, f"- uptime at end: `{C.uptime_line()}`", "",
          "`intercept`: `mobility ~ age + sex + wbc + time + (1 | doctor)`; `slope`: "
          "`... + (time | doctor)`; REML. `wall_s` = `bm.lmm(formula, df).fit()` (data in memory, "
          "JIT warm): `design_s` (formula -> arrays), `crossprod_s` (one pass over the rows), "
          "`optimize_s` (BOBYQA, `n_evals` evaluations), `finalize_s` (estimates at the optimum). "
          "`data_mb`: RSS before the fit (data frame in memory); `fit_peak_mb`: peak RSS during the "
          "fit. `load`: 1-minute load average at the end of the fit (2 cores).", ""]
    for sweep, title in (("rows", f"## Against rows ({ROWS_GROUPS:,} doctors)"),
                         ("groups", f"## Against groups ({GROUPS_ROWS:,} rows)")):
        sel = [r for r in rows if r.get("sweep") == sweep]
        if sel:
            md += [title, "", C.markdown_table(sel, COLS, FMTS), ""]
    errors = [f"- {r['sweep']} / {r['model']} N={r['N']:,} groups={r['groups']:,}: {r['status']}: "
              f"{r['error']}" for r in rows if r.get("error")]
    if errors:
        md += ["## Not fitted", "", *errors, "",
               "(A correlated intercept + slope needs more than 2 rows per group: with N <= the "
               "number of random effects bigmixed, like lme4, refuses the model.)", ""]
    (C.OUT / "scaling.md").write_text("\n".join(md), encoding="utf-8")
    C.write_csv(C.OUT / "scaling.csv", rows, COLS + ["objective", "converged", "warnings", "error",
                                                     "solver", "gen_s", "threads"])
    C.publish("scaling.md", "scaling.csv")


if __name__ == "__main__":
    raise SystemExit(main())
