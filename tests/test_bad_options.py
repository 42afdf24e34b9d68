"""Bad options and degenerate responses get typed errors (issue #16 item 6).

lme4's behaviour for the degenerate responses is in bench/references_parity/lme4_names.json
(bench/lme4_names_reference.R): lmer fits a constant or all-zero response with sigma = 0, and
one scaled by 1e200 with sigma = Inf -- neither a usable fit; bigmixed raises
DegenerateResponseError naming the response. 1e150 still fits in both, with lme4's numbers.
"""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bigmixed as bm

PARITY = Path(__file__).resolve().parents[1] / "bench" / "references_parity"
REF = json.loads((PARITY / "lme4_names.json").read_text())


@pytest.fixture(scope="module")
def sleep():
    return pd.read_csv(PARITY / "sleepstudy.csv")


def binary(d):
    return d.assign(y=(d.Reaction > d.Reaction.median()).astype(int))


@pytest.mark.parametrize("kw, name", [
    (dict(reml="yes"), "reml"), (dict(reml=1), "reml"), (dict(reml=None), "reml"),
    (dict(solver=3), "solver"), (dict(solver="chol"), "solver"),
    (dict(residual="ar1"), "residual"), (dict(variance="Days"), "variance"),
])
def test_lmm_wrongly_typed_options(sleep, kw, name):
    with pytest.raises(bm.OptionError, match=rf"bm.lmm: option {name}=") as e:
        bm.lmm("Reaction ~ Days + (1 | Subject)", sleep, **kw)
    assert isinstance(e.value, TypeError) and isinstance(e.value, bm.BigmixedError)
    assert repr(kw[name]) in str(e.value)


def test_lmm_family_explains_itself(sleep):
    with pytest.raises(bm.OptionError, match=r"family='binomial' does not apply.*bm\.glmm"):
        bm.lmm("Reaction ~ Days + (1 | Subject)", sleep, family="binomial")


@pytest.mark.parametrize("kw, name", [
    (dict(nAGQ="1"), "nAGQ"), (dict(nAGQ=1.0), "nAGQ"), (dict(nAGQ=True), "nAGQ"),
    (dict(nAGQ=99), "nAGQ"), (dict(solver=3), "solver"), (dict(pirls=0), "pirls"),
])
def test_glmm_wrongly_typed_options(sleep, kw, name):
    with pytest.raises(bm.OptionError, match=rf"bm.glmm: option {name}=") as e:
        bm.glmm("y ~ Days + (1 | Subject)", binary(sleep), family="binomial", **kw)
    assert isinstance(e.value, ValueError)  # the old ValueError still catches it


@pytest.mark.parametrize("kw, name", [
    (dict(reml="yes"), "reml"), (dict(solver=3), "solver"), (dict(n_jobs="2"), "n_jobs"),
    (dict(keep_fits=None), "keep_fits"),
    (dict(family="binomial", nAGQ="1"), "nAGQ"),
])
def test_fit_many_wrongly_typed_options(sleep, kw, name):
    with pytest.raises(bm.OptionError, match=rf"fit_many: option {name}="):
        bm.fit_many("~ Days + (1 | Subject)", binary(sleep), ["Reaction"] if "family" not in kw else ["y"], **kw)


def test_iter_fits_checks_options_before_fitting(sleep):
    with pytest.raises(bm.OptionError, match="fit_many: option ordered='yes'"):
        bm.iter_fits("~ Days + (1 | Subject)", sleep, ["Reaction"], ordered="yes")


def test_fit_many_family_is_a_glmm(sleep):
    res = bm.fit_many("~ Days + (1 | Subject)", binary(sleep), ["y"], family="binomial", n_jobs=1)
    assert res.statistics["status"].tolist() == ["ok"]


@pytest.mark.parametrize("case, values, what", [
    ("constant_y", lambda y: np.full_like(y, 3.0), r"constant \(every value is 3\)"),
    ("zero_y", lambda y: np.zeros_like(y), "all zero"),
    ("scaled_1e200", lambda y: y * 1e200, r"magnitude up to 4\.66e\+202.*overflows"),
])
def test_degenerate_response_is_a_typed_error(sleep, case, values, what):
    ref = REF[case]
    assert ref["status"] == "fit"  # lme4 fits it ...
    assert ref["sigma"] in (0, "Inf")  # ... with a residual SD of 0 or Inf
    d = sleep.assign(Reaction=values(sleep.Reaction.to_numpy()))
    with pytest.raises(bm.DegenerateResponseError, match=what) as e:
        bm.lmm("Reaction ~ Days + (1 | Subject)", d)
    assert "'Reaction'" in str(e.value) and isinstance(e.value, bm.DesignError)


def test_large_but_finite_response_fits_as_lme4(sleep):
    ref = REF["scaled_1e150"]
    d = sleep.assign(Reaction=sleep.Reaction * 1e150)
    fit = bm.lmm("Reaction ~ Days + (1 | Subject)", d).fit()
    assert fit.sigma == pytest.approx(ref["sigma"], rel=1e-6)
    assert fit.theta[0] == pytest.approx(ref["theta"], rel=1e-5)
    np.testing.assert_allclose(fit.beta, ref["beta"], rtol=1e-7)


def test_transformed_constant_response_named_as_r(sleep):
    with pytest.raises(bm.DegenerateResponseError, match=r"response 'I\(Reaction \* 0\)'"):
        bm.lmm("I(Reaction * 0) ~ Days + (1 | Subject)", sleep)


def test_solver_names_agree_with_the_model():
    from bigmixed.fitting.model import SOLVERS
    from bigmixed.spec import checks

    assert checks.SOLVERS == SOLVERS


def test_fit_many_reports_degenerate_responses(sleep):
    d = sleep.assign(c=3.0, z=0.0, big=sleep.Reaction * 1e200)
    res = bm.fit_many("~ Days + (1 | Subject)", d, ["Reaction", "c", "z", "big"], n_jobs=1)
    st = res.statistics.set_index("response")
    assert st.loc["Reaction", "status"] == "ok"
    for name, what in (("c", "constant"), ("z", "all zero"), ("big", "overflows")):
        assert st.loc[name, "status"] == "error"
        assert st.loc[name, "error_type"] == "DegenerateResponseError"
        assert what in st.loc[name, "error"] and repr(name) in st.loc[name, "error"]


@pytest.mark.parametrize("reml", [True, False])
def test_glmm_reml_explains_itself(sleep, reml):
    with pytest.raises(bm.OptionError, match="does not apply to a GLMM.*maximum likelihood"):
        bm.glmm("y ~ Days + (1 | Subject)", binary(sleep), family="binomial", reml=reml)


def test_linear_mixed_model_constructor_checks_options(sleep):
    with pytest.raises(bm.OptionError, match="LinearMixedModel: option reml='yes'"):
        bm.LinearMixedModel("Reaction ~ Days + (1 | Subject)", sleep, reml="yes")
