"""The command line: results equal direct fits, exit codes, atomic outputs, NDJSON streams."""
import csv
import json
import logging
import os
import re
import stat
import subprocess
import sys
import threading
import time
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
    assert doc["format"] == "bigmixed.fit" and doc["format_version"] == 2
    assert doc["model"] == {"formula": FORMULA, "response": "mobility", "reml": True, "family": None}
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


# ======================================================================================
# Output safety: devices, FIFOs and symlinks; formats; CSV separators; progress and logs
# ======================================================================================


def test_out_dev_null_is_written_through_not_replaced(files):
    d, _, _ = files
    before = os.stat("/dev/null")
    assert run("fit", "--data", d / "data.csv", "--formula", FORMULA, "--out", "/dev/null", "-q") == 0
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev and after.st_ino == before.st_ino


def test_out_fifo_is_written_through(files, tmp_path):
    d, df, _ = files
    fifo = tmp_path / "fit.fifo"
    os.mkfifo(fifo)
    got = {}

    def reader():
        with open(fifo) as fh:
            got["text"] = fh.read()

    t = threading.Thread(target=reader)
    t.start()
    assert run("fit", "--data", d / "data.csv", "--formula", FORMULA, "--out", fifo, "-q") == 0
    t.join(30)
    assert json.loads(got["text"])["statistics"]["objective"] == direct(FORMULA, df).objective
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and listing(tmp_path) == ["fit.fifo"]


def test_out_dash_and_dev_stdout_through_a_symlink(files, tmp_path, capfd):
    d, _, _ = files
    assert run("fit", "--data", d / "data.csv", "--formula", FORMULA, "--out", "-", "-q") == 0
    assert json.loads(capfd.readouterr().out)["format"] == "bigmixed.fit"
    link = tmp_path / "out.json"
    link.symlink_to("/dev/stdout")  # fd 1 is capfd's regular file here: written through, kept
    assert run("fit", "--data", d / "data.csv", "--formula", FORMULA, "--out", link, "-q") == 0
    assert json.loads(capfd.readouterr().out)["format"] == "bigmixed.fit"
    assert os.readlink(link) == "/dev/stdout" and listing(tmp_path) == ["out.json"]


def test_symlink_to_a_regular_file_replaces_the_target_atomically(files, tmp_path):
    d, _, _ = files
    real = tmp_path / "results"
    real.mkdir()
    (real / "fit.json").write_text("previous")
    link = tmp_path / "fit.json"
    link.symlink_to(real / "fit.json")
    dangling = tmp_path / "new.json"
    dangling.symlink_to(real / "new.json")
    assert run("fit", "--data", d / "data.csv", "--formula", FORMULA, "--out", link, "-q") == 0
    assert run("fit", "--data", d / "data.csv", "--formula", FORMULA, "--out", dangling, "-q") == 0
    assert link.is_symlink() and dangling.is_symlink()
    assert json.loads((real / "fit.json").read_text())["format"] == "bigmixed.fit"
    assert json.loads((real / "new.json").read_text())["format"] == "bigmixed.fit"
    assert listing(tmp_path) == ["fit.json", "new.json", "results"]
    assert listing(real) == ["fit.json", "new.json"]
    # --out reaching the data through a symlink: refused
    data_link = tmp_path / "data_link.csv"
    data_link.symlink_to(d / "data.csv")
    assert run("fit", "--data", d / "data.csv", "--formula", FORMULA, "--out", data_link) == 2


def test_format_and_extension_must_agree(files, tmp_path, capsys):
    d, _, _ = files
    for fmt, name in (("json", "res.parquet"), ("csv", "res.json"), ("parquet", "res.csv"),
                      ("ndjson", "res.csv")):
        assert run("fit", "--data", d / "data.csv", "--formula", FORMULA, "--format", fmt,
                   "--out", tmp_path / name) == 2
        err = capsys.readouterr().err
        assert f"--format {fmt} does not match" in err and name in err
    assert listing(tmp_path) == []
    # json and ndjson are one family; an unknown extension takes --format
    assert run("fit", "--data", d / "data.csv", "--formula", FORMULA, "--format", "ndjson",
               "--out", tmp_path / "one.json", "-q") == 0
    assert run("fit", "--data", d / "data.csv", "--formula", FORMULA, "--format", "csv",
               "--out", tmp_path / "res.txt", "-q") == 0
    assert (tmp_path / "res.txt").read_text().startswith("response,status,effect")


