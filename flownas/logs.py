"""Logging for the command line: `--verbose`, `--quiet`, `--log-file`, the command echoed at the start.

    setup_logging(verbose=False, quiet=False, log_file=None)   # once, in cli.main
    progress("exported 3/5 ...")                                 # a progress line (stderr, [I] prefix)
    say("== export it to ONNX")                                  # running commentary: stdout unless --quiet
    result("EPE 0.41 on 8 pairs")                                # a result: stdout, --quiet included

Results stay on stdout (tables, "wrote ..." lines, JSON); progress and diagnostics go through the `flownas`
logger to stderr: `[I]` info (default), `[V]` debug (`--verbose`), `[W]`/`[E]` always. `--quiet` keeps only
warnings and errors and turns progress bars off (tqdm reads `TQDM_DISABLE`). `--log-file FILE` appends every
record at debug level with a timestamp, whatever the console shows. Library modules log through
`logging.getLogger(__name__)` (the same handlers for flownas, export, bench, latency_tables and the top-level
modules) or call `progress`; code that draws its own tqdm bar with `disable=` asks `progress_enabled()`.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Iterator, TextIO

LOGGER = logging.getLogger("flownas")
# The toolkit's other top-level packages and modules: their `logging.getLogger(__name__)` loggers get the same
# handlers (export.tensorrt's warnings go to the console and the log file like everything else).
SIBLINGS = ("export", "bench", "latency_tables", "pipeline", "nas", "nas_pipeline")
_PREFIX = {logging.DEBUG: "V", logging.INFO: "I", logging.WARNING: "W", logging.ERROR: "E", logging.CRITICAL: "E"}
_state = {"quiet": False, "set_tqdm_disable": False}


class _Prefixed(logging.Formatter):
    """trtexec / Polygraphy style: `[I] message`."""

    def format(self, record: logging.LogRecord) -> str:
        return f"[{_PREFIX.get(record.levelno, 'I')}] {record.getMessage()}"


def setup_logging(verbose: bool = False, quiet: bool = False, log_file: str | os.PathLike | None = None) -> None:
    """Configure the `flownas` logger for one command (replaces handlers from an earlier call)."""
    if verbose and quiet:
        raise ValueError("--verbose and --quiet exclude each other")
    for handler in list(LOGGER.handlers):
        LOGGER.removeHandler(handler)
        handler.close()
    LOGGER.setLevel(logging.DEBUG)
    LOGGER.propagate = False
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    console.setFormatter(_Prefixed())
    LOGGER.addHandler(console)
    if log_file is not None:
        to_file = _file_handler(Path(log_file))
        to_file.setLevel(logging.DEBUG)
        to_file.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(name)s: %(message)s"))
        LOGGER.addHandler(to_file)
    for name in SIBLINGS:
        sibling = logging.getLogger(name)
        sibling.handlers[:] = LOGGER.handlers
        sibling.setLevel(logging.DEBUG)
        sibling.propagate = False
    _state["quiet"] = quiet
    _switch_tqdm(off=quiet)


def _file_handler(path: Path) -> logging.FileHandler:
    """Append mode: one log file can collect several runs (each starts with its `=== Command ===` line)."""
    from flownas.errors import UserInputError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return logging.FileHandler(path, encoding="utf-8")
    except OSError as exc:
        raise UserInputError(f"--log-file {path}: cannot append to it ({exc.strerror or exc})") from None


def _switch_tqdm(off: bool) -> None:
    """TQDM_DISABLE (tqdm >= 4.66) silences every bar created without an explicit `disable=`; code that passes
    `disable=` itself should ask `progress_enabled()`. Undone by a later non-quiet setup (several commands in one
    process, as in the tests), but a TQDM_DISABLE the user set is left alone."""
    if off and "TQDM_DISABLE" not in os.environ:
        os.environ["TQDM_DISABLE"] = "1"
        _state["set_tqdm_disable"] = True
    elif not off and _state["set_tqdm_disable"]:
        os.environ.pop("TQDM_DISABLE", None)
        _state["set_tqdm_disable"] = False


def progress(line: str) -> None:
    """One progress line (stderr, info level: shown unless --quiet, always in the log file); a "warning: ..." line
    is logged as a warning, shown even with --quiet."""
    LOGGER.log(logging.WARNING if _is_warning(line) else logging.INFO, line)


def say(line: str) -> None:
    """A line of a command's running commentary (demo, search, pipeline): stdout unless --quiet, and the log file.

    A library's "warning: ..." line passed here is a warning (stderr, kept under --quiet), not commentary."""
    if _is_warning(line):
        LOGGER.warning(line)
        return
    if _state["quiet"]:
        to_log_file(line)
    else:
        print(line, flush=True)  # and into the log file, by `results_to_log_file`


def result(line: str) -> None:
    """A result line (what was written, the metrics): always on stdout, --quiet included, and in the log file."""
    if _is_warning(line):
        LOGGER.warning(line)
        return
    print(line, flush=True)


def to_log_file(line: str, level: int = logging.INFO) -> None:
    """Record a line in the --log-file only: for what the command prints itself (results, the one-line error)."""
    record = LOGGER.makeRecord(LOGGER.name, level, __file__, 0, line, None, None)
    for handler in LOGGER.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


class _TeeToLogFile:
    """sys.stdout that also sends each complete line to the log file: results printed anywhere (tables, JSON,
    "wrote ...") are in the log without every command routing its prints through the logger."""

    def __init__(self, stream: TextIO) -> None:
        self._stream, self._pending = stream, ""

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            to_log_file(line)
        return written

    def flush(self) -> None:
        self._stream.flush()

    def close_line(self) -> None:
        if self._pending:
            to_log_file(self._pending)
            self._pending = ""

    def __getattr__(self, name: str):  # encoding, isatty, fileno ... of the real stream
        return getattr(self._stream, name)


@contextlib.contextmanager
def results_to_log_file() -> Iterator[None]:
    """While a command runs: its stdout also goes to the --log-file (a no-op without one)."""
    if not any(isinstance(h, logging.FileHandler) for h in LOGGER.handlers):
        yield
        return
    real, tee = sys.stdout, _TeeToLogFile(sys.stdout)
    sys.stdout = tee
    try:
        yield
    finally:
        tee.close_line()
        sys.stdout = real


def _is_warning(line: str) -> bool:
    # the libraries' `log` callbacks carry warnings as plain lines ("warning: no --weights given ...")
    return line.lstrip().lower().startswith("warning:")


def debug(line: str) -> None:
    """A detail for --verbose and the log file (stage timings)."""
    LOGGER.debug(line)


def progress_enabled() -> bool:
    """Whether progress bars should be drawn (False under --quiet)."""
    return not _state["quiet"]


def bar_disabled(progress: bool = True) -> bool:
    """tqdm's `disable=` for a bar its caller asked for with `progress`: an explicit `disable=False` would
    override TQDM_DISABLE, so --quiet is applied here too."""
    return not (progress and progress_enabled())
