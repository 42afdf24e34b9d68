"""The optimizer step: BOBYQA (nlopt) over theta with lme4's bounds, plus lme4's edge restart;
Newton steps on difference derivatives to polish its end point; and, where the system has an
analytic gradient (large crossed models), quasi-Newton steps on it instead.

formula -> design -> structure -> cross-products -> factor -> objective -> **optimizer** -> results.
"""
from __future__ import annotations

import numpy as np

from .control import FitControl
from .record import OptimizerRecord

_DEFAULTS = FitControl()  # the tuned constants (bigmixed.fitting.control)
INITIAL_STEP = _DEFAULTS.initial_step


def minimize_theta(fun, theta0, lower, *, ftol_abs=1e-10, ftol_rel=1e-13, xtol_abs=1e-8,
                   maxeval=100_000, restart_edge=True, restartable=None,
                   initial_step=INITIAL_STEP, restart_step=INITIAL_STEP) -> OptimizerRecord:
    """Minimize fun(theta) subject to theta >= lower with nlopt's BOBYQA.

    Tolerances are tighter than lme4's defaults (1e-8) so that the result is never at a worse
    objective. With restart_edge (lme4's default), a fit that ends with a diagonal element of
    theta at zero is restarted if stepping off the boundary lowers the objective. With
    `restartable` (a boolean mask: diagonal elements of terms with several columns), a fit in
    which such an element ends at zero is also restarted from fresh interior points.
    `initial_step` is BOBYQA's first trust radius relative to |theta0| (smaller for a start
    already near the optimum); restarts use `restart_step`.
    """
    import nlopt

    theta0 = np.asarray(theta0, dtype=np.float64)
    n = len(theta0)
    evals = [0]
    best = [np.inf, theta0.copy()]

    def wrapped(x, grad):
        evals[0] += 1
        v = fun(x)
        if not np.isfinite(v):
            v = 1e300  # never hand NaN or inf to BOBYQA
        if v < best[0] or (v == best[0] and np.sum(x == 0) > np.sum(best[1] == 0)):
            best[0] = v
            best[1] = x.copy()
        return v

    def run(start, rel_step=restart_step):
        opt = nlopt.opt(nlopt.LN_BOBYQA, n)
        opt.set_min_objective(wrapped)
        lb = np.where(np.isfinite(lower), lower, -np.inf)
        opt.set_lower_bounds(lb)
        opt.set_ftol_abs(ftol_abs)
        opt.set_ftol_rel(ftol_rel)
        opt.set_xtol_abs(np.full(n, xtol_abs))
        opt.set_maxeval(maxeval)
        step = np.where(np.abs(start) > 0, rel_step * np.maximum(np.abs(start), 0.1), rel_step)
        opt.set_initial_step(step)
        start = np.maximum(start, lb)
        try:
            x = opt.optimize(start)
            res = opt.last_optimize_result()
        except nlopt.RoundoffLimited:
            x, res = best[1].copy(), nlopt.ROUNDOFF_LIMITED
        return x, res

    x, res = run(theta0, initial_step)
    restarts = 0
    if restart_edge:
        for _ in range(3):
            at_edge = np.flatnonzero((lower == 0) & (best[1] == 0))
            if len(at_edge) == 0:
                break
            f0 = best[0]
            trial = best[1].copy()
            improved = False
            for i in at_edge:
                t = trial.copy()
                t[i] = 1e-4
                if wrapped(t, None) < f0:
                    trial = t
                    improved = True
            if not improved:
                break
            restarts += 1
            x, res = run(trial)
    if restartable is not None:
        # A fit that ends on the boundary may sit in a local optimum of the rank-deficient
        # covariance (e.g. a rank-one T pointing the wrong way). Restart from three fresh
        # interior points (the estimate's diagonal with zero variances put back to 1; a small
        # multiple of lme4's start; the estimate with its covariances' signs flipped, i.e. the
        # mirrored rank-one direction, and small positive variances) and keep the best point.
        diag = lower == 0
        zero = diag & (best[1] < 1e-4)
        if np.any(zero & restartable):
            tried = [theta0]
            mirrored = np.where(diag, np.where(zero, 0.1, best[1]), -best[1])
            for trial in (np.where(diag, np.where(zero, 1.0, best[1]), 0.0), 0.2 * theta0, mirrored):
                if any(np.allclose(trial, t) for t in tried):
                    continue
                tried.append(trial)
                f0 = best[0]
                restarts += 1
                x2, res2 = run(trial)
                if best[0] < f0:
                    res = res2
    # Snap variances that are numerically zero onto the boundary when that is no worse,
    # so that singular fits report exact zeros as lme4 does.
    near = np.flatnonzero((lower == 0) & (best[1] > 0) & (best[1] < 1e-5))
    for i in near:
        t = best[1].copy()
        t[i] = 0.0
        f0 = best[0]
        v = wrapped(t, None)
        if v <= f0 + 1e-10 * max(1.0, abs(f0)):  # equal up to rounding: prefer the exact zero
            best[0], best[1] = v, t
    converged = res in (1, 2, 3, 4) or res == -4  # success codes, or roundoff at the optimum
    return OptimizerRecord(
        method="nlopt LN_BOBYQA",
        n_evaluations=evals[0],
        params=best[1].copy(),
        objective=float(best[0]),
        converged=bool(converged and res != 5),
        message=_RESULT_MESSAGES.get(res, str(res)),
        restarts=restarts,
        tolerances={"ftol_abs": ftol_abs, "ftol_rel": ftol_rel, "xtol_abs": xtol_abs},
    )



