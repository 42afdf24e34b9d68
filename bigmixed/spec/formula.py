"""Parse lme4 model formulas.

formula -> design -> cross-products -> factor -> objective -> optimizer -> results.

`parse_formula("y ~ x + (1 + x | g) + (1 | a/b)")` splits an lme4 formula into

* the response (a column name, possibly backquoted),
* the fixed-effects right-hand side as a string formulaic can read (``"x"``; ``"1"`` when
  only random terms were given), and
* the random-effects ("bar") terms, both as written (`ParsedFormula.random`) and expanded
  the way lme4 expands them (`ParsedFormula.terms`):

  - ``(e || g)``  ->  ``(1 | g) + (0 + t1 | g) + (0 + t2 | g) ...`` for the terms ``t_i`` of
    ``e`` (lme4's ``expandDoubleVerts``; a factor ``f`` in ``(f || g)`` stays one term);
  - ``(e | a/b)``  ->  ``(e | b:a) + (e | a)`` and ``(e | a/b/c)`` -> ``(e | c:(b:a)) +
    (e | b:a) + (e | a)`` -- exactly lme4's ``findbars`` (names *and* order);
  - ``(e | a:b)`` is one term grouped by the observed combinations of ``a`` and ``b``.

Term ordering of the fixed part follows R's ``terms.formula`` (see `r_term_order`).
"""
from __future__ import annotations

import functools

import ast
import difflib
import re
from dataclasses import dataclass

from ..errors import FormulaError, FormulaSyntaxError, GroupingExpressionError, UnknownFunctionError

__all__ = [
    "FormulaError",
    "FormulaSyntaxError",
    "GroupingExpressionError",
    "UnknownFunctionError",
    "BarTerm",
    "ExpandedTerm",
    "ParsedFormula",
    "parse_formula",
    "r_term_order",
    "to_python_expr",
    "quote_name",
]

_NAME_RE = re.compile(r"^[A-Za-z_.][A-Za-z0-9_.]*$")
_PY_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {v: k for k, v in _OPEN.items()}




@dataclass(frozen=True)
class BarTerm:
    """A random-effects term as the user wrote it: ``(expr | group)`` or ``(expr || group)``."""

    expr: str
    group: str
    correlated: bool

    def __str__(self) -> str:
        return f"({self.expr} {'|' if self.correlated else '||'} {self.group})"


@dataclass(frozen=True)
class ExpandedTerm:
    """One random-effects term after expanding ``||`` and ``/`` (what the model fits).

    expr : left-hand side, e.g. "1", "x", "1 + time", "0 + method".
    group : the grouping expression as lme4 names it, e.g. "g", "g1:g2", "b:a", "c:(b:a)".
    group_vars : the grouping column names, slowest-varying first (the order in which the
        levels of an interaction are sorted), e.g. ("b", "a") for "b:a".
    correlated : False when the term came from ``||``.
    """

    expr: str
    group: str
    group_vars: tuple
    correlated: bool = True

    def __str__(self) -> str:
        return f"({self.expr} | {self.group})"


@dataclass(frozen=True)
class ParsedFormula:
    """Result of `parse_formula`.

    text : the formula as given.
    response : the response column's name (backquotes removed), or for a transformed
        response (``log(y) ~ ...``) the expression as R names it (``"log(y)"``,
        ``"I(y/100)"``: R's deparse, the name of the model frame's first column).
    fixed : fixed-effects right-hand side, formulaic syntax ("1" if only bar terms given;
        R's ``^`` is written ``**`` so that ``I(x^2)`` means a power in Python).
    random : the bar terms as written, in the user's order.
    terms : the bar terms after lme4's expansion of ``||`` and ``/``, in lme4's order.
    response_expr : None when the response is a column; else the Python code of the
        response expression (``"log(y)"``, ``"I(y / 100)"``), evaluated like the fixed part's
        expressions.
    """

    text: str
    response: str
    fixed: str
    random: tuple
    terms: tuple
    response_expr: str | None = None

    @property
    def grouping_columns(self) -> list:
        out: list = []
        for t in self.terms:
            for v in t.group_vars:
                if v not in out:
                    out.append(v)
        return out


# ----------------------------------------------------------------------------------------
# Low-level scanning: quotes, backquotes and bracket depth.


