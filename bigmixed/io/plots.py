"""Diagnostic plots of a fitted model (matplotlib, an optional dependency).

    import bigmixed as bm
    fit = bm.lmm("y ~ method + (1 | tablet)", df).fit()
    fit.plot_caterpillar("caterpillar.png")   # BLUPs with conditional-SD intervals
    fit.plot_residuals("resid.png")           # residuals against fitted values
    fit.plot_qq("qq.png")                     # normal QQ plot of the scaled residuals
    fit.plot_qq_ranef("qq_ranef.png")         # normal QQ plot of the BLUPs
    fit.plot_profile("profile.png")           # zeta against each variance parameter

Every function takes a fit and an optional `path` (the file is written when given; the format
follows its extension) and returns the matplotlib `Figure`. Figures are drawn on the Agg canvas
directly (``matplotlib.figure.Figure``, never pyplot): nothing is shown, no window opens, no global
backend is switched and no figure is kept alive by pyplot's registry.

Large models. A caterpillar panel shows at most `max_levels` levels: beyond that a deterministic
subsample, evenly spaced in rank order (both extremes included), and the panel's title says so.
Scatter plots with more than `max_points` rows switch to a hexagonal-bin density (residuals) or
to evenly spaced order statistics (QQ plots), again said in the title.

matplotlib is imported inside the functions; without it they raise an ImportError naming
``pip install bigmixed[plots]``.
"""
from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

__all__ = [
    "normal_quantiles",
    "plot_caterpillar",
    "plot_profile",
    "plot_qq",
    "plot_qq_ranef",
    "plot_residuals",
    "profile_points",
]

_INSTALL_HINT = ("bigmixed's plots need matplotlib, an optional dependency: "
                 "pip install bigmixed[plots]  (or: pip install 'matplotlib>=3.6')")


# ======================================================================================
# helpers
# ======================================================================================

def _figure(width: float, height: float):
    """A Figure on the Agg canvas, with constrained layout (labels never overlap)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - exercised only without matplotlib
        raise ImportError(_INSTALL_HINT) from exc
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path, dpi):
    if path is not None:
        path = os.fspath(path)
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    return fig


def _norm_ppf(p):
    from scipy import stats

    return stats.norm.ppf(p)


def normal_quantiles(n: int) -> np.ndarray:
    """R's ``qqnorm`` abscissae: qnorm(ppoints(n)), ppoints(n) = (i - a)/(n + 1 - 2a) with
    a = 3/8 for n <= 10 and 1/2 otherwise."""
    a = 3.0 / 8.0 if n <= 10 else 0.5
    return _norm_ppf((np.arange(1, n + 1) - a) / (n + 1 - 2 * a))


def _even_subsample(n: int, k: int) -> np.ndarray:
    """k positions evenly spaced over 0..n-1 (first and last included); all when n <= k."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, k)).astype(np.int64))


def _qqline(ax, q, y, **kw):
    """R's qqline: the line through the first and third quartiles (quantile type 7)."""
    y1, y3 = np.quantile(y, [0.25, 0.75])
    z1, z3 = _norm_ppf([0.25, 0.75])
    slope = (y3 - y1) / (z3 - z1)
    icpt = y1 - slope * z1
    xs = np.array([q.min(), q.max()]) if len(q) else np.array([-1.0, 1.0])
    ax.plot(xs, icpt + slope * xs, **kw)


def _panels(fig, nrows, ncols, **kw):
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return axes


def _blup_columns(df) -> list:
    return [c for c in df.columns if not (str(c).endswith("_sd") and str(c)[:-3] in df.columns)]


# ======================================================================================
# caterpillar plot of the conditional modes
# ======================================================================================

