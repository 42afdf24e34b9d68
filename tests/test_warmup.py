"""warmup() runs every kernel once and changes nothing."""
import numpy as np

import bigmixed as bm
from bigmixed.data_gen import tablets


def test_warmup_runs_and_fits_are_unchanged():
    before = bm.lmm("y ~ method + (1 | tablet)", tablets()).fit()
    bm.warmup()
    after = bm.lmm("y ~ method + (1 | tablet)", tablets()).fit()
    assert before.objective == after.objective
    np.testing.assert_array_equal(before.beta, after.beta)


def test_warmup_leaves_glmm_fits_unchanged():
    import warnings

    from bigmixed.data_gen import generate_hdp

    df = generate_hdp(40, seed=2, binary=True).data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        before = bm.glmm("remission ~ age + (1 | doctor)", df, family="binomial").fit()
        bm.warmup()
        after = bm.glmm("remission ~ age + (1 | doctor)", df, family="binomial").fit()
    assert before.objective == after.objective
    np.testing.assert_array_equal(before.beta, after.beta)
