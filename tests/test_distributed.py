"""bigmixed.distributed: fitting a Dask DataFrame gives the in-memory fit.

What is compared, and why not everything to 1e-10:

* the reduced cross-products (Z'Z, Z'[X y], [X y]'[X y], crossed co-occurrence blocks) against
  the in-memory ones: equal to rounding (1e-12 relative); only the summation order differs;
* at the same theta (the in-memory optimum), every estimate that is a function of the
  cross-products -- objective, beta, SEs, sigma, BLUPs and their conditional SDs -- to 1e-10;
* the objective at the two fits' optima to 1e-10;
* the optimizers' end points (theta, and beta / SEs / BLUPs through theta) to 1e-5: the
  objective is flat at the optimum, so summation-order rounding (1e-14 in the objective) moves
  BOBYQA + the Newton polish by ~1e-7 in theta -- exactly as a row permutation of the
  in-memory data does (measured alongside).
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
from bigmixed.distributed import DaskLMMResults, DaskLinearMixedModel, is_dask_dataframe  # noqa: E402
from bigmixed.results import LMMResults  # noqa: E402

SLOPE = "mobility ~ age + sex + time + (1 + time | doctor)"
CROSSED = "mobility ~ age + wbc + (1 | doctor) + (1 | hospital)"


def rel(a, b) -> float:
    """Max absolute difference relative to the largest reference value (absolute if that is 0)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if b.size == 0:
        return 0.0
    diff = float(np.max(np.abs(a - b)))
    scale = float(np.max(np.abs(b)))
    return diff / scale if scale > 0 else diff


