"""Bad input: a typed error naming the fault, raised before any work is done.

One table drives everything: (description, formula, frame builder, expected class, message
fragments). Each case goes through the public entry point `bm.lmm` with the cross-product
step replaced by a trap, so a case passes only if the error is raised before any
cross-product is computed. lme4's wording (checked with lme4 1.1-31) is kept where lme4
has a check of its own.
"""
import numpy as np
import pandas as pd
import pytest

import bigmixed as bm
import bigmixed.spec.design
import bigmixed.errors as E
import bigmixed.spec.formula
from bigmixed.crossprods.crossprod import CrossProducts
from bigmixed.spec.design import build_design


def base(n_groups=8, per_group=5):
    n = n_groups * per_group
    i = np.arange(n)
    return pd.DataFrame({
        "y": np.sin(i) + (i // per_group) * 0.3,
        "x": np.cos(1.7 * i),
        "z": i / n,
        "f": np.array(["lo", "mid", "hi"])[i % 3],
        "g": np.array([f"g{k}" for k in i // per_group]),
        "h": np.array([f"h{k}" for k in i % 4]),
    })


def with_(**cols):
    """Frame builder: the base frame with some columns replaced or added."""
    def build():
        d = base()
        for k, v in cols.items():
            d[k] = v(d) if callable(v) else v
        return d
    return build


def set_values(col, rows, value):
    def f(d):
        s = d[col].astype(object if isinstance(value, str) else d[col].dtype).copy()
        s.iloc[rows] = value
        return s
    return f


def renamed(mapping):
    def build():
        d = base()
        d.columns = [mapping.get(c, c) for c in d.columns]
        return d
    return build


def unique_ids(d):
    return [f"id{k}" for k in range(len(d))]


def pairs_only():
    """8 groups x 2 observations: (x | g) has 16 random effects for 16 observations."""
    return base(n_groups=8, per_group=2)


CASES = [
    # ---- the formula ---------------------------------------------------------------------
    ("formula is not a string", 42, base, E.FormulaError, ["formula must be a string", "int"]),
    ("no tilde", "y x + (1 | g)", base, E.FormulaSyntaxError, ["has no '~'"]),
    ("unclosed parenthesis", "y ~ x + (1 | g", base, E.FormulaSyntaxError,
     ["unbalanced parentheses", "'(' at position 8 is never closed"]),
    ("extra closing parenthesis", "y ~ x + (1 | g))", base, E.FormulaSyntaxError,
     ["unbalanced parentheses", "unexpected ')'"]),
    ("bar with nothing on the left", "y ~ x + ( | g)", base, E.FormulaSyntaxError,
     ["( | g)", "nothing on the left of '|'"]),
    ("bar with nothing on the right", "y ~ x + (1 | )", base, E.FormulaSyntaxError,
     ["(1 | )", "nothing on the right of '|'"]),
    ("double bar with nothing on the left", "y ~ (|| g)", base, E.FormulaSyntaxError,
     ["nothing on the left of '|'"]),
    ("random term not parenthesised", "y ~ x + 1 | g", base, E.FormulaSyntaxError,
     ["must be parenthesised"]),
    ("random term with no columns", "y ~ x + (0 | g)", base, E.FormulaSyntaxError,
     ["(0 | g)", "has no columns"]),
    ("unknown function, fixed part", "y ~ lgo(x) + (1 | g)", base, E.UnknownFunctionError,
     ["unknown function 'lgo'", "'lgo(x)'", "fixed effects", "did you mean 'log'"]),
    ("unknown function, random part", "y ~ x + (foo(x) | g)", base, E.UnknownFunctionError,
     ["unknown function 'foo'", "random-effects term (foo(x) | g)"]),
    ("unknown numpy function", "y ~ np.lgo(x) + (1 | g)", base, E.UnknownFunctionError,
     ["unknown function 'np.lgo'"]),
    ("grouping by an expression", "y ~ x + (1 | log(g))", base, E.GroupingExpressionError,
     ["'log(g)' is not a column name"]),
    ("grouping by a sum", "y ~ x + (1 | g + h)", base, E.GroupingExpressionError,
     ["'g + h'", "must be a column name or an interaction of column names"]),
    ("grouping by a constant", "y ~ x + (1 | 1)", base, E.GroupingExpressionError,
     ["'1' is not a column name"]),
    # ---- the frame itself ----------------------------------------------------------------
    ("data is not a DataFrame", "y ~ x + (1 | g)", lambda: base().to_dict("list"),
     E.DataTypeError, ["data must be a pandas DataFrame", "dict"]),
    ("empty frame", "y ~ x + (1 | g)", lambda: base().iloc[:0], E.EmptyDataError,
     ["has no rows"]),
    ("frame without rows or columns", "y ~ x + (1 | g)", pd.DataFrame, E.EmptyDataError,
     ["empty"]),
    ("non-string column names", "y ~ x + (1 | g)",
     lambda: pd.concat([base(), pd.DataFrame(np.zeros((40, 2)))], axis=1), E.ColumnNameError,
     ["column names must be strings", "0 (int)", "1 (int)"]),
    ("duplicated column name", "y ~ x + (1 | g)", renamed({"z": "x"}), E.ColumnNameError,
     ["several columns named 'x' (2 times)"]),
    # ---- columns -------------------------------------------------------------------------
    ("missing covariate, close name", "y ~ xx + (1 | g)", base, E.MissingColumnError,
     ["column 'xx' (fixed effects) is not in the data", "did you mean 'x'"]),
    ("missing grouping column, other case", "y ~ x + (1 | G)", base, E.MissingColumnError,
     ["column 'G' (grouping factor)", "did you mean 'g'"]),
    ("missing response", "yy ~ x + (1 | g)", base, E.MissingColumnError,
     ["column 'yy' (response)", "did you mean 'y'"]),
    ("missing column inside an expression", "y ~ log(zz) + (1 | g)", base,
     E.MissingColumnError, ["column 'zz'", "'log(zz)'", "did you mean 'z'"]),
    ("missing column, nothing close", "y ~ x + (1 | hospital)", base, E.MissingColumnError,
     ["column 'hospital' (grouping factor)", "the data has the columns 'y', 'x'"]),
    ("text response", "f ~ x + (1 | g)", base, E.ResponseTypeError,
     ["response column 'f' must be numeric", "'lo'"]),
    ("categorical response", "y ~ x + (1 | g)", with_(y=lambda d: d["f"].astype("category")),
     E.ResponseTypeError, ["response column 'y' must be numeric", "categorical"]),
    ("date covariate", "y ~ x + z + (1 | g)",
     with_(z=lambda d: pd.date_range("2020-01-01", periods=len(d))), E.DataTypeError,
     ["column 'z'", "datetime64", "convert dates"]),
    ("group ids mixing ints and strings", "y ~ x + (1 | g)",
     with_(g=lambda d: pd.Series([k if k % 2 else str(k) for k in np.arange(len(d)) // 5],
                                 dtype=object)),
     E.DataTypeError, ["grouping column 'g' mixes value types", "int", "str"]),
    # ---- values --------------------------------------------------------------------------
    ("every row has a missing value", "y ~ x + z + (1 | g)",
     with_(x=lambda d: np.where(d.index % 2 == 0, np.nan, d["x"]),
           z=lambda d: np.where(d.index % 2 == 1, np.nan, d["z"])),
     E.EmptyDataError, ["no rows left", "every one of the 40 rows", "'x': 20", "'z': 20"]),
    ("infinite covariate", "y ~ x + (1 | g)", with_(x=set_values("x", [3, 7], np.inf)),
     E.NonFiniteValueError, ["column 'x' has 2 infinite value(s)", "row labels 3, 7"]),
    ("infinite response", "y ~ x + (1 | g)", with_(y=set_values("y", [5], -np.inf)),
     E.NonFiniteValueError, ["response column 'y' has 1 infinite value(s)", "row labels 5"]),
    ("infinite after a transformation", "y ~ log(z) + (1 | g)", base, E.NonFiniteValueError,
     ["fixed-effects column 'log(z)' has 1 infinite value(s)", "row labels 0"]),
    ("infinite in a random-effects column", "y ~ x + (z | g)",
     with_(z=set_values("z", [11], np.inf)), E.NonFiniteValueError,
     ["column 'z' has 1 infinite value(s)", "row labels 11"]),
    # ---- grouping factors (lme4's checkNlevels / checkZdims) -----------------------------
    ("grouping factor with a single level", "y ~ x + (1 | g)", with_(g="only"),
     E.GroupingError, ["grouping factor 'g' has 1 level ('only')",
                       "grouping factors must have > 1 sampled level"]),
    ("single level left after missing values", "y ~ x + (1 | h)",
     with_(x=lambda d: np.where(d["h"] == "h0", d["x"], np.nan)),
     E.GroupingError, ["grouping factor 'h' has 1 level ('h0') in the 10 observation(s)"]),
    ("as many levels as observations", "y ~ x + (1 | id)", with_(id=unique_ids),
     E.IdentifiabilityError,
     ["number of levels of each grouping factor must be < number of observations "
      "(problems: id)", "'id' has 40 levels for 40 observations"]),
    ("nested factor with one observation per level", "y ~ x + (1 | g/id)",
     with_(id=unique_ids), E.IdentifiabilityError, ["(problems: id:g)"]),
    ("as many random effects as observations", "y ~ x + (x | g)", pairs_only,
     E.IdentifiabilityError,
     ["number of observations (=16) <= number of random effects (=16) for term (x | g); the "
      "random-effects parameters and the residual variance (or scale parameter) are "
      "probably unidentifiable", "2 column(s) x 8 levels of 'g'"]),
]


@pytest.fixture
def no_work(monkeypatch):
    """Replace the first expensive step (the cross-products) by a trap that counts calls."""
    calls = []

    def trap(*args, **kwargs):
        calls.append(args)
        raise AssertionError("cross-products computed despite bad input")

    monkeypatch.setattr(CrossProducts, "compute", classmethod(lambda cls, *a, **k: trap(*a, **k)))
    return calls


@pytest.mark.parametrize("description, formula, frame, error, fragments", CASES,
                         ids=[c[0] for c in CASES])
def test_bad_input(no_work, description, formula, frame, error, fragments):
    data = frame()
    with pytest.raises(E.BigmixedError) as exc:
        bm.lmm(formula, data)
    assert type(exc.value) is error, f"{description}: {type(exc.value).__name__}: {exc.value}"
    message = str(exc.value)
    for fragment in fragments:
        assert fragment in message, f"{description}: {fragment!r} not in {message!r}"
    assert isinstance(exc.value, ValueError)  # `except ValueError` keeps working
    assert not no_work


def test_trap_is_effective(no_work):
    """The trap of test_bad_input does fire once the input is good."""
    with pytest.raises(AssertionError, match="cross-products computed"):
        bm.lmm("y ~ x + (1 | g)", base())
    assert len(no_work) == 1


def test_hierarchy_and_aliases():
    assert bigmixed.spec.formula.FormulaError is E.FormulaError is bm.FormulaError
    assert bigmixed.spec.design.DesignError is E.DesignError is bm.DesignError
    for name in E.__all__:
        cls = getattr(E, name)
        assert issubclass(cls, E.BigmixedError) and getattr(bm, name) is cls
        if cls is not E.BigmixedError:
            assert issubclass(cls, ValueError)
    assert issubclass(E.MissingColumnError, KeyError)  # like df["missing"]
    assert issubclass(E.ResponseTypeError, E.DataTypeError)
    # KeyError's str() would add quotes: the message stays readable
    err = E.MissingColumnError("column 'a' is not in the data")
    assert str(err) == "column 'a' is not in the data"


def test_lme4_checks_can_be_skipped():
    """build_design(lme4_checks=False) evaluates the formula only, like model.matrix."""
    d = base(n_groups=8, per_group=2)
    D = build_design("y ~ x + (x | g)", d, lme4_checks=False)
    assert D.terms[0].n_levels * D.terms[0].n_columns == D.n_obs
    with pytest.raises(E.IdentifiabilityError):
        build_design("y ~ x + (x | g)", d)


def test_missing_values_alone_are_not_an_error():
    d = base()
    d.loc[[1, 2], "x"] = np.nan
    D = build_design("y ~ x + (1 | g)", d)
    assert D.n_obs == 38 and D.n_dropped == 2
