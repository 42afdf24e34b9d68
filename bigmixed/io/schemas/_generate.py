"""Writes the JSON Schemas of this folder (``python -m bigmixed.io.schemas._generate``).

The schemas are files of the package (read by `bigmixed.io.schemas.load_schema`); this module
is where they are written from, so that the shared parts (a fixed-effects row, the fit's
entries) are defined once. tests/test_schemas.py checks that the files equal what this module
makes, and validates every output of the command line against them.
"""
from __future__ import annotations

import json
from pathlib import Path

DRAFT = "https://json-schema.org/draft/2020-12/schema"
BASE = "https://bigmixed.invalid/schemas/"  # identifiers only: nothing is fetched

NUM = {"type": ["number", "null"]}
STR_OR_NULL = {"type": ["string", "null"]}
COUNT = {"type": "integer", "minimum": 0}


def _obj(props: dict, required=None, additional=False, **kw) -> dict:
    out = {"type": "object", "properties": props,
           "required": list(props) if required is None else list(required),
           "additionalProperties": additional}
    out.update(kw)
    return out


P_VALUE = {"type": ["number", "null"], "minimum": 0, "maximum": 1}

LMM_ROW = _obj({
    "term": {"type": "string"},
    "estimate": NUM, "std_error": {"type": ["number", "null"], "minimum": 0},
    "t_value": NUM, "df": {"type": ["number", "null"], "exclusiveMinimum": 0},
    "p_value": P_VALUE, "aliased": {"type": "boolean"},
}, description="One fixed-effects column (LMM): df and p_value from Satterthwaite's method, null "
               "with ddf 'none'; an aliased (dropped) column has null numbers and aliased true")

GLMM_ROW = _obj({
    "term": {"type": "string"},
    "estimate": NUM, "std_error": {"type": ["number", "null"], "minimum": 0},
    "z_value": NUM, "p_value": P_VALUE, "aliased": {"type": "boolean"},
}, description="One fixed-effects column (GLMM): Wald z test")

FAMILY = _obj({
    "family": {"enum": ["binomial", "poisson"]},
    "link": {"type": "string"},
    "nAGQ": COUNT,
})

MODEL = _obj({
    "formula": {"type": "string"},
    "response": {"type": "string"},
    "reml": {"type": "boolean"},
    "family": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/family"}],
               "description": "null: a linear mixed model"},
    "weights": {**STR_OR_NULL, "description": "an LMM's weights= as given (only when given)"},
    "offset": {**STR_OR_NULL, "description": "an LMM's offset= and offset() terms (only when given)"},
}, required=["formula", "response", "reml", "family"])

INFERENCE = _obj({
    "ddf": {"enum": ["satterthwaite", "none", None], "description": "null for a GLMM (z tests)"},
    "statistic": {"enum": ["t", "z"]},
    "method": {"type": "string"},
    "messages": {"type": "array", "items": {"type": "string"}},
})

VARIANCE_ROW = _obj({
    "group": {"type": "string"}, "term1": STR_OR_NULL, "term2": STR_OR_NULL,
    "variance": NUM, "sd": {"type": ["number", "null"], "minimum": 0},
    "corr": {"type": ["number", "null"], "minimum": -1, "maximum": 1},
})

RESIDUAL_STRUCTURE = {"anyOf": [{"type": "null"}, _obj({
    "parameters": {"type": "object", "additionalProperties": {"type": "number"}},
    "correlation": _obj({"type": {"type": "string"}, "description": {"type": "string"}}),
    "variance": _obj({"type": {"const": "varIdent"}, "by": {"type": "string"},
                      "sd_by_stratum": {"type": "object", "additionalProperties": {"type": "number"}}}),
}, required=["parameters"])]}

STATISTICS = _obj({
    "objective": {"type": "number"},
    "criterion": {"enum": ["REML", "deviance"]},
    "logLik": {"type": "number"}, "AIC": {"type": "number"}, "BIC": {"type": "number"},
    "deviance": NUM, "sigma": {"type": "number", "minimum": 0},
    "nobs": COUNT, "n_dropped": COUNT,
    "groups": {"type": "object", "additionalProperties": COUNT},
    "df": COUNT,
})

