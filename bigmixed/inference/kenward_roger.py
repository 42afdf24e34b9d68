"""Kenward-Roger: the adjusted covariance of beta and denominator df (pbkrtest's ``vcovAdj``
and ``KRmodcomp``, as lmerTest's ``summary(fit, ddf = "Kenward-Roger")`` and
``anova(fit, ddf = "Kenward-Roger")`` use them).

    fit.fixed_effects_test(ddf="kenward-roger")   # t tests with KR SEs and df
    fit.anova_terms(ddf="kenward-roger")          # Type III F tests, KR's df
    bm.vcov_kenward_roger(fit)                    # the adjusted covariance (pbkrtest::vcovAdj)

The method (Kenward & Roger 1997; Halekoh & Hojsgaard 2014, J. Stat. Softw. 59(9)), step by
step as pbkrtest 0.5.2 computes it. The marginal covariance is linear in the covariance
parameters gamma = (the lower triangle of every random term's covariance matrix, then
sigma^2): V = sum_r gamma_r G_r, with G_r = Z_t (I ⊗ E_r) Z_t' for an entry of term t's
matrix and G = I for sigma^2. With Phi = Var(beta) (the fit's vcov), P_r = -X'V^-1 G_r V^-1 X,
Q_rs = X'V^-1 G_r V^-1 G_s V^-1 X and the expected information
I_rs = tr(V^-1 G_r V^-1 G_s) - 2 tr(Phi Q_rs) + tr(Phi P_r Phi P_s), W = 2 I^-1 and

    Phi_A = Phi + 2 Phi U Phi,   U = sum_rs W_rs (Q_rs - P_r Phi P_s).

For a hypothesis L beta = 0 of rank q, Theta = L'(L Phi_A L')^-1 L, A1 and A2 are sums of
W_rs tr(Theta Phi P_r Phi) tr(Theta Phi P_s Phi) and W_rs tr(Theta Phi P_r Phi Theta Phi
P_s Phi), and the denominator df are pbkrtest's 4 + (q + 2)/(q rho - 1). As in pbkrtest 0.5.2, Theta uses
the unadjusted Phi. The Wald statistic uses Phi_A: F_U = (L beta)'(L Phi_A L')^-1 (L beta) / q;
lmerTest's anova table (and this module's) has Mean Sq = F_U sigma^2, Sum Sq = q Mean Sq and
F value = KR's scaling factor times F_U, its p-value from F(q, df). One row (t tests):
t = estimate / SE_A with the same df (pbkrtest's ``Lb_ddf``).

Computation. No N x N matrix is formed: with S = Z'Z and K = D(sigma^2 I + S D)^-1 (D the
block-diagonal covariance of the random effects), V^-1 = (I - Z K Z') / sigma^2, and every
quantity above is a product of S, Z'X, X'X and K (Z'V^-k Z = R^k S / sigma^2k with
R = I - S K). Memory and time grow with the number of random effects m (levels x columns):
O(m^2) memory, O(m^3) time. Above ``MAX_RANDOM_EFFECTS`` (default 3000; the ``max_random_effects``
argument raises it) ``KenwardRogerSizeError`` is raised: use Satterthwaite's df, which need
only the level-sized system. The limit is this module's ``MAX_RANDOM_EFFECTS`` (read at each call). ML fits raise
ValueError, as lmerTest does. Residual structures (AR(1), ...) and prior weights are not
supported (pbkrtest's residual matrix is the identity): NotImplementedError.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import BigmixedError

MAX_RANDOM_EFFECTS = 3000


class KenwardRogerSizeError(BigmixedError, ValueError):
    """The model has more random effects than Kenward-Roger's dense computation allows."""


@dataclass(frozen=True)
class KRState:
    """pbkrtest's vcovAdj: the adjusted covariance and what the df need (P_r, W)."""

    phi: np.ndarray  # unadjusted Var(beta)
    phi_adj: np.ndarray  # Kenward-Roger's adjusted Var(beta)
    P: tuple  # P_r, (p, p) each
    W: np.ndarray  # 2 I^-1
    condition: float  # smallest |eigenvalue| of the information (pbkrtest's condi)


