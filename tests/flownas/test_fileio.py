"""flownas/fileio.py: atomic files, scratch and staged folders survive writers killed mid-write (real child
processes, SIGKILLed while they block on a pipe inside the write), and never touch a live writer's files."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from flownas.errors import UserInputError
from flownas.fileio import (atomic_path, atomic_write_bytes, clean_legacy_dirs, clean_stale, file_record,
                            is_scratch_path, pid_alive, scratch_dir, scratch_of, staged_dir)

HOUR_S = 3600.0


class Writer:
    """A child Python process that runs `code` (with `arg` as sys.argv[1]), prints one line when it reached the
    point to be killed at, then blocks reading stdin: `kill()` SIGKILLs it there, `release()` lets it finish."""

    def __init__(self, code: str, arg: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(arg)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.line = self.proc.stdout.readline().strip()
        assert self.line, f"the writer exited early with {self.proc.wait()}"

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL: no finally blocks, no atexit, exactly like the OOM killer
        self.proc.wait()  # reaped, as its parent shell would: the pid is then free

    def release(self) -> int:
        self.proc.stdin.close()
        return self.proc.wait()


ATOMIC_WRITER = """
    import sys
    from flownas.fileio import atomic_path
    with atomic_path(sys.argv[1]) as tmp:
        tmp.write_bytes(b"half" * 4096)
        print(tmp, flush=True)
        sys.stdin.read()
        tmp.write_bytes(b"from the child")
