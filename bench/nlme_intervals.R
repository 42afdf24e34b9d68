# nlme's intervals(fit, which = "var-cov") for three reference models (tight control), the
# reference of tests/test_residual_nlme.py::test_intervals_match_nlme.
#   Rscript bench/nlme_intervals.R      (from the repository root; writes
#                                        bench/references_nlme/intervals.json)
# nlme's default finite-difference step for the Hessian behind these intervals (.relStep =
# eps^(1/3), about 6e-6) leaves rounding noise of a few percent in the standard errors on
# log-likelihoods of this size; with .relStep = 1e-4 and 1e-3 nlme's intervals agree with each
# other to ~1e-4. The reference uses 1e-4; the default-step intervals are kept for comparison.
library(nlme); library(jsonlite)
ref <- "bench/references_nlme"
rd <- function(f) {
  d <- read.csv(file.path(ref, f))
  for (c in intersect(c("patient", "hospital", "arm"), names(d))) d[[c]] <- factor(d[[c]])
  d
}
fits <- function(rel_step) {
  ctl <- lmeControl(maxIter = 1000, msMaxIter = 1000, msMaxEval = 10000, rel.tol = 1e-12,
                    opt = "nlminb", returnObject = TRUE, .relStep = rel_step)
  out <- list()
  d <- rd("ar1.csv")
  f <- suppressWarnings(lme(y ~ time * treat, random = ~1 | patient,
                            correlation = corAR1(form = ~ visit | patient), data = d, control = ctl))
  out$ar1_ri <- list(corStruct = unclass(intervals(f, which = "var-cov")$corStruct))
  d <- rd("varident.csv")
  f <- suppressWarnings(lme(y ~ time * treat, random = ~1 | patient,
                            weights = varIdent(form = ~ 1 | arm), data = d, control = ctl))
  i <- intervals(f, which = "var-cov")
  out$varident <- list(varStruct = unclass(i$varStruct), rownames = rownames(i$varStruct))
  d <- rd("cs.csv")
  f <- suppressWarnings(lme(y ~ time * treat, random = ~1 | hospital,
                            correlation = corCompSymm(form = ~ 1 | hospital/patient), data = d,
                            control = ctl))
  out$cs <- list(corStruct = unclass(intervals(f, which = "var-cov")$corStruct))
  out
}
out <- fits(1e-4)
out$rel_step <- 1e-4
out$default_rel_step <- fits(.Machine$double.eps^(1/3))
out$nlme_version <- as.character(packageVersion("nlme"))
write_json(out, file.path(ref, "intervals.json"), digits = NA, auto_unbox = TRUE)
