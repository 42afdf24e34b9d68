"""build_design without copies: lazy formulaic columns, data columns copied straight into X and Z
(all rows, or the kept rows), the intercept-only Z as a broadcast view, cross-product chunks
summed in place; with the values of the straightforward computation, bit for bit."""
import sys
import tracemalloc

import numpy as np
import pandas as pd
import pytest
from formulaic import ModelSpec
from formulaic.formula import SimpleFormula
from formulaic.materializers.pandas import PandasMaterializer
from formulaic.parser.types import Factor, Term

import bigmixed.spec.fill as F
import bigmixed.spec.materialize as D
from bigmixed.crossprods.compensated import add_compensated
from bigmixed.crossprods.crossprod import CrossProducts
from bigmixed.spec.design import build_design
from bigmixed.errors import NonFiniteValueError
from bigmixed.kernels import factor_crossprod
from bigmixed.spec.structure import RandomEffectsStructure


def _bits(a):
    a = np.ascontiguousarray(a, dtype=np.float64)
    return a.view(np.uint64)


def _frame(n, seed=0, missing=False):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "y": rng.normal(size=n),
        "x": rng.normal(size=n) * 1e3,
        "z": rng.uniform(0.5, 2.0, size=n),
        "k": rng.integers(-3, 9, size=n),  # int64: cast when copied
        "x32": rng.normal(size=n).astype(np.float32),
        "f": pd.Categorical(rng.choice(list("abc"), size=n)),
        "g": rng.integers(0, max(2, n // 5), size=n),
    })
    if missing:
        for c in ("x", "y", "z"):
            v = df[c].to_numpy().copy()
            v[rng.choice(n, size=max(1, n // 15), replace=False)] = np.nan
            df[c] = v
        df.index = pd.Index(rng.permutation(n) * 2 + 5)
    return df


@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("missing", [False, True])
@pytest.mark.parametrize("fill_rows", [3, 1 << 14])
def test_plain_columns_are_the_kept_data(missing, fill_rows, threaded, monkeypatch):
    monkeypatch.setattr(F, "_FILL_ROWS", fill_rows)  # blocks of 3 rows: many block boundaries
    # threaded: row ranges on threads from any size (rows not a multiple of the block or of
    # the thread count)
    monkeypatch.setattr(F, "_FILL_PARALLEL_MIN", 1 if threaded else 1 << 62)
    df = _frame(200, missing=missing)
    des = build_design("y ~ x + k + x32 + z + (1 + x | g)", df)
    keep = df[["y", "x", "z"]].notna().all(axis=1).to_numpy()
    kept = df[keep]
    assert des.n_dropped == int((~keep).sum())
    want_X = np.column_stack([np.ones(keep.sum()), kept["x"], kept["k"].astype(np.float64),
                              kept["x32"].astype(np.float64), kept["z"]])
    assert des.fixed_names == ["(Intercept)", "x", "k", "x32", "z"]
    np.testing.assert_array_equal(_bits(des.X), _bits(want_X))
    assert des.X.flags.c_contiguous and des.X.dtype == np.float64
    Z = des.terms[0].Z
    np.testing.assert_array_equal(_bits(Z), _bits(np.column_stack([np.ones(keep.sum()), kept["x"]])))
    assert Z.flags.c_contiguous
    np.testing.assert_array_equal(_bits(des.y), _bits(kept["y"].to_numpy()))
    assert list(des.row_index) == list(kept.index)


def _stock_formulaic(rhs_terms, frame):
    """formulaic's own PandasMaterializer (no R coding rules) for numeric-only terms."""
    fterms = [Term([Factor("1", eval_method="literal")])]
    fterms += [Term([Factor(v, eval_method="lookup") for v in t.split(":")]) for t in rhs_terms]
    ms = ModelSpec(formula=SimpleFormula(fterms, _ordering="none"),
                   materializer=PandasMaterializer, output="numpy", na_action="ignore")
    mm = ms.get_model_matrix(frame)
    return np.asarray(getattr(mm, "__wrapped__", mm), dtype=np.float64)


def test_products_equal_formulaic_bit_for_bit():
    df = _frame(300, seed=4)
    des = build_design("y ~ x + x:z + x:z:k + z:x32 + (1 | g)", df)
    frame = df[["x", "z", "k", "x32"]].astype(np.float64)
    want = _stock_formulaic(["x", "x:z", "z:x32", "x:z:k"], frame)  # R's order: by degree
    assert des.fixed_names == ["(Intercept)", "x", "x:z", "z:x32", "x:z:k"]
    np.testing.assert_array_equal(_bits(des.X), _bits(want))


def test_factor_products_and_transforms_unchanged():
    df = _frame(300, seed=5)
    des = build_design("y ~ x * f + log(z) + I(x^2) + (0 + f | g)", df)
    x, f = df["x"].to_numpy(), df["f"].to_numpy()
    names = des.fixed_names
    assert names == ["(Intercept)", "x", "fb", "fc", "log(z)", "I(x^2)", "x:fb", "x:fc"]
    np.testing.assert_array_equal(des.X[:, 2], (f == "b").astype(float))
    np.testing.assert_array_equal(_bits(des.X[:, 4]), _bits(np.log(df["z"].to_numpy())))
    np.testing.assert_array_equal(_bits(des.X[:, 5]), _bits(x**2))
    np.testing.assert_array_equal(_bits(des.X[:, 6]), _bits((f == "b") * x))
    np.testing.assert_array_equal(des.terms[0].Z, np.column_stack([f == v for v in "abc"]))


def test_intercept_only_z_takes_no_memory():
    des = build_design("y ~ x + (1 | g)", _frame(100))
    Z = des.terms[0].Z
    assert Z.shape == (100, 1) and Z.dtype == np.float64 and not Z.flags.writeable
    assert Z.strides == (0, 0)
    np.testing.assert_array_equal(Z, np.ones((100, 1)))


def test_infinite_value_in_a_kept_row_is_reported_in_a_dropped_row_ignored():
    df = _frame(50, missing=True)
    x = df["x"].to_numpy().copy()
    y = df["y"].to_numpy()
    dropped = np.flatnonzero(np.isnan(y))[0]
    x[dropped] = np.inf  # this row is dropped (missing y): no error
    df["x"] = x
    build_design("y ~ x + (1 | g)", df)
    kept = np.flatnonzero(df[["x", "y", "z"]].notna().all(axis=1).to_numpy())[3]
    x[kept] = -np.inf
    df["x"] = x
    with pytest.raises(NonFiniteValueError, match=r"column 'x' has 1 infinite value\(s\).*"
                       + str(df.index[kept])):
        build_design("y ~ x + (1 | g)", df)


def test_design_peak_memory_is_about_its_output():
    """formulaic would hold every column twice (its own copy, then the matrix); the frame's
    numeric columns would be copied too. Now the peak is the output plus small change."""
    n = 300_000
    df = _frame(n, seed=1)
    df["w"] = np.random.default_rng(2).normal(size=n)
    df["g"] = np.random.default_rng(3).integers(0, n // 100, size=n)
    build_design("y ~ x + z + w + x32 + (1 + x | g)", df.iloc[:1000], lme4_checks=False)  # warm-up
    tracemalloc.start()
    try:
        des = build_design("y ~ x + z + w + x32 + (1 + x | g)", df)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    t = des.terms[0]
    kept = des.X.nbytes + t.Z.nbytes + t.codes.nbytes + sum(map(sys.getsizeof, t.levels))
    # + a few boolean row masks; formulaic's way would add X and Z again, the frame's copies
    # of x, z, w, x32 (4 columns) more
    assert peak < kept + 8 * n, (peak / 2**20, kept / 2**20)


def test_crossproducts_sum_chunks_in_place_bit_for_bit():
    """CrossProducts with two row chunks: the per-chunk double-doubles summed in place (and the
    buffers shrunk) equal chunk 0 + chunk 1 added in double-double separately."""
    rng = np.random.default_rng(7)
    n, L = 200_000, 300  # n_row_chunks(n) == 2
    df = pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n),
                       "g": rng.integers(0, L, size=n)})
    des = build_design("y ~ x + (x | g)", df)
    st = RandomEffectsStructure(des.terms)
    cp = CrossProducts.compute(des.X, des.y, st)
    f = st.factors[0]
    m = des.X.shape[1] + 1
    zz = np.zeros((2, L, 2, 2))
    zxy = np.zeros((2, L, 2, m))
    gram = np.zeros((2, m, m))
    lo = [np.zeros_like(u) for u in (zz, zxy, gram)]
    factor_crossprod(f.codes, f.Z, False, des.X, des.y, True, zz, zxy, gram, *lo)
    for got, buf, buf_lo in zip((cp.zz[0], cp.zxy[0], cp.gram), (zz, zxy, gram), lo):
        hi, lo_ = buf[0].copy(), buf_lo[0].copy()
        add_compensated(hi, lo_, buf[1], buf_lo[1])
        want = hi + lo_
        assert got.shape == want.shape and got.flags.c_contiguous
        np.testing.assert_array_equal(_bits(got), _bits(want))


def test_plain_formula_skips_formulaic_with_the_same_matrix_and_spec(monkeypatch, tmp_path):
    """Every term a plain numeric column: the matrix is written without formulaic's pass, to
    the same bits; the ModelSpec made on first use re-encodes new data and saves as formulaic's
    own fitted on the data does."""
    import pickle

    import bigmixed as bm

    df = _frame(300, missing=True)
    formula = "y ~ x + k + x32 + (1 + z | g)"
    fast = build_design(formula, df)
    assert isinstance(fast.fixed_spec.matrix.model_spec, D._DeferredModelSpec)
    monkeypatch.setattr(D, "_is_plain_term", lambda facs, columns: False)
    slow = build_design(formula, df)
    assert not isinstance(slow.fixed_spec.matrix.model_spec, D._DeferredModelSpec)
    np.testing.assert_array_equal(_bits(fast.X), _bits(slow.X))
    assert fast.fixed_names == slow.fixed_names
    for a, b in zip(fast.terms, slow.terms):
        np.testing.assert_array_equal(_bits(a.Z), _bits(b.Z))
        assert a.column_names == b.column_names
    fs, ss = fast.fixed_spec.matrix.model_spec, slow.fixed_spec.matrix.model_spec
    assert [str(c) for st in fs.structure for c in st.columns] == \
        [str(c) for st in ss.structure for c in st.columns]
    new = _frame(40, seed=9)
    for a, b in ((fast.fixed_spec.matrix, slow.fixed_spec.matrix),
                 (fast.term_specs[0].matrix, slow.term_specs[0].matrix)):
        np.testing.assert_array_equal(_bits(a.matrix(new)), _bits(b.matrix(new)))
    again = pickle.loads(pickle.dumps(fast.fixed_spec.matrix.model_spec))
    np.testing.assert_array_equal(again.get_model_matrix(new).__wrapped__,
                                  ss.get_model_matrix(new).__wrapped__)
    monkeypatch.undo()
    fit = bm.lmm(formula, df).fit()
    fit.save(tmp_path / "fast.bmfit")
    np.testing.assert_array_equal(bm.load(tmp_path / "fast.bmfit").predict(new), fit.predict(new))


# --------------------------------------------------------------------------------------
# fixed_in_place: the fixed part's columns read where they lie (bigmixed.spec.columns)


def test_fixed_in_place_keeps_the_data_columns_with_the_copys_values():
    """Plain numeric columns, all rows kept: X is a ColumnMatrix of the frame's own float64
    arrays (int and float32 columns as float64 copies of their own), equal bit for bit to the
    copy build_design makes otherwise; nothing is materialized by the design step."""
    from bigmixed.spec.columns import ColumnMatrix

    df = _frame(500, seed=3)
    formula = "y ~ x + k + x32 + z + (1 + z | g)"
    lazy = build_design(formula, df, fixed_in_place=True)
    eager = build_design(formula, df)
    assert isinstance(lazy.X, ColumnMatrix) and isinstance(eager.X, np.ndarray)
    assert not lazy.X.is_materialized
    assert lazy.X.columns[0] is None  # the intercept is not stored
    assert np.shares_memory(lazy.X.columns[1], df["x"].to_numpy())
    assert lazy.fixed_names == eager.fixed_names
    np.testing.assert_array_equal(_bits(np.asarray(lazy.X)), _bits(eager.X))


def test_fixed_in_place_with_dropped_rows_reads_the_kept_rows():
    """Rows with a missing value dropped: the columns are still read in place, at the kept rows
    (X.rows), with the values of the copy of those rows."""
    from bigmixed.spec.columns import ColumnMatrix

    df = _frame(300, seed=4, missing=True)
    lazy = build_design("y ~ x + k + (1 | g)", df, fixed_in_place=True)
    eager = build_design("y ~ x + k + (1 | g)", df)
    assert lazy.n_dropped == eager.n_dropped > 0
    assert isinstance(lazy.X, ColumnMatrix) and len(lazy.X.rows) == lazy.n_obs
    np.testing.assert_array_equal(_bits(np.asarray(lazy.X)), _bits(eager.X))


@pytest.mark.parametrize("formula", [
    "y ~ x + f + (1 | g)",       # a factor: formulaic's matrix
    "y ~ log(z) + x + (1 | g)",  # an expression
])
def test_fixed_in_place_falls_back_to_the_copy(formula):
    df = _frame(300, seed=4)
    d = build_design(formula, df, fixed_in_place=True)
    assert isinstance(d.X, np.ndarray)
    np.testing.assert_array_equal(_bits(d.X), _bits(build_design(formula, df).X))


def test_fixed_in_place_checks_as_the_copy_does():
    """A non-finite value and aliased columns: the same typed error and the same dropped column
    (the rank check then works on the materialized copy)."""
    df = _frame(200, seed=6)
    bad = df.assign(x=df["x"].where(df.index != 17, np.inf))
    with pytest.raises(NonFiniteValueError, match="'x'") as lazy_err:
        build_design("y ~ x + (1 | g)", bad, fixed_in_place=True)
    with pytest.raises(NonFiniteValueError) as eager_err:
        build_design("y ~ x + (1 | g)", bad)
    assert str(lazy_err.value) == str(eager_err.value)
    aliased = df.assign(x2=2.0 * df["x"])
    with pytest.warns(Warning, match="rank deficient"):
        lazy = build_design("y ~ x + x2 + z + (1 | g)", aliased, fixed_in_place=True)
    with pytest.warns(Warning, match="rank deficient"):
        eager = build_design("y ~ x + x2 + z + (1 | g)", aliased)
    assert lazy.dropped_fixed == eager.dropped_fixed == ["x2"]
    np.testing.assert_array_equal(_bits(np.asarray(lazy.X)), _bits(eager.X))


@pytest.mark.parametrize("formula, missing", [("y ~ x + k + (1 | g)", False),
                                              ("y ~ x + z + (1 + z | g)", False),
                                              ("y ~ x + z + (1 + z | g)", True),
                                              ("y ~ 0 + x + (1 | g) + (1 | f)", True)])
def test_lmm_reads_the_columns_in_place_with_the_same_fit(formula, missing, monkeypatch):
    """bm.lmm uses fixed_in_place: the cross-products, the fit and its fitted values are those of
    the copy, bit for bit, and the fit itself never materializes X."""
    import bigmixed as bm
    import bigmixed.fitting.model as M
    from bigmixed.spec.columns import ColumnMatrix

    df = _frame(3000, seed=8, missing=missing)
    rng = np.random.default_rng(1)
    u, v = rng.normal(size=df["g"].max() + 1), rng.normal(size=3)
    df["y"] += u[df["g"]] + df["z"] * u[df["g"]] / 2 + v[df["f"].cat.codes]  # not singular
    lazy = bm.lmm(formula, df)
    assert isinstance(lazy.design.X, ColumnMatrix)
    lazy_fit = lazy.fit()
    assert not lazy.design.X.is_materialized
    monkeypatch.setattr(M, "build_design", lambda *a, **k: build_design(
        *a, **{**k, "fixed_in_place": False}))
    eager = bm.lmm(formula, df)
    assert isinstance(eager.design.X, np.ndarray)
    eager_fit = eager.fit()
    np.testing.assert_array_equal(_bits(lazy.crossprods.gram), _bits(eager.crossprods.gram))
    for a, b in zip(lazy.crossprods.zxy, eager.crossprods.zxy):
        np.testing.assert_array_equal(_bits(a), _bits(b))
    assert lazy_fit.objective == eager_fit.objective
    np.testing.assert_array_equal(_bits(lazy_fit.theta), _bits(eager_fit.theta))
    np.testing.assert_array_equal(_bits(lazy_fit.beta), _bits(eager_fit.beta))
    np.testing.assert_array_equal(_bits(lazy_fit.fittedvalues), _bits(eager_fit.fittedvalues))


@pytest.mark.parametrize("case", ["all used", "missing", "unused", "int8"])
def test_factorize_a_categorical_reads_its_codes_once(case):
    """A categorical grouping column: its own codes when every category occurs and none is
    missing (no copy), else intp codes with the unused categories dropped and -1 for missing;
    the level counts from one read (kernels.columns.count_levels) against np.bincount."""
    from bigmixed.kernels.columns import count_levels
    from bigmixed.spec.encoding import factorize

    rng = np.random.default_rng(2)
    n_cat = 7 if case == "int8" else 400
    codes = rng.integers(0, n_cat, 5000)
    codes[:n_cat] = np.arange(n_cat)
    if case == "missing":
        codes[rng.choice(5000, 50, replace=False)] = -1
    if case == "unused":
        codes[codes == 3] = 4
    cats = [f"L{i:03d}" for i in range(n_cat)]
    s = pd.Series(pd.Categorical.from_codes(codes, categories=cats))
    counts = np.zeros(n_cat, dtype=np.int64)
    assert count_levels(np.asarray(s.array.codes), counts) == int((codes < 0).sum())
    np.testing.assert_array_equal(counts, np.bincount(codes[codes >= 0], minlength=n_cat))
    got, labels, ordered = factorize(s)
    used = sorted(set(codes[codes >= 0].tolist()))
    assert list(labels) == [cats[i] for i in used] and not ordered
    want = np.array([used.index(c) if c >= 0 else -1 for c in codes])
    np.testing.assert_array_equal(got, want)
    if case in ("all used", "int8"):
        assert np.shares_memory(got, s.array.codes)
    else:
        assert got.dtype == np.intp