"""


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------------------------------- atomic_path
def test_killed_writer_leaves_a_pid_named_temp_that_the_next_write_removes(tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    writer = Writer(ATOMIC_WRITER, out)
    leftover = Path(writer.line)
    assert leftover.name.startswith(f".model.onnx.{writer.proc.pid}.") and leftover.name.endswith(".tmp")
    writer.kill()
    assert leftover.stat().st_size == 4 * 4096 and not out.exists()  # the crash leaves its half file behind
    assert not pid_alive(writer.proc.pid)

    atomic_write_bytes(out, b"complete")
    assert out.read_bytes() == b"complete"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_a_live_writers_temp_file_is_never_removed(tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    writer = Writer(ATOMIC_WRITER, out)
    atomic_write_bytes(out, b"from the parent")  # a second writer of the same output, while the first lives
    assert Path(writer.line).exists() and out.read_bytes() == b"from the parent"
    assert writer.release() == 0
    assert out.read_bytes() == b"from the child"  # the last writer to finish wins, with a whole file
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_own_process_temp_is_kept_while_open(tmp_path: Path) -> None:
    out = tmp_path / "a.bin"
    with atomic_path(out) as tmp:
        tmp.write_bytes(b"x")
        assert clean_stale(out) == [] and tmp.exists()  # our own pid is alive
    assert out.read_bytes() == b"x"


def test_nested_atomic_writes_of_a_killed_writer_go_with_the_outer_temp(tmp_path: Path) -> None:
    # `export onnx` writes through atomic_path(out) and the exporter again through atomic_path(tmp)
    out = tmp_path / "m.onnx"
    writer = Writer("""
        import sys
        from flownas.fileio import atomic_path
        with atomic_path(sys.argv[1]) as outer, atomic_path(outer) as inner:
            inner.write_bytes(b"half")
            print(inner, flush=True)
            sys.stdin.read()
    """, out)
    writer.kill()
    assert len(_hidden(tmp_path)) == 2
    atomic_write_bytes(out, b"ok")
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_old_style_temps_are_removed_only_when_older_than_an_hour(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    stale, fresh = tmp_path / ".m.onnx.abcd1234.tmp", tmp_path / ".m.onnx.efgh5678.tmp"
    other = tmp_path / ".m.onnx.json.abcd1234.tmp"  # another output's temporary file
    for path in (stale, fresh, other):
        path.write_bytes(b"old")
    old = time.time() - 2 * HOUR_S
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    atomic_write_bytes(out, b"new")
    assert not stale.exists() and fresh.exists() and other.exists()


def test_dead_writers_of_other_outputs_are_left_to_them(tmp_path: Path) -> None:
    writer = Writer(ATOMIC_WRITER, tmp_path / "b.bin")
    writer.kill()
    atomic_write_bytes(tmp_path / "a.bin", b"a")
    assert Path(writer.line).exists()  # cleaned by the next write of b.bin, not of a.bin
    atomic_write_bytes(tmp_path / "b.bin", b"b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin"]


# ------------------------------------------------------------------------------------------- scratch_dir
def test_scratch_dir_is_removed_on_exit_and_on_exceptions(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    with scratch_dir(out, "export") as scratch:
        (scratch / "raw.onnx").write_bytes(b"raw")
        assert scratch.parent == tmp_path and f".{os.getpid()}." in scratch.name
    assert not scratch.exists()
    with pytest.raises(RuntimeError, match="boom"), scratch_dir(out, "export") as scratch:
        raise RuntimeError("boom")
    assert not scratch.exists() and list(tmp_path.iterdir()) == []


def test_killed_writers_scratch_is_removed_by_the_next_run(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    writer = Writer("""
        import sys
        from flownas.fileio import scratch_dir
        with scratch_dir(sys.argv[1], "export") as scratch:
            (scratch / "raw.onnx").write_bytes(b"raw" * 1000)
            print(scratch, flush=True)
            sys.stdin.read()
    """, out)
    writer.kill()
    leftover = Path(writer.line)
    assert (leftover / "raw.onnx").exists()
    with scratch_dir(out, "export") as scratch:
        assert not leftover.exists() and scratch.is_dir()
    assert list(tmp_path.iterdir()) == []


def test_scratch_name_must_be_one_plain_word(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scratch name"), scratch_dir(tmp_path / "x", "a.b"):
        pass


# -------------------------------------------------------------------------------------------- staged_dir
def _write_folder(out: Path, files: dict[str, str], owned: set[str] | None = None) -> None:
    with staged_dir(out, owned=owned) as stage:
        for name, text in files.items():
            (stage / name).write_text(text)


def test_staged_dir_replaces_the_whole_output_and_leaves_no_siblings(tmp_path: Path) -> None:
    out = tmp_path / "report"
    _write_folder(out, {"a.txt": "1", "plot.png": "1"})
    _write_folder(out, {"a.txt": "2"})  # the new run has no plot: the old one must not linger beside new files
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"] and (out / "a.txt").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


def test_failure_inside_staged_dir_leaves_the_output_untouched(tmp_path: Path) -> None:
    out = tmp_path / "report"
    _write_folder(out, {"a.txt": "1"})
    with pytest.raises(RuntimeError), staged_dir(out) as stage:
        (stage / "a.txt").write_text("2")
        raise RuntimeError("measurement failed")
    assert (out / "a.txt").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["report"]


def test_scratch_inside_the_stage_is_not_published(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    with staged_dir(out) as stage:
        (scratch_of(stage) / "raft.onnx").write_bytes(b"onnx")
        (stage / "report.md").write_text("r")
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]


def test_entries_the_writer_does_not_own_are_kept(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    (out / "suite").mkdir(parents=True)
    (out / "suite" / "report.md").write_text("suite")
    (out / "report.md").write_text("old")
    (out / "notes.txt").write_text("mine")
    _write_folder(out, {"report.md": "new"}, owned={"report.md", "results.csv"})
    assert (out / "report.md").read_text() == "new" and (out / "notes.txt").read_text() == "mine"
    assert (out / "suite" / "report.md").read_text() == "suite"
    _write_folder(out, {"report.md": "newer"})  # owned=None: the folder is the output
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]


def test_killed_writers_staging_is_removed_and_the_old_output_stays(tmp_path: Path) -> None:
    out = tmp_path / "report"
    _write_folder(out, {"a.txt": "old"})
    writer = Writer("""
        import sys
        from flownas.fileio import staged_dir
        with staged_dir(sys.argv[1]) as stage:
            (stage / "a.txt").write_text("half")
            print(stage, flush=True)
            sys.stdin.read()
    """, out)
    writer.kill()
    assert Path(writer.line).is_dir() and (out / "a.txt").read_text() == "old"
    _write_folder(out, {"a.txt": "new"})
    assert (out / "a.txt").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["report"]


SWAP_KILLER = """
    import os, sys
    from flownas.fileio import staged_dir
    real_rename = os.rename

    def rename(src, dst):  # stop right after the rename that produces `.<kind>`: killed there
        real_rename(src, dst)
        if str(dst).endswith(".{kind}"):
            print(dst, flush=True)
            sys.stdin.read()

    os.rename = rename
    with staged_dir(sys.argv[1], owned={{"a.txt", "b.txt"}}) as stage:
        (stage / "a.txt").write_text("new")
        (stage / "b.txt").write_text("new")