def _scan(text: str):
    """Yield (index, char, depth) for every character outside quotes and backquotes.

    Raises FormulaError on unbalanced brackets or an unterminated quote.
    """
    stack: list = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "'\"`":
            j = i + 1
            while j < n and text[j] != c:
                if text[j] == "\\" and c != "`":
                    j += 1
                j += 1
            if j >= n:
                kind = "backquote" if c == "`" else "quote"
                raise FormulaSyntaxError(f"unterminated {kind} {c} at position {i} in formula {text!r}")
            i = j + 1
            continue
        if c in _OPEN:
            yield i, c, len(stack)
            stack.append((c, i))
        elif c in _CLOSE:
            if not stack:
                raise FormulaSyntaxError(
                    f"unbalanced parentheses: unexpected {c!r} at position {i} in formula {text!r}"
                )
            o, pos = stack.pop()
            if o != _CLOSE[c]:
                raise FormulaSyntaxError(
                    f"unbalanced parentheses: {o!r} at position {pos} closed by {c!r} at "
                    f"position {i} in formula {text!r}"
                )
            yield i, c, len(stack)
        else:
            yield i, c, len(stack)
        i += 1
    if stack:
        o, pos = stack[-1]
        raise FormulaSyntaxError(f"unbalanced parentheses: {o!r} at position {pos} is never closed in formula {text!r}")


def _top_level(text: str, chars: str) -> list:
    return [i for i, c, d in _scan(text) if d == 0 and c in chars]


def _has_char_outside_quotes(text: str, ch: str) -> bool:
    return any(c == ch for _, c, _ in _scan(text))


def _strip_parens(text: str) -> str:
    """Remove redundant enclosing parentheses: "((a|b))" -> "a|b"."""
    t = text.strip()
    while t.startswith("(") and t.endswith(")"):
        # the opening paren must close at the very end
        depth0_close = [i for i, c, d in _scan(t) if c == ")" and d == 0]
        if depth0_close and depth0_close[0] == len(t) - 1:
            t = t[1:-1].strip()
        else:
            break
    return t


def _is_wrapped(text: str) -> bool:
    t = text.strip()
    if not (t.startswith("(") and t.endswith(")")):
        return False
    closes = [i for i, c, d in _scan(t) if c == ")" and d == 0]
    return bool(closes) and closes[0] == len(t) - 1


def quote_name(name: str) -> str:
    """Backquote a column name for a formula unless it is a plain identifier."""
    return name if _PY_NAME_RE.match(name) else f"`{name}`"


def _parse_name(text: str) -> str | None:
    """A bare or backquoted column name -> the name; anything else -> None."""
    t = text.strip()
    if len(t) >= 2 and t[0] == "`" and t[-1] == "`" and "`" not in t[1:-1]:
        return t[1:-1]
    if _NAME_RE.match(t) and not re.match(r"^\.[0-9]", t):
        return t
    return None


def to_python_expr(text: str) -> str:
    """R formula syntax -> the Python code formulaic evaluates (idempotent).

    * R's power operator ``^`` -> ``**`` (formulaic reads ``(a+b)**2`` like R's ``(a+b)^2``
      and Python code inside ``I()`` needs ``**``: ``I(x^2)`` in R means ``I(x**2)`` here);
    * patsy's and formulaic's quoting ``Q('my var')`` -> the backquoted name `` `my var` ``,
      the same column as R's backquotes;
    * R's dotted argument names (``Boundary.knots = c(20, 80)``) -> ``Boundary__dot__knots``
      (`bigmixed.spec.deparse.DOT`), which R's deparse writes back with the dot.

    Quoted strings and backquoted names are left as they are.
    """
    text = _unquote_q(text)
    positions = {i for i, c, _ in _scan(text) if c == "^"}
    if positions:
        text = "".join("**" if i in positions else c for i, c in enumerate(text))
    return _encode_dotted_keywords(text)


_Q_CALL = re.compile(r"Q\(\s*")
_DOTTED_KEYWORD = re.compile(
    r"(?<=[(,])(\s*)([A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)+)(\s*)=(?!=)")


def _quote_end(text: str, i: int) -> int:
    """Index just past the quote or backquote opened at text[i] (len(text) if unclosed)."""
    c, j, n = text[i], i + 1, len(text)
    while j < n and text[j] != c:
        j += 2 if (text[j] == "\\" and c != "`") else 1
    return min(j + 1, n)


