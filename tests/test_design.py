"""build_design: formula + DataFrame -> X, y, random terms, with R/lme4 conventions.

Expected names and values were produced with R 4.2.2 / lme4 (model.matrix, lFormula,
contr.poly) under LC_COLLATE=C.
"""
import time

import numpy as np
import pandas as pd
import pytest

from bigmixed.spec.design import (
    Design,
    DesignError,
    RandomTerm,
    build_design,
    design_matrices_for_newdata,
)
from bigmixed.spec.rlabels import contr_poly
from bigmixed.spec.formula import FormulaError


# ---------------------------------------------------------------------------------------
# contr.poly


def test_contr_poly_3_matches_r():
    r = np.array([[-7.0710678118654757e-01, 0.40824829046386307],
                  [-7.8504622934188758e-17, -0.81649658092772603],
                  [7.0710678118654746e-01, 0.40824829046386307]])
    np.testing.assert_allclose(contr_poly(3), r, rtol=0, atol=1e-15)


def test_contr_poly_4_and_5_match_r():
    r4 = np.array([[-0.67082039324993692, 0.5, -0.22360679774997891],
                   [-0.22360679774997896, -0.5, 0.67082039324993681],
                   [0.22360679774997896, -0.5, -0.67082039324993692],
                   [0.67082039324993692, 0.5, 0.22360679774997899]])
    np.testing.assert_allclose(contr_poly(4), r4, rtol=0, atol=1e-15)
    r5_quartic = [0.11952286093343928, -0.47809144373375756, 0.71713716560063634,
                  -0.47809144373375728, 0.11952286093343928]
    np.testing.assert_allclose(contr_poly(5)[:, 3], r5_quartic, rtol=0, atol=1e-15)
    c = contr_poly(7)
    np.testing.assert_allclose(c.T @ c, np.eye(6), atol=1e-13)
    np.testing.assert_allclose(c.sum(axis=0), 0, atol=1e-13)


def test_ordered_factor_gets_poly_contrasts():
    d = pd.DataFrame({
        "y": np.arange(6.0),
        "o": pd.Categorical(["lo", "mid", "hi", "top", "lo", "hi"],
                            categories=["lo", "mid", "hi", "top"], ordered=True),
    })
    D = build_design("y ~ o", d)
    assert D.fixed_names == ["(Intercept)", "o.L", "o.Q", "o.C"]
    # R: model.matrix(~o, d)
    a, b = 0.6708203932499369, 0.2236067977499789
    expect = np.array([[1, -a, 0.5, -b], [1, -b, -0.5, a], [1, b, -0.5, -a],
                       [1, a, 0.5, b], [1, -a, 0.5, -b], [1, b, -0.5, -a]])
    np.testing.assert_allclose(D.X, expect, atol=1e-14)
    # full coding when no intercept, as R: olo omid ohi otop
    assert build_design("y ~ 0 + o", d).fixed_names == ["olo", "omid", "ohi", "otop"]
    five = pd.DataFrame({"y": np.arange(5.0),
                         "o": pd.Categorical(list("abcde"), ordered=True)})
    assert build_design("y ~ o", five).fixed_names == ["(Intercept)", "o.L", "o.Q", "o.C", "o^4"]


# ---------------------------------------------------------------------------------------
# R column names, order and values


@pytest.fixture
def small():
    return pd.DataFrame({
        "y": [1.0, 2, 3, 4, 5, 6],
        "a": [1.5, 2, 3, 4, 5, 6],
        "b": ["A", "B", "A", "B", "C", "C"],
        "f1": ["p", "q", "p", "q", "p", "q"],
        "f2": ["x", "x", "y", "y", "z", "z"],
        "g": ["u", "u", "v", "v", "w", "w"],
    })


def test_numeric_times_factor_matches_r(small):
    D = build_design("y ~ a*b + (1 | g)", small)
    assert D.fixed_names == ["(Intercept)", "a", "bB", "bC", "a:bB", "a:bC"]
    expect = np.array([[1, 1.5, 0, 0, 0, 0], [1, 2, 1, 0, 2, 0], [1, 3, 0, 0, 0, 0],
                       [1, 4, 1, 0, 4, 0], [1, 5, 0, 1, 0, 5], [1, 6, 0, 1, 0, 6]])
    np.testing.assert_array_equal(D.X, expect)
    np.testing.assert_array_equal(D.y, [1, 2, 3, 4, 5, 6])


