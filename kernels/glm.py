"""GLM pieces of a glmer-style fit: families and links, working weights and residuals,
deviances, the log-likelihood constant, and weighted cross-products.

Every kernel takes raw NumPy arrays, writes into caller-owned ``*_out`` buffers and is
``@njit(cache=True, nogil=True)``. The family and the link are small integers (below).

Families and links: two conventions
-----------------------------------
glmer does *not* evaluate R's family objects for the common links: lme4's C++ class
``glmFamily`` (src/glmFamily.cpp) replaces them with its own functions, which clamp
differently from R's ``make.link``. The default ids reproduce glmer (lme4 1.1-31):

=============  ==============================================  ==========================
link           mu = linkinv(eta)                               mu.eta(eta)
=============  ==============================================  ==========================
LOGIT          min(max(plogis(eta), eps), 1 - eps),            max(dlogis(eta), eps)
               plogis(x) = 1 / (1 + exp(-x))                   dlogis = e/(1+e)^2, e=exp(-|x|)
PROBIT         min(pnorm(eta), 1 - eps)   (no lower clamp)     dnorm(eta)  (no floor)
CLOGLOG        clamp(-expm1(-exp(eta)), eps, 1 - eps)          max(exp(eta - exp(eta)), eps)
LOG            max(exp(eta), eps)                              max(exp(eta), eps)
IDENTITY       eta                                             1
=============  ==============================================  ==========================

and the variance of BINOMIAL is lme4's ``max(mu (1 - mu), eps)``. The ``R_*`` ids reproduce
R's ``binomial()``/``poisson()`` family objects (``make.link``, used by glm()):

R_LOGIT    C logit_linkinv: x = eps if eta < -30, 1/eps if eta > 30, else exp(eta); x / (1 + x);
           mu.eta = eps if |eta| > 30 else exp(eta) / (1 + exp(eta))^2
R_PROBIT   pnorm(clamp(eta, -thresh, thresh)), thresh = -qnorm(eps);
           mu.eta = max(dnorm(eta), eps)
R_CLOGLOG  max(min(-expm1(-exp(eta)), 1 - eps), eps);
           mu.eta = max(exp(e) exp(-exp(e)), eps), e = min(eta, 700)
R_LOG      = LOG, R_IDENTITY = IDENTITY (the same functions in both)
R_BINOMIAL variance mu (1 - mu) (no floor); deviance residuals as R's C binomial_dev_resids

eps is DBL_EPSILON = 2^-52. The two conventions differ only where a clamp is active
(|eta| > 30 for the logit, for example) and by a rounding in between (plogis computes
1/(1 + exp(-x)), R's logit x/(1 + x) with x = exp(eta)). Where R and lme4 compute the same
formula the bits are the same (exp, expm1, log come from the platform's libm, as in R);
pnorm is computed from erfc with a correction for the rounding of its argument, within 2 ulp
of R's pnorm (Cody's algorithm) over [-38, 8.5] (tested against R's values).

Families: BINOMIAL, R_BINOMIAL (y a proportion in [0, 1], prior weights the numbers of
trials), POISSON (y a count), GAUSSIAN (variance 1; for testing the GLM machinery against
the linear mixed model; it has no deviance-independent log-likelihood constant).

Deviance residuals (per row, as lme4 and R compute them):

* binomial: 2 wt (y log(y/mu) + (1 - y) log((1 - y)/(1 - mu))), with y log(y/mu) := 0 at y = 0
* poisson:  2 wt (y log(y/mu) - (y - mu)), with y log(y/mu) := 0 at y = 0
* gaussian: wt (y - mu)^2

Working quantities (as lme4's glmResp): sqrtXwt = mu.eta * sqrt(wt / variance), the working
weight w = sqrtXwt^2, the working residual wres = (y - mu) / mu.eta and the working response
(eta - offset) + wres.

Determinism
-----------
The row kernels here cut the rows into fixed chunks of ``GLM_ROW_CHUNK`` rows (the number of
chunks depends on the row count only), sum each chunk as a double-double (TwoSum) and add the
chunks' sums in order, in double-double: results do not depend on the number of threads, and
the ``_serial`` variants give the same bits. The weighted cross-products follow the contract
of kernels/crossprod.py (the caller chooses the chunks with ``n_row_chunks``, one output slice
per chunk, every sum compensated into ``*_lo``).
"""
import math

import numpy as np
from numba import njit, prange

from .crossprod import _SQUARE_GRAM, _two_sum_error

# --------------------------------------------------------------------------------------
# ids
# --------------------------------------------------------------------------------------
BINOMIAL = 0  #: binomial, lme4's glmFamily (variance max(mu (1 - mu), eps))
POISSON = 1  #: poisson (the same in lme4 and R)
GAUSSIAN = 2  #: gaussian (variance 1)
R_BINOMIAL = 3  #: binomial, R's binomial() (variance mu (1 - mu))

LOGIT = 0  #: logit, lme4's glmFamily (glmer)
PROBIT = 1  #: probit, lme4's glmFamily (glmer)
CLOGLOG = 2  #: complementary log-log, lme4's glmFamily (glmer)
LOG = 3  #: log (lme4 and R agree)
IDENTITY = 4  #: identity (lme4 and R agree)
R_LOGIT = 5  #: logit, R's make.link("logit")
R_PROBIT = 6  #: probit, R's make.link("probit")
R_CLOGLOG = 7  #: complementary log-log, R's make.link("cloglog")
R_LOG = LOG
R_IDENTITY = IDENTITY

FAMILY_IDS = {"binomial": BINOMIAL, "poisson": POISSON, "gaussian": GAUSSIAN}
LINK_IDS = {"logit": LOGIT, "probit": PROBIT, "cloglog": CLOGLOG, "log": LOG,
            "identity": IDENTITY}