def quasi_newton(fun, grad, x0, H0, lower, *, xtol=_DEFAULTS.qn_xtol,
                 final_step=_DEFAULTS.qn_final_step, max_iter=_DEFAULTS.qn_max_iter,
                 method="quasi-Newton (analytic gradient)", bound_cap=None):
    """Minimize fun from x0, an interior start near the optimum, by Newton steps on grad(x) and
    a Hessian that starts at H0 (e.g. an approximate criterion's) and gets BFGS updates.

    Meant for a few parameters whose gradient costs a small multiple of one evaluation, from a
    start already close (every iteration: one evaluation, one gradient). The step is halved until
    the criterion decreases (Armijo, within rounding). Returns None when the method does not
    apply, so that the caller falls back to BOBYQA: H not positive definite, a step that would
    reach a bound (the optimum may be on the boundary), no decrease after 5 halvings, or no
    convergence within max_iter iterations. bound_cap (a fraction in (0, 1), for a start far
    from the optimum): a step toward a bound is first shortened to cover at most that fraction
    of the distance to it (a bound is then never reached; an optimum on it is not either, and
    max_iter ends the run).
    """
    x = np.asarray(x0, dtype=np.float64).copy()
    bounded = np.isfinite(lower)
    if np.any(x[bounded] <= lower[bounded]):
        return None
    f = fun(x)
    if not np.isfinite(f):
        return None
    g = grad(x)
    n_f, n_g = 1, 1
    H = np.array(H0, dtype=np.float64, copy=True)
    updates = 0
    history = [(x.copy(), f)]
    for _ in range(max_iter):
        try:
            np.linalg.cholesky(H)
            step = -np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            return None
        if bound_cap is not None:
            toward = bounded & (step < 0)
            if np.any(toward):
                room = bound_cap * (x[toward] - lower[toward]) / -step[toward]
                if np.min(room) < 1.0:
                    step = step * float(np.min(room))
        scale = np.maximum(np.abs(x), 0.1)
        rel = float(np.max(np.abs(step) / scale))
        if rel < xtol:
            break
        slope = float(g @ step)
        t = 1.0
        for _halving in range(6):
            xt = x + t * step
            if np.any(xt[bounded] <= lower[bounded]):
                return None
            ft = fun(xt)
            n_f += 1
            if np.isfinite(ft) and ft <= f + 1e-4 * t * slope + 1e-12 * max(1.0, abs(f)):
                break
            t *= 0.5
        else:
            return None
        if t == 1.0 and updates and rel < final_step:
            if ft <= f:
                x, f = xt, ft
                history.append((x.copy(), f))
            break
        gt = grad(xt)
        n_g += 1
        s, yv = xt - x, gt - g
        sy = float(s @ yv)
        if sy > 0:  # BFGS update (skipped when the curvature condition fails)
            Hs = H @ s
            H = H - np.outer(Hs, Hs) / float(s @ Hs) + np.outer(yv, yv) / sy
            updates += 1
        x, f, g = xt, ft, gt
        history.append((x.copy(), f))
    else:
        return None
    return OptimizerRecord(method=method, n_evaluations=n_f, params=x, objective=float(f),
                           converged=True, message="converged", n_gradients=n_g,
                           gradient=g, hessian=H, history=tuple(history),
                           tolerances={"xtol": xtol, "final_step": final_step})


