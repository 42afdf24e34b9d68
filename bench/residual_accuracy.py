"""bigmixed's residual structures against nlme's lme: the worst differences per reference fit.

    .venv/bin/python bench/residual_accuracy.py      # -> bench/results/residual_accuracy.md

Reads bench/references_nlme (made by bench/make_nlme_references.py). Objective: bigmixed's
-2 log-likelihood minus nlme's (tight control), relative (negative: bigmixed is better).
Estimates: max relative difference against nlme's polished optimum (Newton steps on nlme's own
likelihood in R), for beta, SE, sigma, random-effect SDs and the structure's parameters.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import RESULTS, ensure_dirs, machine_header, markdown_table  # noqa: E402
from test_residual_nlme import CASES, _best, _fit, _load  # noqa: E402


def rel(a, b):
    a, b = np.atleast_1d(np.asarray(a, float)), np.atleast_1d(np.asarray(b, float))
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def main() -> int:
    ensure_dirs()
    rows = []
    for name, method in CASES:
        ref, df = _load(name, method)
        fit = _fit(name, method, ref, df)
        pol, tight = _best(ref)
        names = tight["fixed_names"]
        vc = fit.variance_components
        re = [float(vc[(vc["term1"] == c) & vc["term2"].isna() & (vc["group"] != "Residual")]["sd"].iloc[0])
              for c in pol["re_sd"]]
        struct_got, struct_want = [], []
        if pol.get("cor") is not None:
            struct_got.append(float(fit.residual_parameters.iloc[0]))
            struct_want.append(pol["cor"])
        if pol.get("varident_ratios"):
            sd = fit.residual_sd()
            for lv, r in pol["varident_ratios"].items():
                struct_got.append(sd[lv] / fit.sigma)
                struct_want.append(r)
        nlme_obj = -2 * tight["logLik"]
        rows.append({
            "model": name, "method": method.upper(), "nobs": fit.nobs,
            "objective": fit.objective, "d_obj_vs_nlme_rel": (fit.objective - nlme_obj) / abs(nlme_obj),
            "beta": rel(fit.beta, [pol["beta"][k] for k in names]),
            "se": rel(fit.bse.to_numpy(), [pol["se"][k] for k in names]),
            "sigma": rel(fit.sigma, pol["sigma"]), "re_sd": rel(re, list(pol["re_sd"].values())),
            "structure": rel(struct_got, struct_want) if struct_got else float("nan"),
            "evals": fit.optimizer.n_evaluations,
        })
    cols = list(rows[0])
    lines = ["# Residual structures vs nlme (bench/residual_accuracy.py)", ""] + machine_header() + [""]
    lines.append(markdown_table(rows, cols))
    worst = {c: max(r[c] for r in rows if r[c] == r[c]) for c in ["beta", "se", "sigma", "re_sd", "structure"]}
    lines += ["", "Worst over all fits: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items())
              + f"; objective relative to nlme's: from {min(r['d_obj_vs_nlme_rel'] for r in rows):.1e}"
              f" to {max(r['d_obj_vs_nlme_rel'] for r in rows):.1e} (negative = lower than nlme's)."]
    (RESULTS / "residual_accuracy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
