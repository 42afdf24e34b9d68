"""bigmixed.pages: NumPy's huge-page hint is off while a model is built and fitted, and
restored after, also when uses nest or raise."""
import numpy as np
import pytest

import bigmixed as bm
from bigmixed import pages


def _current() -> bool:
    setter = pages._setter()
    value = setter(True)
    setter(value)
    return bool(value)


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)


def test_hint_is_off_inside_and_restored_after_nesting_and_errors():
    before = _current()
    with pages.small_pages():
        assert _current() is False
        with pages.small_pages():
            assert _current() is False
        assert _current() is False
    assert _current() is before
    with pytest.raises(ValueError):
        with pages.small_pages():
            raise ValueError
    assert _current() is before


def test_an_explicit_numpy_setting_is_left_alone(monkeypatch):
    monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")
    setter = pages._setter()
    previous = setter(True)
    try:
        with pages.small_pages():
            assert _current() is True
    finally:
        setter(previous)


def test_model_building_and_fitting_run_with_small_pages(monkeypatch):
    seen = []
    real = pages._enter

    def spy():
        real()
        seen.append(_current())

    monkeypatch.setattr(pages, "_enter", spy)
    rng = np.random.default_rng(0)
    import pandas as pd

    df = pd.DataFrame({"y": rng.normal(size=60), "g": np.arange(60) % 6})
    bm.lmm("y ~ 1 + (1 | g)", df).fit()
    assert seen == [False, False]  # __init__ and fit


def test_fit_warnings_point_at_the_callers_line():
    """fit() runs inside small_pages' wrapper: its warnings still name the user's line."""
    import pandas as pd

    rng = np.random.default_rng(1)
    df = pd.DataFrame({"y": rng.normal(size=60), "g": np.arange(60) % 6})
    with pytest.warns(bm.SingularFitWarning) as caught:
        bm.lmm("y ~ 1 + (1 | g)", df).fit()
    assert caught[0].filename == __file__