CONVERGENCE = _obj({
    "converged": {"type": "boolean"}, "singular": {"type": "boolean"},
    "optimizer": {"type": "string"}, "n_evaluations": COUNT,
    "message": {"type": "string"}, "restarts": COUNT,
})

WARNING = _obj({"type": {"type": "string"}, "message": {"type": "string"}})

VERSIONS = _obj({"bigmixed": {"type": "string"}, "python": {"type": "string"}},
                additional=STR_OR_NULL)

INPUT = _obj({
    "path": {"type": "string"}, "format": {"enum": ["parquet", "csv", "tsv"]},
    "rows": COUNT, "columns_read": {"type": "array", "items": {"type": "string"}},
    "separator": {"type": "string", "minLength": 1, "maxLength": 1},
    "partitions": COUNT, "dask_scheduler": {"type": "string"},
}, required=["path", "format"])

DEFS = {"lmm_row": LMM_ROW, "glmm_row": GLMM_ROW, "family": FAMILY, "model": MODEL,
        "inference": INFERENCE, "variance_row": VARIANCE_ROW, "statistics": STATISTICS,
        "convergence": CONVERGENCE, "warning": WARNING, "versions": VERSIONS, "input": INPUT}

# the entries of a fit (the document's, an NDJSON line's)
FIT_ENTRIES = {
    "model": {"$ref": "#/$defs/model"},
    "fixed_effects": {"type": "array"},
    "inference": {"$ref": "#/$defs/inference"},
    "variance_components": {"type": "array", "items": {"$ref": "#/$defs/variance_row"}},
    "residual_structure": RESIDUAL_STRUCTURE,
    "theta": {"type": "array", "items": {"type": "number"}},
    "theta_names": {"type": "array", "items": {"type": "string"}},
    "statistics": {"$ref": "#/$defs/statistics"},
    "convergence": {"$ref": "#/$defs/convergence"},
    "warnings": {"type": "array", "items": {"$ref": "#/$defs/warning"}},
    "timings": {"type": "object", "additionalProperties": {"type": "number"}},
}
OPTIONAL_ENTRIES = {"versions": {"$ref": "#/$defs/versions"}, "input": {"$ref": "#/$defs/input"}}

# fixed-effects rows follow the model: LMM rows when model.family is null, else GLMM rows
ROWS_BY_FAMILY = [
    {"if": {"properties": {"model": {"properties": {"family": {"type": "null"}}}}},
     "then": {"properties": {"fixed_effects": {"items": {"$ref": "#/$defs/lmm_row"}},
                             "inference": {"properties": {"statistic": {"const": "t"},
                                                          "ddf": {"enum": ["satterthwaite", "none"]}}}}},
     "else": {"properties": {"fixed_effects": {"items": {"$ref": "#/$defs/glmm_row"}},
                             "inference": {"properties": {"statistic": {"const": "z"},
                                                          "ddf": {"const": None}}}}}},
]


def fit_schema() -> dict:
    from ..tidy import DOCUMENT_FORMAT, DOCUMENT_VERSION

    return {
        "$schema": DRAFT, "$id": BASE + "fit.schema.json",
        "title": "bigmixed fit document",
        "description": "What `bigmixed fit` writes for one response (--format json) and "
                       "fit.to_dict() returns.",
        **_obj({"format": {"const": DOCUMENT_FORMAT}, "format_version": {"const": DOCUMENT_VERSION},
                **FIT_ENTRIES, **OPTIONAL_ENTRIES},
               required=["format", "format_version", *FIT_ENTRIES]),
        "allOf": ROWS_BY_FAMILY,
        "$defs": DEFS,
    }