def test_two_factors_match_r(small):
    D = build_design("y ~ f1*f2 + (1 | g)", small)
    assert D.fixed_names == ["(Intercept)", "f1q", "f2y", "f2z", "f1q:f2y", "f1q:f2z"]
    expect = np.array([[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0],
                       [1, 1, 1, 0, 1, 0], [1, 0, 0, 1, 0, 0], [1, 1, 0, 1, 0, 1]])
    np.testing.assert_array_equal(D.X, expect)


@pytest.fixture
def rframe():
    return pd.DataFrame({
        "y": [1.0, 2, 3, 4, 5, 6],
        "x": [1.0, 2, 3, 4, 5, 6],
        "f": list("abcabc"),
        "g": list("uuvvww"),
        "lg": [True, False, True, True, False, False],
        "my var": [3.0, 1, 2, 5, 4, 6],
        "o": pd.Categorical(["lo", "mid", "hi", "top", "lo", "hi"],
                            categories=["lo", "mid", "hi", "top"], ordered=True),
    })


# colnames(model.matrix(<rhs>, d)) in R for the frame above
R_NAMES = [
    ("`my var` + f", ["(Intercept)", "`my var`", "fb", "fc"]),
    ("lg", ["(Intercept)", "lgTRUE"]),
    ("o:x", ["(Intercept)", "olo:x", "omid:x", "ohi:x", "otop:x"]),
    ("0 + f", ["fa", "fb", "fc"]),
    ("f - 1", ["fa", "fb", "fc"]),
    ("0 + f + g", ["fa", "fb", "fc", "gv", "gw"]),
    ("f:g", ["(Intercept)", "fa:gu", "fb:gu", "fc:gu", "fa:gv", "fb:gv", "fc:gv", "fa:gw",
             "fb:gw", "fc:gw"]),
    ("x:f", ["(Intercept)", "x:fa", "x:fb", "x:fc"]),
    ("f:x", ["(Intercept)", "fa:x", "fb:x", "fc:x"]),
    ("0 + x + f", ["x", "fa", "fb", "fc"]),
    ("I(x^2) + log(x+1)", ["(Intercept)", "I(x^2)", "log(x + 1)"]),
    ("f*g", ["(Intercept)", "fb", "fc", "gv", "gw", "fb:gv", "fc:gv", "fb:gw", "fc:gw"]),
    ("x*f", ["(Intercept)", "x", "fb", "fc", "x:fb", "x:fc"]),
    ("f + f:x", ["(Intercept)", "fb", "fc", "fa:x", "fb:x", "fc:x"]),
    ("x + f:x", ["(Intercept)", "x", "x:fb", "x:fc"]),
    ("o*f", ["(Intercept)", "o.L", "o.Q", "o.C", "fb", "fc", "o.L:fb", "o.Q:fb", "o.C:fb",
             "o.L:fc", "o.Q:fc", "o.C:fc"]),
    ("0 + f:g", ["fa:gu", "fb:gu", "fc:gu", "fa:gv", "fb:gv", "fc:gv", "fa:gw", "fb:gw",
                 "fc:gw"]),
    ("g + f:g", ["(Intercept)", "gv", "gw", "gu:fb", "gv:fb", "gw:fb", "gu:fc", "gv:fc",
                 "gw:fc"]),
]


@pytest.mark.parametrize("rhs, names", R_NAMES, ids=[r for r, _ in R_NAMES])
def test_r_column_names(rframe, rhs, names):
    D = build_design(f"y ~ {rhs} + (1 | g)", rframe, lme4_checks=False)  # model.matrix: no drops
    assert D.fixed_names == names
    assert D.X.shape == (6, len(names))


def test_full_dummy_values(rframe):
    D = build_design("y ~ 0 + f + (1|g)", rframe)
    np.testing.assert_array_equal(D.X, np.tile(np.eye(3), (2, 1)))
    D = build_design("y ~ x + f:x + (1|g)", rframe)  # x:fb = x * [f == b]
    np.testing.assert_array_equal(D.X[:, 2], [0, 2, 0, 0, 5, 0])


