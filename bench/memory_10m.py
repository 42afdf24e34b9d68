"""Peak memory of the 10M-row fit, per stage, against the model's input columns.

    .venv/bin/python bench/memory_10m.py                       # slope_10m, both scenarios
    .venv/bin/python bench/memory_10m.py --problem slope_1m    # a quicker check
    PYTHONPATH=/path/to/other/checkout .venv/bin/python bench/memory_10m.py --label before --append

Problem: ``slope_10m`` of bench/problems.py (10,500,000 rows, 500,000 doctors,
``mobility ~ age + married + sex + wbc + rbc + time + (time | doctor)``, REML), read from the
Parquet cache bench/data/slope_10m.parquet (written by bench/run_bench.py, or here if absent).

Scenarios: ``complete`` (no missing value) and ``missing`` (``wbc`` set to NaN on every 100th
row, so that 1% of the rows are dropped and the kept rows must be gathered).

Each measurement runs in a fresh process: the data frame is loaded (and, for ``missing``, its
NaNs set) and Numba's kernels are warmed (``bm.warmup()`` and a tiny fit of the same formula)
*before* the baseline is taken, so that the data frame itself is never counted. The baseline is
VmRSS after ``gc.collect()`` and ``malloc_trim(0)``. Then

- ``stages`` process: the peak-RSS counter is reset (``echo 5 > /proc/self/clear_refs``) before
  each stage, and the stage's peak growth is VmHWM - baseline (what the earlier stages keep, e.g.
  the design's X and Z during the cross-products, counts in the later stages' peaks):
  ``design`` = ``build_design(fixed_in_place=True)`` as bm.lmm calls it (formula -> y, X, Z,
  codes; X as the data's own columns when they are plain and no row is dropped), ``setup`` =
  ``LinearMixedModel.from_design`` (structure, cross-products, solver set-up), ``fit`` =
  ``.fit()`` (optimizer, results);
- ``one call`` process: ``bm.lmm(formula, df).fit()`` timed and measured as a whole.

Input columns: ``df[model columns].memory_usage(deep=True, index=False).sum()`` (the response,
covariates and grouping factor as stored in the data frame, categories included). The ratio is
peak growth / input columns. MiB = 2**20 bytes throughout.

Writes bench/out/memory.{md,csv} and copies them into bench/results/.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

MIB = 2**20
SCENARIOS = ("complete", "missing")


# ----------------------------------------------------------------------------------------------
# worker (one fresh process)


def _status_mib(key: str) -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return float(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
        fh.write("5")


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # pragma: no cover - not glibc
        pass


def _load(problem: str, scenario: str):
    import numpy as np
    import pandas as pd

    from problems import PROBLEMS
    from run_bench import prepare_data

    p = PROBLEMS[problem]
    pq, _, _ = prepare_data(problem, need_csv=False, rebuild=False)
    df = pd.read_parquet(pq)
    if scenario == "missing":
        w = df["wbc"].to_numpy(dtype=np.float64, copy=True)
        w[::100] = np.nan
        df["wbc"] = w
    return p, df


def worker(problem: str, scenario: str, mode: str) -> dict:
    import bigmixed as bm
    from bigmixed.spec.design import build_design
    from bigmixed.fitting.model import LinearMixedModel
    from problems import make_data

    p, df = _load(problem, scenario)
    used = [c for c in p.columns if c in df.columns]
    input_mib = float(df[used].memory_usage(deep=True, index=False).sum()) / MIB
    bm.warmup()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bm.lmm(p.formula, make_data(problem, tiny=True)).fit()
    _trim()
    base = _status_mib("VmRSS")
    out = {"problem": problem, "scenario": scenario, "rows": len(df), "input_mib": input_mib,
           "baseline_rss_mib": base, "bigmixed": os.path.dirname(bm.__file__)}
    stages = []

    def stage(name, fn):
        _reset_peak()
        t0 = time.perf_counter()
        result = fn()
        wall = time.perf_counter() - t0
        stages.append({"stage": name, "wall_s": wall,
                       "peak_growth_mib": _status_mib("VmHWM") - base,
                       "after_mib": _status_mib("VmRSS") - base,
                       "load": os.getloadavg()[0]})
        return result

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if mode == "stages":
            design = stage("design", lambda: build_design(p.formula, df, fixed_in_place=True))
            model = stage("setup", lambda: LinearMixedModel.from_design(design))
            fit = stage("fit", model.fit)
        else:
            fit = stage("one call", lambda: bm.lmm(p.formula, df).fit())
            out["timings"] = {k: float(v) for k, v in fit.timings.items()}
    out["stages"] = stages
    out["n_obs"] = int(fit.nobs)
    out["objective"] = float(fit.objective)
    out["n_evals"] = int(fit.optimizer.n_evaluations)
    return out


# ----------------------------------------------------------------------------------------------
# driver

COLS = ["label", "scenario", "stage", "wall_s", "peak_growth_mib", "ratio", "after_mib",
        "input_mib", "n_obs", "objective", "load"]
FMTS = {"wall_s": "{:.2f}", "peak_growth_mib": "{:,.0f}", "ratio": "{:.2f}x",
        "after_mib": "{:,.0f}", "input_mib": "{:,.0f}", "n_obs": "{:,d}",
        "objective": "{:.8f}", "load": "{:.1f}"}


def _run(problem: str, scenario: str, mode: str, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--worker", problem, scenario, mode]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=C.ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("JSON ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker {problem}/{scenario}/{mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][5:])


def _rows(res: dict, label: str) -> list:
    rows = []
    for s in res["stages"]:
        rows.append({"label": label, "scenario": res["scenario"], "stage": s["stage"],
                     "wall_s": s["wall_s"], "peak_growth_mib": s["peak_growth_mib"],
                     "ratio": s["peak_growth_mib"] / res["input_mib"], "after_mib": s["after_mib"],
                     "input_mib": res["input_mib"], "n_obs": res["n_obs"],
                     "objective": res["objective"], "load": s["load"]})
    return rows


def _read_csv(path: Path) -> list:
    import csv

    if not path.exists():
        return []
    out = []
    with open(path, newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            for k in ("wall_s", "peak_growth_mib", "ratio", "after_mib", "input_mib",
                      "objective", "load"):
                r[k] = float(r[k]) if r.get(k) not in (None, "") else None
            r["n_obs"] = int(r["n_obs"]) if r.get("n_obs") else None
            out.append(r)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", default="slope_10m")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--label", default="current", help="row label (e.g. before / after)")
    ap.add_argument("--append", action="store_true",
                    help="keep the rows of other labels already in bench/out/memory.csv")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--worker", nargs=3, metavar=("PROBLEM", "SCENARIO", "MODE"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("JSON " + json.dumps(worker(*args.worker)))
        return 0

    C.ensure_dirs()
    header = C.machine_header({"problem": args.problem})
    rows = [r for r in _read_csv(C.OUT / "memory.csv") if r["label"] != args.label] \
        if args.append else []
    for scenario in [s.strip() for s in args.scenarios.split(",") if s.strip()]:
        for mode in ("stages", "one call"):
            print(f"[memory] {args.problem} {scenario} {mode} (load {C.loadavg()})",
                  file=sys.stderr, flush=True)
            res = _run(args.problem, scenario, "stages" if mode == "stages" else "call",
                       args.timeout)
            new = _rows(res, args.label)
            rows += new
            for r in new:
                print(f"[memory]   {r['stage']}: peak growth {r['peak_growth_mib']:,.0f} MiB "
                      f"({r['ratio']:.2f}x of {r['input_mib']:,.0f} MiB), {r['wall_s']:.2f} s",
                      file=sys.stderr, flush=True)
            if mode != "stages":
                t = res.get("timings", {})
                print("[memory]   timings: " + ", ".join(f"{k} {v:.2f}" for k, v in t.items()),
                      file=sys.stderr, flush=True)
    from problems import PROBLEMS

    _write(rows, header, args.problem, PROBLEMS[args.problem].formula)
    print((C.OUT / "memory.md").read_text())
    return 0


def _write(rows: list, header: list, problem: str, formula: str) -> None:
    peak = {}
    for r in rows:
        key = (r["label"], r["scenario"])
        if r["stage"] != "one call":
            peak[key] = max(peak.get(key, 0.0), r["ratio"])
    md = ["# Peak memory of a fit against its input columns (bench/memory_10m.py)", "",
          *header, f"- uptime at end: `{C.uptime_line()}`", "",
          f"`{problem}`: `{formula}`, REML. `complete`: no missing value; `missing`: `wbc` is NaN "
          "on every 100th row (1% of the rows dropped).", "",
          "Each block of rows is one fresh process; the data frame is loaded and the JIT warmed "
          "before the baseline RSS, so the data frame is not counted. `peak_growth_mib`: peak RSS "
          "during the stage minus the baseline (what earlier stages keep counts); `ratio`: "
          "`peak_growth_mib` / `input_mib`, the model's columns as stored in the data frame "
          "(`memory_usage(deep=True)`); `after_mib`: RSS growth at the end of the stage. "
          "`design` = `build_design(fixed_in_place=True)` (as `bm.lmm` calls it), `setup` = "
          "`LinearMixedModel.from_design` (structure, "
          "cross-products, solver), `fit` = `.fit()`; `one call` = `bm.lmm(formula, df).fit()` "
          "in another process. `wall_s` is noisy on this shared 2-core machine (`load` = "
          "1-minute load average after the stage). MiB = 2^20 bytes.", "",
          C.markdown_table(rows, COLS, FMTS), "",
          "Largest ratio over the stages: " + "; ".join(
              f"{lab} / {sc}: {v:.2f}x" for (lab, sc), v in peak.items()), ""]
    (C.OUT / "memory.md").write_text("\n".join(md), encoding="utf-8")
    C.write_csv(C.OUT / "memory.csv", rows, COLS)
    C.publish("memory.md", "memory.csv")


if __name__ == "__main__":
    raise SystemExit(main())
