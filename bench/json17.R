# Helpers shared by bench/parity_reference.R (glmer_reference.R has the same
# writer inline): a JSON writer that keeps every double exactly (%.17g; jsonlite
# stops at 15 significant digits), and warning capture.
#
# NA -> null, NaN -> NaN, +-Inf -> Infinity / -Infinity (Python's json reads all
# three). Length-1 vectors are scalars unless wrapped in I(); matrices are lists
# of rows; named lists are objects.

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
    if (is.matrix(x) && is.atomic(x)) return(to_json(rows(x), indent))
    if (is.list(x)) {
        nm <- names(x)
        if (length(x) == 0L) return(if (is.null(nm)) "[]" else "{}")
        parts <- vapply(x, to_json, "", indent = indent + 1L)
        if (!is.null(nm) && all(nm != "")) {
            keys <- vapply(nm, function(k) {
                s <- as.character(jsonlite::toJSON(k))
                substr(s, 2, nchar(s) - 1)
            }, "")
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

named <- function(x) {
    out <- as.list(unname(x))
    names(out) <- names(x)
    out
}
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
try_w <- function(expr) tryCatch(with_warnings(expr),
                                 error = function(e) list(error = conditionMessage(e)))

# A data frame / anova table as {rows: [...], <column>: [...], ...}.
table_json <- function(tab) {
    tab <- as.data.frame(tab)
    out <- list(rows = I(rownames(tab)))
    for (cn in names(tab)) {
        v <- tab[[cn]]
        out[[cn]] <- I(if (is.factor(v)) as.character(v) else unname(v))
    }
    out
}