def test_array_layout(rframe):
    D = build_design("y ~ x*f + (x | g)", rframe, lme4_checks=False)  # 6 rows, 6 random effects
    assert isinstance(D, Design)
    for a in (D.X, D.y, D.terms[0].Z):
        assert a.dtype == np.float64 and a.flags.c_contiguous
    assert D.X.shape == (6, 6) and D.y.shape == (6,)
    t = D.terms[0]
    assert isinstance(t, RandomTerm)
    assert t.codes.dtype == np.int32
    assert t.levels.dtype == object


# ---------------------------------------------------------------------------------------
# levels


def test_level_order_from_categorical_unused_dropped():
    d = pd.DataFrame({
        "y": np.arange(6.0),
        "m": pd.Categorical(["nir", "hplc", "nir", "hplc", "nir", "hplc"],
                            categories=["nir", "unused", "hplc"]),
        "g": pd.Categorical(["c", "a", "c", "a", "b", "b"], categories=["c", "zz", "b", "a"]),
    })
    D = build_design("y ~ m + (1 | g)", d)
    assert D.fixed_names == ["(Intercept)", "mhplc"]  # reference = first category "nir"
    np.testing.assert_array_equal(D.X[:, 1], [0, 1, 0, 1, 0, 1])
    t = D.terms[0]
    assert list(t.levels) == ["c", "b", "a"]  # category order, unused "zz" dropped
    np.testing.assert_array_equal(t.codes, [0, 2, 0, 2, 1, 1])


def test_string_levels_sorted_by_code_point():
    d = pd.DataFrame({"y": np.arange(5.0), "h": ["b", "B", "a", "_d", "B"],
                      "g": ["b", "B", "a", "_d", "B"]})
    D = build_design("y ~ h + (1 | g)", d)
    # R with LC_COLLATE=C: B, _d, a, b
    assert D.fixed_names == ["(Intercept)", "h_d", "ha", "hb"]
    assert list(D.terms[0].levels) == ["B", "_d", "a", "b"]
    np.testing.assert_array_equal(D.terms[0].codes, [3, 0, 2, 1, 0])


def test_numeric_and_bool_grouping_levels():
    d = pd.DataFrame({"y": np.arange(6.0), "k": [10, 2, 100, 2, 10, 100],
                      "w": [2.5, 1.0, 1.0, 2.5, 3.0, 3.0],
                      "b": [True, False, True, False, True, True]})
    D = build_design("y ~ (1 | k) + (1 | w) + (1 | b)", d)
    k, w, b = D.terms
    assert list(k.levels) == ["2", "10", "100"]  # numeric order, R's labels
    np.testing.assert_array_equal(k.codes, [1, 0, 2, 0, 1, 2])
    assert list(w.levels) == ["1", "2.5", "3"]
    assert list(b.levels) == ["FALSE", "TRUE"]
    np.testing.assert_array_equal(b.codes, [1, 0, 1, 0, 1, 1])


def test_interaction_group_codes():
    d = pd.DataFrame({"y": np.arange(6.0),
                      "a": ["b", "a", "b", "c", "a", "b"],
                      "s": pd.Categorical(["y", "x", "x", "y", "x", "y"], categories=["y", "x"])})
    t = build_design("y ~ (1 | a:s)", d).terms[0]
    # R: levels(factor(a:s)) = a:x b:y b:x c:y (observed only, a slowest, s in its order)
    assert t.group == "a:s" and t.group_vars == ("a", "s")
    assert list(t.levels) == ["a:x", "b:y", "b:x", "c:y"]
    np.testing.assert_array_equal(t.codes, [1, 0, 2, 3, 0, 1])


def test_nested_grouping_lme4_style():
    d = pd.DataFrame({"y": np.arange(6.0), "x": [0.5, 1, 2, 3, 1, 0],
                      "school": ["s2", "s1", "s2", "s1", "s1", "s2"],
                      "cls": ["c1", "c1", "c2", "c2", "c1", "c1"]})
    D = build_design("y ~ x + (1 | school/cls)", d)
    inner, outer = D.terms
    assert (inner.group, outer.group) == ("cls:school", "school")
    assert list(inner.levels) == ["c1:s1", "c1:s2", "c2:s1", "c2:s2"]
    np.testing.assert_array_equal(inner.codes, [1, 0, 3, 2, 0, 1])
    assert list(outer.levels) == ["s1", "s2"]
    assert inner.Z is outer.Z  # same expr -> one shared Z
    np.testing.assert_array_equal(inner.Z, np.ones((6, 1)))