def kr_state(fit, max_random_effects: int | None = None) -> KRState:
    """The Kenward-Roger state of `fit` (computed once per fit: ``fit.derived``)."""
    limit = MAX_RANDOM_EFFECTS if max_random_effects is None else int(max_random_effects)
    return fit.derived(f"kenward-roger(limit={limit})", lambda: _kr_state(fit, limit))


def _check(fit, limit):
    model = fit._require_model("Kenward-Roger df (they need the design)")
    kind = getattr(getattr(fit, "rows", None), "kind", "memory")
    if kind != "memory":
        raise NotImplementedError(f"Kenward-Roger df need the model's rows in memory (Z and X); "
                                  f"this fit's rows are {kind!r}: use ddf='satterthwaite'")
    if not fit.reml:
        raise ValueError("Kenward-Roger's method is only available for REML fits (as in "
                         "lmerTest); use fit.update(reml=True)")
    if model.residual is not None:
        raise NotImplementedError("Kenward-Roger df with a residual structure (residual=, "
                                  "variance=) are not implemented; use ddf='satterthwaite'")
    w = getattr(model, "prior_weights", None)
    if w is not None and not np.all(np.asarray(w) == 1.0):
        raise NotImplementedError("Kenward-Roger df with prior weights are not implemented "
                                  "(pbkrtest's residual covariance is the identity); use "
                                  "ddf='satterthwaite'")
    design = model.design
    m = sum(t.n_levels * len(t.column_names) for t in design.terms)
    if m > limit:
        raise KenwardRogerSizeError(
            f"Kenward-Roger's computation is dense in the random effects: this model has {m} "
            f"(levels x columns), above the limit of {limit} (O(m^2) memory, O(m^3) time). Use "
            "ddf='satterthwaite', or pass max_random_effects= to raise the limit")
    return model, design


def _z_matrix(design):
    """Z (sparse, N x m) with the random effects of each term level-major, and per term its
    offset, levels and columns."""
    from scipy import sparse

    blocks, layout, off = [], [], 0
    n = design.y.shape[0]
    for t in design.terms:
        q, L = len(t.column_names), t.n_levels
        Z = np.asarray(t.Z, dtype=np.float64)
        codes = np.asarray(t.codes, dtype=np.int64)
        rows = np.repeat(np.arange(n), q)
        cols = (codes[:, None] * q + np.arange(q)[None, :]).ravel()
        vals = np.broadcast_to(Z, (n, q)).ravel()
        blocks.append(sparse.csr_matrix((vals, (rows, cols)), shape=(n, L * q)))
        layout.append((off, L, q))
        off += L * q
    return sparse.hstack(blocks, format="csr"), layout


