"""The page policy of bigmixed's large allocations: small (4 KiB) pages while a model is built
and fitted.

NumPy asks Linux for transparent huge pages (madvise(MADV_HUGEPAGE)) on every large array. Where
the kernel's THP defrag setting is "madvise" (Debian's default), each first touch of such memory
may compact memory synchronously: writing a fresh 590 MB design matrix (10.5M rows x 7 columns)
took 0.9-1.9 s here against 0.5 s with small pages, with no difference afterwards for the
kernels, which stream through the rows once (X'X of the same array: 0.17 s either way). A fit
writes its row-length arrays once and streams them, so bigmixed turns the hint off while it
allocates them and restores NumPy's setting after.

The setting is process-wide in NumPy; nested and concurrent uses are counted, so the first one
in turns the hint off and the last one out restores it. An explicit NUMPY_MADVISE_HUGEPAGE in the
environment (NumPy's own switch) is left alone.
"""
from __future__ import annotations

import functools
import os
import threading

import numpy as np

_lock = threading.Lock()
_depth = 0
_saved = None


def _setter():
    core = getattr(np, "_core", None) or getattr(np, "core")
    return getattr(core.multiarray, "_set_madvise_hugepage", None)


def _enter() -> None:
    global _depth, _saved
    with _lock:
        _depth += 1
        if _depth == 1:
            setter = _setter()
            if setter is not None and "NUMPY_MADVISE_HUGEPAGE" not in os.environ:
                _saved = setter(False)  # returns the previous setting


def _exit() -> None:
    global _depth, _saved
    with _lock:
        _depth -= 1
        if _depth == 0 and _saved is not None:
            _setter()(_saved)
            _saved = None


class small_pages:
    """Context manager and decorator: NumPy's huge-page hint off inside (see the module)."""

    def __enter__(self):
        _enter()
        return self

    def __exit__(self, *exc):
        _exit()
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            with self:
                return fn(*args, **kwargs)

        return wrapped