def test_random_term_matrices(small):
    small = small.assign(method=["hplc", "nir", "hplc", "nir", "nir", "hplc"])
    D = build_design("y ~ method + (0 + method | g) + (method | f1) + (1 + a || f2)", small,
                     lme4_checks=False)  # 6 rows, 6 random effects
    full, treat, icpt, slope = D.terms
    assert full.column_names == ["methodhplc", "methodnir"]
    np.testing.assert_array_equal(full.Z, [[1, 0], [0, 1], [1, 0], [0, 1], [0, 1], [1, 0]])
    assert treat.column_names == ["(Intercept)", "methodnir"]
    np.testing.assert_array_equal(treat.Z[:, 1], [0, 1, 0, 1, 1, 0])
    assert (icpt.expr, icpt.column_names, icpt.correlated) == ("1", ["(Intercept)"], False)
    assert (slope.expr, slope.column_names) == ("0 + a", ["a"])
    np.testing.assert_array_equal(slope.Z[:, 0], small["a"])
    assert [t.n_levels for t in D.terms] == [3, 2, 3, 3]
    assert [t.n_columns for t in D.terms] == [2, 2, 1, 1]


# ---------------------------------------------------------------------------------------
# missing values


def test_na_rows_dropped():
    d = pd.DataFrame({
        "y": [1.0, np.nan, 3, 4, 5, 6, 7],
        "x": [1.0, 2, None, 4, 5, 6, 7],
        "f": ["a", "b", "a", None, "b", "a", "b"],
        "g": ["u", "u", "v", "v", np.nan, "w", "w"],
        "unused": [np.nan] * 7,
    }, index=[10, 11, 12, 13, 14, 15, 16])
    D = build_design("y ~ x + f + (1 | g)", d)
    assert D.n_dropped == 4
    assert list(D.row_index) == [10, 15, 16]
    np.testing.assert_array_equal(D.y, [1, 6, 7])
    np.testing.assert_array_equal(D.X, [[1, 1, 0], [1, 6, 0], [1, 7, 1]])
    assert list(D.terms[0].levels) == ["u", "w"]  # "v" only occurred in dropped rows
    np.testing.assert_array_equal(D.terms[0].codes, [0, 1, 1])


def test_nullable_dtypes():
    d = pd.DataFrame({"y": pd.array([1, 2, None, 4], dtype="Int64"),
                      "x": pd.array([1.5, None, 3, 4], dtype="Float64"),
                      "g": pd.array(["a", "b", "a", None], dtype="string")})
    D = build_design("y ~ x + (1 | g)", d, lme4_checks=False)  # a single row left
    assert D.n_dropped == 3
    np.testing.assert_array_equal(D.y, [1.0])
    assert D.X.dtype == np.float64


def test_transform_nan_rows_dropped_like_model_frame():
    d = pd.DataFrame({"y": np.arange(5.0), "x": [1.0, -1, 2, 3, 4], "g": list("aabbc")})
    with pytest.warns(RuntimeWarning, match="1 row.*log\\(x\\).*NaN"):
        D = build_design("y ~ log(x) + (1 | g)", d)
    assert D.n_dropped == 1
    assert list(D.row_index) == [0, 2, 3, 4]
    np.testing.assert_allclose(D.X[:, 1], np.log([1, 2, 3, 4]))


