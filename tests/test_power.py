"""Power by simulation (bigmixed.power): calibration under the null, power near 1 for large
effects, agreement with the analytic power of a balanced design, determinism, and that each
simulated p-value is the one a user would get fitting that response."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import bigmixed as bm
from bigmixed.inference.power import binomial_ci, simulate_responses

G, M = 30, 6  # 30 groups of 6; x varies within groups, trt between (15 vs 15 groups)
SD_G, SIGMA = 0.7, 1.0


@pytest.fixture(scope="module")
def design():
    rng = np.random.default_rng(5)
    return pd.DataFrame({
        "g": np.repeat([f"g{i:02d}" for i in range(G)], M),
        "x": rng.standard_normal(G * M),
        "trt": np.repeat(np.arange(G) % 2, M).astype(float),
    })


FORMULA = "y ~ x + trt + (1 | g)"


@pytest.fixture(scope="module")
def null_x_mid_trt(design):
    """x: effect 0 (null); trt: 0.8 (mid power); 200 simulations, Satterthwaite."""
    return bm.power_simulation(FORMULA, design, effects={"(Intercept)": 1.0, "x": 0.0, "trt": 0.8},
                               variance_components={"g": SD_G}, sigma=SIGMA, nsim=200, seed=0)


def test_null_rejection_rate_is_alpha(null_x_mid_trt):
    r = null_x_mid_trt
    row = r.table.set_index("term").loc["x"]
    assert row["n_ok"] == 200 and r.n_failed == 0
    assert row["lower"] <= 0.05 <= row["upper"]
    assert abs(row["power"] - 0.05) < 0.04
    p = r.p_values["x"].to_numpy()
    assert p.shape == (200,) and np.all((p >= 0) & (p <= 1))
    # p-values under the null are uniform
    assert stats.kstest(p, "uniform").pvalue > 0.01


def test_mid_power_matches_the_analytic_power(null_x_mid_trt):
    # balanced between-group contrast: the group means are independent with variance
    # SD_G^2 + SIGMA^2 / M, the t test on 28 df has a noncentral t distribution
    se = np.sqrt(2 * (SD_G ** 2 + SIGMA ** 2 / M) / (G // 2))
    df = G - 2
    crit = stats.t.ppf(0.975, df)
    ncp = 0.8 / se
    analytic = stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp)
    row = null_x_mid_trt.table.set_index("term").loc["trt"]
    assert row["lower"] <= analytic <= row["upper"]
    # the estimates are unbiased
    est = null_x_mid_trt.estimates
    assert abs(est["trt"].mean() - 0.8) < 4 * est["trt"].std() / np.sqrt(len(est))


@pytest.mark.parametrize("test", ["satterthwaite", "lrt"])
def test_large_effect_power_near_one(design, test):
    r = bm.power_simulation(FORMULA, design, effects={"x": 1.0}, variance_components={"g": SD_G},
                            sigma=SIGMA, nsim=40, seed=3, test=test)
    assert r.power >= 0.95
    assert r.ci[1] == 1.0 or r.ci[1] > r.power
    assert r.table["term"].tolist() == ["x"]


def test_deterministic_for_a_seed(design):
    kw = {"effects": {"x": 0.2, "trt": 0.3}, "variance_components": {"g": SD_G}, "sigma": SIGMA}
    a = bm.power_simulation(FORMULA, design, nsim=8, seed=11, **kw)
    b = bm.power_simulation(FORMULA, design, nsim=8, seed=11, **kw)
    c = bm.power_simulation(FORMULA, design, nsim=8, seed=12, **kw)
    pd.testing.assert_frame_equal(a.p_values, b.p_values)
    pd.testing.assert_frame_equal(a.estimates, b.estimates)
    assert not np.allclose(a.p_values.to_numpy(), c.p_values.to_numpy())
    # simulation s has its own stream: a shorter run repeats the first simulations
    d = bm.power_simulation(FORMULA, design, nsim=3, seed=11, **kw)
    pd.testing.assert_frame_equal(d.p_values, a.p_values.iloc[:3])


@pytest.mark.parametrize("test", ["satterthwaite", "lrt"])
def test_p_values_are_those_of_ordinary_fits(design, test):
    kw = {"effects": {"(Intercept)": 2.0, "x": 0.25}, "variance_components": {"g": SD_G}, "sigma": SIGMA}
    r = bm.power_simulation(FORMULA, design, nsim=3, seed=7, term="x", test=test, **kw)
    ys = simulate_responses(FORMULA, design, nsim=3, seed=7, **kw)
    for s in range(3):
        df = design.assign(y=ys[s].to_numpy())
        if test == "lrt":
            full = bm.lmm(FORMULA, df, reml=False).fit()
            small = bm.lmm("y ~ trt + (1 | g)", df, reml=False).fit()
            p = bm.anova(small, full)["Pr(>Chisq)"].iloc[-1]
        else:
            fit = bm.lmm(FORMULA, df).fit()
            p = fit.fixed_effects_test().set_index("term").loc["x", "p_value"]
        assert r.p_values["x"].iloc[s] == pytest.approx(p, rel=1e-5, abs=1e-10)


def test_simulated_variance_components_are_recovered():
    # a slope model with a correlated covariance: one large simulated data set, fitted
    rng = np.random.default_rng(2)
    n_g, n_t = 400, 8
    d = pd.DataFrame({"g": np.repeat(np.arange(n_g), n_t), "time": np.tile(np.arange(n_t, dtype=float), n_g),
                      "z": rng.standard_normal(n_g * n_t)})
    cov = {"sd": [1.0, 0.3], "corr": 0.4}
    y = simulate_responses("~ time + z + (time | g)", d, {"(Intercept)": 3.0, "time": 0.2, "z": -0.5},
                           {"g": cov}, sigma=0.8, nsim=1, seed=4)[0]
    fit = bm.lmm("y ~ time + z + (time | g)", d.assign(y=y.to_numpy())).fit()
    vc = fit.variance_components
    sd = vc[vc["group"] == "g"].dropna(subset=["sd"]).set_index("term1")["sd"]
    assert sd["(Intercept)"] == pytest.approx(1.0, abs=0.1)
    assert sd["time"] == pytest.approx(0.3, abs=0.04)
    assert vc.iloc[-1]["group"] == "Residual"
    assert vc.iloc[-1]["sd"] == pytest.approx(0.8, abs=0.03)
    assert vc["corr"].dropna().iloc[0] == pytest.approx(0.4, abs=0.15)
    np.testing.assert_allclose(fit.params[["time", "z"]], [0.2, -0.5], atol=0.06)


def test_variance_components_forms_agree(design):
    pilot = bm.lmm(FORMULA, design.assign(y=np.random.default_rng(0).standard_normal(len(design)) +
                                           np.repeat(np.arange(G) * 0.1, M))).fit()
    table = pilot.variance_components
    sd_g = float(table["sd"].iloc[0])
    a = simulate_responses(FORMULA, design, {"x": 1.0}, table, nsim=2, seed=1)  # sigma: Residual row
    b = simulate_responses(FORMULA, design, {"x": 1.0}, {"g": sd_g}, sigma=pilot.sigma, nsim=2, seed=1)
    c = simulate_responses(FORMULA, design, {"x": 1.0}, {"g": [sd_g]}, sigma=pilot.sigma, nsim=2, seed=1)
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(b.to_numpy(), c.to_numpy(), rtol=1e-12)


def test_factor_term_is_tested_jointly():
    d = pd.DataFrame({"g": np.repeat(np.arange(12), 5), "arm": np.tile(list("abcde"), 12)})
    r = bm.power_simulation("~ arm + (1 | g)", d, effects={"armb": 3.0}, term="arm",
                            variance_components={"g": 0.5}, sigma=1.0, nsim=10, seed=0)
    row = r.table.iloc[0]
    assert row["coefficients"] == ["armb", "armc", "armd", "arme"]
    assert row["effect"] == [3.0, 0.0, 0.0, 0.0]
    assert r.power == 1.0
    assert "arm" in r.summary()


def test_binomial_ci_clopper_pearson():
    lo, hi = binomial_ci(10, 200, 0.95)
    assert lo == pytest.approx(stats.beta.ppf(0.025, 10, 191))
    assert hi == pytest.approx(stats.beta.ppf(0.975, 11, 190))
    assert binomial_ci(0, 10)[0] == 0.0 and binomial_ci(10, 10)[1] == 1.0


def test_input_errors(design):
    vc = {"g": SD_G}
    with pytest.raises(ValueError, match="unknown fixed-effect coefficient.*'xx'"):
        bm.power_simulation(FORMULA, design, {"xx": 1.0}, vc, sigma=1.0, nsim=1)
    with pytest.raises(ValueError, match="lacks group"):
        bm.power_simulation(FORMULA, design, {"x": 1.0}, {}, sigma=1.0, nsim=1)
    with pytest.raises(ValueError, match="give sigma"):
        bm.power_simulation(FORMULA, design, {"x": 1.0}, vc, nsim=1)
    with pytest.raises(ValueError, match="one number"):
        bm.power_simulation("y ~ x + (x | g)", design, {"x": 1.0}, vc, sigma=1.0, nsim=1)
    with pytest.raises(ValueError, match="test must be"):
        bm.power_simulation(FORMULA, design, {"x": 1.0}, vc, sigma=1.0, nsim=1, test="kr")
    with pytest.raises(ValueError, match="cannot test 'w'"):
        bm.power_simulation(FORMULA, design, {"x": 1.0}, vc, sigma=1.0, nsim=1, term="w")
