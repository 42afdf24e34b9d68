"""One evaluation of the objective does not touch the N rows.

Same groups (5000 doctors; for the crossed model also 10 crossed hospitals), two data sizes
(N = 1e5 and 1e6 rows: 4 or 40 patients per doctor on average, 5 visits each), the model built
once per size, then ``m.objective(theta)`` timed at a fixed theta.  After the one-pass
cross-products, an evaluation works on arrays whose size depends on the levels (and, for crossed
factors, on the number of distinct level pairs, at most min(N, L1*L2)), never on N, so
time(1e6) / time(1e5) should be close to 1 (the acceptance bound is < 1.5).

    .venv/bin/python bench/eval_scaling.py            # variants default, active, 1thread
    .venv/bin/python bench/eval_scaling.py --variants default --repeats 50

Each environment variant runs in its own subprocess (the OpenMP wait policy is read once, when
Numba's threading layer starts): ``default`` (the environment as is; ``import bigmixed`` sets
OMP_WAIT_POLICY=PASSIVE unless it is already set), ``active`` (OMP_WAIT_POLICY=ACTIVE: spinning
OpenMP workers, bigmixed's behaviour before that default) and ``1thread`` (NUMBA_NUM_THREADS=1);
``passive`` sets OMP_WAIT_POLICY=PASSIVE explicitly.  On a loaded 2-core machine the spinning
workers of the ``active`` policy starve the main thread: evaluations then often cost a whole
scheduler time slice (~20 ms), which the median or the 90% quantile column shows.  Within a variant, calls for N = 1e5 and N = 1e6 are interleaved
in rounds, so that a change of the machine's load hits both sizes alike; the table reports the
median (and the 10% / 90% quantiles) of the per-call wall times.

Writes bench/out/eval_scaling.{md,csv} and copies both into bench/results/.
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

N_DOCTORS = 5000
N_VISITS = 5
N_HOSPITALS = 10
# target rows -> patients per doctor (mean, min, max); rows = doctors * mean * visits
SIZES = {
    100_000: (4, 1, 8),
    1_000_000: (40, 20, 60),
}
FIXED = "mobility ~ age + sex + time"
MODELS = [
    # name, formula, solver
    ("slope blockdiag", FIXED + " + (time | doctor)", "blockdiag"),
    ("slope cholmod", FIXED + " + (time | doctor)", "cholmod"),
    ("crossed cholmod", FIXED + " + (time | doctor) + (1 | hospital)", "cholmod"),
]
VARIANTS = {
    "default": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "active": {"OMP_WAIT_POLICY": "ACTIVE"},
    "1thread": {"NUMBA_NUM_THREADS": "1"},
}


def fixed_theta(structure):
    """Diagonal elements 0.6, off-diagonal 0.1 (lme4 order)."""
    import numpy as np

    return np.where(structure.lower_bounds == 0, 0.6, 0.1)


def worker(args) -> None:
    import numpy as np

    import bigmixed as bm
    from bigmixed.data_gen import generate_hdp

    # JIT warm-up on a tiny problem (loads the cached kernels of both solvers).
    g = generate_hdp(50, seed=3, n_visits=3, slope_sd=0.3, n_hospitals=4)
    for _, f, s in MODELS:
        bm.lmm(f, g.data, solver=s).fit()

    data = {}
    for n, (mp, lo, hi) in SIZES.items():
        gen = generate_hdp(N_DOCTORS, seed=args.seed, mean_patients=mp, min_patients=lo,
                           max_patients=hi, n_visits=N_VISITS, slope_sd=0.3, slope_corr=0.4,
                           time_effect=0.1, n_hospitals=N_HOSPITALS)
        data[n] = gen.data
        assert len(gen.data) == n, (len(gen.data), n)

    rows = []
    for name, formula, solver in MODELS:
        if args.models and name not in args.models:
            continue
        built = {}
        for n, df in data.items():
            t0 = time.perf_counter()
            m = bm.lmm(formula, df, solver=solver)
            build = time.perf_counter() - t0
            theta = fixed_theta(m.structure)
            value = m.objective(theta)  # warm-up call
            built[n] = (m, theta, build, value)
        times = {n: [] for n in built}
        per_round = max(1, args.repeats // args.rounds)
        for _ in range(args.rounds):
            for n, (m, theta, _, _) in built.items():
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    m.objective(theta)
                    times[n].append(time.perf_counter() - t0)
        for n, (m, theta, build, value) in built.items():
            t = np.asarray(times[n]) * 1e3
            cp = m.crossprods
            n_pairs = sum(len(p.row_levels) for p in cp.pairs)
            rows.append({
                "variant": args.variant,
                "model": name,
                "solver": solver,
                "N": m.n_obs,
                "levels": "+".join(str(f.n_levels) for f in m.structure.factors),
                "level_pairs": n_pairs,
                "build_s": build,
                "crossprod_s": m.timings["crossprod"],
                "calls": len(t),
                "median_ms": float(np.median(t)),
                "p10_ms": float(np.quantile(t, 0.1)),
                "p90_ms": float(np.quantile(t, 0.9)),
                "min_ms": float(np.min(t)),
                "objective": value,
                "theta": " ".join(f"{x:g}" for x in theta),
            })
        del built
    info = C.numba_info()
    print("JSON " + json.dumps({"rows": rows, "numba": info, "load_end": C.loadavg()}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="default,active,1thread",
                    help=f"comma list of environment variants among {sorted(VARIANTS)}")
    ap.add_argument("--repeats", type=int, default=100, help="timed calls per model and size")
    ap.add_argument("--rounds", type=int, default=10, help="interleaved rounds (1e5, 1e6, 1e5, ...)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--models", default=None, help="comma list of model names (default all)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant", default="default", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.models:
        args.models = [s.strip() for s in args.models.split(",")]
    if args.worker:
        worker(args)
        return 0

    C.ensure_dirs()
    header = C.machine_header({
        "doctors": N_DOCTORS, "visits per patient": N_VISITS, "crossed hospitals": N_HOSPITALS,
        "timed calls per model and size": f"{args.repeats} ({args.rounds} interleaved rounds)",
    })
    all_rows, notes = [], []
    for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
        env = dict(os.environ)
        env.update(VARIANTS[variant])
        cmd = [sys.executable, __file__, "--worker", "--variant", variant, "--repeats",
               str(args.repeats), "--rounds", str(args.rounds), "--seed", str(args.seed)]
        if args.models:
            cmd += ["--models", ",".join(args.models)]
        load0 = C.loadavg()
        print(f"[eval_scaling] variant {variant} {VARIANTS[variant]} (load {load0})", file=sys.stderr)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=C.ROOT)
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, file=sys.stderr)
            raise SystemExit(f"worker for variant {variant} failed ({proc.returncode})")
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("JSON ")][-1]
        res = json.loads(line[5:])
        all_rows.extend(res["rows"])
        nb = res["numba"]
        notes.append(f"- variant `{variant}` (env {VARIANTS[variant] or 'as is'}): numba {nb['numba']}, "
                     f"{nb['numba_threads']} threads, layer {nb['threading_layer']}, "
                     f"OMP_WAIT_POLICY={nb['OMP_WAIT_POLICY']}; load average {load0} at start, "
                     f"{res['load_end']} at end")

    # ratio rows: time(1e6) / time(1e5) per variant and model
    big, small = max(SIZES), min(SIZES)
    ratios = []
    for variant in dict.fromkeys(r["variant"] for r in all_rows):
        for name, _, solver in MODELS:
            sel = {r["N"]: r for r in all_rows if r["variant"] == variant and r["model"] == name}
            if big in sel and small in sel:
                ratio = sel[big]["median_ms"] / sel[small]["median_ms"]
                ratios.append({
                    "variant": variant, "model": name,
                    f"median_ms N={small:.0e}": sel[small]["median_ms"],
                    f"median_ms N={big:.0e}": sel[big]["median_ms"],
                    "ratio 1e6/1e5": ratio,
                    "pairs ratio": (sel[big]["level_pairs"] / sel[small]["level_pairs"]
                                    if sel[small]["level_pairs"] else None),
                    "< 1.5": "yes" if ratio < 1.5 else "NO",
                })
                for r in sel.values():
                    r["ratio_1e6_1e5"] = ratio

    cols = ["variant", "model", "N", "levels", "level_pairs", "build_s", "crossprod_s", "calls",
            "median_ms", "p10_ms", "p90_ms", "min_ms", "objective"]
    fmts = {"build_s": "{:.3f}", "crossprod_s": "{:.3f}", "median_ms": "{:.3f}",
            "p10_ms": "{:.3f}", "p90_ms": "{:.3f}", "min_ms": "{:.3f}", "objective": "{:.4f}",
            "N": "{:,d}", "level_pairs": "{:,d}"}
    rcols = list(ratios[0].keys()) if ratios else []
    rfmts = {k: "{:.3f}" for k in rcols if k.startswith("median")}
    rfmts.update({"ratio 1e6/1e5": "{:.2f}", "pairs ratio": "{:.2f}"})
    md = ["# Objective evaluation time vs rows (bench/eval_scaling.py)", "",
          "One call of `m.objective(theta)` at a fixed theta (diagonal 0.6, off-diagonal 0.1), "
          "model built once, one warm-up call. "
          "`mobility ~ age + sex + time + (time | doctor)` and, crossed, "
          "`... + (time | doctor) + (1 | hospital)`.", "",
          *header, *notes, f"- uptime at end: `{C.uptime_line()}`", "",
          "## Ratio time(N=1e6) / time(N=1e5) (median per call)", "",
          C.markdown_table(ratios, rcols, rfmts), "",
          "## Per size", "",
          C.markdown_table(all_rows, cols, fmts), "",
          "`build_s`: `bm.lmm(...)` (design + one pass of cross-products + symbolic analysis), which "
          "does scale with N; `level_pairs`: distinct (doctor, hospital) pairs stored for the crossed "
          "model (the off-diagonal blocks of Z'Z), at most min(N, L1*L2).", ""]
    text = "\n".join(md)
    (C.OUT / "eval_scaling.md").write_text(text, encoding="utf-8")
    C.write_csv(C.OUT / "eval_scaling.csv", all_rows, cols + ["ratio_1e6_1e5", "p10_ms", "theta",
                                                               "solver"])
    C.publish("eval_scaling.md", "eval_scaling.csv")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
