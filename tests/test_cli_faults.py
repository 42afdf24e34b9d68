"""Faults of the command line: SIGINT / SIGTERM / SIGHUP / SIGKILL at random moments of real
`python -m bigmixed fit` runs. Never a partial file at the final path, no temporary file left
except by SIGKILL, and those are removed by the next run into the folder; exit codes as
documented."""
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from bigmixed.data_gen import generate_hdp

from bigmixed import cli

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")

FORMULA = "mobility ~ age + sex + (1 | doctor)"
RHS = "~ age + sex + (1 | doctor)"
TEMP = re.compile(r"^\..*\.bigmixed-(\d+)-[A-Za-z0-9_]+\.tmp$")
# a process killed by a signal before bigmixed installs its handlers (Python still importing)
# has returncode -signum; a shell reports it as 128 + signum, the code bigmixed exits with
EXPECTED = {signal.SIGINT: {130, -signal.SIGINT}, signal.SIGTERM: {143, -signal.SIGTERM},
            signal.SIGHUP: {129, -signal.SIGHUP}, signal.SIGKILL: {-signal.SIGKILL}}
MAX_RUNS = 12
MAX_SECONDS = 20.0  # for the random runs (after two calibration runs; a last clean run follows)


N_MARKERS = 120


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults")
    df = generate_hdp(n_doctors=200, seed=2).data.copy()
    rng = np.random.default_rng(0)
    codes = df["doctor"].cat.codes.to_numpy()
    markers = {f"marker_{k:03d}": 0.5 * rng.normal(size=200)[codes] + rng.normal(size=len(df))
               for k in range(N_MARKERS)}  # several responses: ~1 s of fits streamed into the output
    df = pd.concat([df, pd.DataFrame(markers, index=df.index)], axis=1)
    path = d / "data.parquet"
    df.to_parquet(path)
    return path


def command(data, out, kind):
    base = [sys.executable, "-m", "bigmixed", "fit", "--data", str(data), "--out", str(out)]
    if kind == "many":
        return base + ["--formula", RHS, "--responses-glob", "marker_*", "--jobs", "2"]
    return base + ["--formula", FORMULA]


def temps(d):
    return sorted(p for p in os.listdir(d) if TEMP.match(p))


def valid(path) -> bool:
    """A complete document of its format (fit.json, fits.ndjson, fit.csv, fit.parquet)."""
    name = os.path.basename(path)
    try:
        if name.endswith(".json"):
            doc = json.loads(open(path).read())
            return doc["format"] == "bigmixed.fit" and len(doc["fixed_effects"]) == 3
        if name.endswith(".ndjson"):
            lines = [json.loads(x) for x in open(path).read().splitlines()]
            return [x["response"] for x in lines] == [f"marker_{k:03d}" for k in range(N_MARKERS)] and all(
                x["format"] == "bigmixed.fit.ndjson" and x["status"] == "ok" for x in lines)
        if name.endswith(".csv"):
            rows = list(csv.DictReader(open(path)))
            return len(rows) == 5 and list(rows[0]) == cli.CSV_COLUMNS
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            return pq.read_table(path).num_rows == 5
    except Exception:  # noqa: BLE001 - anything unreadable is not valid
        return False
    return False


OUTPUTS = [("fit.json", "one"), ("fits.ndjson", "many"), ("fit.csv", "one"), ("fit.parquet", "one")]


