"""Fit a partitioned Parquet dataset through Dask (bigmixed.distributed) on a LocalCluster.

    .venv/bin/python bench/dask_bench.py                      # 10M rows, 1M patients, 10k hospitals
    .venv/bin/python bench/dask_bench.py --rows 100_000_000   # the issue's full target
    .venv/bin/python bench/dask_bench.py --agreement          # in memory vs Dask, small models

Data: `bigmixed.data_gen.generate_hdp` (doctors nested in hospitals, patients nested in doctors,
`visits` rows per patient, a doctor random slope on time and a patient random intercept),
generated in shards of at most 5M rows (bounded memory) and written as one Parquet file per
partition under bench/data/dask_<rows>/ (git-ignored; reused when present). Patient and
hospital ids are int64 (globally unique across shards). Model:

    mobility ~ age + sex + time + (1 + time | patient) + (1 | hospital)

Measured: the wall time of `bm.lmm(formula, data=dd.read_parquet(...)).fit()` on a LocalCluster
(`--workers` processes, one thread each, `--memory` in total), split into pass 1 (levels), pass 2
(cross-products + reduction), and the optimizer; the peak RSS of every worker (sampled every
0.2 s) and of this (client) process; and, as the floor, the time of a bare read of the same
columns of the same files: ``dd.read_parquet(path, columns=...).sum().compute()``.
Writes bench/results/dask.md.

--agreement: the same data in memory and through Dask (synchronous scheduler, 2, 7 and 13
partitions) for small models of several shapes, REML and ML: prints the largest relative
difference of theta, beta, sigma, the SEs and the objective (0 expected: the cross-products are
double-double sums rounded once, the same bits whatever the partitioning). Writes nothing.
"""
from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, RESULTS, git_rev, uptime_line  # noqa: E402

FORMULA = "mobility ~ age + sex + time + (1 + time | patient) + (1 | hospital)"
COLUMNS = ["patient", "hospital", "time", "age", "sex", "wbc", "mobility"]


