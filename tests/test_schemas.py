"""The JSON Schemas of the command line's documents (bigmixed.io.schemas): they ship in the
package, are current, and every output kind validates against its schema -- while corrupted
documents (a wrong type, a missing key, an unknown key) do not."""
from __future__ import annotations

import copy
import io
import json
import logging
import tomllib
import warnings
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest

import bigmixed as bm
from bigmixed import cli
from bigmixed.data_gen import generate_hdp, generate_longitudinal
from bigmixed.io import schemas
from bigmixed.io.schemas import _generate

ROOT = Path(__file__).resolve().parents[1]
FORMULA = "mobility ~ age + sex + (1 | doctor)"


def validator(name):
    schema = schemas.load_schema(name)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def assert_valid(doc, name):
    errors = sorted(validator(name).iter_errors(doc), key=str)
    assert not errors, f"{name}: " + "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


def assert_invalid(doc, name):
    assert not validator(name).is_valid(doc), f"a corrupted {name} document validated"


def run(*args):
    return cli.main([str(a) for a in args])


# ---- the files --------------------------------------------------------------------------


@pytest.mark.parametrize("name", schemas.SCHEMA_NAMES)
def test_schema_files_are_current_and_valid_draft_2020_12(name):
    schema = schemas.load_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schemas.schema_path(name).read_text() == _generate.text(name), (
        "run: python -m bigmixed.io.schemas._generate")


def test_every_schema_file_is_listed_and_installed_as_package_data():
    folder = ROOT / "bigmixed" / "io" / "schemas"
    files = sorted(p.name for p in folder.glob("*.json"))
    assert files == sorted(f"{n}.schema.json" for n in schemas.SCHEMA_NAMES)
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "bigmixed.io.schemas" in conf["packages"]
    patterns = conf["package-data"]["bigmixed.io.schemas"]
    assert all(any(Path(f).match(p) for p in patterns) for f in files)
    with pytest.raises(ValueError, match="unknown schema 'fits'"):
        schemas.load_schema("fits")


# ---- outputs of `bigmixed fit` ------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("schemas")
    df = generate_hdp(n_doctors=30, seed=5, binary=True).data.copy()
    rng = np.random.default_rng(1)
    df["marker_0"] = rng.normal(size=len(df))
    df["marker_bad"] = "n/a"
    df["age2"] = 2.0 * df["age"] + 1.0  # aliased
    df.to_parquet(d / "data.parquet")
    long = generate_longitudinal(20, 5, residual="ar1", seed=4).data
    long.to_parquet(d / "long.parquet")
    return d, df


def fit_json(d, tmp_path, *extra, formula=FORMULA, data="data.parquet"):
    out = tmp_path / "fit.json"
    assert run("fit", "--data", d / data, "--formula", formula, "--out", out, "-q", *extra) == 0
    return json.loads(out.read_text())