def quasi_newton_interior(fun, grad, x0, diagonal, *, xtol=1e-6, max_iter=60, min_diagonal=1e-4,
                          inverse_hessian=None, state_out=None,
                          method="BFGS (analytic gradient, log scale for the diagonal)"):
    """Minimize fun from x0 by BFGS on the analytic gradient, with the diagonal elements of T on
    the log scale (theta_d = exp(phi_d)) so that every iterate stays in the interior.

    For starts far from the optimum (lme4's start): no Hessian is needed at the start (the
    inverse-Hessian approximation starts at the identity, rescaled after the first step), and
    no step can reach a bound. Gradient methods stall at the boundary, where the criterion is
    stationary in a diagonal element (it depends on T T'), so a boundary optimum is left to
    BOBYQA. Converged: a full step below xtol (relative to max(|theta|, 0.1)) after two or more
    updates. Otherwise the record is not converged, ends at the lowest point seen, and its
    message says why: "a variance near zero" (a diagonal element below `min_diagonal`, lme4's
    singular-fit threshold), "line search failed" or "no convergence" (max_iter iterations).
    None when the start is on the boundary or the criterion is undefined there.

    inverse_hessian: a start for the inverse-Hessian approximation on the log scale (e.g. from
    a fit of a subsample), else the identity; state_out (a dict) receives the final one as
    "inverse_hessian".
    """
    x0 = np.asarray(x0, dtype=np.float64)
    diagonal = np.asarray(diagonal, dtype=bool)
    if np.any(x0[diagonal] <= 0):
        return None

    def theta_of(phi):
        theta = phi.copy()
        theta[diagonal] = np.exp(phi[diagonal])
        return theta

    def gradient_phi(theta):
        """The gradient on the log scale at theta (just evaluated: grad reuses its factor)."""
        g = np.array(grad(theta), dtype=np.float64)
        g[diagonal] *= theta[diagonal]  # d/dphi = theta d/dtheta
        return g

    phi = x0.copy()
    phi[diagonal] = np.log(x0[diagonal])
    theta = theta_of(phi)
    f = fun(theta)
    if not np.isfinite(f):
        return None
    g = gradient_phi(theta)
    n = len(phi)
    Hinv = np.eye(n) if inverse_hessian is None else np.array(inverse_hessian, dtype=np.float64)
    n_f = n_g = 1
    updates = 0 if inverse_hessian is None else 2  # a given start counts as curvature known
    history = [(theta.copy(), f)]
    grad_at = [g]  # the phi-gradient at each point of history
    message = "converged"
    for _ in range(max_iter):
        step = -Hinv @ g
        slope = float(g @ step)
        if not slope < 0:  # not a descent direction: restart from steepest descent
            Hinv = np.eye(n)
            step, updates = -g, 0
            slope = float(g @ step)
        if updates == 0:  # no curvature known yet: at most a factor e in a standard deviation
            step *= min(1.0, 1.0 / max(float(np.max(np.abs(step))), 1e-300))
            slope = float(g @ step)
        rel = float(np.max(np.abs(theta_of(phi + step) - theta) / np.maximum(np.abs(theta), 0.1)))
        if updates >= 2 and rel < xtol:
            break
        t = 1.0
        for _halving in range(30):
            theta_t = theta_of(phi + t * step)
            ft = fun(theta_t)
            n_f += 1
            if np.isfinite(ft) and ft <= f + 1e-4 * t * slope + 1e-12 * max(1.0, abs(f)):
                break
            t *= 0.5
        else:
            message = "line search failed"
            break
        gt = gradient_phi(theta_t)  # at accepted points only
        n_g += 1
        s, yv = t * step, gt - g
        sy = float(s @ yv)
        if sy > 1e-12 * float(np.sqrt((s @ s) * (yv @ yv))):
            if updates == 0:
                Hinv = np.eye(n) * (sy / float(yv @ yv))
            rho = 1.0 / sy
            V = np.eye(n) - rho * np.outer(s, yv)
            Hinv = V @ Hinv @ V.T + rho * np.outer(s, s)
            updates += 1
        phi, theta, f, g = phi + s, theta_t, ft, gt
        history.append((theta.copy(), f))
        grad_at.append(g)
        if np.any(theta[diagonal] < min_diagonal):
            message = "a variance near zero"
            break
        if t == 1.0 and updates >= 2 and rel < xtol:
            break
    else:
        message = "no convergence"
    # the last steps are within rounding of each other (the line search accepts a rise of
    # 1e-12 relative): end at the lowest criterion seen
    k = min(range(len(history)), key=lambda i: (history[i][1], -i))
    if history[k][1] < f:
        theta, f = history[k]
        g = grad_at[k]
    if state_out is not None:
        state_out["inverse_hessian"] = Hinv
    g_theta = g.copy()
    g_theta[diagonal] /= theta[diagonal]
    return OptimizerRecord(method=method, n_evaluations=n_f, params=theta, objective=float(f),
                           converged=message == "converged", message=message, n_gradients=n_g,
                           gradient=g_theta, history=tuple(history),
                           tolerances={"xtol": xtol})


