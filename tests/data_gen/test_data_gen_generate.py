"""Tests of bigmixed.data_gen: the hdp-style generator and the tablet data."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from bigmixed.data_gen import SEED_BETA, GeneratedData, generate_hdp, tablets
from bigmixed.data_gen.__main__ import main as cli_main

COVS = ["age", "married", "sex", "wbc", "rbc"]


def _frame_hash(df: pd.DataFrame) -> np.ndarray:
    return pd.util.hash_pandas_object(df, index=True).to_numpy()


def _is_sorted_categorical(s: pd.Series) -> bool:
    cats = list(s.cat.categories)
    return cats == sorted(cats)


# --------------------------------------------------------------------------
# sizes
# --------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 7, 12345])
def test_default_is_seeds_size(seed):
    g = generate_hdp(seed=seed)
    assert isinstance(g, GeneratedData)
    d = g.data
    assert len(d) == 8525
    assert d["doctor"].nunique() == 407
    assert list(d.columns) == ["doctor", *COVS, "mobility"]
    n = d.groupby("doctor", observed=True).size()
    assert n.min() >= 2 and n.max() <= 40
    np.testing.assert_array_equal(n.to_numpy(), g.truth["n_per_doctor"])
    assert g.truth["n_rows"] == 8525 and g.truth["n_doctors"] == 407


def test_default_sizes_cover_range():
    n = generate_hdp().truth["n_per_doctor"]
    # the seeds' 2..40 spread (discrete uniform before the total is fixed)
    assert n.min() == 2 and n.max() == 40
    assert 18 < n.mean() < 24
    assert 8 < n.std() < 14


@pytest.mark.parametrize("kw", [
    dict(n_doctors=50),
    dict(n_doctors=1000, mean_patients=5),
    dict(n_doctors=1000, mean_patients=38),
    dict(n_doctors=300, min_patients=10, max_patients=12, mean_patients=11),
    dict(n_doctors=20, min_patients=7, max_patients=7, mean_patients=7),
    dict(n_doctors=100, n_patients=250),   # forced to the lower bound region
    dict(n_doctors=100, n_patients=4000),  # upper bound
])
def test_patients_per_doctor_bounds(kw):
    n_doctors = kw.pop("n_doctors")
    g = generate_hdp(n_doctors, seed=3, **kw)
    lo, hi = kw.get("min_patients", 2), kw.get("max_patients", 40)
    n = g.truth["n_per_doctor"]
    assert n.size == n_doctors
    assert n.min() >= lo and n.max() <= hi
    want = kw.get("n_patients", round(n_doctors * kw.get("mean_patients", 21)))
    assert n.sum() == want == len(g.data)
    counts = g.data.groupby("doctor", observed=True).size().to_numpy()
    np.testing.assert_array_equal(counts, n)


def test_bad_arguments():
    with pytest.raises(ValueError):
        generate_hdp(10, slope_sd=0.3)  # needs visits
    with pytest.raises(ValueError):
        generate_hdp(10, patient_sd=0.3)
    with pytest.raises(ValueError):
        generate_hdp(10, n_hospitals=3, nested_in=2)
    with pytest.raises(ValueError):
        generate_hdp(10, n_patients=10)  # < 10 * 2
    with pytest.raises(ValueError):
        generate_hdp(10, mean_patients=50)
    with pytest.raises(ValueError):
        generate_hdp(10, missing_share=1.0)
    with pytest.raises(ValueError):
        generate_hdp(10, n_visits=3, slope_sd=0.3, slope_corr=1.5)
    with pytest.raises(ValueError):
        generate_hdp(10, beta={"nonsense": 1.0})


# --------------------------------------------------------------------------
# determinism
# --------------------------------------------------------------------------
ALL_OPTIONS = dict(n_visits=4, irregular_times=True, slope_sd=0.3, slope_corr=-0.4,
                   patient_sd=0.5, n_hospitals=6, missing_share=0.05)


@pytest.mark.parametrize("kw", [{}, ALL_OPTIONS, dict(nested_in=5, missing_share=0.1)])
def test_deterministic(kw, tmp_path):
    a = generate_hdp(60, seed=11, **kw)
    b = generate_hdp(60, seed=11, **kw)
    pd.testing.assert_frame_equal(a.data, b.data, check_exact=True)
    np.testing.assert_array_equal(_frame_hash(a.data), _frame_hash(b.data))
    for col in a.data.columns:
        if a.data[col].dtype == np.float64:
            assert a.data[col].to_numpy().tobytes() == b.data[col].to_numpy().tobytes()
    for k, v in a.truth.items():
        if isinstance(v, np.ndarray):
            assert v.tobytes() == b.truth[k].tobytes()
        else:
            assert v == b.truth[k]
    a.to_csv(tmp_path / "a.csv")
    b.to_csv(tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    c = generate_hdp(60, seed=12, **kw)
    assert not np.array_equal(_frame_hash(a.data), _frame_hash(c.data))


def test_options_do_not_disturb_other_draws():
    base = generate_hdp(80, seed=5)
    miss = generate_hdp(80, seed=5, missing_share=0.2)
    hosp = generate_hdp(80, seed=5, n_hospitals=4, hospital_sd=0.0)
    for col in ["married", "sex"]:
        np.testing.assert_array_equal(base.data[col], miss.data[col])
    keep = miss.data["age"].notna()
    np.testing.assert_array_equal(base.data["age"][keep], miss.data["age"][keep])
    np.testing.assert_array_equal(base.data["mobility"], hosp.data["mobility"])


# --------------------------------------------------------------------------
# options and columns
# --------------------------------------------------------------------------
def test_dtypes_and_ids():
    g = generate_hdp(1200, seed=2, n_visits=3, n_hospitals=12)
    d = g.data
    assert list(d.columns) == ["doctor", "patient", "time", "hospital", *COVS, "mobility"]
    for col in ["doctor", "patient", "hospital"]:
        assert isinstance(d[col].dtype, pd.CategoricalDtype)
        assert _is_sorted_categorical(d[col])
        assert not d[col].isna().any()
    for col in ["time", *COVS, "mobility"]:
        assert d[col].dtype == np.float64
    assert d["doctor"].cat.categories[0] == "d0001"
    assert d["doctor"].cat.categories[-1] == "d1200"
    assert set(np.unique(d["married"])) <= {0.0, 1.0}
    assert set(np.unique(d["sex"])) <= {0.0, 1.0}
    # rows are grouped by doctor, in category order
    assert (np.diff(d["doctor"].cat.codes.to_numpy()) >= 0).all()
    # patient ids start with their doctor's id and are unique overall
    assert (d["patient"].astype(str).str.slice(0, 5) == d["doctor"].astype(str)).all()
    assert d["patient"].nunique() == g.truth["n_patients"]
    # plausibility of the covariates (the notes' example rows)
    assert 50 < d["age"].mean() < 64
    assert 5500 < d["wbc"].mean() < 6500
    assert 4.5 < d["rbc"].mean() < 4.9
    np.testing.assert_array_equal(d["age"], d["age"].round(2))


def test_repeated_visits():
    V = 5
    g = generate_hdp(40, seed=1, n_visits=V, slope_sd=0.3, slope_corr=0.5, patient_sd=0.7)
    d = g.data
    P = g.truth["n_patients"]
    assert len(d) == P * V
    assert (d.groupby("patient", observed=True).size() == V).all()
    np.testing.assert_array_equal(d["time"].to_numpy(), np.tile(np.arange(V, dtype=float), P))
    # patient-level covariates are constant within patient
    for col in ["age", "married", "sex"]:
        assert (d.groupby("patient", observed=True)[col].nunique() == 1).all()
    # patients nested in doctors
    assert (d.groupby("patient", observed=True)["doctor"].nunique() == 1).all()
    t = g.truth
    assert t["slope_doctor"].shape == (40,) and t["u_patient"].shape == (P,)
    assert t["slope_sd"] == 0.3 and t["slope_corr"] == 0.5 and t["patient_sd"] == 0.7
    assert "time" in t["beta"]


def test_irregular_times():
    g = generate_hdp(30, seed=1, n_visits=4, irregular_times=True)
    t = g.data["time"].to_numpy().reshape(-1, 4)
    assert (t[:, 0] == 0).all()
    assert (np.diff(t, axis=1) > 0).all()
    assert not np.array_equal(t[0], np.arange(4.0))


def test_slope_correlation_realised():
    g = generate_hdp(20000, seed=4, n_visits=2, slope_sd=0.5, slope_corr=0.6,
                     min_patients=2, max_patients=2, mean_patients=2)
    u, s = g.truth["u_doctor"], g.truth["slope_doctor"]
    assert abs(np.corrcoef(u, s)[0, 1] - 0.6) < 0.03
    assert abs(s.std() - 0.5) < 0.02
    assert abs(u.std() - 1.0) < 0.03


def test_crossed_hospitals():
    g = generate_hdp(200, seed=9, n_hospitals=15, hospital_sd=0.8)
    d = g.data
    assert d["hospital"].nunique() == 15
    assert len(d["hospital"].cat.categories) == 15
    # crossed: doctors see patients in several hospitals
    assert d.groupby("doctor", observed=True)["hospital"].nunique().mean() > 5
    assert g.truth["u_hospital"].shape == (15,)
    assert g.truth["hospital_sd"] == 0.8 and g.truth["hospital_design"] == "crossed"


def test_nested_hospitals():
    g = generate_hdp(200, seed=9, nested_in=7)
    d = g.data
    assert (d.groupby("doctor", observed=True)["hospital"].nunique() == 1).all()
    per_h = d.groupby("hospital", observed=True)["doctor"].nunique()
    assert len(per_h) == 7 and per_h.min() >= 200 // 7
    h_of_d = g.truth["hospital_of_doctor"]
    first = d.groupby("doctor", observed=True)["hospital"].first().cat.codes.to_numpy()
    np.testing.assert_array_equal(first, h_of_d)
    assert g.truth["hospital_design"] == "nested"


def test_outcome_matches_truth():
    # mobility is exactly the model with the realised effects plus a residual
    g = generate_hdp(300, seed=8, n_visits=3, slope_sd=0.4, slope_corr=0.2,
                     patient_sd=0.6, n_hospitals=5, residual_sd=0.0, time_effect=0.1)
    d, t = g.data, g.truth
    b = t["beta"]
    X = d[COVS].to_numpy()
    fixed = b["intercept"] + X @ np.array([b[c] for c in COVS]) + b["time"] * d["time"]
    dc = d["doctor"].cat.codes.to_numpy()
    rand = (t["u_doctor"][dc] + t["slope_doctor"][dc] * d["time"]
            + t["u_patient"][d["patient"].cat.codes.to_numpy()]
            + t["u_hospital"][d["hospital"].cat.codes.to_numpy()])
    np.testing.assert_allclose(d["mobility"], fixed + rand, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------
# recoverability, missingness, scale
# --------------------------------------------------------------------------
def test_fixed_effects_recoverable_by_ols():
    g = generate_hdp(50_000, seed=21, doctor_sd=0.0)  # 1e6 rows, no random effects
    d = g.data
    assert len(d) == 1_050_000
    X = np.column_stack([np.ones(len(d)), d[COVS].to_numpy()])
    y = d["mobility"].to_numpy()
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    sigma = resid.std()
    se = sigma * np.sqrt(np.diag(np.linalg.inv(X.T @ X)))
    truth = np.array([SEED_BETA[k] for k in ["intercept", *COVS]])
    z = (coef - truth) / se
    assert np.all(np.abs(z) < 4.5), (coef, truth, z)
    assert abs(sigma - 1.0) < 0.01


def test_doctor_sd_visible():
    g = generate_hdp(seed=0)
    t = g.truth
    assert t["sd_doctor"] == 1.0 and t["residual_sd"] == 1.0
    assert t["u_doctor"].shape == (407,)
    assert 0.85 < t["u_doctor"].std() < 1.15
    # doctor means of the outcome vary far more than residual noise alone would allow
    m = g.data.groupby("doctor", observed=True)["mobility"].mean()
    assert np.corrcoef(m.to_numpy(), t["u_doctor"])[0, 1] > 0.9


@pytest.mark.parametrize("share", [0.05, 0.3])
def test_missing_share(share):
    g = generate_hdp(2000, seed=6, missing_share=share)
    d = g.data
    for col in ["age", "wbc", "rbc", "mobility"]:
        assert abs(d[col].isna().mean() - share) < 0.01, col
    for col in ["doctor", "married", "sex"]:
        assert not d[col].isna().any()
    assert g.truth["missing_share"] == share
    assert not generate_hdp(2000, seed=6).data.isna().any().any()


def test_large_generation_runs():
    # ~1e6 rows; should take well under a second or two (not asserted)
    g = generate_hdp(48_000, seed=1)
    assert len(g.data) == 48_000 * 21
    assert g.data["doctor"].nunique() == 48_000
    assert g.data["doctor"].cat.codes.dtype.itemsize <= 4


# --------------------------------------------------------------------------
# output and CLI
# --------------------------------------------------------------------------
def test_writers_roundtrip(tmp_path):
    g = generate_hdp(25, seed=3, n_visits=2, n_hospitals=3, missing_share=0.1)
    g.to_parquet(tmp_path / "x.parquet")
    back = pd.read_parquet(tmp_path / "x.parquet")
    pd.testing.assert_frame_equal(back, g.data, check_categorical=False)
    g.to_csv(tmp_path / "x.csv")
    back = pd.read_csv(tmp_path / "x.csv")
    assert list(back.columns) == list(g.data.columns)
    assert len(back) == len(g.data)
    np.testing.assert_allclose(back["mobility"], g.data["mobility"], rtol=1e-14)
    g.truth_to_json(tmp_path / "t.json")
    t = json.loads((tmp_path / "t.json").read_text())
    assert t["beta"]["intercept"] == 4.782 and len(t["u_doctor"]) == 25


def test_cli_parquet_and_truth(tmp_path, capsys):
    out, truth = tmp_path / "hdp.parquet", tmp_path / "truth.json"
    rc = cli_main(["--n-doctors", "407", "--seed", "1", "--n-visits", "5",
                   "--slope-sd", "0.3", "--out", str(out), "--truth", str(truth)])
    assert rc == 0
    err = capsys.readouterr().err
    assert "42625 rows" in err and "407 doctors" in err and err.count("\n") == 1
    d = pd.read_parquet(out)
    assert len(d) == 8525 * 5
    assert {"doctor", "patient", "time", "mobility"} <= set(d.columns)
    ref = generate_hdp(407, seed=1, n_visits=5, slope_sd=0.3).data
    np.testing.assert_array_equal(d["mobility"].to_numpy(), ref["mobility"].to_numpy())
    t = json.loads(truth.read_text())
    assert t["slope_sd"] == 0.3 and len(t["slope_doctor"]) == 407


def test_cli_csv(tmp_path, capsys):
    out = tmp_path / "hdp.csv"
    assert cli_main(["--seed", "2", "--missing-share", "0.1", "--nested-in", "10",
                     "--out", str(out)]) == 0
    assert "8525 rows" in capsys.readouterr().err
    d = pd.read_csv(out)
    assert len(d) == 8525 and d["doctor"].nunique() == 407
    assert d["hospital"].nunique() == 10
    assert 0.07 < d["age"].isna().mean() < 0.13


def test_cli_subprocess_and_errors(tmp_path):
    out = tmp_path / "t.csv"
    r = subprocess.run([sys.executable, "-m", "bigmixed.data_gen", "--n-doctors", "30",
                        "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "630 rows, 30 doctors" in r.stderr
    assert len(pd.read_csv(out)) == 630
    r = subprocess.run([sys.executable, "-m", "bigmixed.data_gen", "--n-doctors", "30",
                        "--slope-sd", "0.3"], capture_output=True, text=True)
    assert r.returncode == 2 and "n_visits" in r.stderr
    with pytest.raises(SystemExit):
        cli_main(["--out", str(tmp_path / "x.txt")])


# --------------------------------------------------------------------------
# tablets
# --------------------------------------------------------------------------
def test_tablets_complete():
    d = tablets()
    assert d.shape == (20, 3)
    assert list(d["tablet"].cat.categories) == [str(i) for i in range(1, 11)]
    assert list(d["method"].cat.categories) == ["nir", "hplc"]
    assert not d["y"].isna().any()
    w = d.pivot(index="tablet", columns="method", values="y")
    np.testing.assert_allclose(
        w["hplc"], [10.4, 10.6, 10.2, 10.1, 10.3, 10.7, 10.3, 10.9, 10.1, 9.8])
    np.testing.assert_allclose(
        w["nir"], [10.1, 10.8, 10.2, 9.9, 11.0, 10.5, 10.2, 10.9, 10.4, 9.9])


def test_tablets_missing():
    d = tablets(missing=True)
    assert d.shape == (40, 3)
    assert list(d["tablet"].cat.categories) == [str(i) for i in range(1, 21)]
    assert (d.groupby("tablet", observed=True).size() == 2).all()
    w = d.pivot(index="tablet", columns="method", values="y")
    np.testing.assert_allclose(w["nir"].iloc[10:15], [10.8, 9.8, 10.5, 10.3, 9.7])
    assert w["hplc"].iloc[10:15].isna().all()
    np.testing.assert_allclose(w["hplc"].iloc[15:20], [10.3, 9.6, 10.0, 10.2, 9.9])
    assert w["nir"].iloc[15:20].isna().all()
    assert d["y"].isna().sum() == 10
    pd.testing.assert_frame_equal(d.iloc[:20].reset_index(drop=True), tablets(),
                                  check_categorical=False)