def uneven(df: pd.DataFrame, cuts) -> "dd.DataFrame":
    """A Dask DataFrame with partitions df.iloc[cuts[i]:cuts[i+1]] (uneven sizes, one tiny)."""
    bounds = [0, *cuts, len(df)]
    parts = [dask.delayed(df.iloc[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    return dd.from_delayed(parts, meta=df.iloc[:0], verify_meta=False)


@pytest.fixture(scope="module")
def slope_data():
    g = generate_hdp(150, seed=11, n_visits=4, irregular_times=True, slope_sd=0.4, slope_corr=0.3,
                     missing_share=0.03)
    return g.data


@pytest.fixture(scope="module")
def crossed_data():
    g = generate_hdp(120, seed=12, n_hospitals=15, missing_share=0.02)
    return g.data


def seven(df):
    n = len(df)
    return uneven(df, [n // 10, n // 10 + 3, n // 3, n // 2, (2 * n) // 3, n - 17])


def compare(f0, model, f1):
    """The checks described in the module docstring."""
    m0 = f0.model
    c0, c1 = m0.crossprods, model.crossprods
    assert c1.n_obs == c0.n_obs and c1.n_fixed == c0.n_fixed
    assert rel(c1.gram, c0.gram) < 1e-12
    for a, b in zip(c1.zz, c0.zz):
        assert rel(a, b) < 1e-12
    for a, b in zip(c1.zxy, c0.zxy):
        assert rel(a, b) < 1e-12
    assert len(c1.pairs) == len(c0.pairs)
    for p1, p0 in zip(c1.pairs, c0.pairs):
        assert np.array_equal(p1.row_levels, p0.row_levels)
        assert np.array_equal(p1.col_levels, p0.col_levels)
        assert rel(p1.blocks, p0.blocks) < 1e-12

    # same theta -> same estimates
    r1 = LMMResults(model, f0.optimizer)
    assert rel(r1.objective, f0.objective) < 1e-10
    assert rel(r1.beta, f0.beta) < 1e-10
    assert rel(r1.bse, f0.bse) < 1e-10
    assert rel(r1.sigma, f0.sigma) < 1e-10
    re0, re1 = f0.ranef(), r1.ranef()
    assert list(re0) == list(re1)
    for k in re0:
        assert re1[k].index.equals(re0[k].index)
        assert list(re1[k].columns) == list(re0[k].columns)
        assert rel(re1[k].to_numpy(), re0[k].to_numpy()) < 1e-10

    # independent optimizations
    assert rel(f1.objective, f0.objective) < 1e-10
    assert rel(f1.theta, f0.theta) < 1e-5
    assert rel(f1.beta, f0.beta) < 1e-5
    assert rel(f1.bse, f0.bse) < 1e-5
    assert f1.nobs == f0.nobs and f1.n_dropped == f0.n_dropped
    assert f1.fixed_names == f0.fixed_names
    assert f1.n_groups == f0.n_groups
    for k, v in f1.ranef().items():
        assert v.index.equals(re0[k].index)
        assert rel(v.to_numpy(), re0[k].to_numpy()) < 1e-4


@pytest.mark.parametrize("formula,data", [(SLOPE, "slope_data"), (CROSSED, "crossed_data")])
def test_synchronous_matches_in_memory(formula, data, request):
    df = request.getfixturevalue(data)
    f0 = bm.lmm(formula, df).fit()
    ddf = seven(df)
    assert ddf.npartitions == 7 and is_dask_dataframe(ddf) and not is_dask_dataframe(df)
    with dask.config.set(scheduler="synchronous"):
        model = bm.lmm(formula, data=ddf)
        assert isinstance(model, DaskLinearMixedModel)
        f1 = model.fit()
    assert isinstance(f1, DaskLMMResults)
    compare(f0, model, f1)
    # fitted values and residuals per partition, dropped rows absent, same index
    with dask.config.set(scheduler="synchronous"):
        fitted = f1.fitted_dask().compute()
        resid = f1.resid_dask().compute()
        marginal = f1.fitted_dask(level="population").compute()
    assert fitted.index.equals(f0.model.design.row_index)
    r0 = LMMResults(model, f0.optimizer)  # same theta: fitted values to rounding
    with dask.config.set(scheduler="synchronous"):
        fitted_same = DaskLMMResults.__new__(DaskLMMResults)
        fitted_same.__dict__.update(r0.__dict__)
        fs = fitted_same.fitted_dask().compute().to_numpy()
    assert rel(fs, f0.fittedvalues) < 1e-10
    assert rel(fitted.to_numpy(), f0.fittedvalues) < 1e-5
    assert rel(resid.to_numpy() + fitted.to_numpy(), f0.model.design.y) < 1e-14
    assert rel(marginal.to_numpy(), f0.fitted_marginal) < 1e-5


def test_local_cluster_bitwise_equal_to_synchronous(slope_data, crossed_data):
    distributed = pytest.importorskip("distributed")
    ddf_s, ddf_c = seven(slope_data), seven(crossed_data)
    with dask.config.set(scheduler="synchronous"):
        ms = bm.lmm(SLOPE, ddf_s)
        mc = bm.lmm(CROSSED, ddf_c)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster):
        ms2 = bm.lmm(SLOPE, ddf_s)  # the active scheduler: the client
        mc2 = bm.lmm(CROSSED, ddf_c)
        f2 = mc2.fit()
        fitted = f2.fitted_dask().compute()
    for a, b in ((ms, ms2), (mc, mc2)):
        ca, cb = a.crossprods, b.crossprods
        assert np.array_equal(ca.gram, cb.gram)
        assert all(np.array_equal(x, y) for x, y in zip(ca.zz, cb.zz))
        assert all(np.array_equal(x, y) for x, y in zip(ca.zxy, cb.zxy))
        assert all(np.array_equal(x.blocks, y.blocks) for x, y in zip(ca.pairs, cb.pairs))
    f0 = bm.lmm(CROSSED, crossed_data).fit()
    compare(f0, mc2, f2)
    assert fitted.index.equals(f0.model.design.row_index)


def test_reduction_is_deterministic(slope_data):
    ddf = seven(slope_data)
    with dask.config.set(scheduler="threads", num_workers=2):
        a = bm.lmm(SLOPE, ddf)
        b = bm.lmm(SLOPE, ddf)
    assert np.array_equal(a.crossprods.gram, b.crossprods.gram)
    assert all(np.array_equal(x, y) for x, y in zip(a.crossprods.zxy, b.crossprods.zxy))
    fa, fb = a.fit(), b.fit()
    assert np.array_equal(fa.theta, fb.theta) and np.array_equal(fa.beta, fb.beta)


@pytest.fixture(scope="module")
def awkward():
    """String ids with missing values, a factor whose levels are absent from some partitions
    (one only in the last, another not in the first), an interaction group, log(x)."""
    rng = np.random.default_rng(5)
    n = 3000
    df = pd.DataFrame({
        "y": rng.normal(size=n),
        "x": rng.uniform(0.5, 3, n),
        "f": rng.choice(["lo", "mid", "hi", "zz"], n),
        "a": rng.choice(["A", "B", "C"], n),
        "b": rng.integers(0, 40, n),
        "g": rng.integers(0, 60, n).astype(str).astype(object),
        "o": pd.Categorical(rng.choice(["s", "m", "l"], n), categories=["s", "m", "l"], ordered=True),
    })
    df["x2"] = 2 * df["x"]
    df.loc[rng.choice(n, 50, replace=False), "x"] = np.nan
    df.loc[rng.choice(n, 30, replace=False), "g"] = None
    df.loc[df.index[-5:], "f"] = "zlast"
    first = df.index[:400]
    df.loc[first, "f"] = df.loc[first, "f"].replace("hi", "lo")
    df["y"] += 0.05 * df["b"] + 0.3 * (df["f"] == "lo") + 0.4 * rng.normal(size=60)[rng.integers(0, 60, n)]
    return df


AWKWARD_CUTS = [400, 410, 1500, 1501, 2200, 2990]


@pytest.mark.parametrize("formula", [
    "y ~ log(x) + f + o + (1 + x | g) + (1 | a:b)",
    "y ~ x + f + (1 | g) + (1 | a/b)",
    "y ~ factor(b) + x + (1 | g)",  # levels of a numeric column made a factor: found in pass 1
])
def test_levels_and_missing_values(awkward, formula):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f0 = bm.lmm(formula, awkward).fit()
        with dask.config.set(scheduler="synchronous"):
            model = bm.lmm(formula, uneven(awkward, AWKWARD_CUTS))
            f1 = model.fit()
    compare(f0, model, f1)
    assert f1.n_dropped == f0.n_dropped > 0


def test_rank_deficient_columns_dropped_like_in_memory(awkward):
    formula = "y ~ x + x2 + f + (1 | g)"
    with pytest.warns(bm.RankDeficiencyWarning) as w0:
        f0 = bm.lmm(formula, awkward).fit()
    with dask.config.set(scheduler="synchronous"), pytest.warns(bm.RankDeficiencyWarning) as w1:
        model = bm.lmm(formula, uneven(awkward, AWKWARD_CUTS))
        f1 = model.fit()
    msg = lambda ws: [str(w.message) for w in ws if issubclass(w.category, bm.RankDeficiencyWarning)]  # noqa: E731
    assert msg(w1) == msg(w0)
    assert model.design.dropped_fixed == f0.model.design.dropped_fixed == ["x2"]
    compare(f0, model, f1)
    with dask.config.set(scheduler="synchronous"):
        fitted = f1.fitted_dask().compute()
    assert rel(fitted.to_numpy(), f0.fittedvalues) < 1e-5


def test_parquet_round_trip(tmp_path, slope_data):
    df = slope_data.copy()
    df["part"] = np.repeat(np.arange(5), -(-len(df) // 5))[: len(df)]
    df.to_parquet(tmp_path / "data", partition_cols=["part"], index=False)
    ddf = dd.read_parquet(tmp_path / "data")
    f0 = bm.lmm(SLOPE, df).fit()
    with dask.config.set(scheduler="synchronous"):
        model = bm.lmm(SLOPE, ddf)
        f1 = model.fit()
        f1.write_fitted(tmp_path / "fitted")
    compare(f0, model, f1)
    out = pd.read_parquet(tmp_path / "fitted")
    assert list(out.columns) == ["fitted", "resid"] and len(out) == f0.nobs
    assert "Number of obs" in f1.summary()


def test_errors_from_global_counts_and_metadata(awkward):
    ddf = uneven(awkward, AWKWARD_CUTS)
    with dask.config.set(scheduler="synchronous"):
        with pytest.raises(bm.MissingColumnError, match="did you mean 'x'"):
            bm.lmm("y ~ xx + (1 | g)", ddf)
        # checks on the global counts: 12 levels in 12 rows (each partition alone looks the same)
        ids = pd.DataFrame({"y": np.arange(12.0), "id": np.arange(12)})
        with pytest.raises(bm.IdentifiabilityError):
            bm.lmm("y ~ 1 + (1 | id)", uneven(ids, [4, 8]))
        with pytest.raises(NotImplementedError, match="scale"):
            bm.lmm("y ~ scale(x) + (1 | g)", ddf)
        with pytest.raises(NotImplementedError, match="poly"):
            bm.lmm("y ~ poly(x, 2) + (1 | g)", ddf)
        with pytest.raises(bm.EmptyDataError):
            bm.lmm("y ~ x + (1 | g)", uneven(awkward.assign(x=np.nan), AWKWARD_CUTS))
        bad = awkward.copy()
        bad.loc[bad.index[2500], "x"] = np.inf
        with pytest.raises(bm.NonFiniteValueError):
            bm.lmm("y ~ x + (1 | g)", uneven(bad, AWKWARD_CUTS))


def test_rows_are_not_collected(slope_data):
    with dask.config.set(scheduler="synchronous"):
        f1 = bm.lmm(SLOPE, seven(slope_data)).fit()
    for name in ("fittedvalues", "resid", "fitted_marginal"):
        with pytest.raises(AttributeError, match="fitted_dask"):
            getattr(f1, name)
    with pytest.raises(AttributeError, match="fitted_dask"):
        f1.model.design.X


def test_cli_fit_dask(tmp_path, slope_data):
    distributed = pytest.importorskip("distributed")
    import json

    from bigmixed.cli import main

    data = tmp_path / "pq"
    data.mkdir()
    for i, idx in enumerate(np.array_split(np.arange(len(slope_data)), 3)):
        slope_data.iloc[idx].to_parquet(data / f"part-{i}.parquet")
    out = tmp_path / "fit.json"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=":0") as cluster:
        code = main(["fit", "--data", str(data), "--formula", SLOPE, "--dask",
                     cluster.scheduler_address, "--out", str(out), "-q"])
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["input"]["partitions"] == 3
    f0 = bm.lmm(SLOPE, slope_data).fit()
    est = [r["estimate"] for r in doc["fixed_effects"]]
    assert rel(est, f0.beta) < 1e-5
