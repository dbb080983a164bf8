"""File helpers shared by every artifact writer: atomic writes, scratch and staged folders, file records.

Crash leftovers. Everything temporary is a hidden sibling of the output it belongs to, named after that
output and after the writing process:

    .NAME.<pid>.<token>.tmp                 atomic_path: the file being written
    .NAME.<label>.<pid>.<token>.scratch     scratch_dir: a working folder (e.g. export's raw ONNX)
    .NAME.<pid>.<token>.staging             staged_dir: the new folder being filled
    .NAME.<pid>.<token>.ready               staged_dir: the same folder once complete, about to be swapped in
    .NAME.<pid>.<token>.old                 staged_dir: the previous NAME, moved aside during the swap
    .NAME.<pid>.<token>.owned               staged_dir: which entries of NAME the writer owns (for recovery)

A process killed mid-write (SIGKILL, OOM killer, power cut of a container) runs no cleanup, so each writer
first cleans the leftovers of *dead* writers of the same output (`clean_stale`): a pid is dead when
`os.kill(pid, 0)` raises ProcessLookupError. A live pid, or one we may not signal (PermissionError), is
left alone, so a concurrent writer's files are never touched. A reused pid makes a leftover look alive: it
stays until that process exits (safe, not tidy). Pids are per pid namespace: two containers writing into one
shared folder at the same time could mistake each other for dead; don't share output folders across them.

Files of the old naming (`.NAME.<random>.tmp`, no pid) are removed once older than LEGACY_AGE_S.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Union

from .errors import UserInputError

PathLike = Union[str, "os.PathLike[str]"]

LEGACY_AGE_S = 3600.0      # old-style temporaries (no pid) younger than this may belong to a live writer
SCRATCH_NAME = ".scratch"  # inside a staging folder: removed before the swap, never part of the output
HASH_BLOCK_BYTES = 1 << 20
_KINDS = ("tmp", "scratch", "staging", "ready", "old", "owned")
_LABEL = re.compile(r"[A-Za-z0-9_-]+")


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (signal 0 checks without sending). Unknown counts as alive."""
    if pid <= 0:
        return True  # 0 / negative would address process groups: never treat them as a dead writer
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # another user's live process, or a platform that cannot tell
    return True


def _leftover_pattern(name: str) -> re.Pattern[str]:
    """Matches the leftovers of output `name`: kind, optional label, pid and token."""
    return re.compile(rf"\.{re.escape(name)}\.(?:(?P<label>[A-Za-z0-9_-]+)\.)?(?P<pid>\d+)\.(?P<token>[a-z0-9_]+)"
                      rf"\.(?P<kind>{'|'.join(_KINDS)})")


def _sibling(path: Path, kind: str, token: str, label: str | None = None) -> Path:
    middle = f"{label}." if label else ""
    return path.parent / f".{path.name}.{middle}{os.getpid()}.{token}.{kind}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def clean_stale(path: PathLike) -> list[Path]:
    """Remove the leftovers of dead writers of `path` (see the module docstring); the paths removed.

    An interrupted folder swap of a dead writer is finished first (`staged_dir`), so `path` ends up holding
    the last complete output. Leftovers of a removed leftover (a nested atomic write) go with it.
    """
    path = Path(path)
    candidates = _candidates(path)
    pattern, groups, removed = _leftover_pattern(path.name), {}, []
    for entry in candidates:
        match = pattern.fullmatch(entry.name)
        if match and not pid_alive(int(match["pid"])):
            groups.setdefault((match["pid"], match["token"]), {})[match["kind"]] = entry
    for kinds in sorted(groups.values(), key=lambda k: min(_mtime(p) for p in k.values())):  # oldest first
        removed += _finish_swap(path, kinds)
        for kind in ("tmp", "scratch", "staging", "ready"):  # a `.ready` left here lost to a newer output
            if kind in kinds and (kind != "ready" or kinds[kind].exists()):
                _remove(kinds[kind])
                removed.append(kinds[kind])
    nested = [leftover for entry in removed for leftover in clean_stale(entry)]
    return removed + nested + _clean_legacy_temps(path, [c for c in candidates if c not in removed])


