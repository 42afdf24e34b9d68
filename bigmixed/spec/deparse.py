"""R's ``deparse`` of a formula expression: the names R gives model-matrix columns and the
response (``I(x/2)``, ``sin(2 * pi * time)``, ``ns(age, df = 3)``, ``log(y + 1)``).

A formula expression reaches bigmixed as Python code (``^`` already written ``**``, R's
dotted keyword names encoded, see `bigmixed.spec.formula.to_python_expr`); R names the term
by deparsing its parse tree. `r_deparse` does the same from Python's parse tree, with R's
rules (R 4.2 ``deparse.c``):

* spaces around ``+ - * < > <= >= == != & | && || %in%``; none around ``/ ^ : %% %/%``;
* ``f(a, b = 2)``: named arguments as ``name = value``;
* parentheses where R's precedence needs them (``needsparens``); with
  ``written_parens=True`` also every pair the text holds (R keeps a written ``(`` as a
  call: ``log((x))`` stays ``log((x))``). Model-matrix columns are named from formulaic's
  normalised text of the term, which has lost redundant pairs: ``log((x))`` is named
  ``log(x)`` there (R: ``log((x))``); the response keeps the user's text.
* numbers with 15 significant digits, fixed or scientific notation whichever is narrower
  (``1e+05``, ``0.002``, ``123456789012``); ``TRUE``/``FALSE``/``NULL``; strings in double
  quotes; non-syntactic names in backquotes; a Python list or tuple as ``c(...)``.
"""
from __future__ import annotations

import ast
import functools

from .rlabels import r_syntactic

__all__ = ["r_deparse", "r_number", "r_var_name", "parse_python_expression", "DOT"]

# R's dotted argument names (``Boundary.knots = ...``) are not Python: they are written
# ``Boundary__dot__knots`` in the Python code of a formula and deparsed back.
DOT = "__dot__"

# R's operator precedences (Defn.h) and the R spelling of Python's operators
_PREC_OR, _PREC_AND, _PREC_NOT, _PREC_COMPARE = 5, 6, 7, 8
_PREC_SUM, _PREC_PROD, _PREC_PERCENT, _PREC_SIGN, _PREC_POWER = 9, 10, 11, 13, 14
_ATOM = 99

_BINOPS = {  # Python operator -> (R operator, precedence, spaces around it)
    ast.Add: ("+", _PREC_SUM, True),
    ast.Sub: ("-", _PREC_SUM, True),
    ast.Mult: ("*", _PREC_PROD, True),
    ast.Div: ("/", _PREC_PROD, False),
    ast.Pow: ("^", _PREC_POWER, False),
    ast.Mod: ("%%", _PREC_PERCENT, False),
    ast.FloorDiv: ("%/%", _PREC_PERCENT, False),
    ast.MatMult: ("%*%", _PREC_PERCENT, True),
    ast.BitAnd: ("&", _PREC_AND, True),
    ast.BitOr: ("|", _PREC_OR, True),
}
_CMPOPS = {ast.Lt: "<", ast.Gt: ">", ast.LtE: "<=", ast.GtE: ">=", ast.Eq: "==",
           ast.NotEq: "!=", ast.In: "%in%"}
_BOOLOPS = {ast.And: ("&&", _PREC_AND), ast.Or: ("||", _PREC_OR)}
_R_CONSTANT_NAMES = {"TRUE", "FALSE", "NULL", "Inf", "NaN", "NA", "T", "F", "pi"}


def r_number(x: float) -> str:
    """A number as R's deparse writes it: 15 significant digits, fixed notation unless
    scientific is narrower (R's formatReal with scipen = 0)."""
    x = float(x)
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "Inf" if x > 0 else "-Inf"
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    mantissa, exponent = f"{abs(x):.14e}".split("e")
    digits = mantissa.replace(".", "").rstrip("0") or "0"
    nsig, kpower = len(digits), int(exponent)
    rgt = max(0, nsig - kpower - 1)
    fixed = f"{abs(x):.{rgt}f}"
    sci_mantissa = digits[0] + ("." + digits[1:] if nsig > 1 else "")
    sci = f"{sci_mantissa}e{'-' if kpower < 0 else '+'}{abs(kpower):02d}"
    return sign + (fixed if len(fixed) <= len(sci) else sci)