def test_parquet_output_is_the_tidy_table(files, tmp_path):
    import pyarrow.parquet as pq

    d, df, _ = files
    assert run("fit", "--data", d / "data.parquet", "--formula", FORMULA, "--out", tmp_path / "fit.parquet",
               "-q") == 0
    assert run("fit", "--data", d / "data.parquet", "--formula", FORMULA, "--out", tmp_path / "fit.csv",
               "-q") == 0
    t = pq.read_table(tmp_path / "fit.parquet")
    assert t.column_names == cli.CSV_COLUMNS
    assert str(t.schema.field("estimate").type) == "double" and str(t.schema.field("term").type) == "string"
    got = t.to_pandas()
    want = pd.read_csv(tmp_path / "fit.csv")
    assert list(got["term"]) == list(want["term"])
    assert list(got["estimate"]) == list(want["estimate"])  # exact (CSV holds repr())
    fit = direct(FORMULA, df)
    assert list(got.loc[got["effect"] == "fixed", "estimate"]) == list(fit.beta)
    meta = json.loads(t.schema.metadata[b"bigmixed"])
    assert meta["format"] == "bigmixed.fit.tidy" and meta["format_version"] == 2
    assert meta["ddf"] == "satterthwaite" and meta["family"] is None
    assert meta["formula"] == FORMULA and meta["input"]["rows"] == len(df) and "pyarrow" in meta["versions"]
    # several responses, one failing: an error row, written in row groups
    out = tmp_path / "many.parquet"
    assert run("fit", "--data", d / "data.parquet", "--formula", "~ age + (1 | doctor)", "--responses-glob",
               "marker_*", "--out", out, "-q") == 0
    many = pq.read_table(out).to_pandas()
    assert list(dict.fromkeys(many["response"])) == ["marker_0", "marker_1", "marker_2", "marker_bad"]
    bad = many[many["response"] == "marker_bad"]
    assert len(bad) == 1 and bad["status"].iloc[0] == "error" and bad["error"].iloc[0].startswith("ResponseTypeError")
    assert listing(tmp_path) == ["fit.csv", "fit.parquet", "many.parquet"]


def test_ndjson_lines_carry_format_and_version(files, tmp_path):
    from bigmixed.io.tidy import NDJSON_FORMAT, NDJSON_VERSION

    d, df, _ = files
    out = tmp_path / "fits.ndjson"
    assert run("fit", "--data", d / "data.parquet", "--formula", "~ age + (1 | doctor)", "--responses",
               "marker_0,marker_bad", "--out", out, "-q") == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(x["format"], x["format_version"]) for x in lines] == [(NDJSON_FORMAT, NDJSON_VERSION)] * 2
    assert NDJSON_FORMAT == "bigmixed.fit.ndjson" and list(lines[0])[:5] == [
        "format", "format_version", "response", "index", "status"]
    assert lines[1]["status"] == "error"
    # one response as NDJSON: one line of the same shape
    one = tmp_path / "one.ndjson"
    assert run("fit", "--data", d / "data.parquet", "--formula", FORMULA, "--out", one, "-q") == 0
    text = one.read_text()
    assert text.count("\n") == 1
    line = json.loads(text)
    assert (line["format"], line["response"], line["status"]) == (NDJSON_FORMAT, "mobility", "ok")
    assert line["statistics"]["objective"] == direct(FORMULA, df).objective