def test_transforms_see_all_rows_like_model_frame():
    # R evaluates scale(z) on every row, then na.omit drops the row with y = NA:
    # lFormula(y ~ scale(z) + (1|g))$X[, 2] = (z - 4) / sqrt(12.5) on rows 1, 3, 4, 5
    d = pd.DataFrame({"y": [1.0, np.nan, 3, 4, 5], "z": [1.0, 2, 3, 4, 10],
                      "g": list("aabbc")})
    D = build_design("y ~ scale(z) + (1 | g)", d)
    assert D.fixed_names == ["(Intercept)", "scale(z)"]
    np.testing.assert_allclose(D.X[:, 1], (np.array([1.0, 3, 4, 10]) - 4) / np.sqrt(12.5))
    # new data is scaled with the fitting data's centre and scale (R's makepredictcall)
    X_new, _ = design_matrices_for_newdata(D, pd.DataFrame({"z": [4.0, 8.0], "g": ["a", "a"]}))
    np.testing.assert_allclose(X_new[:, 1], [0.0, 4 / np.sqrt(12.5)])
    with pytest.raises(DesignError, match="missing values are not allowed in 'poly'"):
        build_design("y ~ poly(z, 2) + (1 | g)", d.assign(z=[1.0, np.nan, 3, 4, 5]))


def test_factor_and_functions_in_formula():
    d = pd.DataFrame({"y": np.arange(6.0), "k": [10, 2, 3, 2, 10, 3], "x": [1.0, 4, 9, 16, 25, 36],
                      "g": list("aabbcc")})
    D = build_design("y ~ factor(k) + sqrt(x) + (1 | g)", d)
    assert D.fixed_names == ["(Intercept)", "factor(k)3", "factor(k)10", "sqrt(x)"]
    np.testing.assert_array_equal(D.X[:, 3], [1, 2, 3, 4, 5, 6])
    with pytest.raises(FormulaError, match="unknown function 'foo' in 'foo\\(x\\)'"):
        build_design("y ~ foo(x) + (1 | g)", d)
    with pytest.raises(DesignError, match="did you mean 'x'"):
        build_design("y ~ log(xx) + (1 | g)", d)


def test_all_rows_missing():
    d = pd.DataFrame({"y": [1.0, 2], "x": [np.nan, np.nan], "g": ["a", "b"]})
    with pytest.raises(DesignError, match="no rows left"):
        build_design("y ~ x + (1 | g)", d)


# ---------------------------------------------------------------------------------------
# errors


def test_missing_column_suggests(small):
    with pytest.raises(DesignError, match=r"column 'aa' .* did you mean 'a'"):
        build_design("y ~ aa + (1 | g)", small)
    with pytest.raises(DesignError, match=r"'G' \(grouping factor\).*did you mean 'g'"):
        build_design("y ~ a + (1 | G)", small)
    with pytest.raises(DesignError, match="'yy' \\(response\\)"):
        build_design("yy ~ a + (1 | g)", small)


def test_non_numeric_response(small):
    with pytest.raises(DesignError, match="response column 'b' must be numeric"):
        build_design("b ~ a + (1 | g)", small)


def test_single_level_factor_with_contrasts(small):
    with pytest.raises(DesignError, match="2 or more levels"):
        build_design("y ~ b + (1 | g)", small.assign(b="A"))


def test_formula_errors_propagate(small):
    with pytest.raises(FormulaError):
        build_design("y ~ a + (1 | log(g))", small)
    with pytest.raises(DesignError, match="DataFrame"):
        build_design("y ~ a", {"y": [1.0]})


# ---------------------------------------------------------------------------------------
# new data


@pytest.fixture
def mixed():
    rng = np.random.default_rng(3)
    n = 40
    return pd.DataFrame({
        "y": rng.normal(size=n),
        "x": rng.normal(size=n),
        "z": rng.uniform(1, 2, size=n),
        "f": rng.choice(["a", "b", "c"], size=n),
        "o": pd.Categorical(rng.choice(["lo", "hi", "mid"], size=n),
                            categories=["lo", "mid", "hi"], ordered=True),
        "g": rng.choice([f"g{i}" for i in range(6)], size=n),
        "s": rng.choice([1, 2, 3], size=n),
    })


FORMULAS = [
    "y ~ x*f + o + log(z) + (x | g) + (1 | s/g) + (0 + f | s)",
    "y ~ 1 + (1 | g)",
    "y ~ 0 + (1 | g:s)",
    "y ~ poly(z, 2) + scale(x) + factor(s) + (1 + x || g)",
]


