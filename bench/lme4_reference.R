# Reference fits by lme4 for bigmixed's tests.
#
#   Rscript bench/lme4_reference.R SPEC.json
#
# SPEC.json is written by bench/make_references.py: a JSON array of fits, each
#   {"name": ..., "data": "<csv path>", "data_file": "<csv file name for the JSON>",
#    "formula": "...", "reml": true|false, "factors": ["doctor", ...],
#    "levels": {"method": ["nir", "hplc"]}, "out": "<json path>"}
# For each one, the model is fitted with lmer() and lme4's default optimizer
# settings, which is what users compare with. It is then fitted again for the
# "precise" result, the truth for tight comparisons. That fit runs nloptwrap and
# bobyqa with tolerances of 1e-12, takes Newton steps on lme4's own deviance from
# the better of the two, and rebuilds the model at the polished theta. Everything
# is written to "out" as JSON (see bench/references/README.md).
#
# Level order of every factor: sorted in the C locale, unless "levels" names it.

invisible(Sys.setlocale("LC_COLLATE", "C"))
suppressPackageStartupMessages({
    library(Matrix)
    library(lme4)
    library(lmerTest)   # for Satterthwaite df; its lmer() is not used for the fits
    library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 1L) stop("usage: Rscript lme4_reference.R SPEC.json")
specs <- fromJSON(args[[1L]], simplifyVector = FALSE)

## ---- helpers -----------------------------------------------------------------

# A named numeric vector as a JSON object (jsonlite drops the names of vectors).
named <- function(x) {
    out <- as.list(unname(x))
    names(out) <- names(x)
    out
}

# A matrix as a list of rows (so that a 1x1 matrix stays [[x]] in JSON).
rows <- function(m) {
    m <- as.matrix(m)
    lapply(seq_len(nrow(m)), function(i) I(as.numeric(m[i, ])))
}

read_data <- function(spec) {
    d <- read.csv(spec$data, stringsAsFactors = TRUE)
    for (f in unlist(spec$factors)) {
        if (!is.factor(d[[f]])) d[[f]] <- factor(as.character(d[[f]]))
    }
    if (!is.null(spec$levels)) {
        for (f in names(spec$levels)) {
            lev <- unlist(spec$levels[[f]])
            stopifnot(all(levels(factor(d[[f]])) %in% lev))
            d[[f]] <- factor(as.character(d[[f]]), levels = lev)
        }
    }
    d
}

ranef_json <- function(m) {
    re <- ranef(m, condVar = TRUE)
    out <- list()
    for (g in names(re)) {
        r <- re[[g]]
        entry <- list(
            levels = I(rownames(r)),
            columns = I(colnames(r)),
            modes = rows(r)
        )
        pv <- attr(r, "postVar")
        p <- ncol(r)
        if (is.list(pv)) {
            # Several terms share this grouping factor, e.g. (x || g): lme4 gives
            # one array per term; put them together block-diagonally.
            sizes <- vapply(pv, function(a) dim(a)[1], 1L)
            stopifnot(sum(sizes) == p)
            full <- array(0, c(p, p, nrow(r)))
            off <- 0L
            for (a in pv) {
                k <- dim(a)[1]
                full[off + seq_len(k), off + seq_len(k), ] <- a
                off <- off + k
            }
            pv <- full
            entry$condvar_block_sizes <- as.list(unname(sizes))
        } else {
            entry$condvar_block_sizes <- list(p)
        }
        # p x p x levels  ->  levels x p x p
        entry$condvar <- lapply(seq_len(dim(pv)[3]), function(k)
            rows(matrix(pv[, , k], p, p)))
        # The same numbers in long form (condsd per level and column).
        long <- as.data.frame(re)
        entry$condsd <- lapply(colnames(r), function(cn) {
            sel <- long[long$term == cn, ]
            I(sel$condsd[match(rownames(r), as.character(sel$grp))])
        })
        names(entry$condsd) <- colnames(r)
        out[[g]] <- entry
    }
    out
}

varcorr_json <- function(m) {
    vc <- as.data.frame(VarCorr(m))
    list(grp = I(as.character(vc$grp)),
         var1 = I(as.character(vc$var1)),
         var2 = I(as.character(vc$var2)),
         vcov = I(vc$vcov),
         sdcor = I(vc$sdcor))
}

objective <- function(m) {
    if (isREML(m)) unname(REMLcrit(m)) else unname(deviance(m))
}

optinfo_json <- function(m) {
    oi <- m@optinfo
    list(optimizer = oi$optimizer,
         control = oi$control,
         feval = oi$feval,
         message = oi$message,
         warnings = lapply(oi$warnings, as.character),
         conv_opt = oi$conv$opt,
         conv_lme4_code = oi$conv$lme4$code,
         conv_lme4_messages = as.list(oi$conv$lme4$messages),
         # the whole list, as lme4 keeps it
         conv = oi$conv)
}

core_json <- function(m) {
    v <- as.matrix(vcov(m))
    list(objective = objective(m),
         theta = named(getME(m, "theta")),
         sigma = sigma(m),
         beta = named(fixef(m)),
         se = named(sqrt(diag(v))),
         vcov = rows(v),
         varcorr = varcorr_json(m),
         logLik = as.numeric(logLik(m)),
         isSingular = isSingular(m),
         fevals = m@optinfo$feval,
         optimizer = m@optinfo$optimizer,
         optinfo = optinfo_json(m))
}

satterthwaite_json <- function(m) {
    mt <- lmerTest::as_lmerModLmerTest(m)
    co <- summary(mt, ddf = "Satterthwaite")$coefficients
    out <- list(
        names = I(rownames(co)),
        estimate = named(setNames(co[, "Estimate"], rownames(co))),
        se = named(setNames(co[, "Std. Error"], rownames(co))),
        df = named(setNames(co[, "df"], rownames(co))),
        t = named(setNames(co[, "t value"], rownames(co))),
        p = named(setNames(co[, "Pr(>|t|)"], rownames(co))))
    # Type III F tests of the model terms (Satterthwaite denominator df).
    an <- tryCatch(anova(mt, type = 3, ddf = "Satterthwaite"), error = function(e) NULL)
    if (!is.null(an) && nrow(an) > 0) {
        out$anova_type3 <- list(
            terms = I(rownames(an)),
            sumsq = I(an[, "Sum Sq"]), meansq = I(an[, "Mean Sq"]),
            numdf = I(an[, "NumDF"]), dendf = I(an[, "DenDF"]),
            F = I(an[, "F value"]), p = I(an[, "Pr(>F)"]))
    }
    out
}

# Capture the warnings and messages of a fit instead of printing them.
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

precise_controls <- list(
    nloptwrap = lmerControl(optimizer = "nloptwrap",
                            optCtrl = list(xtol_abs = 1e-12, ftol_abs = 1e-12,
                                           xtol_rel = 0, ftol_rel = 0,
                                           maxeval = 1e5),
                            calc.derivs = TRUE),
    bobyqa = lmerControl(optimizer = "bobyqa",
                         optCtrl = list(rhobeg = 0.02, rhoend = 1e-12, maxfun = 1e5),
                         calc.derivs = TRUE))

# Newton polish of the optimizers' best theta: gradient and Hessian of lme4's own
# deviance function by Richardson extrapolation (numDeriv), on the coordinates that
# are not held at their lower bound. Derivative-free optimizers stop where the
# objective is flat to ~1e-13 relative, which leaves theta uncertain to ~1e-7;
# a Newton step on an accurate gradient gets it to ~1e-10.
polish_theta <- function(fml, d, reml, theta0) {
    devfun <- lme4::lmer(fml, data = d, REML = reml, devFunOnly = TRUE)
    lower <- environment(devfun)$lower
    th <- unname(theta0)
    f0 <- devfun(th)
    g0 <- numDeriv::grad(devfun, th)
    at_bound <- is.finite(lower) & (th - lower) <= 1e-6 * pmax(1, abs(th)) & g0 >= 0
    th[at_bound] <- lower[at_bound]
    free <- which(!at_bound)
    fb <- devfun(th)
    log <- list(list(step = 0L, objective = fb,
                     grad_free_maxabs = if (length(free)) max(abs(g0[free])) else 0))
    if (length(free)) {
        for (it in 1:6) {
            ff <- function(x) { t <- th; t[free] <- x; devfun(t) }
            g <- numDeriv::grad(ff, th[free])
            H <- numDeriv::hessian(ff, th[free])
            step <- tryCatch(solve(H, g), error = function(e) NULL)
            if (is.null(step) || any(!is.finite(step))) break
            cand <- th
            cand[free] <- th[free] - step
            cand <- pmax(cand, lower)
            fc <- devfun(cand)
            gc <- numDeriv::grad(ff, cand[free])
            log[[length(log) + 1L]] <- list(step = it, objective = fc,
                                            grad_free_maxabs = max(abs(gc)),
                                            max_abs_change = max(abs(cand - th)))
            if (!(fc <= fb + 1e-12 * abs(fb)) || max(abs(gc)) > max(abs(g))) break
            th <- cand
            fb <- fc
            if (max(abs(step)) < 1e-13 * max(1, max(abs(th)))) break
        }
    }
    list(theta = I(th), objective = fb, start_objective = f0,
         held_at_bound = as.list(names(theta0)[at_bound]),
         log = log)
}

fit_one <- function(spec) {
    d <- read_data(spec)
    reml <- isTRUE(spec$reml)
    fml <- as.formula(spec$formula)

    ## default fit
    fw <- with_warnings(lme4::lmer(fml, data = d, REML = reml))
    m <- fw$value

    res <- list(
        name = spec$name,
        formula = spec$formula,
        reml = reml,
        data = spec$data_file,
        factor_levels = lapply(Filter(is.factor, d), function(f) I(levels(f))),
        nobs = nobs(m),
        ngrps = named(ngrps(m)),
        objective = objective(m),
        theta = named(getME(m, "theta")),
        sigma = sigma(m),
        beta = named(fixef(m)),
        fixed_names = I(names(fixef(m))),
        se = named(sqrt(diag(as.matrix(vcov(m))))),
        vcov = rows(as.matrix(vcov(m))),
        varcorr = varcorr_json(m),
        ranef = ranef_json(m),
        logLik = as.numeric(logLik(m)),
        AIC = AIC(m),
        BIC = BIC(m),
        df = attr(logLik(m), "df"),
        isSingular = isSingular(m),
        fevals = m@optinfo$feval,
        optimizer = m@optinfo$optimizer,
        optinfo = optinfo_json(m),
        fit_warnings = as.list(unique(fw$warnings)),
        fit_messages = as.list(unique(fw$messages)),
        lme4_version = as.character(packageVersion("lme4")),
        lmerTest_version = as.character(packageVersion("lmerTest")),
        R_version = R.version.string
    )

    ## precise fits: the one with the lower objective is "precise"
    tries <- list()
    for (k in names(precise_controls)) {
        pw <- tryCatch(with_warnings(lme4::lmer(fml, data = d, REML = reml,
                                                 control = precise_controls[[k]])),
                       error = function(e) NULL)
        if (is.null(pw)) next
        tries[[k]] <- pw
    }
    objs <- vapply(tries, function(t) objective(t$value), 0)
    best <- names(objs)[which.min(objs)]
    pm <- tries[[best]]$value
    how <- best
    pol <- tryCatch(polish_theta(fml, d, reml, getME(pm, "theta")),
                    error = function(e) list(error = conditionMessage(e)))
    # Accept the polished theta when its objective is no worse, up to rounding in
    # the deviance's evaluation (~1e-13 relative).
    tol_obj <- 1e-11 * abs(objective(pm))
    if (is.null(pol$error) && pol$objective <= objective(pm) + tol_obj) {
        th <- pol$theta
        names(th) <- names(getME(pm, "theta"))
        pw <- with_warnings(lme4::lmer(fml, data = d, REML = reml,
                                       control = lmerControl(optimizer = NULL),
                                       start = list(theta = unname(th))))
        if (objective(pw$value) <= objective(pm) + tol_obj) {
            tries$polished <- pw
            pm <- pw$value
            how <- paste0(best, "+newton")
        }
    }
    prec <- core_json(pm)
    prec$control <- how
    prec$polish <- pol
    prec$objectives_by_optimizer <- named(objs)
    prec$theta_by_optimizer <- lapply(tries, function(t) as.list(unname(getME(t$value, "theta"))))
    thm <- do.call(rbind, lapply(tries, function(t) unname(getME(t$value, "theta"))))
    prec$theta_spread_between_optimizers <- max(apply(thm, 2, function(x) diff(range(x))))
    prec$fit_warnings <- as.list(tries[[sub("\\+newton$", "", how)]]$warnings)
    prec$fit_messages <- as.list(tries[[sub("\\+newton$", "", how)]]$messages)
    prec$ranef <- ranef_json(pm)
    res$precise <- prec
    res$objective_gap_default_minus_precise <- res$objective - prec$objective

    ## lmerTest (Satterthwaite) on the default fit and on the precise fit
    res$satterthwaite <- tryCatch(satterthwaite_json(m),
                                  error = function(e) list(error = conditionMessage(e)))
    res$precise$satterthwaite <- tryCatch(satterthwaite_json(pm),
                                          error = function(e) list(error = conditionMessage(e)))
    res
}

for (spec in specs) {
    t0 <- proc.time()[["elapsed"]]
    # Anything not captured inside fit_one (e.g. lme4's notes when lmerTest
    # refits) is kept quiet here and recorded.
    fo <- with_warnings(fit_one(spec))
    res <- fo$value
    res$other_warnings <- as.list(unique(fo$warnings))
    res$other_messages <- as.list(unique(fo$messages))
    writeLines(toJSON(res, digits = NA, auto_unbox = TRUE, pretty = TRUE,
                      null = "null", na = "null"),
               spec$out)
    cat(sprintf("%-28s %s obj=%.6f  precise=%.6f  singular=%s  (%.1fs)\n",
                spec$name, if (isTRUE(spec$reml)) "REML" else "ML  ",
                res$objective, res$precise$objective, res$isSingular,
                proc.time()[["elapsed"]] - t0))
}
