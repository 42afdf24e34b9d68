# glmer reference fits (lme4) for bigmixed's GLMM tests.
#
#   Rscript bench/glmer_reference.R export DIR       # package data sets -> DIR/*.csv + DIR/levels.json
#   Rscript bench/glmer_reference.R fit SPEC.json    # the fits of SPEC.json
#   Rscript bench/glmer_reference.R csvcheck SPEC.json  # R's parse of CSVs, as %.17g
#
# Driven by bench/make_glmm_references.py, which writes SPEC.json: a JSON array of
# entries, each one model at one nAGQ:
#   {"kind": "glmer", "name": "cbpp_agq1", "model": "cbpp", "data": "<csv path>",
#    "data_file": "cbpp.csv", "formula": "...", "family": "binomial", "link": "logit",
#    "nAGQ": 1, "weights": null | "<expr>", "offset": null | "<expr>",
#    "levels": {"herd": [...], ...}  (every factor column, in this level order),
#    "numeric": ["size", ...], "package_data": "lme4::cbpp" | null,
#    "rows": "all" | "best" | "none", "newdata": {"rows": [0-based], "new_levels":
#    [{"row": i (position in newdata), "factor": f, "level": "NEWLEVEL"}]},
#    "controls": ["default", "bobyqa", "tight"], "out_prefix": "<path without .json>",
#    "inference": null | {"null_formula": "...", "out": "<json path>"}}
# For every control the model is fitted and <out_prefix>_<control>.json written
# (see bench/references_glmm/README.md for the fields).
#
# Numbers are written by this script's own JSON writer with sprintf("%.17g"), so
# every double round-trips exactly (jsonlite stops at 15 significant digits).
# NA is written as null, NaN as NaN, +-Inf as Infinity / -Infinity (Python's json
# module reads all three).

invisible(Sys.setlocale("LC_COLLATE", "C"))
suppressPackageStartupMessages({
    library(Matrix)
    library(lme4)
    library(jsonlite)
})

## ---- JSON writer (full precision) ---------------------------------------------
json_str <- function(x) as.character(jsonlite::toJSON(as.character(x), auto_unbox = FALSE))
num_txt <- function(x) {
    out <- sprintf("%.17g", x)
    out[is.nan(x)] <- "NaN"
    out[is.na(x) & !is.nan(x)] <- "null"
    out[is.infinite(x) & x > 0] <- "Infinity"
    out[is.infinite(x) & x < 0] <- "-Infinity"
    out
}
to_json <- function(x, indent = 0L) {
    pad <- strrep(" ", indent + 1L)
    if (is.null(x)) return("null")
    if (inherits(x, "json_verbatim")) return(as.character(x))
    if (is.matrix(x) && is.atomic(x)) return(to_json(rows(x), indent))
    if (is.list(x)) {
        nm <- names(x)
        if (length(x) == 0L) return(if (is.null(nm)) "[]" else "{}")
        parts <- vapply(x, to_json, "", indent = indent + 1L)
        if (!is.null(nm) && all(nm != "")) {
            keys <- vapply(nm, function(k) substr(json_str(k), 2, nchar(json_str(k)) - 1), "")
            return(paste0("{\n", paste0(pad, keys, ": ", parts, collapse = ",\n"), "\n",
                          strrep(" ", indent), "}"))
        }
        return(paste0("[", paste(parts, collapse = ", "), "]"))
    }
    box <- inherits(x, "AsIs") || length(x) != 1L
    if (is.factor(x)) x <- as.character(x)
    if (is.logical(x)) {
        v <- ifelse(is.na(x), "null", ifelse(x, "true", "false"))
    } else if (is.integer(x)) {
        v <- ifelse(is.na(x), "null", as.character(unclass(x)))
    } else if (is.numeric(x)) {
        v <- num_txt(as.numeric(x))
    } else {
        s <- as.character(jsonlite::toJSON(unname(as.character(x)), na = "null"))
        return(if (box) s else substr(s, 2, nchar(s) - 1))
    }
    if (box) paste0("[", paste(v, collapse = ", "), "]") else v
}
write_json_file <- function(x, path) writeLines(to_json(x), path)

