# Reference values for bigmixed's inference tests (bigmixed/compare.py, inference.py, predict.py).
#
#   cd bench/references_inference && setarch -R Rscript --vanilla make_inference_refs.R
#
# Reads the committed data of ../references (see ../references/README.md for how the CSVs are
# read: factor columns as factors, levels in the C locale, `method` as nir, hplc) and writes
# inference.json:
#   anova       lme4's anova(m0, m1, ...) (refit = TRUE, and one refit = FALSE) tables
#   nlme        nlme's between-within df: summary(lme)$tTable and anova(lme, type = "marginal")
#   predict     predict.merMod(re.form = NULL / NA, allow.new.levels = TRUE) on new data
#   wald        confint(m, method = "Wald") for the fixed effects
#   profile     confint(m, method = "profile") (lme4's profile likelihood intervals)
# No random numbers are used.

invisible(Sys.setlocale("LC_COLLATE", "C"))
suppressPackageStartupMessages({
    library(Matrix)
    library(lme4)
    library(nlme)
    library(jsonlite)
})

REF <- file.path("..", "references")
FACTORS <- c("doctor", "patient", "hospital", "arm", "arm2", "tablet", "method")

read_data <- function(file) {
    d <- read.csv(file.path(REF, file), stringsAsFactors = FALSE)
    for (f in intersect(FACTORS, names(d))) {
        v <- as.character(d[[f]])
        lev <- if (f == "method") c("nir", "hplc") else sort(unique(v[!is.na(v)]))
        d[[f]] <- factor(v, levels = lev)
    }
    d
}

named <- function(x) { out <- as.list(unname(x)); names(out) <- names(x); out }
col <- function(x) I(unname(as.numeric(x)))

anova_json <- function(label, data, formulas, reml = TRUE, refit = TRUE) {
    d <- read_data(data)
    fits <- lapply(formulas, function(f) lmer(as.formula(f), data = d, REML = reml))
    names(fits) <- paste0("model", seq_along(fits))
    a <- suppressMessages(do.call(anova, c(unname(fits), list(refit = refit,
                                           model.names = names(fits)))))
    list(label = label, data = data, formulas = I(unlist(formulas)), reml = reml,
         refit = refit, models = I(rownames(a)),
         npar = col(a$npar), AIC = col(a$AIC), BIC = col(a$BIC), logLik = col(a$logLik),
         deviance = col(a$deviance), Chisq = col(a$Chisq), Df = col(a$Df),
         p = col(a[["Pr(>Chisq)"]]),
         # the boundary mixture 0.5 chi2(q) + 0.5 chi2(q + 1), for the rows where it applies
         mixture_q = NULL)
}

mixture_p <- function(stat, q) {
    upper <- pchisq(stat, q + 1, lower.tail = FALSE)
    lower <- if (q == 0) as.numeric(stat <= 0) else pchisq(stat, q, lower.tail = FALSE)
    0.5 * lower + 0.5 * upper
}

out <- list(R_version = R.version.string,
            lme4_version = as.character(packageVersion("lme4")),
            nlme_version = as.character(packageVersion("nlme")))

