"""Nothing different: row order, level order, scale of y, thread count do not change estimates.

Row and level order change the floating-point summation order, so BOBYQA takes a different path;
the well-conditioned fixed-effects basis and the Newton polish bring both runs to the same optimum
(the robustness issue asks for 1e-8 relative).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import bigmixed as bm
from bigmixed.data_gen import generate_hdp

FORMULA = "mobility ~ age + sex + wbc + time + (time | doctor)"


@pytest.fixture(scope="module")
def data():
    return generate_hdp(80, seed=21, n_visits=4, slope_sd=0.4, slope_corr=-0.3, time_effect=0.2).data


@pytest.fixture(scope="module")
def base(data):
    return bm.lmm(FORMULA, data).fit()


def rel_beta(fit, beta_ref, se_ref):
    """Largest |beta - beta_ref| relative to max(|beta_ref|, SE): meaningful for estimates near 0."""
    return np.max(np.abs(fit.beta - beta_ref) / np.maximum(np.abs(beta_ref), se_ref))


def rel(a, b):
    return np.max(np.abs(np.asarray(a) - np.asarray(b)) / np.maximum(np.abs(np.asarray(b)), 1e-12))


def test_row_order_does_not_matter(data, base):
    shuffled = data.sample(frac=1.0, random_state=5)
    fit = bm.lmm(FORMULA, shuffled).fit()
    assert abs(fit.objective - base.objective) <= 1e-10 * abs(base.objective)
    assert rel_beta(fit, base.beta, base.bse.to_numpy()) < 1e-8
    assert rel(fit.theta, base.theta) < 1e-7
    r0, r1 = base.ranef()["doctor"], fit.ranef()["doctor"].loc[base.ranef()["doctor"].index]
    assert np.max(np.abs(r0.to_numpy() - r1.to_numpy())) < 1e-7 * base.sigma


def test_level_order_does_not_matter(data, base):
    df = data.copy()
    cats = list(df["doctor"].cat.categories)[::-1]
    df["doctor"] = df["doctor"].cat.reorder_categories(cats)
    fit = bm.lmm(FORMULA, df).fit()
    assert abs(fit.objective - base.objective) <= 1e-10 * abs(base.objective)
    assert rel_beta(fit, base.beta, base.bse.to_numpy()) < 1e-8
    assert rel(fit.theta, base.theta) < 1e-7
    r0 = base.ranef()["doctor"]
    r1 = fit.ranef()["doctor"].loc[r0.index]
    assert np.max(np.abs(r0.to_numpy() - r1.to_numpy())) < 1e-7 * base.sigma


@pytest.mark.parametrize("scale", [1e-6, 1e6])
def test_scaling_y_scales_the_estimates(data, base, scale):
    df = data.copy()
    df["mobility"] = df["mobility"] * scale
    fit = bm.lmm(FORMULA, df).fit()
    assert np.max(np.abs(fit.theta - base.theta)) < 1e-7  # theta is scale free
    assert rel_beta(fit, base.beta * scale, base.bse.to_numpy() * scale) < 1e-8
    assert rel(fit.sigma, base.sigma * scale) < 1e-6
    assert rel(fit.bse, base.bse * scale) < 1e-7
    # the REML criterion shifts by 2 (n - p) log(scale)
    shift = 2 * (fit.nobs - len(fit.beta)) * np.log(scale)
    assert abs(fit.objective - (base.objective + shift)) < 1e-6 * abs(base.objective)


def test_same_numbers_with_one_or_two_threads(tmp_path):
    """Identical to 1e-12 with 1 or 2 Numba threads (chunking depends on sizes, not threads)."""
    script = tmp_path / "fit.py"
    script.write_text(
        "import numpy as np, bigmixed as bm\n"
        "from bigmixed.data_gen import generate_hdp\n"
        "df = generate_hdp(300, seed=5, n_visits=3, slope_sd=0.3, time_effect=0.1).data\n"
        "f = bm.lmm('mobility ~ age + sex + time + (time | doctor)', df).fit()\n"
        "print(repr(f.objective)); print(list(f.theta)); print(list(f.beta))\n"
    )
    outs = []
    for threads in ("1", "2"):
        env = dict(os.environ, NUMBA_NUM_THREADS=threads)
        outs.append(subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                                   check=True).stdout)
    a, b = ([eval(line) for line in out.strip().splitlines()] for out in outs)
    assert abs(a[0] - b[0]) <= 1e-12 * abs(a[0])
    np.testing.assert_allclose(a[1], b[1], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(a[2], b[2], rtol=1e-12, atol=1e-14)