_RESULT_MESSAGES = {
    1: "success",
    2: "stopval reached",
    3: "ftol reached",
    4: "xtol reached",
    5: "maxeval reached",
    6: "maxtime reached",
    -4: "roundoff limited (at the optimum to machine precision)",
}


def finite_difference_derivatives(fun, x, free, rel_step=1e-4):
    """Central-difference gradient and Hessian of fun at x over the coordinates in `free`.

    Returns (f(x), gradient (k,), Hessian (k, k)) with k = free.sum(). Costs 1 + 2k + 2k(k-1)
    evaluations. The objective is defined for any theta (Lambda'Z'Z Lambda + I is always positive
    definite), so steps may cross a bound.
    """
    idx = np.flatnonzero(free)
    k = len(idx)
    h = rel_step * np.maximum(np.abs(x[idx]), 0.1)
    f0 = fun(x)
    g = np.empty(k)
    H = np.empty((k, k))
    fp = np.empty(k)
    fm = np.empty(k)
    for a in range(k):
        e = np.zeros_like(x)
        e[idx[a]] = h[a]
        fp[a] = fun(x + e)
        fm[a] = fun(x - e)
        g[a] = (fp[a] - fm[a]) / (2 * h[a])
        H[a, a] = (fp[a] - 2 * f0 + fm[a]) / (h[a] * h[a])
    for a in range(k):
        for b in range(a):
            e = np.zeros_like(x)
            e[idx[a]] = h[a]
            d = np.zeros_like(x)
            d[idx[b]] = h[b]
            fpp = fun(x + e + d)
            fmm = fun(x - e - d)
            # f(x+e+d) + f(x-e-d) - 2 f0 = h_a^2 H_aa + h_b^2 H_bb + 2 h_a h_b H_ab + O(h^4)
            H[a, b] = H[b, a] = (fpp + fmm - 2 * f0 - h[a] ** 2 * H[a, a] - h[b] ** 2 * H[b, b]) / (2 * h[a] * h[b])
    return f0, g, H


