"""The factor step's systems: SchurSystem against SparseSystem (CHOLMOD), solver="auto"'s choice,
and `refresh()` of every system after the cross-products changed in place."""
import warnings

import numpy as np
import pandas as pd
import pytest

import bigmixed as bm
from bigmixed.solvers.blockdiag import BlockDiagonalSystem
from bigmixed.solvers.choose import auto_solver
from bigmixed.solvers.schur import SchurSystem, schur_block_density
from bigmixed.solvers.cholmod import SparseSystem


def _crossed_frame(seed, n=900, levels=(60, 15, 4), slope=False):
    """y ~ x with crossed random factors g0, g1, ... of the given numbers of levels (and a
    random slope on x for g1)."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"x": rng.normal(size=n), "w": rng.normal(size=n)})
    y = 1.0 + 0.5 * df["x"].to_numpy() + rng.normal(size=n)
    for k, L in enumerate(levels):
        g = rng.integers(0, L, size=n)
        g[:L] = np.arange(L)  # every level used
        u = rng.normal(size=L) * (0.8 - 0.2 * k)
        y += u[g]
        if slope and k == 1:
            y += 0.4 * rng.normal(size=L)[g] * df["x"].to_numpy()
        df[f"g{k}"] = pd.Categorical([f"l{v:03d}" for v in g])
    df["y"] = y
    return df


# (formula, frame arguments): P = 1 crossed; a leading factor that lme4 orders second (fewer
# levels, more effects), so that its co-occurrence blocks are stored transposed; merged terms
CASES = [
    ("y ~ x + (1 | g0) + (1 | g1) + (1 | g2)", dict(levels=(60, 15, 4))),
    ("y ~ x + (1 | g0) + (1 + x | g1)", dict(levels=(40, 25), slope=True)),
    ("y ~ x + w + (1 + x | g1) + (1 | g0) + (1 + w || g2)", dict(levels=(30, 22, 6), slope=True)),
    # an other factor beyond SCHUR_APPROX_DENSE effects with sparse rows of L21 (the sparse
    # product; approximated by its level blocks in approx_update) and a small one (dense rows)
    ("y ~ x + (1 | g0) + (1 | g1) + (1 | g2)", dict(n=4000, levels=(600, 300, 5))),
    ("y ~ x + (1 | g0) + (1 + x | g1) + (1 | g2)", dict(n=4000, levels=(600, 150, 6), slope=True)),
]


def _theta_samples(st, rng, k=3):
    out = []
    for _ in range(k):
        t = rng.uniform(0.3, 1.6, st.n_theta)
        off = st.theta_row != st.theta_col
        t[off] = rng.normal(scale=0.3, size=off.sum())
        out.append(t)
    return out


@pytest.mark.parametrize("formula,frame", CASES)
def test_schur_system_matches_cholmod(formula, frame):
    df = _crossed_frame(1, **frame)
    m = bm.lmm(formula, df, solver="cholmod")
    cp, st = m.work_crossprods, m.structure
    a, b = SparseSystem(cp, st), SchurSystem(cp, st)
    rng = np.random.default_rng(2)
    for theta in _theta_samples(st, rng):
        la, Sa = a.update(theta)
        lb, Sb = b.update(theta)
        assert lb == pytest.approx(la, rel=1e-12, abs=1e-9)
        np.testing.assert_allclose(Sb, Sa, rtol=1e-10, atol=1e-10 * np.abs(Sa).max())
        # the cached value is the same
        lc, Sc = b.update(theta)
        assert lc == lb and np.array_equal(Sc, Sb)
    beta = rng.normal(size=cp.n_fixed)
    ua, ca = a.modes(theta, beta)
    ub, cb = b.modes(theta, beta)
    for x, y in zip(ua, ub):
        np.testing.assert_allclose(y, x, rtol=1e-9, atol=1e-12)
    for x, y in zip(ca, cb):
        np.testing.assert_allclose(y, x, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("formula,frame", [CASES[0], CASES[3], CASES[4]])
def test_approx_update_is_the_arrow_approximation(formula, frame):
    """approx_update against its definition on dense matrices: of the dense Schur complement,
    only the level blocks of the large other factors and the rows of the small ones."""
    df = _crossed_frame(3, **frame)
    m = bm.lmm(formula, df, solver="schur")
    s, st = m.system, m.structure
    theta = _theta_samples(st, np.random.default_rng(5), 1)[0]
    logdet, S = s.approx_update(theta)
    M = s.A.toarray()
    A = np.tril(M) + np.tril(M, -1).T + np.eye(s.q)
    q1, r, s0 = s.q1, s.r, s.s0_approx
    L = np.linalg.cholesky(A)
    schur = A[q1:, q1:] - L[q1:, :q1] @ L[q1:, :q1].T
    keep = np.zeros((r, r), dtype=bool)
    keep[s0:, :] = keep[:, s0:] = True
    for lo, hi, P in s.big_blocks:
        for b in range(lo, hi, P):
            keep[b:b + P, b:b + P] = True
    approx = np.where(keep, schur, 0.0)
    B = s._scaled_zxy(theta)
    c1 = np.linalg.solve(L[:q1, :q1], B[:q1])
    c2 = B[q1:] - L[q1:, :q1] @ c1
    want_logdet = 2 * np.sum(np.log(np.diag(L[:q1, :q1]))) + np.linalg.slogdet(approx)[1]
    want_S = m.work_crossprods.gram - c1.T @ c1 - c2.T @ np.linalg.solve(approx, c2)
    assert logdet == pytest.approx(want_logdet, rel=1e-12)
    np.testing.assert_allclose(S, want_S, rtol=1e-10, atol=1e-10 * np.abs(want_S).max())
    if not s.big_blocks:  # every other factor small: nothing is dropped
        exact = s.update(theta)
        assert logdet == pytest.approx(exact[0], rel=1e-12)
    else:  # the large factor's rows of L21 are sparse, the small one's dense
        assert s.s0 == s.s0_approx == r - frame["levels"][2] and len(s.big_blocks) == 1


def test_leading_factor_is_the_one_with_most_effects():
    df = _crossed_frame(1, levels=(40, 25), slope=True)
    m = bm.lmm("y ~ x + (1 | g0) + (1 + x | g1)", df, solver="schur")
    s = m.system
    assert isinstance(s, SchurSystem)
    assert m.structure.factors[s.lead].group == "g1"  # 25 levels x 2 > 40 levels x 1
    assert s.r == 40


@pytest.mark.parametrize("formula,frame", CASES[:2])
def test_fits_agree_between_schur_and_cholmod(formula, frame):
    df = _crossed_frame(4, **frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        a = bm.lmm(formula, df, solver="cholmod").fit()
        b = bm.lmm(formula, df, solver="schur").fit()
    assert b.objective == pytest.approx(a.objective, rel=1e-11)
    np.testing.assert_allclose(b.theta, a.theta, atol=1e-7)


def test_auto_solver_choice():
    from bigmixed.data_gen import generate_hdp

    crossed = generate_hdp(150, seed=3, mean_patients=12, n_hospitals=40, hospital_sd=0.6).data
    nested = generate_hdp(400, seed=5, mean_patients=5, nested_in=100, hospital_sd=0.7).data
    m = bm.lmm("mobility ~ age + (1 | doctor) + (1 | hospital)", crossed)
    assert m.solver == "schur" and isinstance(m.system, SchurSystem)
    r, density = schur_block_density(m.work_crossprods, m.structure)
    assert r == 40 and density > 0.5
    m = bm.lmm("mobility ~ age + (1 | hospital/doctor)", nested)
    assert m.solver == "cholmod" and isinstance(m.system, SparseSystem)
    # nested: eliminating the doctors leaves the hospitals uncoupled (a diagonal block)
    r, density = schur_block_density(m.work_crossprods, m.structure)
    assert density == pytest.approx(1.0 / ((r + 1) / 2.0))
    m = bm.lmm("mobility ~ age + (1 | doctor)", crossed)
    assert m.solver == "blockdiag" and auto_solver(m.work_crossprods, m.structure) == "blockdiag"


def _overwrite_in_place(cp, new):
    """Copy the values of `new` into the arrays of `cp` (same shapes)."""
    for a, b in zip(cp.zz, new.zz):
        a[...] = b
    for a, b in zip(cp.zxy, new.zxy):
        a[...] = b
    for pa, pb in zip(cp.pairs, new.pairs):
        assert np.array_equal(pa.row_levels, pb.row_levels)
        pa.blocks[...] = pb.blocks
    cp.gram[...] = new.gram


def _scaled(cp, c):
    from dataclasses import replace

    return replace(cp, zz=[c * z for z in cp.zz], zxy=[c * z for z in cp.zxy], gram=c * cp.gram,
                   pairs=[replace(pb, blocks=c * pb.blocks) for pb in cp.pairs])


@pytest.mark.parametrize("system_cls,formula", [
    (SparseSystem, CASES[1][0]),
    (SchurSystem, CASES[1][0]),
    (SchurSystem, CASES[2][0]),
    (BlockDiagonalSystem, "y ~ x + (1 + x | g1)"),
])
def test_refresh_rereads_cross_products_changed_in_place(system_cls, formula):
    frame = dict(levels=(30, 22, 6), slope=True)
    df = _crossed_frame(6, **frame)
    df2 = df.copy()
    rng = np.random.default_rng(9)
    df2["x"] = rng.normal(size=len(df))  # new Z (slopes), X, X'y ...
    df2["w"] = rng.normal(size=len(df))
    df2["y"] = df["y"] + rng.normal(size=len(df))
    m = bm.lmm(formula, df, solver="cholmod" if system_cls is not BlockDiagonalSystem else "blockdiag")
    m2 = bm.lmm(formula, df2, solver="cholmod" if system_cls is not BlockDiagonalSystem else "blockdiag")
    cp = _scaled(m.crossprods, 1.0)  # own copies of every array
    new = _scaled(m2.crossprods, 1.7)  # and different counts too
    st = m.structure
    system = system_cls(cp, st)
    theta = _theta_samples(st, np.random.default_rng(3), 1)[0]
    before = system.update(theta)
    _overwrite_in_place(cp, new)
    system.refresh()
    got = system.update(theta)
    want = system_cls(new, st).update(theta)
    assert not np.isclose(before[0], want[0])
    assert got[0] == pytest.approx(want[0], rel=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-10, atol=1e-10 * np.abs(want[1]).max())
    beta = np.zeros(cp.n_fixed)
    for x, y in zip(system.modes(theta, beta)[0], system_cls(new, st).modes(theta, beta)[0]):
        np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-12)


def test_refined_start_uses_the_approximation_and_lands_near_the_optimum(monkeypatch):
    """bigmixed.start refines the one-factor start on SchurSystem.approx_update when the dense
    block is large: the refined start is much closer to the optimum, and the fit ends at the
    same optimum as from lme4's start."""
    import bigmixed.fitting.start as start_mod
    from bigmixed.fitting.control import FitControl

    df = _crossed_frame(8, n=6000, levels=(500, 300, 8))
    formula = "y ~ x + (1 | g0) + (1 | g1) + (1 | g2)"
    m = bm.lmm(formula, df)
    assert m.solver == "schur" and m.system.dense_block_size >= FitControl().refine_min_dense
    calls = []
    approx = m.system.approx_update
    monkeypatch.setattr(m.system, "approx_update", lambda t: calls.append(1) or approx(t))
    refined = start_mod.one_factor_start(m, FitControl())
    assert calls  # the approximation was used
    plain = start_mod.one_factor_start(m, FitControl(refine_min_dense=10**9))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        fit = m.fit(theta0=m.structure.initial_theta())
    opt = fit.theta
    assert np.max(np.abs(refined - opt)) < 0.2 * np.max(np.abs(plain - opt))
    assert m.objective(refined) - fit.objective < 1e-3
    assert m.objective(refined) < m.objective(plain)


