"""Edge shapes: groups of size one, very unbalanced groups, a million levels."""
import warnings

import numpy as np
import pandas as pd
import pytest

import bigmixed as bm
from oracle import dense_objective


def frame(sizes, seed, slope=False):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(len(sizes)), sizes)
    n = len(g)
    x = rng.normal(size=n)
    b0 = rng.normal(size=len(sizes))
    b1 = rng.normal(size=len(sizes)) * 0.5
    y = 1.0 + 0.5 * x + b0[g] + (b1[g] * x if slope else 0.0) + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "g": pd.Categorical(g)})


def test_many_groups_of_size_one_match_the_dense_oracle():
    sizes = [1] * 40 + [3] * 10
    df = frame(sizes, 1)
    fit = bm.lmm("y ~ x + (1 | g)", df).fit()
    X = np.column_stack([np.ones(len(df)), df["x"]])
    codes = df["g"].cat.codes.to_numpy()
    dense = dense_objective(fit.theta, df["y"].to_numpy(), X, [(codes, np.ones((len(df), 1)))])
    assert fit.objective == pytest.approx(dense, rel=1e-10)
    # a better theta nearby does not exist
    for d in (-1e-3, 1e-3):
        assert fit.objective <= dense_objective(fit.theta + d, df["y"].to_numpy(), X,
                                                [(codes, np.ones((len(df), 1)))]) + 1e-9


def test_very_unbalanced_groups_one_to_100k_rows():
    sizes = [100_000, 20_000, 500] + [1] * 200 + [2] * 200
    df = frame(sizes, 2, slope=True)
    fit = bm.lmm("y ~ x + (x | g)", df).fit()
    assert fit.converged and np.isfinite(fit.objective)
    # same numbers through the sparse path
    other = bm.lmm("y ~ x + (x | g)", df, solver="cholmod")
    assert other.objective(fit.theta) == pytest.approx(fit.objective, rel=1e-10)
    # the big groups' BLUPs are close to their own OLS deviations (little shrinkage)
    r = fit.ranef()["g"]
    big = df[df["g"] == 0]
    own = np.polyfit(big["x"], big["y"], 1)  # slope, intercept
    assert abs(fit.beta[0] + r.loc["0", "(Intercept)"] - own[1]) < 0.02
    assert abs(fit.beta[1] + r.loc["0", "x"] - own[0]) < 0.02


def test_a_million_levels():
    rng = np.random.default_rng(3)
    L = 1_000_000
    g = np.repeat(np.arange(L), 2)
    n = len(g)
    x = rng.normal(size=n)
    y = 2.0 + 0.3 * x + rng.normal(size=L)[g] * 0.8 + rng.normal(size=n)
    df = pd.DataFrame({"y": y, "x": x, "g": pd.Categorical.from_codes(g, categories=np.arange(L))})
    fit = bm.lmm("y ~ x + (1 | g)", df).fit()
    assert fit.n_groups == {"g": L}
    vc = fit.variance_components.set_index("group")
    assert abs(vc.loc["g", "sd"] - 0.8) < 0.02
    assert abs(fit.sigma - 1.0) < 0.01
    np.testing.assert_allclose(fit.beta, [2.0, 0.3], atol=0.01)


@pytest.mark.parametrize("noise", [1e-2, 1e-4])
def test_near_collinear_random_slopes(noise):
    """Moderately collinear slopes (noise 1e-2): the right answer (the dense oracle's optimum).
    Nearly collinear ones (1e-4): the optimum lies on a flat ridge at theta ~ 3000, so the fit
    must at least say so with a typed warning, recorded on the result."""
    from oracle import dense_fit

    rng = np.random.default_rng(8)
    L, per = 12, 6
    g = np.repeat(np.arange(L), per)
    n = len(g)
    x1 = rng.normal(size=n)
    x2 = x1 + noise * rng.normal(size=n)
    y = 1.0 + x1 + rng.normal(size=L)[g] * x1 + rng.normal(size=n)
    df = pd.DataFrame({"y": y, "x1": x1, "x2": x2, "g": pd.Categorical(g)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bm.lmm("y ~ x1 + (0 + x1 + x2 | g)", df).fit()
    collinear = [w for w in fit.warnings if isinstance(w, bm.CollinearRandomEffectsWarning)]
    X = np.column_stack([np.ones(n), x1])
    terms = [(g, np.column_stack([x1, x2]))]
    assert dense_objective(fit.theta, y, X, terms) == pytest.approx(fit.objective, rel=1e-8)
    if noise == 1e-4:
        assert collinear and "x1" in str(collinear[0]) and "x2" in str(collinear[0])
    else:
        assert not collinear
        ref = dense_fit(y, X, terms, reml=True, theta0=fit.theta, n_random_starts=1)
        assert fit.objective <= ref["objective"] + 1e-6 * abs(ref["objective"])