def run_to_end(data, out, kind):
    """A run left alone: (seconds to the end, seconds from the first log line -- the output
    open, the data read -- to the last one, "wrote ...")."""
    t0 = time.monotonic()
    p = subprocess.Popen(command(data, out, kind), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    stamps = [(time.monotonic(), line) for line in p.stderr]
    p.wait(timeout=120)
    assert p.returncode == 0, "".join(x for _, x in stamps)
    assert valid(out)
    read = next(t for t, x in stamps if x.startswith("bigmixed: read"))
    wrote = next(t for t, x in stamps if x.startswith("bigmixed: wrote"))
    return time.monotonic() - t0, wrote - read


def test_random_signals_never_leave_partial_outputs(data, tmp_path):
    rng = np.random.default_rng(20240617)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "unrelated.tmp").write_text("not ours")  # never touched
    # calibration: how long a run takes here (Python's imports, read, fit, write)
    duration, work = {}, {}
    for name, kind in (("fit.json", "one"), ("fits.ndjson", "many")):
        duration[kind], work[kind] = run_to_end(data, out_dir / name, kind)
    signals = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL]
    seen = []
    left_by_kill: set = set()
    start = time.monotonic()
    for run in range(MAX_RUNS):
        if time.monotonic() - start > MAX_SECONDS:
            break
        name, kind = OUTPUTS[run % len(OUTPUTS)]
        out = out_dir / name
        before = out.read_bytes() if out.exists() else None
        sig = signals[run % len(signals)] if run < 2 * len(signals) else signals[rng.integers(len(signals))]
        p = subprocess.Popen(command(data, out, kind), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
        t0 = time.monotonic()
        if run % 2 == 0:
            # at a random moment of the run (often while Python still imports: no handler yet)
            when = "any"
            delay = float(rng.uniform(0.05, 1.2 * duration[kind]))
        else:
            # at a random moment once bigmixed has opened its output and read the data (the
            # first log line): building the design, fitting, streaming results, renaming, or
            # finished (the calibrated time from the first log line to the last, + 30%)
            when = "after start"
            line = "removed"
            while line.startswith("bigmixed: removed") or line == "removed":  # stale files cleaned
                line = p.stderr.readline()
            assert "bigmixed: read" in line, line
            ready = time.monotonic() - t0
            delay = ready + float(rng.uniform(0.0, 1.3 * work[kind]))
        time.sleep(max(0.0, t0 + delay - time.monotonic()))
        p.send_signal(sig)
        _, err = p.communicate(timeout=120)
        rc = p.returncode
        seen.append((signal.Signals(sig).name, when, round(delay, 2), rc))
        assert rc in EXPECTED[sig] | {0}, (sig, rc, err)
        # the final path: the previous content or a complete document, never a partial one
        if out.exists():
            now = out.read_bytes()
            assert now == before or valid(out), (name, seen)
            if rc > 0:  # bigmixed's handler ran before the run finished: nothing written
                assert now == before, ("an interrupted run replaced the output", seen)
        else:
            assert before is None
        if rc == 0:
            assert valid(out)
        if rc > 0:
            assert "no output written" in err, err
        # temporary files: only SIGKILL leaves one; a run that got to its end removed the
        # killed runs' ones (it cleans the folder when it opens its output)
        mine = [t for t in temps(out_dir) if int(TEMP.match(t).group(1)) == p.pid]
        if sig == signal.SIGKILL:
            left_by_kill.update(mine)
        else:
            assert mine == [], (sig, rc, mine)
            if rc == 0:
                assert temps(out_dir) == [], "stale temporary files not cleaned"
                left_by_kill.clear()
        assert set(temps(out_dir)) <= left_by_kill
    print(f"\nfault runs (a run takes {duration['one']:.2f} s, {work['one']:.2f} s after its first "
          f"log line / {duration['many']:.2f} s, {work['many']:.2f} s with {N_MARKERS} responses): "
          "(signal, moment, delay s, exit code)")
    for s in seen:
        print("   ", s)
    assert len(seen) >= 4
    assert any(rc > 0 for *_, rc in seen), "no signal reached bigmixed's handlers"
    # the next run into the folder cleans whatever SIGKILL left, and succeeds
    run_to_end(data, out_dir / "fit.json", "one")
    assert temps(out_dir) == []
    assert (out_dir / "unrelated.tmp").read_text() == "not ours"
    for name, _ in OUTPUTS:
        assert not (out_dir / name).exists() or valid(out_dir / name), name


SLOW_FIT = """
import sys, time
import bigmixed as bm
from bigmixed import cli
real = bm.LinearMixedModel.fit
def slow(self, *a, **k):
    print("fitting", flush=True)
    time.sleep(60)
    return real(self, *a, **k)
bm.LinearMixedModel.fit = slow
sys.exit(cli.main(sys.argv[1:]))
"""


def slow_run(data, out):
    """A run whose fit sleeps (SLOW_FIT): returns the process once it is fitting, its output open."""
    p = subprocess.Popen([sys.executable, "-c", SLOW_FIT, "fit", "--data", str(data), "--formula", FORMULA,
                          "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return p


def test_signal_while_fitting_removes_the_temporary_file(data, tmp_path):
    cases = {signal.SIGTERM: 143, signal.SIGHUP: 129, signal.SIGINT: 130}
    runs = {}
    try:
        for sig in cases:  # the three runs side by side
            d = tmp_path / signal.Signals(sig).name
            d.mkdir()
            (d / "fit.json").write_text("previous")
            runs[sig] = (d, slow_run(data, d / "fit.json"))
        for sig, (d, p) in runs.items():
            assert p.stdout.readline().strip() == "fitting"
            assert len(temps(d)) == 1  # the output is open (a temporary file) while fitting
            p.send_signal(sig)
        for sig, (d, p) in runs.items():
            _, err = p.communicate(timeout=60)
            assert p.returncode == cases[sig], err
            assert "no output written" in err
            assert (d / "fit.json").read_text() == "previous"
            assert temps(d) == []
    finally:
        for _, p in runs.values():
            p.kill()


def test_sigkill_leftover_removed_by_next_run_but_not_a_live_ones(data, tmp_path):
    out = tmp_path / "fit.json"
    p = slow_run(data, out)
    try:
        assert p.stdout.readline().strip() == "fitting"
        # a live run's temporary file is never removed by another run into the folder
        other = tmp_path / "other.json"
        run_to_end(data, other, "one")
        live = temps(tmp_path)
        assert len(live) == 1 and f"-{p.pid}-" in live[0]
        p.kill()
        p.communicate(timeout=60)
    finally:
        p.kill()
    assert temps(tmp_path) == live  # SIGKILL: nothing can clean up
    run_to_end(data, other, "one")
    assert temps(tmp_path) == [] and not out.exists()


SIGNAL_IN_EXTENSION = """
import os, signal, sys
import bigmixed as bm
from bigmixed import cli
def fit_in_extension(self, *a, **k):
    # what numba's C modules do when a signal's exception reaches them during their import:
    # the pending exception is replaced by the module's own ImportError
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # the handler raises at the next bytecode
        for _ in range(10**7):
            pass
    except BaseException:
        raise ImportError("numba._devicearray failed to import")
bm.LinearMixedModel.fit = fit_in_extension
sys.exit(cli.main(sys.argv[1:]))
"""


def test_signal_turned_into_an_extensions_error_still_exits_as_the_signal(data, tmp_path):
    out = tmp_path / "fit.json"
    out.write_text("previous")
    p = subprocess.run([sys.executable, "-c", SIGNAL_IN_EXTENSION, "fit", "--data", str(data),
                        "--formula", FORMULA, "--out", str(out)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 143, p.stderr
    assert "received SIGTERM; no output written" in p.stderr
    assert "Traceback" not in p.stderr
    assert out.read_text() == "previous"
    assert temps(tmp_path) == []
