"""Tests of the opt-in binary (``remission``) and count (``n_events``, ``exposure``)
outcomes of bigmixed.data_gen.generate_hdp."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, ndtr

from bigmixed.data_gen import (BINARY_BETA, BINARY_DOCTOR_SD, COUNT_BETA, generate_hdp)
from bigmixed.data_gen.__main__ import main as cli_main

COVS = ["age", "married", "sex", "wbc", "rbc"]
NAMES = ["intercept", *COVS]
REF = Path(__file__).resolve().parents[2] / "bench" / "references"

CONFIGS = [
    {},
    dict(n_doctors=60, seed=11, n_visits=4, irregular_times=True, slope_sd=0.3,
         slope_corr=-0.4, patient_sd=0.5, n_hospitals=6, missing_share=0.05),
    dict(n_doctors=80, seed=5, nested_in=5, missing_share=0.1),
    dict(n_doctors=200, seed=3, n_hospitals=100),
]


def _bytes_equal(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    for col in a.columns:
        if isinstance(a[col].dtype, pd.CategoricalDtype):
            assert list(a[col].cat.categories) == list(b[col].cat.categories)
            assert a[col].cat.codes.to_numpy().tobytes() == b[col].cat.codes.to_numpy().tobytes()
        else:
            assert a[col].dtype == b[col].dtype
            assert a[col].to_numpy().tobytes() == b[col].to_numpy().tobytes(), col


# --------------------------------------------------------------------------
# the existing columns do not move
# --------------------------------------------------------------------------
@pytest.mark.parametrize("kw", CONFIGS)
def test_existing_columns_bit_identical(kw):
    off = generate_hdp(**kw)
    on = generate_hdp(**kw, binary=True, counts=True, binary_link="probit")
    new = ["remission", "exposure", "n_events"]
    assert list(on.data.columns) == list(off.data.columns) + new
    _bytes_equal(on.data[list(off.data.columns)], off.data)
    for k, v in off.truth.items():
        if isinstance(v, np.ndarray):
            assert v.tobytes() == on.truth[k].tobytes(), k
        else:
            assert v == on.truth[k], k
    assert set(on.truth) - set(off.truth) == {"binary", "count"}
    # each outcome on its own: same columns as together
    b = generate_hdp(**kw, binary=True, binary_link="probit")
    c = generate_hdp(**kw, counts=True)
    np.testing.assert_array_equal(b.data["remission"], on.data["remission"])
    np.testing.assert_array_equal(c.data["n_events"], on.data["n_events"])
    np.testing.assert_array_equal(c.data["exposure"], on.data["exposure"])


def test_options_off_unchanged_against_committed_references():
    # bench/references/*.csv were written by the generator before the GLMM outcomes
    # existed: the generator still makes them byte for byte.
    index = json.loads((REF / "index.json").read_text())
    checked = 0
    for name, ds in index["datasets"].items():
        how = ds["made_by"]
        if not (how.startswith("generate_hdp(") and how.endswith(").data")):
            continue
        kw = eval("dict(" + how[len("generate_hdp("):-len(").data")] + ")")
        df = generate_hdp(**kw).data
        back = pd.read_csv(REF / ds["file"])
        assert list(back.columns) == list(df.columns), name
        for col in df.columns:
            if isinstance(df[col].dtype, pd.CategoricalDtype):
                assert (back[col].astype(str).to_numpy() == df[col].astype(str).to_numpy()).all()
            else:
                a, b = df[col].to_numpy(), back[col].to_numpy(dtype=np.float64)
                assert np.array_equal(a, b, equal_nan=True), (name, col)
        checked += 1
    assert checked >= 6


# --------------------------------------------------------------------------
# columns, determinism, truth
# --------------------------------------------------------------------------
def test_columns_and_truth_record():
    g = generate_hdp(seed=0, binary=True, counts=True, n_hospitals=20)
    d, t = g.data, g.truth
    assert d["remission"].dtype == np.int64 and set(np.unique(d["remission"])) == {0, 1}
    assert d["n_events"].dtype == np.int64 and d["n_events"].min() >= 0
    assert d["exposure"].dtype == np.float64
    assert d["exposure"].min() >= 0.5 and d["exposure"].max() <= 3.0
    np.testing.assert_array_equal(d["exposure"], d["exposure"].round(2))
    tb, tc = t["binary"], t["count"]
    assert tb["link"] == "logit" and tb["family"] == "binomial"
    assert tb["beta"] == BINARY_BETA["logit"] and tb["sd_doctor"] == BINARY_DOCTOR_SD["logit"]
    assert tb["u_doctor"].shape == (407,) and tb["u_hospital"].shape == (20,)
    assert tb["hospital_sd"] == 0.5 and tc["hospital_sd"] == 0.3
    assert tc["beta"] == COUNT_BETA and tc["offset"] == "log(exposure)"
    assert tc["link"] == "log" and tc["family"] == "poisson"
    assert tc["u_doctor"].shape == (407,)
    # the outcome effects are not the mobility ones
    assert not np.allclose(tb["u_doctor"], t["u_doctor"])
    # truth as JSON
    js = g.truth_jsonable()
    json.dumps(js)
    assert len(js["binary"]["u_doctor"]) == 407
    no_h = generate_hdp(50, seed=1, binary=True, counts=True).truth
    assert no_h["binary"]["u_hospital"] is None and no_h["binary"]["hospital_sd"] == 0.0
    assert no_h["count"]["u_hospital"] is None


def test_overrides_and_bad_arguments():
    g = generate_hdp(30, binary=True, binary_beta={"age": 0.0}, binary_doctor_sd=0.0,
                     counts=True, count_beta={"intercept": 0.5}, count_doctor_sd=0.0)
    assert g.truth["binary"]["beta"]["age"] == 0.0
    assert g.truth["binary"]["beta"]["rbc"] == BINARY_BETA["logit"]["rbc"]
    assert g.truth["binary"]["sd_doctor"] == 0.0
    assert g.truth["count"]["beta"]["intercept"] == 0.5
    assert generate_hdp(30, binary=True, binary_link="cloglog").truth["binary"]["beta"] \
        == BINARY_BETA["cloglog"]
    for kw in (dict(binary=True, binary_link="identity"),
               dict(binary=True, binary_beta={"nope": 1.0}),
               dict(counts=True, count_beta={"nope": 1.0}),
               dict(binary=True, binary_doctor_sd=-1.0),
               dict(counts=True, count_doctor_sd=float("nan"))):
        with pytest.raises(ValueError):
            generate_hdp(10, **kw)


@pytest.mark.parametrize("kw", CONFIGS[:3])
def test_deterministic(kw):
    a = generate_hdp(**kw, binary=True, counts=True)
    b = generate_hdp(**kw, binary=True, counts=True)
    _bytes_equal(a.data, b.data)
    for key in ("binary", "count"):
        assert a.truth[key]["u_doctor"].tobytes() == b.truth[key]["u_doctor"].tobytes()
    kw2 = dict(kw, seed=kw.get("seed", 0) + 1)
    c = generate_hdp(**kw2, binary=True, counts=True)
    assert not np.array_equal(a.truth["binary"]["u_doctor"], c.truth["binary"]["u_doctor"])


def test_missing_share_blanks_covariates_not_outcomes():
    full = generate_hdp(300, seed=2, binary=True, counts=True)
    miss = generate_hdp(300, seed=2, binary=True, counts=True, missing_share=0.2)
    for col in ("remission", "exposure", "n_events"):
        assert not miss.data[col].isna().any()
        np.testing.assert_array_equal(full.data[col], miss.data[col])
    assert miss.data["age"].isna().mean() > 0.15


# --------------------------------------------------------------------------
# event rates and the model behind the outcomes
# --------------------------------------------------------------------------
@pytest.mark.parametrize("link", ["logit", "probit", "cloglog"])
def test_event_rate(link):
    d = generate_hdp(seed=0, binary=True, binary_link=link).data
    assert 0.2 < d["remission"].mean() < 0.4


def test_count_mean():
    d = generate_hdp(seed=0, counts=True).data
    assert 1.0 < d["n_events"].mean() < 3.0
    # more follow-up, more events
    lo = d["n_events"][d["exposure"] < 1.0].mean()
    hi = d["n_events"][d["exposure"] > 2.5].mean()
    assert hi > 2.0 * lo


def test_outcomes_follow_truth():
    g = generate_hdp(5000, seed=4, n_hospitals=30, binary=True, counts=True)
    d, t = g.data, g.truth
    X = np.column_stack([np.ones(len(d)), d[COVS].to_numpy()])
    dc = d["doctor"].cat.codes.to_numpy()
    hc = d["hospital"].cat.codes.to_numpy()
    tb, tc = t["binary"], t["count"]
    eta = X @ np.array([tb["beta"][k] for k in NAMES]) + tb["u_doctor"][dc] + tb["u_hospital"][hc]
    p = expit(eta)
    y = d["remission"].to_numpy()
    # calibration by deciles of p: observed share within 4 SEs of the mean p
    bins = np.quantile(p, np.linspace(0, 1, 11))
    k = np.clip(np.searchsorted(bins, p, side="right") - 1, 0, 9)
    for j in range(10):
        s = k == j
        se = np.sqrt(p[s].mean() * (1 - p[s].mean()) / s.sum())
        assert abs(y[s].mean() - p[s].mean()) < 4 * se + 1e-3
    mu = d["exposure"].to_numpy() * np.exp(
        X @ np.array([tc["beta"][k] for k in NAMES]) + tc["u_doctor"][dc] + tc["u_hospital"][hc])
    n = d["n_events"].to_numpy()
    assert abs(n.sum() - mu.sum()) < 4 * np.sqrt(mu.sum())
    # Pearson dispersion of a Poisson: about 1
    assert abs(np.mean((n - mu) ** 2 / mu) - 1.0) < 0.03
    # doctors with a higher realised effect have more events
    m = pd.Series(y - p).groupby(dc).size()
    assert m.size == 5000
    share = pd.Series(y).groupby(dc).mean().to_numpy()
    assert np.corrcoef(share, tb["u_doctor"])[0, 1] > 0.3


# --------------------------------------------------------------------------
# recovery of the fixed effects by a GLM (no random effects), numpy IRLS
# --------------------------------------------------------------------------
def _irls(X, y, link, offset=None, iters=30):
    """Maximum-likelihood GLM by Fisher scoring: (beta, SEs)."""
    sc = X.std(axis=0)
    sc[0] = 1.0
    Z = X / sc                       # scaled columns (wbc ~ 6000)
    off = np.zeros(len(y)) if offset is None else offset
    b = np.zeros(Z.shape[1])
    if link == "log":
        b[0] = np.log(y.mean()) - off.mean()
    for _ in range(iters):
        eta = Z @ b + off
        if link == "logit":
            mu = expit(eta)
            dmu = mu * (1 - mu)
            var = dmu
        elif link == "probit":
            mu = ndtr(eta)
            dmu = np.exp(-0.5 * eta ** 2) / np.sqrt(2 * np.pi)
            var = mu * (1 - mu)
        elif link == "cloglog":
            mu = -np.expm1(-np.exp(eta))
            dmu = np.exp(eta - np.exp(eta))
            var = mu * (1 - mu)
        else:  # log
            mu = np.exp(eta)
            dmu = mu
            var = mu
        w = dmu ** 2 / var
        info = Z.T @ (w[:, None] * Z)
        step = np.linalg.solve(info, Z.T @ ((y - mu) * dmu / var))
        b += step
        if np.max(np.abs(step)) < 1e-10:
            break
    cov = np.linalg.inv(info)
    return b / sc, np.sqrt(np.diag(cov)) / sc


@pytest.mark.parametrize("link", ["logit", "probit", "cloglog"])
def test_binary_beta_recoverable(link):
    g = generate_hdp(10_000, seed=31, binary=True, binary_link=link,
                     binary_doctor_sd=0.0)   # 210,000 rows, a plain GLM
    d = g.data
    X = np.column_stack([np.ones(len(d)), d[COVS].to_numpy()])
    coef, se = _irls(X, d["remission"].to_numpy().astype(float), link)
    truth = np.array([g.truth["binary"]["beta"][k] for k in NAMES])
    z = (coef - truth) / se
    assert np.all(np.abs(z) < 4.5), (coef, truth, z)


def test_count_beta_recoverable():
    g = generate_hdp(10_000, seed=32, counts=True, count_doctor_sd=0.0)
    d = g.data
    X = np.column_stack([np.ones(len(d)), d[COVS].to_numpy()])
    coef, se = _irls(X, d["n_events"].to_numpy().astype(float), "log",
                     offset=np.log(d["exposure"].to_numpy()))
    truth = np.array([COUNT_BETA[k] for k in NAMES])
    z = (coef - truth) / se
    assert np.all(np.abs(z) < 4.5), (coef, truth, z)


def test_doctor_sd_realised():
    t = generate_hdp(20_000, seed=2, mean_patients=3, min_patients=2, max_patients=4,
                     binary=True, counts=True, binary_link="probit").truth
    assert abs(t["binary"]["u_doctor"].std() - 0.6) < 0.02
    assert abs(t["count"]["u_doctor"].std() - 0.5) < 0.02
    assert abs(np.corrcoef(t["binary"]["u_doctor"], t["count"]["u_doctor"])[0, 1]) < 0.03


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------
def test_cli_binary_counts(tmp_path, capsys):
    out, truth = tmp_path / "hdp.csv", tmp_path / "truth.json"
    assert cli_main(["--n-doctors", "40", "--seed", "3", "--binary", "--binary-link",
                     "cloglog", "--counts", "--count-doctor-sd", "0.2",
                     "--out", str(out), "--truth", str(truth)]) == 0
    capsys.readouterr()
    d = pd.read_csv(out)
    ref = generate_hdp(40, seed=3, binary=True, binary_link="cloglog", counts=True,
                       count_doctor_sd=0.2).data
    np.testing.assert_array_equal(d["remission"], ref["remission"])
    np.testing.assert_array_equal(d["n_events"], ref["n_events"])
    t = json.loads(truth.read_text())
    assert t["binary"]["link"] == "cloglog" and t["count"]["sd_doctor"] == 0.2