def _candidates(path: Path) -> list[Path]:
    """Entries of the folder named `.NAME.*`: one C-level scan, since this runs before every atomic write
    (a folder of 10,000 flow files must not cost a regex per file per write)."""
    prefix = f".{path.name}."
    try:
        with os.scandir(path.parent) as entries:
            return [Path(e.path) for e in entries if e.name.startswith(prefix)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _finish_swap(out: Path, kinds: dict[str, Path]) -> list[Path]:
    """Recover a dead writer's swap: `.ready` is complete, so it becomes `out`; `.old` is dropped after its
    foreign entries (not owned by the writer) went back into `out`. With no `.ready` and no `out` (a crash that
    should not happen), `.old` is restored: the last complete output beats none."""
    ready, old, manifest = kinds.get("ready"), kinds.get("old"), kinds.get("owned")
    if ready is not None:
        if out.exists() and old is None:
            old = ready.with_name(ready.name[:-len("ready")] + "old")  # same pid and token: same group
            os.rename(out, old)
        if not out.exists():
            os.rename(ready, out)
    if old is not None and not out.exists():
        os.rename(old, out)
    elif old is not None:
        _carry_foreign(old, out, _read_owned(manifest))
        _remove(old)
    if manifest is not None:
        _remove(manifest)
    return [p for p in (ready, old, manifest) if p is not None and not p.exists()]


def _read_owned(manifest: Path | None) -> set[str] | None:
    try:
        return set(json.loads(manifest.read_text())) if manifest is not None else None
    except (OSError, ValueError):
        return None  # half-written manifest: the swap had not started, nothing foreign was moved


def _carry_foreign(old: Path, out: Path, owned: set[str] | None) -> None:
    """Move the entries of the previous folder that the writer does not own back into the new one."""
    if owned is None or not old.is_dir():
        return
    for entry in old.iterdir():
        if entry.name not in owned and entry.name != SCRATCH_NAME and not (out / entry.name).exists():
            os.rename(entry, out / entry.name)


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return 0.0


def _clean_legacy_temps(path: Path, candidates: list[Path], min_age_s: float = LEGACY_AGE_S) -> list[Path]:
    """Old-style `.NAME.<8 random>.tmp` files (no pid) among `candidates` older than `min_age_s`."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")
    now, removed = time.time(), []
    for entry in candidates:
        # `.x.123.abcdefgh.tmp` is also the new-style temporary of output `x` by pid 123: spare it while 123 lives
        new_style = re.fullmatch(r"\..+\.(\d+)\.[a-z0-9_]{8}\.tmp", entry.name)
        if new_style and pid_alive(int(new_style[1])):
            continue
        if pattern.fullmatch(entry.name) and entry.is_file() and now - _mtime(entry) > min_age_s:
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def clean_legacy_dirs(folder: PathLike, name_regex: str, content_regex: str,
                      min_age_s: float = LEGACY_AGE_S) -> list[Path]:
    """Remove folders left by the old `tempfile` code: in `folder`, named `name_regex`, holding only files
    named `content_regex` (nothing else: a user's folder that merely looks alike is kept), owned by this user
    and untouched for `min_age_s` (they carry no pid, so age is the only sign that the writer is gone)."""
    folder, now, removed = Path(folder), time.time(), []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if not (re.fullmatch(name_regex, entry.name) and entry.is_dir() and not entry.is_symlink()):
            continue
        try:
            files = list(entry.iterdir())
            mine = entry.stat().st_uid == os.getuid()
        except OSError:
            continue
        if (mine and all(f.is_file() and re.fullmatch(content_regex, f.name) for f in files)
                and now - max([_mtime(entry)] + [_mtime(f) for f in files]) > min_age_s):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (`.NAME.<pid>.<random>.tmp`); rename it over `path` on success,
    delete it on failure. Readers never see half a file; dead writers' leftovers are cleaned first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; artifacts get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        _remove(Path(tmp))
        raise



def save_figure(fig: Any, path: PathLike, dpi: int = 110) -> Path:
    """Write a matplotlib figure as PNG atomically (readers never see half a picture), then close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    import matplotlib.pyplot as plt  # noqa: PLC0415 - matplotlib is imported by whoever made the figure

    plt.close(fig)
    return path

def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


@contextmanager
def scratch_dir(beside: PathLike, name: str) -> Iterator[Path]:
    """A fresh working folder `.BESIDE.<name>.<pid>.<token>.scratch` next to the output `beside`, removed on
    exit (exceptions included); dead writers' scratch of the same output is removed on entry.

    Next to the output rather than in /tmp: same filesystem (a rename from it is atomic), and a crash leaves
    the leftover where the next run of the same output finds it.
    """
    if not _LABEL.fullmatch(name):
        raise ValueError(f"scratch name {name!r} must be letters, digits, '_' or '-'")
    beside = Path(beside)
    beside.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(beside)
    path = _sibling(beside, "scratch", secrets.token_hex(4), label=name)
    path.mkdir()
    try:
        yield path
    finally:
        _remove(path)


@contextmanager
def staged_dir(out_dir: PathLike, *, owned: Iterable[str] | None = None) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces `out_dir` whole, so readers (and crashes) see
    either the complete previous output or the complete new one, never a mix. On an exception the staging
    folder is removed and `out_dir` is untouched.

    `owned`: the entry names this output consists of (e.g. the report files). Entries of an existing `out_dir`
    outside it (a user's other files, another tool's sub-folder) are moved into the new folder after the swap
    instead of being dropped; None means the whole folder is this output. `stage / SCRATCH_NAME`
    (`scratch_of`) is for files needed only while writing (e.g. exported ONNX files); it is removed first.

    The swap: staging -> `.ready` (complete), `out_dir` -> `.old`, `.ready` -> `out_dir`, foreign entries of
    `.old` -> `out_dir`, `.old` removed. A writer killed anywhere in it is recovered on the next run for the same
    `out_dir` (`clean_stale`): an incomplete `.staging` is deleted, a `.ready` is renamed into place (the run had
    finished), a `.old` gives its foreign entries back (listed in the `.owned` manifest) and is deleted.
    Foreign entries are renamed twice during the swap: a process writing inside one of them at that moment
    may fail (don't nest one tool's output folder inside another's while both run).
    """
    out = Path(os.path.abspath(out_dir))  # normalised: `..` must not slip past the check below
    if Path(os.getcwd()).is_relative_to(out) or out.parent == out:
        raise UserInputError(f"output folder {out_dir}: it would be replaced whole, and it holds the current "
                             "folder; give a sub-folder instead (e.g. ./bench)")
    if out.exists() and not out.is_dir():
        raise UserInputError(f"output folder {out_dir} is a file; expected a folder (or a new name)")
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out)
    token = secrets.token_hex(4)
    stage = _sibling(out, "staging", token)
    stage.mkdir()
    try:
        yield stage
        _remove(stage / SCRATCH_NAME)
    except BaseException:
        _remove(stage)
        raise
    _swap(out, stage, token, None if owned is None else set(owned))


def scratch_of(stage: PathLike) -> Path:
    """The scratch folder inside a staging folder (created): removed before the swap, never published."""
    path = Path(stage) / SCRATCH_NAME
    path.mkdir(exist_ok=True)
    return path


def _swap(out: Path, stage: Path, token: str, owned: set[str] | None) -> None:
    if owned is not None:  # plain write: a torn manifest means the swap had not begun (read as "no manifest")
        _sibling(out, "owned", token).write_text(json.dumps(sorted(owned)))
    ready, old = _sibling(out, "ready", token), _sibling(out, "old", token)
    os.rename(stage, ready)  # from here on the new output is complete: recovery rolls forward
    if out.exists():
        os.rename(out, old)
    os.rename(ready, out)
    if old.exists():
        _carry_foreign(old, out, owned)
        _remove(old)
    _sibling(out, "owned", token).unlink(missing_ok=True)


def file_record(path: PathLike) -> dict[str, Any]:
    """`{"path", "size_bytes", "sha256"}` of a file, hashed in 1 MB blocks (engines are hundreds of MB)."""
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(HASH_BLOCK_BYTES), b""):
            digest.update(block)
    return {"path": str(path), "size_bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def is_scratch_path(path: PathLike) -> bool:
    """Whether `path` lies in a folder that is deleted after the run: a staging folder's `.scratch`, a
    `scratch_dir`, a staging folder, or a `bench-*` folder of the old code in the system temp folder."""
    path = Path(path).absolute()
    if any(part == SCRATCH_NAME or part.endswith((".scratch", ".staging", ".ready")) for part in path.parts[:-1]):
        return True
    temp = Path(tempfile.gettempdir()).absolute()
    return path.parent != temp and path.is_relative_to(temp) and path.relative_to(temp).parts[0].startswith("bench-")


def parse_resolution(text: str) -> tuple[int, int]:
    """'384x512' -> (384, 512): height then width."""
    from .errors import UserInputError

    parts = str(text).lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and len(p) <= 6 and int(p) > 0 for p in parts):
        raise UserInputError(f"resolution {text!r} is not of the form HxW with positive sides, e.g. 384x512")
    return int(parts[0]), int(parts[1])


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