## ---- anova (likelihood-ratio tests) ------------------------------------------------------
fx <- "mobility ~ age + sex + time"
cases <- list(
    anova_json("slope_ri_vs_corr", "slope.csv",
               list(paste(fx, "+ (1 | doctor)"), paste(fx, "+ (time | doctor)"))),
    anova_json("slope_ri_vs_uncorr", "slope.csv",
               list(paste(fx, "+ (1 | doctor)"), paste(fx, "+ (time || doctor)"))),
    anova_json("slope_uncorr_vs_corr", "slope.csv",
               list(paste(fx, "+ (time || doctor)"), paste(fx, "+ (time | doctor)"))),
    anova_json("slope_three", "slope.csv",
               list(paste(fx, "+ (time | doctor)"), paste(fx, "+ (1 | doctor)"),
                    paste(fx, "+ (time || doctor)"))),
    anova_json("slope_ri_vs_corr_norefit", "slope.csv",
               list(paste(fx, "+ (1 | doctor)"), paste(fx, "+ (time | doctor)")), refit = FALSE),
    anova_json("ri_fixed", "ri.csv",
               list("mobility ~ age + married + sex + wbc + rbc + (1 | doctor)",
                    "mobility ~ age + sex + (1 | doctor)")),
    anova_json("ri_fixed_ml", "ri.csv",
               list("mobility ~ age + married + sex + wbc + rbc + (1 | doctor)",
                    "mobility ~ age + sex + (1 | doctor)"), reml = FALSE),
    anova_json("crossed_add_hospital", "crossed.csv",
               list("mobility ~ age + sex + (1 | doctor)",
                    "mobility ~ age + sex + (1 | doctor) + (1 | hospital)")),
    anova_json("nested_add_doctor", "nested.csv",
               list("mobility ~ age + sex + (1 | hospital)",
                    "mobility ~ age + sex + (1 | hospital/doctor)")),
    anova_json("catint_three", "catint.csv",
               list("mobility ~ age + sex + (1 | doctor)",
                    "mobility ~ age * arm + sex + (1 | doctor)",
                    "mobility ~ age + arm + sex + (1 | doctor)"))
)
# boundary-mixture p-values computed in R from lme4's Chisq, for the rows where one random
# effect is added (q = number of columns of the term it joins)
mix <- list(slope_ri_vs_corr = c(NA, 1), slope_ri_vs_uncorr = c(NA, 0),
            slope_three = c(NA, 0, NA), crossed_add_hospital = c(NA, 0),
            nested_add_doctor = c(NA, 0), slope_ri_vs_corr_norefit = c(NA, 1))
for (i in seq_along(cases)) {
    q <- mix[[cases[[i]]$label]]
    if (!is.null(q)) {
        cases[[i]]$mixture_q <- col(q)
        cases[[i]]$p_mixture <- col(mapply(function(s, qq) if (is.na(qq)) NA else mixture_p(s, qq),
                                           cases[[i]]$Chisq, q))
    }
}
names(cases) <- vapply(cases, `[[`, "", "label")
out$anova <- cases

## ---- nlme between-within df -----------------------------------------------------------
nlme_json <- function(label, data, fixed, random, bigmixed_formula) {
    d <- read_data(data)
    m <- lme(as.formula(fixed), random = as.formula(random), data = d, na.action = na.omit,
             method = "REML")
    tt <- summary(m)$tTable
    an <- anova(m, type = "marginal")
    list(label = label, data = data, fixed = fixed, random = random,
         bigmixed_formula = bigmixed_formula, names = I(rownames(tt)),
         estimate = col(tt[, "Value"]), se = col(tt[, "Std.Error"]), df = col(tt[, "DF"]),
         t = col(tt[, "t-value"]), p = col(tt[, "p-value"]),
         anova_terms = I(rownames(an)), anova_numdf = col(an$numDF), anova_dendf = col(an$denDF),
         anova_F = col(an[["F-value"]]), anova_p = col(an[["p-value"]]))
}
out$nlme <- list(
    tablets_missing = nlme_json("tablets_missing", "tablets_missing.csv", "y ~ method", "~ 1 | tablet",
                                "y ~ method + (1 | tablet)"),
    slope_nested = nlme_json("slope_nested", "slope.csv", "mobility ~ age + sex + time",
                             "~ 1 | doctor/patient", "mobility ~ age + sex + time + (1 | doctor/patient)"),
    catint = nlme_json("catint", "catint.csv", "mobility ~ age * arm + sex", "~ 1 | doctor",
                       "mobility ~ age * arm + sex + (1 | doctor)")
)