def _outside_quotes(text: str) -> list:
    """[(start, stop)] of the stretches of `text` outside quotes and backquotes."""
    out, start, i, n = [], 0, 0, len(text)
    while i < n:
        if text[i] in "'\"`":
            out.append((start, i))
            i = start = _quote_end(text, i)
            continue
        i += 1
    out.append((start, n))
    return [(a, b) for a, b in out if b > a]


def _unquote_q(text: str) -> str:
    """``Q('name')`` / ``Q("name")`` -> `` `name` `` (outside quotes)."""
    if "Q" not in text:
        return text
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c in "'\"`":  # a quoted stretch is copied as it is
            j = _quote_end(text, i)
            out.append(text[i:j])
            i = j
            continue
        m = _Q_CALL.match(text, i)
        if m is not None and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] in "_.")):
            name, i = _q_argument(text, m.end())
            out.append(f"`{name}`")
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _q_argument(text: str, q: int) -> tuple:
    """The quoted name of a ``Q(`` call whose argument starts at text[q] -> (name, index
    just past the closing parenthesis)."""
    end = text.find(text[q], q + 1) if q < len(text) and text[q] in "'\"" else -1
    close = end + 1
    while 0 < close < len(text) and text[close] == " ":
        close += 1
    if end < 0 or close >= len(text) or text[close] != ")":
        raise FormulaSyntaxError(
            f"Q() takes one quoted column name, e.g. Q('my var'), in {text!r}")
    name = text[q + 1:end]
    if "`" in name or "\\" in name:
        raise FormulaSyntaxError(
            f"column name {name!r} in Q() holds a backquote or a backslash, which a formula "
            "cannot quote; rename the column")
    return name, close + 1


def _encode_dotted_keywords(text: str) -> str:
    from .deparse import DOT

    if "." not in text:
        return text
    pieces, pos = [], 0
    for start, stop in _outside_quotes(text):
        pieces.append(text[pos:start])
        pieces.append(_DOTTED_KEYWORD.sub(
            lambda m: m.group(1) + m.group(2).replace(".", DOT) + m.group(3) + "=",
            text[start:stop]))
        pos = stop
    pieces.append(text[pos:])
    return "".join(pieces)


# ----------------------------------------------------------------------------------------
# Splitting a right-hand side into signed summands.


def _split_sum(rhs: str) -> list:
    """Split at top-level '+' and '-' -> [(sign, text), ...]; empty text only when invalid."""
    cuts = _top_level(rhs, "+-")
    out = []
    start, sign = 0, "+"
    for pos in cuts:
        out.append((sign, rhs[start:pos].strip()))
        sign = rhs[pos]
        start = pos + 1
    out.append((sign, rhs[start:].strip()))
    # drop empty leading chunk ("-1 + x", "+ x") and unary doubles ("x + + z")
    cleaned = []
    for k, (s, t) in enumerate(out):
        if t == "":
            if k == len(out) - 1:
                raise FormulaSyntaxError(f"formula right-hand side {rhs!r} ends with an operator {s!r}")
            nxt_sign = out[k + 1][0]
            if s == "-" and nxt_sign == "-":
                raise FormulaSyntaxError(f"cannot parse '- -' in formula right-hand side {rhs!r}")
            if s == "-":
                out[k + 1] = ("-", out[k + 1][1])
            continue
        cleaned.append((s, t))
    return cleaned


# ----------------------------------------------------------------------------------------
# Grouping expressions.


def _split_top(text: str, ch: str) -> list:
    cuts = _top_level(text, ch)
    parts, start = [], 0
    for pos in cuts:
        parts.append(text[start:pos])
        start = pos + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _parse_interaction(text: str, whole: str) -> tuple:
    """"a:b", "(a:b)", "`my g`:b" -> ("a", "b"). Raises FormulaError for anything else."""
    t = _strip_parens(text)
    if t == "":
        raise GroupingExpressionError(f"empty grouping factor in random-effects term {whole!r}")
    names: list = []
    for part in _split_top(t, ":"):
        p = _strip_parens(part)
        if ":" in p and _is_wrapped(part):
            names.extend(_parse_interaction(p, whole))
            continue
        name = _parse_name(p)
        if name is None:
            raise GroupingExpressionError(
                f"grouping factor {text.strip()!r} in random-effects term {whole!r} must be a "
                "column name or an interaction of column names (a:b), optionally nested with "
                f"'/' (a/b); {part.strip()!r} is not a column name"
            )
        names.append(name)
    return tuple(names)