# A named vector as a JSON object.
named <- function(x) {
    out <- as.list(unname(x))
    names(out) <- names(x)
    out
}
# A matrix as a list of rows.
rows <- function(m) {
    m <- as.matrix(m)
    lapply(seq_len(nrow(m)), function(i) I(as.numeric(m[i, ])))
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
try_w <- function(expr) {
    r <- tryCatch(with_warnings(expr), error = function(e) list(error = conditionMessage(e)))
    r
}

## ---- data ------------------------------------------------------------------------
read_data <- function(spec) {
    d <- read.csv(spec$data, stringsAsFactors = FALSE, colClasses = "character")
    lev <- spec$levels
    for (col in names(d)) {
        if (col %in% names(lev)) {
            l <- unlist(lev[[col]])
            stopifnot(all(d[[col]] %in% l))
            d[[col]] <- factor(d[[col]], levels = l)
        } else {
            d[[col]] <- as.numeric(d[[col]])
            if (all(is.finite(d[[col]])) && all(d[[col]] == round(d[[col]])) &&
                col %in% unlist(spec$integer))
                d[[col]] <- as.integer(d[[col]])
        }
    }
    d
}

# The package's own data set against what R reads from the CSV.
compare_package <- function(d, what) {
    if (is.null(what)) return(NULL)
    parts <- strsplit(what, "::", fixed = TRUE)[[1]]
    e <- new.env()
    data(list = parts[2], package = parts[1], envir = e)
    p <- as.data.frame(get(parts[2], envir = e))
    cols <- intersect(names(p), names(d))
    same <- vapply(cols, function(c) {
        a <- p[[c]]
        b <- d[[c]]
        if (is.factor(a)) identical(levels(a), levels(b)) &&
            identical(as.character(a), as.character(b))
        else identical(as.numeric(a), as.numeric(b))
    }, TRUE)
    list(package_data = what, columns = I(cols), identical = named(same),
         all_identical = all(same), nrow_package = nrow(p), nrow_csv = nrow(d))
}

## ---- one fit ------------------------------------------------------------------------
controls <- list(
    default = function() glmerControl(),
    bobyqa = function() glmerControl(optimizer = "bobyqa"),
    tight = function() glmerControl(optimizer = "bobyqa",
                                    optCtrl = list(maxfun = 1e5, rhoend = 1e-10))
)
control_text <- list(
    default = "glmerControl()  (optimizer c(\"bobyqa\", \"Nelder_Mead\"): bobyqa for stage 1 (nAGQ = 0), Nelder_Mead for stage 2)",
    bobyqa = "glmerControl(optimizer = \"bobyqa\")",
    tight = "glmerControl(optimizer = \"bobyqa\", optCtrl = list(maxfun = 1e5, rhoend = 1e-10))"
)

make_call <- function(spec, ctrl_name) {
    fam <- call(spec$family, link = spec$link)
    cl <- call("glmer", formula = as.formula(spec$formula), data = quote(d),
               family = fam, nAGQ = as.integer(spec$nAGQ), control = quote(ctrl))
    if (!is.null(spec$weights)) cl$weights <- parse(text = spec$weights)[[1]]
    if (!is.null(spec$offset)) cl$offset <- parse(text = spec$offset)[[1]]
    cl
}

ranef_json <- function(m) {
    re <- ranef(m, condVar = TRUE)
    out <- list()
    long <- as.data.frame(re)
    for (g in names(re)) {
        r <- re[[g]]
        pv <- attr(r, "postVar")
        p <- ncol(r)
        entry <- list(levels = I(rownames(r)), columns = I(colnames(r)), modes = rows(r))
        if (is.list(pv)) {
            sizes <- vapply(pv, function(a) dim(a)[1], 1L)
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
        entry$condvar <- lapply(seq_len(dim(pv)[3]), function(k) rows(matrix(pv[, , k], p, p)))
        entry$condsd <- lapply(colnames(r), function(cn) {
            sel <- long[long$grpvar == g & long$term == cn, ]
            I(sel$condsd[match(rownames(r), as.character(sel$grp))])
        })
        names(entry$condsd) <- colnames(r)
        out[[g]] <- entry
    }
    out
}

varcorr_json <- function(m) {
    vc <- as.data.frame(VarCorr(m))
    list(grp = I(as.character(vc$grp)), var1 = I(as.character(vc$var1)),
         var2 = I(as.character(vc$var2)), vcov = I(vc$vcov), sdcor = I(vc$sdcor))
}

vcov_try <- function(m, use.hessian) {
    r <- try_w(as.matrix(vcov(m, use.hessian = use.hessian)))
    if (!is.null(r$error)) return(list(error = r$error))
    list(matrix = rows(r$value), se = I(sqrt(diag(r$value))), warnings = as.list(r$warnings))
}

newdata_json <- function(m, d, nd_spec) {
    if (is.null(nd_spec)) return(NULL)
    idx <- unlist(nd_spec$rows) + 1L
    nd <- d[idx, , drop = FALSE]
    rownames(nd) <- NULL
    for (nl in nd_spec$new_levels) {
        f <- nl$factor
        nd[[f]] <- factor(as.character(nd[[f]]), levels = c(levels(d[[f]]), nl$level))
        nd[[f]][nl$row + 1L] <- nl$level
    }
    pr <- function(re.form, type) {
        r <- if (is.null(re.form)) {
            try_w(predict(m, newdata = nd, re.form = NULL, allow.new.levels = TRUE, type = type))
        } else {
            try_w(predict(m, newdata = nd, re.form = NA, type = type))
        }
        if (!is.null(r$error)) return(list(error = r$error))
        list(values = I(unname(as.numeric(r$value))), warnings = as.list(r$warnings))
    }
    cols <- lapply(nd, function(x) if (is.factor(x)) I(as.character(x)) else I(x))
    list(rows = I(unlist(nd_spec$rows)), new_levels = nd_spec$new_levels, data = cols,
         re_na_link = pr(NA, "link"), re_na_response = pr(NA, "response"),
         re_null_link = pr(NULL, "link"), re_null_response = pr(NULL, "response"))
}

rows_json <- function(m) {
    f <- function(x) I(unname(as.numeric(x)))
    out <- list(fitted = f(fitted(m)), linpred = f(predict(m, type = "link")),
                resid_deviance = f(residuals(m, type = "deviance")),
                resid_pearson = f(residuals(m, type = "pearson")),
                resid_response = f(residuals(m, type = "response")),
                y = f(getME(m, "y")), prior_weights = f(weights(m)))
    off <- getME(m, "offset")
    out$offset <- if (any(off != 0)) f(off) else NULL
    out
}

# -2 log-likelihood of the saturated model (mu = y), as the family's aic() gives it.
# For nAGQ > 1 lme4 1.1.31 reports -2*logLik relative to it (lme4 issue #161):
# minus2logLik + family_aic_saturated is then on the Laplace (nAGQ = 1) scale.
saturated_aic <- function(m) {
    r <- m@resp
    y <- r$y
    tryCatch(family(m)$aic(y, r$n, y, r$weights, 0), error = function(e) NA_real_)
}

predvars_text <- function(m) {
    pv <- attr(terms(m, fixed.only = FALSE), "predvars")
    if (is.null(pv)) return(NULL)
    paste(deparse(pv, control = c("keepNA", "keepInteger", "digits17"), width.cutoff = 500L),
          collapse = "")
}

fit_json <- function(spec, d, ctrl_name, fw, elapsed) {
    m <- fw$value
    oi <- m@optinfo
    v <- as.matrix(vcov(m))
    ll <- logLik(m)
    yv <- model.response(model.frame(m))
    res <- list(
        name = paste0(spec$name, "_", ctrl_name),
        model = spec$model, agq_group = spec$name, control_name = ctrl_name,
        control = control_text[[ctrl_name]],
        formula = spec$formula, family = family(m)$family, link = family(m)$link,
        nAGQ = unname(m@devcomp$dims[["nAGQ"]]),
        weights_arg = spec$weights, offset_arg = spec$offset,
        data = spec$data_file, nobs = nobs(m), ngrps = named(ngrps(m)),
        factor_levels = lapply(Filter(is.factor, d), function(f) I(levels(f))),
        response_factor_levels = if (is.factor(yv)) I(levels(yv)) else NULL,
        optimizer = oi$optimizer,
        theta = named(getME(m, "theta")),
        beta = named(fixef(m)), fixed_names = I(names(fixef(m))),
        se = named(sqrt(diag(v))), vcov = rows(v),
        vcov_use_hessian = vcov_try(m, TRUE),
        vcov_no_hessian = vcov_try(m, FALSE),
        logLik = as.numeric(ll), df = attr(ll, "df"),
        deviance = deviance(m), minus2logLik = -2 * as.numeric(ll),
        AIC = AIC(m), BIC = BIC(m), df_resid = df.residual(m), sigma = sigma(m),
        isSingular = isSingular(m),
        conv_lme4_messages = as.list(oi$conv$lme4$messages),
        conv_lme4_code = oi$conv$lme4$code,
        conv_opt = oi$conv$opt,
        feval = oi$feval,
        optinfo = list(optimizer = oi$optimizer, message = oi$message,
                       warnings = lapply(oi$warnings, as.character), feval = oi$feval,
                       val = I(oi$val), conv = oi$conv,
                       derivs = if (!is.null(oi$derivs))
                           list(gradient = I(oi$derivs$gradient),
                                Hessian = rows(oi$derivs$Hessian)) else NULL),
        fit_warnings = as.list(unique(fw$warnings)),
        fit_messages = as.list(unique(fw$messages)),
        elapsed_seconds = elapsed,
        varcorr = varcorr_json(m),
        ranef = ranef_json(m),
        family_aic_saturated = saturated_aic(m),
        devcomp_cmp = named(getME(m, "devcomp")$cmp),
        devcomp_dims = named(getME(m, "devcomp")$dims),
        predvars = predvars_text(m)
    )
    res
}

fit_group <- function(spec) {
    d <- read_data(spec)
    pkg <- compare_package(d, spec$package_data)
    fits <- list()
    for (cn in unlist(spec$controls)) {
        ctrl <- controls[[cn]]()
        env <- new.env(parent = globalenv())
        env$d <- d
        env$ctrl <- ctrl
        cl <- make_call(spec, cn)
        t0 <- proc.time()[["elapsed"]]
        fw <- tryCatch(with_warnings(eval(cl, env)),
                       error = function(e) list(error = conditionMessage(e)))
        el <- proc.time()[["elapsed"]] - t0
        fits[[cn]] <- list(fw = fw, elapsed = el, env = env)
        cat(sprintf("  %-34s %-8s %s (%.1fs)\n", spec$name, cn,
                    if (is.null(fw$error)) sprintf("logLik=%.10f", as.numeric(logLik(fw$value)))
                    else paste("ERROR:", fw$error), el))
    }
    lls <- vapply(fits, function(f) if (is.null(f$fw$error)) as.numeric(logLik(f$fw$value))
                  else NA_real_, 0)
    best <- names(lls)[which.max(lls)]
    for (cn in names(fits)) {
        f <- fits[[cn]]
        out <- paste0(spec$out_prefix, "_", cn, ".json")
        if (!is.null(f$fw$error)) {
            res <- list(name = paste0(spec$name, "_", cn), model = spec$model,
                        agq_group = spec$name, control_name = cn,
                        control = control_text[[cn]], formula = spec$formula,
                        error = f$fw$error, elapsed_seconds = f$elapsed)
        } else {
            oth <- with_warnings({
                res <- fit_json(spec, f$env$d, cn, f$fw, f$elapsed)
                want_rows <- spec$rows == "all" || (spec$rows == "best" && cn == best)
                res$rows <- if (want_rows) rows_json(f$fw$value) else NULL
                res$rows_in <- if (want_rows) NULL else
                    if (spec$rows == "best") paste0(basename(spec$out_prefix), "_", best, ".json")
                    else NULL
                res$newdata <- newdata_json(f$fw$value, f$env$d, spec$newdata)
                res
            })
            res <- oth$value
            res$other_warnings <- as.list(unique(oth$warnings))
            res$other_messages <- as.list(unique(oth$messages))
        }
        res$logLik_by_control <- named(lls)
        res$best_control <- best
        res$is_best <- identical(cn, best)
        res$csv_vs_package <- pkg
        res$lme4_version <- as.character(packageVersion("lme4"))
        res$Matrix_version <- as.character(packageVersion("Matrix"))
        res$R_version <- R.version.string
        write_json_file(res, out)
    }
    if (!is.null(spec$inference)) inference(spec, fits[["default"]])
}

## ---- anova / confint / drop1 on the default fit ------------------------------------
table_json <- function(tab) {
    tab <- as.data.frame(tab)
    out <- list(rows = I(rownames(tab)))
    for (cn in names(tab)) out[[cn]] <- I(unname(tab[[cn]]))
    out
}

inference <- function(spec, f) {
    m1 <- f$fw$value
    env <- f$env
    inf <- spec$inference
    assign("d", env$d, envir = globalenv())
    assign("ctrl", env$ctrl, envir = globalenv())
    res <- list(model = spec$model, formula = spec$formula, control = control_text[["default"]],
                nAGQ = spec$nAGQ, null_formula = inf$null_formula)
    s0 <- spec
    s0$formula <- inf$null_formula
    m0w <- with_warnings(eval(make_call(s0, "default"), env))
    m0 <- m0w$value
    res$null_fit <- list(logLik = as.numeric(logLik(m0)), theta = named(getME(m0, "theta")),
                         beta = named(fixef(m0)), warnings = as.list(m0w$warnings),
                         messages = as.list(m0w$messages))
    a <- with_warnings(anova(m0, m1))
    res$anova <- c(table_json(a$value), list(warnings = as.list(a$warnings)))
    w <- with_warnings(confint(m1, method = "Wald"))
    res$confint_wald <- c(table_json(w$value), list(warnings = as.list(w$warnings)))
    t0 <- proc.time()[["elapsed"]]
    p <- tryCatch(with_warnings(confint(m1, method = "profile", oldNames = FALSE)),
                  error = function(e) list(error = conditionMessage(e)))
    if (is.null(p$error)) {
        res$confint_profile <- c(table_json(p$value),
                                 list(warnings = as.list(unique(p$warnings)),
                                      elapsed_seconds = proc.time()[["elapsed"]] - t0))
    } else res$confint_profile <- list(error = p$error)
    dr <- with_warnings(drop1(m1, test = "Chisq"))
    res$drop1 <- c(table_json(dr$value), list(warnings = as.list(unique(dr$warnings)),
                                            heading = I(attr(dr$value, "heading"))))
    res$lme4_version <- as.character(packageVersion("lme4"))
    res$R_version <- R.version.string
    write_json_file(res, inf$out)
    cat(sprintf("  %-34s anova / confint / drop1 -> %s\n", spec$name, basename(inf$out)))
}

## ---- export of the package data sets --------------------------------------------
export <- function(dir) {
    suppressPackageStartupMessages(library(mlmRev))
    sets <- list(cbpp = lme4::cbpp, grouseticks = lme4::grouseticks,
                 VerbAgg = lme4::VerbAgg, Contraception = mlmRev::Contraception)
    levels_out <- list()
    for (nm in names(sets)) {
        x <- as.data.frame(sets[[nm]])
        lv <- list()
        ty <- list()
        for (c in names(x)) {
            if (is.factor(x[[c]])) {
                lv[[c]] <- I(levels(x[[c]]))
                ty[[c]] <- if (is.ordered(x[[c]])) "ordered" else "factor"
                x[[c]] <- as.character(x[[c]])
            } else if (is.integer(x[[c]])) {
                ty[[c]] <- "integer"
            } else {
                ty[[c]] <- "double"
                x[[c]] <- num_txt(x[[c]])
            }
        }
        write.csv(x, file.path(dir, paste0(nm, ".csv")), row.names = FALSE, quote = TRUE)
        levels_out[[nm]] <- list(levels = lv, types = ty)
    }
    write_json_file(levels_out, file.path(dir, "levels.json"))
}

# R's parse of every numeric column of the CSVs, as %.17g (the driver compares
# them with pandas' parse).
csvcheck <- function(spec_path) {
    specs <- fromJSON(spec_path, simplifyVector = FALSE)
    for (s in specs) {
        d <- read.csv(s$data, stringsAsFactors = FALSE, colClasses = "character")
        dir.create(s$out, showWarnings = FALSE)
        for (c in unlist(s$numeric))
            writeLines(num_txt(as.numeric(d[[c]])), file.path(s$out, paste0(c, ".txt")))
    }
}

args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 2L) stop("usage: glmer_reference.R export DIR | fit SPEC.json | csvcheck SPEC.json")
if (args[[1]] == "export") {
    export(args[[2]])
} else if (args[[1]] == "csvcheck") {
    csvcheck(args[[2]])
} else if (args[[1]] == "fit") {
    specs <- fromJSON(args[[2]], simplifyVector = FALSE)
    for (spec in specs) fit_group(spec)
} else stop("unknown mode ", args[[1]])
