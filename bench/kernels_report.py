"""Run the kernel micro-benchmarks and write their table to bench/results/kernels.md.

    .venv/bin/python bench/kernels_report.py            # runs pytest-benchmark, then the table
    .venv/bin/python bench/kernels_report.py --json bench/out/kernels.json   # table only

The benchmarks themselves are in bench/test_bench_kernels.py (pytest-benchmark).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None, help="existing pytest-benchmark JSON (skip the run)")
    args = ap.parse_args()
    C.ensure_dirs()
    header = C.machine_header({"numba threads": C.numba_info()["numba_threads"]})
    if args.json is None:
        path = C.OUT / "kernels.json"
        cmd = [sys.executable, "-m", "pytest", str(C.BENCH / "test_bench_kernels.py"),
               "--benchmark-only", "-p", "no:cacheprovider", "-o", "addopts=", "-q",
               f"--benchmark-json={path}"]
        rc = subprocess.run(cmd, cwd=C.ROOT).returncode
        if rc != 0:
            return rc
    else:
        path = Path(args.json)
    data = json.loads(path.read_text())
    rows = []
    for b in sorted(data["benchmarks"], key=lambda b: b["name"]):
        s = b["stats"]
        rows.append({"benchmark": b["name"], "min_ms": 1e3 * s["min"],
                     "median_ms": 1e3 * s["median"], "iqr_ms": 1e3 * s["iqr"],
                     "rounds": s["rounds"],
                     "info": ", ".join(f"{k}={v}" for k, v in b.get("extra_info", {}).items())})
    md = ["# Kernel micro-benchmarks (bench/test_bench_kernels.py)", "",
          "`.venv/bin/python -m pytest bench/test_bench_kernels.py --benchmark-only "
          "-p no:cacheprovider -o addopts=\"\"`", "",
          *header,
          f"- uptime at end: `{C.uptime_line()}`", "",
          C.markdown_table(rows, ["benchmark", "min_ms", "median_ms", "iqr_ms", "rounds", "info"],
                           {"min_ms": "{:.3f}", "median_ms": "{:.3f}", "iqr_ms": "{:.3f}",
                            "rounds": "{:d}"}), ""]
    (C.OUT / "kernels.md").write_text("\n".join(md), encoding="utf-8")
    C.publish("kernels.md")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
