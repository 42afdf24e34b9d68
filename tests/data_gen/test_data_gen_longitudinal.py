"""Tests of bigmixed.data_gen.longitudinal: the longitudinal generator with
AR(1) / CAR(1) / compound-symmetry residuals and SDs by arm."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from bigmixed.data_gen import LONGITUDINAL_BETA, LongitudinalData, generate_longitudinal

COLS = ["patient", "visit", "time", "treat", "arm", "y"]
ZERO_BETA = {k: 0.0 for k in LONGITUDINAL_BETA}


def _wide(d: pd.DataFrame, col: str = "y") -> np.ndarray:
    """patients x visits matrix of ``col`` (NaN where a visit is missing)."""
    return d.pivot(index="patient", columns="visit", values=col).to_numpy()


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    ok = ~(np.isnan(a) | np.isnan(b))
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def _resid_only(**kw) -> pd.DataFrame:
    """Data whose y is the residual alone (no fixed or random effects)."""
    base = dict(intercept_sd=0.0, slope_sd=0.0, beta=ZERO_BETA)
    return generate_longitudinal(**{**base, **kw}).data


# --------------------------------------------------------------------------
# shapes and columns
# --------------------------------------------------------------------------
def test_shapes_and_columns():
    g = generate_longitudinal(50, 6, seed=1)
    assert isinstance(g, LongitudinalData)
    d = g.data
    assert list(d.columns) == COLS
    assert len(d) == 300 and g.truth["n_rows"] == 300
    assert d["patient"].nunique() == 50
    assert list(d["patient"].cat.categories[:2]) == ["p000001", "p000002"]
    assert d["visit"].dtype == np.int64 and d["time"].dtype == np.float64
    assert (d.groupby("patient", observed=True)["visit"].apply(list)
            .map(lambda v: v == list(range(6))).all())
    np.testing.assert_array_equal(d["time"].to_numpy(), d["visit"].to_numpy() * 0.5)
    # treat and (by default) arm belong to the patient
    assert set(d["treat"].unique()) <= {0, 1}
    assert (d.groupby("patient", observed=True)["treat"].nunique() == 1).all()
    assert (d.groupby("patient", observed=True)["arm"].nunique() == 1).all()
    assert list(d["arm"].cat.categories) == ["a", "b", "c"]
    # sorted by patient then visit
    assert d["patient"].cat.codes.is_monotonic_increasing
    assert np.isfinite(d["y"]).all()


def test_hospitals_nest_patients():
    g = generate_longitudinal(200, 4, n_hospitals=30, seed=2)
    d = g.data
    assert list(d.columns) == ["patient", "hospital", *COLS[1:]]
    assert d["hospital"].nunique() == 30
    assert (d.groupby("patient", observed=True)["hospital"].nunique() == 1).all()
    assert len(g.truth["u_hospital"]) == 30


def test_arm_within_patient_varies():
    d = generate_longitudinal(100, 8, arm_within_patient=True, seed=3).data
    assert (d.groupby("patient", observed=True)["arm"].nunique() > 1).mean() > 0.9


def test_continuous_times():
    d = generate_longitudinal(300, 7, continuous_times=True, residual="car1", seed=4).data
    t = _wide(d, "time")
    assert (t[:, 0] == 0).all()
    gaps = np.diff(t, axis=1)
    assert (gaps > 0.1).all() and (gaps < 0.9).all()
    assert abs(gaps.mean() - 0.5) < 0.02
    assert (np.abs(t[:, 1:] - np.round(t[:, 1:])) > 1e-6).mean() > 0.99  # not integers


def test_truth_reproduces_y_without_residual():
    g = generate_longitudinal(40, 5, n_hospitals=4, sigma=0.0, seed=5)
    d, t = g.data, g.truth
    p = d["patient"].cat.codes.to_numpy()
    b = t["beta"]
    x, tr = d["time"].to_numpy(), d["treat"].to_numpy()
    y = (b["intercept"] + b["time"] * x + b["treat"] * tr + b["time:treat"] * x * tr
         + t["u0"][p] + t["u1"][p] * x + t["u_hospital"][d["hospital"].cat.codes.to_numpy()])
    np.testing.assert_allclose(d["y"].to_numpy(), y, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------
# determinism
# --------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [
    dict(),
    dict(missed_visit_share=0.2, continuous_times=True, arm_sd_ratios=[1, 2, 0.5]),
    dict(residual="cs", n_hospitals=7, shuffle=True),
])
def test_deterministic(kw):
    a = generate_longitudinal(80, 5, seed=11, **kw)
    b = generate_longitudinal(80, 5, seed=11, **kw)
    pd.testing.assert_frame_equal(a.data, b.data)
    c = generate_longitudinal(80, 5, seed=12, **kw)
    assert not np.array_equal(a.data["y"].to_numpy(), c.data["y"].to_numpy())


def test_options_do_not_change_other_draws():
    a = generate_longitudinal(60, 5, seed=3).data
    b = generate_longitudinal(60, 5, seed=3, arm_sd_ratios=[1.0, 1.0, 1.0]).data
    pd.testing.assert_frame_equal(a, b)
    c = generate_longitudinal(60, 5, seed=3, missed_visit_share=0.3).data
    m = a.merge(c, on=["patient", "visit"], suffixes=("", "_c"))
    assert len(m) == len(c)
    np.testing.assert_array_equal(m["y"].to_numpy(), m["y_c"].to_numpy())


# --------------------------------------------------------------------------
# residual structures
# --------------------------------------------------------------------------
@pytest.mark.parametrize("phi", [0.6, -0.4])
def test_ar1_lag_correlations(phi):
    w = _wide(_resid_only(n_patients=20000, n_visits=10, residual="ar1", phi=phi, seed=6))
    lag1 = _corr(w[:, :-1].ravel(), w[:, 1:].ravel())
    lag2 = _corr(w[:, :-2].ravel(), w[:, 2:].ravel())
    assert abs(lag1 - phi) < 0.02
    assert abs(lag2 - phi ** 2) < 0.02
    assert abs(np.nanstd(w) - 1.0) < 0.02


def test_ar1_with_gaps_correlates_on_visit_number():
    d = _resid_only(n_patients=20000, n_visits=10, residual="ar1", phi=0.6,
                    missed_visit_share=0.3, seed=7)
    # consecutive kept rows of a patient: their correlation follows the visit gap
    d = d.sort_values(["patient", "visit"])
    same = d["patient"].to_numpy()[1:] == d["patient"].to_numpy()[:-1]
    gap = np.diff(d["visit"].to_numpy())[same]
    y0, y1 = d["y"].to_numpy()[:-1][same], d["y"].to_numpy()[1:][same]
    for k in (1, 2, 3):
        sel = gap == k
        assert sel.sum() > 5000
        assert abs(_corr(y0[sel], y1[sel]) - 0.6 ** k) < 0.03


def test_car1_correlation_follows_time():
    d = _resid_only(n_patients=20000, n_visits=8, residual="car1", phi=0.3,
                    continuous_times=True, seed=8)
    w, t = _wide(d), _wide(d, "time")
    y0, y1 = w[:, :-1].ravel(), w[:, 1:].ravel()
    dt = np.diff(t, axis=1).ravel()
    for lo, hi in ((0.15, 0.3), (0.45, 0.55), (0.7, 0.85)):
        sel = (dt >= lo) & (dt < hi)
        want = float(np.mean(0.3 ** dt[sel]))
        assert abs(_corr(y0[sel], y1[sel]) - want) < 0.03


@pytest.mark.parametrize("rho", [0.4, -0.1])
def test_compound_symmetry(rho):
    w = _wide(_resid_only(n_patients=20000, n_visits=6, residual="cs", rho_cs=rho, seed=9))
    c = np.corrcoef(w, rowvar=False)
    off = c[~np.eye(6, dtype=bool)]
    assert np.abs(off - rho).max() < 0.03
    assert abs(w.std() - 1.0) < 0.02


def test_iid_and_sd_ratios_by_arm():
    ratios = {"a": 1.0, "b": 2.0, "c": 0.5}
    d = _resid_only(n_patients=20000, n_visits=5, residual="iid", sigma=1.5,
                    arm_sd_ratios=ratios, arm_within_patient=True, seed=10)
    sd = d.groupby("arm", observed=True)["y"].std()
    for k, r in ratios.items():
        assert abs(sd[k] / (1.5 * r) - 1) < 0.03
    w = _wide(d)
    assert abs(_corr(w[:, :-1].ravel(), w[:, 1:].ravel())) < 0.02


def test_random_intercept_and_slope_truth():
    g = generate_longitudinal(20000, 3, intercept_sd=1.0, slope_sd=0.5, corr=-0.3, seed=12)
    u0, u1 = g.truth["u0"], g.truth["u1"]
    assert abs(u0.std() - 1.0) < 0.03 and abs(u1.std() - 0.5) < 0.02
    assert abs(np.corrcoef(u0, u1)[0, 1] + 0.3) < 0.03


# --------------------------------------------------------------------------
# missed visits and shuffling
# --------------------------------------------------------------------------
def test_missed_visits_make_gaps():
    g = generate_longitudinal(500, 8, missed_visit_share=0.2, seed=13)
    d = g.data
    assert len(d) < 500 * 8
    assert (d.groupby("patient", observed=True)["visit"].min() == 0).all()
    gaps = d.groupby("patient", observed=True)["visit"].diff().dropna()
    assert (gaps >= 1).all() and (gaps > 1).any() and (gaps > 2).any()
    share = 1 - (len(d) - 500) / (500 * 7)
    assert abs(share - 0.2) < 0.03
    np.testing.assert_array_equal(g.truth["n_obs_per_patient"],
                                  d.groupby("patient", observed=True).size().to_numpy())


@pytest.mark.parametrize("kw", [dict(), dict(missed_visit_share=0.25, n_hospitals=9,
                                             arm_within_patient=True)])
def test_shuffle_keeps_the_same_rows(kw):
    a = generate_longitudinal(120, 6, seed=14, **kw).data
    b = generate_longitudinal(120, 6, seed=14, shuffle=True, **kw).data
    assert len(a) == len(b)
    assert list(b.index) == list(range(len(b)))
    assert not b["patient"].cat.codes.is_monotonic_increasing
    back = b.sort_values(["patient", "visit"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(back, a)


# --------------------------------------------------------------------------
# validation and size
# --------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [
    dict(residual="arma"),
    dict(phi=1.0),
    dict(residual="car1", phi=-0.2),
    dict(residual="cs", rho_cs=-0.5),
    dict(missed_visit_share=1.0),
    dict(n_hospitals=11),
    dict(arm_sd_ratios={"b": 1.0, "a": 2.0}),
    dict(arm_sd_ratios=[1.0, 0.0]),
    dict(beta={"slope": 1.0}),
    dict(corr=1.5),
])
def test_bad_arguments(kw):
    with pytest.raises(ValueError):
        generate_longitudinal(10, 4, **kw)


@pytest.mark.slow
def test_one_million_rows_in_seconds():
    t0 = time.perf_counter()
    g = generate_longitudinal(100_000, 10, seed=0)
    assert len(g.data) == 1_000_000
    assert time.perf_counter() - t0 < 10
