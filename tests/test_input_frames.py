"""Polars DataFrames and pyarrow Tables as input (issue #16 item 6): only the columns the model
names are converted to pandas; fits are bit-identical to the pandas fits."""
import numpy as np
import pandas as pd
import pytest

import bigmixed as bm
from bigmixed.spec.checks import as_pandas, used_columns

from lme4_refs import load_data

pa = pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def frame():
    df = load_data("slope.csv")
    df = df.assign(doctor=df["doctor"].astype(str), unused=np.arange(len(df)),
                   y2=df["mobility"] * 2 + 1)
    return df


def _same_fit(a, b):
    assert a.objective == b.objective
    np.testing.assert_array_equal(a.theta, b.theta)
    np.testing.assert_array_equal(a.beta, b.beta)
    np.testing.assert_array_equal(a.vcov, b.vcov)


FORMULA = "mobility ~ age + sex + time + (time | doctor)"


def test_used_columns_only_names():
    cols = ["y", "x", "x2", "g", "my var", "unused", "marker_1", "marker_2"]
    assert used_columns(cols, "y ~ x + log(x2) + `my var` + (1 | g)") == ["y", "x", "x2", "g", "my var"]
    assert used_columns(cols, "~ x + (1 | g)", "marker_*") == ["x", "g", "marker_1", "marker_2"]
    assert used_columns(cols, "y ~ x2 + (1|g)") == ["y", "x2", "g"]


def test_pyarrow_table(frame):
    ref = bm.lmm(FORMULA, frame).fit()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    conv = as_pandas(table, FORMULA)
    assert sorted(conv.columns) == sorted(["mobility", "age", "sex", "time", "doctor"])
    _same_fit(ref, bm.lmm(FORMULA, table).fit())
    # predictions from an Arrow table
    np.testing.assert_array_equal(ref.predict(table.slice(0, 7)), ref.predict(frame.iloc[:7]))


def test_polars_frame(frame):
    pl = pytest.importorskip("polars")
    ref = bm.lmm(FORMULA, frame).fit()
    pdf = pl.from_pandas(frame)
    conv = as_pandas(pdf, FORMULA)
    assert "unused" not in conv.columns and "y2" not in conv.columns
    _same_fit(ref, bm.lmm(FORMULA, pdf).fit())
    np.testing.assert_array_equal(ref.predict(pdf.head(9), level="population"),
                                  ref.predict(frame.iloc[:9], level="population"))


def test_polars_categorical_levels_as_pandas(frame):
    pl = pytest.importorskip("polars")
    f = "mobility ~ sex + (1 | doctor)"
    ref = bm.lmm(f, frame).fit()
    pdf = pl.from_pandas(frame).with_columns(pl.col("doctor").cast(pl.Categorical))
    fit = bm.lmm(f, pdf).fit()
    assert fit.objective == pytest.approx(ref.objective, rel=1e-12)
    assert fit.fixed_names == ref.fixed_names


def test_fit_many_and_glmm_take_arrow_and_polars(frame):
    pl = pytest.importorskip("polars")
    ref = bm.fit_many("~ age + (1 | doctor)", frame, ["mobility", "y2"], n_jobs=1)
    for data in (pa.Table.from_pandas(frame, preserve_index=False), pl.from_pandas(frame)):
        got = bm.fit_many("~ age + (1 | doctor)", data, ["mobility", "y2"], n_jobs=1)
        pd.testing.assert_frame_equal(got.fixed_effects, ref.fixed_effects)
        got = bm.fit_many("~ age + (1 | doctor)", data, "mobil*", n_jobs=1)
        assert list(got.statistics["response"]) == ["mobility"]
    binary = frame.assign(b=(frame["mobility"] > frame["mobility"].median()).astype(int))
    g0 = bm.glmm("b ~ age + (1 | doctor)", binary, family="binomial").fit()
    g1 = bm.glmm("b ~ age + (1 | doctor)", pl.from_pandas(binary), family="binomial").fit()
    assert g1.objective == g0.objective
    np.testing.assert_array_equal(g1.beta, g0.beta)


def test_other_inputs_still_rejected():
    with pytest.raises(bm.DataTypeError, match="DataFrame"):
        bm.lmm("y ~ x + (1 | g)", {"y": [1, 2], "x": [1, 2], "g": ["a", "b"]})


def test_polars_lazy_frame_collects_only_the_used_columns(frame):
    pl = pytest.importorskip("polars")
    ref = bm.lmm(FORMULA, frame).fit()
    lazy = pl.from_pandas(frame).lazy()
    conv = as_pandas(lazy, FORMULA)
    assert sorted(conv.columns) == sorted(["mobility", "age", "sex", "time", "doctor"])
    _same_fit(ref, bm.lmm(FORMULA, lazy).fit())
