"""Rank-deficient fixed effects are dropped as lme4 drops them.

lme4's lmer (``check.rankX = "message+drop.cols"``) runs R's ``qr(X, tol = 1e-7, LAPACK =
FALSE)`` (LINPACK dqrdc2, limited column pivoting), keeps ``pivot[1:rank]`` and says
"fixed-effect model matrix is rank deficient so dropping N column(s) / coefficient(s)".
The expected values below were obtained with R 4.2.2 and lme4 1.1-31:

    d <- read.csv("rank.csv")          # rank_frame() below, written with DataFrame.to_csv
    d$a <- factor(d$a); d$b <- factor(d$b); d$g <- factor(d$g)
    ctrl <- lmerControl(optimizer = "nloptwrap", optCtrl = list(xtol_abs = 1e-12,
                        ftol_abs = 1e-14, xtol_rel = 0, ftol_rel = 0, maxeval = 1e5))
    m <- lmer(<formula>, d, REML = <reml>, control = ctrl)
    attr(m@pp$X, "col.dropped"); fixef(m); sqrt(diag(vcov(m)))
    getME(m, "theta"); sigma(m); REMLcrit(m)  # or deviance(m) for ML

printed with sprintf("%.12g").
"""
import warnings

import numpy as np
import pandas as pd
import pytest

import bigmixed as bm
from bigmixed.spec.rank import aliased_columns, dqrdc2_rank, _small_equivalent
from bigmixed.spec.design import build_design, design_matrices_for_newdata


