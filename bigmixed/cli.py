"""The ``bigmixed`` command line (also ``python -m bigmixed``).

    bigmixed fit --data cohort.parquet --formula "y ~ age + sex + (1 | doctor)" --out fit.json
    bigmixed fit --data cohort.parquet --formula "~ age + (1 | doctor)" --responses-glob 'marker_*' --out fits.ndjson
    bigmixed simulate --n-doctors 407 --seed 1 --out hdp.parquet
    bigmixed --version

Results go to --out (or stdout), logs and progress to stderr (the "bigmixed" logger; the root
logger is never touched). A regular file is written atomically: a temporary file in the
target's directory, renamed into place when complete, so a failed or interrupted run leaves no
partial file; stdout, FIFOs and character devices (/dev/null) are written through. Exit codes
(see README, "Command line"): 0 success, 1 internal error, 2 usage, 3 unreadable data, 4
formula or column error, 5 numerical failure, 6 --strict and a warning (singular fit, no
convergence, a failed response), 7 output not writable, 129 / 130 / 143 SIGHUP / SIGINT /
SIGTERM (nothing written).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import io
import json
import logging
import math
import os
import re
import signal
import stat
import sys
import tempfile
import threading
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
EXIT_HANGUP = 128 + 1        # SIGHUP
EXIT_INTERRUPTED = 128 + 2   # SIGINT (Ctrl-C)
EXIT_TERMINATED = 128 + 15   # SIGTERM

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_INTERNAL: "internal error (a bug: please report it with the log)",
    EXIT_USAGE: "usage error (bad or missing arguments)",
    EXIT_DATA: "the data file cannot be read",
    EXIT_MODEL: "formula or column error (bigmixed.FormulaError / DesignError)",
    EXIT_NUMERIC: "numerical failure while fitting",
    EXIT_STRICT: "--strict: a singular fit, a fit that did not converge, or a failed response",
    EXIT_OUTPUT: "an output file cannot be written",
    EXIT_HANGUP: "hung up (SIGHUP); nothing written",
    EXIT_INTERRUPTED: "interrupted (SIGINT, Ctrl-C); nothing written",
    EXIT_TERMINATED: "terminated (SIGTERM); nothing written",
}

# the tidy table of CSV / Parquet outputs (bigmixed.io.tidy.TABLE_COLUMNS; GLMMs: z_value
# instead of t_value and df)
CSV_COLUMNS = ["response", "status", "effect", "group", "term", "estimate", "std_error", "t_value",
               "df", "p_value", "aliased", "error"]
GLMM_CSV_COLUMNS = ["response", "status", "effect", "group", "term", "estimate", "std_error",
                    "z_value", "p_value", "aliased", "error"]
DDF_CHOICES = ("satterthwaite", "none")

# --format: json (one response: an indented document; several: NDJSON lines), ndjson (one line
# per response), csv / parquet (the tidy table of CSV_COLUMNS)
FORMATS = ("json", "ndjson", "csv", "parquet")
_EXT_FORMAT = {".json": "json", ".ndjson": "ndjson", ".jsonl": "ndjson", ".csv": "csv",
               ".parquet": "parquet", ".pq": "parquet", ".parq": "parquet"}
TABLE_FORMAT = "bigmixed.fit.tidy"  # the Parquet table's key-value metadata
TABLE_VERSION = 2  # 2: df, p_value, aliased (GLMMs: z_value, p_value, aliased); "ddf"
# bigmixed predict: the table's metadata (Parquet key-value "bigmixed"), the JSON document, the
# NDJSON lines (JSON Schemas: bigmixed.io.schemas, "predict-metadata", "predict", "predict-ndjson")
PREDICT_FORMAT = "bigmixed.predict.table"
PREDICT_DOCUMENT = "bigmixed.predict"
PREDICT_NDJSON = "bigmixed.predict.ndjson"
PREDICT_VERSION = 1

log = logging.getLogger("bigmixed")


class CLIError(Exception):
    """An error that ends the command with a given exit code."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class SignalExit(BaseException):
    """SIGTERM or SIGHUP received: unwinds like KeyboardInterrupt (temporary files removed)."""

    def __init__(self, signum: int):
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum


# ======================================================================================
# Reading data
# ======================================================================================

_PARQUET_EXT = (".parquet", ".pq", ".parq")
_COMPRESSION_EXT = (".gz", ".bz2", ".xz", ".zst", ".zip")
SEPARATORS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
_SEP_NAMES = {"comma": ",", "semicolon": ";", "tab": "\t", "\\t": "\t", "pipe": "|"}
_SNIFF_BYTES = 1 << 16
_SNIFF_LINES = 100


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


def parse_sep(text: str) -> str:
    """--sep: one character, or comma / semicolon / tab / pipe / \\t."""
    sep = _SEP_NAMES.get(text.lower(), text)
    if len(sep) != 1 or sep in "\r\n\"":
        raise CLIError(EXIT_USAGE, f"--sep takes one character or comma, semicolon, tab, pipe; not {text!r}")
    return sep


