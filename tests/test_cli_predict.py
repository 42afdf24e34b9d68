"""`bigmixed predict`: predictions of a saved model on new data, equal to fit.predict /
fit.predict_interval, through the same output machinery as `bigmixed fit`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

import bigmixed as bm
from bigmixed import cli
from bigmixed.data_gen import generate_hdp

FORMULA = "mobility ~ age + sex + (1 + age | doctor)"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("predict")
    df = generate_hdp(n_doctors=40, seed=7).data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bm.lmm(FORMULA, df).fit()
    fit.save(d / "m.bmfit")
    new = generate_hdp(n_doctors=50, seed=8).data.sample(200, random_state=0).reset_index(drop=True)
    new["id"] = [f"p{i:04d}" for i in range(len(new))]
    assert (~new["doctor"].isin(df["doctor"].unique())).any()  # some doctors not seen in the fit
    new.to_parquet(d / "new.parquet")
    new.to_csv(d / "new.csv", index=False)
    new.drop(columns=["doctor"]).to_parquet(d / "no_groups.parquet")
    return d, fit, new


def run(*args):
    return cli.main([str(a) for a in args])


def test_conditional_predictions_equal_fit_predict(setup, tmp_path):
    d, fit, new = setup
    out = tmp_path / "pred.parquet"
    assert run("predict", "--model", d / "m.bmfit", "--data", d / "new.parquet", "--out", out, "-q") == 0
    got = pd.read_parquet(out)
    assert list(got.columns) == ["row", "fit"]
    np.testing.assert_array_equal(got["row"], np.arange(len(new)))
    np.testing.assert_allclose(got["fit"], fit.predict(new), rtol=1e-13, atol=0)
    loaded = bm.load(d / "m.bmfit")
    np.testing.assert_array_equal(got["fit"], loaded.predict(new))


@pytest.mark.parametrize("interval", ["prediction", "confidence"])
@pytest.mark.parametrize("level", ["conditional", "population"])
def test_intervals_equal_fit_predict_interval(setup, tmp_path, interval, level):
    d, fit, new = setup
    out = tmp_path / "pred.csv"
    assert run("predict", "--model", d / "m.bmfit", "--data", d / "new.csv", "--out", out, "--level", level,
               "--interval", interval, "--coverage", "0.9", "--keep", "id", "-q") == 0
    got = pd.read_csv(out)
    assert list(got.columns) == ["row", "id", "fit", "se", "lower", "upper"]
    assert list(got["id"]) == list(new["id"])
    want = fit.predict_interval(new, level=level, interval=interval, coverage=0.9)
    for c in ("fit", "se", "lower", "upper"):
        np.testing.assert_allclose(got[c], want[c], rtol=1e-12, err_msg=c)
    assert (got["lower"] < got["fit"]).all() and (got["fit"] < got["upper"]).all()


def test_population_level_needs_no_grouping_columns(setup, tmp_path):
    d, fit, new = setup
    out = tmp_path / "pop.json"
    assert run("predict", "--model", d / "m.bmfit", "--data", d / "no_groups.parquet", "--out", out,
               "--level", "population", "--interval", "-q") == 0
    doc = json.loads(out.read_text())
    assert doc["format"] == cli.PREDICT_DOCUMENT and doc["level"] == "population"
    assert "doctor" not in doc["input"]["columns_read"]
    want = fit.predict_interval(new, level="population")
    np.testing.assert_allclose([r["fit"] for r in doc["predictions"]], fit.predict(new, level="population"),
                               rtol=1e-13)
    np.testing.assert_allclose([r["upper"] for r in doc["predictions"]], want["upper"], rtol=1e-12)
    # conditional predictions do need them: a column error (exit 4) naming the column, no file
    out2 = tmp_path / "cond.json"
    assert run("predict", "--model", d / "m.bmfit", "--data", d / "no_groups.parquet", "--out", out2,
               "-q") == cli.EXIT_MODEL
    assert not out2.exists()


def test_unseen_levels(setup, tmp_path):
    d, fit, new = setup
    out = tmp_path / "p.ndjson"
    assert run("predict", "--model", d / "m.bmfit", "--data", d / "new.parquet", "--out", out,
               "--unseen", "nan", "-q") == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert {x["format"] for x in lines} == {cli.PREDICT_NDJSON}
    want = fit.predict(new, unseen="nan")
    got = np.array([np.nan if x["fit"] is None else x["fit"] for x in lines])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(want).any()
    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=1e-13)
    assert run("predict", "--model", d / "m.bmfit", "--data", d / "new.parquet", "--out", out,
               "--unseen", "error", "-q") == cli.EXIT_MODEL
    assert out.read_text().count("\n") == len(new)  # the earlier output is left untouched


def test_errors_and_usage(setup, tmp_path):
    d, _, _ = setup
    base = ["predict", "--model", d / "m.bmfit", "--data", d / "new.parquet", "-q"]
    assert run(*base, "--out", tmp_path / "p.parquet", "--format", "csv") == cli.EXIT_USAGE
    assert run(*base, "--out", d / "new.parquet") == cli.EXIT_USAGE
    assert run(*base, "--out", d / "m.bmfit") == cli.EXIT_USAGE
    assert run(*base, "--out", tmp_path / "p.csv", "--interval", "--coverage", "1.5") == cli.EXIT_USAGE
    assert run(*base, "--out", tmp_path / "p.csv", "--coverage", "0.9") == cli.EXIT_USAGE
    assert run(*base, "--out", tmp_path / "p.csv", "--keep", "nope") == cli.EXIT_USAGE
    assert run(*base, "--out", tmp_path / "p.csv", "--keep", "id,fit") == cli.EXIT_USAGE
    assert run(*base, "--out", tmp_path / "p.csv", "--level", "marginal") == cli.EXIT_USAGE
    assert run("predict", "--model", tmp_path / "none.bmfit", "--data", d / "new.parquet",
               "--out", tmp_path / "p.csv", "-q") == cli.EXIT_DATA
    (tmp_path / "junk.bmfit").write_text("not a model")
    assert run("predict", "--model", tmp_path / "junk.bmfit", "--data", d / "new.parquet",
               "--out", tmp_path / "p.csv", "-q") == cli.EXIT_DATA
    assert run("predict", "--model", d / "m.bmfit", "--data", tmp_path / "none.csv",
               "--out", tmp_path / "p.csv", "-q") == cli.EXIT_DATA
    assert run(*base, "--out", tmp_path) == cli.EXIT_OUTPUT  # a directory
    assert sorted(os.listdir(tmp_path)) == ["junk.bmfit"]  # no output, no temporary file


def test_subprocess_to_stdout_and_atomic_file(setup, tmp_path):
    d, fit, new = setup
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    r = subprocess.run([sys.executable, "-m", "bigmixed", "predict", "--model", str(d / "m.bmfit"),
                        "--data", str(d / "new.csv"), "--format", "csv", "--level", "population", "-q"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    got = pd.read_csv(__import__("io").StringIO(r.stdout))
    np.testing.assert_allclose(got["fit"], fit.predict(new, level="population"), rtol=1e-13)
    target = tmp_path / "pred.parquet"
    target.write_bytes(b"old")
    r = subprocess.run([sys.executable, "-m", "bigmixed", "predict", "--model", str(d / "m.bmfit"),
                        "--data", str(d / "new.parquet"), "--out", str(target), "--interval",
                        "--log-format", "json"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path)) == ["pred.parquet"]
    got = pd.read_parquet(target)
    np.testing.assert_allclose(got["se"], fit.predict_interval(new)["se"], rtol=1e-12)
    logs = [json.loads(x) for x in r.stderr.splitlines() if x.strip()]
    assert any("wrote" in x["message"] for x in logs)


def test_glmm_models_predict_on_the_link_or_response_scale(tmp_path):
    df = generate_hdp(n_doctors=30, seed=9, counts=True).data
    formula = "n_events ~ age + (1 | doctor)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bm.glmm(formula, df, family="poisson", offset="log(exposure)").fit()
    fit.save(tmp_path / "g.bmfit")
    new = df.sample(80, random_state=2).reset_index(drop=True)
    new.to_parquet(tmp_path / "new.parquet")
    base = ["predict", "--model", tmp_path / "g.bmfit", "--data", tmp_path / "new.parquet", "-q"]
    for kind in ("link", "response"):
        out = tmp_path / f"{kind}.parquet"
        assert run(*base, "--type", kind, "--out", out) == 0
        np.testing.assert_allclose(pd.read_parquet(out)["fit"], fit.predict(new, type=kind), rtol=1e-12)
    out = tmp_path / "default.json"
    assert run(*base, "--out", out) == 0
    doc = json.loads(out.read_text())
    assert doc["family"] == {"family": "poisson", "link": "log", "type": "link"}
    assert "exposure" in doc["input"]["columns_read"]  # the offset's column is read
    np.testing.assert_allclose([r["fit"] for r in doc["predictions"]], fit.predict(new), rtol=1e-12)
    assert run(*base, "--interval", "--out", tmp_path / "i.csv") == cli.EXIT_USAGE


def test_lmm_offsets_and_type_usage(setup, tmp_path):
    d, _, _ = setup
    df = generate_hdp(n_doctors=30, seed=10).data
    df["base"] = 0.1 * df["age"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bm.lmm("mobility ~ sex + (1 | doctor)", df, offset="base").fit()
    fit.save(tmp_path / "o.bmfit")
    new = df.head(40).copy()
    new["base"] = 1.0  # the offset of the new rows is theirs
    new.to_parquet(tmp_path / "new.parquet")
    out = tmp_path / "o.csv"
    assert run("predict", "--model", tmp_path / "o.bmfit", "--data", tmp_path / "new.parquet",
               "--out", out, "-q") == 0
    np.testing.assert_allclose(pd.read_csv(out)["fit"], fit.predict(new), rtol=1e-12)
    assert run("predict", "--model", d / "m.bmfit", "--data", d / "new.parquet", "--type", "response",
               "--out", tmp_path / "t.csv", "-q") == cli.EXIT_USAGE