def plot_caterpillar(fit, path=None, *, level: float = 0.95, order: str = "each",
                     max_levels: int = 1000, max_labels: int = 60, dpi: int = 120):
    """Caterpillar plot of the conditional modes (BLUPs) with normal intervals
    BLUP +- z * conditional SD (lme4's ``dotplot(ranef(fit, condVar = TRUE))``).

    One row of panels per grouping factor, one panel per random-effects column. order="each"
    (default): every panel sorted by its own column; "first" (lme4's): levels sorted by the
    first column's BLUP, the same order in every panel of the factor. Factors with more than `max_levels`
    levels show an evenly spaced subsample in rank order (title says how many); level labels
    are written when at most `max_labels` levels are shown.

    The points are the artists with gid "blup" (x = BLUP, y = rank), the intervals the
    LineCollection with gid "interval".
    """
    if order not in ("first", "each"):
        raise ValueError(f"order must be 'first' or 'each', not {order!r}")
    if not 0 < level < 1:
        raise ValueError("level must be in (0, 1)")
    z = float(_norm_ppf(0.5 + level / 2))
    re = fit.ranef(condvar=True)
    groups = list(re)
    ncols = max(len(_blup_columns(re[g])) for g in groups)
    shown = {g: min(len(re[g]), max_levels) for g in groups}
    heights = [min(max(2.2, 0.16 * shown[g] + 1.0), 9.0) for g in groups]
    fig = _figure(3.6 * ncols + 0.8, sum(heights) + 0.6)
    axes = _panels(fig, len(groups), ncols, gridspec_kw={"height_ratios": heights})
    for gi, g in enumerate(groups):
        df = re[g]
        cols = _blup_columns(df)
        n = len(df)
        labels = np.asarray(df.index.astype(str))
        first_order = np.argsort(df[cols[0]].to_numpy(), kind="stable")
        for ci in range(ncols):
            ax = axes[gi, ci]
            if ci >= len(cols):
                ax.set_visible(False)
                continue
            c = cols[ci]
            b = df[c].to_numpy()
            sd = df[f"{c}_sd"].to_numpy()
            idx = first_order if order == "first" else np.argsort(b, kind="stable")
            pick = idx[_even_subsample(n, max_levels)]
            k = len(pick)
            ypos = np.arange(k)
            small = k > max_labels
            ms = 4.0 if k <= max_labels else (2.0 if k <= 300 else 1.0)
            lw = 1.2 if k <= max_labels else (0.7 if k <= 300 else 0.4)
            ax.axvline(0.0, color="0.55", lw=0.8, ls="--", zorder=1)
            ax.hlines(ypos, b[pick] - z * sd[pick], b[pick] + z * sd[pick], color="tab:blue",
                      lw=lw, alpha=0.75, zorder=2, gid="interval")
            ax.plot(b[pick], ypos, "o", color="black", ms=ms, zorder=3, gid="blup")
            ax.set_ylim(-0.7, k - 0.3)
            title = f"{g}: {c}"
            if k < n:
                title += f"\n{k} of {n} levels (evenly spaced in rank order)"
            elif small:
                title += f"\n{n} levels"
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("conditional mode (BLUP)", fontsize=8)
            ax.tick_params(labelsize=7)
            if not small:
                ax.set_yticks(ypos)
                ax.set_yticklabels(labels[pick], fontsize=7 if k <= 30 else 5.5)
            else:
                ax.set_yticks([])
            if ci == 0 or order == "each":
                ax.set_ylabel(f"{g} (sorted by {cols[0] if order == 'first' else c})", fontsize=8)
            ax.grid(axis="x", color="0.9", lw=0.6)
    fig.suptitle(f"Conditional modes with {level:.0%} intervals (\u00b1{z:.2f} conditional SD)",
                 fontsize=10)
    return _save(fig, path, dpi)


# ======================================================================================
# residuals
# ======================================================================================

