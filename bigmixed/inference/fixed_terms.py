"""The fixed-effects terms of a fit and the columns of X each one owns (R's assign attribute),
as lmerTest's term-wise tests need them."""
from __future__ import annotations

from dataclasses import dataclass



@dataclass
class FixedTerm:
    label: str  # R's term label, e.g. "age:arm"
    variables: list  # factor expressions of the term
    numeric: list  # those that are numeric (R's dataClasses "numeric")
    columns: list  # indices into fit.beta


def fixed_terms(fit) -> tuple[bool, list]:
    """R's terms of the fixed part with the columns of X each one owns (R's ``assign``).

    Returns (has_intercept, [FixedTerm, ...]) in R's term order; terms whose columns were all
    dropped as aliased keep an empty column list.
    """
    ms = fit.design.fixed_spec.matrix
    names_all = ms.all_names if ms.all_names is not None else ms.names
    keep = list(range(len(names_all))) if ms.keep is None else list(ms.keep)
    new_index = {old: new for new, old in enumerate(keep)}
    has_intercept = bool(ms.intercept)
    terms = []
    if ms.model_spec is None:
        return has_intercept, terms
    spec = ms.model_spec
    col = 0
    enc = spec.encoder_state or {}
    for st in spec.structure:
        facs = [f.expr for f in st.term.factors if f.eval_method.value != "literal"]
        ncol = len(st.columns)
        idx = [new_index[c] for c in range(col, col + ncol) if c in new_index]
        col += ncol
        if not facs:
            continue  # the intercept
        numeric = []
        for f in facs:
            kind = enc.get(f, (None,))[0]
            kind = getattr(kind, "value", kind)
            if kind != "categorical" and not _is_matrix_transform(f):
                numeric.append(f)
        terms.append(FixedTerm(":".join(facs), facs, numeric, idx))
    return has_intercept, terms


def _is_matrix_transform(expr: str) -> bool:
    e = expr.replace(" ", "")
    return e.startswith(("poly(", "ns(", "bs(", "splines::", "cbind("))
