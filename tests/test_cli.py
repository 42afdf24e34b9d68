"""The command line: results equal direct fits, exit codes, atomic outputs, NDJSON streams."""
import csv
import json
import logging
import os
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from bigmixed.data_gen import generate_hdp

import bigmixed as bm
from bigmixed import cli

FORMULA = "mobility ~ age + sex + (1 | doctor)"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    df = generate_hdp(n_doctors=40, seed=2).data.copy()
    rng = np.random.default_rng(0)
    codes = df["doctor"].cat.codes.to_numpy()
    for k in range(3):
        df[f"marker_{k}"] = 0.5 * rng.normal(size=40)[codes] + rng.normal(size=len(df))
    df.loc[df.index[:9], "marker_1"] = np.nan
    df["marker_bad"] = "n/a"
    df["unused"] = 1.0
    df.to_parquet(d / "data.parquet")
    df.to_csv(d / "data.csv", index=False)
    sing = generate_hdp(n_doctors=20, seed=1, doctor_sd=0.0).data  # singular REML fit
    sing.to_csv(d / "singular.csv", index=False)
    (d / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    return d, df, sing


def direct(formula, df, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bm.lmm(formula, df, **kw).fit()


def run(*args):
    return cli.main([str(a) for a in args])


def listing(d):
    return sorted(p.name for p in d.iterdir())


@pytest.mark.parametrize("ext", ["parquet", "csv"])
def test_fit_json_equals_direct_fit(files, tmp_path, ext):
    d, df, _ = files
    out = tmp_path / "fit.json"
    assert run("fit", "--data", d / f"data.{ext}", "--formula", FORMULA, "--out", out, "-q") == 0
    doc = json.loads(out.read_text())
    fit = direct(FORMULA, df)
    assert doc["format"] == "bigmixed.fit" and doc["format_version"] == 1
    assert doc["model"] == {"formula": FORMULA, "response": "mobility", "reml": True}
    assert [r["term"] for r in doc["fixed_effects"]] == fit.fixed_names
    np.testing.assert_allclose([r["estimate"] for r in doc["fixed_effects"]], fit.beta, rtol=1e-12)
    np.testing.assert_allclose([r["std_error"] for r in doc["fixed_effects"]], fit.bse, rtol=1e-12)
    np.testing.assert_allclose([r["t_value"] for r in doc["fixed_effects"]], fit.tvalues, rtol=1e-12)
    vc = doc["variance_components"]
    assert vc[0]["group"] == "doctor" and vc[-1]["group"] == "Residual"
    np.testing.assert_allclose([r["variance"] for r in vc], fit.variance_components["variance"], rtol=1e-12)
    st = doc["statistics"]
    np.testing.assert_allclose([st["objective"], st["logLik"], st["AIC"], st["BIC"]],
                               [fit.objective, fit.llf, fit.aic, fit.bic], rtol=1e-12)
    assert st["nobs"] == fit.nobs and st["n_dropped"] == 0 and st["groups"] == {"doctor": 40}
    assert doc["convergence"]["converged"] is True and doc["convergence"]["singular"] is False
    assert doc["warnings"] == []
    assert {"read", "optimize", "total"} <= set(doc["timings"])
    assert {"bigmixed", "numpy", "scipy", "numba", "scikit-sparse", "formulaic", "python"} <= set(doc["versions"])
    # only the columns the formula needs were read
    assert sorted(doc["input"]["columns_read"]) == ["age", "doctor", "mobility", "sex"]
    assert listing(tmp_path) == ["fit.json"]


def test_csv_format_and_ml(files, tmp_path, capsys):
    d, df, _ = files
    assert run("fit", "--data", d / "data.parquet", "--formula", FORMULA, "--ml", "--format", "csv", "-q") == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    fit = direct(FORMULA, df, reml=False)
    assert list(rows[0]) == cli.CSV_COLUMNS
    fixed = [r for r in rows if r["effect"] == "fixed"]
    np.testing.assert_allclose([float(r["estimate"]) for r in fixed], fit.beta, rtol=1e-12)
    sd = {r["term"]: float(r["estimate"]) for r in rows if r["effect"] == "ran_pars"}
    assert sd["sd__Observation"] == pytest.approx(fit.sigma, rel=1e-12)
    assert sd["sd__(Intercept)"] == pytest.approx(fit.variance_components["sd"][0], rel=1e-12)


def test_formula_and_column_errors_exit_4_without_output(files, tmp_path):
    d, _, _ = files
    out = tmp_path / "fit.json"
    assert run("fit", "--data", d / "data.csv", "--formula", "mobility ~ age + (1 | doctor", "--out", out) == 4
    assert run("fit", "--data", d / "data.csv", "--formula", "mobility ~ agee + (1 | doctor)", "--out", out) == 4
    assert run("fit", "--data", d / "data.csv", "--formula", "marker_bad ~ age + (1 | doctor)", "--out", out) == 4
    assert listing(tmp_path) == []


def test_unreadable_data_exits_3(files, tmp_path):
    d, _, _ = files
    out = tmp_path / "fit.json"
    assert run("fit", "--data", tmp_path / "nope.csv", "--formula", FORMULA, "--out", out) == 3
    assert run("fit", "--data", d / "broken.parquet", "--formula", FORMULA, "--out", out) == 3
    assert listing(tmp_path) == []


def test_unwritable_output_exits_7_before_fitting(files, tmp_path, monkeypatch):
    d, _, _ = files

    def boom(*a, **k):
        raise AssertionError("fitted although the output is not writable")

    monkeypatch.setattr(bm.LinearMixedModel, "fit", boom)
    monkeypatch.setattr(cli, "read_data", boom)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert run("fit", "--data", d / "data.csv", "--formula", FORMULA, "--out", blocker / "fit.json") == 7
    assert run("fit", "--data", d / "data.csv", "--formula", FORMULA, "--out", tmp_path / "no" / "fit.json") == 7
    assert run("fit", "--data", d / "data.csv", "--formula", FORMULA, "--out", tmp_path) == 7  # a directory
    assert run("fit", "--data", d / "data.csv", "--formula", FORMULA, "--save", blocker / "m.bmfit") == 7
    assert listing(tmp_path) == ["a_file"]


def test_failed_run_leaves_previous_output_and_no_temp(files, tmp_path, monkeypatch):
    d, _, _ = files
    out = tmp_path / "fit.json"
    out.write_text("previous")

    def fail(self, *a, **k):
        raise np.linalg.LinAlgError("matrix is singular")

    monkeypatch.setattr(bm.LinearMixedModel, "fit", fail)
    assert run("fit", "--data", d / "data.csv", "--formula", FORMULA, "--out", out) == 5
    assert out.read_text() == "previous" and listing(tmp_path) == ["fit.json"]


def test_strict_exits_6_on_singular_fit(files, tmp_path):
    d, _, _ = files
    out = tmp_path / "fit.json"
    args = ["fit", "--data", d / "singular.csv", "--formula", "mobility ~ age + (1 | doctor)", "--out", out, "-q"]
    assert run(*args, "--strict") == 6
    assert listing(tmp_path) == []
    assert run(*args) == 0
    doc = json.loads(out.read_text())
    assert doc["convergence"]["singular"] is True
    assert doc["warnings"][0]["type"] == "SingularFitWarning"


def test_usage_errors_exit_2(files, capsys):
    d, _, _ = files
    assert run("fit", "--formula", FORMULA) == 2
    assert run("fit", "--data", d / "data.csv", "--formula", "~ age + (1 | doctor)",
               "--responses", "a", "--responses-glob", "b*") == 2
    assert run("fit", "--data", d / "data.csv", "--formula", "~ age + (1 | doctor)") == 2
    assert run() == 2
    assert run("--version") == 0
    assert capsys.readouterr().out.strip() == f"bigmixed {bm.__version__}"


def test_ndjson_stream_with_a_failing_response(files, tmp_path):
    d, df, _ = files
    out = tmp_path / "fits.ndjson"
    rhs = "~ age + sex + (1 | doctor)"
    assert run("fit", "--data", d / "data.parquet", "--formula", rhs, "--responses-glob", "marker_*",
               "--out", out, "--jobs", "2", "-q") == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["response"] for r in lines] == ["marker_0", "marker_1", "marker_2", "marker_bad"]
    assert [r["status"] for r in lines] == ["ok", "ok", "ok", "error"]
    assert lines[3]["error"]["type"] == "ResponseTypeError"
    for r in lines[:3]:
        fit = direct(f"{r['response']} {rhs}", df)
        assert [x["estimate"] for x in r["fixed_effects"]] == list(fit.beta)  # exact
        assert r["statistics"]["objective"] == fit.objective
        assert r["statistics"]["nobs"] == fit.nobs
    assert lines[1]["statistics"]["n_dropped"] == 9
    # strict: a failed response fails the run, nothing written
    out2 = tmp_path / "strict.ndjson"
    assert run("fit", "--data", d / "data.parquet", "--formula", rhs, "--responses", "marker_0,marker_bad",
               "--out", out2, "--strict", "-q") == 6
    assert not out2.exists()


def test_csv_rows_for_several_responses(files, tmp_path):
    d, df, _ = files
    out = tmp_path / "fits.csv"
    rhs = "~ age + (1 | doctor)"
    assert run("fit", "--data", d / "data.csv", "--formula", rhs, "--responses", "marker_2,marker_bad",
               "--out", out, "-q") == 0
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert {r["response"] for r in rows} == {"marker_2", "marker_bad"}
    bad = [r for r in rows if r["response"] == "marker_bad"]
    # "n/a" reads as a missing value from CSV: no rows left for that response
    assert len(bad) == 1 and bad[0]["status"] == "error" and bad[0]["error"].startswith("EmptyDataError")
    assert "'marker_bad'" in bad[0]["error"] and "__" not in bad[0]["error"]
    fit = direct(f"marker_2 {rhs}", df)
    got = [float(r["estimate"]) for r in rows if r["response"] == "marker_2" and r["effect"] == "fixed"]
    assert got == list(fit.beta)


def test_save_and_load(files, tmp_path):
    d, df, _ = files
    assert run("fit", "--data", d / "data.parquet", "--formula", FORMULA, "--out", tmp_path / "f.json",
               "--save", tmp_path / "m.bmfit", "-q") == 0
    lf = bm.load(tmp_path / "m.bmfit")
    fit = direct(FORMULA, df)
    assert np.array_equal(lf.beta, fit.beta) and np.array_equal(lf.theta, fit.theta)
    many = tmp_path / "models"
    assert run("fit", "--data", d / "data.parquet", "--formula", "~ age + (1 | doctor)", "--responses",
               "marker_0,marker_2", "--save", many, "-q") == 0
    assert sorted(os.listdir(many)) == ["marker_0.bmfit", "marker_2.bmfit"]
    assert bm.load(many / "marker_2.bmfit").formula == "marker_2 ~ age + (1 | doctor)"


def test_logging_touches_only_the_bigmixed_logger(files, tmp_path, capsys):
    d, _, _ = files
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    lg = logging.getLogger("bigmixed")
    state = (list(lg.handlers), lg.level, lg.propagate)
    assert run("fit", "--data", d / "data.csv", "--formula", FORMULA, "--out", tmp_path / "f.json") == 0
    err = capsys.readouterr().err
    assert "bigmixed: read" in err and "wrote" in err
    assert (list(root.handlers), root.level) == before
    assert (list(lg.handlers), lg.level, lg.propagate) == state
    assert run("fit", "--data", d / "data.csv", "--formula", FORMULA, "--out", tmp_path / "g.json", "-q") == 0
    assert capsys.readouterr().err == ""


def test_simulate_delegates_to_data_gen(tmp_path):
    out = tmp_path / "sim.csv"
    assert run("simulate", "--n-doctors", "12", "--seed", "4", "--out", out) == 0
    df = pd.read_csv(out)
    want = generate_hdp(12, seed=4).data
    assert len(df) == len(want) and df["doctor"].nunique() == 12


def test_python_dash_m(files, tmp_path):
    d, _, _ = files
    r = subprocess.run([sys.executable, "-m", "bigmixed", "fit", "--data", str(d / "data.csv"),
                        "--formula", FORMULA, "-q"], capture_output=True, text=True, timeout=120,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model"]["response"] == "mobility"


def test_fit_with_residual_structures(tmp_path):
    from bigmixed.data_gen import generate_longitudinal

    df = generate_longitudinal(60, 5, arm_sd_ratios={"a": 1.0, "b": 1.5, "c": 0.7},
                               missed_visit_share=0.1, seed=3).data
    path = tmp_path / "long.csv"
    df.to_csv(path, index=False)
    formula = "y ~ time * treat + (1 | patient)"
    out = tmp_path / "fit.json"
    assert run("fit", "--data", path, "--formula", formula, "--ar1", "visit,patient",
               "--var-ident", "arm", "--out", out, "-q") == 0
    doc = json.loads(out.read_text())
    fit = direct(formula, pd.read_csv(path), residual=bm.AR1("visit", "patient"),
                 variance=bm.VarIdent("arm"))
    assert doc["residual_structure"]["parameters"] == pytest.approx(fit.residual_parameters.to_dict(),
                                                                      rel=1e-12)
    assert sorted(doc["input"]["columns_read"]) == ["arm", "patient", "time", "treat", "visit", "y"]
    # bad usage: exit 2 and nothing written
    bad = tmp_path / "bad.json"
    assert run("fit", "--data", path, "--formula", formula, "--ar1", "visit", "--out", bad, "-q") == 2
    assert run("fit", "--data", path, "--formula", formula, "--ar1", "visit,patient",
               "--compound-symmetry", "patient", "--out", bad, "-q") == 2
    assert not bad.exists()
    # a structure the data do not fit: a data error (exit 4), nothing written
    assert run("fit", "--data", path, "--formula", formula, "--ar1", "treat,patient", "--out", bad,
               "-q") == 4
    assert not bad.exists()
