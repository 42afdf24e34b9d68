"""kernels/glmm.py's row helpers against NumPy."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bigmixed.kernels.glmm import LEVEL_CHUNK_ROWS, sorted_fixed_eta


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3 * LEVEL_CHUNK_ROWS + 5), p=st.integers(0, 4), seed=st.integers(0, 99))
def test_sorted_fixed_eta_is_offset_plus_x_beta_in_level_order(n, p, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)) * 10.0 ** rng.integers(-3, 4, size=p)
    beta = rng.normal(size=p)
    offset = rng.normal(size=n)
    order = rng.permutation(n).astype(np.int64)
    out = np.full(n, np.nan)
    sorted_fixed_eta(order, offset, X, beta, out)
    expected = (offset + X @ beta)[order]
    np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-13 * np.max(np.abs(X), initial=1))
    # the sum runs left to right in every row, whatever the chunking: a row on its own agrees
    i = int(rng.integers(n))
    s = 0.0
    for j in range(p):
        s += X[order[i], j] * beta[j]
    assert out[i] == offset[order[i]] + s