def make_data(path: Path, rows: int, patients: int, hospitals: int, partitions: int, seed: int) -> dict:
    """Write `partitions` Parquet files holding `rows` rows; returns a description."""
    from bigmixed.data_gen import generate_hdp

    visits = rows // patients
    if visits * patients != rows or visits < 2:
        raise SystemExit("--rows must be a multiple (>= 2x) of --patients")
    shard_rows = 5_000_000
    n_shards = max(1, math.ceil(rows / shard_rows))
    while patients % n_shards or hospitals % n_shards:
        n_shards += 1
    if partitions % n_shards:
        partitions = n_shards * math.ceil(partitions / n_shards)
    pat_s, hosp_s, files_s = patients // n_shards, hospitals // n_shards, partitions // n_shards
    doctors_s = max(hosp_s, pat_s // 20)
    path.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    k = 0
    for s in range(n_shards):
        g = generate_hdp(doctors_s, seed=seed + s, n_patients=pat_s, mean_patients=pat_s / doctors_s,
                         min_patients=1, max_patients=max(40, 2 * pat_s // doctors_s),
                         n_visits=visits, slope_sd=0.3, slope_corr=0.2, patient_sd=0.7,
                         nested_in=hosp_s, time_effect=-0.1)
        df = g.data
        out = pd.DataFrame({
            "patient": df["patient"].cat.codes.to_numpy().astype(np.int64) + s * pat_s,
            "hospital": df["hospital"].cat.codes.to_numpy().astype(np.int64) + s * hosp_s,
            "time": df["time"].to_numpy(),
            "age": df["age"].to_numpy(),
            "sex": df["sex"].to_numpy(),
            "wbc": df["wbc"].to_numpy(),
            "mobility": df["mobility"].to_numpy(),
        })
        del g, df
        for chunk in np.array_split(np.arange(len(out)), files_s):
            out.iloc[chunk[0]:chunk[-1] + 1].to_parquet(path / f"part-{k:05d}.parquet", index=False)
            k += 1
        del out
        print(f"  shard {s + 1}/{n_shards} written ({time.perf_counter() - t0:.0f} s)", flush=True)
    return dict(rows=rows, patients=patients, hospitals=hospitals, visits=visits, files=k,
                gen_s=time.perf_counter() - t0)


AGREEMENT_MODELS = [
    ("intercept", "mobility ~ age + sex + time + (1 | doctor)", "slope"),
    ("slope", "mobility ~ age + sex + time + (1 + time | doctor)", "slope"),
    ("crossed", "mobility ~ age + wbc + (1 | doctor) + (1 | hospital)", "crossed"),
    ("nested", "mobility ~ age + wbc + (1 | hospital/doctor)", "crossed"),
    ("nested_slope", "mobility ~ age + time + (1 + time | doctor) + (1 | patient)", "slope"),
    ("transforms", "mobility ~ scale(age) + poly(time, 2) + center(wbc) + (1 + time | doctor)", "slope"),
]


def agreement(partitions=(2, 7, 13)) -> None:
    """In memory vs Dask (synchronous) on the data of tests/test_distributed.py."""
    import warnings

    import dask
    import dask.dataframe as dd

    import bigmixed as bm
    from bigmixed.data_gen import generate_hdp

    data = {
        "slope": generate_hdp(150, seed=11, n_visits=4, irregular_times=True, slope_sd=0.4,
                              slope_corr=0.3, missing_share=0.03).data,
        "crossed": generate_hdp(120, seed=12, n_hospitals=15, missing_share=0.02).data,
    }

    def rel(a, b):
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        scale = float(np.max(np.abs(b)))
        return float(np.max(np.abs(a - b))) / (scale if scale > 0 else 1.0)

    names = ("theta", "beta", "sigma", "bse", "objective")
    print(f"{'model':14s} {'crit':4s} {'parts':>5s} " + " ".join(f"{n:>9s}" for n in names))
    worst = 0.0
    for label, formula, which in AGREEMENT_MODELS:
        df = data[which]
        for reml in (True, False):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                f0 = bm.lmm(formula, df, reml=reml).fit()
                for k in partitions:
                    bounds = np.linspace(0, len(df), k + 1).astype(int)
                    ddf = dd.from_delayed([dask.delayed(df.iloc[a:b]) for a, b in zip(bounds[:-1], bounds[1:])],
                                          meta=df.iloc[:0], verify_meta=False)
                    with dask.config.set(scheduler="synchronous"):
                        f1 = bm.lmm(formula, ddf, reml=reml).fit()
                    d = [rel(getattr(f1, n), getattr(f0, n)) for n in names]
                    worst = max(worst, *d)
                    print(f"{label:14s} {'REML' if reml else 'ML':4s} {k:5d} " + " ".join(f"{x:9.1e}" for x in d),
                          flush=True)
    print(f"largest relative difference: {worst:.1e}")


class Sampler:
    """Peak RSS per worker, sampled with client.run every `every` seconds."""

    def __init__(self, client, every=0.2):
        self.client, self.every = client, every
        self.peak: dict = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        def rss():
            import psutil as ps

            return ps.Process().memory_info().rss

        while not self._stop.is_set():
            try:
                for w, r in self.client.run(rss).items():
                    self.peak[w] = max(self.peak.get(w, 0), r)
            except Exception:  # noqa: BLE001 - a worker restarting; keep sampling
                pass
            self._stop.wait(self.every)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--patients", type=int, default=1_000_000)
    ap.add_argument("--hospitals", type=int, default=10_000)
    ap.add_argument("--partitions", type=int, default=0, help="files (default: one per ~500k rows)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory", default="6GiB", help="memory limit of all workers together")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", default=None, help="Parquet directory (default bench/data/dask_<rows>)")
    ap.add_argument("--out", default=str(RESULTS / "dask.md"))
    ap.add_argument("--in-memory", action="store_true",
                    help="also fit the same data in memory (pandas) and compare the estimates")
    ap.add_argument("--agreement", action="store_true",
                    help="only compare in-memory and Dask fits of small models (see above)")
    args = ap.parse_args(argv)
    if args.agreement:
        agreement()
        return

    import dask.dataframe as dd

    import bigmixed as bm
    from bigmixed.distributed.cluster import local_cluster

    partitions = args.partitions or max(2, args.rows // 500_000)
    path = Path(args.data) if args.data else DATA / f"dask_{args.rows}"
    if not (path.exists() and any(path.glob("*.parquet"))):
        print(f"generating {args.rows:,} rows into {path} ...", flush=True)
        info = make_data(path, args.rows, args.patients, args.hospitals, partitions, args.seed)
    else:
        info = dict(rows=args.rows, patients=args.patients, hospitals=args.hospitals,
                    visits=args.rows // args.patients, files=len(list(path.glob("*.parquet"))), gen_s=None)
    disk_mb = sum(f.stat().st_size for f in path.glob("*.parquet")) / 2**20
    used = ["mobility", "age", "sex", "time", "patient", "hospital"]
    start_uptime = uptime_line()

    bm.warmup()
    t = time.perf_counter()
    client = local_cluster(memory_limit=args.memory, n_workers=args.workers, threads_per_worker=1,
                           dashboard_address=None)
    cluster_s = time.perf_counter() - t
    try:
        client.run(lambda: __import__("bigmixed").warmup())  # JIT caches loaded on the workers
        # the floor: a bare read of the same columns of the same files
        t = time.perf_counter()
        dd.read_parquet(str(path), columns=used).sum().compute()
        read_s = time.perf_counter() - t
        t = time.perf_counter()
        dd.read_parquet(str(path), columns=used).sum().compute()
        read2_s = time.perf_counter() - t

        with Sampler(client) as sampler:
            t = time.perf_counter()
            ddf = dd.read_parquet(str(path))
            model = bm.lmm(FORMULA, data=ddf)
            fit = model.fit()
            wall_s = time.perf_counter() - t
        peaks = sampler.peak
        t = time.perf_counter()
        q = fit.resid_quantiles()
        resid_s = time.perf_counter() - t
    finally:
        client.close()
        client.cluster.close()
    client_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    compare = None
    if args.in_memory:
        df = pd.read_parquet(path, columns=used)
        t = time.perf_counter()
        f0 = bm.lmm(FORMULA, df).fit()
        mem_s = time.perf_counter() - t
        rel = lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))  # noqa: E731
        compare = dict(mem_s=mem_s, objective=rel(fit.objective, f0.objective), theta=rel(fit.theta, f0.theta),
                       beta=rel(fit.beta, f0.beta), se=rel(fit.bse, f0.bse),
                       sigma=rel(fit.sigma, f0.sigma))
        del df, f0

    tm = model.timings
    lines = [
        "# Fitting partitioned Parquet through Dask (bench/dask_bench.py)",
        "",
        f"- date: {time.strftime('%Y-%m-%dT%H:%M:%S')}",
        f"- host: {os.uname().nodename}, {os.cpu_count()} CPUs, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, Python {sys.version.split()[0]}",
        f"- bigmixed git: {git_rev()}",
        f"- uptime at start: `{start_uptime}`",
        f"- uptime at end: `{uptime_line()}`",
        "",
        f"Model: `{FORMULA}` (REML). Data: {info['rows']:,} rows, {info['patients']:,} patients "
        f"({info['visits']} visits each) in {info['hospitals']:,} hospitals, {info['files']} Parquet "
        f"files ({disk_mb:,.0f} MiB on disk; generated by `generate_hdp` in shards"
        + (f", {info['gen_s']:.0f} s" if info.get("gen_s") else "") + "). "
        f"LocalCluster: {args.workers} worker processes x 1 thread, memory limit {args.memory} in total "
        f"(started in {cluster_s:.1f} s, not counted).",
        "",
        "| what | value |",
        "|---|---|",
        f"| bare read of the same columns, `dd.read_parquet(...).sum().compute()` (floor; cold, warm) | {read_s:.1f} s, {read2_s:.1f} s |",
        f"| **fit wall time**: `bm.lmm(formula, data=ddf).fit()` | **{wall_s:.1f} s** |",
        f"| - pass 1 (rows kept, global levels) | {tm['levels']:.1f} s |",
        f"| - pass 2 (cross-products per partition + tree reduction) | {tm['crossprod']:.1f} s |",
        f"| - set-up of the reduced system (basis, CHOLMOD analysis) | {tm['analyse']:.1f} s |",
        f"| - optimizer on the reduced system, in the client ({fit.optimizer.n_evaluations} evaluations) | {fit.timings['optimize']:.1f} s |",
        f"| - estimates at the optimum | {fit.timings['finalize']:.2f} s |",
        f"| peak RSS per worker | {', '.join(f'{v / 2**20:,.0f} MiB' for v in peaks.values())} |",
        f"| peak RSS of all workers together (sum of per-worker peaks) | {sum(peaks.values()) / 2**20:,.0f} MiB |",
        f"| peak RSS of the client process (reduced system + optimizer) | {client_peak_mb:,.0f} MiB |",
        f"| scaled-residual quartiles for the summary (one more pass) | {resid_s:.1f} s |",
        "",
        f"Estimates: objective {fit.objective:.6f}, theta {np.array2string(fit.theta, precision=5)}, "
        f"sigma {fit.sigma:.5f}, beta {dict(zip(fit.fixed_names, np.round(fit.beta, 5)))}; "
        f"scaled residuals min/quartiles/max {np.round(q, 3).tolist()}.",
    ]
    if compare:
        lines += ["", f"Same data in memory (pandas, `bm.lmm(formula, df).fit()`): {compare['mem_s']:.1f} s; "
                  f"max relative differences: objective {compare['objective']:.1e}, theta {compare['theta']:.1e}, "
                  f"beta {compare['beta']:.1e}, SEs {compare['se']:.1e}, sigma {compare['sigma']:.1e} "
                  "(the cross-products are double-double sums rounded once: the same bits whatever "
                  "the partitioning, so 0 is expected)."]
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
