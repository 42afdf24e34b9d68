"""Write the saved-model files of tests/test_io_compat.py with the bigmixed on sys.path.

Run once with the version whose files should stay loadable (here: the last commit before the
architecture move, 5a0066f), e.g.

    git worktree add /tmp/oldbm 5a0066f && ln -s ../kernels /tmp/oldbm/bigmixed/kernels \
        && ln -s ../data_gen /tmp/oldbm/bigmixed/data_gen
    PYTHONPATH=/tmp/oldbm .venv/bin/python tests/data/make_saved_models.py tests/data
"""
import sys
import warnings
from pathlib import Path

import bigmixed as bm
from bigmixed.data_gen import generate_hdp, generate_longitudinal

MODELS = {
    "plain": ("mobility ~ age + sex + (1 + age | doctor) + (1 | hospital)",
              lambda: generate_hdp(n_doctors=50, n_hospitals=5, seed=31).data, {}),
    "ar1": ("y ~ time * treat + (1 | patient)",
            lambda: generate_longitudinal(30, 5, residual="ar1", seed=32).data,
            {"residual": bm.AR1(time="visit", group="patient")}),
}

if __name__ == "__main__":
    out = Path(sys.argv[1])
    for name, (formula, data, kw) in MODELS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = bm.lmm(formula, data(), **kw).fit()
        fit.save(out / f"saved_{name}.bmfit")
        print(name, bm.__file__, fit.objective)