def _fmt_interaction(names: tuple) -> str:
    return ":".join(quote_name(n) for n in names)


def _expand_group(group: str, whole: str) -> list:
    """lme4's findbars expansion of a grouping expression -> [(group_string, group_vars)].

    "a"       -> [("a", ("a",))]
    "a:b"     -> [("a:b", ("a", "b"))]
    "a/b"     -> [("b:a", ("b", "a")), ("a", ("a",))]
    "a/b/c"   -> [("c:(b:a)", ("c", "b", "a")), ("b:a", ("b", "a")), ("a", ("a",))]
    """
    g = group.strip()
    if g == "":
        raise FormulaSyntaxError(f"random-effects term {whole!r} has nothing on the right of '|'")
    if _has_char_outside_quotes(g, "+") or _has_char_outside_quotes(g, "|"):
        raise GroupingExpressionError(
            f"grouping factor {g!r} in random-effects term {whole!r} must be a column name or "
            "an interaction of column names (a:b), optionally nested with '/' (a/b)"
        )
    g = _strip_parens(g)
    parts = _split_top(g, "/")
    if len(parts) == 1:
        names = _parse_interaction(parts[0], whole)
        return [(_fmt_interaction(names), names)]
    nested = [_parse_interaction(p, whole) for p in parts]
    out = []
    # build outermost-first strings the way lme4 deparses makeInteraction()
    label = _fmt_interaction(nested[0])
    compound = len(nested[0]) > 1
    vars_ = nested[0]
    levels = [(label, vars_)]
    for part in nested[1:]:
        inner = f"({label})" if compound else label
        label = f"{_fmt_interaction(part)}:{inner}"
        vars_ = tuple(part) + tuple(vars_)
        compound = True
        levels.append((label, vars_))
    out = list(reversed(levels))
    return out


# ----------------------------------------------------------------------------------------
# Term ordering (R's terms.formula).


def _formulaic_terms(rhs: str, what: str):
    """Parse a right-hand side with formulaic, keeping the written order of terms."""
    try:
        terms = _parsed_terms(rhs)
    except _ParseFailure as e:
        raise FormulaSyntaxError(f"cannot parse {what} {rhs!r}: {e.__cause__}") from e.__cause__
    if terms is None:
        raise FormulaSyntaxError(f"{what} {rhs!r} must not contain '~'")
    return list(terms)


class _ParseFailure(Exception):
    pass


@functools.lru_cache(maxsize=256)
def _parsed_terms(rhs: str):
    """formulaic's terms of a right-hand side (a tuple; None if it holds a '~'), cached: the
    same formulas are parsed again and again in pipelines and batch fits (~1 ms each)."""
    plain = _plain_terms(rhs)
    if plain is not None:
        return plain
    try:
        from formulaic import Formula
    except ImportError as e:  # pragma: no cover
        raise ImportError("bigmixed needs formulaic to parse formulas") from e
    try:
        f = Formula(to_python_expr(rhs), _ordering="none")
    except Exception as e:  # formulaic raises a variety of parser errors
        raise _ParseFailure() from e
    if hasattr(f, "rhs") or not hasattr(f, "__iter__"):
        return None
    return tuple(f)


class _EvalMethod:
    """formulaic's Factor.EvalMethod for the light parse: `.value` only."""

    __slots__ = ("value",)

    def __init__(self, value: str):
        self.value = value

    def __eq__(self, other):
        return getattr(other, "value", other) == self.value

    def __hash__(self):
        return hash(self.value)

    def __reduce__(self):
        return (_EvalMethod, (self.value,))


class PlainFactor:
    """A factor of a right-hand side of plain column names, as formulaic's Factor has it
    (`expr`, `eval_method.value` "lookup" or "literal"), without importing formulaic."""

    __slots__ = ("expr", "eval_method")

    def __init__(self, expr: str, eval_method: str):
        self.expr = expr
        self.eval_method = _EvalMethod(eval_method)

    def __eq__(self, other):
        return (isinstance(other, PlainFactor) and other.expr == self.expr
                and other.eval_method == self.eval_method)

    def __hash__(self):
        return hash((self.expr, self.eval_method.value))

    def __repr__(self):
        return self.expr

    def __reduce__(self):
        return (PlainFactor, (self.expr, self.eval_method.value))


