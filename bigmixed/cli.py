"""The ``bigmixed`` command line (also ``python -m bigmixed``).

    bigmixed fit --data cohort.parquet --formula "y ~ age + sex + (1 | doctor)" --out fit.json
    bigmixed fit --data cohort.parquet --formula "~ age + (1 | doctor)" --responses-glob 'marker_*' --out fits.ndjson
    bigmixed simulate --n-doctors 407 --seed 1 --out hdp.parquet
    bigmixed --version

Results go to --out (or stdout), logs to stderr (the "bigmixed" logger; the root logger is never
touched). Files are written atomically: a temporary file in the target's directory, renamed
into place when complete, so a failed run leaves no partial file. Exit codes (see README,
"Command line"): 0 success, 1 internal error, 2 usage, 3 unreadable data, 4 formula or column
error, 5 numerical failure, 6 --strict and a warning (singular fit, no convergence, a failed
response), 7 output not writable.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import math
import os
import re
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Sequence

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_MODEL = 4
EXIT_NUMERIC = 5
EXIT_STRICT = 6
EXIT_OUTPUT = 7
EXIT_INTERRUPTED = 130

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_INTERNAL: "internal error (a bug: please report it with the log)",
    EXIT_USAGE: "usage error (bad or missing arguments)",
    EXIT_DATA: "the data file cannot be read",
    EXIT_MODEL: "formula or column error (bigmixed.FormulaError / DesignError)",
    EXIT_NUMERIC: "numerical failure while fitting",
    EXIT_STRICT: "--strict: a singular fit, a fit that did not converge, or a failed response",
    EXIT_OUTPUT: "an output file cannot be written",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); nothing written",
}

CSV_COLUMNS = ["response", "status", "effect", "group", "term", "estimate", "std_error", "t_value", "error"]

log = logging.getLogger("bigmixed")


class CLIError(Exception):
    """An error that ends the command with a given exit code."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


# ======================================================================================
# Reading data
# ======================================================================================

_PARQUET_EXT = (".parquet", ".pq", ".parq")
_COMPRESSION_EXT = (".gz", ".bz2", ".xz", ".zst", ".zip")


def data_format(path: str) -> str:
    """"parquet", "csv" or "tsv" from the file name, else from the first bytes."""
    low = path.lower()
    for ext in _COMPRESSION_EXT:
        if low.endswith(ext):
            low = low[: -len(ext)]
            break
    if low.endswith(_PARQUET_EXT):
        return "parquet"
    if low.endswith((".tsv", ".tab")):
        return "tsv"
    if low.endswith((".csv", ".txt")):
        return "csv"
    with open(path, "rb") as fh:
        head = fh.read(4)
    return "parquet" if head == b"PAR1" else "csv"


def data_columns(path: str, fmt: str) -> list:
    """The column names of a data file, without reading its rows."""
    if fmt == "parquet":
        if os.path.isdir(path):  # a partitioned data set
            import pyarrow.dataset as ds

            return list(ds.dataset(path, format="parquet", partitioning="hive").schema.names)
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    import pandas as pd

    return [str(c) for c in pd.read_csv(path, nrows=0, sep="\t" if fmt == "tsv" else ",").columns]


def read_data(path: str, columns: Sequence[str] | None = None):
    """Read CSV / TSV (optionally compressed) or Parquet into a DataFrame.

    `columns`: read only these (None: all). Raises CLIError(EXIT_DATA) if the file cannot be
    read.
    """
    import pandas as pd

    if not os.path.exists(path):
        raise CLIError(EXIT_DATA, f"data file {path!r} does not exist")
    try:
        fmt = data_format(path) if not os.path.isdir(path) else "parquet"
        cols = None if columns is None else list(columns)
        if fmt == "parquet":
            df = pd.read_parquet(path, columns=cols)
        else:
            df = pd.read_csv(path, usecols=cols, sep="\t" if fmt == "tsv" else ",")
    except CLIError:
        raise
    except MemoryError:
        raise CLIError(EXIT_DATA, f"not enough memory to read {path!r}") from None
    except Exception as e:  # noqa: BLE001 - pyarrow / pandas parser errors, permissions, encodings
        raise CLIError(EXIT_DATA, f"cannot read data file {path!r}: {type(e).__name__}: {e}") from None
    return df, fmt