_R_LINK_IDS = {"logit": R_LOGIT, "probit": R_PROBIT, "cloglog": R_CLOGLOG, "log": R_LOG,
               "identity": R_IDENTITY}
CANONICAL_LINK = {"binomial": "logit", "poisson": "log", "gaussian": "identity"}


def family_link_ids(family, link=None, convention="lme4"):
    """Integer ids of a family and link given by name.

    Parameters
    ----------
    family : str, "binomial", "poisson" or "gaussian"
    link : str or None, "logit", "probit", "cloglog", "log" or "identity"; None: the
        canonical link of the family
    convention : str, "lme4" (what glmer evaluates, lme4's C++ glmFamily: the default) or
        "R" (R's family objects, as glm() evaluates them)

    Returns
    -------
    (family_id, link_id) : tuple of int
    """
    if family not in FAMILY_IDS:
        raise ValueError(f"unknown family {family!r}; one of {sorted(FAMILY_IDS)}")
    if link is None:
        link = CANONICAL_LINK[family]
    if link not in LINK_IDS:
        raise ValueError(f"unknown link {link!r}; one of {sorted(LINK_IDS)}")
    if convention == "lme4":
        return FAMILY_IDS[family], LINK_IDS[link]
    if convention == "R":
        fam = R_BINOMIAL if family == "binomial" else FAMILY_IDS[family]
        return fam, _R_LINK_IDS[link]
    raise ValueError(f"convention must be 'lme4' or 'R', got {convention!r}")


# --------------------------------------------------------------------------------------
# constants
# --------------------------------------------------------------------------------------
_EPS = 2.220446049250313e-16  # DBL_EPSILON
_ONE_M_EPS = 1.0 - _EPS
_INV_EPS = 1.0 / _EPS
_THRESH = 30.0  # R's logit thresholds
_M_1_SQRT_2PI = 0.398942280401432677939946059934
_SQRT1_2_HI = 0.7071067811865476  # 1/sqrt(2) rounded
_SQRT1_2_LO = -4.833646656726457e-17  # 1/sqrt(2) - _SQRT1_2_HI
_TWO_OVER_SQRT_PI = 1.1283791670955126
_R_PROBIT_THRESH = float.fromhex("0x1.04074bdbf8864p+3")  # -qnorm(DBL_EPSILON) in R
_DNORM_ZERO_BEYOND = float.fromhex("0x1.348b5981e26f5p+5")  # R: sqrt(-2 log2 (DBL_MIN_EXP + 1 - DBL_MANT_DIG))
_SPLIT = 134217729.0  # 2^27 + 1 (Dekker)

GLM_ROW_CHUNK = 65536  # rows per chunk of the row kernels (glm_working, glm_deviance, ...)


