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


def test_warmup_compiles_the_parallel_pirls_cross_products():
    """A GLMM of 32k rows or more takes the two-chunk (parallel) weighted cross-products on
    every PIRLS pass: warmup compiles them (or loads them from the cache), so the first large
    fit is not charged for it; also the level kernels of the exact criterion. (A fresh process:
    in this one other tests may have run them.)"""
    import subprocess
    import sys

    code = (
        "import bigmixed as bm\n"
        "from bigmixed.kernels.glm import factor_crossprod_weighted as a\n"
        "from bigmixed.kernels.glmm import sorted_fixed_eta as b\n"
        "from bigmixed.kernels.glmm_gradient import blockdiag_laplace_fused as c, "
        "blockdiag_laplace_hessian as d\n"
        "from bigmixed.kernels.glmm_pirls_gradient import blockdiag_pirls_gradient as e\n"
        "from bigmixed.kernels.glmm_joint import joint_pass as f, joint_solve as g\n"
        "assert not a.signatures\n"
        "bm.warmup()\n"
        "print([k.__name__ for k in (a, b, c, d, e, f, g) if not k.signatures])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=600)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_warmup_covers_the_kernels_of_every_lmm_fit_of_hdp_shape():
    """After warmup(glmm=False) in a fresh process, a small LMM fit (fixed columns read in place)
    compiles or loads no kernel that warmup did not: the dispatchers' signatures do not grow."""
    import subprocess
    import sys

    code = (
        "import bigmixed as bm, numba\n"
        "from bigmixed.data_gen import generate_hdp\n"
        "df = generate_hdp(60, seed=3).data\n"
        "bm.warmup(glmm=False)\n"
        "import bigmixed.kernels.columns as C, bigmixed.kernels.crossprod as X\n"
        "ks = [C.columns_gram, C.columns_to_rows, C.count_nonfinite,\n"
        "      X.factor_crossprod_columns_serial, X.factor_crossprod_by_level,\n"
        "      X.factor_crossprod_serial, X.pair_keys]\n"
        "before = [len(k.signatures) for k in ks]\n"
        "m = bm.lmm('mobility ~ age + wbc + (1 | doctor)', df); m.fit().fittedvalues\n"
        "big = df.sample(250_000, replace=True, random_state=1).reset_index(drop=True)\n"
        "bm.lmm('mobility ~ age + wbc + (1 | doctor)', big).fit()  # two chunks: by level\n"
        "big['dept'] = (big.index % 7).astype(str)\n"
        "bm.lmm('mobility ~ age + (1 | doctor) + (1 | dept)', big).fit()  # crossed: pairs\n"
        "print(before, [len(k.signatures) for k in ks])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=600)
    before, after = out.stdout.strip().split("] [")
    assert "0" not in before.strip("[]").split(", "), out.stdout
    assert before.strip("[") == after.strip("]"), out.stdout + out.stderr