"""


@pytest.mark.parametrize("kind", ["ready", "old"])
def test_a_swap_interrupted_between_renames_is_finished_by_the_next_run(tmp_path: Path, kind: str) -> None:
    """Killed after staging -> `.ready` (the new output is complete, the old one still in place) or after
    out -> `.old` (no output at all): the next run rolls forward to the new output, foreign entries kept."""
    out = tmp_path / "report"
    _write_folder(out, {"a.txt": "old", "b.txt": "old", "mine.txt": "user"})
    writer = Writer(SWAP_KILLER.format(kind=kind), out)
    writer.kill()
    assert out.exists() == (kind == "ready") and Path(writer.line).is_dir()

    removed = clean_stale(out)  # what every staged_dir / atomic_path of `out` runs first
    assert removed and [p.name for p in tmp_path.iterdir()] == ["report"]
    assert {p.name: p.read_text() for p in out.iterdir()} == {"a.txt": "new", "b.txt": "new", "mine.txt": "user"}


def test_staged_dir_refuses_folders_it_must_not_replace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for out in (".", str(tmp_path), ".."):  # swapping it would leave this process in a deleted folder
        with pytest.raises(UserInputError, match="holds the current folder"), staged_dir(out):
            pass
    assert list(tmp_path.iterdir()) == []
    Path("model.onnx").write_bytes(b"a user's file")
    with pytest.raises(UserInputError, match="model.onnx is a file"), staged_dir("model.onnx"):
        pass
    _write_folder(Path("bench"), {"a.txt": "ok"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench", "model.onnx"]


def test_own_staging_folder_survives_a_clean_while_open(tmp_path: Path) -> None:
    out = tmp_path / "report"
    with staged_dir(out) as stage:
        (stage / "a.txt").write_text("x")
        assert clean_stale(out) == [] and stage.is_dir()
    assert (out / "a.txt").read_text() == "x"


# ------------------------------------------------------------------------------------ legacy and records
def test_legacy_temp_folders_go_only_when_old_and_holding_only_their_files(tmp_path: Path) -> None:
    old = time.time() - 2 * HOUR_S
    folders = {name: tmp_path / name for name in ("tmpabcd1234", "tmpefgh5678", "tmpijkl9012")}
    for folder in folders.values():
        folder.mkdir()
        (folder / "raw.onnx").write_bytes(b"raw")
    (folders["tmpefgh5678"] / "user.txt").write_text("not ours")
    for name in ("tmpabcd1234", "tmpefgh5678"):
        for path in (folders[name] / "raw.onnx", folders[name]):
            os.utime(path, (old, old))
    removed = clean_legacy_dirs(tmp_path, r"tmp[a-z0-9_]{8}", r"raw\.onnx")
    assert removed == [folders["tmpabcd1234"]]
    assert folders["tmpefgh5678"].exists() and folders["tmpijkl9012"].exists()  # foreign file / too recent


def test_file_record_hashes_in_blocks_like_a_one_shot_hash(tmp_path: Path) -> None:
    data = bytes(range(256)) * (5 * 4096 + 7)  # 5.0 MB: several 1 MB blocks and a partial one
    path = tmp_path / "engine.plan"
    path.write_bytes(data)
    assert file_record(path) == {"path": str(path), "size_bytes": len(data),
                                 "sha256": hashlib.sha256(data).hexdigest()}
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert file_record(empty)["sha256"] == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_scratch_paths_are_recognised(tmp_path: Path) -> None:
    with scratch_dir(tmp_path / "out", "bench") as scratch:
        assert is_scratch_path(scratch / "raft.onnx")
    assert is_scratch_path(tmp_path / "out.1.ab.staging" / ".scratch" / "raft.onnx")
    assert is_scratch_path(Path(tempfile.gettempdir()) / "bench-onnx-x1y2" / "raft.onnx")  # the old bench code
    assert not is_scratch_path(tmp_path / "models" / "raft.onnx")
    assert not is_scratch_path(Path(tempfile.gettempdir()) / "raft.onnx")
