"""Command line: write a generated hdp-style data set.

    python -m bigmixed.data_gen --n-doctors 407 --seed 1 --n-visits 5 \\
        --slope-sd 0.3 --out hdp.parquet --truth truth.json

The format follows the extension of --out (.parquet / .pq or .csv, optionally
.csv.gz etc.).  A one-line summary (rows, groups) goes to stderr.  With
--tablets [--missing] the seeds' tablet data is written instead.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .generate import generate_hdp, tablets


def _writer_for(path: str) -> str:
    low = path.lower()
    for ext in (".gz", ".bz2", ".xz", ".zst", ".zip"):
        if low.endswith(".csv" + ext):
            return "csv"
    if low.endswith(".csv"):
        return "csv"
    if low.endswith((".parquet", ".pq")):
        return "parquet"
    raise SystemExit(f"--out: cannot tell the format of {path!r} "
                     "(use .parquet, .pq or .csv)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bigmixed.data_gen",
        description="Generate the seeds' hdp-style example (doctors / patients, "
                    "mobility score) at any size, deterministically.")
    a = p.add_argument
    a("--n-doctors", type=int, default=407, help="number of doctors (default 407)")
    a("--seed", type=int, default=0, help="random seed (default 0)")
    a("--mean-patients", type=float, default=21, help="mean patients per doctor (21)")
    a("--min-patients", type=int, default=2, help="fewest patients per doctor (2)")
    a("--max-patients", type=int, default=40, help="most patients per doctor (40)")
    a("--n-patients", type=int, default=None,
      help="exact total patients (default: 8525 for the seeds' setup, "
           "else n_doctors*mean_patients)")
    a("--n-visits", type=int, default=1, help="visits per patient (adds patient, time)")
    a("--irregular-times", action="store_true", help="jitter visit times")
    a("--slope-sd", type=float, default=0.0, help="doctor random slope SD on time")
    a("--slope-corr", type=float, default=0.0, help="intercept/slope correlation")
    a("--patient-sd", type=float, default=0.0, help="patient-in-doctor intercept SD")
    a("--doctor-sd", type=float, default=1.0, help="doctor intercept SD (1)")
    a("--n-hospitals", type=int, default=0, help="crossed hospital factor levels")
    a("--nested-in", type=int, default=0, help="doctors nested in this many hospitals")
    a("--hospital-sd", type=float, default=0.5, help="hospital effect SD (0.5)")
    a("--missing-share", type=float, default=0.0,
      help="share of NaN cells in age, wbc, rbc, mobility")
    a("--residual-sd", type=float, default=1.0, help="residual SD (1)")
    a("--time-effect", type=float, default=0.0, help="fixed effect of time")
    a("--binary", action="store_true",
      help="add a 0/1 outcome 'remission' (binomial GLMM, doctor intercept)")
    a("--binary-link", default="logit", choices=["logit", "probit", "cloglog"],
      help="link of the binary outcome (logit)")
    a("--binary-doctor-sd", type=float, default=None,
      help="doctor intercept SD of the binary outcome (link default: 1/0.6/0.8)")
    a("--binary-hospital-sd", type=float, default=0.5,
      help="hospital intercept SD of the binary outcome (0.5)")
    a("--counts", action="store_true",
      help="add 'exposure' (years) and a Poisson count 'n_events' (offset log(exposure))")
    a("--count-doctor-sd", type=float, default=0.5,
      help="doctor intercept SD of the count outcome (0.5)")
    a("--count-hospital-sd", type=float, default=0.3,
      help="hospital intercept SD of the count outcome (0.3)")
    a("--out", default=None, help="output file, .parquet/.pq or .csv")
    a("--truth", default=None, help="write the truth (parameters, random effects) as JSON")
    a("--tablets", action="store_true", help="write the seeds' tablet data instead")
    a("--missing", action="store_true", help="with --tablets: the 20-tablet version")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    fmt = _writer_for(args.out) if args.out else None

    if args.tablets:
        df = tablets(missing=args.missing)
        if fmt == "csv":
            df.to_csv(args.out, index=False)
        elif fmt == "parquet":
            df.to_parquet(args.out, index=False)
        print(f"tablets: {len(df)} rows, {df['tablet'].cat.categories.size} tablets"
              + (f" -> {args.out}" if args.out else ""), file=sys.stderr)
        return 0

    try:
        g = generate_hdp(
            args.n_doctors, seed=args.seed, mean_patients=args.mean_patients,
            min_patients=args.min_patients, max_patients=args.max_patients,
            n_patients=args.n_patients, n_visits=args.n_visits,
            irregular_times=args.irregular_times, slope_sd=args.slope_sd,
            slope_corr=args.slope_corr, patient_sd=args.patient_sd,
            n_hospitals=args.n_hospitals, hospital_sd=args.hospital_sd,
            nested_in=args.nested_in, missing_share=args.missing_share,
            residual_sd=args.residual_sd, doctor_sd=args.doctor_sd,
            time_effect=args.time_effect, binary=args.binary,
            binary_link=args.binary_link, binary_doctor_sd=args.binary_doctor_sd,
            binary_hospital_sd=args.binary_hospital_sd, counts=args.counts,
            count_doctor_sd=args.count_doctor_sd,
            count_hospital_sd=args.count_hospital_sd)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    if fmt == "csv":
        g.to_csv(args.out)
    elif fmt == "parquet":
        g.to_parquet(args.out)
    if args.truth:
        g.truth_to_json(args.truth)
    print(f"hdp: {g.summary()}" + (f" -> {args.out}" if args.out else ""),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
