"""emmeans-style marginal means and pairwise contrasts against R's emmeans 1.8.4-1
(bench/references_parity/{catint,catadd}_reml.json: emmeans(m, ~ arm, lmer.df = ...), pairs())."""
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import bigmixed as bm
from lme4_refs import load_data

PARITY = Path(__file__).resolve().parents[1] / "bench" / "references_parity"
CASES = [(n, m) for n in ("catint_reml", "catadd_reml") for m in ("satterthwaite", "kenward_roger")]


@pytest.fixture(scope="module")
def fits():
    out = {}
    for name in ("catint_reml", "catadd_reml"):
        ref = json.loads((PARITY / f"{name}.json").read_text())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", bm.BigmixedWarning)
            out[name] = (ref, bm.lmm(ref["formula"], load_data("catint.csv")).fit())
    return out


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.abs(b)))


@pytest.mark.parametrize("name,method", CASES)
def test_emmeans_match_r(fits, name, method):
    ref, fit = fits[name]
    r = ref["emmeans"][method]
    e = bm.emmeans(fit, "~ arm", ddf=method.replace("_", "-"))
    t = e.emmeans
    assert list(t["arm"]) == r["emmeans"]["arm"]
    assert rel(t["emmean"], r["emmeans"]["emmean"]) < 1e-6
    assert rel(t["SE"], r["emmeans"]["SE"]) < 1e-6
    assert rel(t["df"], r["emmeans"]["df"]) < 1e-4
    assert rel(t["lower.CL"], r["emmeans"]["lower.CL"]) < 1e-6
    assert rel(t["upper.CL"], r["emmeans"]["upper.CL"]) < 1e-6
    assert "Results are averaged over the levels of: sex" in t.attrs["messages"]


@pytest.mark.parametrize("name,method", CASES)
def test_pairs_match_r(fits, name, method):
    ref, fit = fits[name]
    r = ref["emmeans"][method]
    e = bm.emmeans(fit, "arm", ddf=method.replace("_", "-"))
    p = e.pairs(infer=True)  # Tukey, as emmeans' pairs()
    w = r["pairs_with_ci"]
    assert list(p["contrast"]) == w["contrast"]
    for c in ("estimate", "SE", "t.ratio", "lower.CL", "upper.CL"):
        assert rel(p[c], w[c]) < 1e-6, c
    assert rel(p["df"], w["df"]) < 1e-4
    # R's ptukey is itself inexact below ~1e-12: compare the p-values R can resolve
    ok = np.array(r["pairs"]["p.value"]) > 1e-8
    assert ok.any()
    assert rel(p["p.value"][ok], np.array(r["pairs"]["p.value"])[ok]) < 1e-5
    assert np.all(p["p.value"][~ok] < 1e-8)
    assert any("tukey method for comparing a family of 3" in m for m in p.attrs["messages"])
    # contrasts="pairwise" gives the same table
    c = bm.emmeans(fit, "arm", ddf=method.replace("_", "-"), contrasts="pairwise").contrasts
    np.testing.assert_array_equal(c["estimate"], p["estimate"])
    np.testing.assert_array_equal(c["p.value"], p["p.value"])


def test_reference_grid_as_emmeans(fits):
    ref, fit = fits["catint_reml"]
    g = bm.inference.emmeans.reference_grid(fit)
    rg = ref["emmeans"]["satterthwaite"]["ref_grid"]
    assert list(g["arm"].astype(str)) == rg["arm"]
    np.testing.assert_array_equal(g["sex"], rg["sex"])  # two values: kept as levels
    np.testing.assert_allclose(g["age"], rg["age"], rtol=1e-14)  # the mean over the rows