def test_refined_start_is_never_worse_than_the_one_factor_start(monkeypatch):
    """When the approximation is poor (here forced: a 120-level factor approximated by its
    diagonal), its Newton step is refused and the one-factor start is kept."""
    import bigmixed.fitting.start as start_mod
    import bigmixed.solvers.schur as system_mod
    from bigmixed.fitting.control import FitControl

    monkeypatch.setattr(system_mod, "SCHUR_APPROX_DENSE", 100)
    df = _crossed_frame(10, n=8000, levels=(600, 300, 120))
    m = bm.lmm("y ~ x + (1 | g0) + (1 | g1) + (1 | g2)", df)
    assert len(m.system.big_blocks) == 2
    refined = start_mod.one_factor_start(m, FitControl())
    plain = start_mod.one_factor_start(m, FitControl(refine_min_dense=10**9))
    assert m.objective(refined) <= m.objective(plain)


# The analytic gradient (SchurSystem.criterion_gradient) and the quasi-Newton fit built on it

@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("formula,frame", [
    ("y ~ x + (1 | g0) + (1 | g1) + (1 | g2)", dict(levels=(60, 15, 4))),
    ("y ~ x + w + (1 | g0) + (1 | g1)", dict(n=700, levels=(50, 30))),
    ("y ~ 1 + (1 | g0) + (1 | g1) + (1 | g2)", dict(n=4000, levels=(600, 300, 5))),
])
def test_gradient_equals_differences_of_the_dense_oracle(formula, frame, reml):
    """The gradient against central differences of the slow dense criterion (V = Z G Z' +
    sigma^2 I), at random interior theta."""
    from oracle import dense_objective

    df = _crossed_frame(21, **frame)
    m = bm.lmm(formula, df, reml=reml, solver="schur")
    assert m.has_gradient
    design, st = m.design, m.structure
    terms = [(design.terms[k].codes, design.terms[k].Z) for k in st.term_order]
    small = len(df) <= 1000  # the oracle is O(n^3): differences of it on the small frames only
    rng = np.random.default_rng(3)
    for theta in rng.uniform(0.2, 1.8, size=(2, st.n_theta)):
        m.objective(theta)
        got = m.gradient(theta)
        h = 1e-5 * theta
        fun = ((lambda t: dense_objective(t, design.y, design.X, terms, reml=reml)) if small
               else m.objective)
        want = np.array([(fun(theta + h[k] * e) - fun(theta - h[k] * e)) / (2 * h[k])
                         for k, e in enumerate(np.eye(st.n_theta))])
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6 * np.abs(want).max())


