"""The first fit in a fresh process after ``bm.warmup()`` against the warm fits that follow it.

    .venv/bin/python bench/first_fit.py [--problems slope_1m,crossed_1m,slope_10m] [--repeat 3]

For each problem, one fresh process (bench/run_bench.py's data files): read the Parquet file,
``bm.warmup(glmm=False)``, then time ``bm.lmm(formula, df).fit()`` `--repeat` times. The first
of them is the "first fit"; the median of the others the "warm fit". Also one pass over the
columns the model uses (a sum of each, the best of 3) against the last fit's design step. Writes
bench/results/first_fit.md with the load when each process started.
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
import json, sys, time, warnings
import pandas as pd
sys.path.insert(0, sys.argv[3])
from problems import PROBLEMS
import bigmixed as bm
df = pd.read_parquet(sys.argv[1])
formula = PROBLEMS[sys.argv[2]].formula
t = time.perf_counter(); bm.warmup(glmm=False); warm = time.perf_counter() - t
walls, parts = [], []
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for _ in range(int(sys.argv[4])):
        t = time.perf_counter(); fit = bm.lmm(formula, df).fit(); walls.append(time.perf_counter() - t)
        parts.append({k: round(v, 4) for k, v in fit.timings.items()})
# one pass over the columns the model uses (the design step's floor): a sum of each
used = [c for c in df.columns if c in formula]
passes = []
for _ in range(3):
    t = time.perf_counter()
    for c in used:
        s = df[c]
        (s.cat.codes if hasattr(s, "cat") else s).to_numpy().sum()
    passes.append(time.perf_counter() - t)
print(json.dumps({"warmup_s": warm, "walls": walls, "timings": parts, "one_pass_s": min(passes),
                  "objective": fit.objective, "n_evals": fit.optimizer.n_evaluations}))
'''


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", default="slope_1m,crossed_1m,slope_10m")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    C.ensure_dirs()
    header = C.machine_header()
    rows = []
    for name in [p.strip() for p in args.problems.split(",") if p.strip()]:
        pq, _, n_rows = prepare_data(name, False, False)
        load = C.loadavg()
        out = subprocess.run([sys.executable, "-c", CHILD, str(pq), name, str(HERE),
                              str(args.repeat)], check=True, capture_output=True, text=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        first, warm = res["walls"][0], statistics.median(res["walls"][1:])
        rows.append({"problem": name, "N": n_rows, "warmup_s": res["warmup_s"], "first_s": first,
                     "warm_s": warm, "first_over_warm": first / warm,
                     "first_parts": res["timings"][0], "warm_parts": res["timings"][-1],
                     "one_pass_s": res["one_pass_s"],
                     "design_over_pass": res["timings"][-1]["design"] / res["one_pass_s"],
                     "n_evals": res["n_evals"], "load": load})
        print(rows[-1], flush=True)
    cols = ["problem", "N", "warmup_s", "first_s", "warm_s", "first_over_warm", "one_pass_s",
            "design_over_pass", "n_evals", "load"]
    fmts = {"N": "{:,d}", "warmup_s": "{:.2f}", "first_s": "{:.2f}", "warm_s": "{:.2f}",
            "first_over_warm": "{:.2f}x", "one_pass_s": "{:.3f}", "design_over_pass": "{:.1f}x"}
    text = ["# First fit in a fresh process after `bm.warmup()` (`bench/first_fit.py`)", "",
            *header, "", C.markdown_table(rows, cols, fmts), "",
            "`one_pass_s`: a sum of each column the formula uses (the floor of the design step); "
            "`design_over_pass`: the last warm fit's design step over it.", "",
            "Per-step timings (s) of the first and of the last warm fit:", ""]
    for r in rows:
        text.append(f"- {r['problem']}: first {r['first_parts']}; warm {r['warm_parts']}")
    (HERE / "results" / "first_fit.md").write_text("\n".join(text) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