def corner_difference_hessian(fun, x, free, rel_step):
    """The Hessian of fun at x over the free coordinates by differences: the diagonal central,
    H_aa = (f(x + h_a) - 2 f(x) + f(x - h_a)) / h_a^2, the off-diagonal from the one-sided
    corner, H_ab = (f(x + h_a + h_b) - f(x + h_a) - f(x + h_b) + f(x)) / (h_a h_b); h = rel_step
    max(|x|, 0.1). 1 + 2k + k (k - 1) / 2 evaluations (k free coordinates) instead of
    `finite_difference_derivatives`' 1 + 2k + k (k - 1); the corner's error is
    (h_a T_aab + h_b T_abb) / 2 in the third derivatives T, with gamma in units of standard
    errors ~1e-4 of H (the central scheme's h^2 terms ~1e-8; both far below the criterion's
    rounding noise / h^2 on large data)."""
    idx = np.flatnonzero(free)
    k = len(idx)
    h = rel_step * np.maximum(np.abs(x[idx]), 0.1)
    f0 = fun(x)
    fp = np.empty(k)
    H = np.empty((k, k))
    for a in range(k):
        e = np.zeros_like(x)
        e[idx[a]] = h[a]
        fp[a] = fun(x + e)
        fm = fun(x - e)
        H[a, a] = (fp[a] - 2 * f0 + fm) / (h[a] * h[a])
    for a in range(k):
        for b in range(a):
            e = np.zeros_like(x)
            e[idx[a]] = h[a]
            e[idx[b]] = h[b]
            H[a, b] = H[b, a] = (fun(x + e) - fp[a] - fp[b] + f0) / (h[a] * h[b])
    return H


def minimize_scalar(fun, x0: float, lower: float, *, xtol_abs: float, rel_step: float = 0.05,
                    maxeval: int = 30, method: str = "successive parabolic interpolation"):
    """Minimize fun(theta) over one theta >= lower by successive parabolic interpolation:
    the vertex of the parabola through the best point and its two nearest points (or, where
    that vertex leaves the bracket, its nearest neighbours on either side), from x0 and
    x0 +- rel_step max(|x0|, 0.1); where the best point is not bracketed,
    steps outward (doubling, to the bound at most). Stops when the next vertex is within
    xtol_abs of the best point (that point is the result: evaluated, unlike the vertex).
    Near a smooth minimum the error falls superlinearly (each vertex ~ the product of the two
    last errors), so a start within a few percent ends in about five evaluations where
    BOBYQA's trust region shrinks in about a dozen. Returns None without a result after
    maxeval evaluations or with no finite value (the caller falls back to BOBYQA; fun's own
    record of its best point stands)."""
    xs: list = []
    fs: list = []

    def f(x):
        x = max(float(x), lower)
        for xi, fi in zip(xs, fs):
            if xi == x:
                return fi
        v = float(fun(np.array([x])))
        xs.append(x)
        fs.append(v if np.isfinite(v) else np.inf)
        return fs[-1]

    h = rel_step * max(abs(x0), 0.1)
    for x in (x0, x0 + h, x0 - h):
        f(x)
    while len(xs) < maxeval:
        b = int(np.argmin(fs))
        xb, fb = xs[b], fs[b]
        if not np.isfinite(fb):
            return None
        left = [i for i in range(len(xs)) if xs[i] < xb]
        right = [i for i in range(len(xs)) if xs[i] > xb]
        near = sorted(range(len(xs)), key=lambda i: abs(xs[i] - xb))[:3]
        if not right or (not left and xb > lower):
            # the best point is the largest (smallest): to the vertex of the parabola through
            # the three nearest points if it is convex and before its nearest neighbour, at
            # most twice the distance to it outward; else that far outward (to the bound)
            d = xb - xs[max(left, key=lambda i: xs[i])] if not right else \
                xb - xs[min(right, key=lambda i: xs[i])]
            v = _vertex(*(z for i in near for z in (xs[i], fs[i])))
            if not (np.isfinite(v) and -1.0 < (v - xb) / d < 2.0):
                v = xb + 2.0 * d
            if abs(v - xb) < xtol_abs:
                return _scalar_record(method, xs, fs, b, xtol_abs, "step below xtol_abs")
            if any(xi == max(v, lower) for xi in xs):
                return _scalar_record(method, xs, fs, b, xtol_abs, "no new point")
            f(v)
            continue
        r = min(right, key=lambda i: xs[i])
        if not left:
            # at the bound: the minimum there unless the parabola through the three smallest
            # points has its vertex inside (> lower + xtol_abs)
            if len(right) < 2:
                f(xb + 0.5 * (xs[r] - xb))
                continue
            r2 = sorted(right, key=lambda i: xs[i])[1]
            v = _vertex(xb, fb, xs[r], fs[r], xs[r2], fs[r2])
            if not (v > lower + xtol_abs):
                return _scalar_record(method, xs, fs, b, xtol_abs, "minimum at the bound")
            v = min(v, xb + 0.5 * (xs[r] - xb))
        else:
            lo = max(left, key=lambda i: xs[i])
            # the parabola through the best point and its two nearest ones (on one side, as
            # the points close in, where the bracket's far end would make it linear), if its
            # vertex stays inside the bracket; else through the bracket
            a, c = sorted(i for i in near if i != b)
            v = _vertex(xs[a], fs[a], xb, fb, xs[c], fs[c])
            if not (xs[lo] < v < xs[r]):
                v = _vertex(xs[lo], fs[lo], xb, fb, xs[r], fs[r])
            if not np.isfinite(v):  # (equal values: a flat stretch) bisect the wider side
                v = 0.5 * (xb + (xs[lo] if xb - xs[lo] > xs[r] - xb else xs[r]))
            if abs(v - xb) < xtol_abs:
                return _scalar_record(method, xs, fs, b, xtol_abs, "step below xtol_abs")
            # inside the bracket, not on its ends
            v = min(max(v, xs[lo] + 0.1 * (xb - xs[lo])), xs[r] - 0.1 * (xs[r] - xb))
        if any(xi == max(v, lower) for xi in xs):
            return _scalar_record(method, xs, fs, b, xtol_abs, "no new point")
        f(v)
    return None


