"""A fixed-effects matrix kept as its columns: the data's own arrays, copied only on request.

formula -> **design** -> cross-products -> ...

When the fixed part is the intercept and plain numeric data columns (``y ~ age + bmi + ...``),
the matrix X is those columns side by side (at the kept rows, when rows with a missing value
are dropped). `ColumnMatrix` holds them
(views of the data frame's arrays) and the cross-product kernels read them in place
(kernels/columns.py): the design step copies nothing, which at 10M rows saves writing (and
mapping the pages of) an n x p matrix. Everything else that needs X as an array -- fitted
values, predictions of the fitting rows, rank-deficient designs -- gets the C-ordered copy,
built once on first use (`materialize`, the same values as the copy the design used to make).
"""
from __future__ import annotations

import numpy as np

from ..kernels.columns import columns_gram, columns_to_rows

__all__ = ["ColumnMatrix", "fixed_gram"]

_NO_ROWS = np.zeros(0, dtype=np.int64)


class ColumnMatrix:
    """A read-only (n, p) float64 matrix given by its columns.

    Parameters
    ----------
    columns : list of float64 C-contiguous 1-D arrays of one length (n, or the length of the
        data the rows are taken from), or None for a column of ones
    n : number of rows
    rows : optional (n,) int64, the position in the columns of each row (the kept rows,
        increasing); None when row i is position i

    Indexing, ``@``, ``np.asarray`` and any other array attribute act on the materialized
    copy (made once and kept). The cross-product kernels use `addresses` and `row_map`.
    """

    __array_priority__ = 20.0  # ndarray @ ColumnMatrix -> ColumnMatrix.__rmatmul__

    def __init__(self, columns: list, n: int, rows=None):
        n = int(n)
        if rows is not None:
            rows = np.ascontiguousarray(rows, dtype=np.int64)
            if rows.shape != (n,):
                raise ValueError(f"ColumnMatrix rows must hold {n} positions, got {rows.shape}")
        length = n if rows is None else None
        cols = []
        for c in columns:
            if c is not None:
                c = np.asarray(c)
                if length is None:
                    length = len(c) if c.ndim == 1 else -1
                readable = c.dtype == np.float64 and c.ndim == 1 and c.flags.c_contiguous
                if not readable or len(c) != length:
                    raise ValueError("ColumnMatrix columns must be C-contiguous float64 arrays of "
                                     f"{length} values")
            cols.append(c)
        if rows is not None and n and length is not None and not (
                0 <= rows[0] and rows[-1] < length and np.all(np.diff(rows) > 0)):
            raise ValueError("ColumnMatrix rows must be increasing positions in the columns")
        self.columns = cols
        self.rows = rows
        self.shape = (n, len(cols))
        self._array = None

    ndim = 2
    dtype = np.dtype(np.float64)

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    def __len__(self) -> int:
        return self.shape[0]

    def addresses(self) -> np.ndarray:
        """(p,) int64: each column's address, 0 for a column of ones (kernels/columns.py).
        Valid while this object lives (it holds the arrays)."""
        return np.array([0 if c is None else c.ctypes.data for c in self.columns], dtype=np.int64)

    def row_map(self) -> np.ndarray:
        """(n,) int64 positions of the rows in the columns, or (0,) when row i is position i."""
        return _NO_ROWS if self.rows is None else self.rows

    @property
    def is_materialized(self) -> bool:
        return self._array is not None

    def materialize(self) -> np.ndarray:
        """The (n, p) C-ordered copy, made on the first call (writable like the copy the design
        used to make: the kernels then see the array type they are compiled for)."""
        if self._array is None:
            out = np.empty(self.shape, dtype=np.float64)
            if out.size:
                columns_to_rows(self.addresses(), self.row_map(), out)
            self._array = out
        return self._array

    def __array__(self, dtype=None, copy=None):
        a = self.materialize()
        if dtype is not None and np.dtype(dtype) != a.dtype:
            return a.astype(dtype)
        return a.copy() if copy else a

    def __getitem__(self, key):
        return self.materialize()[key]

    def __matmul__(self, other):
        return self.materialize() @ other

    def __rmatmul__(self, other):
        return other @ self.materialize()

    def __getattr__(self, name):  # T, flags, copy, sum, ... of the array
        if name.startswith("__") or name in ("columns", "rows", "shape", "_array"):
            raise AttributeError(name)
        return getattr(self.materialize(), name)

    def __reduce__(self):  # pickles as the plain array
        return (np.asarray, (self.materialize(),))

    def __repr__(self) -> str:
        return f"ColumnMatrix(shape={self.shape}, materialized={self.is_materialized})"


def fixed_gram(X: ColumnMatrix, n_chunks: int = 2) -> np.ndarray:
    """X'X of a ColumnMatrix in one pass over its columns (plain sums: for the design's rank
    and finiteness checks, which the exact, compensated X'X of the cross-products repeats)."""
    p = X.shape[1]
    out = np.zeros((n_chunks, p, p))
    if p and X.shape[0]:
        columns_gram(X.addresses(), X.row_map(), X.shape[0], out)
    return out.sum(axis=0)