## ---- predictions ------------------------------------------------------------------------
pred_json <- function(label, data, formula, newrows, newlevels) {
    d <- read_data(data)
    m <- lmer(as.formula(formula), data = d, REML = TRUE)
    nd <- d[newrows, , drop = FALSE]
    for (g in names(newlevels)) {
        v <- as.character(nd[[g]])
        v[newlevels[[g]]] <- "NEWLEVEL"
        nd[[g]] <- v  # character: predict matches by label
    }
    list(label = label, data = data, formula = formula, rows = col(newrows - 1L),  # 0-based
         new_levels = lapply(newlevels, function(i) col(i - 1L)),
         conditional = col(predict(m, newdata = nd, re.form = NULL, allow.new.levels = TRUE)),
         population = col(predict(m, newdata = nd, re.form = NA)))
}
out$predict <- list(
    ri = pred_json("ri", "ri.csv", "mobility ~ age + married + sex + wbc + rbc + (1 | doctor)",
                   c(1:6, 500:503), list(doctor = c(2L, 9L))),
    slope = pred_json("slope", "slope.csv", "mobility ~ age + sex + time + (time | doctor)",
                      c(1:5, 700:704), list(doctor = c(3L))),
    crossed = pred_json("crossed", "crossed.csv",
                        "mobility ~ age + sex + (1 | doctor) + (1 | hospital)",
                        c(1:4, 300:305), list(hospital = c(1L, 6L), doctor = c(6L, 8L)))
)

## ---- lmerTest on models the reference fits do not cover -----------------------------------
# sexf: the numeric 0/1 column sex as a factor with levels "F" (sex == 1) and "M" (sex == 0)
lmertest_json <- function(label, data, formula, reml = TRUE) {
    d <- read_data(data)
    d$sexf <- factor(ifelse(d$sex == 1, "F", "M"), levels = c("F", "M"))
    m <- lmerTest::as_lmerModLmerTest(lmer(as.formula(formula), data = d, REML = reml))
    co <- summary(m, ddf = "Satterthwaite")$coefficients
    tab <- function(type) {
        a <- anova(m, type = type, ddf = "Satterthwaite")
        list(terms = I(rownames(a)), numdf = col(a$NumDF), dendf = col(a$DenDF),
             F = col(a[["F value"]]), p = col(a[["Pr(>F)"]]))
    }
    list(label = label, data = data, formula = formula, reml = reml, names = I(rownames(co)),
         df = col(co[, "df"]), t = col(co[, "t value"]), p = col(co[, "Pr(>|t|)"]),
         type3 = tab(3), type1 = tab(1))
}
suppressPackageStartupMessages(library(lmerTest))
out$lmertest <- list(
    factor_interaction = lmertest_json("factor_interaction", "catint.csv",
                                       "mobility ~ arm * sexf + age + (1 | doctor)"),
    three_way = lmertest_json("three_way", "catint.csv",
                              "mobility ~ arm * sexf * age + (1 | doctor)", reml = FALSE),
    no_intercept = lmertest_json("no_intercept", "catint.csv",
                                 "mobility ~ 0 + arm + age:arm + (1 | doctor)")
)

## ---- Wald and profile intervals -----------------------------------------------------------
ci_json <- function(data, formula, reml, method) {
    d <- read_data(data)
    m <- lmer(as.formula(formula), data = d, REML = reml)
    ci <- suppressMessages(confint(m, method = method, oldNames = FALSE))
    list(data = data, formula = formula, reml = reml, method = method,
         names = I(rownames(ci)), lower = col(ci[, 1]), upper = col(ci[, 2]))
}
out$wald <- list(ri = ci_json("ri.csv", "mobility ~ age + married + sex + wbc + rbc + (1 | doctor)",
                              TRUE, "Wald"))
out$profile <- list(
    tablets = ci_json("tablets.csv", "y ~ method + (1 | tablet)", TRUE, "profile"),
    tablets_ml = ci_json("tablets.csv", "y ~ method + (1 | tablet)", FALSE, "profile"),
    slope_ml = ci_json("slope.csv", "mobility ~ age + sex + time + (time | doctor)", FALSE, "profile"),
    singular_ri_ml = ci_json("singular_ri.csv", "mobility ~ age + sex + (1 | doctor)", FALSE, "profile")
)

writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null", na = "null"),
           "inference.json")
cat("wrote inference.json\n")
