"""Random-effects structure: lme4's term order, theta layout, merged factors."""
import numpy as np

from bigmixed.spec.design import RandomTerm
from bigmixed.spec.structure import RandomEffectsStructure, lme4_term_order


def term(group, n_levels, names, n=12):
    codes = (np.arange(n) % n_levels).astype(np.int32)
    Z = np.ones((n, len(names)))
    return RandomTerm("x", group, names, np.array([str(i) for i in range(n_levels)], dtype=object), codes, Z)


def test_lme4_term_order_reverses_ties_only_when_reordering():
    # lme4 mkReTrms: reorder only if some term has more levels than its predecessor,
    # then rev(order(nl)): ties come out in reverse order (checked in R: f, s, g with 3, 3, 7 levels -> g, s, f)
    assert lme4_term_order([3, 3, 7]) == [2, 1, 0]
    assert lme4_term_order([7, 3, 3]) == [0, 1, 2]
    assert lme4_term_order([5, 5]) == [0, 1]
    assert lme4_term_order([2, 9, 4]) == [1, 2, 0]


def test_theta_layout_and_names():
    st = RandomEffectsStructure([term("h", 3, ["(Intercept)"]), term("d", 6, ["(Intercept)", "time"])])
    assert [st.terms[k].group for k in st.term_order] == ["d", "h"]
    assert st.theta_names == ["d.(Intercept)", "d.time.(Intercept)", "d.time", "h.(Intercept)"]
    np.testing.assert_array_equal(st.lower_bounds, [0, -np.inf, 0, 0])
    np.testing.assert_array_equal(st.initial_theta(), [1, 0, 1, 1])
    T = st.T_of(np.array([1.0, 2.0, 3.0, 4.0]), 0)
    np.testing.assert_array_equal(T, [[1.0, 0.0], [2.0, 3.0]])
    assert st.T_of(np.array([1.0, 2.0, 3.0, 4.0]), 1)[0, 0] == 4.0
    np.testing.assert_array_equal(st.multi_column_diagonal(), [True, False, True, False])


def test_terms_on_one_factor_merge_into_a_block_diagonal_T():
    # (1 + x || g) = (1 | g) + (0 + x | g): one factor, T = diag(theta)
    st = RandomEffectsStructure([term("g", 4, ["(Intercept)"]), term("g", 4, ["x"])])
    assert len(st.factors) == 1
    f = st.factors[0]
    assert f.column_names == ["(Intercept)", "x"] and f.term_offsets == [0, 1]
    np.testing.assert_array_equal(st.T_of(np.array([0.5, 2.0]), 0), [[0.5, 0.0], [0.0, 2.0]])
    assert st.is_singular(np.array([0.0, 1.0])) and not st.is_singular(np.array([0.3, 1.0]))
