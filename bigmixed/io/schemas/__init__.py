"""JSON Schemas (draft 2020-12) of every document the command line writes.

    from bigmixed.io.schemas import load_schema, validate
    schema = load_schema("fit")          # the dict of fit.schema.json
    validate(doc, "fit")                 # raises jsonschema.ValidationError (needs jsonschema)

| name | document |
|---|---|
| ``fit`` | `bigmixed fit` for one response, --format json (``fit.to_dict()``) |
| ``fit-ndjson`` | one NDJSON line of `bigmixed fit` (several responses, or --format ndjson) |
| ``tidy-metadata`` | the key-value metadata ``bigmixed`` of `bigmixed fit`'s Parquet table |
| ``predict`` | `bigmixed predict --format json` |
| ``predict-ndjson`` | one line of `bigmixed predict --format ndjson` |
| ``predict-metadata`` | the key-value metadata ``bigmixed`` of `bigmixed predict`'s Parquet file |
| ``log-line`` | one stderr line of ``--log-format json`` |
| ``model-metadata`` | ``bigmixed-model.json`` of a saved model (``--save``, ``fit.save``) |

The files (``<name>.schema.json``) ship inside the package; they are written by
``python -m bigmixed.io.schemas._generate`` (tests/test_schemas.py checks they are current).
"""
from __future__ import annotations

import json
from importlib import resources

__all__ = ["SCHEMA_NAMES", "load_schema", "schema_path", "validate"]

SCHEMA_NAMES = ("fit", "fit-ndjson", "tidy-metadata", "predict", "predict-ndjson",
                "predict-metadata", "log-line", "model-metadata")


def schema_path(name: str):
    """The schema file of `name` (a Traversable inside the installed package)."""
    if name not in SCHEMA_NAMES:
        raise ValueError(f"unknown schema {name!r}; the schemas are {', '.join(SCHEMA_NAMES)}")
    return resources.files(__name__).joinpath(f"{name}.schema.json")


def load_schema(name: str) -> dict:
    """The JSON Schema of the document `name` (see SCHEMA_NAMES) as a dict."""
    return json.loads(schema_path(name).read_text(encoding="utf-8"))


def validate(document, name: str) -> None:
    """Validate `document` against the schema `name` (needs the jsonschema package); raises
    jsonschema.ValidationError naming the first problem."""
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - an optional dependency
        raise ImportError("validate() needs the jsonschema package: pip install jsonschema") from None
    schema = load_schema(name)
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(document)
