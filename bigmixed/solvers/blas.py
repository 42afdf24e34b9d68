"""The number of OpenBLAS threads of the calling thread, set around dense LAPACK calls."""
from __future__ import annotations


# Threads of the LAPACK calls on the dense block. One: OpenBLAS's threads wait for work by
# spinning, and on a loaded 2-core machine a 1142 x 1142 dpotrf took 100-600 ms on two threads
# against 18-35 ms on one (13 ms against 18 ms when the machine is idle).
SCHUR_BLAS_THREADS = 1
_BLAS_SETTERS = None


def _blas_thread_setters() -> list:
    """openblas_set_num_threads_local (per calling thread) of every OpenBLAS loaded in the process
    (found through /proc/self/maps; empty elsewhere or for other BLAS libraries)."""
    global _BLAS_SETTERS
    if _BLAS_SETTERS is None:
        import ctypes

        setters, seen = [], set()
        try:
            with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
                paths = [line.split()[-1] for line in fh if "openblas" in line.lower()]
        except OSError:
            paths = []
        for path in paths:
            if path in seen or not path.startswith("/"):
                continue
            seen.add(path)
            try:
                fn = ctypes.CDLL(path).openblas_set_num_threads_local
            except (OSError, AttributeError):
                continue
            fn.argtypes = [ctypes.c_int]
            fn.restype = ctypes.c_int
            setters.append(fn)
        _BLAS_SETTERS = setters
    return _BLAS_SETTERS


class BlasThreads:
    """Context manager: OpenBLAS calls of this thread on `n` threads, restored on exit."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        self.prev = [(fn, fn(self.n)) for fn in _blas_thread_setters()]
        return self

    def __exit__(self, *exc):
        for fn, prev in self.prev:
            fn(prev)
        return False