def _kr_state(fit, limit) -> KRState:
    model, design = _check(fit, limit)
    X = np.asarray(design.X, dtype=np.float64)
    n, p = X.shape
    Zs, layout = _z_matrix(design)
    m = Zs.shape[1]
    S = (Zs.T @ Zs).toarray()
    ZX = np.asarray(Zs.T @ X)
    XX = X.T @ X
    s2 = float(fit.sigma) ** 2
    covs = [c for _, _, c in fit.term_covariances()]
    if len(covs) != len(layout):
        raise NotImplementedError("Kenward-Roger: the fit's random terms do not match its design")
    # D: block-diagonal covariance of the random effects (level-major within a term)
    D = np.zeros((m, m))
    for (off, L, q), C in zip(layout, covs):
        for lev in range(L):
            a = off + lev * q
            D[a:a + q, a:a + q] = C
    K = D @ np.linalg.solve(s2 * np.eye(m) + S @ D, np.eye(m))
    K = 0.5 * (K + K.T)
    R = np.eye(m) - S @ K
    # Z'V^-k Z, Z'V^-k X, X'V^-k X (times sigma^2k), k = 1, 2, 3
    M1 = R @ S
    C1 = R @ ZX
    C2 = R @ C1
    KZX = K @ ZX
    XP1X = XX - ZX.T @ KZX
    XP2X = XP1X - C1.T @ KZX
    XP3X = XP2X - C2.T @ KZX
    M2 = R @ M1
    trP2 = n - 2 * np.trace(K @ S) + np.sum((K @ S) * (K @ S).T)
    # scale back to V^-1 = P / sigma^2
    M1, M2 = M1 / s2, M2 / s2 ** 2
    C1, C2 = C1 / s2, C2 / s2 ** 2
    XP2X, XP3X = XP2X / s2 ** 2, XP3X / s2 ** 3
    trV2 = trP2 / s2 ** 2
    # the covariance parameters: (term, i, j) for the lower triangle, then the residual
    params = [(k, i, j) for k, (_, _, q) in enumerate(layout) for j in range(q) for i in range(j, q)]
    params = [(k, i, j) for (k, i, j) in sorted(params, key=lambda x: (x[0], x[2], x[1]))]
    ng = len(params) + 1

    def e_apply(r, A):
        """(I ⊗ E_r) A for the r-th random parameter: rows of A rearranged."""
        k, i, j = params[r]
        off, L, q = layout[k]
        out = np.zeros_like(A)
        ri = off + np.arange(L) * q + i
        rj = off + np.arange(L) * q + j
        out[ri] += A[rj]
        if i != j:
            out[rj] += A[ri]
        return out

    EC = [e_apply(r, C1) for r in range(ng - 1)]  # E_r C
    EM = [e_apply(r, M1) for r in range(ng - 1)]  # E_r M
    P = [-(C1.T @ EC[r]) for r in range(ng - 1)] + [-XP2X]
    P = [0.5 * (x + x.T) for x in P]
    Q = {}
    Kt = np.zeros((ng, ng))
    for r in range(ng):
        for s in range(r, ng):
            if s < ng - 1:  # both random
                Q[r, s] = EC[r].T @ (M1 @ EC[s])
                Kt[r, s] = np.sum(EM[r] * EM[s].T)
            elif r < ng - 1:  # random, residual
                Q[r, s] = EC[r].T @ C2
                Kt[r, s] = np.trace(e_apply(r, M2))
            else:
                Q[r, s] = XP3X
                Kt[r, s] = trV2
            Kt[s, r] = Kt[r, s]
    phi = np.array(fit.vcov, dtype=np.float64)
    IE = np.zeros((ng, ng))
    for r in range(ng):
        PhiPr = phi @ P[r]
        for s in range(r, ng):
            IE[r, s] = IE[s, r] = (Kt[r, s] - 2 * np.sum(phi * Q[r, s])
                                   + np.sum(PhiPr * (P[s] @ phi)))
    ev = np.linalg.eigvalsh(IE)
    condi = float(np.min(np.abs(ev)))
    W = 2 * (np.linalg.inv(IE) if condi > 1e-10 else np.linalg.pinv(IE))
    W = 0.5 * (W + W.T)
    U = np.zeros((p, p))
    for r in range(ng - 1):
        for s in range(r + 1, ng):
            U += W[r, s] * (Q[r, s] - P[r] @ phi @ P[s])
    U = U + U.T
    for r in range(ng):
        U += W[r, r] * (Q[r, r] - P[r] @ phi @ P[r])
    phi_adj = phi + 2 * phi @ U @ phi
    phi_adj = 0.5 * (phi_adj + phi_adj.T)
    return KRState(phi, phi_adj, tuple(P), W, condi)


def vcov_kenward_roger(fit, max_random_effects: int | None = None) -> pd.DataFrame:
    """pbkrtest's ``vcovAdj(fit)``: the Kenward-Roger adjusted covariance of beta."""
    st = kr_state(fit, max_random_effects)
    names = list(fit.fixed_names)
    return pd.DataFrame(st.phi_adj, index=names, columns=names)


def _div0(x, y, tol=1e-14):
    return 0.0 if abs(x) < tol and abs(y) < tol else x / y


