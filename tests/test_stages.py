"""The optimizer's stages and its frozen control (bigmixed.fitting.stages, .control)."""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

import bigmixed as bm
from bigmixed.data_gen import generate_hdp
from bigmixed.fitting.control import FitControl, Tolerances


@pytest.fixture(scope="module")
def hdp():
    return generate_hdp(n_doctors=80, n_hospitals=12, seed=21).data


def _fit(model, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        return model.fit(**kw)


def _stages(fit):
    return [r.stage for r in fit.optimizer.stages]


def test_one_factor_fit_runs_the_quasi_newton_stage(hdp):
    fit = _fit(bm.lmm("mobility ~ age + (1 | doctor)", hdp))
    assert _stages(fit) == ["quasi-Newton (one factor)"]
    assert fit.optimizer.tolerances == {"xtol": FitControl().qn_one_factor_xtol}
    (qn,) = fit.optimizer.stages
    # (the results' criterion comes from the unfused path: equal to rounding)
    assert qn.n_evaluations > 2 and qn.objective == pytest.approx(fit.objective, rel=1e-13)
    assert fit.optimizer.n_gradients > 2


def test_one_factor_fit_without_the_quasi_newton_runs_bobyqa_and_the_polish(hdp):
    fit = _fit(bm.lmm("mobility ~ age + (1 | doctor)", hdp), control=FitControl(qn_one_factor=False))
    assert _stages(fit) == ["BOBYQA", "Newton polish"]
    assert fit.optimizer.tolerances == FitControl().loose.as_dict()
    bobyqa, polish = fit.optimizer.stages
    assert bobyqa.n_evaluations > 5 and polish.n_evaluations > 0
    assert polish.objective == fit.objective and bobyqa.objective >= polish.objective
    qn = _fit(bm.lmm("mobility ~ age + (1 | doctor)", hdp))
    assert qn.objective <= fit.objective + 1e-12 * abs(fit.objective)
    np.testing.assert_allclose(qn.theta, fit.theta, rtol=1e-7)


def test_several_factors_start_from_one_factor_fits(hdp):
    fit = _fit(bm.lmm("mobility ~ age + (1 | doctor) + (1 | hospital)", hdp, solver="cholmod"))
    assert _stages(fit) == ["one-factor start", "refined start", "BOBYQA", "Newton polish"]
    user = _fit(bm.lmm("mobility ~ age + (1 | doctor) + (1 | hospital)", hdp, solver="cholmod"),
                theta0=[1.0, 1.0])
    assert _stages(user) == ["BOBYQA", "Newton polish"]
    np.testing.assert_allclose(user.theta, fit.theta, rtol=1e-6)


def test_control_fields_take_effect(hdp):
    m = bm.lmm("mobility ~ age + (1 | doctor)", hdp)
    base = _fit(m)
    nopolish = _fit(m, control=FitControl(polish=False))
    assert _stages(nopolish) == ["BOBYQA"]
    assert nopolish.optimizer.tolerances == FitControl().tight.as_dict()
    mine = Tolerances(1e-9, 0.0, 1e-7)
    custom = _fit(m, control=FitControl(polish=False, tight=mine))
    assert custom.optimizer.tolerances == mine.as_dict()
    # keywords of fit() override the control's fields
    kw = _fit(m, control=FitControl(polish=False), xtol_abs=1e-6)
    assert kw.optimizer.tolerances["xtol_abs"] == 1e-6
    assert abs(nopolish.objective - base.objective) < 1e-8


def test_the_control_is_frozen_and_checked():
    c = FitControl()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.polish = False
    with pytest.raises(TypeError, match="unknown fit option"):
        FitControl.from_options(c, polsh=False)


def test_summary_shows_the_stage_log(hdp):
    fit = _fit(bm.lmm("mobility ~ age + (1 | doctor)", hdp), control=FitControl(qn_one_factor=False))
    text = fit.summary(optimizer_log=True)
    assert "Newton polish" in text and "tolerances: ftol_abs = 1e-07" in text
    assert "Newton polish" not in fit.summary()
