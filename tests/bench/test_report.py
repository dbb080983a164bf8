"""Reports (bench/report.py): ratio arithmetic on known samples, machine-load flags, traceability (command,
files and their hashes, no deleted temp paths), all-or-nothing writes, and the four files from a real measured
run (PyTorch eager vs ONNX Runtime, RAFT small at 128x128, 1 iteration)."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bench.protocol import BenchResult, TimingConfig, compare, make_feeds
from bench import report
from bench.report import CSV_COLUMNS, LOADED, NOT_KEPT, default_baseline, markdown, ratio_table, write_reports
from bench.runners import export_temp_onnx, make_runner
from bench.timing import summarize
from flownas.fileio import scratch_dir
from flownas.models import RAFT


QUIET = {"load_average_1min": 0.4, "load_average_1min_end": 0.6, "usable_cpus": 2}


def _known(model: str, backend: str, samples: list[float], run_id: str = "run-1", precision: str = "fp32",
           phases: dict[str, list[float]] | None = None, env: dict[str, Any] | None = None,
           **runner_extra: Any) -> BenchResult:
    """A result from a known timing sequence (report arithmetic only; nothing is measured). The environment
    records a quiet machine unless `env` says otherwise."""
    runner = {"backend": backend, "model": model, "precision": precision, "device": "cpu", "threads": 2,
              **runner_extra}
    environment = {"cpu": "test CPU", "versions": {"numpy": np.__version__}, **(QUIET if env is None else env)}
    return BenchResult(f"{model}/{backend}/{precision}", runner, summarize(samples),
                       {k: summarize(v) for k, v in (phases or {}).items()}, {"latency_ms": samples},
                       environment, TimingConfig().to_dict(), 1, run_id, meta={"resolution": "128x128", "iters": 2})


def _pair(env: dict[str, Any] | None = None, **runner_extra: Any) -> list[BenchResult]:
    """raft and raft-k on torch-cpu and ort-cpu: ort 2x faster, raft-k 2x slower than raft."""
    return [_known("raft", "torch-cpu", [100.0] * 3, env=env),
            _known("raft", "ort-cpu", [50.0] * 3, env=env, **runner_extra),
            _known("raft-k", "torch-cpu", [200.0] * 3, env=env),
            _known("raft-k", "ort-cpu", [100.0] * 3, env=env)]


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


@pytest.mark.slow  # a real export and measurement; the arithmetic tests above are fast
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
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # nor staging folders beside it

    onnx = Path(measured["raft-small/ort-cpu"].runner["onnx"])
    assert {"path": str(onnx), "size_bytes": onnx.stat().st_size,
            "sha256": hashlib.sha256(onnx.read_bytes()).hexdigest()} in record["files"]
    assert record["provenance"]["kind"] == "bench-report" and record["provenance"]["resolution"] == [128, 128]


# ------------------------------------------------------------------------------------------- machine load
@pytest.mark.parametrize("env", [{"load_average_1min": 5.3, "load_average_1min_end": 4.0, "usable_cpus": 2},
                                 {"load_average_1min": 0.2, "load_average_1min_end": 2.5, "usable_cpus": 2},
                                 {"load_average_1min": 3.1, "load_average_1min_end": 0.1, "usable_cpus": None}])
def test_a_loaded_machine_is_flagged_and_its_ratios_are_not_findings(tmp_path: Path, env: dict[str, Any]) -> None:
    """Load above the usable CPUs at the start or at the end (or above the threads, when the CPUs are unknown)."""
    paths = write_reports(_pair(env), tmp_path / "out", "loaded", command="flownas bench")
    text = paths["markdown"].read_text()
    warnings = text.split("## Warnings", 1)[1]
    assert "machine loaded" in warnings and f"{max(env['load_average_1min'], env['load_average_1min_end'])}" in warnings
    assert f"| 2.00x {LOADED} |" in text and f"| 1.00x {LOADED} |" in text   # speed-up vs torch-cpu, marked
    assert f"200.0 (0.50x {LOADED})" in text                                  # models side by side, marked
    assert "| 2.00x |" not in text                                            # never printed as a plain finding
    with open(paths["csv"], newline="") as handle:
        assert {row["machine_loaded"] for row in csv.DictReader(handle)} == {"True"}
    record = json.loads(paths["json"].read_text())
    assert not any(row["finding"] for row in record["ratios"]) and record["load"]["run-1"]["loaded"]
    assert record["ratios"][1]["speedup_vs_baseline"] == pytest.approx(2.0)  # the number is kept, only not a finding


def test_a_quiet_machine_prints_its_ratios_as_findings(tmp_path: Path) -> None:
    text = write_reports(_pair(), tmp_path / "out", "quiet", command="c")["markdown"].read_text()
    assert "| 2.00x |" in text and "200.0 (0.50x)" in text and "machine loaded" not in text
    assert "load 0.4 at the start, 0.6 at the end" in text


@pytest.mark.parametrize("end", [2.0, 2.0 + report.LOAD_SLACK])
def test_load_at_the_cpu_count_is_not_flagged(end: float) -> None:
    """The run's own threads read as about the CPU count: only more than that (plus sampling slack) is flagged."""
    env = {"load_average_1min": 2.0, "load_average_1min_end": end, "usable_cpus": 2}
    assert not report.load_assessment(_pair(env))["run-1"]["loaded"]