@pytest.mark.parametrize("sep,name", [(";", "semicolon"), ("\t", "tab"), ("|", "pipe")])
def test_csv_separators_are_sniffed(files, tmp_path, sep, name):
    d, df, _ = files
    path = tmp_path / "data.csv"
    df.to_csv(path, index=False, sep=sep)
    out = tmp_path / "fit.json"
    assert run("fit", "--data", path, "--formula", FORMULA, "--out", out, "-q") == 0
    doc = json.loads(out.read_text())
    assert doc["input"]["separator"] == sep
    assert doc["statistics"]["objective"] == direct(FORMULA, df).objective
    # --sep forces it (names or the character)
    assert run("fit", "--data", path, "--formula", FORMULA, "--sep", name, "--out", out, "-q") == 0
    assert json.loads(out.read_text())["statistics"]["objective"] == doc["statistics"]["objective"]


def test_csv_separator_errors_name_the_problem(files, tmp_path, capsys):
    d, df, _ = files
    semi = tmp_path / "semi.csv"
    df.to_csv(semi, index=False, sep=";")
    # a forced wrong separator
    assert run("fit", "--data", semi, "--formula", FORMULA, "--sep", ",") == 3
    assert "its separator looks like semicolon: pass --sep ';'" in capsys.readouterr().err
    # decimal commas in a semicolon file
    dec = tmp_path / "dec.csv"
    df.head(200).to_csv(dec, index=False, sep=";", decimal=",")
    assert run("fit", "--data", dec, "--formula", FORMULA) == 3
    err = capsys.readouterr().err
    assert "holds numbers written with a decimal comma (e.g. '" in err and "dec.csv" in err
    assert re.search(r"column '(mobility|age|sex)'", err)
    # no separator fits the first lines
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b;c\n1;2;3\n4,5,6\n")
    assert run("fit", "--data", bad, "--formula", "a ~ 1 + (1 | b)") == 3
    err = capsys.readouterr().err
    assert "cannot tell the column separator" in err and "--sep" in err
    assert run("fit", "--data", semi, "--formula", FORMULA, "--sep", "ab") == 2
    assert listing(tmp_path) == ["bad.csv", "dec.csv", "semi.csv"]


def test_stale_temp_files_of_dead_runs_are_removed_others_kept(files, tmp_path):
    import fcntl

    d, _, _ = files
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f".fit.json.bigmixed-{dead.pid}-abcd1234.tmp"
        other_live = tmp_path / f".fit.json.bigmixed-{live.pid}-abcd1234.tmp"
        locked = tmp_path / f".other.csv.bigmixed-{dead.pid}-zz_99.tmp"  # pid reused elsewhere: locked
        foreign = tmp_path / ".fit.json.tmp"
        for p in (stale, other_live, locked, foreign):
            p.write_text("partial")
        with open(locked) as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            assert run("fit", "--data", d / "data.csv", "--formula", FORMULA, "--out",
                       tmp_path / "fit.json", "-q") == 0
        assert sorted(listing(tmp_path)) == sorted([other_live.name, locked.name, foreign.name, "fit.json"])
    finally:
        live.kill()
        live.wait()
    assert run("fit", "--data", d / "data.csv", "--formula", FORMULA, "--out", tmp_path / "fit.json",
               "-q") == 0
    assert sorted(listing(tmp_path)) == [foreign.name, "fit.json"]


@pytest.fixture
def slow_objective(monkeypatch):
    real = bm.LinearMixedModel.objective

    def slow(self, *a, **k):
        time.sleep(0.002)
        return real(self, *a, **k)

    monkeypatch.setattr(bm.LinearMixedModel, "objective", slow)


