"""Reports (bench/report.py): ratio arithmetic on known samples, and the four files from a real measured run
(PyTorch eager vs ONNX Runtime, RAFT small at 128x128, 1 iteration)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.protocol import BenchResult, TimingConfig, compare, make_feeds
from bench.report import CSV_COLUMNS, default_baseline, markdown, ratio_table, write_reports
from bench.runners import export_temp_onnx, make_runner
from bench.timing import summarize
from flownas.models import RAFT


def _known(model: str, backend: str, samples: list[float], run_id: str = "run-1", precision: str = "fp32",
           phases: dict[str, list[float]] | None = None) -> BenchResult:
    """A result from a known timing sequence (report arithmetic only; nothing is measured)."""
    runner = {"backend": backend, "model": model, "precision": precision, "device": "cpu", "threads": 2}
    return BenchResult(f"{model}/{backend}/{precision}", runner, summarize(samples),
                       {k: summarize(v) for k, v in (phases or {}).items()}, {"latency_ms": samples},
                       {"cpu": "test CPU", "versions": {"numpy": np.__version__}}, TimingConfig().to_dict(), 1, run_id)


def test_ratios_against_the_baseline_and_the_first_model() -> None:
    results = [_known("raft", "torch-cpu", [100.0, 100.0, 100.0]), _known("raft", "ort-cpu", [40.0, 50.0, 60.0]),
               _known("raft-k", "torch-cpu", [200.0] * 3), _known("raft-k", "ort-cpu", [100.0] * 3)]
    assert default_baseline(results) == "torch-cpu"
    rows = {r["name"]: r for r in ratio_table(results)}
    assert rows["raft/ort-cpu/fp32"]["speedup_vs_baseline"] == pytest.approx(2.0)
    assert rows["raft/torch-cpu/fp32"]["speedup_vs_baseline"] == pytest.approx(1.0)
    assert rows["raft-k/ort-cpu/fp32"]["baseline"] == "raft-k/torch-cpu/fp32"
    assert rows["raft-k/torch-cpu/fp32"]["speedup_vs_first_model"] == pytest.approx(0.5)
    assert rows["raft-k/ort-cpu/fp32"]["speedup_vs_first_model"] == pytest.approx(0.5)
    other = {r["name"]: r for r in ratio_table(results, baseline="ort-cpu")}
    assert other["raft/torch-cpu/fp32"]["speedup_vs_baseline"] == pytest.approx(0.5)


def test_no_ratio_across_runs_or_without_a_baseline() -> None:
    results = [_known("raft", "torch-cpu", [100.0] * 3, run_id="a"), _known("raft", "ort-cpu", [50.0] * 3, run_id="b"),
               _known("raft-k", "ort-cpu", [70.0] * 3, run_id="a")]
    rows = {r["name"]: r for r in ratio_table(results)}
    assert rows["raft/ort-cpu/fp32"]["speedup_vs_baseline"] is None  # measured in another run
    assert rows["raft-k/ort-cpu/fp32"]["baseline"] is None            # no torch-cpu row for raft-k
    assert "n/a" in markdown(results, "t")


def test_precisions_compare_against_fp32() -> None:
    results = [_known("raft", "trt", [10.0] * 3, precision="fp32"), _known("raft", "trt", [4.0] * 3, precision="fp16")]
    rows = {r["name"]: r for r in ratio_table(results)}
    assert rows["raft/trt/fp16"]["speedup_vs_baseline"] == pytest.approx(2.5)


def test_gpu_phases_get_their_own_table() -> None:
    phases = {"h2d_ms": [0.5] * 3, "compute_ms": [8.0] * 3, "d2h_ms": [0.25] * 3, "host_ms": [9.5] * 3}
    text = markdown([_known("raft", "trt", [8.75] * 3, phases=phases)], "GPU")
    assert "## GPU phases" in text and "| raft/trt/fp32 | 0.500 | 8.000 | 0.250 | 8.750 | 9.500 |" in text


def test_no_results_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no benchmark results"):
        write_reports([], tmp_path)


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BenchResult]:
    torch.manual_seed(0)
    model = RAFT(small=True).eval()
    onnx = export_temp_onnx(model, (128, 128), 1, tmp_path_factory.mktemp("onnx"), "raft-small")
    runners = {"raft-small/torch-cpu": make_runner("torch-cpu", model=model, iters=1, model_name="raft-small"),
               "raft-small/ort-cpu": make_runner("ort-cpu", onnx=onnx, model_name="raft-small")}
    return compare(runners, make_feeds(128, 128), TimingConfig(warmup_runs=1, warmup_s=0.0, runs=3),
                   meta={"resolution": "128x128", "iters": 1})


def test_report_files_exist_and_parse(measured: dict[str, BenchResult], tmp_path: Path) -> None:
    paths = write_reports(measured, tmp_path / "out", "RAFT small", notes=["random weights"])
    assert {p.name for p in paths.values()} == {"results.csv", "report.md", "latency.png", "results.json"}
    with open(paths["csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == CSV_COLUMNS and [r["backend"] for r in rows] == ["torch-cpu", "ort-cpu"]
    ort_row = rows[1]
    assert ort_row["resolution"] == "128x128" and ort_row["iters"] == "1" and ort_row["runs"] == "3"
    ratio = float(ort_row["speedup_vs_baseline"])
    assert ratio == pytest.approx(float(rows[0]["median_ms"]) / float(ort_row["median_ms"]))
    assert float(ort_row["max_abs_diff_vs_baseline"]) < 1e-4  # ONNX Runtime's flow matches eager's

    text = paths["markdown"].read_text()
    assert "speed-up vs torch-cpu" in text and f"{ratio:.2f}x" in text and "random weights" in text
    assert "## Environment" in text and measured["raft-small/ort-cpu"].environment["cpu"] in text

    png = paths["plot"].read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000

    record = json.loads(paths["json"].read_text())
    assert record["environment"]["cpu"] and "onnxruntime" in record["environment"]["versions"]
    assert [len(r["samples_ms"]["latency_ms"]) for r in record["results"]] == [3, 3]
    assert record["results"][1]["runner"]["backend"] == "ort-cpu" and record["baseline"] == "torch-cpu"
    assert not list((tmp_path / "out").glob(".*.tmp"))  # atomic writes leave no temporary files
