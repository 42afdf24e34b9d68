"""R's conventions for names and labels: syntactic names, level labels as R prints
them, and polynomial contrasts (contr.poly)."""
from __future__ import annotations

import numpy as np
import pandas as pd

# --------------------------------------------------------------------------------------
# contr.poly


def contr_poly(n: int, scores=None) -> np.ndarray:
    """R's ``contr.poly(n)``: orthonormal polynomial contrasts, shape (n, n - 1).

    Same construction as R's ``make.poly``: QR of the centred Vandermonde matrix, columns
    Q_j * R_jj (the Gram-Schmidt residuals, sign-definite), normalised to unit length; the
    constant column is dropped. Column j (0-based) is the degree-(j+1) polynomial; R names
    them ".L", ".Q", ".C", "^4", "^5", ...
    """
    n = int(n)
    if n < 2:
        raise ValueError(f"contrasts not defined for {n - 1} degrees of freedom")
    s = np.arange(1, n + 1, dtype=np.float64) if scores is None else np.asarray(scores, np.float64)
    if s.shape != (n,):
        raise ValueError("'scores' argument is of the wrong length")
    y = s - s.mean()
    vander = y[:, None] ** np.arange(n, dtype=np.float64)[None, :]
    q, r = np.linalg.qr(vander)
    raw = q * np.diag(r)[None, :]
    z = raw / np.sqrt((raw**2).sum(axis=0))[None, :]
    return np.ascontiguousarray(z[:, 1:])


def contr_poly_names(n: int) -> list:
    return [{1: ".L", 2: ".Q", 3: ".C"}.get(d, f"^{d}") for d in range(1, n)]


# --------------------------------------------------------------------------------------
# R-style names

_R_RESERVED = {
    "if", "else", "repeat", "while", "function", "for", "next", "break", "TRUE", "FALSE",
    "NULL", "Inf", "NaN", "NA", "NA_integer_", "NA_real_", "NA_character_", "in",
}


def r_syntactic(name: str) -> bool:
    import re

    if name in _R_RESERVED:
        return False
    return bool(re.fullmatch(r"(?:[A-Za-z]|\.(?![0-9]))[A-Za-z0-9._]*|\.", name))


def format_float(x: float) -> str:
    if np.isfinite(x) and x == np.round(x) and abs(x) < 1e15:
        return str(int(x))
    if np.isnan(x):
        return "NaN"
    if np.isinf(x):
        return "Inf" if x > 0 else "-Inf"
    return format(x, ".15g")


def r_label_scalar(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "TRUE" if v else "FALSE"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return format_float(float(v))
    return str(v)


def r_labels(uniques) -> np.ndarray:
    """Level values -> R's labels (object array of str), vectorised for the common dtypes."""
    idx = pd.Index(uniques)
    dt = idx.dtype
    if len(idx) == 0:
        return np.empty(0, dtype=object)
    if pd.api.types.is_bool_dtype(dt):
        return np.where(idx.to_numpy(dtype=bool), "TRUE", "FALSE").astype(object)
    if pd.api.types.is_integer_dtype(dt):
        return idx.to_numpy(dtype=np.int64).astype(str).astype(object)
    if pd.api.types.is_float_dtype(dt):
        v = idx.to_numpy(dtype=np.float64)
        if np.all(np.isfinite(v)) and np.all(v == np.round(v)) and np.all(np.abs(v) < 1e15):
            return v.astype(np.int64).astype(str).astype(object)
        return np.array([format_float(x) for x in v], dtype=object)
    vals = idx.to_numpy(dtype=object)
    if pd.api.types.infer_dtype(vals, skipna=False) == "string":
        return vals
    return np.array([r_label_scalar(x) for x in vals], dtype=object)