@pytest.mark.parametrize("formula", FORMULAS)
def test_newdata_same_data_identical(mixed, formula):
    D = build_design(formula, mixed)
    D2 = build_design(formula, mixed)
    np.testing.assert_array_equal(D.X, D2.X)
    X_new, zs = design_matrices_for_newdata(D, mixed)
    np.testing.assert_array_equal(X_new, D.X)
    assert X_new.flags.c_contiguous
    assert len(zs) == len(D.terms)
    for (codes, Z), t, t2 in zip(zs, D.terms, D2.terms):
        np.testing.assert_array_equal(codes, t.codes)
        np.testing.assert_array_equal(t2.codes, t.codes)
        assert codes.dtype == t.codes.dtype
        np.testing.assert_array_equal(Z, t.Z)


def test_newdata_reencodes_subset_and_unseen(mixed):
    mixed = mixed[~((mixed["s"] == 3) & (mixed["g"] == "g5"))]
    assert (mixed["s"] == 3).any() and (mixed["g"] == "g5").any()
    unseen_combo = (3, "g5")
    D = build_design("y ~ x*f + o + (x | g) + (1 | s:g)", mixed)
    new = pd.DataFrame({
        "x": [0.5, np.nan, 1.0, 2.0],
        "f": ["c", "a", "b", "a"],
        "o": ["hi", "lo", "mid", "lo"],          # plain strings map onto the fitted levels
        "g": ["g1", "g2", "new", unseen_combo[1]],
        "s": [1, 2, 3, unseen_combo[0]],
    })
    X_new, [(c1, Z1), (c2, Z2)] = design_matrices_for_newdata(D, new)
    assert X_new.shape == (4, len(D.fixed_names))
    assert np.isnan(X_new[1]).all() and np.isnan(Z1[1]).all()  # NA covariate -> NaN row
    row0 = dict(zip(D.fixed_names, X_new[0]))
    assert row0["(Intercept)"] == 1 and row0["x"] == 0.5 and row0["fc"] == 1 and row0["x:fc"] == 0.5
    np.testing.assert_allclose([row0["o.L"], row0["o.Q"]], contr_poly(3)[2])
    levels_g = list(D.terms[0].levels)
    assert c1[0] == levels_g.index("g1") and c1[2] == -1
    assert c2[3] == -1  # both parts seen, combination not
    lv2 = list(D.terms[1].levels)
    assert c2[0] == (lv2.index("1:g1") if "1:g1" in lv2 else -1)


def test_newdata_unseen_fixed_level_errors(mixed):
    D = build_design("y ~ f + (1 | g)", mixed)
    with pytest.raises(DesignError, match="new levels q"):
        design_matrices_for_newdata(D, pd.DataFrame({"f": ["a", "q"], "g": ["g1", "g1"]}))
    with pytest.raises(DesignError, match="'g'"):
        design_matrices_for_newdata(D, pd.DataFrame({"f": ["a"]}))


def test_specs_kept(mixed):
    D = build_design("y ~ x + f + (x | g)", mixed)
    assert D.fixed_spec.model_spec is not None
    assert list(D.fixed_spec.model_spec.column_names) == ["Intercept", "x", "fb", "fc"]
    assert D.term_specs[0].group_vars == ("g",)
    assert list(D.term_specs[0].levels) == list(D.terms[0].levels)


# ---------------------------------------------------------------------------------------
# scale


def test_large_grouping_is_fast():
    rng = np.random.default_rng(0)
    n, L = 1_000_000, 100_000
    g = rng.integers(0, L, size=n)
    s = rng.integers(0, 20, size=n)
    d = pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n), "g": g, "s": s,
                      "gs": np.arange(L).astype(str).astype(object)[g]})
    t0 = time.perf_counter()
    D = build_design("y ~ x + (1 | g) + (1 | gs)", d)
    D2 = build_design("y ~ x + (1 | s:g)", d)
    elapsed = time.perf_counter() - t0
    n_g = len(np.unique(g))
    assert D.terms[0].n_levels == n_g and D.terms[1].n_levels == n_g
    np.testing.assert_array_equal(D.terms[0].levels[D.terms[0].codes[:1000]], g[:1000].astype(str))
    assert D2.terms[0].n_levels == len(np.unique(s * L + g))
    assert elapsed < 5.0, elapsed
