"""Start-up cost end to end, in fresh processes: `bigmixed --version`, a tiny fit from the
command line (hdp size, cached Numba kernels), the same fit with `Rscript` + lme4, and the floor
of the stack (importing pandas and Numba; that plus one cached kernel call).

    .venv/bin/python bench/startup_bench.py [--repeat 5]

Writes bench/results/startup.md. The wall time of each run is measured around the process.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import ensure_dirs, loadavg, machine_header, markdown_table  # noqa: E402

FORMULA = "mobility ~ age + married + sex + wbc + rbc + (1 | doctor)"
FLOOR_KERNEL = ("import numpy as np, pandas\n"
                "from bigmixed.kernels.columns import count_nonfinite\n"
                "count_nonfinite(np.zeros(3))\n"
                "import os; os._exit(0)\n")


def wall(cmd) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    ensure_dirs()
    data = HERE / "data" / "startup_hdp.csv"
    if not data.exists():
        from bigmixed.data_gen import generate_hdp

        generate_hdp(n_doctors=407, seed=1).data.to_csv(data, index=False)
    exe = Path(sys.executable).with_name("bigmixed")
    out = HERE / "out" / "startup_fit.json"
    r_script = HERE / "data" / "startup_lmer.R"
    r_script.write_text(f'suppressMessages(library(lme4)); d <- read.csv("{data}"); '
                        f'd$doctor <- factor(d$doctor); fit <- lmer({FORMULA}, d); '
                        'cat(REMLcrit(fit), "\\n")\n')
    wall([str(exe), "fit", "--data", str(data), "--formula", FORMULA, "--out", str(out), "-q"])  # caches
    cases = {
        "bigmixed --version": [str(exe), "--version"],
        "bigmixed fit (8,525 rows, 407 doctors)": [str(exe), "fit", "--data", str(data), "--formula",
                                                   FORMULA, "--out", str(out), "-q"],
        "Rscript: library(lme4); lmer(...) (same data)": ["Rscript", str(r_script)],
        # the floor of the stack: the libraries a fit needs, and the first call of one cached
        # Numba kernel (Numba then loads its lowering registries); both leave by os._exit as
        # the CLI does (no module teardown)
        "floor: python -c 'import pandas, numba'": [sys.executable, "-c",
                                                    "import os, pandas, numba; os._exit(0)"],
        "floor + one cached kernel call": [sys.executable, "-c", FLOOR_KERNEL],
    }
    rows = []
    for label, cmd in cases.items():
        times = [wall(cmd) for _ in range(args.repeat)]
        rows.append({"command": label, "median_s": statistics.median(times), "min_s": min(times),
                     "max_s": max(times), "runs": len(times), "load": loadavg()})
        print(rows[-1])
    text = ("# Start-up cost (`.venv/bin/python bench/startup_bench.py`)\n\n"
            + "\n".join(machine_header()) + "\n\n"
            + markdown_table(rows, ["command", "median_s", "min_s", "max_s", "runs", "load"]) + "\n")
    (HERE / "results" / "startup.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
