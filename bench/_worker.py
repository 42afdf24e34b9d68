"""One timed fit in a fresh process (started by bench/run_bench.py).

    python bench/_worker.py ENGINE PROBLEM DATA.parquet OUT.json [--ml]

ENGINE is bigmixed, statsmodels or gpboost.  The data are read first (not timed); the timed section is the
fit including the design building: ``bm.lmm(formula, df).fit()`` or
``smf.mixedlm(...).fit()``.  Before it, bigmixed fits a tiny problem of the same shape (JIT warm-up)
and the process's peak-RSS counter is reset (``echo 5 > /proc/self/clear_refs``), so that VmHWM
after the fit is the peak during the fit (the data already in memory included).
Results go to OUT.json.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _status_kb(key: str) -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return float(line.split()[1])
    return math.nan


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _num(x):
    x = float(x)
    return x if math.isfinite(x) else None


def run_bigmixed(problem, df, reml: bool) -> dict:
    import numba

    import bigmixed as bm
    from problems import make_data

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bm.warmup()  # every compiled path, then a tiny fit of the same shape
        bm.lmm(problem.formula, make_data(problem.name, tiny=True), reml=reml).fit()
    warm = time.perf_counter() - t0

    rss_before = _status_kb("VmRSS")
    reset = _reset_peak()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        fit = bm.lmm(problem.formula, df, reml=reml).fit()
        wall = time.perf_counter() - t0
    hwm = _status_kb("VmHWM")
    vc = fit.variance_components
    return {
        "wall_s": wall,
        "warmup_s": warm,
        "rss_before_mb": rss_before / 1024,
        "fit_peak_mb": hwm / 1024 if reset else None,
        "n_evals": int(fit.optimizer.n_evaluations),
        "n_gradients": int(getattr(fit.optimizer, "n_gradients", 0)),
        "n_approx_evals": int(getattr(fit.optimizer, "n_approx_evaluations", 0)),
        "optimizer": str(fit.optimizer.method),
        "objective": float(fit.objective),
        "theta": [float(t) for t in fit.theta],
        "beta": {k: float(v) for k, v in zip(fit.fixed_names, fit.beta)},
        "se": {k: float(v) for k, v in fit.bse.items()},
        "vc": [{"grp": r.group, "var1": _str(r.term1), "var2": _str(r.term2),
                "vcov": float(r.variance)}
               for r in vc.itertuples()],
        "converged": bool(fit.converged),
        "singular": bool(fit.is_singular),
        "warnings": sorted({f"{w.category.__name__}: {w.message}" for w in caught}),
        "timings": {k: float(v) for k, v in fit.timings.items()},
        "nobs": int(fit.nobs),
        "threads": f"numba {numba.get_num_threads()} ({numba.threading_layer()})",
    }


def run_statsmodels(problem, df, reml: bool) -> dict:
    import numpy as np
    import statsmodels
    import statsmodels.formula.api as smf

    spec = problem.statsmodels
    # Grouping columns used inside a vc_formula go in as integer codes: patsy's C() of a
    # pandas Categorical would expand every group's block to all the categories.
    for col in {c for f in (spec.get("vc_formula") or {}).values() for c in problem.factors
                if f"C({c})" in f}:
        df[col] = df[col].cat.codes.astype(np.int64)
    counts = {"loglike": 0, "score": 0}

    rss_before = _status_kb("VmRSS")
    reset = _reset_peak()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        md = smf.mixedlm(spec["fixed"], df, groups=df[spec["groups"]],
                         re_formula=spec.get("re_formula"), vc_formula=spec.get("vc_formula"))
        ll, sc = md.loglike, md.score

        def loglike(*a, **k):
            counts["loglike"] += 1
            return ll(*a, **k)

        def score(*a, **k):
            counts["score"] += 1
            return sc(*a, **k)

        md.loglike, md.score = loglike, score
        res = md.fit(reml=reml)
        wall = time.perf_counter() - t0
    hwm = _status_kb("VmHWM")

    beta = {_rename(k): float(v) for k, v in res.fe_params.items()}
    se = {_rename(k): float(v) for k, v in zip(res.fe_params.index, res.bse_fe)}
    vc = []
    group = spec["re_names"][spec["groups"]]
    cov_re = res.cov_re
    names = [_rename(n) for n in cov_re.index]
    for i, a in enumerate(names):
        vc.append({"grp": group, "var1": a, "var2": None, "vcov": float(cov_re.iloc[i, i])})
    for j in range(len(names)):
        for i in range(j + 1, len(names)):
            vc.append({"grp": group, "var1": names[j], "var2": names[i],
                       "vcov": float(cov_re.iloc[i, j])})
    for name, v in zip(md.exog_vc.names, np.atleast_1d(res.vcomp)):
        vc.append({"grp": spec["vc_names"][name], "var1": "(Intercept)", "var2": None,
                   "vcov": float(v)})
    vc.append({"grp": "Residual", "var1": None, "var2": None, "vcov": float(res.scale)})
    return {
        "wall_s": wall,
        "rss_before_mb": rss_before / 1024,
        "fit_peak_mb": hwm / 1024 if reset else None,
        "n_evals": counts["loglike"],
        "n_grad_evals": counts["score"],
        "objective": _num(-2.0 * res.llf),
        "beta": beta,
        "se": se,
        "vc": vc,
        "converged": bool(res.converged),
        "warnings": sorted({f"{w.category.__name__}: {str(w.message)[:200]}" for w in caught}),
        "nobs": int(res.nobs),
        "method": str(getattr(res, "method", "")),
        "version": statsmodels.__version__,
    }


def run_gpboost(problem, df, reml: bool) -> dict:
    """gpboost's GPModel with a Gaussian likelihood and grouped random effects (one intercept
    per grouping factor; random slopes are independent of the intercept in gpboost, so problems
    with correlated slopes are not run). gpboost estimates by maximum likelihood; its -2 log
    likelihood is reported (comparable with the ML deviance, not the REML criterion)."""
    import numpy as np
    import gpboost as gpb

    lhs, rhs = problem.formula.split("~", 1)
    fixed = [t.strip() for t in rhs.split("+") if "|" not in t and t.strip() not in ("", "1")]
    X = np.column_stack([np.ones(len(df))] + [df[c].to_numpy(np.float64) for c in fixed])
    y = df[lhs.strip()].to_numpy(np.float64)
    rss_before = _status_kb("VmRSS")
    reset = _reset_peak()
    t0 = time.perf_counter()
    groups = np.column_stack([df[f].cat.codes.to_numpy() if hasattr(df[f], "cat")
                              else df[f].to_numpy() for f in problem.factors])
    gp = gpb.GPModel(group_data=groups, likelihood="gaussian")
    gp.fit(y=y, X=X)
    wall = time.perf_counter() - t0
    hwm = _status_kb("VmHWM")
    return {
        "wall_s": wall,
        "rss_before_mb": rss_before / 1024,
        "fit_peak_mb": hwm / 1024 if reset else None,
        "objective_ml": _num(2.0 * float(gp.get_current_neg_log_likelihood())),
        "version": gpb.__version__,
        "warnings": [],
    }


def _str(x):
    """None for None / NaN (pandas turns None into NaN in a column of labels)."""
    return x if isinstance(x, str) else None


def _rename(name: str) -> str:
    return {"Intercept": "(Intercept)", "Group": "(Intercept)"}.get(name, name)


def main() -> int:
    engine, name, data_path, out_path = sys.argv[1:5]
    reml = "--ml" not in sys.argv[5:]
    import pandas as pd

    from problems import PROBLEMS

    problem = PROBLEMS[name]
    out = {"engine": engine, "problem": name, "reml": reml, "pid": os.getpid(),
           "load_start": os.getloadavg()[0]}
    try:
        t0 = time.perf_counter()
        df = pd.read_parquet(data_path)
        out["read_s"] = time.perf_counter() - t0
        fn = {"bigmixed": run_bigmixed, "statsmodels": run_statsmodels,
              "gpboost": run_gpboost}[engine]
        out.update(fn(problem, df, reml))
        out["status"] = "ok"
    except Exception as exc:  # noqa: BLE001
        out["status"] = "error"
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc()
    out["load_end"] = os.getloadavg()[0]
    with open(out_path, "w", encoding="utf-8") as fh:
        json.dump(out, fh, indent=1)
    return 0 if out["status"] == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
