"""The export benchmark runs through the common protocol and report, plus ONNX Runtime's per-operator times
(bench/export_speed.py, bench/profile.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import export_speed
from bench.profile import breakdown_table, ort_op_breakdown
from tests_helpers import one_conv_onnx


def test_op_breakdown_of_a_one_conv_graph_and_no_profile_left(tmp_path: Path) -> None:
    graph = one_conv_onnx(tmp_path / "conv.onnx")
    feeds = {"x": np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)}
    times = ort_op_breakdown(graph, feeds, threads=1, runs=2)
    # ms per inference by operator type of the graph ONNX Runtime optimised (it may add layout reorders)
    assert times["Conv"] > 0 and all(ms > 0 for ms in times.values())
    assert set(times) <= {"Conv", "ReorderInput", "ReorderOutput"}
    assert [p.name for p in tmp_path.iterdir()] == ["conv.onnx"]  # the profiler's JSON was read and deleted


def test_breakdown_table_by_hand() -> None:
    rows = breakdown_table({"naive": {"GridSample": 30.0, "Conv": 10.04}, "optimised": {"Conv": 10.0, "Gather": 2.5}},
                           limit=2)
    assert rows == ["| operator | naive | optimised |", "|---|---|---|",
                    "| GridSample | 30.0 | 0.0 |",   # sorted by the largest time in any variant
                    "| Conv | 10.0 | 10.0 |",        # Gather (2.5) is beyond the limit of 2 rows, yet in the total
                    "| **total** | 40.0 | 12.5 |"]


@pytest.mark.parametrize("argv, message", [(["--runs", "0"], "at least 1"), (["--models", "raft-xl"], "raft-xl")])
def test_bad_arguments_are_one_line_and_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     argv: list[str], message: str) -> None:
    assert export_speed.main([*argv, "--resolution", "128x128", "--out", str(tmp_path / "es")]) == 2
    printed = capsys.readouterr().out
    assert printed.startswith("error: ") and message in printed and printed.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_quick_export_speed_run_writes_the_common_report_and_op_breakdown(tmp_path: Path) -> None:
    out = tmp_path / "es"
    assert export_speed.main(["--models", "raft-small", "--resolution", "128x128", "--iters", "1", "--runs", "2",
                              "--warmup-s", "0", "--out", str(out)]) == 0
    record = json.loads((out / "results.json").read_text())
    assert [r["backend"] for r in record["results"]] == ["torch-cpu", "ort-naive", "ort-optimised"]
    assert len({r["run_id"] for r in record["results"]}) == 1  # measured interleaved, in one run
    assert all(r["max_abs_diff_vs_baseline"] < 1e-3 for r in record["ratios"][1:])  # the graphs match eager
    ops = json.loads((out / "op_breakdown.json").read_text())["raft-small"]
    assert ops["naive"]["GridSample"] > 0 and "GridSample" not in ops["optimised"]
    assert not [p for p in out.iterdir() if p.suffix == ".onnx"]  # exported graphs are scratch, not kept
