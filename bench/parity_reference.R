# lme4 parity references (lmer verbs) for bigmixed's tests.
#
#   Rscript bench/parity_reference.R SPEC.json
#
# Driven by bench/make_parity_references.py. SPEC.json is an array of fits:
#   {"name": ..., "data": "<csv path>", "data_file": "<path relative to
#    bench/references_parity>", "formula": "...", "reml": true|false,
#    "weights": null|"w", "offset": null|"z", "levels": {"doctor": null, "arm":
#    [...]} (factor columns; null = sorted in the C locale),
#    "update": null | ". ~ . - rbc"  (the fit is update(<formula fit>, this)),
#    "splines": ["ns(age, df = 3)", ...]  (terms whose bases are recorded),
#    "newdata": null | {"rows": [0-based], "new_levels": [{"row", "factor", "level"}],
#                       "set": [{"row", "column", "value"}]},
#    "extras": ["drop1", "ranova", "anova_types", "kenward_roger", "emmeans:arm",
#               "emmeans_by:arm | sex"],
#    "out": "<json path>"}
# Every fit is made with lmer()'s defaults ("default") and again with tight
# tolerances ("tight": the better of nloptwrap and bobyqa at 1e-12); the extras
# run on the default fit. See bench/references_parity/README.md.

invisible(Sys.setlocale("LC_COLLATE", "C"))
suppressPackageStartupMessages({
    library(Matrix)
    library(lme4)
    library(lmerTest)
    library(pbkrtest)
    library(emmeans)
    library(splines)
    library(jsonlite)
})
local({
    a <- commandArgs(trailingOnly = FALSE)
    f <- sub("^--file=", "", a[grep("^--file=", a)])
    source(file.path(dirname(f), "json17.R"))
})

read_data <- function(spec) {
    d <- read.csv(spec$data, stringsAsFactors = FALSE)
    for (f in names(spec$levels)) {
        if (!f %in% names(d)) next
        lev <- spec$levels[[f]]
        x <- as.character(d[[f]])
        d[[f]] <- if (is.null(lev)) factor(x) else factor(x, levels = unlist(lev))
    }
    d
}

tight_controls <- list(
    nloptwrap = lmerControl(optimizer = "nloptwrap",
                            optCtrl = list(xtol_abs = 1e-12, ftol_abs = 1e-12,
                                           xtol_rel = 0, ftol_rel = 0, maxeval = 1e5)),
    bobyqa = lmerControl(optimizer = "bobyqa",
                         optCtrl = list(rhobeg = 0.02, rhoend = 1e-12, maxfun = 1e5)))

make_call <- function(spec, control) {
    cl <- call("lmer", formula = as.formula(spec$formula), data = quote(d),
               REML = isTRUE(spec$reml))
    cl[[1L]] <- quote(lme4::lmer)   # not lmerTest's lmer (attached, it masks lme4's)
    if (!is.null(control)) cl$control <- quote(ctrl)
    if (!is.null(spec$weights)) cl$weights <- parse(text = spec$weights)[[1]]
    if (!is.null(spec$offset)) cl$offset <- parse(text = spec$offset)[[1]]
    cl
}

objective <- function(m) if (isREML(m)) unname(REMLcrit(m)) else unname(deviance(m))

fit_with <- function(spec, d, ctrl) {
    env <- new.env(parent = globalenv())
    env$d <- d
    env$ctrl <- ctrl
    t0 <- proc.time()[["elapsed"]]
    fw <- with_warnings({
        m <- eval(make_call(spec, ctrl), env)
        if (!is.null(spec$update)) {
            m <- update(m, as.formula(spec$update))
        }
        m
    })
    fw$elapsed <- proc.time()[["elapsed"]] - t0
    fw$env <- env
    fw
}

predvars_text <- function(m) {
    pv <- attr(terms(m, fixed.only = FALSE), "predvars")
    if (is.null(pv)) return(NULL)
    paste(deparse(pv, control = c("keepNA", "keepInteger", "digits17"), width.cutoff = 500L),
          collapse = "")
}

core_json <- function(m, fw) {
    v <- as.matrix(vcov(m))
    ll <- logLik(m)
    re <- ranef(m, condVar = TRUE)
    long_all <- as.data.frame(re)
    rr <- lapply(names(re), function(g) {
        r <- re[[g]]
        long <- long_all[long_all$grpvar == g, ]
        list(levels = I(rownames(r)), columns = I(colnames(r)), modes = rows(r),
             condsd = setNames(lapply(colnames(r), function(cn) {
                 sel <- long[long$term == cn, ]
                 I(sel$condsd[match(rownames(r), as.character(sel$grp))])
             }), colnames(r)))
    })
    names(rr) <- names(re)
    vc <- as.data.frame(VarCorr(m))
    list(objective = objective(m),
         REMLcrit = if (isREML(m)) unname(REMLcrit(m)) else NULL,
         deviance_ML = if (!isREML(m)) unname(deviance(m)) else NULL,
         theta = named(getME(m, "theta")), sigma = sigma(m),
         beta = named(fixef(m)), fixed_names = I(names(fixef(m))),
         se = named(sqrt(diag(v))), vcov = rows(v),
         varcorr = list(grp = I(as.character(vc$grp)), var1 = I(as.character(vc$var1)),
                        var2 = I(as.character(vc$var2)), vcov = I(vc$vcov),
                        sdcor = I(vc$sdcor)),
         logLik = as.numeric(ll), df = attr(ll, "df"), AIC = AIC(m), BIC = BIC(m),
         df_resid = df.residual(m), isSingular = isSingular(m),
         optimizer = m@optinfo$optimizer, feval = m@optinfo$feval,
         conv_lme4_messages = as.list(m@optinfo$conv$lme4$messages),
         fit_warnings = as.list(unique(fw$warnings)),
         fit_messages = as.list(unique(fw$messages)),
         elapsed_seconds = fw$elapsed,
         ranef = rr)
}