def _vertex(x1, f1, x2, f2, x3, f3) -> float:
    """The vertex of the parabola through three points, in any order (inf where it is not
    convex)."""
    num = (x2 - x1) ** 2 * (f2 - f3) - (x2 - x3) ** 2 * (f2 - f1)
    den = (x2 - x1) * (f2 - f3) - (x2 - x3) * (f2 - f1)
    # convex iff the second divided difference is positive
    curv = ((f3 - f2) / (x3 - x2) - (f2 - f1) / (x2 - x1)) / (x3 - x1)
    if not (curv > 0) or den == 0:
        return np.inf
    return x2 - 0.5 * num / den


def _scalar_record(method, xs, fs, b, xtol_abs, message) -> OptimizerRecord:
    return OptimizerRecord(method=method, n_evaluations=len(xs), params=np.array([xs[b]]),
                           objective=float(fs[b]), converged=True, message=message,
                           tolerances={"xtol_abs": xtol_abs})


def gradient_difference_hessian(grad, x, rel_step):
    """The Hessian at x by forward differences of an analytic gradient, symmetrized:
    H[:, a] = (grad(x + h_a e_a) - grad(x)) / h_a, h = rel_step max(|x|, 0.1); 1 + k gradients
    (k = len(x)). The error is h_a T_..a / 2 in the third derivatives T: the corner scheme's
    (`corner_difference_hessian`) at the cost of k + 1 gradients instead of ~k^2 / 2 values."""
    x = np.asarray(x, dtype=np.float64)
    k = len(x)
    h = rel_step * np.maximum(np.abs(x), 0.1)
    g0 = np.asarray(grad(x), dtype=np.float64)
    H = np.empty((k, k))
    for a in range(k):
        e = np.zeros_like(x)
        e[a] = h[a]
        H[:, a] = (np.asarray(grad(x + e), dtype=np.float64) - g0) / h[a]
    return 0.5 * (H + H.T)


