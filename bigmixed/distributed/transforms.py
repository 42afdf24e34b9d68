"""Pass 0: the state of scale(), center() and poly() over all partitions, in rounds of
exact sums."""
from __future__ import annotations

import copy
import warnings
import numpy as np
import pandas as pd
from ..spec.transform_state import TRANSFORM_STATES
from ..crossprods.compensated import merge_sums
from ..errors import DesignError
from .plan import Plan, share, reduce_tree
from ..spec.transforms import FORMULA_CONTEXT, r_center, r_poly, r_scale
from ..spec.materialize import RMaterializer
from ..spec.encoding import prepare_covariate

# ======================================================================================
# Pass 0: the state of scale(), center(), poly(), found over all partitions
# ======================================================================================
#
# In memory, build_design evaluates these transforms on all rows (before na.omit, as R's
# model.frame) and each one computes its state from sums over the column in rounds
# (bigmixed.compensated: scale() needs the mean, then the sum of squares about it; poly(x, d)
# d + 1 rounds of the three-term recurrence). Here each round is one pass over the partitions
# reading only the columns these expressions use: every partition evaluates the expressions
# with the state so far, the transforms replaced by collectors that return the round's sums
# (double-doubles), the sums are added over the partitions and the state advanced, exactly as
# in memory. A transform nested in another (poly(scale(x), 2)) waits for the inner one.


class _RoundFlags:
    """Set when a transform of the expression being evaluated is not complete this round (its
    value is a placeholder, so transforms around it must wait)."""

    def __init__(self):
        self.pending = False


def _collector(kind: str, real, bind, flags: _RoundFlags):
    from formulaic.utils.stateful_transforms import stateful_transform

    prepare, needs, sums, _ = TRANSFORM_STATES[kind]

    def collect(data, *args, _state={}, _context=None, **kwargs):  # noqa: B006 - stateful transform
        call = bind(*args, **kwargs)
        x = np.asarray(getattr(data, "__wrapped__", data), dtype=np.float64)
        width = (call["degree"],) if kind == "poly" and not call["raw"] else x.shape[1:]
        placeholder = np.full((x.shape[0],) + tuple(width), np.nan)
        if _context is None:
            # formulaic also calls the transforms inside another one while it looks for the
            # variables an expression uses (`get_required_variables`), without a state: not
            # an evaluation
            return placeholder
        if not flags.pending:
            prepare(_state, **call)
            op = needs(_state, **call)
            if op is None:  # complete: the transform's values
                return real(data, *args, _state=_state, **kwargs)
            _state["__report__"] = (kind, call, op, sums(x, _state, op))
        else:
            _state["__report__"] = None  # waits for a transform inside it
        flags.pending = True
        return placeholder

    return stateful_transform(collect)


def _bind_scale(center=True, scale=True):
    return {"center": center, "scale": scale}


def _bind_center():
    return {"center": True, "scale": False}


def _bind_poly(degree=1, raw=False):
    return {"degree": int(degree), "raw": bool(raw)}


def _collectors(flags: _RoundFlags) -> dict:
    return {
        "scale": _collector("scale", r_scale, _bind_scale, flags),
        "center": _collector("scale", r_center, _bind_center, flags),
        "poly": _collector("poly", r_poly, _bind_poly, flags),
    }


def _state_round_partition(part: pd.DataFrame, plan: Plan, state: dict, active) -> tuple:
    """One round on one partition -> ({transform call: (kind, args, op, sums) or None (waiting)}
    for the calls whose state is not complete, {expression: its incomplete calls}). `active`:
    the expressions that still have incomplete calls (None: all)."""
    from formulaic import ModelSpec
    from formulaic.formula import SimpleFormula
    from formulaic.parser.types import Term

    cols = {v: prepare_covariate(part[v], v)[0] for v in plan.state_columns()}
    frame = pd.DataFrame(cols, index=pd.RangeIndex(len(part)), copy=False)
    reports: dict = {}
    calls: dict = {}
    for f in plan.stateful_factors():  # one at a time: a pending call only holds up its own
        if active is not None and f.expr not in active:
            continue
        flags = _RoundFlags()
        ms = ModelSpec(
            formula=SimpleFormula([Term([f])], _ordering="none"),
            materializer=RMaterializer,
            materializer_params={"evaluate_only": True},
            output="numpy",
            na_action="ignore",
            transform_state=copy.deepcopy(state),
        )
        try:
            with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mm = ms.get_model_matrix(frame, context={**FORMULA_CONTEXT, **_collectors(flags)})
        except DesignError:
            raise
        except Exception as e:
            raise DesignError(f"cannot evaluate {f.expr}: {e}") from e
        for key, st in mm.model_spec.transform_state.items():
            if isinstance(st, dict) and "__report__" in st:
                reports.setdefault(key, st["__report__"])
                calls.setdefault(f.expr, []).append(key)
    return reports, calls


def _state_round_task(part, plan, state_active):
    return _state_round_partition(part, plan, *state_active)


def _merge_reports(*parts: tuple) -> tuple:
    """Add the rounds' sums over partitions, left to right (partition order)."""
    out: dict = {}
    for rep, _ in parts:
        for key, r in rep.items():
            if key not in out:
                out[key] = r
            elif out[key] is None or r is None:
                out[key] = None
            else:
                kind, call, op, sums = out[key]
                out[key] = (kind, call, op, merge_sums(sums, r[3]))
    return out, parts[0][1]


_MAX_ROUNDS = 64


def global_transform_state(frame, plan: Plan, split_every: int) -> dict:
    """Pass 0: the transforms' state over all rows of all partitions (one pass per round)."""
    from dask import compute, delayed

    cols = plan.state_columns()
    parts = (frame[cols] if cols else frame).to_delayed()
    plan_d = share(plan)
    state: dict = {}
    active = None
    for _ in range(_MAX_ROUNDS):
        state_d = delayed((state, active), pure=True, traverse=False)
        rounds = [delayed(_state_round_task, pure=True)(p, plan_d, state_d) for p in parts]
        (reports, calls) = compute(reduce_tree(rounds, _merge_reports, split_every))[0]
        incomplete = set()
        for key, r in reports.items():
            if r is None:
                incomplete.add(key)
                continue
            kind, call, op, sums = r
            prepare, needs, _, advance = TRANSFORM_STATES[kind]
            st = copy.deepcopy(state.get(key, {}))
            prepare(st, **call)
            advance(st, op, sums)
            prepare(st, **call)
            state[key] = st
            if needs(st, **call) is not None:
                incomplete.add(key)
        if not incomplete:
            return state
        active = {expr for expr, keys in calls.items() if incomplete & set(keys)}
    raise RuntimeError("the state of the formula's transforms did not complete")  # pragma: no cover