def test_progress_lines_when_not_on_a_terminal(files, tmp_path, capsys, slow_objective):
    d, _, _ = files
    assert run("fit", "--data", d / "data.csv", "--formula", FORMULA, "--out", tmp_path / "f.json",
               "--progress-interval", "0.01") == 0
    lines = capsys.readouterr().err.splitlines()
    prog = [x for x in lines if x.startswith("bigmixed: progress: ")]
    assert prog and any("optimizer: " in x and " evaluations, objective " in x for x in prog)
    assert all(x.endswith(" s elapsed") for x in prog)
    assert "\r" not in "".join(lines)
    # several responses: responses done / total
    assert run("fit", "--data", d / "data.csv", "--formula", "~ age + (1 | doctor)", "--responses-glob",
               "marker_*", "--out", tmp_path / "m.ndjson", "--progress-interval", "0.01", "--jobs", "2") == 0
    prog = [x for x in capsys.readouterr().err.splitlines() if "progress:" in x]
    assert any(re.search(r"\d/4 responses \(\d failed\)", x) for x in prog), prog
    # -q or --progress-interval 0: none
    assert run("fit", "--data", d / "data.csv", "--formula", FORMULA, "--out", tmp_path / "f.json",
               "--progress-interval", "0.01", "-q") == 0
    assert capsys.readouterr().err == ""
    assert run("fit", "--data", d / "data.csv", "--formula", FORMULA, "--out", tmp_path / "f.json",
               "--progress-interval", "0") == 0
    assert "bigmixed: progress:" not in capsys.readouterr().err
    assert run("fit", "--data", d / "data.csv", "--formula", FORMULA, "--progress-interval", "-1") == 2


def test_log_format_json(files, tmp_path, capsys, slow_objective):
    d, _, _ = files
    assert run("fit", "--data", d / "data.csv", "--formula", FORMULA, "--out", tmp_path / "f.json",
               "--progress-interval", "0.01", "--log-format", "json") == 0
    recs = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in recs)
    logs = [r for r in recs if r.get("event") != "progress"]
    assert logs[0]["message"].startswith("read ") and logs[-1]["message"].startswith("wrote ")
    prog = [r for r in recs if r.get("event") == "progress"]
    assert prog and all(isinstance(r["elapsed"], float) and r["stage"] for r in prog)
    opt = [r for r in prog if r["stage"] == "optimizer" and r["evaluations"]]
    assert opt and opt[-1]["rows"] == 840 and isinstance(opt[-1]["objective"], float)
    # errors too
    assert run("fit", "--data", tmp_path / "nope.csv", "--formula", FORMULA, "--log-format", "json") == 3
    (rec,) = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert rec["level"] == "error" and "nope.csv" in rec["message"]


def test_progress_bar_on_a_terminal(files, tmp_path, capsys, monkeypatch, slow_objective):
    d, _, _ = files
    monkeypatch.setattr(cli, "_isatty", lambda stream: stream is sys.stderr)
    monkeypatch.setattr(cli, "BAR_INTERVAL", 0.001)  # redrawn every 0.2 s on a real terminal
    assert run("fit", "--data", d / "data.csv", "--formula", "~ age + (1 | doctor)", "--responses-glob",
               "marker_*", "--out", tmp_path / "m.ndjson", "--jobs", "1") == 0
    err = capsys.readouterr().err
    assert "\rbigmixed: [" in err and "/4 responses" in err
    assert "bigmixed: progress:" not in err  # no progress log lines on a terminal
    assert "\r\x1b[K" in err and "bigmixed: wrote" in err  # the bar is erased before log lines


def test_exit_code_table():
    assert cli.EXIT_CODES[129].startswith("hung up") and cli.EXIT_CODES[130].startswith("interrupted")
    assert cli.EXIT_CODES[143].startswith("terminated")


# ---- #17 item 3: df, p-values, aliased coefficients ---------------------------------------