def n_glm_row_chunks(n_rows):
    """Number of fixed row chunks of the row kernels here: ceil(n / GLM_ROW_CHUNK), >= 1."""
    return max(1, -(-int(n_rows) // GLM_ROW_CHUNK))


# --------------------------------------------------------------------------------------
# scalar functions (inlined into the kernels)
# --------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _cmax(a, b):
    """std::max(a, b) = (a < b) ? b : a (lme4's clamps; a NaN in b gives a)."""
    return b if a < b else a


@njit(cache=True, inline="always")
def _cmin(a, b):
    """std::min(a, b) = (b < a) ? b : a."""
    return b if b < a else a


@njit(cache=True, inline="always")
def _rmax(x, c):
    """R's pmax(x, c) for a scalar constant c: NaN stays NaN."""
    if x != x:
        return x
    return x if x > c else c


@njit(cache=True, inline="always")
def _rmin(x, c):
    """R's pmin(x, c): NaN stays NaN."""
    if x != x:
        return x
    return x if x < c else c


@njit(cache=True, nogil=True)
def _dnorm(x):
    """The standard normal density as R's dnorm: exp(-x^2/2)/sqrt(2 pi), with x split into a
    multiple of 2^-16 and a rest from |x| >= 5 on (so that x^2/2 is exact where it matters)."""
    if x != x:
        return x
    x = abs(x)
    if x < 5.0:
        return _M_1_SQRT_2PI * math.exp(-0.5 * x * x)
    if x > _DNORM_ZERO_BEYOND:
        return 0.0
    x1 = np.rint(x * 65536.0) / 65536.0
    x2 = x - x1
    return _M_1_SQRT_2PI * (math.exp(-0.5 * x1 * x1) * math.exp((-0.5 * x2 - x1) * x2))


@njit(cache=True, nogil=True)
def _pnorm(x):
    """P(N(0,1) <= x) = erfc(-x/sqrt 2)/2, corrected for the rounding of -x/sqrt 2 (the error
    of the product and of the constant, times erfc' = -2/sqrt(pi) exp(-t^2)): within 2 ulp of
    R's pnorm on [-38, 8.5]; a plain erfc(-x/sqrt 2) is off by up to ~t^2 ulp in the far tail."""
    if x != x:
        return x
    if x < -40.0:
        return 0.0
    if x > 40.0:
        return 1.0
    a = -x
    t = a * _SQRT1_2_HI
    c = _SPLIT * a
    ah = c - (c - a)
    al = a - ah
    c = _SPLIT * _SQRT1_2_HI
    bh = c - (c - _SQRT1_2_HI)
    bl = _SQRT1_2_HI - bh
    err = ((ah * bh - t) + ah * bl + al * bh) + al * bl  # a * HI - t exactly
    err += a * _SQRT1_2_LO
    return 0.5 * (math.erfc(t) - err * _TWO_OVER_SQRT_PI * math.exp(-t * t))


@njit(cache=True, nogil=True, inline="always")
def _link(eta, link):
    """(mu, mu.eta) at eta for a link id (see the module docstring)."""
    if link == LOGIT:
        # one exp for both: e = exp(-|eta|), mu = 1 / (1 + e) or e / (1 + e)
        e = math.exp(-abs(eta))
        f = 1.0 + e
        mu = 1.0 / f if eta >= 0.0 else e / f
        return _cmax(_EPS, _cmin(_ONE_M_EPS, mu)), _cmax(_EPS, e / (f * f))
    if link == PROBIT:
        return _cmin(_ONE_M_EPS, _pnorm(eta)), _dnorm(eta)
    if link == CLOGLOG:
        ex = math.exp(eta)
        mu = _cmax(_EPS, _cmin(_ONE_M_EPS, -math.expm1(-ex)))
        return mu, _cmax(_EPS, math.exp(eta - ex))
    if link == LOG:
        mu = _cmax(_EPS, math.exp(eta))
        return mu, mu
    if link == IDENTITY:
        return eta, 1.0
    if link == R_LOGIT:
        if eta < -_THRESH:
            tmp = _EPS
        elif eta > _THRESH:
            tmp = _INV_EPS
        else:
            tmp = math.exp(eta)
        mu = tmp / (1.0 + tmp)
        if eta > _THRESH or eta < -_THRESH:
            me = _EPS
        else:
            ex = math.exp(eta)
            opexp = 1.0 + ex
            me = ex / (opexp * opexp)
        return mu, me
    if link == R_PROBIT:
        e2 = _rmin(_rmax(eta, -_R_PROBIT_THRESH), _R_PROBIT_THRESH)
        return _pnorm(e2), _rmax(_dnorm(eta), _EPS)
    if link == R_CLOGLOG:
        mu = _rmax(_rmin(-math.expm1(-math.exp(eta)), _ONE_M_EPS), _EPS)
        e = _rmin(eta, 700.0)
        ex = math.exp(e)
        return mu, _rmax(ex * math.exp(-ex), _EPS)
    return np.nan, np.nan


@njit(cache=True, nogil=True, inline="always")
def _variance(mu, family):
    if family == BINOMIAL:
        return _cmax(_EPS, mu * (1.0 - mu))
    if family == POISSON:
        return mu
    if family == GAUSSIAN:
        return 1.0
    if family == R_BINOMIAL:
        return mu * (1.0 - mu)
    return np.nan


@njit(cache=True, inline="always")
def _y_log_y(y, mu):
    """lme4's Y_log_Y: v = y/mu; y * (v ? log(v) : v)."""
    v = y / mu
    if v != 0.0:
        return y * math.log(v)
    return y * v


@njit(cache=True, nogil=True, inline="always")
def _dev_resid(y, mu, wt, family):
    """One deviance residual (see the module docstring)."""
    if family == BINOMIAL:
        return (2.0 * wt) * (_y_log_y(y, mu) + _y_log_y(1.0 - y, 1.0 - mu))
    if family == POISSON:
        v = y / mu
        lv = math.log(v) if v != 0.0 else 0.0
        return (2.0 * wt) * (y * lv - (y - mu))
    if family == GAUSSIAN:
        d = y - mu
        return wt * (d * d)
    if family == R_BINOMIAL:
        a = y * math.log(y / mu) if y != 0.0 else 0.0
        omy = 1.0 - y
        b = omy * math.log(omy / (1.0 - mu)) if omy != 0.0 else 0.0
        return (2.0 * wt) * (a + b)
    return np.nan


@njit(cache=True, nogil=True, inline="always")
def _working(y, eta, wt, family, link):
    """(mu, w, wres) at one row: w = (mu.eta sqrt(wt / V(mu)))^2, wres = (y - mu) / mu.eta."""
    mu, me = _link(eta, link)
    s = me * math.sqrt(wt / _variance(mu, family))
    return mu, s * s, (y - mu) / me


@njit(cache=True, nogil=True, inline="always")
def row_derivatives(eta, y, prior_w, family, link):
    """(dev', dev'', w, w') of one row at eta: the first two derivatives in eta of its
    deviance residual, its working (Fisher) weight and that weight's derivative
    (kernels.glmm_gradient's module docstring has the formulas).

    Parameters
    ----------
    eta, y, prior_w : float, the linear predictor, the response (binomial: a proportion) and
        the prior weight of the row
    family, link : int, family and link ids (kernels.glm)
    """
    mu, me = _link(eta, link)
    return derivatives_at(eta, mu, me, y, prior_w, family, link)


@njit(cache=True, nogil=True, inline="always")
def derivatives_at(eta, mu, me, y, prior_w, family, link):
    """`row_derivatives` from mu and mu.eta at eta (``_link(eta, link)``), already known."""
    if link == LOGIT:
        me2 = me * (1.0 - 2.0 * mu)
    elif link == PROBIT:
        me2 = -eta * me
    elif link == CLOGLOG:
        me2 = me * (1.0 - math.exp(eta))
    elif link == LOG:
        me2 = me
    else:
        me2 = 0.0
    v = _variance(mu, family)
    if family == BINOMIAL:
        dv = 1.0 - 2.0 * mu
    elif family == POISSON:
        dv = 1.0
    else:
        dv = 0.0
    r = y - mu
    d1 = -2.0 * prior_w * r * me / v
    d2 = -2.0 * prior_w * (-me * me / v + r * (me2 / v - me * me * dv / (v * v)))
    w = prior_w * me * me / v
    w1 = prior_w * (2.0 * me * me2 / v - me * me * me * dv / (v * v))
    return d1, d2, w, w1


@njit(cache=True, nogil=True, inline="always")
def row_third_derivatives(eta, y, prior_w, family, link):
    """(dev', dev'', dev3, w, w', w'') of one row at eta: `row_derivatives` (the same bits),
    the third derivative dev3 of the deviance residual and the second of the working weight,
    by the chain rule from the derivatives in mu (D1 = -2 wt r / V, D2 = 2 wt (1 / V +
    r V' / V^2), D3 = 2 wt (-2 V' / V^2 + r (V'' / V^2 - 2 V'^2 / V^3)), r = y - mu) and of
    mu in eta (mu', mu'', mu3): dev3 = D3 mu'^3 + 3 D2 mu' mu'' + D1 mu3,
    w'' = wt (g'' h + 2 g' h' + g h'') with g = mu'^2, h = 1 / V(mu)."""
    d1, d2, w, w1 = row_derivatives(eta, y, prior_w, family, link)
    mu, me = _link(eta, link)
    if link == LOGIT:
        me2 = me * (1.0 - 2.0 * mu)
        me3 = me2 * (1.0 - 2.0 * mu) - 2.0 * me * me
    elif link == PROBIT:
        me2 = -eta * me
        me3 = (eta * eta - 1.0) * me
    elif link == CLOGLOG:
        ex = math.exp(eta)
        me2 = me * (1.0 - ex)
        me3 = me2 * (1.0 - ex) - me * ex
    elif link == LOG:
        me2 = me
        me3 = me
    else:
        me2 = 0.0
        me3 = 0.0
    v = _variance(mu, family)
    if family == BINOMIAL:
        dv = 1.0 - 2.0 * mu
        ddv = -2.0
    elif family == POISSON:
        dv = 1.0
        ddv = 0.0
    else:
        dv = 0.0
        ddv = 0.0
    r = y - mu
    v2 = v * v
    D1 = -2.0 * prior_w * r / v
    D2 = 2.0 * prior_w * (1.0 / v + r * dv / v2)
    D3 = 2.0 * prior_w * (-2.0 * dv / v2 + r * (ddv / v2 - 2.0 * dv * dv / (v2 * v)))
    d3 = D3 * me * me * me + 3.0 * D2 * me * me2 + D1 * me3
    g0 = me * me
    g1 = 2.0 * me * me2
    g2 = 2.0 * (me2 * me2 + me * me3)
    h1 = -dv * me / v2
    h2 = -(ddv * me * me + dv * me2) / v2 + 2.0 * dv * dv * me * me / (v2 * v)
    w2 = prior_w * (g2 / v + 2.0 * g1 * h1 + g0 * h2)
    return d1, d2, d3, w, w1, w2


@njit(cache=True, inline="always")
def _dd_add(hi, lo, v):
    """(hi, lo) + v in double-double (TwoSum): returns the new (hi, lo)."""
    t = hi + v
    return t, lo + _two_sum_error(hi, v, t)


@njit(cache=True, inline="always")
def _dd_add_dd(hi, lo, hi2, lo2):
    t = hi + hi2
    return t, (lo + lo2) + _two_sum_error(hi, hi2, t)


# --------------------------------------------------------------------------------------
# elementwise kernels
# --------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def glm_linkinv(eta, link, mu_out, mu_eta_out):
    """mu = linkinv(eta) and d mu / d eta, elementwise.

    Parameters
    ----------
    eta : (n,) float64, linear predictor
    link : int, link id (LOGIT, PROBIT, CLOGLOG, LOG, IDENTITY, R_LOGIT, R_PROBIT, R_CLOGLOG)
    mu_out : (n,) float64, receives mu
    mu_eta_out : (n,) float64, receives mu.eta(eta)
    """
    for i in range(eta.shape[0]):
        mu, me = _link(eta[i], link)
        mu_out[i] = mu
        mu_eta_out[i] = me


@njit(cache=True, nogil=True)
def glm_variance(mu, family, out):
    """The variance function V(mu), elementwise.

    Parameters
    ----------
    mu : (n,) float64; family : int, family id; out : (n,) float64, receives V(mu)
    """
    for i in range(mu.shape[0]):
        out[i] = _variance(mu[i], family)


@njit(cache=True, nogil=True)
def glm_dev_resids(y, mu, prior_w, family, out):
    """Deviance residuals (the family's dev.resids), elementwise.

    Parameters
    ----------
    y : (n,) float64, response (binomial: proportion of successes)
    mu : (n,) float64, means
    prior_w : (n,) float64, prior weights (binomial: numbers of trials times the weights)
    family : int, family id
    out : (n,) float64, receives the deviance residuals
    """
    for i in range(y.shape[0]):
        out[i] = _dev_resid(y[i], mu[i], prior_w[i], family)


@njit(cache=True, nogil=True)
def _working_chunk(y, eta, prior_w, family, link, start, stop, mu_out, w_out, wres_out):
    hi = 0.0
    lo = 0.0
    for i in range(start, stop):
        mu, w, r = _working(y[i], eta[i], prior_w[i], family, link)
        mu_out[i] = mu
        w_out[i] = w
        wres_out[i] = r
        hi, lo = _dd_add(hi, lo, _dev_resid(y[i], mu, prior_w[i], family))
    return hi, lo


@njit(parallel=True, cache=True, nogil=True)
def glm_working(y, eta, prior_w, family, link, mu_out, w_out, wres_out):
    """Means, working weights and working residuals at eta, and the deviance.

    Parameters
    ----------
    y : (n,) float64, response (binomial: proportion; poisson: count)
    eta : (n,) float64, linear predictor (offset included)
    prior_w : (n,) float64, prior weights (binomial: numbers of trials)
    family, link : int, family and link ids (module constants)
    mu_out : (n,) float64, receives mu = linkinv(eta)
    w_out : (n,) float64, receives the working weights (mu.eta sqrt(prior_w / V(mu)))^2
    wres_out : (n,) float64, receives the working residuals (y - mu) / mu.eta

    Returns
    -------
    (dev_hi, dev_lo) : the sum of the deviance residuals as a double-double (exact sum up to
        O(n eps^2) relative); fixed chunks of GLM_ROW_CHUNK rows, added in order.
    """
    n = y.shape[0]
    n_chunks = max(1, (n + GLM_ROW_CHUNK - 1) // GLM_ROW_CHUNK)
    his = np.zeros(n_chunks)
    los = np.zeros(n_chunks)
    for c in prange(n_chunks):
        h, l_ = _working_chunk(y, eta, prior_w, family, link, c * GLM_ROW_CHUNK,
                               min(n, (c + 1) * GLM_ROW_CHUNK), mu_out, w_out, wres_out)
        his[c] = h
        los[c] = l_
    hi = 0.0
    lo = 0.0
    for c in range(n_chunks):
        hi, lo = _dd_add_dd(hi, lo, his[c], los[c])
    return hi, lo


@njit(cache=True, nogil=True)
def glm_working_serial(y, eta, prior_w, family, link, mu_out, w_out, wres_out):
    """`glm_working` without a parallel region (same chunks, same bits)."""
    n = y.shape[0]
    n_chunks = max(1, (n + GLM_ROW_CHUNK - 1) // GLM_ROW_CHUNK)
    hi = 0.0
    lo = 0.0
    for c in range(n_chunks):
        h, l_ = _working_chunk(y, eta, prior_w, family, link, c * GLM_ROW_CHUNK,
                               min(n, (c + 1) * GLM_ROW_CHUNK), mu_out, w_out, wres_out)
        hi, lo = _dd_add_dd(hi, lo, h, l_)
    return hi, lo


@njit(cache=True, nogil=True)
def _working_response_chunk(y, eta, offset, prior_w, family, link, start, stop, w_out, z_out):
    hi = 0.0
    lo = 0.0
    for i in range(start, stop):
        e = eta[i]
        mu, w, r = _working(y[i], e, prior_w[i], family, link)
        w_out[i] = w
        z_out[i] = (e - offset[i]) + r
        hi, lo = _dd_add(hi, lo, _dev_resid(y[i], mu, prior_w[i], family))
    return hi, lo


@njit(parallel=True, cache=True, nogil=True)
def glm_working_response(y, eta, offset, prior_w, family, link, w_out, z_out):
    """`glm_working` for a PIRLS step, in one pass: the working weights and the working
    response z = (eta - offset) + wres (lme4's glmResp::wrkResp), and the deviance.

    Parameters
    ----------
    y, eta, prior_w : (n,) float64, family, link : int, as `glm_working`
    offset : (n,) float64, subtracted from eta in the working response
    w_out : (n,) float64, receives the working weights (bit-identical to glm_working's)
    z_out : (n,) float64, receives (eta - offset) + wres (bit-identical to NumPy's
        ``eta - offset + wres`` with glm_working's wres)

    Returns
    -------
    (dev_hi, dev_lo) : bit-identical to `glm_working`'s (the same chunks, added in order)
    """
    n = y.shape[0]
    n_chunks = max(1, (n + GLM_ROW_CHUNK - 1) // GLM_ROW_CHUNK)
    his = np.zeros(n_chunks)
    los = np.zeros(n_chunks)
    for c in prange(n_chunks):
        h, l_ = _working_response_chunk(y, eta, offset, prior_w, family, link, c * GLM_ROW_CHUNK,
                                        min(n, (c + 1) * GLM_ROW_CHUNK), w_out, z_out)
        his[c] = h
        los[c] = l_
    hi = 0.0
    lo = 0.0
    for c in range(n_chunks):
        hi, lo = _dd_add_dd(hi, lo, his[c], los[c])
    return hi, lo


@njit(cache=True, nogil=True)
def _deviance_chunk(y, eta, prior_w, family, link, start, stop):
    hi = 0.0
    lo = 0.0
    for i in range(start, stop):
        mu, _me = _link(eta[i], link)
        hi, lo = _dd_add(hi, lo, _dev_resid(y[i], mu, prior_w[i], family))
    return hi, lo


@njit(parallel=True, cache=True, nogil=True)
def glm_deviance(y, eta, prior_w, family, link):
    """The deviance sum(dev.resids(y, linkinv(eta), prior_w)) only (for step halving).

    Parameters
    ----------
    y, eta, prior_w : (n,) float64 (as `glm_working`); family, link : int ids

    Returns
    -------
    (dev_hi, dev_lo) : double-double sum, bit-identical to `glm_working`'s
    """
    n = y.shape[0]
    n_chunks = max(1, (n + GLM_ROW_CHUNK - 1) // GLM_ROW_CHUNK)
    his = np.zeros(n_chunks)
    los = np.zeros(n_chunks)
    for c in prange(n_chunks):
        h, l_ = _deviance_chunk(y, eta, prior_w, family, link, c * GLM_ROW_CHUNK,
                                min(n, (c + 1) * GLM_ROW_CHUNK))
        his[c] = h
        los[c] = l_
    hi = 0.0
    lo = 0.0
    for c in range(n_chunks):
        hi, lo = _dd_add_dd(hi, lo, his[c], los[c])
    return hi, lo


@njit(cache=True, nogil=True)
def glm_deviance_serial(y, eta, prior_w, family, link):
    """`glm_deviance` without a parallel region (same chunks, same bits)."""
    n = y.shape[0]
    n_chunks = max(1, (n + GLM_ROW_CHUNK - 1) // GLM_ROW_CHUNK)
    hi = 0.0
    lo = 0.0
    for c in range(n_chunks):
        h, l_ = _deviance_chunk(y, eta, prior_w, family, link, c * GLM_ROW_CHUNK,
                                min(n, (c + 1) * GLM_ROW_CHUNK))
        hi, lo = _dd_add_dd(hi, lo, h, l_)
    return hi, lo


@njit(cache=True, nogil=True)
def glm_aic_constant(y, prior_w, m, family):
    """The constant c with -2 log-likelihood = deviance + c (R's family$aic = dev + c).

    R's binomial aic is -2 sum (wt/m) log dbinom(round(m y), round(m), mu) (0 where m <= 0),
    with m = n (the numbers of trials) if any n > 1 else the prior weights; its Poisson aic is
    -2 sum wt log dpois(y, mu). Subtracting the deviance leaves, per row,

    * binomial: c_i = -2 (wt/m) [log C(M, k) + k log(k/M) + (M - k) log(1 - k/M)],
      k = round(m y), M = round(m), k log(k/M) := 0 at k = 0: -2 (wt/m) times the saturated
      log-likelihood (log dbinom(k, M, k/M)). Exact (aic = dev + c for every mu) when m and
      m y are integers; otherwise R's aic is not dev + constant and rows where k != m y or
      M != m are counted in the third return value.
    * poisson: c_i = 2 wt (lgamma(y + 1) - y log y + y), y log y := 0 at 0; exact for integer
      y (a non-integer y, where R's dpois is -Inf with a warning, is counted).
    * gaussian: none exists (the aic needs the dispersion): returns (nan, 0, 0).

    log C(M, k) is lgamma(M+1) - lgamma(k+1) - lgamma(M-k+1): absolute error ~eps M log M.

    Parameters
    ----------
    y : (n,) float64, response (binomial: proportion)
    prior_w : (n,) float64, the prior weights wt as R's family$aic sees them (binomial with a
        two-column response: trials times the weights)
    m : (n,) float64, R's m (see above), or shape (0,) for m = prior_w (a 0/1 or proportion
        response whose weights are the trials); ignored for poisson
    family : int, BINOMIAL, R_BINOMIAL or POISSON

    Returns
    -------
    (c_hi, c_lo, n_inexact) : c as a double-double and the number of rows where the
        decomposition is not exact (see above)
    """
    n = y.shape[0]
    hi = 0.0
    lo = 0.0
    bad = 0
    if family == GAUSSIAN:
        return np.nan, 0.0, 0
    use_m = m.shape[0] > 0
    for i in range(n):
        wt = prior_w[i]
        yi = y[i]
        if family == POISSON:
            if wt == 0.0:
                continue
            if yi != math.floor(yi) or yi < 0.0:
                bad += 1
            ylogy = yi * math.log(yi) if yi > 0.0 else 0.0
            v = 2.0 * wt * (math.lgamma(yi + 1.0) - ylogy + yi)
        else:
            mi = m[i] if use_m else wt
            if not mi > 0.0:
                continue
            k = np.rint(mi * yi)
            M = np.rint(mi)
            if k != mi * yi or M != mi:
                bad += 1
            if M == 0.0:  # dbinom(0, 0, mu) = 1
                continue
            p = k / M
            sat = math.lgamma(M + 1.0) - math.lgamma(k + 1.0) - math.lgamma(M - k + 1.0)
            if k > 0.0:
                sat += k * math.log(p)
            if M - k > 0.0:
                sat += (M - k) * math.log1p(-p)
            v = -2.0 * (wt / mi) * sat
        hi, lo = _dd_add(hi, lo, v)
    return hi, lo, bad


# --------------------------------------------------------------------------------------
# weighted cross-products
# --------------------------------------------------------------------------------------
@njit(cache=True, nogil=True, inline="always")
def _weighted_row(codes, Z, unit_z, X, i, wi, xy, z, c, p, P, m, square, with_gram,
                  zz_out, zxy_out, zz_lo, zxy_lo, g_hi, g_lo):
    """Adds row i with weight wi (its [X y] in xy, its z in z unless unit_z) to level codes[i]
    of chunk c and to the chunk's [X y]'W[X y] accumulators g_hi, g_lo."""
    g = codes[i]
    if not unit_z:
        for a in range(P):
            z[a] = Z[i, a]
    for a in range(P):
        wz = z[a] * wi  # z[a] * 1.0 == z[a]: bit-identical to factor_crossprod at w = 1
        if unit_z:
            s = zz_out[c, g, 0, 0]
            t = s + wi
            zz_lo[c, g, 0, 0] += _two_sum_error(s, wi, t)
            zz_out[c, g, 0, 0] = t
        else:
            for b in range(P):
                v = wz * z[b]
                s = zz_out[c, g, a, b]
                t = s + v
                zz_lo[c, g, a, b] += _two_sum_error(s, v, t)
                zz_out[c, g, a, b] = t
        for b in range(m):
            v = wz * xy[b]
            s = zxy_out[c, g, a, b]
            t = s + v
            zxy_lo[c, g, a, b] += _two_sum_error(s, v, t)
            zxy_out[c, g, a, b] = t
    if with_gram and square:
        for a in range(m):
            xa = xy[a] * wi
            for b in range(m):
                v = xa * xy[b]
                s = g_hi[a, b]
                t = s + v
                g_lo[a, b] += _two_sum_error(s, v, t)
                g_hi[a, b] = t
    elif with_gram:
        for a in range(m):
            xa = xy[a] * wi
            for b in range(a + 1):
                v = xa * xy[b]
                s = g_hi[a, b]
                t = s + v
                g_lo[a, b] += _two_sum_error(s, v, t)
                g_hi[a, b] = t


@njit(cache=True, nogil=True)
def _gram_out(with_gram, m, c, g_hi, g_lo, gram_out, gram_lo):
    if with_gram:
        for a in range(m):
            for b in range(a + 1):
                gram_out[c, a, b] = gram_out[c, b, a] = g_hi[a, b]
                gram_lo[c, a, b] = gram_lo[c, b, a] = g_lo[a, b]


@njit(cache=True, nogil=True)
def _weighted_chunk(codes, Z, unit_z, X, y, w, with_gram, c, start, stop, zz_out, zxy_out,
                    gram_out, zz_lo, zxy_lo, gram_lo):
    p = X.shape[1]
    m = p + 1
    P = zz_out.shape[2]
    xy = np.empty(m)
    z = np.ones(P)
    g_hi = np.zeros((m, m))
    g_lo = np.zeros((m, m))
    square = m >= _SQUARE_GRAM
    for i in range(start, stop):
        for a in range(p):
            xy[a] = X[i, a]
        xy[p] = y[i]
        _weighted_row(codes, Z, unit_z, X, i, w[i], xy, z, c, p, P, m, square, with_gram,
                      zz_out, zxy_out, zz_lo, zxy_lo, g_hi, g_lo)
    _gram_out(with_gram, m, c, g_hi, g_lo, gram_out, gram_lo)


@njit(parallel=True, cache=True, nogil=True)
def factor_crossprod_weighted(codes, Z, unit_z, X, y, w, with_gram, zz_out, zxy_out, gram_out,
                              zz_lo, zxy_lo, gram_lo):
    """`factor_crossprod` with row weights: Z_g'W Z_g, Z_g'W [X y] and [X y]'W [X y].

    Same contract as kernels.crossprod.factor_crossprod (the chunks are the first axis of the
    outputs, chosen by the caller with `n_row_chunks`; every sum compensated into ``*_lo``);
    with w = 1 the outputs are bit-identical to factor_crossprod's.

    Parameters
    ----------
    codes : (n,) int32/int64, level of each row in 0..n_levels-1
    Z : (n, P) float64, the factor's random-effects columns (ignored when unit_z; may be (0, 1))
    unit_z : bool, the only column is the intercept
    X : (n, p) float64, fixed-effects design (p may be 0)
    y : (n,) float64, the last column (a GLM: the working response)
    w : (n,) float64, row weights (a GLM: the working weights)
    with_gram : bool, also accumulate [X y]'W[X y]
    zz_out : (n_chunks, n_levels, P, P) float64, zeroed: sum_i w_i z_i z_i' per level
    zxy_out : (n_chunks, n_levels, P, p + 1) float64, zeroed: sum_i w_i z_i [x_i y_i] per level
    gram_out : (n_chunks, p + 1, p + 1) float64, zeroed: sum_i w_i [x_i y_i]'[x_i y_i] (full)
    zz_lo, zxy_lo, gram_lo : zeroed, like the outputs: the accumulated rounding errors
    """
    n = codes.shape[0]
    n_chunks = zz_out.shape[0]
    chunk = (n + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        _weighted_chunk(codes, Z, unit_z, X, y, w, with_gram, c, c * chunk,
                        min(n, (c + 1) * chunk), zz_out, zxy_out, gram_out, zz_lo, zxy_lo,
                        gram_lo)


@njit(cache=True, nogil=True)
def factor_crossprod_weighted_serial(codes, Z, unit_z, X, y, w, with_gram, zz_out, zxy_out,
                                     gram_out, zz_lo, zxy_lo, gram_lo):
    """`factor_crossprod_weighted` without a parallel region (same chunks, same bits)."""
    n = codes.shape[0]
    n_chunks = zz_out.shape[0]
    chunk = (n + n_chunks - 1) // n_chunks
    for c in range(n_chunks):
        _weighted_chunk(codes, Z, unit_z, X, y, w, with_gram, c, c * chunk,
                        min(n, (c + 1) * chunk), zz_out, zxy_out, gram_out, zz_lo, zxy_lo,
                        gram_lo)


@njit(cache=True, nogil=True)
def pair_crossprod_weighted(pair_ids, Z_row, unit_row, Z_col, unit_col, w, block_out, block_lo):
    """`pair_crossprod` with row weights: the co-occurrence blocks Z_row' W Z_col.

    Parameters
    ----------
    pair_ids : (n,) int64, index of the (row level, column level) pair of each row
    Z_row, Z_col : (n, P_row), (n, P_col) float64 (ignored when the matching unit flag is set)
    unit_row, unit_col : bool, the factor's only column is the intercept
    w : (n,) float64, row weights
    block_out : (n_pairs, P_row, P_col) float64, zeroed: sum_i w_i z_row,i z_col,i'
    block_lo : like block_out, zeroed: the accumulated rounding errors

    With w = 1 the result is bit-identical to pair_crossprod's.
    """
    n = pair_ids.shape[0]
    Pr = block_out.shape[1]
    Pc = block_out.shape[2]
    zr = np.ones(Pr)
    zc = np.ones(Pc)
    for i in range(n):
        k = pair_ids[i]
        wi = w[i]
        if not unit_row:
            for a in range(Pr):
                zr[a] = Z_row[i, a]
        if not unit_col:
            for b in range(Pc):
                zc[b] = Z_col[i, b]
        for a in range(Pr):
            wz = zr[a] * wi
            for b in range(Pc):
                v = wz * zc[b]
                s = block_out[k, a, b]
                t = s + v
                block_lo[k, a, b] += _two_sum_error(s, v, t)
                block_out[k, a, b] = t


@njit(cache=True, nogil=True)
def _glm_chunk(codes, Z, unit_z, X, eta, offset, y, prior_w, family, link, with_gram, with_dev,
               c, start, stop, zz_out, zxy_out, gram_out, zz_lo, zxy_lo, gram_lo):
    p = X.shape[1]
    m = p + 1
    P = zz_out.shape[2]
    xy = np.empty(m)
    z = np.ones(P)
    g_hi = np.zeros((m, m))
    g_lo = np.zeros((m, m))
    square = m >= _SQUARE_GRAM
    has_offset = offset.shape[0] > 0
    hi = 0.0
    lo = 0.0
    for i in range(start, stop):
        e = eta[i]
        mu, wi, wres = _working(y[i], e, prior_w[i], family, link)
        if with_dev:
            hi, lo = _dd_add(hi, lo, _dev_resid(y[i], mu, prior_w[i], family))
        for a in range(p):
            xy[a] = X[i, a]
        xy[p] = ((e - offset[i]) if has_offset else e) + wres
        _weighted_row(codes, Z, unit_z, X, i, wi, xy, z, c, p, P, m, square, with_gram,
                      zz_out, zxy_out, zz_lo, zxy_lo, g_hi, g_lo)
    _gram_out(with_gram, m, c, g_hi, g_lo, gram_out, gram_lo)
    return hi, lo


@njit(parallel=True, cache=True, nogil=True)
def factor_crossprod_glm(codes, Z, unit_z, X, eta, offset, y, prior_w, family, link, with_gram,
                         with_dev, zz_out, zxy_out, gram_out, zz_lo, zxy_lo, gram_lo):
    """One PIRLS pass for one factor, from eta: the weighted cross-products of [Z X z].

    The working weights w and the working response z = (eta - offset) + wres (as lme4's
    glmResp::wrkResp) are computed on the fly (no (n,) temporaries), and the outputs are
    those of `factor_crossprod_weighted(codes, Z, unit_z, X, z, w, ...)` (bit-identical).
    The penalized least-squares problem of the PIRLS step, min ||W^1/2 (z - X d_beta -
    Z Lambda u)||^2 + ||u||^2, is then the LMM one in these cross-products, e.g.:

    * joint step (glmer nAGQ = 0): offset = the model's offset, X the fixed-effects design:
      the solution is the new (beta, u);
    * modes only (nAGQ >= 1): offset = eta_fixed (offset + X beta), X of shape (n, 0): the
      solution is the new u;
    * offset of shape (0,) means offset 0 (z = eta + wres); offset = eta gives z = wres
      (the Newton form, whose solution is the increment).

    Parameters
    ----------
    codes, Z, unit_z, X : as `factor_crossprod_weighted`
    eta : (n,) float64, linear predictor at which to linearize
    offset : (n,) float64 or (0,), subtracted from eta in the working response
    y : (n,) float64, response; prior_w : (n,) float64, prior weights
    family, link : int ids
    with_gram : bool, also accumulate [X z]'W[X z]
    with_dev : bool, also sum the deviance residuals at eta
    zz_out, zxy_out, gram_out, zz_lo, zxy_lo, gram_lo : as `factor_crossprod_weighted`

    Returns
    -------
    (dev_hi, dev_lo) : the deviance at eta as a double-double, chunks added in order
        ((0, 0) unless with_dev)
    """
    n = codes.shape[0]
    n_chunks = zz_out.shape[0]
    chunk = (n + n_chunks - 1) // n_chunks
    his = np.zeros(n_chunks)
    los = np.zeros(n_chunks)
    for c in prange(n_chunks):
        h, l_ = _glm_chunk(codes, Z, unit_z, X, eta, offset, y, prior_w, family, link, with_gram,
                           with_dev, c, c * chunk, min(n, (c + 1) * chunk), zz_out, zxy_out,
                           gram_out, zz_lo, zxy_lo, gram_lo)
        his[c] = h
        los[c] = l_
    hi = 0.0
    lo = 0.0
    for c in range(n_chunks):
        hi, lo = _dd_add_dd(hi, lo, his[c], los[c])
    return hi, lo


@njit(cache=True, nogil=True)
def factor_crossprod_glm_serial(codes, Z, unit_z, X, eta, offset, y, prior_w, family, link,
                                with_gram, with_dev, zz_out, zxy_out, gram_out, zz_lo, zxy_lo,
                                gram_lo):
    """`factor_crossprod_glm` without a parallel region (same chunks, same bits)."""
    n = codes.shape[0]
    n_chunks = zz_out.shape[0]
    chunk = (n + n_chunks - 1) // n_chunks
    hi = 0.0
    lo = 0.0
    for c in range(n_chunks):
        h, l_ = _glm_chunk(codes, Z, unit_z, X, eta, offset, y, prior_w, family, link, with_gram,
                           with_dev, c, c * chunk, min(n, (c + 1) * chunk), zz_out, zxy_out,
                           gram_out, zz_lo, zxy_lo, gram_lo)
        hi, lo = _dd_add_dd(hi, lo, h, l_)
    return hi, lo


@njit(parallel=True, cache=True, nogil=True)
def add_ranef(codes, Z, unit_z, b, eta_out):
    """eta_out[i] += z_i' b[codes[i]] (one grouping factor's contribution to eta).

    Parameters
    ----------
    codes : (n,) int32/int64, level of each row
    Z : (n, P) float64, random-effects columns (ignored when unit_z; may be (0, 1))
    unit_z : bool, the only column is the intercept: eta_out[i] += b[codes[i], 0]
    b : (n_levels, P) float64, the random effects on the b scale (b_g = T u_g)
    eta_out : (n,) float64, updated in place; the product z_i'b_g is summed over a = 0..P-1
        first, then added (elementwise: the thread count cannot change a bit)
    """
    n = codes.shape[0]
    P = b.shape[1]
    n_chunks = max(1, (n + GLM_ROW_CHUNK - 1) // GLM_ROW_CHUNK)
    for c in prange(n_chunks):
        for i in range(c * GLM_ROW_CHUNK, min(n, (c + 1) * GLM_ROW_CHUNK)):
            g = codes[i]
            if unit_z:
                eta_out[i] += b[g, 0]
            else:
                s = 0.0
                for a in range(P):
                    s += Z[i, a] * b[g, a]
                eta_out[i] += s
