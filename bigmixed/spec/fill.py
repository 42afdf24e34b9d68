"""Writing data columns into a preallocated C-ordered float64 matrix, a block of rows at a
time (on threads for large matrices); shared by the plain-column and formulaic paths."""
from __future__ import annotations

import numpy as np


_FILL_ROWS = 1 << 14


def fill_columns(out: np.ndarray, sources: list, rows=None) -> None:
    """out[:, j] = values (cast to float64) for each (j, values) of `sources`, a block of rows
    at a time (cache-friendly for a C-ordered `out`). `values` is a scalar, or an array of
    len(out) rows, or with `rows` an array indexed by `rows` (out[i, j] = values[rows[i]])."""
    if not sources:
        return
    n = out.shape[0]
    n_threads = _fill_threads(n * len(sources))
    if n_threads == 1:
        _fill_rows(out, sources, rows, 0, n)
        return
    # large: row ranges on threads (NumPy's copies release the GIL). Most of a fresh matrix's
    # cost is the kernel mapping its pages on first touch, which runs in parallel this way
    # (10.5M x 7: 0.2-0.45 s against 1.4-1.6 s in one thread); a pure copy, so the same bits
    per = -(-n // n_threads)
    per = -(-per // _FILL_ROWS) * _FILL_ROWS
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(n_threads) as pool:
        list(pool.map(lambda c: _fill_rows(out, sources, rows, c * per, min(n, (c + 1) * per)),
                      range(n_threads)))


_FILL_PARALLEL_MIN = 1 << 22  # values to write (rows x columns) from which threads pay


def _fill_threads(n_values: int) -> int:
    if n_values < _FILL_PARALLEL_MIN:
        return 1
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def _fill_rows(out, sources, rows, lo: int, hi: int) -> None:
    for start in range(lo, hi, _FILL_ROWS):
        stop = min(hi, start + _FILL_ROWS)
        sel = slice(start, stop) if rows is None else rows[start:stop]
        block = out[start:stop]
        for j, v in sources:
            block[:, j] = v if np.ndim(v) == 0 else v[sel]


def unwrap(v):
    return getattr(v, "__wrapped__", v)


def as_column(v, n: int) -> np.ndarray:
    """Values for one column of n rows, as `out[:, j] = np.asarray(v, float64).reshape(-1)`
    would take them (no copy; the cast happens when they are written)."""
    a = np.asarray(unwrap(v)).reshape(-1)
    if a.shape[0] != n:
        a = np.broadcast_to(a, (n,))  # raises numpy's error for a wrong length
    return a


def is_unit_scale(scale) -> bool:
    s = unwrap(scale)
    return isinstance(s, (int, float, np.integer, np.floating)) and not isinstance(
        s, (bool, np.bool_)) and s == 1