def test_each_run_is_judged_on_its_own_load() -> None:
    loaded = {"load_average_1min": 9.0, "load_average_1min_end": 9.0, "usable_cpus": 4}
    results = [_known("raft", "torch-cpu", [100.0] * 3, run_id="a"), _known("raft", "ort-cpu", [50.0] * 3, run_id="a"),
               _known("raft-k", "torch-cpu", [200.0] * 3, run_id="b", env=loaded),
               _known("raft-k", "ort-cpu", [100.0] * 3, run_id="b", env=loaded)]
    text = markdown(results, "two runs", command="c")
    assert "| raft | ort-cpu | fp32 | 2 | 1 | 50.00 | 50.00 | 50.00 | 0.0% | 20.00 | n/a | n/a | 2.00x |" in text
    assert f"| raft-k | ort-cpu | fp32 | 2 | 1 | 100.00 | 100.00 | 100.00 | 0.0% | 10.00 | n/a | n/a | 2.00x {LOADED} |" in text
    assert "(run b)" in text and "(run a)" not in text


# ------------------------------------------------------------------------------------------ traceability
def test_command_files_and_provenance_are_recorded(tmp_path: Path) -> None:
    weights = tmp_path / "raft-k.pt"
    weights.write_bytes(b"weights" * 1000)
    command = "flownas bench --weights raft-k.pt --backend torch-cpu,ort-cpu"
    paths = write_reports(_pair(), tmp_path / "out", "traced", command=command, files=[weights])
    text = paths["markdown"].read_text()
    assert text.startswith(f"# traced\n\n```\n{command}\n```\n")  # echoed at the top, as trtexec does
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert f"| {weights} | 7000 | {digest} |" in text
    record = json.loads(paths["json"].read_text())
    assert record["command"] == command and record["files"] == [
        {"path": str(weights), "size_bytes": 7000, "sha256": digest}]
    prov = record["provenance"]
    assert prov["kind"] == "bench-report" and prov["command"] == command and prov["resolution"] == [128, 128]
    assert prov["iters"] == 2 and prov["backend"] == "torch-cpu,ort-cpu" and prov["precision"] == "fp32"


def test_a_file_exported_into_scratch_is_hashed_but_never_named_by_its_path(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with scratch_dir(out, "bench") as scratch:
        onnx = scratch / "raft.onnx"
        onnx.write_bytes(b"onnx graph")
        paths = write_reports(_pair(onnx=str(onnx)), out, "scratch", command="c")
    assert not onnx.exists()
    digest = hashlib.sha256(b"onnx graph").hexdigest()
    for path in paths.values():
        if path.suffix != ".png":
            assert str(scratch) not in path.read_text() and scratch.name not in path.read_text()
    assert f"| raft.onnx {NOT_KEPT} | 10 | {digest} |" in paths["markdown"].read_text()
    runner = json.loads(paths["json"].read_text())["results"][1]["runner"]
    assert runner["onnx"] == f"raft.onnx {NOT_KEPT}" and runner["onnx_sha256"] == digest


# ----------------------------------------------------------------------------------------- all or nothing
def test_a_failed_report_leaves_the_previous_one_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    before = {p.name: p.read_bytes() for p in write_reports(_pair(), out, "first", command="c").values()}

    def broken_plot(*args: Any, **kwargs: Any) -> Path:
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "plot", broken_plot)  # fails after results.csv and report.md were written
    with pytest.raises(RuntimeError, match="disk full"):
        write_reports(_pair(), out, "second", command="c")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_reports_replace_their_own_files_and_keep_the_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    (out / "suite").mkdir(parents=True)
    (out / "suite" / "report.md").write_text("the suite's report")
    (out / "latency.png").write_bytes(b"an older plot")

    def no_matplotlib(*args: Any, **kwargs: Any) -> Path:
        raise ImportError("No module named 'matplotlib'")

    monkeypatch.setattr(report, "plot", no_matplotlib)  # this run makes no plot: the old one must not stay
    paths = write_reports(_pair(), out, "no plot", command="c")
    assert sorted(p.name for p in out.iterdir()) == ["report.md", "results.csv", "results.json", "suite"]
    assert "plot" not in paths and (out / "suite" / "report.md").read_text() == "the suite's report"
