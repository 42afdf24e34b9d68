"""fit_many / iter_fits: the same numbers as one bm.lmm(...).fit() per response, failures
isolated, missing values per response, tidy tables."""
import warnings

import numpy as np
import pandas as pd
import pytest
from bigmixed.data_gen import generate_hdp

import bigmixed as bm
from bigmixed.fitting.batch import _Batch
from bigmixed.crossprods.crossprod import CrossProducts

RHS = "~ age + sex + wbc + (1 | doctor)"


@pytest.fixture(scope="module")
def data():
    df = generate_hdp(n_doctors=40, seed=3).data.copy()
    rng = np.random.default_rng(5)
    codes = df["doctor"].cat.codes.to_numpy()
    n = len(df)
    for k in range(6):
        u = rng.normal(size=40) * (0.3 * k)  # k = 0: no doctor effect (singular fit likely)
        df[f"y{k}"] = 1 + 0.02 * df["age"] + u[codes] + rng.normal(size=n)
    df.loc[df.index[rng.choice(n, 30, replace=False)], "y2"] = np.nan
    df["y3"] = df["y3"].where(df["y2"].notna())  # same missing pattern as y2: one shared design
    df.loc[df.index[:7], "y4"] = np.nan  # its own pattern
    df["text"] = "a"
    df["inf"] = df["y1"]
    df.loc[df.index[3], "inf"] = np.inf
    df["empty"] = np.nan
    return df


