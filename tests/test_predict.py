"""Prediction, intervals, simulation and bootstrap (bigmixed/predict.py).

Predictions are compared with lme4's predict.merMod (bench/references_inference/inference.json);
standard errors with dense formulas on small data.
"""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import bigmixed as bm

from bigmixed.data_gen import generate_hdp, tablets

from lme4_refs import INFREF, load_data, fit_quiet

def newdata_for(case):
    df = load_data(case["data"])
    nd = df.iloc[case["rows"]].copy()
    for g, idx in case["new_levels"].items():
        v = nd[g].astype(str).to_numpy(dtype=object)
        v[np.atleast_1d(idx)] = "NEWLEVEL"
        nd[g] = v
    return df, nd


@pytest.mark.parametrize("label", sorted(INFREF["predict"]))
def test_predict_matches_lme4(label):
    case = INFREF["predict"][label]
    df, nd = newdata_for(case)
    fit = fit_quiet(case["formula"], df)
    tol = 1e-4 * fit.sigma
    np.testing.assert_allclose(fit.predict(nd), case["conditional"], atol=tol)
    np.testing.assert_allclose(fit.predict(nd, level="population"), case["population"], atol=tol)
    # unseen levels: NaN or an error on request
    new = np.zeros(len(nd), dtype=bool)
    for idx in case["new_levels"].values():
        new[np.atleast_1d(idx)] = True
    p = fit.predict(nd, unseen="nan")
    assert np.isnan(p[new]).all() and np.allclose(p[~new], np.asarray(case["conditional"])[~new], atol=tol)
    with pytest.raises(ValueError, match="NEWLEVEL"):
        fit.predict(nd, unseen="error")


def test_predict_on_fitting_rows_equals_fitted_values():
    df = load_data("crossed.csv")
    fit = fit_quiet("mobility ~ age + sex + (1 | doctor) + (1 | hospital)", df)
    np.testing.assert_allclose(fit.predict(df), fit.fittedvalues, rtol=0, atol=1e-10)
    np.testing.assert_allclose(fit.predict(df, level="population"), fit.fitted_marginal, atol=1e-10)
    np.testing.assert_array_equal(fit.predict(), fit.fittedvalues)
    nd = df.iloc[:5].copy()
    nd.loc[nd.index[1], "age"] = np.nan
    p = fit.predict(nd)
    assert np.isnan(p[1]) and np.isfinite(np.delete(p, 1)).all()
    with pytest.raises(ValueError):
        fit.predict(nd, level="marginal")


def _dense_pieces(fit):
    """Z (n x q), Lambda (q x q, relative) and Var(b | y) = sigma^2 Lambda (Lambda'Z'Z Lambda + I)^-1 Lambda'."""
    st = fit.structure
    n = fit.nobs
    blocks_Z, blocks_L = [], []
    for fi, f in enumerate(st.factors):
        P = f.n_columns
        Zf = np.zeros((n, f.n_levels * P))
        Zraw = np.ones((n, 1)) if f.unit_z else f.Z
        for c in range(P):
            Zf[np.arange(n), f.codes * P + c] = Zraw[:, c]
        blocks_Z.append(Zf)
        blocks_L.append(np.kron(np.eye(f.n_levels), st.T_of(fit.theta, fi)))
    Z = np.hstack(blocks_Z)
    from scipy.linalg import block_diag

    Lam = block_diag(*blocks_L)
    A = Lam.T @ Z.T @ Z @ Lam + np.eye(Z.shape[1])
    condvar = fit.sigma ** 2 * Lam @ np.linalg.solve(A, Lam.T)
    return Z, Lam, condvar