def ndjson_schema() -> dict:
    from ..tidy import NDJSON_FORMAT, NDJSON_VERSION

    head = {"format": {"const": NDJSON_FORMAT}, "format_version": {"const": NDJSON_VERSION},
            "response": {"type": "string"}, "index": COUNT, "status": {"enum": ["ok", "error"]},
            "seconds": {"type": "number", "minimum": 0}}
    ok = _obj({**head, "status": {"const": "ok"}, **FIT_ENTRIES, **OPTIONAL_ENTRIES},
              required=[*head, *FIT_ENTRIES], allOf=ROWS_BY_FAMILY)
    error = _obj({**head, "status": {"const": "error"},
                  "error": _obj({"type": {"type": "string"}, "message": {"type": "string"}})},
                 required=[*head, "error"])
    return {
        "$schema": DRAFT, "$id": BASE + "fit-ndjson.schema.json",
        "title": "bigmixed fit NDJSON line",
        "description": "One line of `bigmixed fit` with several responses (--format json / "
                       "ndjson) or one response as --format ndjson: a fit's entries, or an error.",
        "oneOf": [ok, error],
        "$defs": DEFS,
    }


def tidy_metadata_schema() -> dict:
    from ...cli import TABLE_FORMAT, TABLE_VERSION

    return {
        "$schema": DRAFT, "$id": BASE + "tidy-metadata.schema.json",
        "title": "bigmixed fit Parquet metadata",
        "description": "The key-value metadata 'bigmixed' of the Parquet table `bigmixed fit` writes.",
        **_obj({"format": {"const": TABLE_FORMAT}, "format_version": {"const": TABLE_VERSION},
                "formula": {"type": "string"}, "reml": {"type": "boolean"},
                "family": {"enum": ["binomial", "poisson", None]},
                "ddf": {"enum": ["satterthwaite", "none", None]},
                "input": {"$ref": "#/$defs/input"}, "versions": {"$ref": "#/$defs/versions"}}),
        "$defs": {"input": INPUT, "versions": VERSIONS},
    }


def log_line_schema() -> dict:
    return {
        "$schema": DRAFT, "$id": BASE + "log-line.schema.json",
        "title": "bigmixed JSON log line",
        "description": "One stderr line of --log-format json: a log record; progress lines have "
                       "event 'progress' and the stage's fields.",
        **_obj({"time": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"},
                "level": {"enum": ["debug", "info", "warning", "error", "critical"]},
                "logger": {"type": "string"}, "message": {"type": "string"},
                "event": {"const": "progress"}, "stage": {"type": "string"},
                "elapsed": {"type": "number", "minimum": 0},
                "traceback": {"type": ["string", "null"]}},
               required=["time", "level", "logger", "message"], additional=True),
        "if": {"required": ["event"]},
        "then": {"required": ["stage", "elapsed"]},
    }


def predict_metadata_schema() -> dict:
    from ...cli import PREDICT_FORMAT, PREDICT_VERSION

    return {
        "$schema": DRAFT, "$id": BASE + "predict-metadata.schema.json",
        "title": "bigmixed predict metadata",
        "description": "What `bigmixed predict` says about its predictions: the Parquet file's "
                       "key-value metadata 'bigmixed', and the JSON document without its rows.",
        **_obj(PREDICT_META),
        "$defs": {"input": INPUT, "versions": VERSIONS},
    }


def predict_schema() -> dict:
    from ...cli import PREDICT_DOCUMENT, PREDICT_VERSION

    return {
        "$schema": DRAFT, "$id": BASE + "predict.schema.json",
        "title": "bigmixed predict document",
        "description": "`bigmixed predict --format json`: the metadata and one object per row of "
                       "the new data.",
        **_obj({**PREDICT_META, "format": {"const": PREDICT_DOCUMENT},
                "predictions": {"type": "array", "items": PREDICT_ROW}}),
        "$defs": {"input": INPUT, "versions": VERSIONS},
    }


def predict_ndjson_schema() -> dict:
    from ...cli import PREDICT_NDJSON, PREDICT_VERSION

    return {
        "$schema": DRAFT, "$id": BASE + "predict-ndjson.schema.json",
        "title": "bigmixed predict NDJSON line",
        "description": "`bigmixed predict --format ndjson`: one line per row of the new data.",
        **_obj({"format": {"const": PREDICT_NDJSON}, "format_version": {"const": PREDICT_VERSION},
                **PREDICT_ROW["properties"]}, required=["format", "format_version", *PREDICT_ROW["required"]],
               additional=PREDICT_ROW["additionalProperties"]),
    }


