"""Parsing of lme4 formula syntax (bigmixed.formula)."""
import pytest

from bigmixed.spec.formula import FormulaError, parse_formula, r_term_order


def terms_of(text):
    return [(t.expr, t.group, t.group_vars, t.correlated) for t in parse_formula(text).terms]


# ---------------------------------------------------------------------------------------
# response / fixed part


def test_basic_split():
    p = parse_formula("y ~ age + (1 | doctor)")
    assert p.response == "y"
    assert p.fixed == "age"
    assert [str(b) for b in p.random] == ["(1 | doctor)"]
    assert terms_of("y ~ age + (1 | doctor)") == [("1", "doctor", ("doctor",), True)]
    assert p.grouping_columns == ["doctor"]


@pytest.mark.parametrize(
    "text, fixed",
    [
        ("y ~ (1|g)", "1"),
        ("y ~ 1 + (1|g)", "1"),
        ("y ~ 0 + (1|g)", "0"),
        ("y ~ x - 1 + (1|g)", "x - 1"),
        ("y ~ -1 + x + (1|g)", "-1 + x"),
        ("y ~ 0 + x + (0 + x | g)", "0 + x"),
        ("y ~ a*b + (1|g)", "a*b"),
        ("y ~ a:b + c + (1|g)", "a:b + c"),
        ("y ~ (1|g) + x + (1|h) + z", "x + z"),
        ("y ~ I(x^2) + (1|g)", "I(x**2)"),  # R's ^ is Python's ** inside I()
        ("y ~ (a+b+c)^2 + (1|g)", "(a+b+c)**2"),
        ("y ~ method", "method"),
    ],
)
def test_fixed_part(text, fixed):
    assert parse_formula(text).fixed == fixed


def test_backquoted_names():
    p = parse_formula("`my y` ~ `a b` + (1 | `my g`)")
    assert p.response == "my y"
    assert p.fixed == "`a b`"
    assert p.terms[0].group_vars == ("my g",)
    assert p.grouping_columns == ["my g"]


def test_redundant_parentheses():
    assert terms_of("y ~ ((1 | g))") == [("1", "g", ("g",), True)]


# ---------------------------------------------------------------------------------------
# random terms


def test_correlated_slope():
    assert terms_of("y ~ (x | g)") == [("x", "g", ("g",), True)]
    assert terms_of("y ~ (1 + x | g)") == [("1 + x", "g", ("g",), True)]
    assert terms_of("y ~ (0 + x | g)") == [("0 + x", "g", ("g",), True)]


def test_double_bar_expands_like_lme4():
    expect = [("1", "g", ("g",), False), ("0 + x", "g", ("g",), False)]
    assert terms_of("y ~ (1 + x || g)") == expect
    assert terms_of("y ~ (x || g)") == expect  # intercept implied, as in R
    assert terms_of("y ~ (0 + x || g)") == [("0 + x", "g", ("g",), False)]
    assert terms_of("y ~ (1 || g)") == [("1", "g", ("g",), False)]
    # lme4::findbars(y ~ (x*z || g)): 1 | g, 0 + x | g, 0 + z | g, 0 + x:z | g
    assert [t[0] for t in terms_of("y ~ (x*z || g)")] == ["1", "0 + x", "0 + z", "0 + x:z"]
    p = parse_formula("y ~ (1 + x || g)")
    assert [str(b) for b in p.random] == ["(1 + x || g)"]
    assert p.random[0].correlated is False


def test_nested_grouping_lme4_names_and_order():
    # lme4::findbars(y ~ (1|a/b)) -> 1 | b:a, 1 | a
    assert terms_of("y ~ (1 | g1/g2)") == [
        ("1", "g2:g1", ("g2", "g1"), True),
        ("1", "g1", ("g1",), True),
    ]
    # lme4::findbars(y ~ (1|a/b/c)) -> 1 | c:(b:a), 1 | b:a, 1 | a
    assert terms_of("y ~ (1 | a/b/c)") == [
        ("1", "c:(b:a)", ("c", "b", "a"), True),
        ("1", "b:a", ("b", "a"), True),
        ("1", "a", ("a",), True),
    ]
    assert terms_of("y ~ (x | g1/g2)") == [
        ("x", "g2:g1", ("g2", "g1"), True),
        ("x", "g1", ("g1",), True),
    ]


def test_double_bar_with_nesting_order():
    # lme4::findbars(y ~ (x||a/b)): 1|b:a, 1|a, 0+x|b:a, 0+x|a
    assert [(t[0], t[1]) for t in terms_of("y ~ (x || a/b)")] == [
        ("1", "b:a"),
        ("1", "a"),
        ("0 + x", "b:a"),
        ("0 + x", "a"),
    ]


def test_interaction_grouping():
    assert terms_of("y ~ (1 | g1:g2)") == [("1", "g1:g2", ("g1", "g2"), True)]
    assert terms_of("y ~ (1 | a:b:c)") == [("1", "a:b:c", ("a", "b", "c"), True)]


def test_crossed_terms_keep_user_order():
    p = parse_formula("y ~ x + (1 | g3) + (x | g1) + (1 | g2)")
    assert [(t.expr, t.group) for t in p.terms] == [("1", "g3"), ("x", "g1"), ("1", "g2")]
    assert p.grouping_columns == ["g3", "g1", "g2"]