class PlainTerm:
    """A term of plain factors (formulaic's Term: `factors`)."""

    __slots__ = ("factors",)

    def __init__(self, factors):
        self.factors = tuple(factors)

    def __repr__(self):
        return ":".join(repr(f) for f in self.factors)


_PYTHON_CONSTANTS = {"True", "False", "None"}


def _plain_terms(rhs: str):
    """formulaic's terms of a right-hand side that is plain column names, "1" and "0" joined by
    "+" (the usual ``age + bmi + sex``), parsed here: formulaic (~0.25 s to import) is loaded
    only for the rest. None when `rhs` is anything else. The same terms as formulaic's:
    the intercept first unless "0" is written, each name once, in the written order."""
    import keyword

    names: list = []
    zero = one = False
    for piece in rhs.split("+"):
        t = piece.strip()
        if t == "0":
            zero = True
            continue
        if t == "1":
            one = True
            continue
        name = _parse_name(t)
        if name is None or not t or (t[0] != "`" and (keyword.iskeyword(t)
                                                        or t in _PYTHON_CONSTANTS)):
            return None
        if name not in names:
            names.append(name)
    if zero and one:  # which wins is formulaic's business
        return None
    terms = [] if zero else [PlainTerm([PlainFactor("1", "literal")])]
    return tuple(terms + [PlainTerm([PlainFactor(n, "lookup")]) for n in names])


def _is_literal(factor) -> bool:
    return factor.eval_method.value == "literal"


def r_term_order(rhs: str, what: str = "fixed-effects formula"):
    """R's term structure of a right-hand side.

    Returns (intercept: bool, terms: list[list[Factor]]) where `terms` are the non-intercept
    terms ordered as R's ``terms.formula`` orders them -- stably by degree (main effects,
    then two-way, ...), and the factors of each term in the order in which the variables
    first appear in the formula (R's ``variables`` attribute), so that e.g. ``z:b + a:z``
    gives the terms ``z:b`` and ``z:a`` exactly as R labels them.
    """
    terms = _formulaic_terms(rhs, what)
    intercept = False
    var_order: dict = {}
    body = []
    for term in terms:
        facs = [f for f in term.factors if not _is_literal(f)]
        if not facs:
            lits = [f.expr for f in term.factors]
            if all(x in ("1",) for x in lits):
                intercept = True
                continue
            raise FormulaSyntaxError(f"cannot use the constant term {term!r} in {what} {rhs!r}")
        if len(facs) != len(term.factors):
            raise FormulaSyntaxError(f"cannot use constants inside the term {term!r} in {what} {rhs!r}")
        for f in facs:
            var_order.setdefault(f.expr, len(var_order))
        body.append(facs)
    ordered = [sorted(facs, key=lambda f: var_order[f.expr]) for facs in body]
    ordered = sorted(ordered, key=len)  # stable: keeps written order within a degree
    return intercept, ordered


def _factor_label(factor) -> str:
    """How a factor is written back into a formula string."""
    if factor.eval_method.value == "lookup":
        return quote_name(factor.expr)
    return factor.expr


def _term_label(facs) -> str:
    return ":".join(_factor_label(f) for f in facs)


def _expand_double_bar(expr: str, whole: str) -> list:
    """lme4's expandDoubleVerts: LHS of ``||`` -> list of single-term LHS strings."""
    intercept, terms = r_term_order(expr, f"left-hand side of random-effects term {whole!r}")
    out = []
    if intercept:
        out.append("1")
    out.extend(f"0 + {_term_label(t)}" for t in terms)
    if not out:
        raise FormulaSyntaxError(f"random-effects term {whole!r} has no terms on the left of '||'")
    return out


# ----------------------------------------------------------------------------------------
# The parser.


