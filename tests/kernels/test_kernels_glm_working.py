"""kernels/glm.py's glm_working_response (one PIRLS linearization pass: working weights,
working response, deviance) against glm_working and NumPy, and a slow per-row reference."""
from __future__ import annotations

import numpy as np
import pytest

from bigmixed.kernels.glm import (BINOMIAL, CLOGLOG, GLM_ROW_CHUNK, LOG, LOGIT, POISSON, PROBIT,
                                  _dev_resid, _link, _variance, glm_working,
                                  glm_working_response)


@pytest.mark.parametrize("fam,link", [(BINOMIAL, LOGIT), (BINOMIAL, PROBIT), (BINOMIAL, CLOGLOG),
                                      (POISSON, LOG)])
@pytest.mark.parametrize("n", [7, 3 * GLM_ROW_CHUNK + 11])
def test_working_response_is_glm_working_and_numpy_bit_for_bit(fam, link, n):
    rng = np.random.default_rng(n + 10 * fam + link)
    eta = rng.normal(scale=1.5, size=n) + (0.3 if fam == POISSON else 0.0)
    off = rng.normal(scale=0.3, size=n)
    pw = rng.integers(1, 4, n).astype(float)
    if fam == BINOMIAL:
        y = rng.binomial(pw.astype(int), 0.4) / pw
    else:
        y = rng.poisson(1.5, n).astype(float)
    mu, w, wres = np.empty(n), np.empty(n), np.empty(n)
    hi, lo = glm_working(y, eta, pw, fam, link, mu, w, wres)
    w2, z2 = np.empty(n), np.empty(n)
    hi2, lo2 = glm_working_response(y, eta, off, pw, fam, link, w2, z2)
    assert (hi2, lo2) == (hi, lo)
    np.testing.assert_array_equal(w2, w)
    np.testing.assert_array_equal(z2, eta - off + wres)
    # the same bits run to run
    w3, z3 = np.empty(n), np.empty(n)
    assert glm_working_response(y, eta, off, pw, fam, link, w3, z3) == (hi, lo)
    np.testing.assert_array_equal(z3, z2)
    # a slow reference, row by row
    idx = rng.choice(n, size=min(n, 50), replace=False)
    for i in idx:
        m, me = _link(eta[i], link)
        v = _variance(m, fam)
        assert w2[i] == pytest.approx(pw[i] * me * me / v, rel=1e-14)
        assert z2[i] == pytest.approx(eta[i] - off[i] + (y[i] - m) / me, rel=1e-13, abs=1e-13)
    dev = sum(_dev_resid(y[i], _link(eta[i], link)[0], pw[i], fam) for i in range(n))
    assert hi + lo == pytest.approx(dev, rel=1e-12)
