"""Starting values from one-factor fits (bigmixed/start.py)."""
import warnings

import numpy as np
import pytest

import bigmixed as bm
from bigmixed.data_gen import generate_hdp
from bigmixed.fitting.start import one_factor_start
from bigmixed.fitting.control import FitControl


@pytest.mark.parametrize("formula,gen,closer", [
    ("mobility ~ age + (1 | doctor) + (1 | hospital)",
     dict(n_doctors=150, seed=3, mean_patients=12, n_hospitals=40, hospital_sd=0.6), True),
    ("mobility ~ age + time + (time | doctor) + (1 | hospital)",
     dict(n_doctors=120, seed=4, mean_patients=6, min_patients=2, max_patients=10, n_visits=3,
          slope_sd=0.4, slope_corr=0.3, time_effect=0.2, n_hospitals=25, hospital_sd=0.5), True),
    # nested: lme4's identity start is already close here, and the model keeps it
    ("mobility ~ age + (1 | hospital/doctor)",
     dict(n_doctors=120, seed=5, mean_patients=10, nested_in=20, hospital_sd=0.7), False),
])
def test_one_factor_start_is_near_the_optimum_and_changes_nothing_else(formula, gen, closer):
    df = generate_hdp(**gen).data
    m = bm.lmm(formula, df)
    start = one_factor_start(m, FitControl())
    st = m.structure
    assert start.shape == (st.n_theta,) and np.all(np.isfinite(start))
    assert np.all(start >= st.lower_bounds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.BigmixedWarning)
        fit = m.fit()  # uses the start when it beats lme4's
        plain = m.fit(theta0=st.initial_theta())  # lme4's start
    if closer:  # crossed: the start is closer to the optimum than lme4's identity start
        assert np.linalg.norm(start - fit.theta) < np.linalg.norm(st.initial_theta() - fit.theta)
        assert m.objective(start) < m.objective(st.initial_theta())
    # and the optimum is the same
    assert abs(fit.objective - plain.objective) <= 1e-9 * abs(plain.objective)
    np.testing.assert_allclose(fit.theta, plain.theta, atol=1e-5)


def test_single_factor_models_have_no_special_start():
    df = generate_hdp(50, seed=1).data
    assert one_factor_start(bm.lmm("mobility ~ age + (1 | doctor)", df), FitControl()) is None
