"""GLMM accuracy against glmer's references, per model, in units of the issue's tolerances.

    .venv/bin/python bench/glmm_accuracy.py            # pirls="auto" (glmer's criterion)
    .venv/bin/python bench/glmm_accuracy.py exact      # the exact Laplace criterion

For every reference group of bench/references_glmm (the fits of tests/test_glmm_lme4.py):
the -2 log-likelihood relative to glmer's best (negative: better), and the largest beta, SE and
theta differences from the best converged glmer fit divided by the tolerances (beta 1e-4 of the
estimate or its SE, SE 1e-3 relative, theta 1e-3): values up to 1 pass.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_glmm_lme4 as T  # noqa: E402  (the reference loaders of the tests)

import bigmixed as bm  # noqa: E402


def main(mode: str = "auto") -> int:
    for group in T.GROUPS:
        refs = T.candidates(group)
        base = next(r for r in refs if "rescaled" not in r["name"])
        kw = dict(family=base["family"], link=base["link"], nAGQ=base["nAGQ"], pirls=mode)
        if base.get("weights_arg"):
            kw["weights"] = base["weights_arg"]
        if base.get("offset_arg"):
            kw["offset"] = base["offset_arg"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = bm.glmm(base["formula"], T.load_data(base), **kw).fit()
        best = min(r["minus2logLik"] for r in refs)
        ref = min((r for r in refs if list(r["beta"]) == fit.fixed_names),
                  key=lambda r: r["minus2logLik"])
        failed = any("failed to converge" in m for m in ref.get("conv_lme4_messages") or [])
        beta = np.array(list(ref["beta"].values()))
        se = np.array(list(ref["se"].values()))
        theta = np.array(list(ref["theta"].values()))
        b = np.max(np.abs(fit.beta - beta) / np.maximum(np.abs(beta), se)) / 1e-4
        s = np.max(np.abs(fit.bse.to_numpy() / se - 1)) / 1e-3
        t = np.max(np.abs(fit.theta - theta)) / 1e-3 if len(theta) else 0.0
        sep = any(isinstance(w, bm.SeparationWarning) for w in fit.warnings)
        print(f"{group:28s} -2logLik {(fit.objective - best) / abs(best):+.2e}  beta/tol {b:6.2f}"
              f"  se/tol {s:8.2f}  theta/tol {t:5.2f}"
              f"{'  (glmer did not converge)' if failed else ''}{'  (separated)' if sep else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
