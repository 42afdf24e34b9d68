"""bigmixed.progress: a cheap no-op without listeners, rate-limited events, a heartbeat, reports
from worker threads; the fitting hooks (design, cross-products, optimizer, responses)."""
import threading
import time
import warnings

import numpy as np
import pytest
from bigmixed.data_gen import generate_hdp

import bigmixed as bm
from bigmixed import progress


@pytest.fixture(scope="module")
def hdp():
    df = generate_hdp(n_doctors=30, seed=3).data.copy()
    rng = np.random.default_rng(1)
    for k in range(4):
        df[f"y{k}"] = rng.normal(size=len(df))
    df["bad"] = "x"
    return df


def test_report_without_listeners_is_a_cheap_no_op():
    assert progress._listeners == ()
    t0 = time.perf_counter()
    for i in range(200_000):
        progress.report("optimizer", evaluations=i, objective=1.0)
    assert time.perf_counter() - t0 < 2.0  # ~0.1 us each; generous for a loaded machine
    f = lambda x: x  # noqa: E731
    assert progress.counted(f) is f
    items = [1, 2]
    assert progress.iterate(items, total=2) is items


def test_events_are_rate_limited_and_carry_the_latest_fields():
    events = []
    with progress.listening(events.append, interval=0.05, heartbeat=False) as lst:
        progress.report("design", rows=100)
        t_end = time.monotonic() + 0.5
        i = 0
        while time.monotonic() < t_end:
            i += 1
            progress.report("optimizer", evaluations=i, objective=10.0 - i * 1e-6)
    assert 3 <= len(events) <= 12, len(events)  # ~10 in 0.5 s at 0.05 s; never one per call
    assert lst.n_events == len(events) and lst.last_event is events[-1]
    for e in events:
        assert e["stage"] == "optimizer" and e["rows"] == 100 and e["evaluations"] <= i
        assert e["elapsed"] >= 0.05 - 1e-3
    assert [e["evaluations"] for e in events] == sorted(e["evaluations"] for e in events)
    gaps = np.diff([e["elapsed"] for e in events])
    assert np.all(gaps >= 0.05 - 1e-3)
    # after the block: nobody listens, the state is cleared
    assert progress._listeners == () and progress._fields == {} and progress._stage is None


def test_heartbeat_delivers_while_a_stage_reports_nothing():
    events = []
    with progress.listening(events.append, interval=0.05):
        progress.report("cross-products", rows=10**6)
        time.sleep(0.4)  # a long pass over the rows without reports
    assert len(events) >= 3
    assert {e["stage"] for e in events} == {"cross-products"}
    assert all(e["rows"] == 10**6 for e in events)
    assert events[-1]["elapsed"] > events[0]["elapsed"]
    # nothing reported at all: no event (no stage to tell)
    quiet = []
    with progress.listening(quiet.append, interval=0.02):
        time.sleep(0.1)
    assert quiet == []


def test_reports_from_worker_threads_and_callbacks_never_overlap():
    events = []
    inside = threading.Lock()
    overlaps = []

    def cb(e):
        if not inside.acquire(blocking=False):
            overlaps.append(e)
            return
        try:
            events.append(e)
            time.sleep(0.002)
        finally:
            inside.release()

    def work(k):
        f = progress.counted(lambda x: (x - k) ** 2, "optimizer")
        for i in range(20_000):
            f(float(i % 7))

    with progress.listening(cb, interval=0.01):
        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert events and not overlaps
    assert all(e["stage"] == "optimizer" for e in events)
    assert events[-1]["objective"] == 0.0 and events[-1]["evaluations"] > 0


def test_a_failing_callback_never_breaks_the_reporter():
    def boom(e):
        raise RuntimeError("listener bug")

    with progress.listening(boom, interval=0.01):
        for i in range(1000):
            progress.report("optimizer", evaluations=i)
            time.sleep(0.0001)


def test_counted_and_iterate():
    events = []

    class R:
        def __init__(self, ok):
            self.ok = ok

    with progress.listening(events.append, interval=1e-9, heartbeat=False):
        f = progress.counted(lambda x: x, "optimizer")
        assert f(3.0) == 3.0 and f(1.0) == 1.0 and f(2.0) == 2.0 and f(float("inf")) == float("inf")
        assert events[-1]["evaluations"] == 4 and events[-1]["objective"] == 1.0
        out = list(progress.iterate([R(True), R(False), R(True)], total=3))
        assert len(out) == 3
        last = events[-1]
        assert (last["stage"], last["responses_done"], last["responses_total"],
                last["responses_failed"]) == ("responses", 3, 3, 1)
    with pytest.raises(ValueError, match="interval"):
        with progress.listening(events.append, interval=0):
            pass


def test_fitting_reports_design_crossproducts_and_optimizer(hdp):
    events = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with progress.listening(events.append, interval=1e-9, heartbeat=False):
            fit = bm.lmm("mobility ~ age + sex + (1 | doctor)", hdp).fit()
    stages = [e["stage"] for e in events]
    assert stages[0] == "design" and "cross-products" in stages and stages[-1] == "optimizer"
    assert stages.index("design") < stages.index("cross-products") < stages.index("optimizer")
    design = next(e for e in events if e["stage"] == "design")
    assert design["rows"] == len(hdp)
    last = events[-1]
    assert last["rows"] == fit.nobs
    assert last["evaluations"] >= fit.optimizer.n_evaluations - 2  # all of fit()'s evaluations
    assert last["objective"] == pytest.approx(fit.objective, rel=1e-9)
    # and the same numbers as without a listener
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = bm.lmm("mobility ~ age + sex + (1 | doctor)", hdp).fit()
    assert np.array_equal(plain.theta, fit.theta) and np.array_equal(plain.beta, fit.beta)


def test_fit_many_reports_responses_from_worker_threads(hdp):
    events = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with progress.listening(events.append, interval=1e-9, heartbeat=False):
            res = bm.fit_many("~ age + (1 | doctor)", hdp, ["y0", "y1", "bad", "y2", "y3"], n_jobs=2)
    resp = [e for e in events if e["stage"] == "responses"]
    assert resp[-1]["responses_done"] == 5 and resp[-1]["responses_total"] == 5
    assert resp[-1]["responses_failed"] == 1
    assert [e["responses_done"] for e in resp] == sorted(e["responses_done"] for e in resp)
    assert any(e["stage"] == "optimizer" and e["evaluations"] > 0 for e in events)
    assert list(res.statistics["status"]) == ["ok", "ok", "error", "ok", "ok"]
