# References for tests/test_lme4_names.py and tests/test_consistency.py (issue #16 items 3, 5, 6):
# R's format.pval, print(VarCorr(fit)), the summary's groups line, confint row names, and what
# lmer does with a constant, all-zero or 1e200-scaled response.
#   Rscript bench/lme4_names_reference.R   (writes bench/references_parity/lme4_names.json)
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
out <- list()
pv <- list(c(1e-20, 0.0123456, 0.5), c(1e-20), c(0.5, 0.04, 1e-5), c(3.2e-7, 1.5e-12),
           c(0.99999, 0.0001234), c(1e-300, 2e-16, 0.2), c(0.000999, 0.01), c(1, 0.051),
           c(5e-17, 1e-3), c(0.12345678))
out$format_pval <- lapply(pv, function(p) list(p = p,
  d4 = format.pval(p, digits = 4, eps = .Machine$double.eps),
  d3 = format.pval(p, digits = 3, eps = .Machine$double.eps),
  d1 = format.pval(p, digits = 1, eps = .Machine$double.eps),
  default = format.pval(p)))

cap <- function(x) paste(capture.output(x), collapse = "\n")
groups_line <- function(fit) {
  s <- capture.output(print(summary(fit)))
  s[grep("^Number of obs", s)]
}
write.csv(sleepstudy, "bench/references_parity/sleepstudy.csv", row.names = FALSE)
set.seed(16)
nh <- 12; nd <- 5; m <- 10
hospital <- rep(sprintf("h%02d", 1:nh), each = nd * m)
doctor <- rep(sprintf("d%d", rep(1:nd, nh)), each = m)  # labels repeat across hospitals
x <- rnorm(nh * nd * m)
u_h <- rnorm(nh, sd = 1)[as.integer(factor(hospital))]
u_d <- rnorm(nh * nd, sd = 0.7)[rep(1:(nh * nd), each = m)]
y <- 2 + 0.5 * x + u_h + u_d + rnorm(nh * nd * m)
nested <- data.frame(y = y, x = x, hospital = hospital, doctor = doctor,
                     g3 = sprintf("k%d", sample(1:7, nh * nd * m, replace = TRUE)))
write.csv(nested, "bench/references_parity/nested.csv", row.names = FALSE)

models <- list(
  slope = list(f = Reaction ~ Days + (Days | Subject), d = sleepstudy),
  double_bar = list(f = Reaction ~ Days + (Days || Subject), d = sleepstudy),
  nested = list(f = y ~ x + (1 | hospital/doctor), d = nested),
  crossed_slope = list(f = y ~ x + (1 | g3) + (x | hospital), d = nested),
  nested_plus = list(f = y ~ x + (1 | g3) + (1 | hospital:doctor) + (1 | hospital), d = nested))
out$models <- list()
for (nm in names(models)) {
  f <- lmer(models[[nm]]$f, data = models[[nm]]$d, REML = TRUE)
  ci <- confint(f, method = "Wald")
  vc <- as.data.frame(VarCorr(f))
  out$models[[nm]] <- list(
    formula = deparse(models[[nm]]$f),
    varcorr_print = cap(print(VarCorr(f), comp = c("Variance", "Std.Dev."))),
    varcorr_print_default = cap(print(VarCorr(f))),
    groups_line = groups_line(f),
    ngrps = as.list(ngrps(f)),
    vc = vc,
    confint_wald_rows = rownames(ci),
    confint_wald_lower = unname(ci[, 1]),
    confint_wald_upper = unname(ci[, 2]),
    fixef = as.list(fixef(f)),
    ranef_shape = lapply(ranef(f), function(r) list(dim = dim(r), names = colnames(r), rows = head(rownames(r), 3))),
    coef_shape = lapply(coef(f), function(r) list(dim = dim(r), names = colnames(r))))
}
fit_ml <- refitML(lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy))
out$refitML <- list(deviance = deviance(fit_ml), theta = getME(fit_ml, "theta"), beta = unname(fixef(fit_ml)),
                    isREML = isREML(fit_ml))

try_fit <- function(yv) {
  d <- sleepstudy; d$Reaction <- yv
  r <- tryCatch({
    f <- withCallingHandlers(lmer(Reaction ~ Days + (1 | Subject), data = d),
                             warning = function(w) {warn <<- c(warn, conditionMessage(w)); invokeRestart("muffleWarning")},
                             message = function(m) {msgs <<- c(msgs, conditionMessage(m)); invokeRestart("muffleMessage")})
    list(status = "fit", sigma = sigma(f), theta = getME(f, "theta"), beta = unname(fixef(f)))
  }, error = function(e) list(status = "error", message = conditionMessage(e)))
  r$warnings <- warn; r$messages <- msgs
  r
}
warn <- character(); msgs <- character(); out$constant_y <- try_fit(rep(3, nrow(sleepstudy)))
warn <- character(); msgs <- character(); out$zero_y <- try_fit(rep(0, nrow(sleepstudy)))
warn <- character(); msgs <- character(); out$scaled_1e200 <- try_fit(sleepstudy$Reaction * 1e200)
warn <- character(); msgs <- character(); out$scaled_1e150 <- try_fit(sleepstudy$Reaction * 1e150)
# lmerTest's tables: p-values as printCoefmat prints them (summary: digits 4 -> format.pval
# digits 3; anova: digits 5 -> format.pval digits 4)
suppressPackageStartupMessages(library(lmerTest))
lt <- list(slope = lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy),
           nested_g3 = lmer(y ~ x + g3 + (1 | hospital/doctor), data = nested))
out$lmertest <- lapply(lt, function(f) {
  s <- capture.output(summary(f))
  a <- capture.output(print(anova(f)))
  s4 <- summary(f, ddf = "lme4")
  list(formula = deparse(formula(f)), coef_names = rownames(coef(summary(f))),
       coefs = as.data.frame(coef(summary(f))), coefs_lme4 = as.data.frame(coef(s4)),
       summary_lines_lme4 = capture.output(print(s4)),
       p_summary = unname(coef(summary(f))[, "Pr(>|t|)"]),
       summary_lines = s, anova_terms = rownames(anova(f)), p_anova = anova(f)[["Pr(>F)"]],
       anova_lines = a)
})
# lme4's anova (LRT) tables: print.anova's Pr(>Chisq) (format.pval digits 4)
m0 <- lme4::lmer(Reaction ~ 1 + (1 | Subject), sleepstudy, REML = FALSE)
m1 <- lme4::lmer(Reaction ~ Days + (1 | Subject), sleepstudy, REML = FALSE)
m2 <- lme4::lmer(Reaction ~ Days + (Days | Subject), sleepstudy, REML = FALSE)
out$anova_lrt <- lapply(list(fixed = list(m0, m1), slope = list(m1, m2)), function(p) {
  a <- anova(p[[1]], p[[2]])
  list(p = a[["Pr(>Chisq)"]][2], lines = capture.output(print(a)))
})
# ML summaries: lme4's AIC table (.prt.aictab)
out$ml_summary <- list(
  slope = capture.output(summary(lme4::lmer(Reaction ~ Days + (Days | Subject), sleepstudy, REML = FALSE))),
  nested = capture.output(summary(lme4::lmer(y ~ x + (1 | hospital/doctor), nested, REML = FALSE))))
out$R_version <- R.version.string
out$lme4_version <- as.character(packageVersion("lme4"))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "bench/references_parity/lme4_names.json")
