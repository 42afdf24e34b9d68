"""lme4's ``update()``: a fit of a changed model -- a new formula (R's ``update.formula``
semantics for ``.``), REML or ML, new data.

    fit2 = fit.update(". ~ . - rbc")                 # drop a fixed term
    fit3 = fit.update(". ~ . - (1 | g) + (1 + x | g)")  # change the random part
    fit_ml = fit.update(reml=False)                  # the ML fit: through model.refit
    fit4 = fit.update(data=other_df)                 # same model, other data

Formula algebra (``update_formula``): in the new formula, ``.`` on the left stands for the old
response (``log(.) ~ .`` works), ``.`` on the right for the old right-hand side (fixed terms,
intercept and random terms). Terms are then added (``+``) or removed (``-``) as R's
``terms.formula(simplify = TRUE)`` does: a fixed expression removes or adds every term it
expands to (``- a*b`` removes ``a``, ``b`` and ``a:b``; terms compare as sets of factors, so
``b:a`` is ``a:b``); a random term ``(expr | group)`` is added or removed as written (spaces do
not matter); ``- 1`` / ``+ 0`` remove the intercept, ``+ 1`` adds it.

Which data. With ``data=``, the model is built afresh from the new formula and those data
(``type(model)(formula, data, ...)``), exactly as ``bm.lmm`` would. Without it (a fit keeps
no reference to the data frame), the new model is derived from the fit's own design when the
change only *removes* things: fixed terms that no remaining term contains (their columns
are dropped from X: R would give the same columns), whole random terms, or columns of a random
term (``(1 + x | g)`` -> ``(1 | g)``, or ``(1 | g) + (0 + x | g)``: a term split in
uncorrelated parts). The rows are then those of the original fit (as lme4's
``drop1`` requires; a removed variable's missing values do not bring rows back). Any other
change (adding a term, removing the intercept or a main effect contained in an interaction,
another response) needs ``data=`` and raises ``UpdateNeedsDataError`` otherwise.

The switch between REML and ML goes through ``model.refit(reml=...)``: the same design,
cross-products and symbolic factorization, a new independent fit with the default start (as
``lme4::update(m, REML = FALSE)`` refits from scratch).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from ..errors import FormulaError
from ..spec.formula import (_is_wrapped, _split_sum, _strip_parens, _term_label, _top_level,
                            parse_formula, r_term_order, to_python_expr)


class UpdateNeedsDataError(FormulaError):
    """The updated formula cannot be derived from the fit's own design: pass ``data=``."""


_DOT = re.compile(r"(?<![\w.`])\.(?![\w.`])")


@dataclass
class _RHS:
    intercept: bool
    fixed: list  # [tuple of factor labels], in order
    bars: list  # [str] random terms as written, "(expr | group)"
    offsets: list = None  # [str] offset(...) terms as written

    def __post_init__(self):
        if self.offsets is None:
            self.offsets = []


_OFFSET = re.compile(r"^offset\s*\(")


def strip_offsets(formula: str) -> tuple:
    """(the formula without its top-level offset() terms, [the offset terms as written])."""
    lhs, rhs = _split_formula(formula)
    kept, offsets = [], []
    for sign, chunk in _split_sum(rhs):
        if _OFFSET.match(chunk.strip()) and _is_wrapped(chunk.strip()[len("offset"):].strip()):
            offsets.append(re.sub(r"\s+", " ", chunk.strip()))
        else:
            kept.append((sign, chunk))
    if not offsets:
        return formula, []
    body = "".join((("- " if s == "-" else "") if k == 0 else f" {s} ") + c
                   for k, (s, c) in enumerate(kept)) or "1"
    return f"{lhs} ~ {body}", offsets


def _norm_bar(text: str) -> str:
    return re.sub(r"\s+", "", _strip_parens(text.strip()))


def _fixed_terms_of(chunk: str) -> list:
    _, terms = r_term_order(to_python_expr(chunk), "update formula")
    return [tuple(_term_label([f]) for f in t) for t in terms]


def _split_formula(text: str) -> tuple:
    tildes = [m.start() for m in re.finditer("~", text)]
    if len(tildes) != 1:
        raise FormulaError(f"an update formula needs exactly one '~', got {text!r}")
    return text[:tildes[0]].strip(), text[tildes[0] + 1:].strip()


