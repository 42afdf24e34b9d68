"""The formula vocabulary against R (issue #16 item 2): R's ``pi``, transformed responses,
splines::ns / splines::bs, ``Q('name')`` and backquoted names, R's names of expressions.

The references are committed (bench/references_parity/vocab_*; made by
vocab_make_references.py with R 4.2, lme4 1.1-31 and splines): these tests never call R.
"""
from __future__ import annotations

import ast
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bigmixed as bm
from bigmixed.spec.deparse import r_deparse, r_number
from bigmixed.spec.design import build_design, design_matrices_for_newdata
from bigmixed.spec.formula import parse_formula, to_python_expr
from bigmixed.spec.splines import interior_probs, r_quantile7, spline_needs_data
from bigmixed.spec.transforms import FORMULA_CONTEXT

REFS = Path(__file__).resolve().parent.parent / "bench" / "references_parity"


@pytest.fixture(scope="module")
def ref():
    return json.loads((REFS / "vocab_references.json").read_text())


@pytest.fixture(scope="module")
def data():
    return pd.read_csv(REFS / "vocab_data.csv")


@pytest.fixture(scope="module")
def newdata():
    return pd.read_csv(REFS / "vocab_newdata.csv")


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# ---------------------------------------------------------------------------------------
# R's deparse: the names of expressions


# R syntax that is not Python (%%, !, %in%) is written as bigmixed reads it
_PYTHON_SPELLING = {"a %% b": "a % b", "!a": None, "x %in% y": None}


def test_deparse_matches_r(ref):
    checked = 0
    for source, r_name in ref["deparse"].items():
        code = _PYTHON_SPELLING.get(source, source)
        if code is None:
            continue
        assert r_deparse(to_python_expr(code), written_parens=True) == r_name, source
        checked += 1
    assert checked >= 20


@pytest.mark.parametrize("x, text", [
    (2.0, "2"), (100000.0, "1e+05"), (1e6, "1e+06"), (0.002, "0.002"), (0.0001, "1e-04"),
    (123456789012.0, "123456789012"), (0.1234567890123456, "0.123456789012346"),
    (-3.5, "-3.5"), (1 / 3, "0.333333333333333"), (1e-300, "1e-300"), (0.0, "0"),
])
def test_numbers_as_r_deparses_them(x, text):
    assert r_number(x) == text


