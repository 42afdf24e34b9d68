"""Diagnostic plots (bigmixed.plots): files written, plotted data equal to the model's."""
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from bigmixed.data_gen import generate_hdp, tablets
from scipy import stats

import bigmixed as bm
from bigmixed.io import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tab_fit():
    return bm.lmm("y ~ method + (1 | tablet)", tablets()).fit()


@pytest.fixture(scope="module")
def slope_fit():
    g = generate_hdp(40, seed=1, n_visits=4, slope_sd=0.4, time_effect=0.1)
    return bm.lmm("mobility ~ age + time + (time | doctor)", g.data).fit()


def _png_ok(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 2000


def _artists(fig, gid):
    return [a for ax in fig.axes for a in ax.get_children() if a.get_gid() == gid]


@pytest.mark.parametrize("name", ["caterpillar", "residuals", "qq", "qq_ranef", "profile"])
def test_each_plot_writes_png(tab_fit, tmp_path, name):
    from matplotlib.figure import Figure

    path = tmp_path / "sub" / f"{name}.png"
    fig = getattr(tab_fit, f"plot_{name}")(path)  # the LMMResults method delegates
    assert isinstance(fig, Figure)
    _png_ok(path)


def test_no_path_returns_figure_without_writing(tab_fit, tmp_path):
    fig = plots.plot_residuals(tab_fit)
    assert fig.axes and list(tmp_path.iterdir()) == []


def test_caterpillar_points_are_the_blups(tab_fit):
    fig = plots.plot_caterpillar(tab_fit)
    re = tab_fit.ranef()["tablet"]
    (pts,) = _artists(fig, "blup")
    order = np.argsort(re["(Intercept)"].to_numpy(), kind="stable")
    np.testing.assert_allclose(pts.get_xdata(), re["(Intercept)"].to_numpy()[order])
    np.testing.assert_array_equal(pts.get_ydata(), np.arange(len(re)))
    # the y labels name the levels in the plotted order
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == list(re.index.astype(str)[order])
    # intervals: BLUP +- qnorm(0.975) * conditional SD
    (iv,) = _artists(fig, "interval")
    segs = np.array(iv.get_segments())
    z = stats.norm.ppf(0.975)
    sd = re["(Intercept)_sd"].to_numpy()[order]
    np.testing.assert_allclose(segs[:, 0, 0], pts.get_xdata() - z * sd)
    np.testing.assert_allclose(segs[:, 1, 0], pts.get_xdata() + z * sd)


def test_caterpillar_slope_model_orders(slope_fit):
    re = slope_fit.ranef()["doctor"]
    b0, b1 = re["(Intercept)"].to_numpy(), re["time"].to_numpy()
    fig = plots.plot_caterpillar(slope_fit)  # each panel sorted by its own column
    pts = _artists(fig, "blup")
    assert len(pts) == 2
    np.testing.assert_allclose(pts[0].get_xdata(), np.sort(b0))
    np.testing.assert_allclose(pts[1].get_xdata(), np.sort(b1))
    fig = plots.plot_caterpillar(slope_fit, order="first")  # lme4's: by the intercept
    pts = _artists(fig, "blup")
    o = np.argsort(b0, kind="stable")
    np.testing.assert_allclose(pts[1].get_xdata(), b1[o])


def test_caterpillar_subsample_is_deterministic_and_titled(slope_fit):
    b0 = np.sort(slope_fit.ranef()["doctor"]["(Intercept)"].to_numpy())
    fig = plots.plot_caterpillar(slope_fit, max_levels=7)
    x = _artists(fig, "blup")[0].get_xdata()
    assert len(x) == 7
    assert x[0] == b0[0] and x[-1] == b0[-1]  # extremes kept
    assert set(x) <= set(b0)
    assert f"7 of {len(b0)} levels" in fig.axes[0].get_title()
    x2 = _artists(plots.plot_caterpillar(slope_fit, max_levels=7), "blup")[0].get_xdata()
    np.testing.assert_array_equal(x, x2)


def test_qq_points_are_sorted_residuals_against_normal_quantiles(tab_fit):
    n = tab_fit.nobs
    q = stats.norm.ppf((np.arange(1, n + 1) - 0.5) / n)  # R's ppoints for n > 10
    fig = plots.plot_qq(tab_fit)
    (pts,) = _artists(fig, "qq")
    np.testing.assert_allclose(pts.get_xdata(), q)
    np.testing.assert_allclose(pts.get_ydata(), np.sort(tab_fit.resid_scaled))
    fig = plots.plot_qq(tab_fit, scaled=False)
    (pts,) = _artists(fig, "qq")
    np.testing.assert_allclose(pts.get_ydata(), np.sort(tab_fit.resid))


def test_normal_quantiles_small_n_uses_r_ppoints():
    n = 7
    np.testing.assert_allclose(plots.normal_quantiles(n),
                               stats.norm.ppf((np.arange(1, n + 1) - 3 / 8) / (n + 1 - 3 / 4)))


def test_qq_ranef_points_are_sorted_blups(slope_fit):
    re = slope_fit.ranef(condvar=False)["doctor"]
    fig = plots.plot_qq_ranef(slope_fit)
    pts = _artists(fig, "qq")
    assert len(pts) == 2
    for a, col in zip(pts, ["(Intercept)", "time"]):
        np.testing.assert_allclose(a.get_ydata(), np.sort(re[col].to_numpy()))
        np.testing.assert_allclose(a.get_xdata(), plots.normal_quantiles(len(re)))


def test_residual_plot_points(slope_fit):
    fig = plots.plot_residuals(slope_fit)
    (pts,) = _artists(fig, "points")
    np.testing.assert_allclose(pts.get_xdata(), slope_fit.fittedvalues)
    np.testing.assert_allclose(pts.get_ydata(), slope_fit.resid)
    # large data: a hexbin density, said in the title
    fig = plots.plot_residuals(slope_fit, max_points=100)
    assert "hexagonal-bin" in fig.axes[0].get_title()


def test_profile_points_match_profile_intervals(tab_fit):
    pts = plots.profile_points(tab_fit, level=0.95, n_points=4)
    assert list(dict.fromkeys(pts["parameter"])) == ["sd_(Intercept)|tablet", "sigma"]
    ci = tab_fit.confint(method="profile", level=0.95).set_index("term")
    for name, g in pts.groupby("parameter", sort=False):
        est = pts.attrs["estimates"][name]
        assert g.loc[g["value"] == est, "zeta"].abs().max() == 0.0
        assert np.all(np.diff(g["zeta"].to_numpy()) > 0)  # increasing in the parameter
        ends = g[g["endpoint"]]
        # the last point of each side sits on the profile interval's end (|zeta| = 1.96)
        for v in ends["value"]:
            assert min(abs(v - ci.loc[name, "lower"]), abs(v - ci.loc[name, "upper"])) < 1e-6
        np.testing.assert_allclose(ends["zeta"].abs(), stats.norm.ppf(0.975), atol=1e-4)
    fig = plots.plot_profile(tab_fit, points=pts, levels=(0.8, 0.95))
    curves = _artists(fig, "profile")
    assert len(curves) == 2
    g = pts[pts["parameter"] == "sigma"]
    np.testing.assert_allclose(curves[1].get_xdata(), g["value"])
    np.testing.assert_allclose(curves[1].get_ydata(), g["zeta"])


def test_missing_matplotlib_names_the_extra(tab_fit, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install bigmixed\[plots\]"):
        plots.plot_residuals(tab_fit)
