# glmer on rescaled covariates, mapped back: the optimum of badly scaled GLMMs.
#
#   Rscript bench/glmer_rescaled.R SPEC.json
#
# SPEC.json: the entries of bench/glmer_reference.R's spec (same fields) plus
#   "rescale": ["age", "wbc", ...]   numeric columns replaced by (x - mean) / sd
#   "rescaled_out": "<json path>"
# The columns are standardised, the same formula is fitted by glmer with
# tight bobyqa and with the default Nelder_Mead (the better one is kept), and the
# fixed effects are mapped back to the original columns: the two fixed-effect
# designs span the same space, X_scaled = X A (A by least squares, residual
# recorded), so beta = A beta_scaled and vcov = A V_scaled A'. theta, the
# log-likelihood and the conditional modes do not depend on the scaling.

invisible(Sys.setlocale("LC_COLLATE", "C"))
suppressPackageStartupMessages({
    library(Matrix)
    library(lme4)
    library(jsonlite)
})
local({
    a <- commandArgs(trailingOnly = FALSE)
    f <- sub("^--file=", "", a[grep("^--file=", a)])
    source(file.path(dirname(f), "json17.R"))
})

read_data <- function(spec) {
    d <- read.csv(spec$data, stringsAsFactors = FALSE, colClasses = "character")
    lev <- spec$levels
    for (col in names(d)) {
        if (col %in% names(lev)) d[[col]] <- factor(d[[col]], levels = unlist(lev[[col]]))
        else d[[col]] <- as.numeric(d[[col]])
    }
    d
}

fit <- function(spec, d, ctrl) {
    fam <- call(spec$family, link = spec$link)
    cl <- call("glmer", formula = as.formula(spec$formula), data = quote(d), family = fam,
               nAGQ = as.integer(spec$nAGQ), control = quote(ctrl))
    if (!is.null(spec$weights)) cl$weights <- parse(text = spec$weights)[[1]]
    if (!is.null(spec$offset)) cl$offset <- parse(text = spec$offset)[[1]]
    env <- new.env(parent = globalenv())
    env$d <- d
    env$ctrl <- ctrl
    t0 <- proc.time()[["elapsed"]]
    fw <- tryCatch(with_warnings(eval(cl, env)), error = function(e) list(error = conditionMessage(e)))
    fw$elapsed <- proc.time()[["elapsed"]] - t0
    fw
}

controls <- list(
    tight_bobyqa = glmerControl(optimizer = "bobyqa",
                                optCtrl = list(maxfun = 1e5, rhoend = 1e-10)),
    default = glmerControl())

one <- function(spec) {
    d0 <- read_data(spec)
    d <- d0
    sc <- list()
    for (c in unlist(spec$rescale)) {
        mu <- mean(d[[c]])
        s <- sd(d[[c]])
        d[[c]] <- (d[[c]] - mu) / s
        sc[[c]] <- list(center = mu, scale = s)
    }
    fits <- lapply(controls, function(ct) fit(spec, d, ct))
    ok <- Filter(function(f) is.null(f$error), fits)
    lls <- vapply(ok, function(f) as.numeric(logLik(f$value)), 0)
    best <- names(lls)[which.max(lls)]
    m <- ok[[best]]$value
    X0 <- getME(m, "X")
    # the original design
    X <- suppressWarnings(suppressMessages(
        glFormula(as.formula(spec$formula), data = d0,
                  family = get(spec$family)(link = spec$link))))$X
    A <- qr.solve(X, X0)
    resid <- max(abs(X %*% A - X0))
    bs <- fixef(m)
    Vs <- as.matrix(vcov(m))
    vn <- with_warnings(as.matrix(vcov(m, use.hessian = FALSE)))
    Vn <- vn$value
    beta <- as.numeric(A %*% bs)
    names(beta) <- colnames(X)
    V <- A %*% Vs %*% t(A)
    VR <- A %*% Vn %*% t(A)
    ll <- logLik(m)
    re <- ranef(m, condVar = TRUE)
    rr <- lapply(names(re), function(g) {
        r <- re[[g]]
        list(levels = I(rownames(r)), columns = I(colnames(r)), modes = rows(r),
             condvar = lapply(seq_len(nrow(r)), function(k)
                 rows(matrix(attr(r, "postVar")[, , k], ncol(r), ncol(r)))))
    })
    names(rr) <- names(re)
    res <- list(
        name = paste0(spec$name, "_rescaled"), model = spec$model, agq_group = spec$name,
        formula = spec$formula, family = spec$family, link = spec$link, nAGQ = spec$nAGQ,
        weights_arg = spec$weights, offset_arg = spec$offset, data = spec$data_file,
        rescaled_columns = sc, control = best,
        logLik_by_control = named(lls),
        theta = named(getME(m, "theta")), beta = named(beta),
        fixed_names = I(colnames(X)), se = named(setNames(sqrt(diag(V)), colnames(X))),
        vcov = rows(V), vcov_no_hessian = rows(VR),
        vcov_no_hessian_warnings = as.list(vn$warnings),
        beta_scaled = named(bs), vcov_scaled = rows(Vs),
        map_A = rows(A), map_max_abs_residual = resid,
        logLik = as.numeric(ll), df = attr(ll, "df"), deviance = deviance(m),
        minus2logLik = -2 * as.numeric(ll), AIC = AIC(m), BIC = BIC(m),
        isSingular = isSingular(m), feval = m@optinfo$feval,
        conv_lme4_messages = as.list(m@optinfo$conv$lme4$messages),
        fit_warnings = as.list(unique(ok[[best]]$warnings)),
        gradient = if (!is.null(m@optinfo$derivs)) I(m@optinfo$derivs$gradient) else NULL,
        elapsed_seconds = named(vapply(fits, function(f) f$elapsed, 0)),
        ranef = rr,
        lme4_version = as.character(packageVersion("lme4")),
        R_version = R.version.string)
    write_json_file(res, spec$rescaled_out)
    cat(sprintf("  %-34s rescaled  logLik=%.10f (%s; %s)\n", spec$name, res$logLik, best,
                paste(sprintf("%s %.1fs", names(fits), res$elapsed_seconds), collapse = ", ")))
}

args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 1L) stop("usage: Rscript glmer_rescaled.R SPEC.json")
for (spec in fromJSON(args[[1L]], simplifyVector = FALSE)) one(spec)
