"""Model files written before the architecture move (tests/data/saved_*.bmfit, made by
tests/data/make_saved_models.py with commit 5a0066f) load, and agree with today's fits."""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bigmixed as bm

DATA = Path(__file__).resolve().parent / "data"
_spec = importlib.util.spec_from_file_location("make_saved_models", DATA / "make_saved_models.py")
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
MODELS = _mod.MODELS


@pytest.mark.parametrize("name", sorted(MODELS))
def test_an_old_model_file_loads_and_agrees(name):
    formula, data, kw = MODELS[name]
    df = data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        now = bm.lmm(formula, df, **kw).fit()
    old = bm.load(DATA / f"saved_{name}.bmfit")
    assert old.formula == now.formula and old.nobs == now.nobs
    for attr in ("objective", "theta", "beta", "vcov", "sigma", "residual_eta"):
        assert np.array_equal(getattr(old, attr), getattr(now, attr)), attr
    for group, frame in now.ranef(condvar=True).items():
        pd.testing.assert_frame_equal(old.ranef()[group], frame, check_exact=True)
    new = df.head(25)
    np.testing.assert_array_equal(old.predict(new), now.predict(new))
    assert old.optimizer.n_evaluations == now.optimizer.n_evaluations
    assert "Random effects:" in old.summary()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_an_old_model_file_names_the_missing_satterthwaite_section(name):
    old = bm.load(DATA / f"saved_{name}.bmfit")
    # Wald intervals need no more (one row per parameter; the fixed effects' are finite)
    assert old.confint(method="wald")["lower"].notna().sum() == len(old.beta)
    with pytest.raises(bm.SavedSectionMissingError, match="Satterthwaite section.*save it again") as e:
        old.fixed_effects_test()
    assert e.value.section == "inference.satterthwaite"
    with pytest.raises(bm.SavedSectionMissingError):
        old.anova_terms()