def test_fit_documents_validate(data, tmp_path):
    d, _ = data
    assert_valid(fit_json(d, tmp_path), "fit")
    assert_valid(fit_json(d, tmp_path, "--ddf", "none", "--ml"), "fit")
    doc = fit_json(d, tmp_path, formula="mobility ~ age + age2 + sex + (1 | doctor)")
    assert [r["aliased"] for r in doc["fixed_effects"]].count(True) == 1
    assert_valid(doc, "fit")
    doc = fit_json(d, tmp_path, "--ar1", "visit,patient", formula="y ~ time * treat + (1 | patient)",
                   data="long.parquet")
    assert doc["residual_structure"] is not None
    assert_valid(doc, "fit")
    glmm = fit_json(d, tmp_path, "--family", "binomial", formula="remission ~ age + sex + (1 | doctor)")
    assert_valid(glmm, "fit")
    weighted = fit_json(d, tmp_path, "--weights", "age", "--offset", "0.1 * age")
    assert weighted["model"]["weights"] == "age"
    assert_valid(weighted, "fit")
    assert_invalid({**weighted, "model": {**weighted["model"], "weights": 3}}, "fit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_valid(bm.lmm(FORMULA, pd.read_parquet(d / "data.parquet")).fit().to_dict(), "fit")


def test_corrupted_fit_documents_fail(data, tmp_path):
    d, _ = data
    good = fit_json(d, tmp_path)
    glmm = fit_json(d, tmp_path, "--family", "binomial", formula="remission ~ age + sex + (1 | doctor)")

    def corrupt(doc, change):
        bad = copy.deepcopy(doc)
        change(bad)
        return bad

    cases = [
        lambda x: x["fixed_effects"][0].update(estimate="4.5"),          # a wrong type
        lambda x: x["fixed_effects"][0].update(df=-3.0),                  # a df that cannot be
        lambda x: x["fixed_effects"][0].pop("p_value"),                   # a missing key
        lambda x: x["fixed_effects"][0].update(z_value=1.0),              # an unknown key
        lambda x: x.pop("statistics"),
        lambda x: x["statistics"].update(nobs=12.5),
        lambda x: x["statistics"].pop("AIC"),
        lambda x: x.update(format_version=1),
        lambda x: x["model"].update(reml="yes"),
        lambda x: x["inference"].update(ddf="kenward-roger"),
        lambda x: x["variance_components"][0].update(sd=-1.0),
        lambda x: x["warnings"].append({"type": "SingularFitWarning"}),
    ]
    for change in cases:
        assert_invalid(corrupt(good, change), "fit")
    # GLMM rows are z tests: an LMM row (t_value, df) in a GLMM document fails, and vice versa
    assert_invalid(corrupt(glmm, lambda x: x["fixed_effects"].__setitem__(0, good["fixed_effects"][0])), "fit")
    assert_invalid(corrupt(good, lambda x: x["model"].update(family=glmm["model"]["family"])), "fit")


def test_ndjson_lines_validate_and_corrupted_ones_fail(data, tmp_path):
    d, _ = data
    out = tmp_path / "m.ndjson"
    assert run("fit", "--data", d / "data.parquet", "--formula", "~ age + (1 | doctor)",
               "--responses", "mobility,marker_0,marker_bad", "--out", out, "-q") == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["status"] for x in lines] == ["ok", "ok", "error"]
    for line in lines:
        assert_valid(line, "fit-ndjson")
    one = tmp_path / "one.ndjson"
    assert run("fit", "--data", d / "data.parquet", "--formula", "remission ~ age + (1 | doctor)",
               "--family", "binomial", "--out", one, "-q") == 0
    assert_valid(json.loads(one.read_text()), "fit-ndjson")
    ok, err = lines[0], lines[2]
    assert_invalid({**ok, "index": "0"}, "fit-ndjson")
    assert_invalid({k: v for k, v in ok.items() if k != "fixed_effects"}, "fit-ndjson")
    assert_invalid({k: v for k, v in err.items() if k != "error"}, "fit-ndjson")
    assert_invalid({**err, "status": "ok"}, "fit-ndjson")
    assert_invalid({**ok, "format": "bigmixed.fit"}, "fit-ndjson")


def test_parquet_metadata_validates(data, tmp_path):
    import pyarrow.parquet as pq

    d, _ = data
    for extra in ([], ["--family", "binomial"]):
        out = tmp_path / "t.parquet"
        formula = FORMULA if not extra else "remission ~ age + (1 | doctor)"
        assert run("fit", "--data", d / "data.parquet", "--formula", formula, "--out", out, "-q", *extra) == 0
        meta = json.loads(pq.read_schema(out).metadata[b"bigmixed"])
        assert_valid(meta, "tidy-metadata")
    assert_invalid({**meta, "reml": None}, "tidy-metadata")
    assert_invalid({k: v for k, v in meta.items() if k != "input"}, "tidy-metadata")