# ======================================================================================
# Writing outputs atomically
# ======================================================================================


def file_mode(path: str) -> int:
    """The mode a new file gets from open() (0666 & ~umask), or the existing file's mode."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        pass
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


class AtomicOutput:
    """A text output written to a temporary file in the target's directory, then renamed.

    Created before any work, so that an unwritable target is reported (exit 7) before the
    data are read or anything is fitted. ``path=None`` writes to stdout (streamed).
    """

    def __init__(self, path: str | None, *, stdout=None):
        self.path = path
        self.tmp = None
        self._fh = None
        self._stdout = stdout if stdout is not None else sys.stdout
        if path is None:
            return
        if os.path.isdir(path):
            raise CLIError(EXIT_OUTPUT, f"output path {path!r} is a directory")
        directory = os.path.dirname(os.path.abspath(path))
        try:
            fd, self.tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
            os.chmod(self.tmp, file_mode(path))  # mkstemp's 0600 -> what open() would give
            self._fh = os.fdopen(fd, "w", encoding="utf-8", newline="")
        except OSError as e:
            raise CLIError(EXIT_OUTPUT, f"cannot write to {path!r}: {e.strerror or e}") from None

    @property
    def stream(self):
        return self._fh if self._fh is not None else self._stdout

    def write(self, text: str) -> None:
        try:
            self.stream.write(text)
        except OSError as e:
            raise CLIError(EXIT_OUTPUT, f"cannot write to {self.path or 'stdout'}: {e.strerror or e}") from None

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.stream.flush()

    def commit(self) -> None:
        if self._fh is None:
            self.flush()
            return
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
            os.replace(self.tmp, self.path)
            self.tmp = None
        except OSError as e:
            self.discard()
            raise CLIError(EXIT_OUTPUT, f"cannot write {self.path!r}: {e.strerror or e}") from None

    def discard(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None
        if self.tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
            self.tmp = None


def _check_save_target(path: str, many: bool) -> str:
    """--save: a file (one response) or a directory (several); checked before fitting."""
    if many or os.path.isdir(path) or path.endswith(os.sep):
        target_dir = path
        try:
            os.makedirs(target_dir, exist_ok=True)
        except OSError as e:
            raise CLIError(EXIT_OUTPUT, f"cannot create the --save directory {path!r}: {e.strerror or e}") from None
    else:
        target_dir = os.path.dirname(os.path.abspath(path))
    try:
        fd, probe = tempfile.mkstemp(prefix=".bigmixed-probe-", dir=target_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CLIError(EXIT_OUTPUT, f"cannot write to the --save location {path!r}: {e.strerror or e}") from None
    return target_dir


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def _save_path(save: str, response: str, many: bool) -> str:
    if many or os.path.isdir(save) or save.endswith(os.sep):
        name = _UNSAFE.sub("_", response).strip("._") or "model"
        return os.path.join(save, f"{name}.bmfit")
    return save


# ======================================================================================
# Formatting results
# ======================================================================================


def _csv_text(rows: list, header: bool) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(CSV_COLUMNS)
    for r in rows:
        w.writerow(["" if v is None or (isinstance(v, float) and math.isnan(v)) else
                    (repr(v) if isinstance(v, float) else v) for v in r])
    return buf.getvalue()


def _csv_rows_fit(response: str, fit) -> list:
    from .io.tidy import tidy_rows

    return [(response, "ok", *row, None) for row in tidy_rows(fit)]


def _csv_rows_error(response: str, error_type: str, message: str) -> list:
    return [(response, "error", None, None, None, None, None, None, f"{error_type}: {message}")]


def _strict_problems(fit) -> list:
    from .warnings import ConvergenceWarning, SingularFitWarning

    out = []
    for w in getattr(fit, "warnings", []) or []:
        if isinstance(w, (SingularFitWarning, ConvergenceWarning)):
            out.append(f"{type(w).__name__}: {w}")
    return out


# ======================================================================================
# Commands
# ======================================================================================


def _residual_structures(args) -> dict:
    """residual= / variance= keyword arguments from --ar1, --compound-symmetry, --var-ident."""
    from .spec.residual import AR1, CompoundSymmetry, VarIdent

    out = {}
    if getattr(args, "ar1", None):
        parts = [x.strip() for x in args.ar1.split(",")]
        if len(parts) != 2 or not all(parts):
            raise CLIError(EXIT_USAGE, f"--ar1 takes TIME,GROUP (two column names), not {args.ar1!r}")
        out["residual"] = AR1(parts[0], parts[1])
    if getattr(args, "compound_symmetry", None):
        out["residual"] = CompoundSymmetry(args.compound_symmetry.strip())
    if getattr(args, "var_ident", None):
        out["variance"] = VarIdent(args.var_ident.strip())
    return out


def _needed_columns(path: str, fmt: str, formula: str, responses: list | None, glob: str | None):
    """Columns to read: those named in the formula, the responses, the glob's matches."""
    from .fitting.batch import _columns_named_in, match_responses

    try:
        cols = data_columns(path, fmt)
    except Exception as e:  # noqa: BLE001 - any reader error means the file cannot be read
        raise CLIError(EXIT_DATA, f"cannot read data file {path!r}: {type(e).__name__}: {e}") from None
    need = _columns_named_in(formula, cols)
    if responses:
        need += [r for r in responses if r in cols]
    if glob:
        need += match_responses(cols, glob)
    return list(dict.fromkeys(need)), cols


