"""A fit on an idle machine against the same fit while other processes keep the cores busy.

    .venv/bin/python bench/loaded.py [--problem slope_10m] [--repeat 3] [--hogs 0,1,2]

One fresh process per load level: read the problem's Parquet file (bench/run_bench.py's data),
``bm.warmup(glmm=False)``, start `hogs` busy-looping processes (pure Python, one core each),
then time ``bm.lmm(formula, df).fit()`` `--repeat` times. Writes bench/results/loaded.md with
the median and the range, the ratio to the idle median, and the load average during the fits.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _common as C  # noqa: E402
from run_bench import prepare_data  # noqa: E402

CHILD = r'''
import json, os, subprocess, sys, time, warnings
import pandas as pd
sys.path.insert(0, sys.argv[3])
from problems import PROBLEMS
import bigmixed as bm
df = pd.read_parquet(sys.argv[1])
formula = PROBLEMS[sys.argv[2]].formula
bm.warmup(glmm=False)
hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(int(sys.argv[5]))]
try:
    time.sleep(1.0)
    walls, loads = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(int(sys.argv[4])):
            t = time.perf_counter(); fit = bm.lmm(formula, df).fit(); walls.append(time.perf_counter() - t)
            loads.append(os.getloadavg()[0])
finally:
    for h in hogs:
        h.kill()
print(json.dumps({"walls": walls, "loads": loads, "objective": fit.objective}))
'''


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problem", default="slope_10m")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--hogs", default="0,1,2")
    args = ap.parse_args()
    C.ensure_dirs()
    header = C.machine_header()
    pq, _, n_rows = prepare_data(args.problem, False, False)
    rows, idle = [], None
    for hogs in [int(h) for h in args.hogs.split(",")]:
        out = subprocess.run([sys.executable, "-c", CHILD, str(pq), args.problem, str(HERE),
                              str(args.repeat), str(hogs)], check=True, capture_output=True,
                             text=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        med = statistics.median(res["walls"])
        idle = med if hogs == 0 else idle
        rows.append({"problem": args.problem, "N": n_rows, "busy_processes": hogs,
                     "median_s": med, "min_s": min(res["walls"]), "max_s": max(res["walls"]),
                     "vs_idle": med / idle if idle else float("nan"),
                     "load_during": ", ".join(f"{v:.1f}" for v in res["loads"]),
                     "objective": res["objective"]})
        print(rows[-1], flush=True)
    cols = ["problem", "N", "busy_processes", "median_s", "min_s", "max_s", "vs_idle",
            "load_during", "objective"]
    fmts = {"N": "{:,d}", "median_s": "{:.2f}", "min_s": "{:.2f}", "max_s": "{:.2f}",
            "vs_idle": "{:.2f}x", "objective": "{:.6f}"}
    text = ["# A fit on an idle and on a loaded machine (`bench/loaded.py`)", "", *header, "",
            C.markdown_table(rows, cols, fmts), "",
            "`busy_processes`: pure-Python busy loops running during the fits (one core each; "
            "the machine has 2); `vs_idle`: the median over the idle median; `load_during`: "
            "the 1-minute load average after each fit. The objective is the same at every load.",
            ""]
    (HERE / "results" / "loaded.md").write_text("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
