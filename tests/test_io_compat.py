"""Model files written before the architecture move (tests/data/saved_*.bmfit, made by
tests/data/make_saved_models.py with commit 5a0066f) load, and agree with today's fits (to rounding:
bit for bit on the machine that wrote them)."""
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
    # the same fits; bit for bit only on the machine and BLAS build that wrote the files.
    # (OpenBLAS picks its kernels by CPU: on an AMD EPYC the criterion differs at 1e-16 to
    # 6e-13 relative, and the optimizer stops elsewhere on a flat criterion: the crossed
    # model's theta by up to 6e-6, at a criterion 1.8e-9 lower.) The loaded file's numbers
    # are its own: it answers as the fit that wrote it.
    assert now.objective <= old.objective * (1 + 1e-12)
    assert now.objective == pytest.approx(old.objective, rel=1e-11)
    for attr in ("theta", "beta", "sigma"):
        np.testing.assert_allclose(getattr(old, attr), getattr(now, attr), rtol=1e-4,
                                   atol=1e-5, err_msg=attr)
    np.testing.assert_allclose(old.vcov, now.vcov, rtol=1e-3, atol=1e-9)
    for group, frame in now.ranef(condvar=True).items():
        pd.testing.assert_frame_equal(old.ranef()[group], frame, check_exact=False, rtol=1e-3,
                                      atol=1e-5)
    new = df.head(25)
    np.testing.assert_allclose(old.predict(new), now.predict(new), rtol=1e-5, atol=1e-6)
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