def rank_frame(n_groups=12, per_group=10):
    """Deterministic data (no RNG, so that R reads exactly the same numbers from a CSV)."""
    n = n_groups * per_group
    i = np.arange(n)
    g = i // per_group
    x1 = np.sin(1.3 * i) + i / n
    noise = ((i * 37) % 17 - 8) / 8.0 + 0.3 * np.cos(0.7 * i * i)
    u = ((g * 5) % 7 - 3) / 3.0
    a = np.array(["a1", "a2", "a3"])[(i * 7) % 3]
    b = np.array(["b1", "b2"])[(i // 3) % 2]
    b = np.where(a == "a3", "b1", b)  # the cell a3:b2 is empty
    eff_a = {"a1": 0.0, "a2": 0.8, "a3": -0.5}
    y = 1.0 + 0.5 * x1 + np.vectorize(eff_a.get)(a) + 0.4 * (b == "b2") + u + noise
    return pd.DataFrame({
        "y": y, "x1": x1, "x2": 2.0 * x1, "s": x1 + np.cos(i), "x3": np.cos(i), "k": 3.0,
        "a": a, "b": b, "g": np.array([f"G{k:02d}" for k in g]),
    })


# formula, REML, dropped (lme4's col.dropped), {name: (beta, se)}, theta, sigma, objective
LME4 = [
    ("y ~ x1 + x2 + (1 | g)", True, ["x2"],
     {"(Intercept)": (1.23698650495, 0.221312029632), "x1": (0.499048611633, 0.118443988215)},
     0.731057448852, 0.927049897562, 346.219002909),
    ("y ~ a * b + (1 | g)", True, ["aa3:bb2"],
     {"(Intercept)": (1.17172154046, 0.267608353417), "aa2": (0.787956780264, 0.229333555872),
      "aa3": (-0.414093154429, 0.200478113156), "bb2": (0.549919312977, 0.231482214166),
      "aa2:bb2": (0.0483659259947, 0.325828246675)},
     1.0131186095, 0.725216380461, 294.714370702),
    ("y ~ x1 + x2 + k + s + x3 + a * b + (1 | g)", False, ["x2", "k", "x3", "aa3:bb2"],
     {"(Intercept)": (0.905878951511, 0.241528764327), "x1": (0.5749312816, 0.114610395781),
      "s": (-0.0823749667926, 0.0803632189423), "aa2": (0.808555295183, 0.193346738729),
      "aa3": (-0.392324038373, 0.169142748404), "bb2": (0.587345288419, 0.195726459817),
      "aa2:bb2": (0.00163411546439, 0.274861355496)},
     1.09986495444, 0.610992198823, 253.172811995),
    # the aliased column is the last of three that are each other's linear combination
    ("y ~ x1 + s + x3 + (1 | g)", True, ["x3"],
     {"(Intercept)": (1.23617368065, 0.221053773717), "x1": (0.559622881441, 0.17336675777),
      "s": (-0.0583521380577, 0.12178123247)},
     0.726426909431, 0.93055608079, 348.365691381),
]


@pytest.fixture(scope="module")
def frame():
    return rank_frame()


@pytest.mark.parametrize("formula, reml, dropped, coefs, theta, sigma, objective", LME4,
                         ids=[c[0] for c in LME4])
def test_matches_lme4(frame, formula, reml, dropped, coefs, theta, sigma, objective):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = bm.lmm(formula, frame, reml=reml)
    rank_warnings = [w for w in caught if issubclass(w.category, bm.RankDeficiencyWarning)]
    assert len(rank_warnings) == 1
    n = len(dropped)
    lme4_msg = ("fixed-effect model matrix is rank deficient so dropping "
                + ("1 column / coefficient" if n == 1 else f"{n} columns / coefficients"))
    message = str(rank_warnings[0].message)
    assert message.startswith(lme4_msg) and all(name in message for name in dropped)

    design = model.design
    assert design.dropped_fixed == dropped
    assert design.fixed_names == list(coefs)
    assert design.X.shape == (len(frame), len(coefs)) and design.X.flags.c_contiguous

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        fit = model.fit()
    assert [type(w) for w in fit.warnings].count(bm.RankDeficiencyWarning) == 1
    assert list(fit.params.index) == list(coefs)
    beta, se = np.array(list(coefs.values())).T
    np.testing.assert_allclose(fit.params.to_numpy(), beta, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(fit.bse.to_numpy(), se, rtol=1e-6)
    np.testing.assert_allclose(fit.theta, [theta], rtol=1e-5)
    np.testing.assert_allclose(fit.sigma, sigma, rtol=1e-6)
    assert fit.objective == pytest.approx(objective, abs=1e-6)


def test_full_rank_untouched(frame):
    with warnings.catch_warnings():
        warnings.simplefilter("error", bm.RankDeficiencyWarning)
        D = build_design("y ~ x1 + s + a + (1 | g)", frame)
    assert D.dropped_fixed == [] and D.warnings == []
    assert D.fixed_names == ["(Intercept)", "x1", "s", "aa2", "aa3"]


def test_newdata_gets_the_same_columns(frame):
    with pytest.warns(bm.RankDeficiencyWarning):
        D = build_design("y ~ x1 + x2 + a * b + (1 | g)", frame)
    assert D.dropped_fixed == ["x2", "aa3:bb2"]
    X_new, _ = design_matrices_for_newdata(D, frame.iloc[:7])
    np.testing.assert_array_equal(X_new, D.X[:7])
    assert D.fixed_spec.matrix.all_names == ["(Intercept)", "x1", "x2", "aa2", "aa3", "bb2",
                                             "aa2:bb2", "aa3:bb2"]


def test_rows_dropped_first(frame):
    """The rank is that of X after na.omit: a column aliased only on the complete rows goes."""
    d = frame.copy()
    d["x4"] = d["x1"] + 1.0
    d.loc[0, "x4"] = 5.0  # breaks the aliasing ...
    d.loc[0, "y"] = np.nan  # ... on a row that is dropped
    with pytest.warns(bm.RankDeficiencyWarning, match="dropping 1 column / coefficient: x4"):
        D = build_design("y ~ x1 + x4 + (1 | g)", d)
    assert D.dropped_fixed == ["x4"] and D.n_dropped == 1


# R: x <- 1:6; z <- x^2; w <- c(1, -1, 2, 0, 3, 1); q <- qr(M, tol = 1e-7, LAPACK = FALSE)
# and q$rank, q$pivot (1-based) for the matrices M below.
_x = np.arange(1.0, 7.0)
_z = _x ** 2
_w = np.array([1.0, -1, 2, 0, 3, 1])
R_QR = [
    ("cbind(1, x, 2 * x, 0, x + 1, z)",
     np.column_stack([np.ones(6), _x, 2 * _x, np.zeros(6), _x + 1, _z]), 3, [1, 2, 6, 3, 4, 5]),
    ("cbind(x, x + 1e-9 * w, z, x + 1e-5 * w, w)",
     np.column_stack([_x, _x + 1e-9 * _w, _z, _x + 1e-5 * _w, _w]), 3, [1, 3, 4, 2, 5]),
    ("cbind(0, 0, x, 1)", np.column_stack([np.zeros(6), np.zeros(6), _x, np.ones(6)]), 2,
     [3, 4, 1, 2]),
    ("cbind(1, x, z, x^3, x^4, x^5, x^6, w)",
     np.column_stack([_x ** k for k in range(7)] + [_w]), 6, [1, 2, 3, 4, 5, 6, 7, 8]),
]


@pytest.mark.parametrize("label, M, rank, pivot", R_QR, ids=[c[0] for c in R_QR])
def test_dqrdc2_matches_r(label, M, rank, pivot):
    r, p = dqrdc2_rank(M)
    assert r == rank and list(p + 1) == pivot
    r2, p2 = dqrdc2_rank(_small_equivalent(M, chunk_rows=1))  # one row per chunk
    assert r2 == rank and list(p2[:r2] + 1) == pivot[:rank]
    assert list(aliased_columns(np.ascontiguousarray(M)) + 1) == pivot[:rank]


def test_chunked_reduction_keeps_the_decisions(frame):
    """X read in blocks of rows gives lme4's columns too (here 44-row blocks of 120 rows)."""
    D = build_design("y ~ x1 + x2 + k + s + x3 + a * b + (1 | g)", frame, lme4_checks=False)
    M = _small_equivalent(D.X, chunk_rows=1)
    assert M.shape == (D.X.shape[1], D.X.shape[1])
    np.testing.assert_allclose(M.T @ M, D.X.T @ D.X, rtol=1e-10, atol=1e-9)
    rank, pivot = dqrdc2_rank(M)
    kept = [D.fixed_names[j] for j in pivot[:rank]]
    assert kept == ["(Intercept)", "x1", "s", "aa2", "aa3", "bb2", "aa2:bb2"]