newdata_json <- function(m, d, nds) {
    if (is.null(nds)) return(NULL)
    nd <- d[unlist(nds$rows) + 1L, , drop = FALSE]
    rownames(nd) <- NULL
    for (s in nds$set) nd[[s$column]][s$row + 1L] <- s$value
    for (nl in nds$new_levels) {
        f <- nl$factor
        nd[[f]] <- factor(as.character(nd[[f]]), levels = c(levels(d[[f]]), nl$level))
        nd[[f]][nl$row + 1L] <- nl$level
    }
    pr <- function(reform) {
        r <- if (is.null(reform)) try_w(predict(m, newdata = nd, re.form = NULL,
                                                  allow.new.levels = TRUE))
             else try_w(predict(m, newdata = nd, re.form = NA))
        if (!is.null(r$error)) return(list(error = r$error))
        list(values = I(unname(as.numeric(r$value))), warnings = as.list(unique(r$warnings)))
    }
    list(rows = I(unlist(nds$rows)), set = nds$set, new_levels = nds$new_levels,
         data = lapply(nd, function(x) if (is.factor(x)) I(as.character(x)) else I(x)),
         re_na = pr(NA), re_null = pr(NULL),
         insample_re_na_first_rows = I(unname(predict(m, re.form = NA)[unlist(nds$rows) + 1L])),
         insample_re_null_first_rows = I(unname(predict(m)[unlist(nds$rows) + 1L])))
}

spline_json <- function(term, d) {
    b <- eval(parse(text = term), d)
    a <- attributes(b)
    list(term = term, class = I(class(b)[1]), knots = I(unname(a$knots)),
         Boundary_knots = I(unname(a$Boundary.knots)), intercept = a$intercept,
         degree = a$degree, ncol = ncol(b))
}

coef_table <- function(co) {
    out <- list(names = I(rownames(co)))
    for (cn in colnames(co)) out[[cn]] <- named(setNames(co[, cn], rownames(co)))
    out
}

emm_json <- function(m, spec_txt, df_method) {
    f <- as.formula(paste("~", spec_txt))
    e <- try_w(emmeans(m, f, lmer.df = df_method))
    if (!is.null(e$error)) return(list(error = e$error))
    s <- summary(e$value)
    p <- try_w(summary(pairs(e$value)))
    pc <- try_w(summary(pairs(e$value), infer = c(TRUE, TRUE)))
    rg <- ref_grid(m, lmer.df = df_method)
    list(lmer_df = df_method,
         emmeans = c(table_json(s), list(messages = I(attr(s, "mesg")),
                                         adjust = attr(s, "adjust"))),
         pairs = if (is.null(p$error)) c(table_json(p$value),
                                         list(messages = I(attr(p$value, "mesg")),
                                              adjust = attr(p$value, "adjust")))
                 else list(error = p$error),
         pairs_with_ci = if (is.null(pc$error)) table_json(pc$value) else list(error = pc$error),
         ref_grid = table_json(rg@grid),
         warnings = as.list(unique(c(e$warnings, p$warnings))))
}