def _parse_rhs(rhs: str, old: _RHS | None) -> _RHS:
    out = _RHS(True, [], [])
    for sign, chunk in _split_sum(rhs):
        c = chunk.strip()
        if c == ".":
            if old is None:
                raise FormulaError("'.' on the right of '~' needs an old formula")
            if sign == "-":
                raise FormulaError("'- .' is not supported in an update formula")
            out.intercept = old.intercept
            for o in old.offsets:
                if o not in out.offsets:
                    out.offsets.append(o)
            for t in old.fixed:
                if frozenset(t) not in {frozenset(u) for u in out.fixed}:
                    out.fixed.append(t)
            for b in old.bars:
                if _norm_bar(b) not in {_norm_bar(x) for x in out.bars}:
                    out.bars.append(b)
        elif _is_wrapped(c) and _top_level(_strip_parens(c), "|"):
            key = _norm_bar(c)
            if sign == "+":
                if key not in {_norm_bar(x) for x in out.bars}:
                    inner = _strip_parens(c)
                    out.bars.append(f"({inner.strip()})")
            else:
                before = len(out.bars)
                out.bars = [b for b in out.bars if _norm_bar(b) != key]
                if len(out.bars) == before:
                    raise FormulaError(f"cannot remove {c!r}: the formula has no such random term "
                                       f"(random terms: {out.bars})")
        elif _OFFSET.match(c) and _is_wrapped(c[len("offset"):].strip()):
            key = re.sub(r"\s+", "", c)
            if sign == "+":
                if key not in {re.sub(r"\s+", "", o) for o in out.offsets}:
                    out.offsets.append(re.sub(r"\s+", " ", c))
            else:
                out.offsets = [o for o in out.offsets if re.sub(r"\s+", "", o) != key]
        elif c in ("1", "0"):
            out.intercept = (c == "1") == (sign == "+")
        else:
            terms = _fixed_terms_of(c)
            have = [frozenset(u) for u in out.fixed]
            if sign == "+":
                for t in terms:
                    if frozenset(t) not in have:
                        out.fixed.append(t)
                        have.append(frozenset(t))
            else:
                drop = {frozenset(t) for t in terms}
                out.fixed = [u for u in out.fixed if frozenset(u) not in drop]
    return out


def _old_rhs(parsed, offsets=()) -> _RHS:
    intercept, terms = r_term_order(parsed.fixed)
    return _RHS(bool(intercept), [tuple(_term_label([f]) for f in t) for t in terms],
                [str(b) for b in parsed.random], list(offsets))


def _format(lhs: str, rhs: _RHS) -> str:
    fixed = sorted(rhs.fixed, key=len)  # R's terms: stably by degree
    parts = [":".join(t) for t in fixed] + list(rhs.offsets) + list(rhs.bars)
    if not rhs.intercept:
        parts = ["0"] + parts
    elif not fixed:
        parts = ["1"] + parts
    return f"{lhs} ~ {' + '.join(parts)}"


def update_formula(old: str, new: str) -> str:
    """R's ``update.formula(old, new)`` for lme4 formulas: ``.`` is the old response on the
    left and the old right-hand side on the right; then terms are added and removed.

    >>> update_formula("y ~ a + b + (1 | g)", ". ~ . - b + (0 + a | g)")
    'y ~ a + (1 | g) + (0 + a | g)'
    """
    stripped, offsets = strip_offsets(old)
    parsed = parse_formula(stripped)
    old_lhs, _ = _split_formula(parsed.text)
    new = new.strip()
    if new.startswith("~"):
        new_lhs, new_rhs = ".", new[1:].strip()
    else:
        new_lhs, new_rhs = _split_formula(new)
    simple = re.fullmatch(r"[\w.`]+(\(.*\))?", old_lhs) is not None or _is_wrapped(old_lhs)
    if new_lhs.strip() == ".":
        lhs = old_lhs
    else:
        lhs = _DOT.sub(lambda m: old_lhs if simple else f"({old_lhs})", new_lhs)
    rhs = _parse_rhs(new_rhs, _old_rhs(parsed, offsets))
    out = _format(lhs, rhs)
    parse_formula(strip_offsets(out)[0])  # validates
    return out