def test_json_log_lines_validate(data, tmp_path, capsys):
    d, _ = data
    assert run("fit", "--data", d / "data.parquet", "--formula", FORMULA, "--out", tmp_path / "f.json",
               "--log-format", "json", "--progress-interval", "0.001") == 0
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(lines) >= 2
    for line in lines:
        assert_valid(line, "log-line")
    # a progress line as the formatter writes it
    rec = logging.LogRecord("bigmixed", logging.INFO, __file__, 1, "progress: %s", ("x",), None)
    rec.bigmixed_event = {"event": "progress", "stage": "optimizer", "elapsed": 1.5, "evaluations": 3}
    line = json.loads(cli._JSONFormatter().format(rec))
    assert_valid(line, "log-line")
    assert_invalid({k: v for k, v in line.items() if k != "stage"}, "log-line")
    assert_invalid({**line, "level": "loud"}, "log-line")
    assert_invalid({**line, "time": "yesterday"}, "log-line")


# ---- outputs of `bigmixed predict` --------------------------------------------------------


def test_predict_outputs_validate(data, tmp_path):
    import pyarrow.parquet as pq

    d, df = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bm.lmm(FORMULA, df).fit().save(tmp_path / "m.bmfit")
    base = ["predict", "--model", tmp_path / "m.bmfit", "--data", d / "data.parquet", "-q"]
    assert run(*base, "--out", tmp_path / "p.json", "--interval", "--keep", "doctor") == 0
    doc = json.loads((tmp_path / "p.json").read_text())
    assert_valid(doc, "predict")
    assert_valid({k: v for k, v in doc.items() if k != "predictions"} | {"format": cli.PREDICT_FORMAT},
                 "predict-metadata")
    assert run(*base, "--out", tmp_path / "p.ndjson", "--level", "population") == 0
    lines = [json.loads(x) for x in (tmp_path / "p.ndjson").read_text().splitlines()]
    assert len(lines) == len(df)
    for line in lines[:50]:
        assert_valid(line, "predict-ndjson")
    assert run(*base, "--out", tmp_path / "p.parquet") == 0
    meta = json.loads(pq.read_schema(tmp_path / "p.parquet").metadata[b"bigmixed"])
    assert_valid(meta, "predict-metadata")
    assert_invalid({**meta, "level": "marginal"}, "predict-metadata")
    assert_invalid({**lines[0], "fit": "6.1"}, "predict-ndjson")
    assert_invalid({k: v for k, v in lines[0].items() if k != "row"}, "predict-ndjson")
    bad = copy.deepcopy(doc)
    bad["predictions"][0]["se"] = -1.0
    assert_invalid(bad, "predict")


# ---- the metadata of saved models (--save) ------------------------------------------------


def test_saved_model_metadata_validates(data, tmp_path):
    import zipfile

    from bigmixed.io.modelfile import META

    d, _ = data
    for i, (formula, extra) in enumerate([
            (FORMULA, []), ("remission ~ age + (1 | doctor)", ["--family", "binomial"]),
            ("mobility ~ age + age2 + (1 | doctor)", [])]):
        save = tmp_path / f"m{i}.bmfit"
        assert run("fit", "--data", d / "data.parquet", "--formula", formula, "--out",
                   tmp_path / "f.json", "--save", save, "-q", *extra) == 0
        with zipfile.ZipFile(save) as zf:
            meta = json.loads(zf.read(META))
        assert_valid(meta, "model-metadata")
    assert meta["inference"]["satterthwaite"] is not None
    assert_invalid({**meta, "format": "bigmixed.fit"}, "model-metadata")
    assert_invalid({**meta, "n_obs": -1}, "model-metadata")
    assert_invalid({k: v for k, v in meta.items() if k != "inference"}, "model-metadata")
    bad = copy.deepcopy(meta)
    bad["inference"]["satterthwaite"].pop("hessian")
    assert_invalid(bad, "model-metadata")