extras_json <- function(m, d, spec) {
    out <- list()
    env <- new.env(parent = globalenv())
    assign("d", d, envir = globalenv())
    for (x in unlist(spec$extras)) {
        if (x == "drop1") {
            r <- try_w(drop1(m, test = "Chisq"))
            out$drop1 <- if (is.null(r$error)) c(table_json(r$value),
                list(heading = I(attr(r$value, "heading")), warnings = as.list(unique(r$warnings))))
                else list(error = r$error)
        } else if (x == "ranova") {
            mt <- as_lmerModLmerTest(m)
            r <- try_w(ranova(mt))
            out$ranova <- if (is.null(r$error)) c(table_json(r$value),
                list(formulae = lapply(attr(r$value, "formulae"), function(f)
                         paste(deparse(f, width.cutoff = 500L), collapse = "")),
                     warnings = as.list(unique(r$warnings))))
                else list(error = r$error)
        } else if (x == "anova_types") {
            mt <- as_lmerModLmerTest(m)
            out$anova_types <- lapply(c(I = "1", II = "2", III = "3"), function(ty) {
                r <- try_w(anova(mt, type = ty, ddf = "Satterthwaite"))
                if (is.null(r$error)) c(table_json(r$value),
                    list(heading = I(attr(r$value, "heading"))))
                else list(error = r$error)
            })
        } else if (x == "kenward_roger") {
            mt <- as_lmerModLmerTest(m)
            t0 <- proc.time()[["elapsed"]]
            a <- try_w(anova(mt, ddf = "Kenward-Roger"))
            s <- try_w(summary(mt, ddf = "Kenward-Roger")$coefficients)
            va <- try_w(as.matrix(pbkrtest::vcovAdj(m)))
            sa <- try_w(summary(mt, ddf = "Satterthwaite")$coefficients)
            aa <- try_w(anova(mt, ddf = "Satterthwaite"))
            out$kenward_roger <- list(
                anova = if (is.null(a$error)) c(table_json(a$value),
                            list(heading = I(attr(a$value, "heading")),
                                 warnings = as.list(unique(a$warnings))))
                        else list(error = a$error),
                coefficients = if (is.null(s$error)) coef_table(s$value) else list(error = s$error),
                vcov_adjusted = if (is.null(va$error)) rows(va$value) else list(error = va$error),
                satterthwaite_coefficients = if (is.null(sa$error)) coef_table(sa$value) else NULL,
                satterthwaite_anova = if (is.null(aa$error)) table_json(aa$value) else NULL,
                elapsed_seconds = proc.time()[["elapsed"]] - t0,
                pbkrtest_version = as.character(packageVersion("pbkrtest")))
        } else if (startsWith(x, "emmeans:")) {
            sp <- sub("^emmeans:", "", x)
            out$emmeans <- list(spec = paste("~", sp),
                                satterthwaite = emm_json(m, sp, "satterthwaite"),
                                kenward_roger = emm_json(m, sp, "kenward-roger"),
                                emmeans_version = as.character(packageVersion("emmeans")))
        } else if (startsWith(x, "emmeans_by:")) {
            # a second spec with a by variable ("arm | sex"): Satterthwaite only
            sp <- sub("^emmeans_by:", "", x)
            out$emmeans_by <- list(spec = paste("~", sp),
                                   satterthwaite = emm_json(m, sp, "satterthwaite"),
                                   emmeans_version = as.character(packageVersion("emmeans")))
        } else stop("unknown extra ", x)
    }
    out
}

fit_one <- function(spec) {
    d <- read_data(spec)
    fw <- fit_with(spec, d, NULL)
    m <- fw$value
    res <- list(name = spec$name, formula = spec$formula, reml = isTRUE(spec$reml),
                update = spec$update,
                formula_fitted = paste(deparse(formula(m), width.cutoff = 500L), collapse = ""),
                weights_arg = spec$weights, offset_arg = spec$offset,
                data = spec$data_file, nobs = nobs(m), ngrps = named(ngrps(m)),
                factor_levels = lapply(Filter(is.factor, d), function(f) I(levels(f))),
                predvars = predvars_text(m))
    res <- c(res, core_json(m, fw))
    # tight fits: the better of nloptwrap / bobyqa at 1e-12
    tr <- lapply(tight_controls, function(ct) tryCatch(fit_with(spec, d, ct),
                                                       error = function(e) NULL))
    tr <- Filter(Negate(is.null), tr)
    objs <- vapply(tr, function(t) objective(t$value), 0)
    best <- names(objs)[which.min(objs)]
    tight <- core_json(tr[[best]]$value, tr[[best]])
    tight$ranef <- NULL
    tight$control <- best
    tight$objectives_by_optimizer <- named(objs)
    res$tight <- tight
    res$objective_default_minus_tight <- res$objective - tight$objective
    res$splines <- if (length(spec$splines)) lapply(unlist(spec$splines), spline_json, d = d)
                   else NULL
    res$newdata <- newdata_json(m, d, spec$newdata)
    if (length(spec$extras)) {
        ex <- with_warnings(extras_json(m, d, spec))
        res <- c(res, ex$value)
        res$extras_warnings <- as.list(unique(ex$warnings))
    }
    res$lme4_version <- as.character(packageVersion("lme4"))
    res$lmerTest_version <- as.character(packageVersion("lmerTest"))
    res$R_version <- R.version.string
    res
}

args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 1L) stop("usage: Rscript parity_reference.R SPEC.json")
specs <- fromJSON(args[[1L]], simplifyVector = FALSE)
for (spec in specs) {
    t0 <- proc.time()[["elapsed"]]
    fo <- with_warnings(fit_one(spec))
    res <- fo$value
    res$other_warnings <- as.list(unique(fo$warnings))
    res$other_messages <- as.list(unique(fo$messages))
    write_json_file(res, spec$out)
    cat(sprintf("%-28s %s obj=%.8f tight=%.8f (%.1fs)\n", spec$name,
                if (isTRUE(spec$reml)) "REML" else "ML  ", res$objective, res$tight$objective,
                proc.time()[["elapsed"]] - t0))
}
