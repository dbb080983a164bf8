"""bench/suite.py: where reports go (the ignored folder by default, the committed reference only with --record),
and a quick real run (RAFT small, 128x128, 2 iterations) whose folder appears whole, with its ONNX files
hashed but not kept; a run killed mid-way leaves only a staging folder, which the next run removes."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.report import NOT_KEPT, REPORT_FILES
from bench.runners import BenchError
from bench.suite import DEFAULT_OUT, RESULTS, main, parse_args

REPO = Path(__file__).resolve().parents[2]
QUICK = ["--models", "raft-small", "--resolution", "128x128", "--iters", "2", "--runs", "2", "--warmup-s", "0"]


def test_reports_go_to_the_ignored_folder_unless_recording() -> None:
    assert Path(parse_args([]).out) == DEFAULT_OUT and Path(parse_args(QUICK).out) == DEFAULT_OUT
    assert DEFAULT_OUT.parts[0] == "outputs" and "outputs/" in (REPO / ".gitignore").read_text().split()
    assert Path(parse_args(["--record"]).out) == RESULTS == REPO / "bench" / "results" / "suite"
    assert parse_args(["--out", "x"]).command == "python -m bench.suite --out x"


def test_record_refuses_settings_other_than_the_standard_suite() -> None:
    with pytest.raises(BenchError, match="--record writes the reference of the standard suite"):
        parse_args(["--record", *QUICK])
    with pytest.raises(SystemExit):  # --record chooses the folder: --out with it is a contradiction
        parse_args(["--record", "--out", "x"])


@pytest.mark.slow
def test_quick_suite_writes_a_traceable_report_and_nothing_else(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main([*QUICK, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging, scratch or ONNX file left beside it

    text = (out / "report.md").read_text()
    assert text.split("\n")[2:4] == ["```", f"python -m bench.suite {' '.join(QUICK)} --out {out}"]
    record = json.loads((out / "results.json").read_text())
    (onnx,) = record["files"]
    assert onnx["path"] == f"raft-small.onnx {NOT_KEPT}" and onnx["size_bytes"] > 100_000
    assert re.fullmatch(r"[0-9a-f]{64}", onnx["sha256"]) and f"| {onnx['sha256']} |" in text
    assert ".staging" not in (out / "results.json").read_text() + text  # the deleted scratch path is never named
    assert {r["runner"]["onnx"] for r in record["results"] if r["backend"] == "ort-cpu"} == {onnx["path"]}
    assert record["provenance"]["kind"] == "bench-report" and record["provenance"]["resolution"] == [128, 128]
    assert "report.md" in capsys.readouterr().out


@pytest.mark.slow
def test_a_killed_suite_leaves_a_staging_folder_that_the_next_run_removes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    child = subprocess.Popen([sys.executable, "-m", "bench.suite", *QUICK[:-4], "--runs", "100000", "--warmup-s", "0",
                              "--out", str(out)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while child.poll() is None and not list(tmp_path.glob(".out.*.staging/.scratch/raft-small.onnx")):
            time.sleep(0.05)  # until the export is done and the (endless) measurement runs
        assert child.poll() is None, "the suite ended before it could be killed"
    finally:
        child.kill()
        child.wait()
    (staging,) = tmp_path.glob(".out.*.staging")
    assert (staging / ".scratch" / "raft-small.onnx").is_file() and not out.exists()

    assert main([*QUICK, "--out", str(out)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)