def _binned_means(x, r, n_bins):
    """Mean residual per quantile bin of the fitted values (a simple smoother)."""
    if len(x) < 50:  # too few points for a smoother to mean anything
        return None
    n_bins = min(n_bins, len(x) // 10)
    order = np.argsort(x, kind="stable")
    chunks = np.array_split(order, n_bins)
    mx = np.array([x[c].mean() for c in chunks if len(c)])
    mr = np.array([r[c].mean() for c in chunks if len(c)])
    return mx, mr


def plot_residuals(fit, path=None, *, scaled: bool = False, max_points: int = 100_000,
                   n_bins: int = 20, dpi: int = 120):
    """Residuals against fitted values (lme4's ``plot(fit)``): conditional residuals
    y - X beta - Z b (divided by sigma when `scaled`) against X beta + Z b, with a line at 0
    and the mean residual per quantile bin of the fitted values. Above `max_points` rows the
    points become a hexagonal-bin density (log counts). The points carry gid "points"."""
    x = np.asarray(fit.fittedvalues, dtype=float)
    r = np.asarray(fit.resid_scaled if scaled else fit.resid, dtype=float)
    n = len(x)
    fig = _figure(6.4, 4.6)
    ax = fig.subplots()
    title = f"Residuals vs fitted: {fit.formula}"
    if n > max_points:
        hb = ax.hexbin(x, r, gridsize=90, bins="log", mincnt=1, cmap="viridis", gid="points")
        fig.colorbar(hb, ax=ax, label="rows per hexagon (log scale)")
        title += f"\n{n:,} rows: hexagonal-bin density"
    else:
        ms = 4.0 if n <= 500 else (2.0 if n <= 5000 else 1.0)
        ax.plot(x, r, "o", ms=ms, alpha=0.8 if n <= 500 else 0.35, color="tab:blue",
                mec="none", gid="points", rasterized=n > 5000)
    ax.axhline(0.0, color="0.3", lw=0.9, ls="--")
    sm = _binned_means(x, r, n_bins)
    if sm is not None:
        ax.plot(sm[0], sm[1], "-", color="tab:red", lw=1.6,
                label="mean residual per bin of fitted values")
        ax.legend(fontsize=8, loc="best")
    ax.set_xlabel("fitted values (X\u03b2 + Zb)")
    ax.set_ylabel("scaled residuals (residual / \u03c3)" if scaled else "residuals (y - X\u03b2 - Zb)")
    ax.set_title(title, fontsize=9)
    return _save(fig, path, dpi)


def plot_qq(fit, path=None, *, scaled: bool = True, max_points: int = 20_000, dpi: int = 120):
    """Normal QQ plot of the conditional residuals (scaled by sigma by default, as lme4's
    ``qqmath(fit)``): sorted residuals against qnorm(ppoints(n)), with R's qqline through the
    quartiles and, for scaled residuals, the line y = x. Above `max_points` rows an evenly
    spaced subset of the order statistics (extremes included) is drawn. Points: gid "qq"."""
    r = np.sort(np.asarray(fit.resid_scaled if scaled else fit.resid, dtype=float))
    n = len(r)
    q = normal_quantiles(n)
    pick = _even_subsample(n, max_points)
    fig = _figure(5.2, 5.0)
    ax = fig.subplots()
    ms = 4.0 if len(pick) <= 500 else (2.0 if len(pick) <= 5000 else 1.2)
    ax.plot(q[pick], r[pick], "o", ms=ms, color="tab:blue", mec="none", alpha=0.8, zorder=3, gid="qq")
    _qqline(ax, q, r, color="tab:red", lw=1.1, alpha=0.8, zorder=1, label="line through the quartiles")
    if scaled:
        lim = np.array([q.min(), q.max()])
        ax.plot(lim, lim, ":", color="0.4", lw=1.0, zorder=1, label="y = x (N(0, 1))")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_xlabel("standard normal quantiles")
    ax.set_ylabel("scaled residuals (residual / \u03c3)" if scaled else "residuals")
    title = f"Normal QQ plot of residuals: {fit.formula}"
    if len(pick) < n:
        title += f"\n{len(pick):,} of {n:,} order statistics (evenly spaced)"
    ax.set_title(title, fontsize=9)
    return _save(fig, path, dpi)


def plot_qq_ranef(fit, path=None, *, max_points: int = 20_000, dpi: int = 120):
    """Normal QQ plots of the conditional modes, one panel per grouping factor and column
    (lme4's ``qqmath(ranef(fit))`` without the intervals): sorted BLUPs against qnorm(ppoints),
    with R's qqline. Points: gid "qq"."""
    re = fit.ranef(condvar=False)
    panels = [(g, c, re[g][c].to_numpy()) for g in re for c in re[g].columns]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = _figure(3.8 * ncols + 0.4, 3.6 * nrows + 0.5)
    axes = _panels(fig, nrows, ncols)
    for i, ax in enumerate(axes.flat):
        if i >= len(panels):
            ax.set_visible(False)
            continue
        g, c, b = panels[i]
        b = np.sort(b)
        n = len(b)
        q = normal_quantiles(n)
        pick = _even_subsample(n, max_points)
        ms = 4.0 if len(pick) <= 300 else (2.0 if len(pick) <= 5000 else 1.2)
        ax.plot(q[pick], b[pick], "o", ms=ms, color="tab:blue", mec="none", alpha=0.85, gid="qq")
        _qqline(ax, q, b, color="tab:red", lw=1.2, label="line through the quartiles")
        if i == 0:
            ax.legend(fontsize=7, loc="upper left")
        title = f"{g}: {c} ({n} levels)"
        if len(pick) < n:
            title += f"\n{len(pick):,} of {n:,} order statistics shown"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("standard normal quantiles", fontsize=8)
        ax.set_ylabel("conditional mode (BLUP)", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("Normal QQ plots of the conditional modes", fontsize=10)
    return _save(fig, path, dpi)


# ======================================================================================
# likelihood profiles
# ======================================================================================

def _select_profile(names, nt, which):
    var = names[:nt + 1]
    fixed = names[nt + 1:]
    if which is None or which == "variance":
        return var
    if which == "fixed":
        return fixed
    if which == "all":
        return list(names)
    if isinstance(which, str):
        which = [which]
    unknown = [w for w in which if w not in names]
    if unknown:
        raise ValueError(f"unknown profile parameter(s) {unknown}; available: {names}")
    return [n for n in names if n in set(which)]


def profile_points(fit, which="variance", *, level: float = 0.99, n_points: int = 10) -> pd.DataFrame:
    """Points of the likelihood profile (lme4's ``profile(fit)``, in the sd/cor/sigma/beta
    parametrization, of the ML deviance: REML fits are refitted by ML first, as lme4 does).

    For each parameter, zeta(x) = sign(x - x_hat) sqrt(dev_min(x) - dev_hat) is evaluated at the
    estimate and at `n_points` evenly spaced values on each side, out to where |zeta| reaches
    qnorm((1 + level)/2) (found exactly by root finding, so the last point lies on the `level`
    interval's end) or to the parameter's bound (sd 0, cor +-1). `which`: "variance" (default:
    the sd / cor of every random-effects term and sigma), "fixed", "all" or a list of names as
    in ``confint(method="profile")``.

    Returns a DataFrame with columns parameter, value, zeta, deviance (dev_min(x) - dev_hat =
    zeta^2), endpoint (True for a `level` interval end), in order of value per parameter;
    ``attrs``: estimates (dict), level, cutoff.
    """
    from scipy import stats

    from ..inference.profile import Profiler, profile_target

    if not 0 < level < 1:
        raise ValueError("level must be in (0, 1)")
    n_points = max(1, int(n_points))
    pr = Profiler(fit)
    names = pr.names()
    wanted = _select_profile(names, pr.nt, which)
    cutoff = float(stats.norm.ppf(0.5 + level / 2))
    ml = pr.ml
    se_fixed = np.sqrt(np.diag(ml.vcov))
    rows = []
    estimates = {}
    for name in wanted:
        x_hat, lo, hi, step, zeta = profile_target(pr, names.index(name), cutoff, se_fixed)
        estimates[name] = x_hat
        rows.append((name, x_hat, 0.0, False))
        for side in (-1, +1):
            pr._start.clear()
            end = pr.endpoint(zeta, x_hat, step, side, lo, hi, cutoff)
            pr._start.clear()
            if not np.isfinite(end) or end == x_hat:
                continue
            reached = True
            grid = x_hat + (end - x_hat) * np.arange(1, n_points + 1) / n_points
            for i, x in enumerate(grid):  # outward from the estimate: warm starts
                zx = float(zeta(x))
                if i == len(grid) - 1:
                    reached = abs(abs(zx) - cutoff) < 1e-3 * max(1.0, cutoff)
                rows.append((name, float(x), zx, bool(i == len(grid) - 1 and reached)))
        pr._start.clear()
    out = pd.DataFrame(rows, columns=["parameter", "value", "zeta", "endpoint"])
    out["deviance"] = out["zeta"] ** 2
    out["_order"] = out["parameter"].map({n: i for i, n in enumerate(wanted)})
    out = out.sort_values(["_order", "value"], kind="stable").drop(columns="_order").reset_index(drop=True)
    out = out[["parameter", "value", "zeta", "deviance", "endpoint"]]
    out.attrs.update(estimates=estimates, level=level, cutoff=cutoff,
                     criterion="ML deviance" + ("; REML fit refitted by ML" if fit.reml else ""))
    return out


def _crossing(x, zeta, target):
    """x where the (monotone) profile zeta crosses `target`, by linear interpolation; NaN if
    the profile does not reach it."""
    x = np.asarray(x, float)
    zeta = np.asarray(zeta, float)
    for i in range(len(x) - 1):
        a, b = zeta[i], zeta[i + 1]
        if (a - target) * (b - target) <= 0 and a != b:
            return x[i] + (target - a) * (x[i + 1] - x[i]) / (b - a)
    return np.nan


def _profile_axis_label(name: str) -> str:
    if name.startswith("sd_"):
        return "standard deviation"
    if name.startswith("cor_"):
        return "correlation"
    if name == "sigma":
        return "residual standard deviation (\u03c3)"
    return "fixed-effect coefficient"


def plot_profile(fit, path=None, *, which="variance", levels=(0.5, 0.8, 0.9, 0.95, 0.99),
                 kind: str = "zeta", n_points: int = 10, points: pd.DataFrame | None = None,
                 dpi: int = 120):
    """Likelihood-profile plots, as lme4's ``xyplot(profile(fit))``: one panel per parameter,
    zeta (the signed square root of the change in ML deviance) against the parameter, with
    horizontal lines at +-qnorm((1 + l)/2) for each of `levels` and vertical lines down to
    the intervals' ends. kind="abs": |zeta| (lme4's ``absVal = TRUE``); "deviance": the
    deviance change zeta^2. The profile is computed out to the largest level (see
    `profile_points`; pass `points` to reuse a table computed before). Curves: gid "profile".
    """
    from scipy import stats

    if kind not in ("zeta", "abs", "deviance"):
        raise ValueError(f"kind must be 'zeta', 'abs' or 'deviance', not {kind!r}")
    levels = sorted(float(v) for v in levels)
    if points is None:
        points = profile_points(fit, which, level=max(levels), n_points=n_points)
    params = list(dict.fromkeys(points["parameter"]))
    ncols = min(3, len(params))
    nrows = math.ceil(len(params) / ncols)
    fig = _figure(3.7 * ncols + 0.4, 3.2 * nrows + 0.6)
    axes = _panels(fig, nrows, ncols)
    cuts = [float(stats.norm.ppf(0.5 + lv / 2)) for lv in levels]

    def tr(zv):
        zv = np.asarray(zv, float)
        return zv if kind == "zeta" else (np.abs(zv) if kind == "abs" else zv ** 2)

    for i, ax in enumerate(axes.flat):
        if i >= len(params):
            ax.set_visible(False)
            continue
        name = params[i]
        p = points[points["parameter"] == name]
        x, zv = p["value"].to_numpy(), p["zeta"].to_numpy()
        x_hat = points.attrs.get("estimates", {}).get(name, x[np.argmin(np.abs(zv))])
        for lv, c in zip(levels, cuts):
            shade = "0.82" if lv != 0.95 else "0.6"
            ys = [c, -c] if kind == "zeta" else [c if kind == "abs" else c * c]
            for yv in ys:
                ax.axhline(yv, color=shade, lw=0.7, zorder=0)
            for side, target in ((-1, -c), (+1, c)):
                m = (x <= x_hat) if side < 0 else (x >= x_hat)
                xe = _crossing(x[m], zv[m], target)
                if np.isfinite(xe):
                    y_end = tr([target])[0]
                    ax.vlines(xe, 0.0, y_end, color=shade, lw=0.9, ls="--", zorder=1)
        ax.plot(x, tr(zv), "-o", color="tab:blue", ms=2.8, lw=1.3, gid="profile", zorder=3)
        ax.axvline(x_hat, color="0.45", lw=0.7, ls=":", zorder=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(_profile_axis_label(name), fontsize=8)
        ylab = {"zeta": "\u03b6 (signed \u221a\u0394deviance)", "abs": "|\u03b6|",
                "deviance": "\u0394 deviance (ML)"}[kind]
        ax.set_ylabel(ylab, fontsize=8)
        ax.tick_params(labelsize=7)
        if kind == "zeta":
            top = max(cuts) * 1.08
            ax.set_ylim(-top, top)
        # label the level lines on the right edge of the first panel only
        if i == 0:
            for lv, c in zip(levels, cuts):
                yv = c if kind != "deviance" else c * c
                ax.annotate(f"{lv:.0%}", xy=(1.0, yv), xycoords=("axes fraction", "data"),
                            xytext=(2, 0), textcoords="offset points", fontsize=6, color="0.4",
                            va="center", ha="left", annotation_clip=False)
    crit = points.attrs.get("criterion", "ML deviance")
    fig.suptitle(f"Likelihood profiles ({crit}); lines: intervals at "
                 + ", ".join(f"{lv:.0%}" for lv in levels), fontsize=10)
    return _save(fig, path, dpi)
