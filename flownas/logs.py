"""Logging for the command line: `--verbose`, `--quiet`, `--log-file`, the command echoed at the start.

    setup_logging(verbose=False, quiet=False, log_file=None)   # once, in cli.main
    progress("exported 3/5 ...")                                 # a progress line (stderr, [I] prefix)
    say("EPE 0.41 on 8 pairs")                                   # command output: stdout unless --quiet

Results stay on stdout (tables, "wrote ..." lines, JSON); progress and diagnostics go through the `flownas`
logger to stderr: `[I]` info (default), `[V]` debug (`--verbose`), `[W]`/`[E]` always. `--quiet` keeps only
warnings and errors and turns progress bars off (tqdm reads `TQDM_DISABLE`). `--log-file FILE` appends every
record at debug level with a timestamp, whatever the console shows. Library modules log through
`logging.getLogger(__name__)` (children of "flownas" when under the package) or call `progress`.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

LOGGER = logging.getLogger("flownas")
_PREFIX = {logging.DEBUG: "V", logging.INFO: "I", logging.WARNING: "W", logging.ERROR: "E", logging.CRITICAL: "E"}
_state = {"quiet": False}


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
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setLevel(logging.DEBUG)
        to_file.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(name)s: %(message)s"))
        LOGGER.addHandler(to_file)
    _state["quiet"] = quiet
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"  # tqdm >= 4.66 reads it: every bar of the libraries goes quiet


def progress(line: str) -> None:
    """One progress line (info level: shown unless --quiet, always in the log file)."""
    LOGGER.info(line)


def say(line: str) -> None:
    """A line of a command's own output (inference metrics, "wrote ..."): stdout unless --quiet, and the log file."""
    if not _state["quiet"]:
        print(line, flush=True)
    record = LOGGER.makeRecord(LOGGER.name, logging.INFO, __file__, 0, line, None, None)
    for handler in LOGGER.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def debug(line: str) -> None:
    LOGGER.debug(line)


def progress_enabled() -> bool:
    """Whether progress bars should be drawn (False under --quiet)."""
    return not _state["quiet"]
