"""Accuracy of bigmixed against every lme4 reference fit in bench/references.

    .venv/bin/python bench/accuracy.py      # writes bench/results/accuracy.md

For each model and criterion: objective gap (bigmixed - lme4 default fit, and - lme4's precise
fit, relative), and the largest relative differences of beta, SEs, sigma (against the precise fit),
the largest absolute difference of theta, and of the BLUPs in units of sigma.
"""
from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import bigmixed as bm  # noqa: E402
from test_model_lme4 import INDEX, REF, load_data  # noqa: E402


def main() -> int:
    rows = []
    for model in INDEX["models"]:
        for kind, file in model["fits"].items():
            ref = json.loads((REF / file).read_text())
            precise = ref["precise"]
            df = load_data(model["data"])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                fit = bm.lmm(ref["formula"], df, reml=(kind == "reml")).fit()
                secs = time.perf_counter() - t0
            names = ref["fixed_names"]
            b = np.array([precise["beta"][n] for n in names])
            se = np.array([precise["se"][n] for n in names])
            th = np.array(list(precise["theta"].values()))
            blup_err = 0.0
            ranef = fit.ranef()
            for group, r in precise["ranef"].items():
                modes = np.array(r["modes"]).reshape(len(r["levels"]), -1)
                got = ranef[group].loc[r["levels"], r["columns"]].to_numpy()
                blup_err = max(blup_err, float(np.max(np.abs(got - modes))) / fit.sigma)
            rows.append({
                "model": model["name"], "criterion": kind.upper(), "formula": ref["formula"],
                "obj - lme4 (rel)": (fit.objective - ref["objective"]) / abs(ref["objective"]),
                "obj - lme4 precise (rel)": (fit.objective - precise["objective"]) / abs(precise["objective"]),
                "beta (rel, max)": float(np.max(np.abs(fit.beta - b) / np.maximum(np.abs(b), se))),
                "SE (rel, max)": float(np.max(np.abs(fit.bse.to_numpy() - se) / se)),
                "sigma (rel)": abs(fit.sigma - precise["sigma"]) / precise["sigma"],
                "theta (abs, max)": float(np.max(np.abs(fit.theta - th))),
                "BLUP (max, /sigma)": blup_err,
                "evals": fit.optimizer.n_evaluations, "lme4 evals": ref.get("fevals"),
                "fit s": secs,
            })
    table = pd.DataFrame(rows)
    out = ROOT / "bench" / "results" / "accuracy.md"
    fmt = {c: "{:.2e}".format for c in table.columns if "rel" in c or "abs" in c or "BLUP" in c}
    fmt["fit s"] = "{:.3f}".format
    body = table.to_markdown(index=False, floatfmt=".2e") if hasattr(table, "to_markdown") else table.to_string()
    header = ("# bigmixed vs lme4 reference fits\n\n"
              f"lme4 {INDEX.get('lme4_version')}, {INDEX.get('R_version')}; made by `bench/accuracy.py`.\n"
              "Negative objective gaps: bigmixed ends lower (better) than lme4.\n\n")
    worst_cols = [c for c in table.columns if "rel" in c or "abs" in c or "BLUP" in c]
    worst = "\n".join(f"- worst {c}: {table[c].max():.2e}" for c in worst_cols)
    evals = f"- objective evaluations, all fits: bigmixed {table['evals'].sum()}, lme4 {table['lme4 evals'].sum()}"
    out.write_text(header + body + "\n\n" + worst + "\n" + evals + "\n")
    table.to_csv(out.with_suffix(".csv"), index=False)
    print(worst)
    print(evals)
    print(header + table.to_string(index=False, formatters=fmt))
    worst = table["obj - lme4 precise (rel)"].max()
    return 0 if worst <= 1e-6 else 1


if __name__ == "__main__":
    raise SystemExit(main())