def test_prediction_standard_errors_dense_formulas():
    """Small crossed data: every variance term against dense linear algebra."""
    d = generate_hdp(n_doctors=12, seed=3, mean_patients=6, n_hospitals=4, hospital_sd=0.7).data
    fit = fit_quiet("mobility ~ age + sex + (1 | doctor) + (1 | hospital)", d)
    Z, Lam, condvar = _dense_pieces(fit)
    X, V, s2 = fit.design.X, fit.vcov, fit.sigma ** 2
    xvx = np.einsum("ij,jk,ik->i", X, V, X)
    # population-level confidence: sqrt(diag(X V X'))
    pc = fit.predict_interval(d, level="population", interval="confidence")
    np.testing.assert_allclose(pc["se"], np.sqrt(xvx), rtol=1e-10)
    np.testing.assert_allclose(pc["fit"], X @ fit.beta, rtol=1e-12)
    z = stats.norm.ppf(0.975)
    np.testing.assert_allclose(pc["upper"] - pc["fit"], z * pc["se"], rtol=1e-12)
    # population-level prediction: x'Vx + z'Gz + sigma^2 with G the unconditional covariance
    G = s2 * Lam @ Lam.T
    pp = fit.predict_interval(d, level="population", interval="prediction", coverage=0.9)
    np.testing.assert_allclose(pp["se"] ** 2, xvx + np.einsum("ij,jk,ik->i", Z, G, Z) + s2, rtol=1e-10)
    np.testing.assert_allclose(pp["upper"] - pp["fit"], stats.norm.ppf(0.95) * pp["se"], rtol=1e-12)
    # conditional (seen levels): x'Vx + sum over factors of z_f'Var(b_f|y)z_f (+ sigma^2); the
    # conditional covariance between the doctor and hospital effects is left out (as merTools)
    cc = fit.predict_interval(d, interval="confidence")
    zcz = sum(np.array([zcz_part(fit, condvar, Z, i, g) for i in range(len(d))])
              for g in ("doctor", "hospital"))
    np.testing.assert_allclose(cc["var_random"], zcz, rtol=1e-8)
    np.testing.assert_allclose(cc["se"] ** 2, xvx + zcz, rtol=1e-8)
    cp = fit.predict_interval(d)
    np.testing.assert_allclose(cp["se"] ** 2, xvx + zcz + s2, rtol=1e-8)
    np.testing.assert_allclose(cp["fit"], fit.fittedvalues, atol=1e-10)
    # an unseen hospital: its part of the variance is the unconditional one
    nd = d.iloc[:3].copy()
    nd["hospital"] = nd["hospital"].astype(str).to_numpy(dtype=object)
    nd.loc[nd.index[0], "hospital"] = "new"
    new = fit.predict_interval(nd)
    var_h = fit.variance_components.set_index("group").loc["hospital", "variance"]
    doc_part = cp["var_random"].iloc[0] - zcz_part(fit, condvar, Z, 0, "hospital")
    assert new["var_random"].iloc[0] == pytest.approx(doc_part + var_h, rel=1e-8)
    np.testing.assert_allclose(new["var_random"].iloc[1:], cp["var_random"].iloc[1:3], rtol=1e-10)


def zcz_part(fit, condvar, Z, row, group):
    """The part of z'Var(b|y)z at `row` that belongs to `group` (blocks of one factor)."""
    st = fit.structure
    off = 0
    for f in st.factors:
        width = f.n_levels * f.n_columns
        if f.group == group:
            z = Z[row, off:off + width]
            return float(z @ condvar[off:off + width, off:off + width] @ z)
        off += width
    raise KeyError(group)


def test_predict_interval_slopes_seen_levels():
    """(time | doctor): z'Var(b_g|y)z uses the full 2x2 conditional covariance of the level."""
    df = load_data("slope.csv")
    fit = fit_quiet("mobility ~ age + sex + time + (time | doctor)", df)
    Z, _, condvar = _dense_pieces(fit)  # one factor: the dense z'Var(b|y)z is exact
    rows = [0, 1, 2, 700, 1439]
    out = fit.predict_interval(df.iloc[rows], interval="confidence")
    want = np.einsum("ij,jk,ik->i", Z[rows], condvar, Z[rows])
    np.testing.assert_allclose(out["var_random"], want, rtol=1e-8)