# ======================================================================================
# A model of a reduced formula from the fit's own design
# ======================================================================================

def _model_of(fit):
    return fit._require_model("update() (it needs the model's design and cross-products)")


def require_rows_in_memory(fit, what: str):
    """The fit's model, when its rows are in memory (not Dask partitions, not a loaded file)."""
    model = fit._require_model(what)
    kind = getattr(getattr(fit, "rows", None), "kind", "memory")
    if kind != "memory":
        raise NotImplementedError(f"{what} needs the model's rows in memory; this fit's rows are "
                                  f"{kind!r} (for Dask data, fit the reduced models with bm.lmm)")
    return model


def reduced_design(design, drop_columns=(), random_terms=None, formula=None):
    """A Design from `design` without the fixed-effects columns `drop_columns` (indices into
    X) and with the random terms `random_terms`: [(k, column indices or None for all)] over
    design.terms (None: unchanged). Arrays are views or copies of the old ones; no new pass
    over any data frame."""
    from ..spec.materialize import MatrixSpec

    changes = {}
    p = design.X.shape[1]
    drop = sorted(set(int(j) for j in drop_columns))
    if drop:
        keep = [j for j in range(p) if j not in drop]
        changes["X"] = np.ascontiguousarray(design.X[:, keep])
        changes["fixed_names"] = [design.fixed_names[j] for j in keep]
        fs = design.fixed_spec
        if fs is not None:
            changes["fixed_spec"] = replace(fs, matrix=_reduced_matrix_spec(fs.matrix, drop))
    if random_terms is not None:
        terms, specs = [], []
        has_specs = len(design.term_specs) == len(design.terms)
        for k, cols in random_terms:
            t = design.terms[k]
            ts = design.term_specs[k] if has_specs else None
            if cols is None or list(cols) == list(range(len(t.column_names))):
                terms.append(t)
                if ts is not None:
                    specs.append(ts)
                continue
            cols = list(cols)
            names = [t.column_names[j] for j in cols]
            if names == ["(Intercept)"]:
                expr = "1"
                Z = np.broadcast_to(np.float64(1.0), (t.Z.shape[0], 1))
                ms2 = MatrixSpec(expr, True, 0, None, ["(Intercept)"])
            else:
                expr = " + ".join((["1"] if "(Intercept)" in names else ["0"])
                                  + [n for n in names if n != "(Intercept)"])
                Z = np.ascontiguousarray(t.Z[:, cols])
                ms2 = None
                if ts is not None:
                    ms = ts.matrix
                    old_keep = list(range(len(ms.names))) if ms.keep is None else list(ms.keep)
                    all_names = list(ms.names) if ms.all_names is None else list(ms.all_names)
                    ms2 = replace(ms, keep=[old_keep[j] for j in cols], all_names=all_names,
                                  names=names)
            terms.append(replace(t, expr=expr, column_names=names, Z=Z))
            if ts is not None:
                specs.append(replace(ts, expr=expr, matrix=ms2))
        changes["terms"] = terms
        if has_specs:
            changes["term_specs"] = specs
    if formula is not None:
        changes["formula"] = formula
        parsed = design.parsed
        stripped = strip_offsets(formula)[0]
        prior = getattr(design, "prior", None)
        if prior is not None and getattr(prior, "design_formula", None):
            changes["prior"] = replace(prior, design_formula=stripped)
        try:
            new_parsed = parse_formula(stripped)
            kw = dict(text=stripped, random=new_parsed.random, terms=new_parsed.terms)
            if drop and design.fixed_spec is not None and \
                    changes["fixed_spec"].matrix.model_spec is not design.fixed_spec.matrix.model_spec:
                kw["fixed"] = new_parsed.fixed  # the term structure follows the new formula
            changes["parsed"] = replace(parsed, **kw)
        except Exception:  # pragma: no cover - a Design without a parsed formula
            pass
    return replace(design, **changes)


