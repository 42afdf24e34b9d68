"""Shared access to the committed lme4 reference fits (bench/references, bench/references_inference)."""
import json
import warnings
from pathlib import Path

import pandas as pd

import bigmixed as bm

BENCH = Path(__file__).resolve().parents[1] / "bench"
REF = BENCH / "references"
INDEX = json.loads((REF / "index.json").read_text())
INFREF = json.loads((BENCH / "references_inference" / "inference.json").read_text())
CASES = [(m, kind) for m in INDEX["models"] for kind in ("reml", "ml") if kind in m["fits"]]


def load_data(file):
    """A reference data set, with factor columns as Categoricals in R's level order."""
    df = pd.read_csv(REF / file)
    for col in INDEX["factor_columns"]:
        if col in df.columns:
            levels = INDEX["levels"].get(col)
            values = df[col].astype("string").astype(object).where(df[col].notna())
            if levels is None:
                levels = sorted(values.dropna().unique())
            df[col] = pd.Categorical(values, categories=levels)
    return df


def load_fit_json(model, kind):
    return json.loads((REF / model["fits"][kind]).read_text())


def fit_quiet(formula, df, reml=True):
    """bm.lmm(...).fit() with bigmixed's warnings (singular fits etc.) silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        return bm.lmm(formula, df, reml=reml).fit()
