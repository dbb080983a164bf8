"""The export benchmark runs through the common protocol and report, plus ONNX Runtime's per-operator times."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import export_speed


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