def one_fit(name, df, rhs=RHS, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bm.lmm(f"{name} {rhs}", df, **kw).fit()


def assert_same_fit(a, b):
    """Bit-identical estimates (the batch shares the design, not the arithmetic)."""
    assert a.objective == b.objective
    assert np.array_equal(a.theta, b.theta)
    assert np.array_equal(a.beta, b.beta)
    assert np.array_equal(a.vcov, b.vcov)
    assert a.sigma == b.sigma
    assert a.nobs == b.nobs and a.n_dropped == b.n_dropped
    assert a.fixed_names == b.fixed_names
    for g, df in a.ranef().items():
        pd.testing.assert_frame_equal(df, b.ranef()[g])
    assert [type(w) for w in a.warnings] == [type(w) for w in b.warnings]


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_equals_individual_fits(data, n_jobs):
    names = ["y0", "y1", "y2", "y3", "y4", "y5"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bm.fit_many(RHS, data, responses=names, n_jobs=n_jobs)
    assert res.responses == names and not res.failed
    for name in names:
        assert_same_fit(res[name], one_fit(name, data))
        assert res[name].formula == f"{name} {RHS}"
        assert res[name].design.response == name
    st = res.statistics.set_index("response")
    assert st.loc["y2", "nobs"] == len(data) - 30 and st.loc["y4", "n_dropped"] == 7
    # fitted values and residuals use the response's own y
    f = res["y4"]
    np.testing.assert_array_equal(f.resid, one_fit("y4", data).resid)


def test_crossed_design_equals_individual_fits():
    """Two grouping factors: the CHOLMOD path (symbolic analysis shared, factor copied)."""
    df = generate_hdp(n_doctors=30, seed=4, mean_patients=20, n_hospitals=6, hospital_sd=0.7).data.copy()
    rng = np.random.default_rng(1)
    for k in range(3):
        df[f"z{k}"] = df["mobility"] + rng.normal(size=len(df))
    df.loc[df.index[:5], "z2"] = np.nan
    rhs = "~ age + (1 | doctor) + (1 | hospital)"
    res = bm.fit_many(rhs, df, responses=["z0", "z1", "z2"], n_jobs=2)
    for name in ["z0", "z1", "z2"]:
        a, b = res[name], one_fit(name, df, rhs)
        assert_same_fit(a, b)
        for g, cv in a.conditional_variances().items():
            np.testing.assert_array_equal(cv, b.conditional_variances()[g])


def test_response_crossproducts_are_exact(data):
    """The y-column parts computed per response equal a full pass over [X y]."""
    batch = _Batch(RHS, data, ["y1"], reml=True, solver="auto", fit_kwargs={})
    st = batch.groups[None].state
    y = data["y1"].to_numpy(dtype=float)[st.rows]
    cp = st.model.crossprods.with_response(st.design.X, y, st.model.structure)
    ref = CrossProducts.compute(st.design.X, y, st.model.structure)
    assert np.array_equal(cp.gram, ref.gram)
    for a, b in zip(cp.zxy, ref.zxy):
        assert np.array_equal(a, b)
    assert cp.zz[0] is st.model.crossprods.zz[0]  # y-free parts shared, not recomputed


def test_designs_per_missing_pattern(data):
    batch = _Batch(RHS, data, ["y0", "y1", "y2", "y3", "y4"], reml=True, solver="auto", fit_kwargs={})
    # complete responses share the base design; y2 and y3 share one; y4 has its own
    assert len(batch.groups) == 3
    assert batch.group_of[0] is batch.group_of[1]
    assert batch.group_of[2] is batch.group_of[3]
    assert batch.group_of[4] is not batch.group_of[2]


def test_failures_are_isolated(data):
    names = ["y1", "text", "inf", "empty", "y5"]
    res = bm.fit_many(RHS, data, responses=names, n_jobs=2)
    st = res.statistics.set_index("response")
    assert list(st["status"]) == ["ok", "error", "error", "error", "ok"]
    assert st.loc["text", "error_type"] == "ResponseTypeError"
    assert st.loc["inf", "error_type"] == "NonFiniteValueError"
    assert st.loc["empty", "error_type"] == "EmptyDataError"
    assert "'text'" in st.loc["text", "error"]
    assert "'empty'" in st.loc["empty", "error"] and "__" not in st.loc["empty", "error"]
    assert_same_fit(res["y5"], one_fit("y5", data))
    with pytest.raises(KeyError, match="failed"):
        res["text"]
    assert [r.response for r in res.failed] == ["text", "inf", "empty"]


def test_stream_order_and_records(data):
    names = ["y5", "text", "y1", "y0"]
    got = list(bm.iter_fits(RHS, data, names, n_jobs=2))
    assert [r.response for r in got] == names and [r.index for r in got] == [0, 1, 2, 3]
    unordered = list(bm.iter_fits(RHS, data, names, n_jobs=2, ordered=False))
    assert sorted(r.response for r in unordered) == sorted(names)
    rec = got[0].to_record()
    assert rec["status"] == "ok" and rec["response"] == "y5"
    assert rec["fixed_effects"][1]["term"] == "age"
    assert rec["fixed_effects"][1]["estimate"] == got[0].fit.beta[1]
    err = got[1].to_record()
    assert err["status"] == "error" and err["error"]["type"] == "ResponseTypeError"
    import json

    json.dumps(rec, allow_nan=False)  # strict JSON


def test_shared_problems_raise_before_fitting(data):
    with pytest.raises(bm.MissingColumnError, match="did you mean 'age'"):
        bm.iter_fits("~ agee + (1 | doctor)", data, ["y1"])
    with pytest.raises(bm.MissingColumnError, match="'y9'"):
        bm.fit_many(RHS, data, ["y1", "y9"])
    with pytest.raises(bm.FormulaSyntaxError, match="without a response"):
        bm.fit_many("y1 " + RHS, data, ["y2"])
    with pytest.raises(bm.FormulaSyntaxError, match="needs `responses`"):
        bm.fit_many(RHS, data)
    with pytest.raises(bm.FormulaSyntaxError):
        bm.fit_many("~ age + (1 | doctor", data, ["y1"])


def test_two_sided_formula_and_glob(data):
    res = bm.fit_many("y1 " + RHS, data)
    assert res.responses == ["y1"]
    assert_same_fit(res["y1"], one_fit("y1", data))
    g = bm.fit_many(RHS, data, responses="y[0-2]", n_jobs=1)
    assert g.responses == ["y0", "y1", "y2"]


def test_tidy_tables_match_the_fits(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bm.fit_many(RHS, data, responses=["y1", "y5"], keep_fits=True)
    fe = res.fixed_effects
    for name in ["y1", "y5"]:
        f = res[name]
        mine = fe[fe.response == name].drop(columns="response").reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, f.fixed_effects)
        vc = res.variance_components
        mine = vc[vc.response == name].drop(columns="response").reset_index(drop=True)
        want = f.variance_components
        np.testing.assert_array_equal(mine["variance"].to_numpy(), want["variance"].to_numpy())
        np.testing.assert_array_equal(mine["sd"].to_numpy(), want["sd"].to_numpy())
    td = res.tidy()
    assert set(td.effect) == {"fixed", "ran_pars"}
    sd = td[(td.response == "y1") & (td.term == "sd__Observation")].estimate.item()
    assert sd == res["y1"].sigma
    rf = res.ranef()
    assert len(rf) == 2 * 40 and list(rf.columns) == ["response", "group", "level", "term", "estimate", "cond_sd"]
    slim = bm.fit_many(RHS, data, responses=["y1"], keep_fits=False)
    pd.testing.assert_frame_equal(slim.fixed_effects, fe[fe.response == "y1"].reset_index(drop=True))
    with pytest.raises(KeyError, match="keep_fits"):
        slim["y1"]


def test_fit_many_summarises_warnings(data):
    df = data.copy()
    df["flat"] = np.random.default_rng(0).normal(size=len(df))  # no doctor effect
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = bm.fit_many(RHS, df, responses=["flat", "y5"], n_jobs=1)
    assert res.statistics.set_index("response").loc["flat", "singular"]
    ours = [w for w in caught if issubclass(w.category, bm.BigmixedWarning)]
    assert len(ours) == 1 and "1 singular" in str(ours[0].message)
