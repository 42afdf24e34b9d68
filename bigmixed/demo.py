"""Demo: fit the seeds' hdp-style example (8525 patients, 407 doctors) and print the summary.

    python -m bigmixed.demo [--seed N] [--ml]
"""
from __future__ import annotations

import argparse
import time


def main(argv=None) -> int:
    import bigmixed as bm
    from bigmixed.data_gen import generate_hdp

    ap = argparse.ArgumentParser(prog="python -m bigmixed.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ml", action="store_true", help="fit by maximum likelihood instead of REML")
    args = ap.parse_args(argv)

    gen = generate_hdp(seed=args.seed)
    df = gen.data
    formula = "mobility ~ age + married + sex + wbc + rbc + (1 | doctor)"
    print(f"data: {len(df)} patients, {df['doctor'].nunique()} doctors (bigmixed.data_gen, seed {args.seed})")
    bm.warmup()  # loads the cached Numba kernels (compiles them on a first run)
    t0 = time.perf_counter()
    fit = bm.lmm(formula, df, reml=not args.ml).fit()
    elapsed = time.perf_counter() - t0
    print(fit.summary())
    print()
    print("truth: beta", gen.truth["beta"], "doctor SD", gen.truth["sd_doctor"],
          "residual SD", gen.truth["residual_sd"])
    print(f"fit time (design + cross-products + optimization + results): {elapsed * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