def test_additive_model_contrasts_are_coefficients(fits):
    """Property: without interactions, ctrl - drugA is -beta[armdrugA] and its Satterthwaite
    t test is the coefficient's own (same estimate magnitude, SE and df)."""
    _, fit = fits["catadd_reml"]
    p = bm.emmeans(fit, "arm").pairs(adjust="none")
    ft = fit.fixed_effects_test().set_index("term")
    assert p["estimate"][0] == pytest.approx(-ft.loc["armdrugA", "estimate"], rel=1e-12)
    assert p["SE"][0] == pytest.approx(ft.loc["armdrugA", "std_error"], rel=1e-10)
    assert p["df"][0] == pytest.approx(ft.loc["armdrugA", "df"], rel=1e-6)
    assert p["p.value"][0] == pytest.approx(ft.loc["armdrugA", "p_value"], rel=1e-6)


def test_adjustments(fits):
    _, fit = fits["catint_reml"]
    e = bm.emmeans(fit, "arm")
    none = e.pairs(adjust="none")
    raw = 2 * stats.t.sf(np.abs(none["t.ratio"]), none["df"])
    np.testing.assert_allclose(none["p.value"], raw, rtol=1e-12)
    bon = e.pairs(adjust="bonferroni", infer=True)
    np.testing.assert_allclose(bon["p.value"], np.minimum(1, 3 * raw), rtol=1e-12)
    q = stats.t.ppf(1 - 0.05 / 6, bon["df"])
    np.testing.assert_allclose(bon["upper.CL"] - bon["estimate"], q * bon["SE"], rtol=1e-12)
    tuk = e.pairs(infer=True)
    # Tukey's limits lie between the unadjusted and Bonferroni's
    w_none = e.pairs(adjust="none", infer=True)
    assert np.all(tuk["upper.CL"] - tuk["estimate"] > w_none["upper.CL"] - w_none["estimate"])
    assert np.all(tuk["upper.CL"] - tuk["estimate"] < bon["upper.CL"] - bon["estimate"])
    # emmeans are the equal-weight average of the grid's predictions over sex
    est = e.emmeans["emmean"].to_numpy()
    diffs = est[[0, 0, 1]] - est[[1, 2, 2]]
    np.testing.assert_allclose(none["estimate"], diffs, rtol=1e-12)
    with pytest.raises(ValueError, match="adjust"):
        e.pairs(adjust="scheffe-ish")
    with pytest.raises(ValueError, match="not variables"):
        bm.emmeans(fit, "treatment")


def test_two_specs_and_at(fits):
    _, fit = fits["catint_reml"]
    e = bm.emmeans(fit, ["arm", "sex"])
    assert len(e.emmeans) == 6
    assert list(e.emmeans["arm"][:3]) == ["ctrl", "drugA", "drugB"]  # first factor fastest
    e40 = bm.emmeans(fit, "arm", at={"age": 40.0})
    b = fit.params
    assert e40.emmeans["emmean"][0] == pytest.approx(
        b["(Intercept)"] + 40 * b["age"] + 0.5 * b["sex"], rel=1e-12)


def test_by_variable_matches_r(fits):
    """emmeans(m, ~ arm | sex): means and Tukey pairs within each value of sex."""
    ref, fit = fits["catint_reml"]
    r = ref["emmeans_by"]["satterthwaite"]
    for e in (bm.emmeans(fit, "~ arm | sex"), bm.emmeans(fit, "arm", by="sex")):
        t = e.emmeans
        assert list(t["arm"]) == r["emmeans"]["arm"]
        np.testing.assert_array_equal(t["sex"], r["emmeans"]["sex"])
        assert rel(t["emmean"], r["emmeans"]["emmean"]) < 1e-6
        assert rel(t["SE"], r["emmeans"]["SE"]) < 1e-6
        assert rel(t["df"], r["emmeans"]["df"]) < 1e-4
        p = e.pairs()
        assert list(p["contrast"]) == r["pairs"]["contrast"]
        np.testing.assert_array_equal(p["sex"], r["pairs"]["sex"])
        assert rel(p["estimate"], r["pairs"]["estimate"]) < 1e-6
        assert rel(p["df"], r["pairs"]["df"]) < 1e-4
        ok = np.array(r["pairs"]["p.value"]) > 1e-8
        assert rel(p["p.value"][ok], np.array(r["pairs"]["p.value"])[ok]) < 1e-5
        assert any("family of 3" in m for m in p.attrs["messages"])