def _reduced_matrix_spec(ms, drop):
    """The fixed part's MatrixSpec without the columns `drop` (indices into the kept columns):
    formulaic's ModelSpec restricted to the remaining terms (ModelSpec.subset: the same
    encoding of every remaining column), so that the term structure (R's assign, Type III
    contrasts) is that of the reduced formula. Falls back to selecting columns."""
    old_keep = list(range(len(ms.names))) if ms.keep is None else list(ms.keep)
    all_names = list(ms.names) if ms.all_names is None else list(ms.all_names)
    keep = [j for j in range(len(ms.names)) if j not in set(drop)]
    fallback = replace(ms, keep=[old_keep[j] for j in keep], all_names=all_names,
                       names=[ms.names[j] for j in keep])
    spec = ms.model_spec
    if spec is None:
        return fallback
    try:
        dropped_all = {old_keep[j] for j in drop}  # indices into all_names
        kept_terms, kept_all, col = [], [], 0
        for st in spec.structure:
            idx = list(range(col, col + len(st.columns)))
            col += len(st.columns)
            live = [c for c in idx if c in set(old_keep)]
            if live and all(c in dropped_all for c in live):
                continue
            kept_terms.append(st.term)
            kept_all.extend(idx)
        if col != len(all_names):
            return fallback
        sub = spec.subset(kept_terms)
        new_all = [all_names[c] for c in kept_all]
        pos = {c: k for k, c in enumerate(kept_all)}
        new_keep = [pos[old_keep[j]] for j in keep]
        n_terms = sum(1 for t in kept_terms if any(f.eval_method.value != "literal" for f in t.factors))
        names = [ms.names[j] for j in keep]
        rhs = " + ".join(str(t) for t in kept_terms if str(t) != "1") or "1"
        if ms.keep is None and new_keep == list(range(len(new_all))):
            return replace(ms, rhs=rhs, n_terms=n_terms, model_spec=sub, names=names,
                           keep=None, all_names=None)
        return replace(ms, rhs=rhs, n_terms=n_terms, model_spec=sub, names=names,
                       keep=new_keep, all_names=new_all)
    except Exception:  # noqa: BLE001 - an encoding formulaic cannot subset: select columns
        return fallback


def _design_plan(fit, new_formula: str):
    """(drop_columns, random_terms) turning the fit's design into new_formula's, or raise
    UpdateNeedsDataError."""
    from .fixed_terms import fixed_terms

    design = fit.design
    old = design.parsed
    new_stripped, new_offsets = strip_offsets(new_formula)
    new = parse_formula(new_stripped)
    need = "; pass data= to refit from the data"
    old_offsets = strip_offsets(fit.formula)[1]
    if [re.sub(r"\s+", "", o) for o in new_offsets] != [re.sub(r"\s+", "", o) for o in old_offsets]:
        raise UpdateNeedsDataError(f"the offset() terms change{need}")
    if new.response != old.response:
        raise UpdateNeedsDataError(f"the response changes ({old.response!r} -> {new.response!r}){need}")
    o_icpt, o_terms = r_term_order(old.fixed)
    n_icpt, n_terms = r_term_order(new.fixed)
    if bool(o_icpt) != bool(n_icpt):
        raise UpdateNeedsDataError(f"the intercept is added or removed (the coding of factors "
                                   f"changes){need}")
    o_sets = [frozenset(_term_label([f]) for f in t) for t in o_terms]
    n_sets = [frozenset(_term_label([f]) for f in t) for t in n_terms]
    added = [s for s in n_sets if s not in o_sets]
    if added:
        raise UpdateNeedsDataError(f"fixed term(s) {[':'.join(sorted(s)) for s in added]} are "
                                   f"added{need}")
    removed = [s for s in o_sets if s not in n_sets]
    for s in removed:
        if any(s < u for u in n_sets):
            raise UpdateNeedsDataError(f"the term {':'.join(sorted(s))!r} is removed while a "
                                       f"term containing it stays (R codes the latter anew){need}")
    _, fterms = fixed_terms(fit)
    drop_cols = []
    for t in fterms:
        if _term_set(t) in removed:
            drop_cols.extend(t.columns)
    # random terms: each new expanded term is an old one, or an old one with fewer columns
    old_terms = list(design.terms)
    used = set()
    plan = []
    for nt in new.terms:
        cols = _new_term_columns(nt, old_terms, used)
        if cols is None:
            raise UpdateNeedsDataError(f"the random term ({nt.expr} | {nt.group}) is not a term of "
                                       f"the fitted model or a reduction of one{need}")
        plan.append(cols)
    return drop_cols, plan


