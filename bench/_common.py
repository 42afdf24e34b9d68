"""Shared helpers of the bench/ scripts: machine info, tables, output paths.

Not a test module and not part of bigmixed: imported by bench/*.py with bench/ on sys.path.
"""
from __future__ import annotations

import csv
import datetime as _dt
import os
import platform
import shutil
import subprocess
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"          # git-ignored scratch outputs
RESULTS = BENCH / "results"  # committed copies of the final tables
DATA = BENCH / "data"        # git-ignored data files shared with R


def ensure_dirs() -> None:
    for d in (OUT, RESULTS, DATA):
        d.mkdir(parents=True, exist_ok=True)


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, as `uptime` prints them."""
    try:
        a, b, c = os.getloadavg()
        return f"{a:.2f}, {b:.2f}, {c:.2f}"
    except OSError:
        return "n/a"


def uptime_line() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception:  # noqa: BLE001
        return f"load average: {loadavg()}"


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "bigmixed", "kernels"],
                               cwd=ROOT, capture_output=True, text=True, timeout=5).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except Exception:  # noqa: BLE001
        return "unknown"


def numba_info() -> dict:
    """Numba threads and threading layer (the layer is known only after a parallel kernel ran)."""
    import numba

    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "not yet initialised"
    return {
        "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(),
        "threading_layer": layer,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "NUMBA_NUM_THREADS": os.environ.get("NUMBA_NUM_THREADS", "(unset)"),
    }


def machine_header(extra: dict | None = None) -> list[str]:
    """Markdown bullet lines describing when and where a table was made."""
    lines = [
        f"- date: {_dt.datetime.now().isoformat(timespec='seconds')}",
        f"- host: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        f"- bigmixed git: {git_rev()}",
        f"- uptime at start: `{uptime_line()}`",
    ]
    for k, v in (extra or {}).items():
        lines.append(f"- {k}: {v}")
    return lines


def fmt(v, digits: int = 3) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if v != v:  # NaN
            return ""
        if v == 0:
            return "0"
        a = abs(v)
        if a >= 1e5 or a < 1e-3:
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}g}" if a < 1 else f"{v:,.{max(digits - len(str(int(a))), 0)}f}"
    return str(v)


def markdown_table(rows: list[dict], columns: list[str], formats: dict | None = None) -> str:
    formats = formats or {}
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            f = formats.get(c)
            if f is not None and isinstance(v, (int, float)) and not (isinstance(v, float) and v != v):
                cells.append(f.format(v))
            else:
                cells.append(fmt(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> None:
    if columns is None:
        columns = []
        for r in rows:
            for k in r:
                if k not in columns:
                    columns.append(k)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)


def publish(*names: str) -> list[Path]:
    """Copy bench/out/<name> into bench/results/ (the committed copy)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    done = []
    for n in names:
        src = OUT / n
        if src.exists():
            shutil.copy2(src, RESULTS / n)
            done.append(RESULTS / n)
    return done