def kr_ddf(st: KRState, L) -> tuple:
    """pbkrtest's ``.KR_adjust``: (q, ddf, F scaling) of the hypothesis L beta = 0."""
    L = np.atleast_2d(np.asarray(L, dtype=np.float64))
    q = int(np.linalg.matrix_rank(L))
    phi = st.phi
    Theta = L.T @ np.linalg.solve(L @ phi @ L.T, L)  # pbkrtest 0.5.2: the unadjusted Phi
    TP = Theta @ phi
    ng = len(st.P)
    u = [TP @ st.P[r] @ phi for r in range(ng)]
    tr = [float(np.trace(x)) for x in u]
    A1 = A2 = 0.0
    for r in range(ng):
        for s in range(r, ng):
            e = 1.0 if r == s else 2.0
            A1 += e * st.W[r, s] * tr[r] * tr[s]
            A2 += e * st.W[r, s] * float(np.sum(u[r] * u[s].T))
    B = (A1 + 6 * A2) / (2 * q)
    g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
    den = 3 * q + 2 * (1 - g)
    c1, c2, c3 = g / den, (q - g) / den, (q + 2 - g) / den
    V0 = 1 + c1 * B
    V1 = 1 - c2 * B
    V2 = 1 - c3 * B
    V0 = 0.0 if abs(V0) < 1e-10 else V0
    rho = (1 / q) * _div0(1 - A2 / q, V1) ** 2 * V0 / V2
    df2 = 4 + (q + 2) / (q * rho - 1)
    scaling = 1.0 if abs(df2 - 2) < 1e-2 else df2 * (1 - A2 / q) / (df2 - 2)
    return q, float(df2), float(scaling)


def contest1d_kr(fit, L, level: float | None = None, max_random_effects: int | None = None) -> dict:
    """lmerTest's contest1D with ddf = "Kenward-Roger": estimate, SE from the adjusted
    covariance, KR df, t, p (and lower/upper with `level`)."""
    from scipy import stats

    st = kr_state(fit, max_random_effects)
    L = np.asarray(L, dtype=np.float64).ravel()
    est = float(L @ np.asarray(fit.beta))
    se = math.sqrt(float(L @ st.phi_adj @ L))
    _, df, _ = kr_ddf(st, L[None, :])
    t = est / se if se > 0 else np.nan
    row = {"estimate": est, "std_error": se, "df": df, "t_value": t,
           "p_value": 2 * stats.t.sf(abs(t), df)}
    if level is not None:
        qt = stats.t.ppf(0.5 + level / 2, df)
        row["lower"], row["upper"] = est - qt * se, est + qt * se
    return row


def contest_md_kr(fit, L, max_random_effects: int | None = None) -> dict:
    """lmerTest's contestMD with ddf = "Kenward-Roger" (pbkrtest's unscaled F, KR's df): the
    row of an anova table (sum_sq, mean_sq, num_df, den_df, F_value, p_value)."""
    from scipy import stats

    L = np.atleast_2d(np.asarray(L, dtype=np.float64))
    if L.shape[0] == 0:
        return {"sum_sq": np.nan, "mean_sq": np.nan, "num_df": 0, "den_df": np.nan,
                "F_value": np.nan, "p_value": np.nan}
    st = kr_state(fit, max_random_effects)
    # full-rank rows, as lmerTest's contestMD keeps them (eigenvectors of L Var L')
    VL = L @ st.phi @ L.T
    d, Pm = np.linalg.eigh(0.5 * (VL + VL.T))
    d, Pm = d[::-1], Pm[:, ::-1]
    keep = d > max(math.sqrt(np.finfo(float).eps) * d[0], 0.0)
    L = (Pm.T @ L)[keep]
    q, df, scaling = kr_ddf(st, L)
    Lb = L @ np.asarray(fit.beta)
    FU = float(Lb @ np.linalg.solve(L @ st.phi_adj @ L.T, Lb)) / q
    ms = FU * float(fit.sigma) ** 2  # lmerTest's mk_Ftable: Mean Sq from the unscaled F
    F = FU * scaling
    return {"sum_sq": ms * q, "mean_sq": ms, "num_df": q, "den_df": df, "F_value": F,
            "p_value": float(stats.f.sf(F, q, df))}


KR_LABEL = "Kenward-Roger's method (pbkrtest)"


def fixed_effects_test_kr(fit, level: float | None = None) -> pd.DataFrame:
    """Per-coefficient t tests with Kenward-Roger SEs and df (lmerTest's summary(fit, ddf =
    "Kenward-Roger"))."""
    p = len(fit.beta)
    rows = [contest1d_kr(fit, np.eye(p)[j], level) for j in range(p)]
    out = pd.DataFrame(rows, index=pd.Index(fit.fixed_names, name="term")).reset_index()
    out.attrs["ddf_method"] = KR_LABEL
    return out
