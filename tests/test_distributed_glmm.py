"""GLMMs from Dask data (bigmixed.distributed.glmm) against the same GLMM in memory.

Each PIRLS iteration is one pass over the partitions with double-double sums in a fixed tree,
so the working cross-products equal the in-memory ones to rounding; the linear predictor is
carried as coefficients and evaluated per partition, so the iterates' row values differ from
the in-memory ones in the last bits. The criterion is flat at the optimum: the two fits agree
to ~1e-12 relative in the objective, ~1e-7 in beta and theta, and ~1e-5 in the SEs
(the Hessian of glmer's criterion by differences).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

dask = pytest.importorskip("dask")
dd = pytest.importorskip("dask.dataframe")

import bigmixed as bm  # noqa: E402
from bigmixed.data_gen import generate_hdp  # noqa: E402


def uneven(df: pd.DataFrame, cuts) -> "dd.DataFrame":
    bounds = [0, *cuts, len(df)]
    parts = [dask.delayed(df.iloc[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    return dd.from_delayed(parts, meta=df.iloc[:0], verify_meta=False)


@pytest.fixture(scope="module")
def data():
    df = generate_hdp(120, seed=5, n_hospitals=8, binary=True, counts=True).data.reset_index(drop=True)
    df["trials"] = 1 + (np.arange(len(df)) % 4)
    rng = np.random.default_rng(3)
    df["prop"] = rng.binomial(df["trials"].to_numpy(), 0.3) / df["trials"]
    return df


def fit_both(formula, df, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        mem = bm.glmm(formula, df, **kw).fit()
        dsk = bm.glmm(formula, uneven(df, [7, len(df) // 3, len(df) // 3 + 1, 2 * len(df) // 3]),
                      **kw).fit()
    return mem, dsk


CASES = [
    ("remission ~ age + married + wbc + (1 | doctor)", dict(family="binomial")),
    # (not probit or cloglog here: PIRLS (Fisher scoring) converges linearly for them; the
    # in-memory level kernel finishes the modes by Newton steps, the partition passes do not,
    # and their criterion carries ~1e-7 of noise: the two fits agree to ~1e-3 only)
    ("n_events ~ age + sex + (1 | doctor)", dict(family="poisson", offset="log(exposure)")),
    ("n_events ~ age + offset(log(exposure)) + (1 | doctor) + (1 | hospital)",
     dict(family="poisson")),
    ("prop ~ age + sex + (1 | doctor)", dict(family="binomial", weights="trials")),
    ("remission ~ age + (1 | doctor)", dict(family="binomial", nAGQ=0)),
]


@pytest.mark.parametrize("formula,kw", CASES)
def test_a_dask_glmm_is_the_in_memory_fit(data, formula, kw):
    mem, dsk = fit_both(formula, data, **kw)
    assert isinstance(dsk, bm.GLMMResults) and dsk.rows.kind == "dask"
    assert dsk.objective == pytest.approx(mem.objective, rel=1e-10)
    np.testing.assert_allclose(dsk.beta, mem.beta, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dsk.theta, mem.theta, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dsk.bse, mem.bse, rtol=1e-4)
    assert dsk.nobs == mem.nobs and dsk.n_params == mem.n_params
    assert dsk.aic == pytest.approx(mem.aic, rel=1e-8)
    for b1, b2 in zip(dsk.conditional_modes, mem.conditional_modes):
        np.testing.assert_allclose(b1, b2, rtol=1e-5, atol=1e-6)


def test_row_level_results_come_back_as_dask_collections(data):
    mem, dsk = fit_both("remission ~ age + married + (1 | doctor)", data, family="binomial")
    fitted = dsk.fitted_dask().compute().to_numpy()
    np.testing.assert_allclose(fitted, mem.fittedvalues, rtol=1e-6, atol=1e-8)
    frame = dsk.fitted_frame_dask().compute()
    np.testing.assert_allclose(frame["resid_pearson"], mem.residuals("pearson"), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(frame["resid"], mem.residuals("deviance"), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(frame["linear_predictor"], mem.linear_predictor, rtol=1e-6, atol=1e-7)
    text = dsk.summary()
    assert "Family: binomial  ( logit )" in text and "Scaled residuals" in text
    new = data.head(10)
    np.testing.assert_allclose(dsk.predict(new, type="response"), mem.predict(new, type="response"),
                               rtol=1e-6)


def test_what_needs_the_rows_in_memory_says_so(data):
    ddf = dd.from_pandas(data, npartitions=2)
    with pytest.raises(NotImplementedError, match="nAGQ > 1"):
        bm.glmm("remission ~ age + (1 | doctor)", ddf, family="binomial", nAGQ=5)
    with pytest.raises(NotImplementedError, match="cbind"):
        bm.glmm("cbind(remission, 1 - remission) ~ age + (1 | doctor)", ddf, family="binomial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        fit = bm.glmm("remission ~ age + (1 | doctor)", ddf, family="binomial").fit()
    with pytest.raises(NotImplementedError, match="rows in memory"):
        fit.bootstrap(2, seed=1)


def test_a_response_outside_the_support_is_a_typed_error_from_the_partitions(data):
    bad = data.copy()
    bad.loc[bad.index[-1], "n_events"] = -1
    with pytest.raises(bm.ResponseSupportError, match="n_events"):
        bm.glmm("n_events ~ age + (1 | doctor)", dd.from_pandas(bad, npartitions=3),
                family="poisson")


def test_cli_fits_a_glmm_through_a_distributed_cluster(data, tmp_path):
    """bigmixed fit --family binomial --dask ADDRESS: the partitions are persisted on the
    workers, each PIRLS pass runs there."""
    distributed = pytest.importorskip("distributed")
    import json

    from bigmixed.cli import main

    folder = tmp_path / "pq"
    folder.mkdir()
    for i, idx in enumerate(np.array_split(np.arange(len(data)), 3)):
        data.iloc[idx].to_parquet(folder / f"part-{i}.parquet")
    out = tmp_path / "fit.json"
    formula = "n_events ~ age + sex + (1 | doctor)"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=":0") as cluster:
        code = main(["fit", "--data", str(folder), "--formula", formula, "--family", "poisson",
                     "--offset", "log(exposure)", "--dask", cluster.scheduler_address,
                     "--out", str(out), "-q"])
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["input"]["partitions"] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        mem = bm.glmm(formula, data, family="poisson", offset="log(exposure)").fit()
    est = [r["estimate"] for r in doc["fixed_effects"]]
    np.testing.assert_allclose(est, mem.beta, rtol=1e-6)
    assert doc["statistics"]["logLik"] == pytest.approx(mem.llf, rel=1e-10)
