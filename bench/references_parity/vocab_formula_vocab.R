# R references for bigmixed's formula vocabulary: R's pi, transformed responses, splines
# (splines::ns, splines::bs) and backquoted names. Run by vocab_make_references.py:
#
#   Rscript --vanilla vocab_formula_vocab.R DIR
#
# reads DIR/vocab_data.csv, vocab_newdata.csv, vocab_models.json, vocab_bases.json and writes
# DIR/vocab_references.json. Every number is written with 17 significant digits (round trip).

invisible(Sys.setlocale("LC_COLLATE", "C"))
suppressPackageStartupMessages({
    library(lme4)
    library(splines)
    library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
dir <- if (length(args)) args[[1L]] else "."
path <- function(f) file.path(dir, f)

## ---- exact numbers in JSON ------------------------------------------------------
# jsonlite writes at most 15 significant digits: numbers go in verbatim with %.17g.
num1 <- function(x) if (is.finite(x)) sprintf("%.17g", x) else "null"
nums <- function(x) structure(paste0("[", paste(vapply(as.numeric(x), num1, ""), collapse = ","), "]"),
                              class = "json")
num <- function(x) structure(num1(as.numeric(x)), class = "json")
named <- function(x) {  # a named numeric vector -> JSON object of exact numbers
    out <- lapply(as.numeric(x), num)
    names(out) <- names(x)
    out
}
rows <- function(m) {   # a matrix -> list of rows
    m <- as.matrix(m)
    lapply(seq_len(nrow(m)), function(i) nums(m[i, ]))
}

with_warnings <- function(expr) {
    w <- character(0)
    val <- withCallingHandlers(expr,
        warning = function(cond) { w <<- c(w, conditionMessage(cond)); invokeRestart("muffleWarning") },
        message = function(cond) invokeRestart("muffleMessage"))
    list(value = val, warnings = unique(w))
}

## ---- data ---------------------------------------------------------------------------
d <- read.csv(path("vocab_data.csv"), check.names = FALSE, stringsAsFactors = FALSE)
d$doctor <- factor(d$doctor)
d$patient <- factor(d$patient)
nd <- read.csv(path("vocab_newdata.csv"), check.names = FALSE, stringsAsFactors = FALSE)
nd$doctor <- factor(nd$doctor, levels = levels(d$doctor))
models <- fromJSON(path("vocab_models.json"), simplifyVector = FALSE)
bases <- fromJSON(path("vocab_bases.json"), simplifyVector = FALSE)

precise_controls <- list(
    nloptwrap = lmerControl(optimizer = "nloptwrap",
                            optCtrl = list(xtol_abs = 1e-12, ftol_abs = 1e-12, xtol_rel = 0,
                                           ftol_rel = 0, maxeval = 1e5)),
    bobyqa = lmerControl(optimizer = "bobyqa",
                         optCtrl = list(rhobeg = 0.02, rhoend = 1e-12, maxfun = 1e5)))

core <- function(m) {
    v <- as.matrix(vcov(m))
    list(objective = num(REMLcrit(m)), theta = named(getME(m, "theta")), sigma = num(sigma(m)),
         beta = named(fixef(m)), se = named(setNames(sqrt(diag(v)), names(fixef(m)))))
}

# spline state of every basis in the model frame (what makepredictcall keeps)
spline_state <- function(m) {
    out <- list()
    for (nm in names(m@frame)) {
        v <- m@frame[[nm]]
        if (inherits(v, "basis")) {
            out[[nm]] <- list(class = class(v)[1], knots = nums(attr(v, "knots")),
                              Boundary.knots = nums(attr(v, "Boundary.knots")),
                              intercept = attr(v, "intercept"), degree = attr(v, "degree"))
        }
    }
    out
}

fit_one <- function(name, formula) {
    fml <- as.formula(formula)
    fw <- with_warnings(lmer(fml, data = d, REML = TRUE))
    m <- fw$value
    tries <- lapply(precise_controls, function(ctl)
        tryCatch(suppressWarnings(suppressMessages(lmer(fml, data = d, REML = TRUE, control = ctl))),
                 error = function(e) NULL))
    tries <- Filter(Negate(is.null), tries)
    pm <- tries[[which.min(vapply(tries, REMLcrit, 0))]]

    frame_rows <- as.integer(rownames(m@frame)) - 1L      # 0-based rows of vocab_data.csv
    X <- getME(m, "X")
    age <- d$age[frame_rows + 1L]
    pick <- unique(c(1:12, which.min(age), which.max(age)))
    tt <- delete.response(terms(m))
    pw <- with_warnings({
        mf <- model.frame(tt, nd, na.action = na.pass)
        list(X = model.matrix(tt, mf),
             population = predict(m, newdata = nd, re.form = NA),
             conditional = predict(m, newdata = nd),
             population_precise = predict(pm, newdata = nd, re.form = NA),
             conditional_precise = predict(pm, newdata = nd))
    })
    res <- c(list(
        name = name, formula = formula, reml = TRUE,
        response = names(m@frame)[1], nobs = nobs(m),
        n_dropped = nrow(d) - nobs(m),
        fixed_names = I(colnames(X)),
        frame_columns = I(names(m@frame)),
        predvars = paste(deparse(attr(terms(m), "predvars"), width.cutoff = 500L), collapse = " "),
        spline_state = spline_state(m),
        fit_warnings = as.list(fw$warnings),
        rows = I(frame_rows[pick]),
        X_rows = rows(X[pick, , drop = FALSE]),
        y_rows = nums(getME(m, "y")[pick]),
        fitted_rows = nums(fitted(m)[pick]),
        resid_rows = nums(residuals(m)[pick]),
        newdata_X = rows(pw$value$X),
        newdata_population = nums(pw$value$population),
        newdata_conditional = nums(pw$value$conditional),
        newdata_population_precise = nums(pw$value$population_precise),
        newdata_conditional_precise = nums(pw$value$conditional_precise),
        newdata_warnings = as.list(pw$warnings)),
        core(m))
    res$precise <- core(pm)
    res
}

## ---- bases evaluated directly ------------------------------------------------------
basis_one <- function(label, call) {
    x <- d$age[!is.na(d$age)]
    bw <- with_warnings(eval(str2lang(call), list(x = x)))
    b <- bw$value
    pick <- unique(c(1:30, which.min(x), which.max(x)))
    newx <- as.numeric(unlist(bases$newx))
    pr <- with_warnings(predict(b, newx))
    list(label = label, call = call, x_rows = I(pick - 1L), x = nums(x[pick]),
         basis_rows = rows(b[pick, , drop = FALSE]), ncol = ncol(b),
         knots = nums(attr(b, "knots")), Boundary.knots = nums(attr(b, "Boundary.knots")),
         intercept = attr(b, "intercept"), degree = attr(b, "degree"),
         warnings = as.list(bw$warnings),
         newx = nums(newx), predict_rows = rows(pr$value), predict_warnings = as.list(pr$warnings),
         colnames_model_matrix = I(colnames(model.matrix(
             as.formula(paste("~", label)), data.frame(age = x)))))
}

out <- list(
    generated_by = "bench/references_parity/vocab_make_references.py",
    r_script = "bench/references_parity/vocab_formula_vocab.R",
    data = "vocab_data.csv", newdata = "vocab_newdata.csv",
    R_version = R.version.string,
    lme4_version = as.character(packageVersion("lme4")),
    models = setNames(lapply(names(models), function(n) fit_one(n, models[[n]])), names(models)),
    bases = setNames(lapply(names(bases$bases), function(l) basis_one(l, bases$bases[[l]])),
                     names(bases$bases)),
    deparse = setNames(lapply(c("y/100", "2*pi*time", "log(y, base=2)", "(y+1)/2", "x^-1",
                                "1e6*x", "0.002*x", "x/1e5", "x*123456789012", "-x^2", "(-x)^2",
                                "a %% b", "!a", "a >= b", "log((x))", "exp(-(x))", "a - (b - c)",
                                "(a - b) - c", "`my var`/2", "x %in% y", "2 * -x", "0.1+0.2",
                                "1/3", "TRUE & FALSE", "sqrt(`a b`)"),
                              function(s) deparse(str2lang(s))),
                       c("y/100", "2*pi*time", "log(y, base=2)", "(y+1)/2", "x^-1",
                         "1e6*x", "0.002*x", "x/1e5", "x*123456789012", "-x^2", "(-x)^2",
                         "a %% b", "!a", "a >= b", "log((x))", "exp(-(x))", "a - (b - c)",
                         "(a - b) - c", "`my var`/2", "x %in% y", "2 * -x", "0.1+0.2",
                         "1/3", "TRUE & FALSE", "sqrt(`a b`)"))
)
writeLines(toJSON(out, auto_unbox = TRUE, pretty = TRUE, null = "null", na = "null",
                  json_verbatim = TRUE), path("vocab_references.json"))
for (n in names(out$models)) {
    m <- out$models[[n]]
    cat(sprintf("%-16s nobs=%d  REML=%s  %s\n", n, m$nobs, unclass(m$objective), m$formula))
}