def test_categorical_covariates_in_terms():
    assert terms_of("y ~ method + (0 + method | g)") == [("0 + method", "g", ("g",), True)]
    assert terms_of("y ~ (method | g)") == [("method", "g", ("g",), True)]


# ---------------------------------------------------------------------------------------
# R term order


def _labels(rhs):
    icpt, terms = r_term_order(rhs)
    return icpt, [":".join(f.expr for f in t) for t in terms]


def test_r_term_order():
    # R: terms(y ~ b:a + a*c) -> a, c, b:a, a:c
    assert _labels("b:a + a*c") == (True, ["a", "c", "b:a", "a:c"])
    # R: terms(y ~ z:b + a:z) -> z:b, z:a (variables in order of first appearance)
    assert _labels("z:b + a:z") == (True, ["z:b", "z:a"])
    assert _labels("a*b*c") == (True, ["a", "b", "c", "a:b", "a:c", "b:c", "a:b:c"])
    assert _labels("(a+b+c)**2") == (True, ["a", "b", "c", "a:b", "a:c", "b:c"])
    assert _labels("0 + a:b + c") == (False, ["c", "a:b"])
    assert _labels("x - 1") == (False, ["x"])
    assert _labels("a*b - 1") == (False, ["a", "b", "a:b"])


# ---------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    "text, message",
    [
        ("y x + (1|g)", "no '~'"),
        ("y ~ (1|g", "unbalanced parentheses"),
        ("y ~ x + (1|g))", "unbalanced parentheses"),
        ("y ~ x + [a)", "unbalanced parentheses"),
        ("y ~ ( | g)", "nothing on the left of '|'"),
        ("y ~ (1 | )", "nothing on the right of '|'"),
        ("y ~ (|| g)", "nothing on the left of '|'"),
        ("y ~ (1 | log(g))", "'log(g)' is not a column name"),
        ("y ~ (1 | g + h)", "must be a column name or an interaction"),
        ("y ~ (1 | 1)", "is not a column name"),
        ("y ~ (1 | a//b)", "empty grouping factor"),
        ("y ~ x | g", "must be parenthesised"),
        ("y ~ x * (1 | g)", "must be parenthesised"),
        ("y ~ x - (1 | g)", "cannot remove"),
        ("y ~ (1 | g | h)", "exactly one '|'"),
        ("(y | g) ~ x", "random-effects terms go on the right"),
        ("2 ~ x", "reads no column"),
        ("log(y ~ x", "unbalanced parentheses"),
        ("~ x + (1|g)", "no response"),
        ("y ~ ", "nothing on the right of '~'"),
        ("y ~ x ~ z", "more than one '~'"),
        ("y ~ x +", "ends with an operator"),
        ("y ~ x + `a", "unterminated backquote"),
        ("y ~ x + (1 + | g)", "cannot parse"),
    ],
)
def test_errors(text, message):
    with pytest.raises(FormulaError, match=None) as exc:
        parse_formula(text)
    assert message in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_non_string():
    with pytest.raises(FormulaError, match="must be a string"):
        parse_formula(3)


# --------------------------------------------------------------------------------------
# the light parse of plain right-hand sides (no formulaic import)

from hypothesis import given, settings, strategies as st  # noqa: E402

_PLAIN_PIECES = st.sampled_from(["x", "age", "a.b", "c_d", ".z", "x1", "`my var`", "`if`",
                                 "1", "0", "True", "if", "x:z", "log(x)", "x*z", "`a+b`"])


@settings(max_examples=150, deadline=None)
@given(pieces=st.lists(_PLAIN_PIECES, min_size=1, max_size=6),
       spaces=st.sampled_from(["+", " + ", "+ ", "  +"]))
def test_plain_right_hand_sides_parse_to_formulaics_terms(pieces, spaces):
    """Names, "1" and "0" joined by "+": the light parse gives formulaic's terms (expr and
    eval method of each factor, in order), or hands the text to formulaic."""
    from formulaic import Formula

    from bigmixed.spec.formula import _plain_terms, to_python_expr

    rhs = spaces.join(pieces)
    light = _plain_terms(rhs)
    if light is None:
        return
    assert not any(p in ("True", "if", "x:z", "log(x)", "x*z", "`a+b`") for p in pieces)
    want = [[(f.expr, f.eval_method.value) for f in t.factors]
            for t in Formula(to_python_expr(rhs), _ordering="none")]
    assert [[(f.expr, f.eval_method.value) for f in t.factors] for t in light] == want


def test_plain_factors_compare_and_pickle_like_values():
    import pickle

    from bigmixed.spec.formula import PlainFactor, r_term_order

    intercept, terms = r_term_order("age + `my var` + age")
    assert intercept and [[f.expr for f in t] for t in terms] == [["age"], ["my var"]]
    f = terms[0][0]
    assert isinstance(f, PlainFactor) and f.eval_method.value == "lookup"
    assert pickle.loads(pickle.dumps(f)) == f and hash(pickle.loads(pickle.dumps(f))) == hash(f)
