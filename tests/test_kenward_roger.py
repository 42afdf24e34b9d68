"""Kenward-Roger (pbkrtest 0.5.2 through lmerTest 3.1.3) against the committed references
(bench/references_parity/{slope,catint,catadd,crossed,uncorr,nested}_reml.json: vcovAdj, summary(ddf = "Kenward-Roger")
and anova(ddf = "Kenward-Roger")).

Two comparisons: at R's own estimates (``model.results_at(R's theta)``: the same point, so
the agreement is that of the formulas, ~1e-9), and at bigmixed's optimum (slope: R's default
fit stops ~1e-5 away in theta, which moves the df by ~2e-6 relative)."""
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import bigmixed as bm
from bigmixed.inference.kenward_roger import KenwardRogerSizeError, kr_state, vcov_kenward_roger
from lme4_refs import load_data

PARITY = Path(__file__).resolve().parents[1] / "bench" / "references_parity"
CASES = [("slope_reml", "slope.csv"), ("catint_reml", "catint.csv"), ("catadd_reml", "catint.csv"),
         ("crossed_reml", "crossed.csv"), ("uncorr_reml", "slope.csv"),
         ("nested_reml", "nested.csv")]


def load(name, data):
    ref = json.loads((PARITY / f"{name}.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        fit = bm.lmm(ref["formula"], load_data(data)).fit()
    at_r = fit.model.results_at(np.array(list(ref["theta"].values())))
    return ref, fit, at_r


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def case(request):
    return load(*request.param)


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.abs(b)))


def check_coefficients(fit, kr, tol_df, tol_se):
    t = fit.fixed_effects_test(ddf="kenward-roger")
    c = kr["coefficients"]
    names = list(fit.fixed_names)
    assert list(t["term"]) == c["names"]
    assert rel(t["df"], [c["df"][n] for n in names]) < tol_df
    assert rel(t["std_error"], [c["Std. Error"][n] for n in names]) < tol_se
    assert rel(t["t_value"], [c["t value"][n] for n in names]) < tol_se
    assert rel(t["p_value"], [c["Pr(>|t|)"][n] for n in names]) < 100 * tol_se
    assert t.attrs["ddf_method"] == "Kenward-Roger's method (pbkrtest)"


def check_anova(fit, kr, tol_df, tol_f):
    a = fit.anova_terms(ddf="kenward-roger")
    r = kr["anova"]
    assert list(a["term"]) == r["rows"]
    np.testing.assert_array_equal(a["num_df"], r["NumDF"])
    assert rel(a["den_df"], r["DenDF"]) < tol_df
    assert rel(a["F_value"], r["F value"]) < tol_f
    assert rel(a["sum_sq"], r["Sum Sq"]) < tol_f
    assert rel(a["mean_sq"], r["Mean Sq"]) < tol_f
    assert rel(a["p_value"], r["Pr(>F)"]) < 100 * tol_f
    assert "Kenward-Roger" in a.attrs["heading"]


def test_vcov_adjusted_at_r_estimates(case):
    ref, _, at_r = case
    V = np.array(ref["kenward_roger"]["vcov_adjusted"])
    got = vcov_kenward_roger(at_r).to_numpy()
    assert np.max(np.abs(got - V)) / np.max(np.abs(V)) < 1e-8
    assert rel(np.diag(got), np.diag(V)) < 1e-8


def test_tables_at_r_estimates(case):
    ref, _, at_r = case
    check_coefficients(at_r, ref["kenward_roger"], 1e-8, 1e-8)
    check_anova(at_r, ref["kenward_roger"], 1e-8, 1e-7)


def test_tables_at_own_optimum(case):
    ref, fit, _ = case
    check_coefficients(fit, ref["kenward_roger"], 1e-4, 1e-4)
    check_anova(fit, ref["kenward_roger"], 1e-4, 1e-4)


def test_adjustment_is_positive_semidefinite(case):
    """Phi_A - Phi = 2 Phi U Phi: KR inflates every variance (PSD here)."""
    _, fit, _ = case
    st = kr_state(fit)
    w = np.linalg.eigvalsh(st.phi_adj - st.phi)
    assert w.min() >= -1e-10 * np.abs(st.phi).max()
    assert np.all(np.diag(st.phi_adj) >= np.diag(st.phi))


def test_invariant_to_rescaling_a_covariate():
    """KR's df and t are invariant under X -> X A: age in decades gives the same df and t."""
    df = load_data("catint.csv")
    df2 = df.copy()
    df2["age"] = df2["age"] / 10
    f1 = bm.lmm("mobility ~ age * arm + sex + (1 | doctor)", df).fit()
    f2 = bm.lmm("mobility ~ age * arm + sex + (1 | doctor)", df2).fit()
    t1 = f1.fixed_effects_test(ddf="kr")
    t2 = f2.fixed_effects_test(ddf="kr")
    assert rel(t2["df"], t1["df"]) < 1e-6
    assert rel(t2["t_value"], t1["t_value"]) < 1e-6
    a1, a2 = f1.anova_terms(ddf="kr"), f2.anova_terms(ddf="kr")
    assert rel(a2["den_df"], a1["den_df"]) < 1e-6


def test_size_limit_is_a_typed_error():
    ref, fit, _ = load(*CASES[2])
    with pytest.raises(KenwardRogerSizeError, match="max_random_effects"):
        kr_state(fit, max_random_effects=10)
    assert issubclass(KenwardRogerSizeError, bm.BigmixedError)
    assert kr_state(fit, max_random_effects=60).phi_adj.shape == (5, 5)


def test_ml_fit_is_refused():
    df = load_data("catint.csv")
    ml = bm.lmm("mobility ~ age + arm + sex + (1 | doctor)", df, reml=False).fit()
    with pytest.raises(ValueError, match="REML"):
        ml.fixed_effects_test(ddf="kenward-roger")


def test_ddf_names():
    ref, fit, _ = load(*CASES[2])
    a = fit.fixed_effects_test(ddf="Kenward-Roger")["df"]
    b = fit.fixed_effects_test(ddf="kr")["df"]
    np.testing.assert_array_equal(a, b)
    assert "Kenward-Roger" in fit.summary(ddf="kenward-roger")