def test_gradient_refuses_nonscalar_factors_and_the_boundary():
    df = _crossed_frame(4, levels=(40, 25), slope=True)
    m = bm.lmm("y ~ x + (1 | g0) + (1 + x | g1)", df, solver="schur")
    assert not m.has_gradient
    with pytest.raises(NotImplementedError):
        m.gradient(np.ones(m.structure.n_theta))
    m = bm.lmm("y ~ x + (1 | g0) + (1 | g1)", df, solver="schur")
    with pytest.raises(ValueError):
        m.gradient(np.array([0.5, 0.0]))


def _fit_both_ways(m):
    """The default fit and BOBYQA + Newton polish from lme4's start."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        return m.fit(), m.fit(theta0=m.structure.initial_theta())


@pytest.mark.parametrize("reml", [True, False])
def test_quasi_newton_fit_agrees_with_bobyqa(reml):
    """A crossed model with a dense block of 305 columns takes the quasi-Newton path; it ends
    at BOBYQA's optimum (theta to 1e-6, criterion no worse beyond rounding), run after run."""
    from bigmixed.fitting.control import FitControl

    df = _crossed_frame(8, n=6000, levels=(500, 300, 5))
    m = bm.lmm("y ~ x + (1 | g0) + (1 | g1) + (1 | g2)", df, reml=reml)
    assert m.solver == "schur" and m.system.dense_block_size >= FitControl().refine_min_dense
    fit, ref = _fit_both_ways(m)
    assert fit.optimizer.method.startswith("quasi-Newton") and ref.optimizer.method.startswith("nlopt")
    assert fit.converged and not fit.warnings
    np.testing.assert_allclose(fit.theta, ref.theta, rtol=1e-6)
    assert fit.objective <= ref.objective + 1e-12 * abs(ref.objective)
    np.testing.assert_allclose(fit.beta, ref.beta, rtol=1e-7)
    np.testing.assert_allclose(fit.bse, ref.bse, rtol=1e-6)
    # the gradient at the end is zero to the step tolerance
    assert np.max(np.abs(fit.optimizer.gradient)) < 1e-3
    again = bm.lmm("y ~ x + (1 | g0) + (1 | g1) + (1 | g2)", df, reml=reml).fit()
    assert np.array_equal(again.theta, fit.theta) and again.objective == fit.objective


def test_quasi_newton_falls_back_to_bobyqa_on_the_boundary():
    """A factor without variance: the quasi-Newton steps reach the bound, the fit falls back to
    BOBYQA and ends with an exact zero, as from lme4's start."""
    df = _crossed_frame(8, n=6000, levels=(500, 300, 5))
    rng = np.random.default_rng(1)
    df["y"] = 0.5 * df["x"] + rng.normal(size=len(df)) + rng.normal(size=500)[df["g0"].cat.codes]
    m = bm.lmm("y ~ x + (1 | g0) + (1 | g1) + (1 | g2)", df)
    fit, ref = _fit_both_ways(m)
    assert fit.optimizer.method.startswith("nlopt")
    assert fit.is_singular and np.sum(fit.theta == 0) >= 1
    np.testing.assert_allclose(fit.theta, ref.theta, rtol=1e-5, atol=1e-7)
    assert fit.objective <= ref.objective + 1e-9 * abs(ref.objective)
