"""kernels.residual against obvious numpy."""
import numpy as np

from bigmixed.kernels.residual import combine_rows, segment_sums


def test_combine_rows_matches_numpy():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((50, 4))
    rows = rng.integers(0, 50, 30)
    prev = np.where(rng.random(30) < 0.3, -1, rng.integers(0, 50, 30))
    cc, cp = rng.standard_normal(30), rng.standard_normal(30)
    out = np.empty((30, 4))
    combine_rows(rows, prev, cc, cp, A, out)
    want = cc[:, None] * A[rows] + np.where(prev[:, None] >= 0, cp[:, None] * A[np.maximum(prev, 0)], 0.0)
    np.testing.assert_allclose(out, want, rtol=1e-15, atol=1e-15)


def test_segment_sums_matches_numpy():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((40, 3))
    order = rng.permutation(40)[:25]
    starts = np.array([0, 3, 3, 10, 25])
    out = np.empty((4, 3))
    segment_sums(order, starts, A, out)
    want = np.stack([A[order[a:b]].sum(axis=0) for a, b in zip(starts[:-1], starts[1:])])
    np.testing.assert_allclose(out, want, rtol=1e-14, atol=1e-14)
