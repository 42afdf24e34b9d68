"""Progress reports from the fitting internals to whoever listens (the command line).

    from bigmixed import progress

    progress.report("optimizer", evaluations=12, objective=1234.5)   # a cheap no-op unless listening

    with progress.listening(print, interval=5.0):   # print(event) about every 5 s, from any thread
        bm.lmm("y ~ x + (1 | g)", df).fit()
    # {'stage': 'optimizer', 'elapsed': 5.0, 'rows': 8525, 'evaluations': 41, 'objective': 1234.5}

The fitting code calls `report` where work happens (stages "design", "cross-products",
"optimizer", "responses"); it costs one list check when nobody listens, and one dict update
and one monotonic-clock read when someone does, so the optimizer may call it on every
evaluation. Listeners are process-wide (a list guarded by a lock), so reports from the worker
threads of `fit_many` reach a listener registered by the main thread.

An event is a dict: "stage" (the stage reported last), "elapsed" (seconds since the listener
was registered) and the latest value of every field reported since then, whatever its stage
(e.g. "rows" from the cross-products, "evaluations" and "objective" from the optimizer,
"responses_done" / "responses_total" / "responses_failed" from a batch). A listener gets at
most one event per `interval` seconds, from the reporting thread, and -- with heartbeat=True
(default) -- at least one per interval from a helper thread while the stage in progress
reports nothing (a long pass over the rows). Callbacks never run concurrently; an exception
raised by one is swallowed.

Imports only the standard library.
"""
from __future__ import annotations

import contextlib
import math
import threading
import time

__all__ = ["counted", "iterate", "listening", "report"]

_lock = threading.Lock()          # guards _listeners (copy-on-write) and the deliveries
_listeners: tuple = ()            # read without the lock: a tuple swapped as a whole
_next_due = math.inf              # the earliest time a listener wants an event
_stage: str | None = None         # the stage reported last
_fields: dict = {}                # the latest value of every field reported


class _Listener:
    __slots__ = ("callback", "interval", "start", "due", "last_event", "n_events")

    def __init__(self, callback, interval: float):
        self.callback = callback
        self.interval = float(interval)
        self.start = time.monotonic()
        self.due = self.start + self.interval
        self.last_event = None
        self.n_events = 0


def report(stage: str, **fields) -> None:
    """Record the progress of `stage` (its latest `fields`); deliver it to the listeners whose
    interval has passed. A no-op when nobody listens."""
    if not _listeners:
        return
    global _stage
    _stage = stage
    _fields.update(fields)
    if time.monotonic() >= _next_due:
        _deliver()


def _deliver(force: bool = False) -> None:
    """Call each listener that is due with the current state. Never blocks on another
    delivery in progress (that one carries the news)."""
    global _next_due
    if not _lock.acquire(blocking=False):
        return
    try:
        if _stage is None:
            return
        now = time.monotonic()
        fields = dict(_fields)
        for lst in _listeners:
            if force or now >= lst.due:
                lst.due = now + lst.interval
                event = {"stage": _stage, "elapsed": round(now - lst.start, 3), **fields}
                lst.last_event = event
                lst.n_events += 1
                try:
                    lst.callback(event)
                except Exception:  # noqa: BLE001, S110 - a listener never breaks a fit
                    pass
        _next_due = min((lst.due for lst in _listeners), default=math.inf)
    finally:
        _lock.release()


@contextlib.contextmanager
def listening(callback, interval: float = 5.0, *, heartbeat: bool = True):
    """Call ``callback(event)`` with the progress reported (from any thread) while inside the
    block, at most every `interval` seconds; with `heartbeat`, also at least every `interval`
    seconds while nothing is reported. Yields the listener (``.last_event``, ``.n_events``)."""
    global _listeners, _next_due, _stage
    if not interval > 0:
        raise ValueError(f"interval must be > 0 seconds, not {interval!r}")
    lst = _Listener(callback, interval)
    with _lock:
        if not _listeners:  # a fresh state for the first listener
            _stage = None
            _fields.clear()
        _listeners = (*_listeners, lst)
        _next_due = min(_next_due, lst.due)
    stop = threading.Event()
    ticker = None
    if heartbeat:
        def tick():
            while not stop.wait(max(0.01, min(lst.due - time.monotonic(), lst.interval))):
                if time.monotonic() >= lst.due:
                    _deliver()

        ticker = threading.Thread(target=tick, name="bigmixed-progress", daemon=True)
        ticker.start()
    try:
        yield lst
    finally:
        stop.set()
        if ticker is not None:
            ticker.join(timeout=5.0)
        with _lock:
            _listeners = tuple(x for x in _listeners if x is not lst)
            _next_due = min((x.due for x in _listeners), default=math.inf)
            if not _listeners:
                _stage = None
                _fields.clear()


def counted(fn, stage: str = "optimizer", **fields):
    """`fn` (an objective) wrapped to report each call: ``evaluations`` (calls so far) and
    ``objective`` (the smallest value so far), with `fields`. `fn` itself when nobody listens,
    so it costs nothing then."""
    if not _listeners:
        return fn
    n = 0
    best = math.inf
    report(stage, evaluations=0, objective=None, **fields)

    def wrapped(*args, **kwargs):
        nonlocal n, best
        value = fn(*args, **kwargs)
        n += 1
        if value < best:
            best = value
        report(stage, evaluations=n, objective=float(best) if best < math.inf else None, **fields)
        return value

    wrapped.__wrapped__ = fn
    return wrapped


def iterate(items, total: int | None = None, stage: str = "responses"):
    """`items` (e.g. iter_fits's stream) re-yielded, reporting ``responses_done`` (items so far),
    ``responses_total`` and ``responses_failed`` (items whose ``.ok`` is False). `items` itself
    when nobody listens."""
    if not _listeners:
        return items
    return _iterate(items, total, stage)


def _iterate(items, total, stage):
    done = failed = 0
    report(stage, responses_done=0, responses_total=total, responses_failed=0)
    it = iter(items)
    try:
        for item in it:
            done += 1
            failed += getattr(item, "ok", True) is False
            report(stage, responses_done=done, responses_total=total, responses_failed=failed)
            yield item
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()