def _term_set(t) -> frozenset:
    try:
        return frozenset(_term_label([f]) for f in r_term_order(to_python_expr(t.label))[1][0])
    except Exception:  # noqa: BLE001 - a label formulaic cannot read back: compare as written
        return frozenset(t.variables)


def _new_term_columns(nt, old_terms, used):
    """(k, cols) if the expanded new term nt is old term k (cols None) or a subset of its
    columns whose names the new expression gives directly; else None."""
    key = re.sub(r"\s+", "", nt.expr)
    for k, t in enumerate(old_terms):
        if k in used or t.group_vars != tuple(nt.group_vars) or t.group != nt.group:
            continue
        if re.sub(r"\s+", "", t.expr) == key and t.correlated == nt.correlated:
            used.add(k)
            return (k, None)
    icpt, terms = r_term_order(nt.expr)
    icpt = bool(icpt) and not re.search(r"(^|[+\s])0(\s|\+|$)|-\s*1", nt.expr)
    names = (["(Intercept)"] if icpt else []) + [":".join(_term_label([f]) for f in t) for t in terms]
    for k, t in enumerate(old_terms):  # a term may give several reduced ones
        if t.group_vars != tuple(nt.group_vars) or t.group != nt.group:
            continue
        if all(n in t.column_names for n in names) and names:
            used.add(k)
            cols = sorted(t.column_names.index(n) for n in names)
            return (k, cols)
    return None


def model_from_design(fit, design, reml: bool):
    """A LinearMixedModel of the same class as fit's model on `design` (same residual
    structure and solver choice)."""
    model = _model_of(fit)
    spec = model.residual
    return type(model).from_design(design, reml=reml, solver="auto",
                                   residual=None if spec is None else spec.residual,
                                   variance=None if spec is None else spec.variance)


def _prior_arguments(model) -> dict:
    """weights= and offset= of the model as given (column names or expressions)."""
    prior = getattr(model, "prior", None)
    if prior is None:
        return {}
    if prior.weights_values or prior.offset_values:
        raise UpdateNeedsDataError(
            "the model's weights= or offset= were given as arrays, which cannot be evaluated on "
            "new data: build the model with bm.lmm(formula, data, weights=..., offset=...)")
    out = {}
    if prior.weights is not None:
        out["weights"] = prior.weights
    if prior.offset is not None:
        out["offset"] = prior.offset
    return out


def update(fit, formula: str | None = None, *, reml: bool | None = None, data=None,
           evaluate: bool = True, **fit_options):
    """lme4's ``update(fit, formula, REML =, data =)``: the fit of the changed model.

    formula : an update formula (``". ~ . - x"``, ``"~ . + (0 + x | g)"``) or a full one;
        None keeps the formula.
    reml : True / False switches the criterion (None: the fit's own).
    data : a DataFrame to refit on (the model is built from the data anew); None: the fit's
        own rows, possible when the formula only removes terms (see the module docstring).
    evaluate : False returns the (unfitted) model instead of the fit.
    fit_options : keywords of ``model.fit`` (e.g. control=).
    """
    model = _model_of(fit)
    if reml is not None and not isinstance(reml, (bool, np.bool_)):
        raise TypeError(f"reml must be True, False or None, not {reml!r}")
    use_reml = fit.reml if reml is None else bool(reml)
    new_formula = None if formula is None else update_formula(fit.formula, formula)
    if new_formula is not None and re.sub(r"\s+", "", new_formula) == re.sub(r"\s+", "", fit.formula):
        new_formula = None
    if data is not None:
        spec = model.residual
        new_model = type(model)(new_formula or fit.formula, data, reml=use_reml,
                                solver="auto" if new_formula else model.solver,
                                residual=None if spec is None else spec.residual,
                                variance=None if spec is None else spec.variance,
                                **_prior_arguments(model))
    elif new_formula is None:
        if not evaluate:
            return model if use_reml == model.reml else model._derived(reml=use_reml)
        return model.refit(reml=use_reml, **fit_options)
    else:
        require_rows_in_memory(fit, "update() without data=")
        drop_cols, plan = _design_plan(fit, new_formula)
        design = reduced_design(fit.design, drop_cols, plan, formula=new_formula)
        new_model = model_from_design(fit, design, use_reml)
    if not evaluate:
        return new_model
    return new_model.fit(**fit_options)