def test_json_csv_ndjson_carry_satterthwaite_df_and_p_values(files, tmp_path):
    d, df, _ = files
    fit = direct(FORMULA, df)
    want = fit.fixed_effects_test(ddf="satterthwaite")
    assert run("fit", "--data", d / "data.parquet", "--formula", FORMULA, "--out", tmp_path / "f.json", "-q") == 0
    doc = json.loads((tmp_path / "f.json").read_text())
    assert doc["inference"]["ddf"] == "satterthwaite" and doc["inference"]["statistic"] == "t"
    fe = doc["fixed_effects"]
    assert [r["aliased"] for r in fe] == [False] * len(fit.beta)
    np.testing.assert_allclose([r["df"] for r in fe], want["df"], rtol=1e-12)
    np.testing.assert_allclose([r["p_value"] for r in fe], want["p_value"], rtol=1e-12)
    assert 1 < fe[0]["df"] < len(df)  # a real Satterthwaite df, not the residual df
    assert run("fit", "--data", d / "data.parquet", "--formula", FORMULA, "--out", tmp_path / "f.csv", "-q") == 0
    rows = [r for r in csv.DictReader((tmp_path / "f.csv").open()) if r["effect"] == "fixed"]
    np.testing.assert_allclose([float(r["df"]) for r in rows], want["df"], rtol=1e-12)
    np.testing.assert_allclose([float(r["p_value"]) for r in rows], want["p_value"], rtol=1e-12)
    assert {r["aliased"] for r in rows} == {"false"}
    out = tmp_path / "m.ndjson"
    assert run("fit", "--data", d / "data.parquet", "--formula", "~ age + sex + (1 | doctor)",
               "--responses", "mobility,marker_0", "--out", out, "-q") == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    np.testing.assert_allclose([r["df"] for r in lines[0]["fixed_effects"]], want["df"], rtol=1e-12)
    other = direct("marker_0 ~ age + sex + (1 | doctor)", df).fixed_effects_test()
    np.testing.assert_allclose([r["p_value"] for r in lines[1]["fixed_effects"]], other["p_value"], rtol=1e-12)


def test_ddf_none_leaves_df_and_p_values_null(files, tmp_path):
    d, df, _ = files
    assert run("fit", "--data", d / "data.parquet", "--formula", FORMULA, "--ddf", "none",
               "--out", tmp_path / "f.json", "-q") == 0
    doc = json.loads((tmp_path / "f.json").read_text())
    assert doc["inference"]["ddf"] == "none"
    assert all(r["df"] is None and r["p_value"] is None for r in doc["fixed_effects"])
    np.testing.assert_allclose([r["t_value"] for r in doc["fixed_effects"]], direct(FORMULA, df).tvalues,
                               rtol=1e-12)
    assert run("fit", "--data", d / "data.parquet", "--formula", FORMULA, "--ddf", "none",
               "--format", "csv", "--out", tmp_path / "f.csv", "-q") == 0
    rows = [r for r in csv.DictReader((tmp_path / "f.csv").open()) if r["effect"] == "fixed"]
    assert {r["df"] for r in rows} == {""} and {r["p_value"] for r in rows} == {""}
    assert run("fit", "--data", d / "data.parquet", "--formula", FORMULA, "--ddf", "kenward-roger",
               "--out", tmp_path / "g.json", "-q") == cli.EXIT_USAGE
    assert not (tmp_path / "g.json").exists()


@pytest.fixture(scope="module")
def aliased_file(files):
    d, df, _ = files
    al = df[["mobility", "age", "sex", "doctor"]].copy()
    al["age2"] = 2.0 * al["age"] + 1.0  # aliased with the intercept and age: dropped as lme4 does
    al["wbc"] = df["wbc"]
    path = d / "aliased.parquet"
    al.to_parquet(path)
    return path, al


