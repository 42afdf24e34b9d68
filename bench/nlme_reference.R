# Reference fits by nlme (residual correlation / variance structures) for
# bigmixed's tests.
#
#   Rscript bench/nlme_reference.R SPEC.json
#
# SPEC.json is written by bench/make_nlme_references.py: a JSON array of jobs,
# each with "kind" one of
#   "lme":   {"name", "data", "data_file", "fixed", "random", "correlation",
#             "weights", "reml", "factors", "out", "gap_check"}
#            correlation / weights are R expressions as text (or null), e.g.
#            "corAR1(form = ~ visit | patient)", "varIdent(form = ~ 1 | arm)".
#            One lme() fit with nlme's default control ("default") and one with
#            tight tolerances ("tight"); see bench/references_nlme/README.md.
#   "lrt":   {"name", "data", "data_file", "fixed", "random", "correlation",
#             "weights", "factors", "out"}: anova(m0, m1) by REML, m0 without the
#             correlation / weights, m1 with them.
#   "plain": {"name", "data", "data_file", "fixed", "random", "lmer_formula",
#             "factors", "out"}: the same random-intercept model by nlme::lme and
#             lme4::lmer, by REML and ML, and log|X'X| / 2.
# Level order of every factor: sorted in the C locale.

invisible(Sys.setlocale("LC_COLLATE", "C"))
suppressPackageStartupMessages({
    library(nlme)
    library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 1L) stop("usage: Rscript nlme_reference.R SPEC.json")
specs <- fromJSON(args[[1L]], simplifyVector = FALSE)

## ---- helpers -----------------------------------------------------------------

named <- function(x) {
    out <- as.list(unname(x))
    names(out) <- names(x)
    out
}

rows <- function(m) {
    m <- as.matrix(m)
    lapply(seq_len(nrow(m)), function(i) I(as.numeric(m[i, ])))
}

read_data <- function(spec) {
    d <- read.csv(spec$data, stringsAsFactors = FALSE)
    for (f in unlist(spec$factors)) d[[f]] <- factor(as.character(d[[f]]))
    d
}

with_warnings <- function(expr) {
    w <- character(0)
    msg <- character(0)
    val <- withCallingHandlers(expr,
        warning = function(cond) {
            w <<- c(w, conditionMessage(cond))
            invokeRestart("muffleWarning")
        },
        message = function(cond) {
            msg <<- c(msg, sub("\n$", "", conditionMessage(cond)))
            invokeRestart("muffleMessage")
        })
    list(value = val, warnings = w, messages = msg)
}

parse_or_null <- function(txt) {
    if (is.null(txt)) NULL else eval(parse(text = txt))
}

default_control <- function() lmeControl()
# The tight control.  msTol is used by nlme only with opt = "optim"; with nlminb
# (the default) nlminb's relative tolerance is rel.tol (nlminb's default 1e-10),
# passed through lmeControl's "...".  With rel.tol = 1e-12 nlminb usually ends
# with "singular convergence (7)" (no further progress possible in double
# precision), which lme() turns into an error; the second attempt therefore
# keeps the object (returnObject = TRUE) and records nlminb's message.
tight_controls <- list(
    list(text = paste0("lmeControl(maxIter = 1000, msMaxIter = 1000, msMaxEval = 10000, ",
                       "msTol = 1e-12, tolerance = 1e-12, rel.tol = 1e-12, opt = \"nlminb\")",
                       "  [niterEM: default 25]"),
         control = function() lmeControl(maxIter = 1000, msMaxIter = 1000, msMaxEval = 10000,
                                         msTol = 1e-12, tolerance = 1e-12, rel.tol = 1e-12,
                                         opt = "nlminb")),
    list(text = paste0("lmeControl(maxIter = 1000, msMaxIter = 1000, msMaxEval = 10000, ",
                       "msTol = 1e-12, tolerance = 1e-12, rel.tol = 1e-12, opt = \"nlminb\", ",
                       "returnObject = TRUE)  [niterEM: default 25]"),
         control = function() lmeControl(maxIter = 1000, msMaxIter = 1000, msMaxEval = 10000,
                                         msTol = 1e-12, tolerance = 1e-12, rel.tol = 1e-12,
                                         opt = "nlminb", returnObject = TRUE)))

# The tight fit: the first of tight_controls that runs without error and whose
# logLik is no worse than the default fit's (up to 1e-9); else the default fit.
fit_tight <- function(spec, d, reml, f_default, correlation = TRUE, weights = TRUE) {
    attempts <- list()
    for (tc in tight_controls) {
        r <- tryCatch(fit_lme(spec, d, reml, tc$control(), correlation, weights),
                      error = function(e) list(error = conditionMessage(e)))
        if (!is.null(r$error)) {
            attempts[[length(attempts) + 1L]] <- list(control = tc$text, error = r$error)
            next
        }
        ll <- as.numeric(logLik(r$fit))
        if (ll < as.numeric(logLik(f_default$fit)) - 1e-9) {
            attempts[[length(attempts) + 1L]] <- list(
                control = tc$text, error = sprintf("logLik %.12g below the default fit's", ll))
            next
        }
        attempts[[length(attempts) + 1L]] <- list(control = tc$text, error = NULL,
                                                 warnings = as.list(unique(r$warnings)))
        return(list(f = r, control = tc$text, fallback_to_default = FALSE, attempts = attempts))
    }
    list(f = f_default, control = "lmeControl()  [fallback: every tight attempt failed]",
         fallback_to_default = TRUE, attempts = attempts)
}

# Fit lme() and count nlminb's iterations from its trace (msVerbose = TRUE;
# the trace is captured, not printed).  Returns list(fit, warnings, iters, secs).
fit_lme <- function(spec, d, reml, control, correlation = TRUE, weights = TRUE) {
    control$msVerbose <- TRUE
    args <- list(fixed = as.formula(spec$fixed), data = d,
                 random = as.formula(spec$random),
                 method = if (reml) "REML" else "ML", control = control)
    if (correlation && !is.null(spec$correlation))
        args$correlation <- parse_or_null(spec$correlation)
    if (weights && !is.null(spec$weights))
        args$weights <- parse_or_null(spec$weights)
    t0 <- proc.time()[["elapsed"]]
    out <- NULL
    trace <- capture.output(out <- with_warnings(do.call(lme, args)))
    secs <- proc.time()[["elapsed"]] - t0
    it <- suppressWarnings(as.integer(sub("^ *([0-9]+):.*$", "\\1",
                                          grep("^ *[0-9]+:", trace, value = TRUE))))
    # one nlminb run per outer iteration; the count restarts at 0 in each
    run_id <- cumsum(it == 0L)
    list(fit = out$value, warnings = out$warnings, messages = out$messages,
         nlminb_iterations = if (length(it)) sum(tapply(it, run_id, max)) else NA,
         nlminb_runs = max(c(0L, run_id)), secs = secs)
}

random_json <- function(fit) {
    rs <- fit$modelStruct$reStruct
    s2 <- fit$sigma^2
    out <- list()
    for (g in names(rs)) {        # innermost level first, as nlme keeps them
        cv <- as.matrix(rs[[g]]) * s2
        sd <- sqrt(diag(cv))
        cr <- cv / outer(sd, sd)
        out[[g]] <- list(names = I(colnames(cv)), sd = named(setNames(sd, colnames(cv))),
                         corr = rows(cr), cov = rows(cv))
    }
    out
}

varcorr_json <- function(fit) {
    vc <- VarCorr(fit)
    list(rownames = I(rownames(vc)),
         variance = I(suppressWarnings(as.numeric(vc[, "Variance"]))),
         stddev = I(suppressWarnings(as.numeric(vc[, "StdDev"]))),
         table = lapply(seq_len(nrow(vc)), function(i) I(unname(vc[i, ]))),
         columns = I(colnames(vc)))
}

ranef_json <- function(fit) {
    re <- ranef(fit)
    if (is.data.frame(re)) {
        re <- list(re)
        names(re) <- names(fit$modelStruct$reStruct)[1]
    }
    out <- list()
    for (g in names(re)) {
        r <- re[[g]]
        out[[g]] <- list(levels = I(rownames(r)), columns = I(colnames(r)), values = rows(r))
    }
    out
}

cor_json <- function(fit) {
    cs <- fit$modelStruct$corStruct
    if (is.null(cs)) return(NULL)
    list(class = class(cs)[1],
         formula = paste(deparse(formula(cs)), collapse = ""),
         natural = named(coef(cs, unconstrained = FALSE)),
         unconstrained = named(coef(cs, unconstrained = TRUE)))
}

var_json <- function(fit) {
    vs <- fit$modelStruct$varStruct
    if (is.null(vs)) return(NULL)
    gn <- attr(vs, "groupNames")
    list(class = class(vs)[1],
         formula = paste(deparse(formula(vs)), collapse = ""),
         groupNames = I(gn),
         reference = gn[1],
         natural = named(coef(vs, unconstrained = FALSE)),
         all = named(coef(vs, unconstrained = FALSE, allCoef = TRUE)),
         unconstrained = named(coef(vs, unconstrained = TRUE)),
         sd_by_level = named(fit$sigma * coef(vs, unconstrained = FALSE, allCoef = TRUE)))
}

apvar_json <- function(fit) {
    a <- fit$apVar
    if (is.character(a)) return(list(error = a))
    if (is.null(a)) return(NULL)
    list(names = I(rownames(a)), matrix = rows(a), Pars = named(attr(a, "Pars")),
         natural = attr(a, "natural"))
}

core_json <- function(f) {
    fit <- f$fit
    v <- as.matrix(vcov(fit))
    ll <- logLik(fit)
    list(logLik = as.numeric(ll),
         m2logLik = -2 * as.numeric(ll),
         df = attr(ll, "df"),
         AIC = AIC(fit),
         BIC = BIC(fit),
         sigma = fit$sigma,
         beta = named(fixef(fit)),
         fixed_names = I(names(fixef(fit))),
         se = named(sqrt(diag(v))),
         vcov = rows(v),
         random_effects = random_json(fit),
         varcorr = varcorr_json(fit),
         corStruct = cor_json(fit),
         varStruct = var_json(fit),
         ranef = ranef_json(fit),
         numIter = fit$numIter,
         nlminb_iterations = f$nlminb_iterations,
         nlminb_runs = f$nlminb_runs,
         apVar = apvar_json(fit),
         fit_warnings = as.list(unique(f$warnings)))
}

## ---- an independent dense evaluation of the (restricted) log-likelihood -------
#
# For the models here (one random-effects level), the marginal covariance of
# group g is V_g = sigma^2 W_g,  W_g = Z_g D* Z_g' + S_g C_g S_g  with D* = D / sigma^2,
# S_g = diag(varIdent ratio of each row's stratum) and C_g the correlation
# (phi^|covariate difference| within the correlation group for corAR1 / corARMA(1)
# / corCAR1; rho off the diagonal within the correlation group for corCompSymm).
# beta and sigma are profiled out:
#   ML:   -1/2 [ N (log(2 pi s2) + 1) + log|W| ],                    s2 = r'W^-1 r / N
#   REML: -1/2 [ (N-p) (log(2 pi s2) + 1) + log|W| + log|X'W^-1 X| ], s2 = r'W^-1 r / (N-p)
# (no log|X'X| term).  Its value at nlme's estimates must equal nlme's logLik; its
# gradient there shows how well nlme converged; Newton steps on it (numDeriv
# derivatives) give the "polished" estimates.
#
# Parameters (p): log(sd_k / sigma) of the random effects, atanh of their
# correlations (upper triangle, by rows), the correlation parameter in natural
# scale (phi or rho), log of the varIdent ratios of the non-reference strata.

dense_setup <- function(fit, spec, d) {
    rs <- fit$modelStruct$reStruct
    if (length(rs) != 1L) stop("dense check: one random-effects level only")
    g <- names(rs)[1]
    d <- d[do.call(order, list(d[[g]])), , drop = FALSE]
    X <- model.matrix(as.formula(spec$fixed), d)
    y <- model.response(model.frame(as.formula(spec$fixed), d))
    Z <- model.matrix(formula(rs[[1]]), d)
    cs <- fit$modelStruct$corStruct
    vs <- fit$modelStruct$varStruct
    ctype <- if (is.null(cs)) "none" else class(cs)[1]
    if (ctype %in% c("corAR1", "corARMA", "corCAR1")) {
        if (ctype == "corARMA" && !(attr(cs, "p") == 1 && attr(cs, "q") == 0))
            stop("dense check: only ARMA(1, 0)")
        cvar <- all.vars(getCovariateFormula(formula(cs)))
        cov <- if (length(cvar)) d[[cvar]] else ave(seq_len(nrow(d)), d[[g]], FUN = seq_along)
    } else cov <- rep(0, nrow(d))
    cgv <- if (ctype == "none") g else all.vars(getGroupsFormula(formula(cs)))
    cgrp <- interaction(d[cgv], drop = TRUE)
    if (!is.null(vs)) {
        gn <- attr(vs, "groupNames")
        vvar <- all.vars(getGroupsFormula(formula(vs)))
        strat <- match(as.character(interaction(d[vvar], sep = "*", drop = TRUE)), gn)
    } else {
        gn <- character(0)
        strat <- rep(1L, nrow(d))
    }
    blocks <- lapply(split(seq_len(nrow(d)), d[[g]], drop = TRUE), function(i) {
        list(X = X[i, , drop = FALSE], y = y[i], Z = Z[i, , drop = FALSE],
             lag = abs(outer(cov[i], cov[i], "-")),
             same = outer(as.integer(cgrp[i]), as.integer(cgrp[i]), "=="),
             strat = strat[i])
    })
    q <- ncol(Z)
    pn <- c(paste0("log_sd_over_sigma.", colnames(Z)))
    if (q > 1) for (a in 1:(q - 1)) for (b in (a + 1):q)
        pn <- c(pn, paste0("atanh_corr.", colnames(Z)[a], ".", colnames(Z)[b]))
    if (ctype != "none") pn <- c(pn, paste0("cor.", names(coef(cs, unconstrained = FALSE))))
    if (length(gn) > 1) pn <- c(pn, paste0("log_ratio.", gn[-1]))
    list(blocks = blocks, q = q, ctype = ctype, gn = gn, N = nrow(X), p = ncol(X),
         pnames = pn, znames = colnames(Z), xnames = colnames(X))
}

dense_params_from_fit <- function(S, fit) {
    D <- as.matrix(fit$modelStruct$reStruct[[1]])   # D / sigma^2
    sd <- sqrt(diag(D))
    p <- log(sd)
    q <- S$q
    if (q > 1) for (a in 1:(q - 1)) for (b in (a + 1):q) p <- c(p, atanh(D[a, b] / (sd[a] * sd[b])))
    if (S$ctype != "none") p <- c(p, coef(fit$modelStruct$corStruct, unconstrained = FALSE)[[1]])
    if (length(S$gn) > 1) {
        r <- coef(fit$modelStruct$varStruct, unconstrained = FALSE, allCoef = TRUE)
        p <- c(p, log(unname(r[S$gn[-1]])))
    }
    setNames(p, S$pnames)
}

dense_eval <- function(S, p, reml, full = FALSE) {
    q <- S$q
    sd <- exp(p[1:q])
    R <- diag(q)
    k <- q
    if (q > 1) for (a in 1:(q - 1)) for (b in (a + 1):q) {
        k <- k + 1
        R[a, b] <- R[b, a] <- tanh(p[k])
    }
    Dst <- outer(sd, sd) * R
    cp <- if (S$ctype != "none") { k <- k + 1; p[k] } else NA
    ratio <- 1
    if (length(S$gn) > 1) ratio <- c(1, exp(p[(k + 1):length(p)]))
    ldW <- 0
    XtWX <- 0
    XtWy <- 0
    ytWy <- 0
    for (b in S$blocks) {
        C <- switch(S$ctype,
                    none = diag(length(b$y)),
                    corCompSymm = { m <- b$same * cp; diag(m) <- 1; m },
                    b$same * cp^b$lag)
        s <- if (length(ratio) > 1) ratio[b$strat] else rep(1, length(b$y))
        W <- b$Z %*% Dst %*% t(b$Z) + (s %o% s) * C
        U <- chol(W)
        ldW <- ldW + 2 * sum(log(diag(U)))
        Xs <- backsolve(U, b$X, transpose = TRUE)
        ys <- backsolve(U, b$y, transpose = TRUE)
        XtWX <- XtWX + crossprod(Xs)
        XtWy <- XtWy + crossprod(Xs, ys)
        ytWy <- ytWy + sum(ys^2)
    }
    L <- chol(XtWX)
    beta <- backsolve(L, backsolve(L, XtWy, transpose = TRUE))
    rss <- ytWy - sum(XtWy * beta)
    N <- S$N
    pp <- S$p
    nu <- if (reml) N - pp else N
    s2 <- rss / nu
    ll <- -0.5 * (nu * (log(2 * pi * s2) + 1) + ldW + if (reml) 2 * sum(log(diag(L))) else 0)
    if (!full) return(ll)
    vc <- s2 * chol2inv(L)
    sigma <- sqrt(s2)
    list(logLik = ll, sigma = sigma, beta = setNames(as.numeric(beta), S$xnames),
         se = setNames(sqrt(diag(vc)), S$xnames), vcov = vc,
         re_sd = setNames(sigma * sd, S$znames), re_corr = R,
         cor = cp, ratios = if (length(S$gn) > 1) setNames(ratio, S$gn) else NULL)
}

dense_check <- function(spec, d, reml, f_default, f_tight) {
    S <- dense_setup(f_tight$fit, spec, d)
    fn <- function(p) dense_eval(S, p, reml)
    p_def <- dense_params_from_fit(S, f_default$fit)
    p0 <- dense_params_from_fit(S, f_tight$fit)
    ll0 <- fn(p0)
    g0 <- numDeriv::grad(fn, p0)
    gdef <- numDeriv::grad(fn, p_def)
    # Newton steps from nlme's tight estimates
    p <- p0
    llb <- ll0
    g <- g0
    log <- list(list(step = 0L, logLik = ll0, grad_maxabs = max(abs(g0))))
    for (it in 1:8) {
        H <- numDeriv::hessian(fn, p)
        step <- tryCatch(solve(H, g), error = function(e) NULL)
        if (is.null(step) || any(!is.finite(step))) break
        cand <- p - step
        llc <- tryCatch(fn(cand), error = function(e) -Inf)
        if (!is.finite(llc)) break
        gc <- numDeriv::grad(fn, cand)
        log[[length(log) + 1L]] <- list(step = it, logLik = llc, grad_maxabs = max(abs(gc)),
                                        max_abs_change = max(abs(cand - p)))
        if (!(llc >= llb - 1e-12 * abs(llb)) || max(abs(gc)) > max(abs(g))) break
        p <- cand
        llb <- llc
        g <- gc
        if (max(abs(step)) < 1e-12) break
    }
    e <- dense_eval(S, p, reml, full = TRUE)
    list(
        note = paste("independent dense (restricted) log-likelihood, beta and sigma profiled;",
                     "see the comment in bench/nlme_reference.R"),
        param_names = I(S$pnames),
        params_nlme_default = named(p_def),
        params_nlme_tight = named(p0),
        logLik_dense_at_nlme_tight = ll0,
        logLik_nlme_tight = as.numeric(logLik(f_tight$fit)),
        logLik_dense_minus_nlme = ll0 - as.numeric(logLik(f_tight$fit)),
        grad_at_nlme_default = named(setNames(gdef, S$pnames)),
        grad_at_nlme_tight = named(setNames(g0, S$pnames)),
        polished = list(
            params = named(setNames(p, S$pnames)),
            logLik = e$logLik,
            logLik_gain_over_nlme_tight = e$logLik - ll0,
            grad = named(setNames(g, S$pnames)),
            max_abs_change_from_nlme_tight = max(abs(p - p0)),
            sigma = e$sigma,
            beta = named(e$beta),
            se = named(e$se),
            vcov = rows(e$vcov),
            re_sd = named(e$re_sd),
            re_corr = rows(e$re_corr),
            cor = if (is.na(e$cor)) NULL else e$cor,
            varident_ratios = if (is.null(e$ratios)) NULL else named(e$ratios),
            newton_log = log))
}

# corAR1 on an integer covariate with gaps: compare nlme's correlation matrix of
# a patient whose visits have a gap with phi^|visit difference| and with
# phi^|position difference|; also refit with corCAR1(~ visit | g) and with
# corAR1(~ 1 | g) (positions) and compare log-likelihoods.
gap_check <- function(spec, d, reml, fit) {
    cs <- fit$modelStruct$corStruct
    g <- all.vars(getGroupsFormula(formula(cs)))[1]
    cv <- all.vars(getCovariateFormula(formula(cs)))[1]
    by_g <- split(d[[cv]], d[[g]])
    k <- names(by_g)[which(vapply(by_g, function(v) any(diff(sort(v)) > 1), TRUE))[1]]
    cm <- corMatrix(cs)[[k]]
    phi <- coef(cs, unconstrained = FALSE)[[1]]
    vis <- sort(by_g[[k]])
    by_visit <- phi^abs(outer(vis, vis, "-"))
    pos <- seq_along(vis)
    by_pos <- phi^abs(outer(pos, pos, "-"))
    alt <- function(corr_txt) {
        s <- spec
        s$correlation <- corr_txt
        r <- tryCatch(fit_lme(s, d, reml, default_control()), error = function(e) NULL)
        if (is.null(r)) return(list(error = TRUE))
        list(correlation = corr_txt, logLik = as.numeric(logLik(r$fit)),
             natural = named(coef(r$fit$modelStruct$corStruct, unconstrained = FALSE)))
    }
    list(
        corStruct_class = class(cs)[1],
        patients_with_gaps = sum(vapply(by_g, function(v) any(diff(sort(v)) > 1), TRUE)),
        example_group = k,
        example_visits = I(vis),
        example_corMatrix = rows(cm),
        max_abs_diff_phi_pow_visit_difference = max(abs(cm - by_visit)),
        max_abs_diff_phi_pow_position_difference = max(abs(cm - by_pos)),
        uses = if (max(abs(cm - by_visit)) < 1e-10) "visit difference" else
               if (max(abs(cm - by_pos)) < 1e-10) "position difference" else "neither",
        logLik = as.numeric(logLik(fit)),
        car1_on_visit = alt(sub("corAR1", "corCAR1", spec$correlation)),
        ar1_on_position = alt(sprintf("corAR1(form = ~ 1 | %s)", g))
    )
}

run_lme <- function(spec) {
    d <- read_data(spec)
    reml <- isTRUE(spec$reml)
    f <- fit_lme(spec, d, reml, default_control())
    fit <- f$fit
    res <- list(
        kind = "lme",
        name = spec$name,
        method = if (reml) "REML" else "ML",
        reml = reml,
        data = spec$data_file,
        fixed = spec$fixed,
        random = spec$random,
        correlation = spec$correlation,
        weights = spec$weights,
        call = paste0("lme(", spec$fixed, ", random = ", spec$random,
                      if (!is.null(spec$correlation)) paste0(", correlation = ", spec$correlation) else "",
                      if (!is.null(spec$weights)) paste0(", weights = ", spec$weights) else "",
                      ", method = \"", if (reml) "REML" else "ML", "\")"),
        nobs = fit$dims$N,
        ngrps = named(fit$dims$ngrps[seq_len(fit$dims$Q)]),
        factor_levels = lapply(Filter(is.factor, d), function(x) I(levels(x)))
    )
    res <- c(res, core_json(f))
    res$control <- "lmeControl()  (nlme defaults: nlminb, msMaxIter 50, msMaxEval 200, rel.tol 1e-10, niterEM 25)"

    tw <- fit_tight(spec, d, reml, f)
    tight <- core_json(tw$f)
    tight$control <- tw$control
    tight$fallback_to_default <- tw$fallback_to_default
    tight$attempts <- tw$attempts
    res$tight <- tight
    res$logLik_gap_tight_minus_default <- tight$logLik - res$logLik
    mad <- function(a, b) if (is.null(a)) NULL else max(abs(unlist(a) - unlist(b)))
    res$max_abs_diff_tight_vs_default <- list(
        beta = mad(tight$beta, res$beta), se = mad(tight$se, res$se),
        sigma = abs(tight$sigma - res$sigma),
        random_sd = mad(lapply(tight$random_effects, `[[`, "sd"), lapply(res$random_effects, `[[`, "sd")),
        corStruct = mad(tight$corStruct$natural, res$corStruct$natural),
        varStruct = mad(tight$varStruct$natural, res$varStruct$natural))
    res$dense_check <- tryCatch(dense_check(spec, d, reml, f, tw$f),
                                error = function(e) list(error = conditionMessage(e)))
    if (isTRUE(spec$gap_check)) res$gap_check <- gap_check(spec, d, reml, fit)
    if (isTRUE(spec$order_check)) {
        # the same data with the rows in reverse order: varIdent's reference stratum
        # is the first one met after lme's (stable) sort by group
        fr <- fit_lme(spec, d[rev(seq_len(nrow(d))), , drop = FALSE], reml, default_control())$fit
        vr <- var_json(fr)
        res$order_check <- list(
            rows = "reversed", reference = vr$reference, groupNames = vr$groupNames,
            all = vr$all, sigma = fr$sigma, sd_by_level = vr$sd_by_level,
            logLik = as.numeric(logLik(fr)),
            logLik_minus_sorted = as.numeric(logLik(fr)) - res$logLik)
    }
    res
}

anova_json <- function(a) {
    a <- as.data.frame(a)
    list(rows = I(rownames(a)), df = I(as.numeric(a$df)), AIC = I(as.numeric(a$AIC)),
         BIC = I(as.numeric(a$BIC)), logLik = I(as.numeric(a$logLik)),
         L.Ratio = as.numeric(a$L.Ratio[2]), df_diff = as.numeric(a$df[2] - a$df[1]),
         p.value = as.numeric(a[["p-value"]][2]),
         test = as.character(a$Test[2]))
}

run_lrt <- function(spec) {
    d <- read_data(spec)
    out <- list(kind = "lrt", name = spec$name, method = "REML", data = spec$data_file,
                fixed = spec$fixed, random = spec$random,
                correlation = spec$correlation, weights = spec$weights,
                model0 = "lme(fixed, random, method = \"REML\")",
                model1 = "lme(fixed, random, correlation, weights, method = \"REML\")",
                note = "anova(m0, m1): L.Ratio = 2 * (logLik1 - logLik0), p from chi-square with df_diff")
    for (how in c("default", "tight")) {
        r <- tryCatch({
            f0 <- fit_lme(spec, d, TRUE, default_control(), correlation = FALSE, weights = FALSE)
            f1 <- fit_lme(spec, d, TRUE, default_control())
            ctl <- list(m0 = "lmeControl()", m1 = "lmeControl()")
            if (how == "tight") {
                t0 <- fit_tight(spec, d, TRUE, f0, correlation = FALSE, weights = FALSE)
                t1 <- fit_tight(spec, d, TRUE, f1)
                f0 <- t0$f
                f1 <- t1$f
                ctl <- list(m0 = t0$control, m1 = t1$control)
            }
            m0 <- f0$fit
            m1 <- f1$fit
            a <- anova(m0, m1)
            c(anova_json(a), list(logLik0 = as.numeric(logLik(m0)),
                                  logLik1 = as.numeric(logLik(m1)),
                                  df0 = attr(logLik(m0), "df"), df1 = attr(logLik(m1), "df"),
                                  control = ctl))
        }, error = function(e) list(error = conditionMessage(e)))
        out[[how]] <- r
    }
    out
}

run_plain <- function(spec) {
    suppressPackageStartupMessages(library(lme4))
    d <- read_data(spec)
    X <- model.matrix(as.formula(spec$fixed)[-2], d)
    half_logdet_XtX <- as.numeric(determinant(crossprod(X), logarithm = TRUE)$modulus) / 2
    out <- list(kind = "plain", name = spec$name, data = spec$data_file,
                fixed = spec$fixed, random = spec$random,
                lmer_formula = spec$lmer_formula,
                half_logdet_XtX = half_logdet_XtX,
                lme4_version = as.character(packageVersion("lme4")))
    for (reml in c(TRUE, FALSE)) {
        key <- if (reml) "reml" else "ml"
        tw <- fit_tight(spec, d, reml, fit_lme(spec, d, reml, default_control()))
        nl <- tw$f$fit
        lm4 <- lme4::lmer(as.formula(spec$lmer_formula), data = d, REML = reml,
                          control = lmerControl(optimizer = "bobyqa",
                                                optCtrl = list(rhoend = 1e-12, maxfun = 1e5)))
        vc <- as.data.frame(VarCorr(lm4))
        out[[key]] <- list(
            nlme = list(logLik = as.numeric(logLik(nl)), sigma = nl$sigma,
                        beta = named(fixef(nl)),
                        random_sd = named(unlist(lapply(random_json(nl),
                                                        function(r) unlist(r$sd)))),
                        control = tw$control),
            lme4 = list(logLik = as.numeric(logLik(lm4)), sigma = sigma(lm4),
                        beta = named(fixef(lm4)),
                        random_sd = named(setNames(vc$sdcor[vc$grp != "Residual"],
                                                   vc$grp[vc$grp != "Residual"])),
                        objective = if (reml) unname(REMLcrit(lm4)) else unname(deviance(lm4)),
                        control = "bobyqa, rhoend 1e-12"),
            logLik_nlme_minus_lme4 = as.numeric(logLik(nl)) - as.numeric(logLik(lm4)))
    }
    out
}

for (spec in specs) {
    t0 <- proc.time()[["elapsed"]]
    res <- switch(spec$kind,
                  lme = run_lme(spec),
                  lrt = run_lrt(spec),
                  plain = run_plain(spec),
                  stop("unknown kind ", spec$kind))
    res$nlme_version <- as.character(packageVersion("nlme"))
    res$R_version <- R.version.string
    writeLines(toJSON(res, digits = NA, auto_unbox = TRUE, pretty = TRUE,
                      null = "null", na = "null"),
               spec$out)
    extra <- switch(spec$kind,
        lme = sprintf("logLik=%.6f tight=%.6f%s dense-nlme=%.2g polished+%.2g |grad|=%.1e->%.1e",
                      res$logLik, res$tight$logLik,
                      if (isTRUE(res$tight$fallback_to_default)) " (tight FAILED)" else "",
                      res$dense_check$logLik_dense_minus_nlme,
                      res$dense_check$polished$logLik_gain_over_nlme_tight,
                      max(abs(unlist(res$dense_check$grad_at_nlme_tight))),
                      max(abs(unlist(res$dense_check$polished$grad)))),
        lrt = sprintf("L.Ratio=%s", format(res$default$L.Ratio)),
        plain = sprintf("REML nlme-lme4=%.6f  half_logdet_XtX=%.6f",
                        res$reml$logLik_nlme_minus_lme4, res$half_logdet_XtX))
    cat(sprintf("%-22s %-5s %s  (%.1fs)\n", spec$name,
                if (is.null(spec$reml)) "" else if (isTRUE(spec$reml)) "REML" else "ML",
                extra, proc.time()[["elapsed"]] - t0))
}