def _predict_parts():
    from ...cli import PREDICT_FORMAT, PREDICT_VERSION

    meta = {
        "format": {"const": PREDICT_FORMAT}, "format_version": {"const": PREDICT_VERSION},
        "model": _obj({"path": {"type": "string"}, "formula": {"type": "string"},
                       "response": {"type": "string"}, "reml": {"type": "boolean"}}),
        "family": {"anyOf": [{"type": "null"}, _obj({
            "family": {"enum": ["binomial", "poisson"]}, "link": {"type": "string"},
            "type": {"enum": ["link", "response"]}})],
            "description": "null: a linear mixed model"},
        "level": {"enum": ["population", "conditional"]},
        "unseen": {"enum": ["population", "nan", "error"]},
        "interval": {"enum": ["prediction", "confidence", None]},
        "coverage": {"type": ["number", "null"], "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "columns": {"type": "array", "items": {"type": "string"}},
        "rows": COUNT,
        "input": {"$ref": "#/$defs/input"}, "versions": {"$ref": "#/$defs/versions"},
    }
    row = _obj({"row": COUNT, "fit": NUM, "se": {"type": ["number", "null"], "minimum": 0},
                "lower": NUM, "upper": NUM},
               required=["row", "fit"], additional={"type": ["string", "number", "boolean", "null"]})
    return meta, row


def model_metadata_schema() -> dict:
    from ..modelfile import FORMAT, FORMAT_VERSION, FORMAT_VERSION_MINOR

    arr = {"type": "string", "pattern": "^[A-Za-z0-9_./-]+$"}  # the name of an array in the file
    sat = _obj({"varpar": arr, "hessian": arr, "jacobian": arr, "reml": {"type": "boolean"}})
    return {
        "$schema": DRAFT, "$id": BASE + "model-metadata.schema.json",
        "title": "bigmixed saved model metadata",
        "description": "bigmixed-model.json inside a saved model (fit.save, `bigmixed fit --save`) "
                       "as this bigmixed writes it; sections not listed here are allowed.",
        **_obj({
            "format": {"const": FORMAT},
            "format_version": {"type": "integer", "minimum": 1, "maximum": FORMAT_VERSION},
            "format_version_minor": {"type": "integer", "minimum": 0, "maximum": FORMAT_VERSION_MINOR},
            "bigmixed_version": {"type": "string"},
            "created_utc": {"type": "string"},
            "formula": {"type": "string"}, "response": {"type": "string"},
            "reml": {"type": "boolean"}, "n_obs": COUNT, "n_dropped": COUNT,
            "fixed": _obj({"names": {"type": "array", "items": {"type": "string"}},
                           "dropped": {"type": "array", "items": {"type": "string"}}},
                          additional=True),
            "theta_names": {"type": "array", "items": {"type": "string"}},
            "estimates": _obj({"sigma": {"type": "number", "minimum": 0}, "objective": {"type": "number"}},
                              additional=True),
            "inference": _obj({"satterthwaite": {"anyOf": [{"type": "null"}, sat]},
                               "fixed_gram": {"anyOf": [{"type": "null"}, arr]},
                               "reason": {"type": "string"}},
                              required=["satterthwaite", "fixed_gram"]),
            "warnings": {"type": "array", "items": {"$ref": "#/$defs/warning"}},
        }, additional=True),
        "$defs": {"warning": WARNING},
    }


PREDICT_META: dict = {}
PREDICT_ROW: dict = {}

SCHEMAS = {
    "fit": fit_schema,
    "fit-ndjson": ndjson_schema,
    "tidy-metadata": tidy_metadata_schema,
    "log-line": log_line_schema,
    "predict": predict_schema,
    "predict-ndjson": predict_ndjson_schema,
    "predict-metadata": predict_metadata_schema,
    "model-metadata": model_metadata_schema,
}


def make(name: str) -> dict:
    global PREDICT_META, PREDICT_ROW
    if not PREDICT_META:
        PREDICT_META, PREDICT_ROW = _predict_parts()
    return SCHEMAS[name]()


def text(name: str) -> str:
    return json.dumps(make(name), indent=1) + "\n"


def main() -> None:
    folder = Path(__file__).resolve().parent
    for name in SCHEMAS:
        (folder / f"{name}.schema.json").write_text(text(name))
        print(folder / f"{name}.schema.json")


if __name__ == "__main__":
    main()