def newton_polish(fun, x, lower, *, max_steps=2, max_free=6):
    """Newton steps on finite-difference derivatives from the optimizer's end point.

    Derivative-free optimizers stop where the objective is flat to rounding, leaving theta
    accurate to ~1e-5; Newton steps on central differences bring it to ~1e-9, so the estimates
    no longer depend on the optimizer's path (row order, level order, threads). The gradient uses
    a small step (rounding and truncation errors balanced), the Hessian a larger one. Coordinates
    on their bound stay fixed. A step is refused if it leaves the bounds, is not small, or raises
    the objective by more than its rounding noise.

    Returns (x, f(x), gradient, Hessian, n_evaluations, steps_taken).
    """
    x = np.asarray(x, dtype=np.float64).copy()
    free = ~((lower == 0) & (x == 0))
    k = int(free.sum())
    if k == 0 or k > max_free:
        return x, fun(x), None, None, 1, 0
    evals = 0
    steps = 0
    fx = fun(x)
    g = H = None
    for _ in range(max_steps):
        H = forward_hessian(fun, x, np.flatnonzero(free), fx, rel_step=1e-4)
        _, g, _ = _gradient_only(fun, x, free, fx, rel_step=2e-5)
        evals += k + k * (k + 1) // 2 + 2 * k
        try:
            w = np.linalg.eigvalsh(H)
            if not np.all(np.isfinite(w)) or w.min() <= 0:
                break
            step = np.linalg.solve(H, -g)
        except np.linalg.LinAlgError:
            break
        if np.max(np.abs(step) / np.maximum(np.abs(x[free]), 0.1)) > 1e-2:
            break  # not in the quadratic neighbourhood of the optimum: leave it to BOBYQA
        trial = x.copy()
        trial[free] += step
        if np.any(trial < lower):
            break
        ft = fun(trial)
        evals += 1
        if not ft <= fx + 1e-12 * max(1.0, abs(fx)):
            break
        x, fx = trial, min(ft, fx) if ft <= fx else ft
        steps += 1
        if np.max(np.abs(step) / np.maximum(np.abs(x[free]), 0.1)) < 1e-9:
            break
    return x, fx, g, H, evals, steps


def _gradient_only(fun, x, free, f0, rel_step):
    idx = np.flatnonzero(free)
    h = rel_step * np.maximum(np.abs(x[idx]), 0.1)
    g = np.empty(len(idx))
    for a in range(len(idx)):
        e = np.zeros_like(x)
        e[idx[a]] = h[a]
        g[a] = (fun(x + e) - fun(x - e)) / (2 * h[a])
    return f0, g, None


def forward_hessian(fun, x, idx, f0, rel_step):
    """Forward-difference Hessian of fun at x over the coordinates idx (f0 = fun(x)):
    H_ab = (f(x + e_a + e_b) - f(x + e_a) - f(x + e_b) + f0) / (h_a h_b), h = rel_step *
    max(|x|, 0.1); k (k + 3) / 2 evaluations, O(h) accurate: enough for a Newton step."""
    k = len(idx)
    h = rel_step * np.maximum(np.abs(x[idx]), 0.1)
    steps = []
    for a in range(k):
        e = np.zeros_like(x)
        e[idx[a]] = h[a]
        steps.append(e)
    f1 = [fun(x + e) for e in steps]
    H = np.empty((k, k))
    for a in range(k):
        for b in range(a + 1):
            H[a, b] = H[b, a] = (fun(x + steps[a] + steps[b]) - f1[a] - f1[b] + f0) / (h[a] * h[b])
    return H


def gradient_hessian(grad, x, *, central: bool = True, rel_step: float = 1e-4) -> np.ndarray:
    """The Hessian as differences of an analytic gradient, symmetrized: central (2 n
    gradients, O(h^2)) or forward (n + 1 gradients, O(h)); h = rel_step max(|x|, 0.1)."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    h = rel_step * np.maximum(np.abs(x), 0.1)
    H = np.empty((n, n))
    g0 = None if central else grad(x)
    for a in range(n):
        e = np.zeros(n)
        e[a] = h[a]
        if central:
            H[:, a] = (grad(x + e) - grad(x - e)) / (2.0 * h[a])
        else:
            H[:, a] = (grad(x + e) - g0) / h[a]
    return 0.5 * (H + H.T)