def _r_string(s: str) -> str:
    escaped = (s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\t", "\\t").replace("\r", "\\r"))
    return f'"{escaped}"'


def _r_name(name: str, from_backquotes: bool) -> str:
    if from_backquotes:
        return name if r_syntactic(name) else f"`{name}`"
    if name in _R_CONSTANT_NAMES or r_syntactic(name):
        return name
    return f"`{name}`"


class _Deparser:
    """Deparses one parse tree. `source`: the UTF-8 bytes of the Python code it was parsed
    from; `aliases`: formulaic's sanitised names of backquoted names -> the names."""

    def __init__(self, source: bytes, aliases: dict, written_parens: bool):
        self.source = source
        self.aliases = aliases
        self.keep_written = written_parens

    # -- parentheses -----------------------------------------------------------------

    def written_parens(self, node) -> int:
        """How many pairs of parentheses the user wrote around `node` (not a call's own)."""
        src = self.source
        i, j, count = node.col_offset - 1, node.end_col_offset, 0
        while True:
            while i >= 0 and src[i:i + 1] in (b" ", b"\t"):
                i -= 1
            while j < len(src) and src[j:j + 1] in (b" ", b"\t"):
                j += 1
            if i < 0 or j >= len(src) or src[i:i + 1] != b"(" or src[j:j + 1] != b")":
                return count
            count += 1
            i, j = i - 1, j + 1

    def wrap(self, node, text: str, needed: bool, parent_call_parens: int = 0) -> str:
        written = self.written_parens(node) - parent_call_parens if self.keep_written else 0
        pairs = max(written, 1 if needed else 0)
        return "(" * pairs + text + ")" * pairs

    # -- precedence of a node as R sees it --------------------------------------------

    @staticmethod
    def precedence(node) -> tuple:
        """(precedence, kind) with kind "binary", "unary" or "atom"."""
        if isinstance(node, ast.BinOp):
            return _BINOPS.get(type(node.op), ("?", _ATOM, True))[1], "binary"
        if isinstance(node, ast.BoolOp):
            return _BOOLOPS[type(node.op)][1], "binary"
        if isinstance(node, ast.Compare):
            return _PREC_COMPARE, "binary"
        if isinstance(node, ast.UnaryOp):
            return (_PREC_NOT if isinstance(node.op, ast.Not) else _PREC_SIGN), "unary"
        return _ATOM, "atom"

    def needs_parens(self, main_prec: int, right_assoc: bool, arg, left: bool) -> bool:
        """R's needsparens(mainop, arg, left)."""
        prec, kind = self.precedence(arg)
        if kind == "atom":
            return False
        if kind == "unary" and not isinstance(arg.op, ast.Not):
            if not left:
                return False  # 2 * -x, x^-1
        if kind == "binary" and main_prec == _PREC_COMPARE and prec == _PREC_COMPARE:
            return True
        return main_prec > prec or (main_prec == prec and left == right_assoc)

    # -- nodes -------------------------------------------------------------------------

    def operand(self, node, main_prec: int, right_assoc: bool, left: bool) -> str:
        return self.wrap(node, self.deparse(node), self.needs_parens(main_prec, right_assoc, node, left))

    def deparse(self, node) -> str:
        method = getattr(self, "_" + type(node).__name__, None)
        return method(node) if method is not None else ast.unparse(node)

    def _Expression(self, node):
        return self.wrap(node.body, self.deparse(node.body), False)

    def _Name(self, node):
        original = self.aliases.get(node.id)
        return _r_name(original if original is not None else node.id, original is not None)

    def _Constant(self, node):
        v = node.value
        if isinstance(v, bool):
            return "TRUE" if v else "FALSE"
        if v is None:
            return "NULL"
        if isinstance(v, (int, float)):
            return r_number(v)
        if isinstance(v, str):
            return _r_string(v)
        return ast.unparse(node)

    def _BinOp(self, node):
        op, prec, spaced = _BINOPS.get(type(node.op), (None, None, None))
        if op is None:
            return ast.unparse(node)
        right_assoc = isinstance(node.op, ast.Pow)
        left = self.operand(node.left, prec, right_assoc, True)
        right = self.operand(node.right, prec, right_assoc, False)
        return f"{left} {op} {right}" if spaced else f"{left}{op}{right}"

    def _BoolOp(self, node):
        op, prec = _BOOLOPS[type(node.op)]
        parts = [self.operand(node.values[0], prec, False, True)]
        parts += [self.operand(v, prec, False, False) for v in node.values[1:]]
        return f" {op} ".join(parts)

    def _Compare(self, node):
        out = self.operand(node.left, _PREC_COMPARE, False, True)
        for op, right in zip(node.ops, node.comparators):
            r_op = _CMPOPS.get(type(op))
            if r_op is None:
                return ast.unparse(node)
            out += f" {r_op} " + self.operand(right, _PREC_COMPARE, False, False)
        return out

    def _UnaryOp(self, node):
        ops = {ast.USub: "-", ast.UAdd: "+", ast.Not: "!"}
        op = ops.get(type(node.op))
        if op is None:
            return ast.unparse(node)
        prec = _PREC_NOT if isinstance(node.op, ast.Not) else _PREC_SIGN
        return op + self.operand(node.operand, prec, False, False)

    def _Call(self, node):
        func = self.deparse(node.func)
        only_arg = len(node.args) + len(node.keywords) == 1
        args = []
        for a in node.args:
            # the call's own parentheses surround a sole argument: they are not the user's
            args.append(self.wrap(a, self.deparse(a), False, 1 if only_arg else 0))
        for k in node.keywords:
            value = self.wrap(k.value, self.deparse(k.value), False, 0)
            name = "..." if k.arg is None else _r_name(k.arg.replace(DOT, "."), False)
            args.append(f"{name} = {value}" if k.arg is not None else f"...{value}")
        return f"{func}({', '.join(args)})"

    def _Attribute(self, node):
        return f"{self.deparse(node.value)}.{node.attr}"

    def _Subscript(self, node):
        return f"{self.deparse(node.value)}[{self.deparse(node.slice)}]"

    def _List(self, node):
        return "c(" + ", ".join(self.deparse(e) for e in node.elts) + ")"

    _Tuple = _List


def parse_python_expression(expr: str) -> tuple:
    """A formula expression (Python code, backquoted names allowed) -> (parse tree, the
    sanitised code it was parsed from, {sanitised name: backquoted name}). Raises
    SyntaxError."""
    from formulaic.utils.code import sanitize_variable_names

    aliases: dict = {}
    code = sanitize_variable_names(expr, {}, aliases)
    return ast.parse(code, mode="eval"), code, aliases


def r_var_name(expr: str, is_column: bool) -> str:
    """How R's model.matrix names a variable: a column by its name (`my var` backquoted), an
    expression as R deparses it (I(x^2), I(x/2), sin(2 * pi * t), ns(age, df = 3))."""
    if is_column:
        return expr if r_syntactic(expr) else f"`{expr}`"
    return r_deparse(expr)


@functools.lru_cache(maxsize=1024)
def r_deparse(expr: str, written_parens: bool = False) -> str:
    """R's deparse of a (Python) formula expression, e.g. ``"I(x / 2)"`` -> ``"I(x/2)"``,
    ``"ns(age, df=3)"`` -> ``"ns(age, df = 3)"``, ``"x ** 2"`` -> ``"x^2"``. An expression
    Python cannot parse is returned as it is. written_parens: keep the redundant pairs of
    parentheses of `expr` (for text as the user wrote it)."""
    try:
        tree, code, aliases = parse_python_expression(expr)
    except Exception:  # noqa: BLE001 - a name is better than an error here
        return expr
    # the parse tree's positions are byte offsets into the UTF-8 source
    return _Deparser(code.encode("utf-8"), aliases, written_parens).deparse(tree)
