"""`run_benchmark` as a library call: any ONNX graph, the flow models, and arguments refused before any work."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.protocol import TimingConfig
from bench.session import BenchRequest, run_benchmark
from flownas.errors import ToolkitError
from tests_helpers import one_conv_onnx

QUICK = TimingConfig(warmup_runs=1, warmup_s=0.0, runs=5)


def test_any_onnx_graph_with_an_input_named_x(tmp_path: Path) -> None:
    graph = one_conv_onnx(tmp_path / "conv.onnx")
    session = run_benchmark(BenchRequest(backends="ort-cpu", onnx=str(graph), timing=QUICK, out=tmp_path / "out"))
    result = session.results["conv/ort-cpu"]
    assert result.stats.count == 5 and len(result.samples["latency_ms"]) == 5
    assert 0 < result.stats.min_ms <= result.stats.median_ms <= result.stats.p90_ms <= result.stats.max_ms
    # MACs of the one 3x3 conv, by hand: 4 x 8 x 8 outputs x (3 x 3 x 3) products each
    assert result.outputs["y"].shape == (1, 4, 8, 8) and result.meta == {"batch": 1, "macs": 4 * 8 * 8 * 27}
    record = json.loads((tmp_path / "out" / "results.json").read_text())
    stats = record["results"][0]["stats"]
    assert {"min_ms", "median_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "cv", "throughput_per_s"} <= set(stats)
    assert session.title == "conv: ort-cpu"


def test_dynamic_graph_takes_shapes_and_files(tmp_path: Path) -> None:
    import numpy as np

    graph = one_conv_onnx(tmp_path / "dyn.onnx", batch="N")
    with pytest.raises(ToolkitError, match="--input-shape x:1x3x8x8"):
        run_benchmark(BenchRequest(backends="ort-cpu", onnx=str(graph), timing=QUICK, out=tmp_path / "o"))
    session = run_benchmark(BenchRequest(backends="ort-cpu", onnx=str(graph), input_shapes="x:3x3x8x8",
                                         timing=QUICK, out=tmp_path / "o"))
    assert session.results["dyn/ort-cpu"].outputs["y"].shape == (3, 4, 8, 8)
    np.save(tmp_path / "x.npy", np.ones((2, 3, 8, 8), np.float32))
    session = run_benchmark(BenchRequest(backends="ort-cpu", onnx=str(graph), inputs=f"x:{tmp_path / 'x.npy'}",
                                         timing=QUICK, out=tmp_path / "o"))
    assert session.results["dyn/ort-cpu"].outputs["y"].shape == (2, 4, 8, 8)


@pytest.mark.parametrize("changes, message", [
    ({"iters": 0}, "--iters 0: the number of update iterations must be at least 1"),
    ({"precision": "int3"}, "--precision 'int3' is not one of"),
    ({"precision": "int8", "backends": "torch-cpu"}, "backend torch-cpu runs fp32 here"),
    ({"precision": "fp32,fp32"}, "a precision is given twice"),
    ({"backends": "ort-cuda"}, "CUDAExecutionProvider"),
    ({"threads": 0}, "--threads 0"),
])
def test_bad_requests_fail_before_any_export(tmp_path: Path, changes: dict, message: str) -> None:
    import onnxruntime as ort

    if changes.get("backends") == "ort-cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDAExecutionProvider is available here")
    request = BenchRequest(**{"backends": "ort-cpu", "model": "raft-small", "timing": QUICK,
                              "out": tmp_path / "out", **changes})
    with pytest.raises(ToolkitError, match=message):
        run_benchmark(request)
    assert not list(tmp_path.rglob("*.onnx"))  # refused before the 30-second export, nothing left behind


def test_a_flow_graph_is_fed_an_image_pair_at_its_export_size(tmp_path: Path) -> None:
    import torch

    from bench.runners import export_temp_onnx
    from flownas.models import RAFT

    torch.manual_seed(0)
    onnx = export_temp_onnx(RAFT(small=True).eval(), (128, 128), 1, tmp_path, "raft-small")
    session = run_benchmark(BenchRequest(backends="onnxruntime", onnx=str(onnx), timing=QUICK, out=tmp_path / "o"))
    result = session.results["raft-small/ort-cpu"]
    assert result.meta["resolution"] == "128x128" and result.meta["iters"] == 1 and result.meta["macs"] > 0
    assert result.outputs["flow"].shape == (1, 2, 128, 128)
    assert "at 128x128, 1 iterations" in session.title


@pytest.mark.slow
def test_precisions_side_by_side_from_one_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import flownas.provenance

    monkeypatch.setattr(flownas.provenance, "cpu_features", lambda cpuinfo=None: ("avx2", "fma"))  # no VNNI
    session = run_benchmark(BenchRequest(backends="ort-cpu", model="tiny-flownas", resolution="128x128", iters=1,
                                         precision="fp32,int8", threads=1, timing=QUICK, out=tmp_path / "o"))
    fp32, int8 = session.results["tiny-flownas/ort-cpu/fp32"], session.results["tiny-flownas/ort-cpu/int8"]
    assert (fp32.precision, int8.precision) == ("fp32", "int8") and fp32.run_id == int8.run_id
    text = session.paths["markdown"].read_text()
    ratio = fp32.stats.median_ms / int8.stats.median_ms
    assert "## Precisions side by side" in text and f"{int8.stats.median_ms:.2f} ({ratio:.2f}x)" in text
    # INT8 timed on a CPU without integer dot products: the report says its ratio does not carry over
    assert any("has no INT8 dot-product instructions" in note for note in session.notes)
    assert "has no INT8 dot-product instructions" in text


@pytest.mark.parametrize("path, name", [("runs/teacher/last.pt", "teacher"), ("runs/teacher/best.pt", "teacher"),
                                        ("raft-k.onnx", "raft-k"), ("out/raft-k-int8.onnx", "raft-k-int8"),
                                        (None, None)])
def test_reports_name_a_checkpoint_by_its_folder_when_its_stem_is_generic(path, name) -> None:
    from bench.session import artifact_name

    assert artifact_name(path) == name