def _parse_bar(inner: str, whole: str) -> BarTerm:
    bars = _top_level(inner, "|")
    if not bars:  # pragma: no cover - caller checked
        raise FormulaSyntaxError(f"no '|' in random-effects term {whole!r}")
    if len(bars) == 2 and bars[1] == bars[0] + 1:
        correlated = False
    elif len(bars) == 1:
        correlated = True
    else:
        raise FormulaSyntaxError(f"random-effects term {whole!r} must contain exactly one '|' or '||'")
    lhs = inner[: bars[0]].strip()
    rhs = inner[bars[-1] + 1 :].strip()
    if lhs == "":
        raise FormulaSyntaxError(f"random-effects term {whole!r} has nothing on the left of '|'")
    if rhs == "":
        raise FormulaSyntaxError(f"random-effects term {whole!r} has nothing on the right of '|'")
    return BarTerm(expr=lhs, group=rhs, correlated=correlated)


@functools.lru_cache(maxsize=256)
def parse_formula(text: str) -> ParsedFormula:
    """Parse an lme4 formula such as ``"y ~ age + (1 + age | doctor) + (1 | hospital)"``.

    Raises FormulaError (a ValueError) naming the fault: no '~', unbalanced parentheses, a
    '|' with nothing on one side, a grouping factor that is not a column name or an
    interaction of column names, a '|' outside a parenthesised top-level term, ...
    """
    if not isinstance(text, str):
        raise FormulaError(f"formula must be a string, got {type(text).__name__}")
    original = text
    list(_scan(text))  # balance check first: the clearest message for broken input
    text = _unquote_q(text)  # Q('my var') is the column `my var` everywhere
    tildes = [i for i, c, _ in _scan(text) if c == "~"]
    if not tildes:
        raise FormulaSyntaxError(f"formula {text!r} has no '~' (expected 'response ~ terms')")
    if len(tildes) > 1:
        raise FormulaSyntaxError(f"formula {text!r} has more than one '~'")
    if any(d > 0 for i, c, d in _scan(text) if c == "~"):
        raise FormulaSyntaxError(f"'~' inside parentheses in formula {text!r}")
    lhs, rhs = text[: tildes[0]].strip(), text[tildes[0] + 1 :].strip()
    if lhs == "":
        raise FormulaSyntaxError(f"formula {text!r} has no response on the left of '~'")
    response, response_expr = _parse_response(lhs, original)
    if rhs == "":
        raise FormulaSyntaxError(f"formula {text!r} has nothing on the right of '~'")

    fixed_chunks: list = []
    bars: list = []
    for sign, chunk in _split_sum(rhs):
        if _is_wrapped(chunk) and _top_level(_strip_parens(chunk), "|"):
            inner = _strip_parens(chunk)
            whole = chunk.strip()
            if sign == "-":
                raise FormulaSyntaxError(f"cannot remove ('-') the random-effects term {whole!r}")
            bars.append(_parse_bar(inner, whole))
        elif _has_char_outside_quotes(chunk, "|"):
            raise FormulaSyntaxError(
                f"'|' in {chunk!r}: random-effects terms must be parenthesised and added at "
                "the top level of the formula, e.g. 'y ~ x + (1 | g)'"
            )
        else:
            fixed_chunks.append((sign, chunk))

    if not fixed_chunks:
        fixed = "1"
    else:
        pieces = []
        for k, (sign, chunk) in enumerate(fixed_chunks):
            if k == 0:
                pieces.append(("-" if sign == "-" else "") + chunk)
            else:
                pieces.append(f" {sign} {chunk}")
        fixed = to_python_expr("".join(pieces))
        # validates the fixed part now (FormulaError on bad syntax or an unknown function)
        _check_functions(r_term_order(fixed)[1], "fixed effects")

    expanded: list = []
    for b in bars:
        whole = str(b)
        groups = _expand_group(b.group, whole)
        exprs = [b.expr] if b.correlated else _expand_double_bar(b.expr, whole)
        for e in exprs:
            _, e_terms = r_term_order(e, f"left-hand side of random-effects term {whole!r}")
            _check_functions(e_terms, f"random-effects term {whole}")
            for gstr, gvars in groups:
                expanded.append(ExpandedTerm(expr=e, group=gstr, group_vars=gvars, correlated=b.correlated))

    return ParsedFormula(
        text=original, response=response, fixed=fixed, random=tuple(bars),
        terms=tuple(expanded), response_expr=response_expr,
    )