def test_aliased_coefficients_are_present_with_na_and_a_flag(aliased_file, tmp_path):
    import pyarrow.parquet as pq

    path, al = aliased_file
    formula = "mobility ~ age + age2 + wbc + (1 | doctor)"
    fit = direct(formula, al)
    assert fit.model.design.dropped_fixed == ["age2"]
    want = fit.fixed_effects_test()
    assert run("fit", "--data", path, "--formula", formula, "--out", tmp_path / "a.json", "-q") == 0
    fe = json.loads((tmp_path / "a.json").read_text())["fixed_effects"]
    assert [r["term"] for r in fe] == ["(Intercept)", "age", "age2", "wbc"]  # model.matrix order
    assert [r["aliased"] for r in fe] == [False, False, True, False]
    assert {k: v for k, v in fe[2].items() if k not in ("term", "aliased")} == {
        "estimate": None, "std_error": None, "t_value": None, "df": None, "p_value": None}
    kept = [r for r in fe if not r["aliased"]]
    np.testing.assert_allclose([r["estimate"] for r in kept], fit.beta, rtol=1e-12)
    np.testing.assert_allclose([r["df"] for r in kept], want["df"], rtol=1e-12)
    assert run("fit", "--data", path, "--formula", formula, "--out", tmp_path / "a.csv", "-q") == 0
    rows = [r for r in csv.DictReader((tmp_path / "a.csv").open()) if r["effect"] == "fixed"]
    row = next(r for r in rows if r["term"] == "age2")
    assert row["aliased"] == "true" and row["estimate"] == row["std_error"] == row["df"] == ""
    assert run("fit", "--data", path, "--formula", formula, "--out", tmp_path / "a.parquet", "-q") == 0
    t = pq.read_table(tmp_path / "a.parquet")
    assert str(t.schema.field("aliased").type) == "bool"
    got = t.to_pandas()
    g = got[got["term"] == "age2"].iloc[0]
    assert bool(g["aliased"]) is True and np.isnan(g["estimate"]) and np.isnan(g["df"])
    assert got.loc[got["effect"] == "ran_pars", "aliased"].isna().all()


def test_glmm_outputs_carry_z_and_p_and_refuse_ddf(tmp_path):
    from scipy import stats

    df = generate_hdp(n_doctors=40, seed=3, binary=True).data
    path = tmp_path / "g.parquet"
    df.to_parquet(path)
    formula = "remission ~ age + sex + (1 | doctor)"
    assert run("fit", "--data", path, "--formula", formula, "--family", "binomial", "--ddf", "none",
               "--out", tmp_path / "g.json", "-q") == cli.EXIT_USAGE
    assert run("fit", "--data", path, "--formula", formula, "--family", "binomial",
               "--out", tmp_path / "g.json", "-q") == 0
    doc = json.loads((tmp_path / "g.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bm.glmm(formula, df, family="binomial").fit()
    fe = doc["fixed_effects"]
    assert doc["inference"] == {"ddf": None, "statistic": "z", "method": "Wald z tests (lme4's glmer)",
                                "messages": []}
    assert doc["model"]["family"] == {"family": "binomial", "link": "logit", "nAGQ": 1}
    assert set(fe[0]) == {"term", "estimate", "std_error", "z_value", "p_value", "aliased"}
    np.testing.assert_allclose([r["z_value"] for r in fe], fit.tvalues, rtol=1e-12)
    np.testing.assert_allclose([r["p_value"] for r in fe], fit.pvalues, rtol=1e-12)
    assert run("fit", "--data", path, "--formula", formula, "--family", "binomial",
               "--out", tmp_path / "g.csv", "-q") == 0
    rows = list(csv.DictReader((tmp_path / "g.csv").open()))
    assert list(rows[0]) == cli.GLMM_CSV_COLUMNS
    z = [float(r["z_value"]) for r in rows if r["effect"] == "fixed"]
    np.testing.assert_allclose([float(r["p_value"]) for r in rows if r["effect"] == "fixed"],
                               2 * stats.norm.sf(np.abs(z)), rtol=1e-12)


def test_a_model_without_fixed_effects_has_an_empty_table(files, tmp_path):
    d, _, _ = files
    out = tmp_path / "f.json"
    assert run("fit", "--data", d / "data.parquet", "--formula", "mobility ~ 0 + (1 | doctor)",
               "--out", out, "-q") == 0
    doc = json.loads(out.read_text())
    assert doc["fixed_effects"] == [] and doc["inference"]["ddf"] == "satterthwaite"