# ---- simulate and bootstrap -------------------------------------------------------------------

def test_simulate_is_deterministic_and_has_the_model_moments():
    fit = fit_quiet("y ~ method + (1 | tablet)", tablets())
    Y = fit.simulate(20000, seed=11)
    assert Y.shape == (20, 20000)
    np.testing.assert_array_equal(Y[:, :5], fit.simulate(5, seed=11)[:, :5])
    assert not np.array_equal(fit.simulate(2, seed=1), fit.simulate(2, seed=2))
    vc = fit.variance_components.set_index("group")["variance"]
    s_b, s_e = vc["tablet"], vc["Residual"]
    # marginal mean X beta and covariance sigma^2 (Z Lambda Lambda' Z' + I)
    se_mean = np.sqrt((s_b + s_e) / Y.shape[1])
    assert np.all(np.abs(Y.mean(axis=1) - fit.fitted_marginal) < 5 * se_mean)
    C = np.cov(Y)
    codes = fit.structure.factors[0].codes
    same = codes[:, None] == codes[None, :]
    want = np.where(same, s_b, 0.0) + np.eye(20) * s_e
    assert np.max(np.abs(C - want)) < 0.06 * (s_b + s_e)
    # conditional on the fitted random effects: mean = fitted values, variance sigma^2
    Yc = fit.simulate(4000, seed=5, use_fitted_effects=True)
    assert np.all(np.abs(Yc.mean(axis=1) - fit.fittedvalues) < 5 * np.sqrt(s_e / 4000))
    assert np.allclose(Yc.var(axis=1), s_e, rtol=0.15)


def test_bootstrap_deterministic_and_sane():
    fit = fit_quiet("y ~ method + (1 | tablet)", tablets(missing=True))
    b1 = fit.bootstrap(60, seed=4)
    b2 = fit.bootstrap(60, seed=4)
    pd.testing.assert_frame_equal(b1.replicates, b2.replicates)
    assert b1.n_failed == 0 and b1.replicates.shape == (60, 4)
    assert list(b1.observed.index) == ["sd_(Intercept)|tablet", "sigma", "(Intercept)", "methodhplc"]
    ci = b1.ci(0.9)
    assert (ci["lower"] <= ci["upper"]).all()
    # bootstrap SEs of the fixed effects near the model's SEs
    ratio = b1.se()[fit.fixed_names].to_numpy() / fit.bse.to_numpy()
    assert np.all((ratio > 0.6) & (ratio < 1.5)), ratio
    # a user statistic
    b3 = fit.bootstrap(5, seed=1, func=lambda f: f.beta[1])
    assert b3.replicates.shape == (5, 1)
    ci = fit.confint(method="boot", nsim=20, seed=3)
    assert list(ci.index) == list(b1.observed.index)


def test_bootstrap_threads_do_not_change_the_numbers():
    import bigmixed as bm

    fit = bm.lmm("y ~ method + (1 | tablet)", tablets()).fit()
    one = fit.bootstrap(12, 7, n_jobs=1)
    two = fit.bootstrap(12, 7, n_jobs=2)
    pd.testing.assert_frame_equal(one.replicates, two.replicates)


# ---- population level without grouping columns (issue #16 item 4) ------------------------------