def _parse_response(lhs: str, formula: str) -> tuple:
    """The left of '~' -> (name, None) for a column, (R's name, Python code) for an
    expression such as ``log(y)`` or ``I(y / 100)``: as in R, any expression of the columns
    (the whole left side is one expression: ``y / 100`` divides)."""
    name = _parse_name(lhs)
    if name is not None:
        return name, None
    from .deparse import r_deparse

    if _has_char_outside_quotes(lhs, "|"):
        raise FormulaSyntaxError(
            f"response {lhs!r} of formula {formula!r} holds a '|': random-effects terms go on "
            "the right of '~'")
    code = to_python_expr(lhs)
    try:
        tree, _ = _parse_expression(code)
    except FormulaSyntaxError as e:
        raise FormulaSyntaxError(
            f"cannot parse the response {lhs!r} of formula {formula!r}: {e}") from None
    if not any(isinstance(n, ast.Name) for n in ast.walk(tree)):
        raise FormulaSyntaxError(
            f"response {lhs!r} of formula {formula!r} reads no column: the response must be a "
            "column or an expression of columns such as log(y)")
    _check_expression_functions(code, "response")
    return r_deparse(code, written_parens=True), code


def _parse_expression(expr: str):
    """-> (ast of a factor expression, {sanitized name: original name})."""
    from formulaic.utils.code import sanitize_variable_names

    aliases: dict = {}
    try:
        code = sanitize_variable_names(expr, {}, aliases)
        tree = ast.parse(code, mode="eval")
    except SyntaxError as e:
        raise FormulaSyntaxError(f"cannot parse the expression {expr!r}: {e.msg}") from e
    return tree, aliases


def expression_calls(expr: str) -> list:
    """Functions a (Python) factor expression calls: "log(x) + np.exp(z)" -> ["log", "np.exp"]."""
    tree, aliases = _parse_expression(expr)
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        parts, f = [], node.func
        while isinstance(f, ast.Attribute):
            parts.append(f.attr)
            f = f.value
        if isinstance(f, ast.Name):
            parts.append(aliases.get(f.id, f.id))
            name = ".".join(reversed(parts))
        else:
            name = ast.unparse(node.func)
        if name not in out:
            out.append(name)
    return out


def known_functions() -> set:
    """Names of the functions a formula may call (R's usual ones, formulaic's, builtins)."""
    import builtins

    from formulaic.transforms import TRANSFORMS

    from .transforms import FORMULA_CONTEXT  # the evaluation context build_design uses

    return {n for n in dir(builtins) if callable(getattr(builtins, n)) and not n.startswith("_")
            and not (isinstance(getattr(builtins, n), type)
                     and issubclass(getattr(builtins, n), BaseException))} \
        | set(TRANSFORMS) | set(FORMULA_CONTEXT)


def _is_known_call(name: str, known: set) -> bool:
    import numpy as np

    if name in known:
        return True
    head, _, rest = name.partition(".")
    if not rest:
        return False
    if head == "np":  # np.log, np.linalg.norm, ...
        obj = np
        for part in rest.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                return False
        return callable(obj)
    return True  # a method of a column (x.abs()): only the data can tell


def _check_functions(terms, where: str) -> None:
    """Raise UnknownFunctionError for a call to a function bigmixed cannot evaluate."""
    for facs in terms:
        for f in facs:
            if f.eval_method.value == "python":
                _check_expression_functions(f.expr, where)


def _check_expression_functions(expr: str, where: str) -> None:
    """Raise UnknownFunctionError if the Python expression calls an unknown function."""
    known = None
    for name in expression_calls(expr):
        if known is None:
            known = known_functions()
        if _is_known_call(name, known):
            continue
        close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "."
        raise UnknownFunctionError(
            f"unknown function {name!r} in {expr!r} ({where}){hint} Formulas can "
            "use R's usual functions (log, exp, sqrt, abs, scale, center, poly, ns, bs, "
            "factor, ordered, I, ...), Python builtins and np.<function>; for "
            "anything else, compute the column in the data frame first"
        )


def expression_names(expr: str) -> list:
    """Names a (Python) factor expression reads, e.g. "log(x + 1)" -> ["log", "x"].

    Backquoted names are returned without their backquotes.
    """
    tree, aliases = _parse_expression(expr)
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            n = aliases.get(node.id, node.id)
            if n not in names:
                names.append(n)
    return names


def split_top_level(text: str, ch: str) -> list:
    """Split `text` at the characters `ch` outside brackets and quotes (parts stripped)."""
    return _split_top(text, ch)