def _exit_for(e: BaseException) -> tuple:
    """An exception raised while building or fitting -> (exit code, message)."""
    import numpy as np

    from .errors import BigmixedError, DesignError, FormulaError

    if isinstance(e, CLIError):
        return e.code, str(e)
    if isinstance(e, (FormulaError, DesignError)):
        return EXIT_MODEL, f"{type(e).__name__}: {e}"
    if isinstance(e, BigmixedError):
        return EXIT_MODEL, f"{type(e).__name__}: {e}"
    if isinstance(e, (ArithmeticError, np.linalg.LinAlgError, MemoryError, RuntimeError, ValueError)):
        return EXIT_NUMERIC, f"numerical failure: {type(e).__name__}: {e}"
    if type(e).__name__.startswith("Cholmod"):
        return EXIT_NUMERIC, f"numerical failure: {type(e).__name__}: {e}"
    return EXIT_INTERNAL, f"internal error: {type(e).__name__}: {e}"


class _Progress:
    """A one-line progress display on stderr, only on a terminal."""

    def __init__(self, total: int, enabled: bool):
        self.total = total
        self.enabled = enabled and _isatty(sys.stderr)
        self.last = 0.0

    def update(self, done: int, failed: int, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.2 and done < self.total:
            return
        self.last = now
        sys.stderr.write(f"\rbigmixed: fitted {done}/{self.total} ({failed} failed)")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _log_caught(caught) -> None:
    seen = set()
    for w in caught:
        key = (w.category.__name__, str(w.message))
        if key in seen:
            continue
        seen.add(key)
        log.warning("%s: %s", w.category.__name__, w.message)


def cmd_fit(args) -> int:
    import bigmixed as bm

    from .io.tidy import fit_document, jsonable

    t_start = time.perf_counter()
    many = bool(args.responses or args.responses_glob)
    fmt = args.format or _format_from_name(args.out) or "json"
    responses = None
    if args.responses:
        responses = [r.strip() for r in args.responses.split(",") if r.strip()]
        if not responses:
            raise CLIError(EXIT_USAGE, "--responses: no column names given")

    # 1. the formula (fast, before touching any file)
    from .fitting.batch import _split_formula

    if many:
        _split_formula(args.formula, responses or ["_"])  # one-sided with --responses
    else:
        from .spec.formula import parse_formula

        if args.formula.strip().startswith("~"):
            raise CLIError(EXIT_USAGE, "a one-sided formula ('~ ...') needs --responses or --responses-glob")
        parse_formula(args.formula)

    structures = _residual_structures(args)
    if structures and (many or getattr(args, "dask", None) is not None):
        raise CLIError(EXIT_USAGE, "--ar1 / --compound-symmetry / --var-ident fit one response in "
                                   "memory; drop --responses / --responses-glob / --dask")

    # 2. the outputs: writable before any work
    if args.out is not None and os.path.abspath(args.out) == os.path.abspath(args.data):
        raise CLIError(EXIT_USAGE, "--out is the input data file; refusing to overwrite it")
    out = AtomicOutput(args.out)
    dask_client = None
    try:
        if args.save:
            _check_save_target(args.save, many)

        # 3. the data: only the columns the formula and the responses need
        t0 = time.perf_counter()
        if not os.path.exists(args.data):
            raise CLIError(EXIT_DATA, f"data file {args.data!r} does not exist")
        dfmt = data_format(args.data) if not os.path.isdir(args.data) else "parquet"
        need, all_cols = _needed_columns(args.data, dfmt, args.formula, responses, args.responses_glob)
        if structures:
            from .spec.residual import residual_columns

            cols = residual_columns(structures.get("residual"), structures.get("variance"))
            need = list(dict.fromkeys(need + [c for c, _ in cols if c in all_cols]))
        if getattr(args, "dask", None) is not None:  # partitions through Dask, never collected
            if many:
                raise CLIError(EXIT_USAGE, "--dask fits one response; drop --responses / --responses-glob")
            data, dask_client = _read_dask(args.data, dfmt, args.dask)
            need = all_cols  # lazily all columns: a missing column is reported from the schema
            t_read = time.perf_counter() - t0
            input_info = {"path": args.data, "format": dfmt, "partitions": data.npartitions,
                          "dask_scheduler": args.dask}
        else:
            data, dfmt = read_data(args.data, need)
            t_read = time.perf_counter() - t0
            log.info("read %d rows x %d of %d columns from %s (%s) in %.2f s", len(data), data.shape[1],
                     len(all_cols), args.data, dfmt, t_read)
            input_info = {"path": args.data, "format": dfmt, "rows": len(data),
                          "columns_read": [str(c) for c in data.columns]}

        if many:
            code = _fit_many(args, data, responses, out, fmt, input_info, t_read, t_start)
        else:
            # 4. fit
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    model = bm.lmm(args.formula, data, reml=not args.ml, solver=args.solver,
                                   **structures)
                except bm.MissingColumnError:
                    if len(need) == len(all_cols):
                        raise
                    data, _ = read_data(args.data, None)  # the full file names the close matches
                    model = bm.lmm(args.formula, data, reml=not args.ml, solver=args.solver,
                                   **structures)
                log.info("fitting %s by %s: %d observations, groups %s", args.formula,
                         "ML" if args.ml else "REML", model.n_obs,
                         ", ".join(f"{f.group} {f.n_levels}" for f in model.structure.factors))
                fit = model.fit()
            _log_caught(caught)
            log.info("objective %.6f after %d evaluations (%s)", fit.objective,
                     fit.optimizer.n_evaluations, "converged" if fit.converged else "NOT converged")
            problems = _strict_problems(fit)
            if args.strict and problems:
                for p in problems:
                    log.error("--strict: %s", p)
                out.discard()
                log.error("--strict: no output written")
                return EXIT_STRICT
            t_write = time.perf_counter()
            response = model.design.response
            if fmt == "csv":
                out.write(_csv_text(_csv_rows_fit(response, fit), header=True))
            else:
                doc = fit_document(fit, extra={"input": input_info})
                doc["timings"] = dict(doc.get("timings", {}), read=t_read,
                                      total=time.perf_counter() - t_start)
                out.write(json.dumps(jsonable(doc), indent=1, allow_nan=False) + "\n")
            if args.save:
                target = _save_path(args.save, response, False)
                try:
                    fit.save(target)
                except OSError as e:
                    raise CLIError(EXIT_OUTPUT, f"cannot write the saved model {target!r}: {e}") from None
                log.info("saved the model to %s", target)
            out.commit()
            if args.out:
                log.info("wrote %s in %.2f s", args.out, time.perf_counter() - t_write)
            code = EXIT_OK
    except BaseException:
        out.discard()
        raise
    finally:
        if dask_client is not None:
            cluster = getattr(dask_client, "cluster", None) if args.dask == "local" else None
            dask_client.close()
            if cluster is not None:
                cluster.close()
    return code


def _read_dask(path: str, fmt: str, address: str):
    """A lazy Dask DataFrame of `path` and a Client: to `address`, or ("local") a LocalCluster
    sized to this machine (bigmixed.distributed.local_cluster)."""
    try:
        import dask.dataframe as dd
        from distributed import Client
    except ImportError:
        raise CLIError(EXIT_USAGE, "--dask needs dask: pip install 'bigmixed[dask]'") from None
    from .distributed.cluster import local_cluster

    client = local_cluster(dashboard_address=None) if address == "local" else Client(address)
    try:
        if fmt == "parquet":
            data = dd.read_parquet(path)
        else:
            data = dd.read_csv(path, sep="\t" if fmt == "tsv" else ",")
    except Exception as e:  # noqa: BLE001 - reader errors
        client.close()
        raise CLIError(EXIT_DATA, f"cannot read data file {path!r}: {type(e).__name__}: {e}") from None
    log.info("Dask: %d partitions of %s (%s) on %s", data.npartitions, path, fmt, client)
    return data, client


def _format_from_name(path: str | None) -> str | None:
    if not path:
        return None
    low = path.lower()
    if low.endswith(".csv"):
        return "csv"
    if low.endswith((".json", ".ndjson", ".jsonl")):
        return "json"
    return None


def _fit_many(args, data, responses, out, fmt, input_info, t_read, t_start) -> int:
    import bigmixed as bm

    from .errors import MissingColumnError
    from .fitting.batch import available_cores, match_responses

    spec = responses if responses else args.responses_glob
    try:
        stream = bm.iter_fits(args.formula, data, spec, reml=not args.ml, n_jobs=args.jobs,
                              solver=args.solver)
    except MissingColumnError:
        full, _ = read_data(args.data, None)
        stream = bm.iter_fits(args.formula, full, spec, reml=not args.ml, n_jobs=args.jobs,
                              solver=args.solver)
    total = len(responses) if responses else len(match_responses(data.columns, args.responses_glob))
    log.info("fitting %d responses on %s by %s (%s threads)", total, args.formula,
             "ML" if args.ml else "REML", args.jobs or available_cores())
    progress = _Progress(total, not args.quiet)
    n_done = n_failed = n_strict = 0
    header = True
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            for r in stream:
                n_done += 1
                if r.ok:
                    problems = _strict_problems(r.fit)
                    n_strict += bool(problems)
                    if fmt == "csv":
                        out.write(_csv_text(_csv_rows_fit(r.response, r.fit), header))
                    else:
                        out.write(json.dumps(r.to_record(), allow_nan=False) + "\n")
                    if args.save:
                        target = _save_path(args.save, r.response, True)
                        try:
                            r.fit.save(target)
                        except OSError as e:
                            raise CLIError(EXIT_OUTPUT, f"cannot write the saved model {target!r}: {e}") from None
                else:
                    n_failed += 1
                    log.debug("%s failed: %s: %s", r.response, r.error_type, r.error)
                    if fmt == "csv":
                        out.write(_csv_text(_csv_rows_error(r.response, r.error_type, r.error), header))
                    else:
                        out.write(json.dumps(r.to_record(), allow_nan=False) + "\n")
                header = False
                if out.path is None:
                    out.flush()
                progress.update(n_done, n_failed)
        finally:
            progress.close()
    from .warnings import BigmixedWarning

    _log_caught([w for w in caught if not issubclass(w.category, BigmixedWarning)])
    log.info("%d responses in %.2f s: %d ok, %d failed, %d singular or not converged",
             n_done, time.perf_counter() - t0, n_done - n_failed, n_failed, n_strict)
    if n_failed:
        log.warning("%d of %d responses failed (lines with status \"error\")", n_failed, n_done)
    if args.strict and (n_failed or n_strict):
        log.error("--strict: %d failed and %d singular / not converged responses; no output written",
                  n_failed, n_strict)
        out.discard()
        return EXIT_STRICT
    out.commit()
    if args.out:
        log.info("wrote %s", args.out)
    return EXIT_OK


def cmd_simulate(argv: list) -> int:
    from .data_gen.__main__ import main as data_gen_main

    return int(data_gen_main(argv) or 0)


# ======================================================================================
# Parser and entry point
# ======================================================================================


def _epilog() -> str:
    return "exit codes:\n" + "\n".join(f"  {k}  {v}" for k, v in EXIT_CODES.items())


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    p = argparse.ArgumentParser(
        prog="bigmixed",
        description="Linear mixed models (REML/ML) that match lme4, at biobank scale.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"bigmixed {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    f = sub.add_parser(
        "fit", help="fit a model (or one model per response) and write the results",
        description="Fit a linear mixed model by REML (default) or ML. With --responses or "
                    "--responses-glob and a one-sided formula ('~ x + (1 | g)'), fit one model per "
                    "response on a shared design and stream one result per response (NDJSON lines "
                    "or CSV rows).",
        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("--data", required=True, help="CSV/TSV (optionally compressed) or Parquet file")
    f.add_argument("--formula", required=True, help='lme4 formula, e.g. "y ~ age + sex + (1 | doctor)"')
    f.add_argument("--out", default=None, help="output file (default: stdout); written atomically")
    f.add_argument("--format", choices=("json", "csv"), default=None,
                   help="json (one response: a document; several: NDJSON lines) or csv (a tidy table "
                        "of fixed effects and variance components); default from --out's extension, else json")
    f.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    f.add_argument("--strict", action="store_true",
                   help="exit 6 and write nothing if a fit is singular, did not converge, or a response failed")
    f.add_argument("--save", default=None, metavar="PATH",
                   help="also save the fitted model (bm.load): a file, or with several responses a directory "
                        "holding <response>.bmfit")
    g = f.add_mutually_exclusive_group()
    g.add_argument("--responses", default=None, metavar="Y1,Y2,...",
                   help="comma-separated response columns (with a one-sided formula)")
    g.add_argument("--responses-glob", default=None, metavar="PATTERN",
                   help="response columns matching a shell pattern, e.g. 'marker_*'")
    f.add_argument("--jobs", type=int, default=None, help="threads for several responses (default: all cores)")
    f.add_argument("--dask", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="fit through Dask (partitioned Parquet or CSV, never collected): on the "
                        "scheduler at ADDRESS, or without ADDRESS on a LocalCluster sized to this machine")
    r = f.add_mutually_exclusive_group()
    r.add_argument("--ar1", default=None, metavar="TIME,GROUP",
                   help="AR(1) residuals within GROUP ordered by TIME (nlme's corAR1; corCAR1 when "
                        "TIME has non-integer values), e.g. --ar1 visit,patient")
    r.add_argument("--compound-symmetry", default=None, metavar="GROUP",
                   help="equal residual correlation within GROUP (nlme's corCompSymm)")
    f.add_argument("--var-ident", default=None, metavar="COLUMN",
                   help="a separate residual SD per level of COLUMN (nlme's varIdent)")
    f.add_argument("--solver", choices=("auto", "blockdiag", "cholmod", "schur"), default="auto", help=argparse.SUPPRESS)
    v = f.add_mutually_exclusive_group()
    v.add_argument("-q", "--quiet", action="store_true", help="log errors only, no progress display")
    v.add_argument("-v", "--verbose", action="store_true", help="log details (debug level)")

    sub.add_parser("simulate", help="generate an hdp-style data set (python -m bigmixed.data_gen; "
                                    "'bigmixed simulate --help' for its options)", add_help=False)
    return p


@contextlib.contextmanager
def _logging(quiet: bool, verbose: bool):
    """A stderr handler on the "bigmixed" logger only, for the duration of the command."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("bigmixed: %(levelname)s: %(message)s"
                                           if verbose else "bigmixed: %(message)s"))
    old_level, old_propagate = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.ERROR if quiet else logging.DEBUG if verbose else logging.INFO)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
        log.propagate = old_propagate


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "simulate":
        return cmd_simulate(argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help / --version (0) or a usage error (2)
        return int(e.code or 0) if not isinstance(e.code, str) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    with _logging(args.quiet, args.verbose):
        try:
            return cmd_fit(args)
        except CLIError as e:
            log.error("%s", e)
            return e.code
        except KeyboardInterrupt:
            log.error("interrupted; no output written")
            return EXIT_INTERRUPTED
        except Exception as e:  # noqa: BLE001
            code, msg = _exit_for(e)
            log.error("%s", msg)
            if code == EXIT_INTERNAL or args.verbose:
                log.debug("%s", traceback.format_exc())
                if code == EXIT_INTERNAL:
                    sys.stderr.write(traceback.format_exc())
            return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
