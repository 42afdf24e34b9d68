"""Start-up cost: `import bigmixed` and `bigmixed --version` load only what they use."""
from __future__ import annotations

import subprocess
import sys

import bigmixed as bm


def _modules_after(code: str) -> set:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_import_and_version_load_no_heavy_modules():
    for code in ("import bigmixed", "import bigmixed.cli"):
        loaded = _modules_after(code)
        for heavy in ("pandas", "numba", "scipy", "formulaic", "dask", "matplotlib"):
            assert heavy not in loaded, (code, heavy)


def test_public_names_load_on_first_use():
    assert set(bm.__all__) <= set(dir(bm))
    for name in bm.__all__:
        assert getattr(bm, name) is not None
    assert bm.tidy.tidy is not None and bm.lmm.__module__ == "bigmixed.api"
    try:
        bm.not_a_name
    except AttributeError as e:
        assert "not_a_name" in str(e)
    else:  # pragma: no cover
        raise AssertionError("no AttributeError")


def test_a_plain_formula_fits_without_formulaic_or_sparse_modules():
    """A formula of plain numeric columns and one grouping factor is parsed, designed and fitted
    without loading formulaic (and the scipy.sparse.linalg it imports) or the sparse solvers;
    a formula with a factor or an expression loads formulaic when it needs it."""
    fit = ("import bigmixed as bm\n"
           "from bigmixed.data_gen import generate_hdp\n"
           "df = generate_hdp(30, seed=1).data\n"
           "f = bm.lmm('mobility ~ age + wbc + (1 | doctor)', df).fit()\n"
           "f.summary(); f.fittedvalues\n")
    loaded = _modules_after(fit)
    for heavy in ("formulaic", "scipy.sparse", "scipy.sparse.linalg"):
        assert heavy not in loaded, heavy
    loaded = _modules_after(fit.replace("age + wbc", "age + log(wbc)"))
    assert "formulaic" in loaded