def test_expression_column_names_are_r_deparse(ref):
    d = pd.DataFrame({"y": np.arange(8.0), "x": np.linspace(1, 2, 8), "time": np.linspace(0, 1, 8),
                      "g": list("aabbccdd")})
    D = build_design("y ~ I(x / 2) + sin(2*pi*time) + log((x)) + I(x^-1) + (1 | g)", d,
                     lme4_checks=False)
    # formulaic's text of a term has lost redundant parentheses: R keeps log((x))
    assert D.fixed_names == ["(Intercept)", "I(x/2)", "sin(2 * pi * time)", "log(x)", "I(x^-1)"]
    np.testing.assert_allclose(D.X[:, 2], np.sin(2 * np.pi * d["time"]), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------
# pi, TRUE / FALSE, c()


def test_pi_is_r_constant_and_a_column_named_pi_wins():
    d = pd.DataFrame({"y": np.arange(6.0), "time": np.linspace(0, 1, 6),
                      "pi": [1.0, 2, 3, 4, 5, 6], "g": list("aabbcc")})
    with_column = build_design("y ~ I(2 * pi) + (1 | g)", d, lme4_checks=False)
    np.testing.assert_array_equal(with_column.X[:, 1], 2 * d["pi"])  # R: data first
    constant = build_design("y ~ sin(2 * pi * time) + (1 | g)", d.drop(columns="pi"),
                            lme4_checks=False)
    assert constant.fixed_names == ["(Intercept)", "sin(2 * pi * time)"]
    np.testing.assert_array_equal(constant.X[:, 1], np.sin(2 * np.pi * d["time"]))
    assert build_design("pi ~ time + (1 | g)", d, lme4_checks=False).response == "pi"


def test_r_logicals_and_c_in_arguments():
    d = pd.DataFrame({"y": np.arange(12.0), "x": np.linspace(0, 10, 12), "g": list("ab") * 6})
    D = build_design("y ~ ns(x, knots = c(3, 6), intercept = TRUE) - 1 + (1 | g)", d,
                     lme4_checks=False)
    assert D.fixed_names == [f"ns(x, knots = c(3, 6), intercept = TRUE){j}" for j in (1, 2, 3, 4)]
    assert FORMULA_CONTEXT["TRUE"] is True and FORMULA_CONTEXT["F"] is False


# ---------------------------------------------------------------------------------------
# Q('name') and backquotes


def test_q_names_the_column_as_backquotes_do(data):
    q = build_design("mobility ~ Q('my var') + (1 | doctor)", data)
    bq = build_design("mobility ~ `my var` + (1 | doctor)", data)
    assert q.fixed_names == bq.fixed_names == ["(Intercept)", "`my var`"]  # R's name
    np.testing.assert_array_equal(q.X, bq.X)
    d = data.rename(columns={"doctor": "the doctor", "mobility": "mob ility"})
    r = build_design("Q('mob ility') ~ log(Q(\"my var\")) + (1 | Q('the doctor'))", d)
    assert r.response == "mob ility"
    assert r.fixed_names == ["(Intercept)", "log(`my var`)"]
    assert r.terms[0].group == "`the doctor`"


def test_q_errors():
    with pytest.raises(bm.FormulaSyntaxError, match="Q\\(\\) takes one quoted column name"):
        parse_formula("y ~ Q(x) + (1 | g)")
    with pytest.raises(bm.MissingColumnError, match="'no such'"):
        build_design("y ~ Q('no such') + (1 | g)", pd.DataFrame({"y": [1.0, 2], "g": [1, 2]}))


# ---------------------------------------------------------------------------------------
# Splines: the bases against splines::ns / splines::bs


def _basis(call: str, x: np.ndarray, state: dict) -> np.ndarray:
    """Evaluate `call` (R syntax, the variable named x) with bigmixed's ns / bs."""
    node = ast.parse(to_python_expr(call), mode="eval").body
    env = dict(FORMULA_CONTEXT)

    def value(n):
        return eval(compile(ast.Expression(n), "<basis>", "eval"), env)  # noqa: S307

    args = [value(a) for a in node.args[1:]]
    kwargs = {k.arg: value(k.value) for k in node.keywords}
    values = _quiet(FORMULA_CONTEXT[node.func.id], x, *args, _state=state, **kwargs).__wrapped__
    return np.column_stack(list(values.values()) if isinstance(values, dict) else [values])


def _reference_names(section: str) -> list:
    return list(json.loads((REFS / "vocab_references.json").read_text())[section])


@pytest.mark.parametrize("label", _reference_names("bases"))
def test_spline_basis_matches_r(ref, data, label):
    b = ref["bases"][label]
    x = data["age"].dropna().to_numpy()
    state: dict = {}
    basis = _basis(b["call"], x, state)
    assert basis.shape == (len(x), b["ncol"])
    np.testing.assert_allclose(basis[b["x_rows"]], b["basis_rows"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(state["knots"], b["knots"], rtol=1e-15, atol=0)
    np.testing.assert_array_equal(state["Boundary_knots"], b["Boundary.knots"])
    # new values, beyond the boundary knots too, with the fitted knots (R's predict / makepredictcall)
    np.testing.assert_allclose(_basis(b["call"], np.array(b["newx"]), state), b["predict_rows"],
                               rtol=0, atol=1e-12)
    # R's model.matrix names
    frame = pd.DataFrame({"y": 0.0, "age": x, "g": np.arange(len(x)) % 5})
    names = _quiet(build_design, f"y ~ {label} + (1 | g)", frame, lme4_checks=False).fixed_names
    assert names == b["colnames_model_matrix"]


def test_ns_is_linear_beyond_the_boundary_knots():
    x = np.linspace(0.0, 10.0, 41)
    state: dict = {}
    _basis("ns(x, df = 4)", x, state)
    far = _basis("ns(x, df = 4)", np.array([-3.0, -2.0, -1.0, 11.0, 12.0, 13.0]), state)
    np.testing.assert_allclose(np.diff(far[:3], 2, axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(np.diff(far[3:], 2, axis=0), 0, atol=1e-12)


def test_r_quantile_and_seq():
    # R: quantile(c(16, 1, 4, 2, 8), c(1/3, 2/3)) is 2.666667 6.666667 (type 7)
    np.testing.assert_allclose(r_quantile7(np.array([16.0, 1, 4, 2, 8]), [1 / 3, 2 / 3]),
                               [8 / 3, 20 / 3], rtol=1e-15)
    np.testing.assert_array_equal(r_quantile7(np.array([3.0, 1, 2]), [0.5]), [2.0])
    # R: seq.int(0, 1, length.out = 5)[-c(1, 5)]
    np.testing.assert_array_equal(interior_probs(3), [0.25, 0.5, 0.75])


# ---------------------------------------------------------------------------------------
# lme4 fits with these terms


@pytest.mark.parametrize("name", _reference_names("models"))
def test_fit_matches_lme4(ref, data, newdata, name):
    m = ref["models"][name]
    p = m["precise"]
    fit = _quiet(lambda: bm.lmm(m["formula"], data=data).fit())
    design = fit.design
    assert design.response == m["response"]  # R's name of the model frame's first column
    assert list(fit.fixed_names) == m["fixed_names"]
    assert fit.nobs == m["nobs"] and fit.n_dropped == m["n_dropped"]
    # the REML criterion no worse than lme4's, estimates as lme4's precise fit
    best = min(m["objective"], p["objective"])
    assert fit.objective <= best + 1e-8 * abs(best)
    se = np.array([p["se"][n] for n in m["fixed_names"]])
    beta = np.array([p["beta"][n] for n in m["fixed_names"]])
    assert np.max(np.abs(fit.beta - beta) / se) < 1e-5
    np.testing.assert_allclose(fit.bse.to_numpy(), se, rtol=1e-5)
    np.testing.assert_allclose(fit.sigma, p["sigma"], rtol=1e-6)
    np.testing.assert_allclose(fit.theta, list(p["theta"].values()), rtol=1e-4, atol=1e-5)
    # the model matrix and the (transformed) response on R's rows
    position = {label: i for i, label in enumerate(design.row_index)}
    rows = [position[r] for r in m["rows"]]
    np.testing.assert_allclose(design.X[rows], m["X_rows"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(design.y[rows], m["y_rows"], rtol=1e-15, atol=0)
    np.testing.assert_allclose(np.asarray(fit.fitted)[rows], m["fitted_rows"], atol=2e-5)
    np.testing.assert_allclose(np.asarray(fit.resid)[rows], m["resid_rows"], atol=2e-5)
    # new data: the fitted knots (makepredictcall), values beyond them included
    X_new, _ = _quiet(design_matrices_for_newdata, design, newdata)
    np.testing.assert_allclose(X_new, m["newdata_X"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(_quiet(fit.predict, newdata, level="population"),
                               m["newdata_population_precise"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(_quiet(fit.predict, newdata), m["newdata_conditional_precise"],
                               rtol=0, atol=1e-6)
    # the spline state is R's (fixed part and random-effects terms)
    states = dict(design.fixed_spec.matrix.model_spec.transform_state
                  if design.fixed_spec.matrix.model_spec is not None else {})
    for ts in design.term_specs:
        if ts.matrix.model_spec is not None:
            states.update(ts.matrix.model_spec.transform_state)
    named = {r_deparse(k): v for k, v in states.items()}
    for term, st in (m["spline_state"] or {}).items():  # R's empty list() is []
        np.testing.assert_allclose(named[term]["knots"], st["knots"], rtol=1e-15)
        np.testing.assert_array_equal(named[term]["Boundary_knots"], st["Boundary.knots"])
        assert bool(named[term]["intercept"]) == st["intercept"]


def test_knots_use_rows_that_na_omit_drops(data, ref):
    """R evaluates ns(age, df = 3) on the model frame before na.omit: the ages of rows
    missing the response count for the knots."""
    fit = _quiet(lambda: bm.lmm("mobility ~ ns(age, df = 3) + sex + (1 | doctor)", data=data).fit())
    state = fit.design.fixed_spec.matrix.model_spec.transform_state["ns(age, df=3)"]
    all_ages = data["age"].dropna().to_numpy()
    kept_ages = data.dropna(subset=["age", "mobility"])["age"].to_numpy()
    probs = interior_probs(2)
    np.testing.assert_array_equal(state["knots"], r_quantile7(all_ages, probs))
    assert not np.array_equal(r_quantile7(kept_ages, probs), r_quantile7(all_ages, probs))
    np.testing.assert_array_equal(state["knots"],
                                  ref["models"]["ns_df"]["spline_state"]["ns(age, df = 3)"]["knots"])


def test_bs_beyond_its_boundary_warns_as_r(data, newdata):
    fit = _quiet(lambda: bm.lmm("mobility ~ bs(age, df = 5) + (1 | doctor)", data=data).fit())
    with pytest.warns(bm.BigmixedWarning, match="beyond boundary knots"):
        fit.predict(newdata, level="population")


@pytest.mark.parametrize("formula, message", [
    ("y ~ ns(x, dff = 3) + (1 | g)", "ns\\(\\) has no argument 'dff'"),
    ("y ~ ns(x, df = 2.5) + (1 | g)", "df must be a whole number"),
    ("y ~ bs(x, degree = 0) + (1 | g)", "'degree' must be integer >= 1"),
    ("y ~ ns(x, Boundary.knots = c(1, 2, 3)) + (1 | g)", "Boundary.knots must be two numbers"),
    ("y ~ ns(x, knots = c(1, Inf)) + (1 | g)", "knots must be finite"),
    ("y ~ ns(c1) + (1 | g)", "boundary knots are equal"),
    ("y ~ bs(f) + (1 | g)", "bs\\(\\) needs a numeric variable"),
    ("y ~ bs(x, 3, c(2), 3, FALSE, c(0, 9), 1) + (1 | g)", "at most 6 arguments"),
])
def test_spline_errors(formula, message):
    d = pd.DataFrame({"y": np.arange(8.0), "x": np.arange(8.0), "c1": 1.0,
                      "f": list("abababab"), "g": list("aabbccdd")})
    with pytest.raises(bm.DesignError, match=message):
        _quiet(build_design, formula, d, lme4_checks=False)


def test_df_too_small_warns_as_r():
    d = pd.DataFrame({"y": np.arange(8.0), "x": np.arange(8.0), "g": list("aabbccdd")})
    with pytest.warns(bm.BigmixedWarning, match="'df' was too small; have used 3"):
        D = build_design("y ~ bs(x, df = 1) + (1 | g)", d, lme4_checks=False)
    assert D.fixed_names == ["(Intercept)", "bs(x, df = 1)1", "bs(x, df = 1)2", "bs(x, df = 1)3"]


# ---------------------------------------------------------------------------------------
# Transformed responses


def test_transformed_response_drops_nan_rows_with_the_warning(data):
    with pytest.warns(RuntimeWarning, match="2 row\\(s\\) where log\\(score\\) evaluate to NaN"):
        D = build_design("log(score) ~ age + (1 | doctor)", data)
    ok = data["age"].notna() & (data["score"] > 0)
    assert D.n_obs == int(ok.sum()) and D.response == "log(score)"
    np.testing.assert_array_equal(D.y, np.log(data.loc[ok, "score"]))


def test_transformed_response_infinite_is_an_error_naming_it():
    # R's lmer: "NA/NaN/Inf in 'y'" for log(0)
    d = pd.DataFrame({"y": [1.0, 0.0, 2, 3, 4, 5], "x": np.arange(6.0), "g": list("aabbcc")})
    with pytest.raises(bm.NonFiniteValueError, match="response 'log\\(y\\)' has 1 infinite"):
        build_design("log(y) ~ x + (1 | g)", d)


@pytest.mark.parametrize("formula, error, message", [
    ("log(yy) ~ x + (1 | g)", bm.MissingColumnError, "column 'yy' \\(in 'log\\(yy\\)', response"),
    ("lgo(y) ~ x + (1 | g)", bm.UnknownFunctionError, "unknown function 'lgo'"),
    ("factor(y > 2) ~ x + (1 | g)", bm.ResponseTypeError, "must evaluate to one number per row"),
    ("log(f) ~ x + (1 | g)", bm.ResponseTypeError, "response column 'f' must be numeric"),
    ("log(pi) ~ x + (1 | g)", bm.MissingColumnError, "reads no column of the data"),
    ("2 ~ x + (1 | g)", bm.FormulaSyntaxError, "reads no column"),
])
def test_transformed_response_errors(formula, error, message):
    d = pd.DataFrame({"y": np.arange(1.0, 7.0), "x": np.arange(6.0), "f": list("abcabc"),
                      "g": list("aabbcc")})
    with pytest.raises(error, match=message):
        build_design(formula, d)


def test_response_expression_is_arithmetic_as_in_r():
    d = pd.DataFrame({"y": np.arange(1.0, 7.0), "z": np.arange(6.0), "g": list("aabbcc")})
    D = build_design("y / 100 + z ~ 1 + (1 | g)", d, lme4_checks=False)
    assert D.response == "y/100 + z"
    np.testing.assert_array_equal(D.y, d["y"] / 100 + d["z"])


def test_transformed_response_saves_loads_and_predicts(tmp_path, data, newdata):
    formula = ("log(score) ~ ns(age, df = 3) + bs(time, knots = c(1), degree = 2) + "
               "sin(2 * pi * time) + `my var` + (1 + ns(time, df = 2) | doctor)")
    fit = _quiet(lambda: bm.lmm(formula, data=data).fit())
    path = fit.save(tmp_path / "m.bmfit")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning about the prototype rows of load
        loaded = bm.load(path)
    assert loaded.design.response == "log(score)"
    assert list(loaded.fixed_names) == list(fit.fixed_names)
    np.testing.assert_array_equal(_quiet(loaded.predict, newdata), _quiet(fit.predict, newdata))
    meta = json.loads(zipfile.ZipFile(path).read("bigmixed-model.json"))
    assert meta["response"] == "log(score)"
    assert "ns(age, df=3)" in json.dumps(meta["fixed"]["matrix"]["transform_state"])


# ---------------------------------------------------------------------------------------
# Dask data: splines whose knots come from the data are refused, explicit ones work


@pytest.mark.parametrize("expr, needs", [
    ("ns(x, df=3)", True), ("ns(x, knots=c(1, 2))", True),
    ("ns(x, knots=c(1, 2), Boundary__dot__knots=c(0, 3))", False),
    ("ns(x, Boundary__dot__knots=c(0, 3))", False),
    ("ns(x, 3, None, False, c(0, 3))", True),
    ("ns(x, None, c(1), False, c(0, 3))", False),
    ("bs(x, df=4, knots=c(1), Boundary__dot__knots=c(0, 3))", False),
    ("bs(x, df=4, Boundary__dot__knots=c(0, 3))", True),
    ("ns(x, knots=c(1), Boundary__dot__knots=c(0, z))", True),
])
def test_spline_needs_data(expr, needs):
    assert spline_needs_data(expr, expr[:2]) is needs


def test_dask_refusals_and_explicit_knots(data):
    dd = pytest.importorskip("dask.dataframe")
    import dask

    d = data.dropna(subset=["mobility", "age"]).reset_index(drop=True)
    ddf = dd.from_pandas(d, npartitions=4)
    with dask.config.set(scheduler="synchronous"):
        with pytest.raises(NotImplementedError, match="ns\\(\\) needs the whole column"):
            bm.lmm("mobility ~ ns(age, df = 3) + (1 | doctor)", data=ddf)
        with pytest.raises(NotImplementedError, match="the response 'log\\(score\\)' is an expression"):
            bm.lmm("log(score) ~ age + (1 | doctor)", data=ddf)
        formula = ("mobility ~ ns(age, knots = c(45, 60), Boundary.knots = c(30, 80)) + "
                   "sin(2 * pi * time) + (1 | doctor)")
        from_dask = bm.lmm(formula, data=ddf).fit()
    in_memory = bm.lmm(formula, data=d).fit()
    np.testing.assert_array_equal(from_dask.beta, in_memory.beta)
    assert from_dask.objective == in_memory.objective