def _head_text(path: str) -> str | None:
    """The first bytes of a (possibly compressed) text file, decoded; None if unknown."""
    low = path.lower()
    try:
        if low.endswith(".gz"):
            import gzip

            with gzip.open(path, "rb") as fh:
                raw = fh.read(_SNIFF_BYTES)
        elif low.endswith(".bz2"):
            import bz2

            with bz2.open(path, "rb") as fh:
                raw = fh.read(_SNIFF_BYTES)
        elif low.endswith(".xz"):
            import lzma

            with lzma.open(path, "rb") as fh:
                raw = fh.read(_SNIFF_BYTES)
        elif low.endswith(".zip"):
            import zipfile

            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if not n.endswith("/")]
                if not names:
                    return None
                with zf.open(names[0]) as fh:
                    raw = fh.read(_SNIFF_BYTES)
        elif low.endswith(".zst"):
            try:
                import zstandard
            except ImportError:
                return None
            with open(path, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as fh:
                raw = fh.read(_SNIFF_BYTES)
        else:
            with open(path, "rb") as fh:
                raw = fh.read(_SNIFF_BYTES)
    except (OSError, EOFError, ValueError) as e:
        raise CLIError(EXIT_DATA, f"cannot read data file {path!r}: {type(e).__name__}: {e}") from None
    return raw.decode("utf-8", errors="replace").lstrip("\ufeff")


def sniff_separator(path: str) -> str:
    """The column separator of a CSV file: comma, semicolon, tab or pipe, from its first lines.

    The candidate that splits the header into two or more fields and every row into as many
    wins (the most fields, then comma, tab, semicolon, pipe); a file of one column is read with
    commas. Raises CLIError(EXIT_DATA) naming the field counts when no candidate fits."""
    text = _head_text(path)
    if not text:
        return ","
    if len(text.encode("utf-8", errors="replace")) >= _SNIFF_BYTES and "\n" in text:
        text = text[: text.rindex("\n")]  # complete lines only
    lines = text.splitlines()[:_SNIFF_LINES]
    sample = "\n".join(lines)
    widths = {}
    for sep in (",", "\t", ";", "|"):
        try:
            rows = [len(r) for r in csv.reader(io.StringIO(sample), delimiter=sep) if r]
        except csv.Error:
            continue
        if rows:
            widths[sep] = rows
    consistent = [s for s, w in widths.items() if w[0] >= 2 and all(x == w[0] for x in w)]
    if consistent:
        return max(consistent, key=lambda s: widths[s][0])  # ties: the order above (stable)
    if all(w[0] == 1 for w in widths.values()):
        return ","
    mostly = [s for s, w in widths.items() if w[0] >= 2 and sum(x == w[0] for x in w) > len(w) / 2]
    if len(mostly) == 1:
        return mostly[0]  # a few ragged rows: the reader names them
    detail = "; ".join(
        f"{SEPARATORS[s]} {s!r} splits the header into {w[0]} field(s) and the rows into "
        f"{', '.join(str(x) for x in sorted(set(w[1:]))) or 'none'}"
        for s, w in widths.items() if w[0] >= 2)
    raise CLIError(EXIT_DATA, f"cannot tell the column separator of {path!r} from its first "
                              f"{len(lines)} line(s): {detail}; pass --sep (e.g. --sep ';')")


def csv_separator(path: str, fmt: str, sep: str | None = None) -> str:
    """--sep if given, a tab for .tsv / .tab, else sniffed (sniff_separator)."""
    if sep is not None:
        return sep
    if fmt == "tsv":
        return "\t"
    return sniff_separator(path)


def data_columns(path: str, fmt: str, sep: str | None = None) -> list:
    """The column names of a data file, without reading its rows."""
    if fmt == "parquet":
        if os.path.isdir(path):  # a partitioned data set
            import pyarrow.dataset as ds

            return list(ds.dataset(path, format="parquet", partitioning="hive").schema.names)
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    import pandas as pd

    return [str(c) for c in pd.read_csv(path, nrows=0, sep=csv_separator(path, fmt, sep)).columns]


_DECIMAL_COMMA = re.compile(r"^\s*[-+]?(\d+|\d{1,3}(\.\d{3})+),\d+([eE][-+]?\d+)?\s*$")


def _check_decimal_commas(df, path: str, sep: str) -> None:
    """A column of a ';' / tab / '|' file whose values all look like numbers with a decimal
    comma ('1,5') would be read as strings: say so (decimal commas are not supported)."""
    for col in df.columns:
        s = df[col]
        if s.dtype.kind in "biufcmM":
            continue
        sample = s.dropna().astype(str).head(1000)
        if len(sample) and all(_DECIMAL_COMMA.match(v) for v in sample):
            raise CLIError(
                EXIT_DATA,
                f"column {str(col)!r} of {path!r} ({SEPARATORS.get(sep, repr(sep))}-separated) holds "
                f"numbers written with a decimal comma (e.g. {sample.iloc[0]!r}); bigmixed reads '.' "
                "as the decimal mark: convert the file first (e.g. pandas.read_csv(path, sep="
                f"{sep!r}, decimal=',').to_parquet(...))")


def read_data(path: str, columns: Sequence[str] | None = None, sep: str | None = None):
    """Read CSV / TSV (optionally compressed) or Parquet into a DataFrame.

    `columns`: read only these (None: all). `sep`: the CSV separator (None: csv_separator).
    Raises CLIError(EXIT_DATA) if the file cannot be read.
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
            sep = csv_separator(path, fmt, sep)
            df = pd.read_csv(path, usecols=cols, sep=sep)
            if sep != ",":
                _check_decimal_commas(df, path, sep)
    except CLIError:
        raise
    except MemoryError:
        raise CLIError(EXIT_DATA, f"not enough memory to read {path!r}") from None
    except Exception as e:  # noqa: BLE001 - pyarrow / pandas parser errors, permissions, encodings
        raise CLIError(EXIT_DATA, f"cannot read data file {path!r}: {type(e).__name__}: {e}") from None
    return df, fmt


# ======================================================================================
# Signals: SIGINT, SIGTERM and SIGHUP unwind the command (temporary files removed)
# ======================================================================================

_EXIT_FOR_SIGNAL = {signal.SIGINT: EXIT_INTERRUPTED, signal.SIGTERM: EXIT_TERMINATED}
if hasattr(signal, "SIGHUP"):
    _EXIT_FOR_SIGNAL[signal.SIGHUP] = EXIT_HANGUP

_LIVE_TEMPS: set = set()  # temporary files of this process not yet renamed or removed


def _remove_live_temps() -> None:
    for path in list(_LIVE_TEMPS):
        with contextlib.suppress(OSError):
            os.unlink(path)
        _LIVE_TEMPS.discard(path)


class _Signals:
    """The command's handlers of SIGINT, SIGTERM and SIGHUP (main thread only).

    The first signal raises KeyboardInterrupt (SIGINT) or SignalExit in the main thread, which
    unwinds the command: outputs discarded, temporary files removed, exit 128 + signal. While
    an output is being renamed into place the signal waits; once the output is complete the
    run counts as finished and the signal is ignored. A second signal while unwinding removes
    the temporary files and leaves at once (os._exit)."""

    def __init__(self):
        self.received = None
        self.deferring = 0
        self.finished = False
        self._old = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for s in _EXIT_FOR_SIGNAL:
            try:
                if signal.getsignal(s) is signal.SIG_IGN:
                    continue  # nohup, a background job: the caller wants it ignored
                self._old[s] = signal.signal(s, self._handler)
            except (OSError, ValueError):  # pragma: no cover - not allowed here
                pass

    def restore(self) -> None:
        for s, old in self._old.items():
            with contextlib.suppress(OSError, ValueError, TypeError):
                signal.signal(s, old)
        self._old = {}

    def ignore_all(self) -> None:
        for s in self._old:
            with contextlib.suppress(OSError, ValueError):
                signal.signal(s, signal.SIG_IGN)

    def _handler(self, signum, frame):
        if self.received is not None:
            if self.finished:
                return
            _remove_live_temps()
            os._exit(_EXIT_FOR_SIGNAL.get(signum, 128 + signum))
        self.received = signum
        if self.finished or self.deferring:
            return
        self._raise()

    def _raise(self):
        if self.received == signal.SIGINT:
            raise KeyboardInterrupt
        raise SignalExit(self.received)

    @contextlib.contextmanager
    def deferred(self):
        """Signals arriving inside are acted on at the end of the block (unless finished)."""
        self.deferring += 1
        try:
            yield
        finally:
            self.deferring -= 1
        if not self.deferring and self.received is not None and not self.finished:
            self._raise()


_SIGNALS = _Signals()


# ======================================================================================
# Writing outputs
# ======================================================================================

# temporary files: .<name>.bigmixed-<pid>-<random>.tmp beside the target, locked (flock) while
# the process writing it lives
_TEMP_NAME = re.compile(r"^\..*\.bigmixed-(?P<pid>\d+)-[A-Za-z0-9_]+\.tmp$")
_STD_FD = re.compile(r"^/(?:dev/fd|proc/self/fd|proc/(?P<pid>\d+)/fd)/(?P<fd>\d+)$")


def file_mode(path: str) -> int:
    """The mode a new file gets from open() (0666 & ~umask), or the existing file's mode."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        pass
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _pid_alive(pid: int) -> bool:
    """The process exists on this machine and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:  # pragma: no cover
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def _try_lock(fd: int) -> bool:
    """An exclusive flock on fd without waiting (True where flock does not exist)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def clean_stale_temps(directory: str) -> list:
    """Remove the temporary files that killed bigmixed runs left in `directory`.

    A file is removed only if its name is ours (``.<name>.bigmixed-<pid>-<random>.tmp``), it is
    a regular file owned by this user, the process <pid> is gone (or a zombie) and nobody holds
    its lock (the writer keeps an flock on it: a live writer in another PID namespace is never
    touched). Returns the paths removed."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    me = os.getpid()
    uid = os.getuid() if hasattr(os, "getuid") else None
    for entry in entries:
        m = _TEMP_NAME.match(entry.name)
        if m is None:
            continue
        pid = int(m.group("pid"))
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or (uid is not None and st.st_uid != uid):
            continue
        if pid == me or _pid_alive(pid):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            continue
        try:
            if _try_lock(fd) and os.fstat(fd).st_ino == st.st_ino:
                os.unlink(entry.path)
                removed.append(entry.path)
        except OSError:
            pass
        finally:
            os.close(fd)
    for path in removed:
        log.info("removed %s, a temporary file left by a killed bigmixed run", path)
    return removed


def _std_fd(path: str) -> int | None:
    """The file descriptor that path names (/dev/stdout, /dev/stderr, /dev/fd/N,
    /proc/self/fd/N, or a chain of symlinks reaching one), else None."""
    for _ in range(40):
        if path in ("/dev/stdout", "/dev/stderr", "/dev/stdin"):
            return {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}[path]
        m = _STD_FD.match(path)
        if m and (m.group("pid") is None or int(m.group("pid")) == os.getpid()):
            return int(m.group("fd"))
        try:
            target = os.readlink(path)
        except OSError:  # not a symlink (or gone)
            return None
        path = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), target))
    return None


def output_kind(path: str | None) -> tuple:
    """(kind, target) for --out: ("stdout", None) for none or "-"; ("fd", n) for /dev/stdout,
    /dev/stderr, /dev/fd/n, /proc/self/fd/n; ("through", path) for an existing FIFO or
    character device (also through a symlink): opened and written, never replaced; ("atomic",
    real path) for a regular file or a new name -- a symlink is followed and its final target
    replaced (the link stays). Raises CLIError(EXIT_OUTPUT) for a directory, a block device, a
    socket."""
    if path is None or path == "-":
        return "stdout", None
    fd = _std_fd(path)
    if fd is not None:
        return "fd", fd
    try:
        st = os.stat(path)  # follows symlinks
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise CLIError(EXIT_OUTPUT, f"cannot write to {path!r}: {e.strerror or e}") from None
    if st is None:
        return "atomic", os.path.realpath(path)  # new, or a dangling symlink's target
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        raise CLIError(EXIT_OUTPUT, f"output path {path!r} is a directory")
    if stat.S_ISREG(mode):
        return "atomic", os.path.realpath(path)
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        return "through", path
    what = "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a file"
    raise CLIError(EXIT_OUTPUT, f"output path {path!r} is {what}; refusing to write to it")


class AtomicOutput:
    """The output of a command, opened before any work (an unwritable target: exit 7 before
    the data are read or anything is fitted).

    A regular file (or a new name, or a symlink to one) is written to a temporary file in the
    target's directory, ``.<name>.bigmixed-<pid>-<random>.tmp`` (flock-ed while written), and
    renamed onto the target by `commit`; `discard` removes it. Stale temporary files of killed
    runs in that directory are removed first (`clean_stale_temps`). Stdout (``None`` or "-"),
    /dev/stdout, FIFOs and character devices are written through as the results come.
    ``binary=True`` for Parquet.
    """

    def __init__(self, path: str | None, *, stdout=None, binary: bool = False):
        self.path = None if path == "-" else path
        self.tmp = None
        self.target = None
        self._fh = None
        self._close = False
        self.binary = binary
        self._stdout = stdout if stdout is not None else sys.stdout
        self.kind, target = output_kind(path)
        mode = "wb" if binary else "w"
        text = {} if binary else {"encoding": "utf-8", "newline": ""}
        try:
            if self.kind == "stdout":
                return
            if self.kind == "fd":
                self._fh = os.fdopen(os.dup(target), mode, **text)
                self._close = True
            elif self.kind == "through":
                self._fh = open(target, mode, **text)  # noqa: SIM115 - closed by commit/discard
                self._close = True
            else:
                self.target = target
                directory = os.path.dirname(target)
                clean_stale_temps(directory)
                base = os.path.basename(target)[:100]
                fd, tmp = tempfile.mkstemp(prefix=f".{base}.bigmixed-{os.getpid()}-", suffix=".tmp",
                                           dir=directory)
                self.tmp = tmp
                _LIVE_TEMPS.add(tmp)
                _try_lock(fd)
                os.chmod(tmp, file_mode(target))  # mkstemp's 0600 -> what open() would give
                self._fh = os.fdopen(fd, mode, **text)
                self._close = True
        except OSError as e:
            self.discard()
            raise CLIError(EXIT_OUTPUT, f"cannot write to {path!r}: {e.strerror or e}") from None

    @property
    def streamed(self) -> bool:
        """Results reach the reader as they are written (no temporary file)."""
        return self.kind != "atomic"

    @property
    def stream(self):
        if self._fh is not None:
            return self._fh
        if self.binary:
            self._stdout.flush()
            return getattr(self._stdout, "buffer", self._stdout)
        return self._stdout

    def isatty(self) -> bool:
        return _isatty(self.stream)

    def write(self, data) -> None:
        try:
            self.stream.write(data)
        except OSError as e:
            raise CLIError(EXIT_OUTPUT, f"cannot write to {self.path or 'stdout'}: {e.strerror or e}") from None

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.stream.flush()

    def commit(self) -> None:
        """Make the output complete: rename the temporary file onto the target (signals wait
        for the rename; once it is done the run counts as finished), or flush the stream."""
        if self.tmp is None:
            try:
                self.stream.flush()
                if self._close and self._fh is not None:
                    self._fh.close()
                self._fh = None
            except OSError as e:
                raise CLIError(EXIT_OUTPUT, f"cannot write to {self.path or 'stdout'}: {e.strerror or e}") from None
            _SIGNALS.finished = True
            return
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            with _SIGNALS.deferred():
                os.replace(self.tmp, self.target)
                _LIVE_TEMPS.discard(self.tmp)
                self.tmp = None
                _SIGNALS.finished = True
            self._fh.close()  # releases the lock
            self._fh = None
            with contextlib.suppress(OSError):  # the rename itself on disk
                dfd = os.open(os.path.dirname(self.target), os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except OSError as e:
            self.discard()
            raise CLIError(EXIT_OUTPUT, f"cannot write {self.path!r}: {e.strerror or e}") from None

    def discard(self) -> None:
        if self._fh is not None and self._close:
            with contextlib.suppress(OSError):
                self._fh.close()
        self._fh = None
        if self.tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
            _LIVE_TEMPS.discard(self.tmp)
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


def _csv_cell(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, float) else v


def _csv_text(rows: list, header: bool, columns: list | None = None) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(columns or CSV_COLUMNS)
    for r in rows:
        w.writerow([_csv_cell(v) for v in r])
    return buf.getvalue()


def _csv_rows_fit(response: str, fit, ddf: str | None = None) -> list:
    from .io.tidy import table_rows

    return table_rows(fit, response, ddf)


def _csv_rows_error(response: str, error_type: str, message: str, glmm: bool = False) -> list:
    from .io.tidy import error_table_row

    return [error_table_row(response, error_type, message, glmm)]


def _strict_problems(fit) -> list:
    from .warnings import ConvergenceWarning, SingularFitWarning

    out = []
    for w in getattr(fit, "warnings", []) or []:
        if isinstance(w, (SingularFitWarning, ConvergenceWarning)):
            out.append(f"{type(w).__name__}: {w}")
    return out


_FLOAT_COLUMNS = ("estimate", "std_error", "t_value", "df", "p_value", "z_value")
_BOOL_COLUMNS = ("aliased",)


class _ParquetTable:
    """A table (`columns`: float64 for _FLOAT_COLUMNS, bool for _BOOL_COLUMNS, else strings;
    NaN and None as null) streamed to a binary stream in row groups; the file's key-value
    metadata ``bigmixed`` holds a JSON object (`meta`: for fits format "bigmixed.fit.tidy",
    format_version, formula, reml, ddf, input, versions; its JSON Schema:
    bigmixed.io.schemas.load_schema("tidy-metadata"))."""

    ROW_GROUP = 100_000

    def __init__(self, stream, meta: dict, columns: list | None = None):
        self.stream = stream
        self.meta = meta
        self.columns = list(columns or CSV_COLUMNS)
        self.rows: list = []
        self.writer = None

    def add(self, rows: list) -> None:
        self.rows.extend(rows)
        if len(self.rows) >= self.ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from .io.tidy import jsonable

        def kind(c):
            return pa.float64() if c in _FLOAT_COLUMNS else pa.bool_() if c in _BOOL_COLUMNS else pa.string()

        fields = [pa.field(c, kind(c)) for c in self.columns]
        schema = pa.schema(fields, metadata={"bigmixed": json.dumps(jsonable(self.meta), allow_nan=False)})
        cols = {}
        for k, c in enumerate(self.columns):
            vals = [r[k] for r in self.rows]
            if c in _FLOAT_COLUMNS:
                vals = [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in vals]
            elif c in _BOOL_COLUMNS:
                vals = [None if v is None else bool(v) for v in vals]
            else:
                vals = [None if v is None else str(v) for v in vals]
            cols[c] = pa.array(vals, type=schema.field(c).type)
        table = pa.Table.from_pydict(cols, schema=schema)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.stream, schema)
        self.writer.write_table(table)
        self.rows = []

    def close(self) -> None:
        if self.rows or self.writer is None:
            self._flush()
        self.writer.close()


class _Results:
    """Writes results to the output in the chosen format (see FORMATS)."""

    def __init__(self, out: AtomicOutput, fmt: str, many: bool, meta: dict, *,
                 ddf: str | None = "satterthwaite", glmm: bool = False):
        self.out = out
        self.fmt = fmt
        self.many = many
        self.meta = meta
        self.ddf = ddf  # None for GLMMs (z tests)
        self.glmm = glmm
        self.columns = GLMM_CSV_COLUMNS if glmm else CSV_COLUMNS
        self.header = True
        self.table = None

    def _rows(self, rows: list) -> None:
        if self.fmt == "csv":
            self.out.write(_csv_text(rows, self.header, self.columns))
        else:
            if self.table is None:
                self.table = _ParquetTable(self.out.stream, self.meta, self.columns)
            try:
                self.table.add(rows)
            except OSError as e:
                raise CLIError(EXIT_OUTPUT, f"cannot write to {self.out.path or 'stdout'}: {e.strerror or e}") from None
        self.header = False

    def single(self, response: str, fit, doc: dict) -> None:
        """One response: `doc` is its fit_document."""
        from .io.tidy import jsonable, ndjson_record

        if self.fmt in ("csv", "parquet"):
            self._rows(_csv_rows_fit(response, fit, self.ddf))
        elif self.fmt == "ndjson":
            body = {k: v for k, v in doc.items() if k not in ("format", "format_version")}
            seconds = (doc.get("timings") or {}).get("total", 0.0)
            line = ndjson_record({"response": response, "index": 0, "status": "ok", **body,
                                  "seconds": seconds})
            self.out.write(json.dumps(jsonable(line), allow_nan=False) + "\n")
        else:
            self.out.write(json.dumps(jsonable(doc), indent=1, allow_nan=False) + "\n")

    def record(self, r) -> None:
        """One response of several (a ResponseFit)."""
        from .io.tidy import response_record

        if self.fmt in ("csv", "parquet"):
            self._rows(_csv_rows_fit(r.response, r.fit, self.ddf) if r.ok else
                       _csv_rows_error(r.response, r.error_type, r.error, self.glmm))
        else:  # json and ndjson: one line per response
            line = response_record(r, ddf=self.ddf)
            self.out.write(json.dumps(line, allow_nan=False) + "\n")
        if self.out.streamed:
            self.out.flush()

    def finish(self) -> None:
        if self.fmt == "parquet":
            if self.table is None:
                self.table = _ParquetTable(self.out.stream, self.meta, self.columns)
            try:
                self.table.close()
            except OSError as e:
                raise CLIError(EXIT_OUTPUT, f"cannot write to {self.out.path or 'stdout'}: {e.strerror or e}") from None
        elif self.fmt == "csv" and self.header:
            self.out.write(_csv_text([], True, self.columns))


def _format_from_name(path: str | None) -> str | None:
    """The output format an --out name implies (FORMATS), or None (no known extension)."""
    if not path or path == "-":
        return None
    return _EXT_FORMAT.get(os.path.splitext(path.lower())[1])


def _family(fmt: str) -> str:
    return "json" if fmt in ("json", "ndjson") else fmt


def resolve_format(fmt: str | None, out: str | None) -> str:
    """--format, else --out's extension, else json. A --format that contradicts the extension
    (json / ndjson vs csv vs parquet) is a usage error."""
    implied = _format_from_name(out)
    if fmt and implied and _family(fmt) != _family(implied):
        ext = os.path.splitext(out)[1]
        raise CLIError(EXIT_USAGE, f"--format {fmt} does not match --out {out!r}: the extension {ext} "
                                   f"means {implied}; change the file name or drop --format")
    return fmt or implied or "json"


# ======================================================================================
# Progress and logs on stderr
# ======================================================================================

_STDERR_LOCK = threading.RLock()
BAR_INTERVAL = 0.2  # seconds between redraws of the progress bar on a terminal


def _progress_text(ev: dict) -> str:
    parts = []
    if ev.get("responses_total") is not None:
        parts.append(f"{ev.get('responses_done', 0)}/{ev['responses_total']} responses "
                     f"({ev.get('responses_failed', 0)} failed)")
    stage = ev.get("stage")
    if stage == "read":
        parts.append(f"reading {ev.get('path')}")
    elif stage == "optimizer":
        s = f"optimizer: {ev.get('evaluations') or 0} evaluations"
        if ev.get("objective") is not None:
            s += f", objective {ev['objective']:.6f}"
        parts.append(s)
    elif stage and stage != "responses":
        parts.append(f"{stage}" + (f": {ev['rows']} rows" if ev.get("rows") is not None else ""))
    parts.append(f"{ev.get('elapsed', 0.0):.1f} s elapsed")
    return ", ".join(parts)


class _Display:
    """The progress events (bigmixed.progress) on stderr: a bar redrawn in place on a terminal
    ("bar"), else log lines (text or JSON) at the interval ("lines")."""

    def __init__(self, mode: str):
        self.mode = mode
        self.shown = False

    def __call__(self, ev: dict) -> None:
        if self.mode == "lines":
            log.info("progress: %s", _progress_text(ev), extra={"bigmixed_event": {"event": "progress", **ev}})
            return
        text = _progress_text(ev)
        total = ev.get("responses_total")
        if total:
            width = 24
            k = int(width * min(1.0, ev.get("responses_done", 0) / total))
            text = f"[{'#' * k}{'-' * (width - k)}] {text}"
        with _STDERR_LOCK:
            try:
                sys.stderr.write(f"\rbigmixed: {text}\x1b[K")
                sys.stderr.flush()
                self.shown = True
            except (OSError, ValueError):
                pass

    def clear(self) -> None:
        """Erase the bar (before a log line)."""
        if self.shown:
            with _STDERR_LOCK, contextlib.suppress(OSError, ValueError):
                sys.stderr.write("\r\x1b[K")
                self.shown = False

    def close(self) -> None:
        self.clear()


def _display_for(args):
    """(display, interval) for this run, or (None, None): no progress with -q or
    --progress-interval 0; a bar on a terminal (text logs), log lines otherwise."""
    interval = args.progress_interval
    if args.quiet or not interval > 0:
        return None, None
    if args.log_format == "text" and _isatty(sys.stderr):
        return _Display("bar"), min(BAR_INTERVAL, interval)
    return _Display("lines"), interval


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _JSONFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, and for progress
    lines event="progress" with the event's fields; traceback for internal errors."""

    def format(self, record: logging.LogRecord) -> str:
        from .io.tidy import jsonable

        doc = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        ev = getattr(record, "bigmixed_event", None)
        if ev:
            doc.update({k: v for k, v in ev.items() if k not in doc})
        tb = getattr(record, "bigmixed_traceback", None)
        if tb:
            doc["traceback"] = tb
        return json.dumps(jsonable(doc), allow_nan=False)


class _StderrHandler(logging.StreamHandler):
    """Log lines on stderr; erases a progress bar first."""

    def __init__(self, display):
        super().__init__(sys.stderr)
        self.display = display

    def emit(self, record):
        with _STDERR_LOCK:
            if self.display is not None and self.display.mode == "bar":
                self.display.clear()
            super().emit(record)


def _log_caught(caught) -> None:
    seen = set()
    for w in caught:
        key = (w.category.__name__, str(w.message))
        if key in seen:
            continue
        seen.add(key)
        log.warning("%s: %s", w.category.__name__, w.message)


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


def _glmm_options(args) -> dict | None:
    """bm.glmm's family options from --family/--link/--nagq (None for an LMM); usage errors for
    options that do not apply."""
    if args.family == "gaussian":  # (--weights / --offset apply to LMMs too: bm.lmm's)
        if args.link is not None:
            raise CLIError(EXIT_USAGE, "--link applies to GLMMs: add --family binomial or "
                                       "--family poisson")
        if args.nagq != 1:
            raise CLIError(EXIT_USAGE, "--nagq applies to GLMMs: add --family binomial or --family poisson")
        return None
    if getattr(args, "ddf", None) is not None:
        raise CLIError(EXIT_USAGE, f"--ddf {args.ddf} applies to linear mixed models: a GLMM's fixed "
                                   "effects are Wald z tests (z_value, p_value); drop --ddf")
    if args.ml:
        raise CLIError(EXIT_USAGE, "--ml does not apply to GLMMs (always fitted by maximum likelihood)")
    return dict(family=args.family, link=args.link, nAGQ=args.nagq)


def _data_source(path: str, sep: str | None):
    """(format, separator) of the --data path (a Parquet folder, or a file by its extension;
    a CSV's separator sniffed unless given); EXIT_DATA if it does not exist."""
    if not os.path.exists(path):
        raise CLIError(EXIT_DATA, f"data file {path!r} does not exist")
    dfmt = data_format(path) if not os.path.isdir(path) else "parquet"
    if dfmt != "parquet" and os.path.isfile(path):
        sep = csv_separator(path, dfmt, sep)
    return dfmt, sep


def _needed_columns(path: str, fmt: str, formula: str, responses: list | None, glob: str | None,
                    sep: str | None = None):
    """Columns to read: those named in the formula, the responses, the glob's matches."""
    from .fitting.batch import _columns_named_in, match_responses

    try:
        cols = data_columns(path, fmt, sep)
    except CLIError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader error means the file cannot be read
        raise CLIError(EXIT_DATA, f"cannot read data file {path!r}: {type(e).__name__}: {e}") from None
    if fmt != "parquet" and len(cols) == 1:
        others = [c for c in SEPARATORS if c != sep and c in cols[0]]
        if others:
            hint = "tab" if others[0] == "\t" else repr(others[0])
            raise CLIError(EXIT_DATA, f"the header of {path!r} is one column {cols[0][:80]!r} when split "
                                      f"at {sep or ','!r}; its separator looks like "
                                      f"{SEPARATORS[others[0]]}: pass --sep {hint}")
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


def _same_file(a: str, b: str) -> bool:
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def cmd_fit(args, display=None, interval=None) -> int:
    import bigmixed as bm

    from . import progress
    from .io.tidy import fit_document, jsonable, versions

    t_start = time.perf_counter()
    many = bool(args.responses or args.responses_glob)
    fmt = resolve_format(args.format, args.out)
    sep = parse_sep(args.sep) if args.sep is not None else None
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
        if args.family == "gaussian":  # (a GLMM's cbind()/offset() are read by bm.glmm)
            from .fitting.batch import _without_offsets

            parse_formula(_without_offsets(args.formula))  # offset() terms: bm.lmm's offset
    glmm = _glmm_options(args)

    structures = _residual_structures(args)
    if many and glmm is not None and (args.weights is not None or args.offset is not None):
        raise CLIError(EXIT_USAGE, "--weights / --offset fit one GLMM response for now; drop "
                                   "--responses / --responses-glob")
    if structures.get("residual") is not None and args.weights is not None:
        raise CLIError(EXIT_USAGE, "--weights with --ar1 / --compound-symmetry is not supported "
                                   "yet (--var-ident is); drop one of them")
    if structures and glmm is not None:
        raise CLIError(EXIT_USAGE, "--ar1 / --compound-symmetry / --var-ident are for linear mixed "
                                   "models; drop them or --family")
    if structures and (many or getattr(args, "dask", None) is not None):
        raise CLIError(EXIT_USAGE, "--ar1 / --compound-symmetry / --var-ident fit one response in "
                                   "memory; drop --responses / --responses-glob / --dask")

    # 2. the outputs: writable before any work
    if args.out not in (None, "-") and _same_file(args.out, args.data):
        raise CLIError(EXIT_USAGE, "--out is the input data file; refusing to overwrite it")
    if fmt == "parquet" and args.out in (None, "-") and _isatty(sys.stdout):
        raise CLIError(EXIT_USAGE, "refusing to write Parquet to a terminal: pass --out FILE.parquet")
    ddf = None if glmm is not None else (args.ddf or "satterthwaite")
    out = AtomicOutput(args.out, binary=fmt == "parquet")
    meta = {"format": TABLE_FORMAT, "format_version": TABLE_VERSION, "formula": args.formula,
            "reml": not args.ml and glmm is None, "family": None if glmm is None else glmm["family"],
            "ddf": ddf}
    results = _Results(out, fmt, many, meta, ddf=ddf, glmm=glmm is not None)
    dask_client = None
    listen = (progress.listening(display, interval) if display is not None else contextlib.nullcontext())
    try:
        with listen:
            if args.save:
                _check_save_target(args.save, many)

            # 3. the data: only the columns the formula and the responses need
            t0 = time.perf_counter()
            progress.report("read", path=args.data)
            dfmt, sep = _data_source(args.data, sep)
            need, all_cols = _needed_columns(args.data, dfmt, " ".join(
                [args.formula, args.weights or "", args.offset or ""]), responses,
                args.responses_glob, sep)
            if structures:
                from .spec.residual import residual_columns

                cols = residual_columns(structures.get("residual"), structures.get("variance"))
                need = list(dict.fromkeys(need + [c for c, _ in cols if c in all_cols]))
            if getattr(args, "dask", None) is not None:  # partitions through Dask, never collected
                if many:
                    raise CLIError(EXIT_USAGE, "--dask fits one response; drop --responses / --responses-glob")
                data, dask_client = _read_dask(args.data, dfmt, args.dask, sep)
                need = all_cols  # lazily all columns: a missing column is reported from the schema
                t_read = time.perf_counter() - t0
                input_info = {"path": args.data, "format": dfmt, "partitions": data.npartitions,
                              "dask_scheduler": args.dask}
            else:
                data, dfmt = read_data(args.data, need, sep)
                t_read = time.perf_counter() - t0
                log.info("read %d rows x %d of %d columns from %s (%s%s) in %.2f s", len(data),
                         data.shape[1], len(all_cols), args.data, dfmt,
                         f", {SEPARATORS.get(sep, repr(sep))}-separated" if dfmt != "parquet" and sep else "",
                         t_read)
                input_info = {"path": args.data, "format": dfmt, "rows": len(data),
                              "columns_read": [str(c) for c in data.columns]}
                if dfmt != "parquet" and sep:
                    input_info["separator"] = sep
            meta["input"] = input_info
            if fmt == "parquet":
                meta["versions"] = versions()

            if many:
                code = _fit_many(args, data, responses, out, results, t_start, sep)
            else:
                code = _fit_one(args, bm, data, need, all_cols, structures, out, results,
                                input_info, t_read, t_start, sep, fit_document, jsonable, glmm)
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


def _fit_one(args, bm, data, need, all_cols, structures, out, results, input_info, t_read,
             t_start, sep, fit_document, jsonable, glmm=None) -> int:
    # 4. fit
    def build(frame):
        if glmm is not None:
            return bm.glmm(args.formula, frame, solver=args.solver, weights=args.weights,
                           offset=args.offset, **glmm)
        return bm.lmm(args.formula, frame, reml=not args.ml, solver=args.solver,
                      weights=args.weights, offset=args.offset, **structures)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = build(data)
        except bm.MissingColumnError:
            if len(need) == len(all_cols):
                raise
            data, _ = read_data(args.data, None, sep)  # the full file names the close matches
            model = build(data)
        method = (("Laplace" if glmm["nAGQ"] == 1 else f"nAGQ = {glmm['nAGQ']}") + f", {glmm['family']}"
                  if glmm is not None else "ML" if args.ml else "REML")
        log.info("fitting %s by %s: %d observations, groups %s", args.formula,
                 method, model.n_obs,
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
    doc = None
    with warnings.catch_warnings(record=True) as caught:  # Satterthwaite's messages
        warnings.simplefilter("always")
        if results.fmt in ("json", "ndjson"):
            doc = fit_document(fit, extra={"input": input_info}, ddf=results.ddf)
            doc["timings"] = dict(doc.get("timings", {}), read=t_read, total=time.perf_counter() - t_start)
        results.single(response, fit, doc)
    _log_caught(caught)
    if args.save:
        target = _save_path(args.save, response, False)
        try:
            fit.save(target)
        except OSError as e:
            raise CLIError(EXIT_OUTPUT, f"cannot write the saved model {target!r}: {e}") from None
        log.info("saved the model to %s", target)
    results.finish()
    out.commit()
    if args.out and args.out != "-":
        log.info("wrote %s in %.2f s", args.out, time.perf_counter() - t_write)
    return EXIT_OK


def _read_dask(path: str, fmt: str, address: str, sep: str | None = None):
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
            data = dd.read_csv(path, sep=sep or ("\t" if fmt == "tsv" else ","))
    except Exception as e:  # noqa: BLE001 - reader errors
        client.close()
        raise CLIError(EXIT_DATA, f"cannot read data file {path!r}: {type(e).__name__}: {e}") from None
    log.info("Dask: %d partitions of %s (%s) on %s", data.npartitions, path, fmt, client)
    return data, client


def _fit_many(args, data, responses, out, results, t_start, sep=None) -> int:
    import bigmixed as bm

    from .errors import MissingColumnError
    from .fitting.batch import available_cores, match_responses

    spec = responses if responses else args.responses_glob
    prior = {k: v for k, v in (("weights", args.weights), ("offset", args.offset)) if v is not None}
    try:
        stream = bm.iter_fits(args.formula, data, spec, reml=not args.ml, n_jobs=args.jobs,
                              solver=args.solver, **(_glmm_options(args) or {}), **prior)
    except MissingColumnError:
        full, _ = read_data(args.data, None, sep)
        stream = bm.iter_fits(args.formula, full, spec, reml=not args.ml, n_jobs=args.jobs,
                              solver=args.solver, **(_glmm_options(args) or {}), **prior)
    total = len(responses) if responses else len(match_responses(data.columns, args.responses_glob))
    log.info("fitting %d responses on %s by %s (%s threads)", total, args.formula,
             "ML" if args.ml else "REML", args.jobs or available_cores())
    n_done = n_failed = n_strict = 0
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            for r in stream:
                n_done += 1
                if r.ok:
                    n_strict += bool(_strict_problems(r.fit))
                    results.record(r)
                    if args.save:
                        target = _save_path(args.save, r.response, True)
                        try:
                            r.fit.save(target)
                        except OSError as e:
                            raise CLIError(EXIT_OUTPUT, f"cannot write the saved model {target!r}: {e}") from None
                else:
                    n_failed += 1
                    log.debug("%s failed: %s: %s", r.response, r.error_type, r.error)
                    results.record(r)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
    from .warnings import BigmixedWarning

    _log_caught([w for w in caught if not issubclass(w.category, BigmixedWarning)])
    log.info("%d responses in %.2f s: %d ok, %d failed, %d singular or not converged",
             n_done, time.perf_counter() - t0, n_done - n_failed, n_failed, n_strict)
    if n_failed:
        log.warning("%d of %d responses failed (%s with status \"error\")", n_failed, n_done,
                    "rows" if results.fmt in ("csv", "parquet") else "lines")
    if args.strict and (n_failed or n_strict):
        log.error("--strict: %d failed and %d singular / not converged responses; no output written",
                  n_failed, n_strict)
        out.discard()
        return EXIT_STRICT
    results.finish()
    out.commit()
    if args.out and args.out != "-":
        log.info("wrote %s", args.out)
    return EXIT_OK


def _check_outputs(args, fmt: str, inputs: Sequence) -> None:
    """--out is not one of the inputs; no Parquet to a terminal (usage errors)."""
    if args.out not in (None, "-"):
        for flag, path in inputs:
            if path and _same_file(args.out, path):
                raise CLIError(EXIT_USAGE, f"--out is the input {flag} file; refusing to overwrite it")
    if fmt == "parquet" and args.out in (None, "-") and _isatty(sys.stdout):
        raise CLIError(EXIT_USAGE, "refusing to write Parquet to a terminal: pass --out FILE.parquet")


def _load_model(path: str):
    """bm.load(path), a file that cannot be read or is not a model: exit 3."""
    import bigmixed as bm

    from .errors import ModelFormatError

    if not os.path.isfile(path):
        raise CLIError(EXIT_DATA, f"model file {path!r} does not exist" if not os.path.exists(path)
                       else f"model file {path!r} is not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bm.load(path)
    except ModelFormatError as e:
        raise CLIError(EXIT_DATA, f"cannot read the model {path!r}: {e}") from None
    except OSError as e:
        raise CLIError(EXIT_DATA, f"cannot read the model {path!r}: {e.strerror or e}") from None


def _model_columns(fit, level: str, available: Sequence) -> list:
    """The columns of `available` that predictions of `fit` use: the fixed effects' variables,
    the offset's (offset() terms, offset=), and for conditional predictions the grouping
    factors' and random terms' covariates."""
    from .fitting.batch import _columns_named_in

    design = fit.design
    cols = [str(c) for c in design.fixed_spec.variables]
    if level == "conditional":
        for ts in design.term_specs:
            cols += [str(c) for c in list(ts.group_vars) + list(ts.covariates)]
    exprs = []
    prior = getattr(design, "prior", None)  # an LMM's weights / offset
    if prior is not None and getattr(prior, "has_offset", False):
        exprs += [str(t) for t in getattr(prior, "offset_terms", ()) or ()]
        if isinstance(getattr(prior, "offset", None), str):
            exprs.append(prior.offset)
    spec = getattr(fit, "offset_spec", None)  # a GLMM's
    if spec:
        exprs += [str(t) for t in spec.get("terms") or ()]
        if isinstance(spec.get("argument"), str):
            exprs.append(spec["argument"])
    if exprs:
        cols += _columns_named_in("y ~ " + " + ".join(f"I({e})" for e in exprs), list(available))
    available = set(available)
    return [c for c in dict.fromkeys(cols) if c in available]


def predictions_frame(fit, data, *, level: str, unseen: str, interval: str | None,
                      coverage: float, keep: Sequence = (), type: str | None = None):
    """The table `bigmixed predict` writes: row (0-based position in the new data), the `keep`
    columns, fit (fit.predict; a GLMM's on the scale `type`, "link" or "response"), and with
    `interval` se, lower, upper (fit.predict_interval, LMMs)."""
    import numpy as np
    import pandas as pd

    out = {"row": np.arange(len(data), dtype=np.int64)}
    for c in keep:
        out[c] = data[c].to_numpy()
    if type is not None:
        out["fit"] = np.asarray(fit.predict(data, level=level, unseen=unseen, type=type), dtype=np.float64)
    elif interval is None:
        out["fit"] = np.asarray(fit.predict(data, level=level, unseen=unseen), dtype=np.float64)
    else:
        tab = fit.predict_interval(data, level=level, unseen=unseen, interval=interval, coverage=coverage)
        for c in ("fit", "se", "lower", "upper"):
            out[c] = np.asarray(tab[c], dtype=np.float64)
    return pd.DataFrame(out)


def _write_predictions(out: AtomicOutput, fmt: str, frame, meta: dict) -> None:
    """The predictions in `fmt`: Parquet (metadata "bigmixed" = meta) in row groups, CSV (floats
    exact, as repr), a JSON document (meta + predictions) or NDJSON lines (one per row)."""
    from .io.tidy import jsonable

    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        table = table.replace_schema_metadata(
            {"bigmixed": json.dumps(jsonable(meta), allow_nan=False)})
        try:
            pq.write_table(table, out.stream, row_group_size=_ParquetTable.ROW_GROUP)
        except OSError as e:
            raise CLIError(EXIT_OUTPUT, f"cannot write to {out.path or 'stdout'}: {e.strerror or e}") from None
        return
    if fmt == "csv":
        step = _ParquetTable.ROW_GROUP
        for start in range(0, max(len(frame), 1), step):
            part = frame.iloc[start:start + step]
            out.write(part.to_csv(index=False, header=start == 0, lineterminator="\n"))
        return
    records = frame.to_dict(orient="records")
    if fmt == "json":
        doc = {**meta, "format": PREDICT_DOCUMENT, "predictions": records}
        out.write(json.dumps(jsonable(doc), indent=1, allow_nan=False) + "\n")
        return
    head = {"format": PREDICT_NDJSON, "format_version": PREDICT_VERSION}
    for k in range(0, len(records), 10_000):
        out.write("".join(json.dumps(jsonable({**head, **r}), allow_nan=False) + "\n"
                          for r in records[k:k + 10_000]))


def cmd_predict(args, display=None, interval=None) -> int:
    """bigmixed predict: predictions of a saved model (bm.load) on new data."""
    from . import progress
    from .io.tidy import versions

    fmt = resolve_format(args.format, args.out)
    sep = parse_sep(args.sep) if args.sep is not None else None
    if not 0 < args.coverage < 1:
        raise CLIError(EXIT_USAGE, f"--coverage must be between 0 and 1, not {args.coverage!r}")
    if args.coverage != 0.95 and args.interval is None:
        raise CLIError(EXIT_USAGE, "--coverage applies with --interval")
    keep = [c.strip() for c in (args.keep or "").split(",") if c.strip()]
    clash = [c for c in keep if c in ("row", "fit", "se", "lower", "upper")]
    if clash:
        raise CLIError(EXIT_USAGE, f"--keep: column {clash[0]!r} would clash with the output column "
                                   f"of that name (row, fit, se, lower, upper); rename it first")
    _check_outputs(args, fmt, [("--data", args.data), ("--model", args.model)])
    out = AtomicOutput(args.out, binary=fmt == "parquet")
    listen = (progress.listening(display, interval) if display is not None else contextlib.nullcontext())
    try:
        with listen:
            t0 = time.perf_counter()
            fit = _load_model(args.model)
            glmm = getattr(fit, "family", None) is not None
            if glmm and args.interval is not None:
                raise CLIError(EXIT_USAGE, f"--interval is for linear mixed models; {args.model!r} "
                                           "holds a GLMM: drop --interval")
            if not glmm and args.type is not None:
                raise CLIError(EXIT_USAGE, f"--type applies to GLMMs; {args.model!r} holds a linear "
                                           "mixed model: drop --type")
            scale = (args.type or "link") if glmm else None
            progress.report("read", path=args.data)
            dfmt, sep = _data_source(args.data, sep)
            try:
                all_cols = data_columns(args.data, dfmt, sep)
            except CLIError:
                raise
            except Exception as e:  # noqa: BLE001 - the file cannot be read
                raise CLIError(EXIT_DATA, f"cannot read data file {args.data!r}: {type(e).__name__}: {e}") from None
            missing_keep = [c for c in keep if c not in all_cols]
            if missing_keep:
                raise CLIError(EXIT_USAGE, f"--keep: column {missing_keep[0]!r} is not in {args.data!r}")
            # the model's columns that the file has (a missing one is named by the library)
            need = _model_columns(fit, args.level, all_cols)
            data, dfmt = read_data(args.data, list(dict.fromkeys(need + keep)), sep)
            log.info("read %d rows x %d columns from %s (%s) in %.2f s", len(data), data.shape[1],
                     args.data, dfmt, time.perf_counter() - t0)
            input_info = {"path": args.data, "format": dfmt, "rows": len(data),
                          "columns_read": [str(c) for c in data.columns]}
            if dfmt != "parquet" and sep:
                input_info["separator"] = sep
            progress.report("predict", rows=len(data))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    frame = predictions_frame(fit, data, level=args.level, unseen=args.unseen,
                                              interval=args.interval, coverage=args.coverage,
                                              keep=keep, type=scale)
                except ValueError as e:
                    import numpy as np

                    from .errors import BigmixedError

                    if isinstance(e, (BigmixedError, np.linalg.LinAlgError)):
                        raise
                    # the new data do not fit the model (e.g. an unseen level with --unseen error)
                    raise CLIError(EXIT_MODEL, f"{type(e).__name__}: {e} (bigmixed predict: "
                                               f"--unseen population|nan)" if "unseen" in str(e)
                                   else f"{type(e).__name__}: {e}") from None
            _log_caught(caught)
            meta = {
                "format": PREDICT_FORMAT, "format_version": PREDICT_VERSION,
                "model": {"path": args.model, "formula": fit.formula,
                          "response": fit.design.response, "reml": bool(fit.reml)},
                "family": None if not glmm else {"family": str(fit.family.name),
                                                 "link": str(fit.family.link), "type": scale},
                "level": args.level, "unseen": args.unseen, "interval": args.interval,
                "coverage": args.coverage if args.interval else None,
                "columns": [str(c) for c in frame.columns], "rows": len(frame),
                "input": input_info, "versions": versions(),
            }
            t_write = time.perf_counter()
            _write_predictions(out, fmt, frame, meta)
            out.commit()
            if args.out and args.out != "-":
                log.info("wrote %d predictions to %s in %.2f s", len(frame), args.out,
                         time.perf_counter() - t_write)
    except BaseException:
        out.discard()
        raise
    return EXIT_OK


def cmd_simulate(argv: list) -> int:
    from .data_gen.__main__ import main as data_gen_main

    return int(data_gen_main(argv) or 0)


# ======================================================================================
# Parser and entry point
# ======================================================================================


def _epilog() -> str:
    return "exit codes:\n" + "\n".join(f"  {k}  {v}" for k, v in EXIT_CODES.items())


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, not {text!r}") from None
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, not {text!r}")
    return value


def _common_options(f) -> None:
    """Logging and progress options of every command."""
    v = f.add_mutually_exclusive_group()
    v.add_argument("-q", "--quiet", action="store_true", help="log errors only, no progress")
    v.add_argument("-v", "--verbose", action="store_true", help="log details (debug level)")
    f.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="stderr lines as text (default) or as JSON objects, one per line (logs and progress)")
    f.add_argument("--progress-interval", type=_interval, default=5.0, metavar="SECONDS",
                   help="seconds between progress lines when stderr is not a terminal (default 5; "
                        "0: none); on a terminal a progress bar")


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
                    "response on a shared design and stream one result per response (NDJSON lines, "
                    "CSV or Parquet rows).",
        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("--data", required=True, help="CSV/TSV (optionally compressed) or Parquet file")
    f.add_argument("--formula", required=True, help='lme4 formula, e.g. "y ~ age + sex + (1 | doctor)"')
    f.add_argument("--sep", default=None, metavar="CHAR",
                   help="CSV column separator (one character, or comma, semicolon, tab, pipe); "
                        "default: sniffed from the first lines (a tab for .tsv)")
    f.add_argument("--out", default=None,
                   help="output file (default or '-': stdout). A regular file is written atomically "
                        "(temporary file + rename); a FIFO, character device or /dev/stdout is written through")
    f.add_argument("--format", choices=FORMATS, default=None,
                   help="json (one response: a document; several: NDJSON lines), ndjson (one line per "
                        "response), csv or parquet (the tidy table of fixed effects and variance "
                        "components); default from --out's extension (.json, .ndjson, .jsonl, .csv, "
                        ".parquet), else json")
    f.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    f.add_argument("--ddf", choices=DDF_CHOICES, default=None,
                   help="denominator df of the fixed effects' t tests: satterthwaite (default; df and "
                        "p-values as lmerTest's summary) or none (t values only, as lme4); GLMMs "
                        "(--family) always give Wald z tests (z_value, p_value)")
    f.add_argument("--family", choices=("gaussian", "binomial", "poisson"), default="gaussian",
                   help="gaussian: a linear mixed model (default); binomial or poisson: a GLMM as "
                        "glmer (Laplace; --nagq for quadrature)")
    f.add_argument("--link", default=None,
                   help="the GLMM's link: logit (default), probit, cloglog for binomial; log for poisson")
    f.add_argument("--nagq", type=int, default=1, metavar="K",
                   help="GLMM: 1 = Laplace (default), 0 = glmer's nAGQ = 0, up to 25 Gauss-Hermite "
                        "points for one scalar random-effect term")
    f.add_argument("--weights", default=None, metavar="COLUMN",
                   help="prior weights: a column or an expression of columns (LMM: residual "
                        "variance sigma^2 / w, as lmer's weights=; binomial GLMM: trials of a "
                        "proportion response)")
    f.add_argument("--offset", default=None, metavar="COLUMN",
                   help="offset added to the linear predictor (LMM or GLMM): a column or an "
                        "expression, e.g. 'log(exposure)' (offset() terms in the formula work too)")
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
    _common_options(f)

    pr = sub.add_parser(
        "predict", help="predictions of a saved model (--save, fit.save) on new data",
        description="Predict from a model saved by `bigmixed fit --save` or fit.save(): population "
                    "level (X beta; grouping columns not needed) or conditional (X beta + Z b, "
                    "levels not seen in the fit as --unseen says), optionally with intervals. "
                    "Outputs as `bigmixed fit`'s: written atomically, format from --format or the "
                    "extension of --out (parquet, csv, json, ndjson).",
        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    pr.add_argument("--model", required=True, help="a saved model (.bmfit)")
    pr.add_argument("--data", required=True, help="new data: CSV/TSV (optionally compressed) or Parquet")
    pr.add_argument("--sep", default=None, metavar="CHAR", help="CSV column separator (default: sniffed)")
    pr.add_argument("--out", default=None, help="output file (default or '-': stdout); as for `fit`")
    pr.add_argument("--format", choices=FORMATS, default=None,
                    help="parquet, csv (columns row, [--keep], fit[, se, lower, upper]), json (a "
                         "document with the rows) or ndjson (one line per row); default from "
                         "--out's extension, else json")
    pr.add_argument("--level", choices=("population", "conditional"), default="conditional",
                    help="conditional: X beta + Z b (default, as lme4's predict); population: X beta")
    pr.add_argument("--unseen", choices=("population", "nan", "error"), default="population",
                    help="conditional level: a level not seen in the fit gets random effect 0 "
                         "(default), NaN, or is an error")
    pr.add_argument("--interval", nargs="?", const="prediction", choices=("prediction", "confidence"),
                    default=None, help="add se, lower, upper: of a new observation (prediction, the "
                                       "default) or of the mean (confidence)")
    pr.add_argument("--coverage", type=float, default=0.95, help="interval coverage (default 0.95)")
    pr.add_argument("--type", choices=("link", "response"), default=None,
                    help="GLMM models: the linear predictor (link, the default, as lme4's predict) or "
                         "the mean (response)")
    pr.add_argument("--keep", default=None, metavar="COL1,COL2",
                    help="columns of the new data copied to the output (e.g. an id)")
    _common_options(pr)

    sub.add_parser("simulate", help="generate an hdp-style data set (python -m bigmixed.data_gen; "
                                    "'bigmixed simulate --help' for its options)", add_help=False)
    return p


@contextlib.contextmanager
def _logging(quiet: bool, verbose: bool, log_format: str = "text", display=None):
    """A stderr handler on the "bigmixed" logger only, for the duration of the command."""
    handler = _StderrHandler(display)
    if log_format == "json":
        handler.setFormatter(_JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("bigmixed: %(levelname)s: %(message)s"
                                               if verbose else "bigmixed: %(message)s"))
    old_level, old_propagate = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.ERROR if quiet else logging.DEBUG if verbose else logging.INFO)
    log.propagate = False
    try:
        yield
    finally:
        if display is not None:
            display.close()
        log.removeHandler(handler)
        log.setLevel(old_level)
        log.propagate = old_propagate


def _signal_exit(signum: int) -> int:
    _remove_live_temps()
    name = signal.Signals(signum).name
    log.error("%s; no output written", "interrupted (SIGINT)" if signum == signal.SIGINT else
              f"received {name}")
    return _EXIT_FOR_SIGNAL.get(signum, 128 + signum)


def _signal_behind(error: BaseException) -> int | None:
    """The signal whose exception `error` replaced, if any. A signal's exception raised while
    an extension module runs (numba's C modules during their import, a C callback) can be
    turned into that module's own error (ImportError "numba._devicearray failed to import"):
    the run was stopped by the signal, and its exit code must say so, not an internal error."""
    seen = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return signal.SIGINT
        if isinstance(e, SignalExit):
            return e.signum
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    if _SIGNALS.received is not None and not _SIGNALS.finished:
        return _SIGNALS.received  # received (and raised or pending) before the run completed
    return None


def _run_fit(args, display, interval) -> int:
    command = cmd_predict if args.command == "predict" else cmd_fit
    try:
        return command(args, display, interval)
    except CLIError as e:
        log.error("%s", e)
        return e.code
    except Exception as e:  # noqa: BLE001
        signum = _signal_behind(e)
        if signum is not None:
            return _signal_exit(signum)
        code, msg = _exit_for(e)
        tb = traceback.format_exc()
        log.error("%s", msg, extra={"bigmixed_traceback": tb if code == EXIT_INTERNAL else None})
        if code == EXIT_INTERNAL or args.verbose:
            log.debug("%s", tb)
            if code == EXIT_INTERNAL and args.log_format != "json":
                sys.stderr.write(tb)
        return code


def main(argv: Sequence[str] | None = None) -> int:
    global _SIGNALS
    entry_point = argv is None  # the process's command (not a call from Python code)
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
    _SIGNALS = _Signals()
    _SIGNALS.install()
    code = None
    try:
        display, interval = _display_for(args)
        with _logging(args.quiet, args.verbose, args.log_format, display):
            try:
                code = _run_fit(args, display, interval)
            except KeyboardInterrupt:
                code = _signal_exit(signal.SIGINT)
            except SignalExit as e:
                code = _signal_exit(e.signum)
            _SIGNALS.finished = True
    finally:
        if entry_point:
            # the run is over, only Python's exit is left (module teardown: ~0.5 s): a signal
            # now would kill the process with its default action although the outcome is
            # decided; ignore them so that the exit code tells it (SIGKILL still works)
            _SIGNALS.ignore_all()
            if code is not None:
                _exit_now(code)
        else:
            _SIGNALS.restore()
    return code


def _exit_now(code: int) -> None:
    """End the process with `code` once everything is written and flushed, skipping Python's
    module teardown (~0.5 s of a small run: numba, pandas, scipy unload). Outputs are closed
    (committed or discarded) and logging is flushed before."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(int(code))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