@pytest.mark.parametrize("label", sorted(INFREF["predict"]))
def test_population_predictions_need_no_grouping_columns(label):
    case = INFREF["predict"][label]
    df, nd = newdata_for(case)
    fit = fit_quiet(case["formula"], df)
    fixed_cols = list(fit.design.fixed_spec.fixed_vars)
    only_fixed = nd[fixed_cols]
    p = fit.predict(only_fixed, level="population")
    np.testing.assert_allclose(p, case["population"], atol=1e-4 * fit.sigma)
    np.testing.assert_array_equal(p, fit.predict(nd, level="population"))
    # bit-identical to the previous path (the whole design re-encoded, then X beta)
    from bigmixed.spec.design import design_matrices_for_newdata

    np.testing.assert_array_equal(p, design_matrices_for_newdata(fit.design, nd)[0] @ fit.beta)
    ci = fit.predict_interval(only_fixed, level="population", interval="confidence")
    np.testing.assert_array_equal(ci["fit"], p)
    full = fit.predict_interval(nd, level="population", interval="confidence")
    np.testing.assert_allclose(ci["se"], full["se"], rtol=1e-14)
    # the conditional level still needs the grouping columns, and says where to go
    group = fit.structure.terms[0].group_vars[0]
    with pytest.raises(bm.MissingColumnError, match=rf"'{group}'.*conditional.*level='population'"):
        fit.predict(only_fixed)


def test_population_prediction_interval_random_slopes():
    """(time | doctor): a new group's z'Gz needs the slope column, not the grouping column."""
    df = load_data("slope.csv")
    fit = fit_quiet("mobility ~ age + sex + (time | doctor)", df)
    nd = df.iloc[[0, 5, 900]]
    full = fit.predict_interval(nd, level="population")
    got = fit.predict_interval(nd[["age", "sex", "time"]], level="population")
    pd.testing.assert_frame_equal(got, full)
    T = fit.structure.T_of(fit.theta, 0)
    G = fit.sigma ** 2 * T @ T.T
    z = np.column_stack([np.ones(3), nd["time"].to_numpy()])
    np.testing.assert_allclose(got["var_random"], np.einsum("ij,jk,ik->i", z, G, z), rtol=1e-12)
    # confidence intervals at the population level need only the fixed-effects columns
    conf = fit.predict_interval(nd[["age", "sex"]], level="population", interval="confidence")
    np.testing.assert_allclose(conf["se"], full["se_fixed"], rtol=1e-14)
    assert (conf["var_random"] == 0).all()
    with pytest.raises(bm.MissingColumnError, match=r"'time' \(a random-slope column"):
        fit.predict_interval(nd[["age", "sex"]], level="population")
    with pytest.raises(bm.MissingColumnError, match="'doctor'"):
        fit.predict_interval(nd[["age", "sex", "time"]])


def test_population_prediction_missing_slope_value_is_not_nan():
    """Only the fixed part's columns make a population-level prediction NaN."""
    df = load_data("slope.csv")
    fit = fit_quiet("mobility ~ age + sex + (time | doctor)", df)
    nd = df.iloc[:4].copy()
    nd["time"] = np.nan
    nd["doctor"] = None
    p = fit.predict(nd, level="population")
    assert np.isfinite(p).all()
    np.testing.assert_array_equal(p, fit.predict(df.iloc[:4], level="population"))


def test_glmm_population_predictions_need_no_grouping_columns():
    import warnings

    df = load_data("slope.csv")
    df = df.assign(b=(df["mobility"] > df["mobility"].median()).astype(int))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        fit = bm.glmm("b ~ age + sex + (1 | doctor)", df, family="binomial").fit()
    nd = df.iloc[[0, 10, 500]]
    for type_ in ("link", "response"):
        full = fit.predict(nd, level="population", type=type_)
        np.testing.assert_array_equal(fit.predict(nd[["age", "sex"]], level="population", type=type_), full)
    eta = fit.predict(nd[["age", "sex"]], level="population")
    X = np.column_stack([np.ones(3), nd["age"], nd["sex"]])  # sex is numeric 0/1 here
    np.testing.assert_allclose(eta, X @ fit.beta, rtol=1e-12)
    with pytest.raises(bm.MissingColumnError, match="'doctor'"):
        fit.predict(nd[["age", "sex"]])
    # VarCorr of a GLMM: no residual row, as lme4's for binomial fits
    vc = fit.VarCorr()
    assert vc.sigma is None and "Residual" not in str(vc)
    assert list(vc.as_data_frame()["grp"]) == ["doctor"]
