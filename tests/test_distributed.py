"""bigmixed.distributed: fitting a Dask DataFrame gives the in-memory fit.

The cross-products are sums carried in double-double and rounded once (bigmixed.compensated),
so they do not depend on how the rows are split into partitions: they equal the in-memory
ones bit for bit (up to a last-bit difference with probability of order n eps per entry), and
so does every estimate, since the fit is a deterministic function of them. The state of
scale(), center() and poly() is found over all partitions with the same sums. Compared here
(relative to the largest reference value, see `rel`):

* the reduced cross-products (Z'Z, Z'[X y], [X y]'[X y], crossed co-occurrence blocks): 1e-15;
* at the same theta (the in-memory optimum), every estimate that is a function of the
  cross-products -- objective, beta, SEs, sigma, BLUPs: 1e-10;
* the two independent fits -- theta, beta, SEs, sigma, objective, BLUPs, fitted values: 1e-10
  (without the double-double sums the optimizers' end points differed by ~1e-9 in theta: the
  objective is flat at the optimum, and BOBYQA + the Newton polish follow its rounding).
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
from bigmixed.distributed.plan import is_dask_dataframe
from bigmixed.results.fit import LMMResults  # noqa: E402

SLOPE = "mobility ~ age + sex + time + (1 + time | doctor)"
CROSSED = "mobility ~ age + wbc + (1 | doctor) + (1 | hospital)"
TRANSFORMED = "mobility ~ scale(age) + poly(time, 2) + sex + (1 + time | doctor)"


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
    assert rel(c1.gram, c0.gram) < 1e-15
    for a, b in zip(c1.zz, c0.zz):
        assert rel(a, b) < 1e-15
    for a, b in zip(c1.zxy, c0.zxy):
        assert rel(a, b) < 1e-15
    assert len(c1.pairs) == len(c0.pairs)
    for p1, p0 in zip(c1.pairs, c0.pairs):
        assert np.array_equal(p1.row_levels, p0.row_levels)
        assert np.array_equal(p1.col_levels, p0.col_levels)
        assert rel(p1.blocks, p0.blocks) < 1e-15

    # same theta -> same estimates
    r1 = model.results_at(f0.optimizer_params)
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
    same_estimates(f0, f1)
    assert f1.nobs == f0.nobs and f1.n_dropped == f0.n_dropped
    assert f1.fixed_names == f0.fixed_names
    assert f1.n_groups == f0.n_groups
    for k, v in f1.ranef().items():
        assert v.index.equals(re0[k].index)
        assert rel(v.to_numpy(), re0[k].to_numpy()) < 1e-10


def same_estimates(f0, f1, tol=1e-10):
    """theta, beta, sigma, SEs and the objective of two fits agree to `tol` (relative)."""
    for name in ("theta", "beta", "sigma", "bse", "objective"):
        d = rel(getattr(f1, name), getattr(f0, name))
        assert d < tol, f"{name}: relative difference {d:.2e}"


@pytest.mark.parametrize("formula,data", [(SLOPE, "slope_data"), (CROSSED, "crossed_data")])
def test_synchronous_matches_in_memory(formula, data, request):
    df = request.getfixturevalue(data)
    f0 = bm.lmm(formula, df).fit()
    ddf = seven(df)
    assert ddf.npartitions == 7 and is_dask_dataframe(ddf) and not is_dask_dataframe(df)
    with dask.config.set(scheduler="synchronous"):
        model = bm.lmm(formula, data=ddf)
        assert type(model) is bm.LinearMixedModel and model.rows.kind == "dask"
        f1 = model.fit()
    assert type(f1) is LMMResults and f1.rows.kind == "dask"
    compare(f0, model, f1)
    # fitted values and residuals per partition, dropped rows absent, same index
    with dask.config.set(scheduler="synchronous"):
        fitted = f1.fitted_dask().compute()
        resid = f1.resid_dask().compute()
        marginal = f1.fitted_dask(level="population").compute()
    assert fitted.index.equals(f0.design.row_index)
    fitted_same = model.results_at(f0.optimizer_params)  # same theta: fitted values to rounding
    with dask.config.set(scheduler="synchronous"):
        fs = fitted_same.fitted_dask().compute().to_numpy()
    assert rel(fs, f0.fittedvalues) < 1e-10
    assert rel(fitted.to_numpy(), f0.fittedvalues) < 1e-10
    assert rel(resid.to_numpy() + fitted.to_numpy(), f0.design.y) < 1e-14
    assert rel(marginal.to_numpy(), f0.fitted_marginal) < 1e-10


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
        mt2 = bm.lmm(TRANSFORMED, ddf_s)  # pass 0 on the cluster too
    for a, b in ((ms, ms2), (mc, mc2)):
        ca, cb = a.crossprods, b.crossprods
        assert np.array_equal(ca.gram, cb.gram)
        assert all(np.array_equal(x, y) for x, y in zip(ca.zz, cb.zz))
        assert all(np.array_equal(x, y) for x, y in zip(ca.zxy, cb.zxy))
        assert all(np.array_equal(x.blocks, y.blocks) for x, y in zip(ca.pairs, cb.pairs))
    f0 = bm.lmm(CROSSED, crossed_data).fit()
    compare(f0, mc2, f2)
    assert fitted.index.equals(f0.design.row_index)
    for formula, model in ((SLOPE, ms2), (TRANSFORMED, mt2)):
        f0 = bm.lmm(formula, slope_data).fit()
        compare(f0, model, model.fit())


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
    assert model.design.dropped_fixed == f0.design.dropped_fixed == ["x2"]
    compare(f0, model, f1)
    with dask.config.set(scheduler="synchronous"):
        fitted = f1.fitted_dask().compute()
    assert rel(fitted.to_numpy(), f0.fittedvalues) < 1e-10


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
        with pytest.raises(NotImplementedError, match="bs"):
            bm.lmm("y ~ bs(x2, df=4) + (1 | g)", ddf)  # splines: knots from quantiles
        with pytest.raises(NotImplementedError, match="lag"):
            bm.lmm("y ~ lag(x2) + (1 | g)", ddf)
        with pytest.raises(bm.DesignError, match="missing values are not allowed in 'poly'"):
            bm.lmm("y ~ poly(x, 2) + (1 | g)", ddf)  # as in memory: x has missing values
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
        f1.rows.X


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
    assert rel(est, f0.beta) < 1e-10


# ======================================================================================
# 1e-10 (in fact bit-for-bit) agreement, several models, REML and ML, partition counts
# ======================================================================================

MODELS = {
    "intercept": ("mobility ~ age + sex + time + (1 | doctor)", "slope_data"),
    "slope": (SLOPE, "slope_data"),
    "crossed": (CROSSED, "crossed_data"),
    "nested": ("mobility ~ age + wbc + (1 | hospital/doctor)", "crossed_data"),
    # several factors with a random slope: co-occurrence blocks that are not counts
    "nested_slope": ("mobility ~ age + time + (1 + time | doctor) + (1 | patient)", "slope_data"),
}


def even(df: pd.DataFrame, k: int) -> "dd.DataFrame":
    """k partitions of (nearly) equal size."""
    return uneven(df, list(np.linspace(0, len(df), k + 1).astype(int)[1:-1]))


@pytest.fixture(scope="module")
def in_memory_fits(slope_data, crossed_data):
    cache = {}

    def get(model, reml):
        if (model, reml) not in cache:
            formula, data = MODELS[model]
            df = {"slope_data": slope_data, "crossed_data": crossed_data}[data]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cache[model, reml] = (df, bm.lmm(formula, df, reml=reml).fit())
        return cache[model, reml]

    return get


@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
@pytest.mark.parametrize("model", list(MODELS))
def test_estimates_equal_in_memory_to_1e10(in_memory_fits, model, reml):
    df, f0 = in_memory_fits(model, reml)
    formula = MODELS[model][0]
    for ddf in (even(df, 2), even(df, 13), seven(df)):
        with warnings.catch_warnings(), dask.config.set(scheduler="synchronous"):
            warnings.simplefilter("ignore")
            f1 = bm.lmm(formula, ddf, reml=reml).fit()
        same_estimates(f0, f1)
        for k, v in f1.ranef().items():
            assert rel(v.to_numpy(), f0.ranef()[k].to_numpy()) < 1e-10


def test_in_memory_row_order_and_chunks_do_not_matter(slope_data):
    """The same sums make the in-memory fit independent of the row order too."""
    perm = np.random.default_rng(1).permutation(len(slope_data))
    f0 = bm.lmm(SLOPE, slope_data).fit()
    f1 = bm.lmm(SLOPE, slope_data.iloc[perm]).fit()
    same_estimates(f0, f1)


# ======================================================================================
# scale(), center(), poly(): state over all partitions
# ======================================================================================

TRANSFORMS = [
    "y ~ scale(x) + poly(z, 2) + f + (1 | g)",
    "y ~ scale(log(x), center=False) + poly(scale(z), 3) + (1 + center(z) | g)",
    "y ~ poly(z, 2, raw=True) + scale(x):f + I(scale(z)**2) + (1 + scale(x) | g) + (1 | a:b)",
]


@pytest.fixture(scope="module")
def transform_data(awkward):
    """awkward with a complete column z (poly refuses missing values) and a response missing
    where x is not: those rows are dropped after the transforms' state is found, which uses
    every row where x is known (R's model.frame)."""
    df = awkward.copy()
    rng = np.random.default_rng(8)
    df["z"] = rng.normal(size=len(df)) * 3 + 10
    df["y"] = df["y"] + 0.2 * df["z"] - 0.05 * (df["z"] - 10) ** 2
    df.loc[df.index[rng.choice(len(df), 40, replace=False)], "y"] = np.nan
    return df


def transform_state(design):
    """The transforms' state of a (Dask) design, every spec (all share it)."""
    states = [design.fixed_spec.matrix.model_spec.transform_state]
    states += [ts.matrix.model_spec.transform_state for ts in design.term_specs
               if ts.matrix.model_spec is not None]
    assert all(repr(sorted(s.items())) == repr(sorted(states[0].items())) for s in states)
    return states[0]


@pytest.mark.parametrize("formula", TRANSFORMS)
def test_data_dependent_transforms(transform_data, formula):
    df = transform_data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f0 = bm.lmm(formula, df).fit()
        with dask.config.set(scheduler="synchronous"):
            model = bm.lmm(formula, uneven(df, AWKWARD_CUTS))
            f1 = model.fit()
            fitted = f1.fitted_dask().compute()
    s0, s1 = transform_state(f0.design), transform_state(model.design)
    assert s0 and repr(sorted(s1.items())) == repr(sorted(s0.items()))  # bit for bit
    assert f1.fixed_names == f0.fixed_names and f1.nobs == f0.nobs
    compare(f0, model, f1)
    assert rel(fitted.to_numpy(), f0.fittedvalues) < 1e-10
    new = df.dropna().iloc[:50]
    assert rel(f1.predict(new), f0.predict(new)) < 1e-10


def test_transform_state_uses_every_row_once(transform_data):
    """One partition per row, empty partitions, and the rows in another order: same state."""
    df = transform_data.iloc[:300]
    formula = "y ~ scale(x) + poly(z, 2) + (1 | a)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f0 = bm.lmm(formula, df).fit()
        perm = np.random.default_rng(3).permutation(len(df))
        cuts = [0, 0, 1, 2, 150, 150, 299]
        with dask.config.set(scheduler="synchronous"):
            m1 = bm.lmm(formula, uneven(df, cuts))
            m2 = bm.lmm(formula, even(df.iloc[perm], 4))
    s0 = transform_state(f0.design)
    for m in (m1, m2):
        assert repr(sorted(transform_state(m.design).items())) == repr(sorted(s0.items()))
    same_estimates(f0, m1.fit())


def test_large_crossed_model_takes_the_quasi_newton_path_and_matches_in_memory():
    """A crossed model with a dense block of 305 columns is fitted by quasi-Newton steps on the
    analytic gradient, from Dask data as in memory, with the same numbers."""
    g = generate_hdp(500, seed=13, n_hospitals=300, mean_patients=12)
    df = g.data
    formula = "mobility ~ age + (1 | doctor) + (1 | hospital)"
    f0 = bm.lmm(formula, df).fit()
    assert f0.optimizer.method.startswith("quasi-Newton")
    with dask.config.set(scheduler="synchronous"):
        f1 = bm.lmm(formula, data=seven(df)).fit()
    assert f1.optimizer.method == f0.optimizer.method
    same_estimates(f0, f1)
