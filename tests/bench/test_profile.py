"""Per-operator profiles (`bench.profile`, `bench --profile`): parts placed by scope and graph position, operator
times that account for the measured whole-model time, files written by the benchmark."""
from __future__ import annotations

import csv
import json

import pytest
from onnx import TensorProto, helper

from bench.profile import node_parts, part_by_scope, profile_runner
from bench.protocol import TimingConfig, benchmark, make_feeds
from bench.session import BenchRequest, run_benchmark
from export.onnx_export import ExportSpec, export_onnx
from export.runners import OrtRunner
from flownas.weights import untrained_model


def test_nodes_are_placed_by_scope_then_by_position():
    names = ["/Div", "/fnet/conv1/Conv", "/cnet/conv1/Conv", "/MatMul", "/update_block/gru/Conv", "/GatherElements",
             "/update_block_1/gru/Conv", "/Softmax", "/DepthToSpace"]
    nodes = [helper.make_node("Identity", [f"t{i}"], [f"t{i + 1}"], name=n) for i, n in enumerate(names)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info(f"t{len(names)}", TensorProto.FLOAT, [1])])
    parts = node_parts(helper.make_model(graph))
    assert [parts[n] for n in names] == ["other", "encoders", "encoders", "correlation", "update", "correlation",
                                         "update", "upsampling", "upsampling"]
    assert part_by_scope("/fnet/layer1/Conv + /fnet/Relu") == "encoders" and part_by_scope("x") == "other"


@pytest.fixture(scope="module")
def small_graph(tmp_path_factory):
    path = tmp_path_factory.mktemp("prof") / "raft-small.onnx"
    export_onnx(untrained_model("raft-small"), path, ExportSpec(128, 128, iters=2))
    return path


@pytest.mark.slow
def test_ort_profile_covers_every_part_and_accounts_for_the_whole_time(small_graph, tmp_path):
    feeds = make_feeds(128, 128)
    runner = OrtRunner(small_graph, "cpu", threads=1)
    whole = benchmark(runner, feeds, TimingConfig(warmup_runs=2, runs=15)).stats.median_ms
    result = profile_runner(runner, feeds, runs=8, work_dir=tmp_path, whole_median_ms=whole)
    parts = result.by_part()
    assert all(parts.get(p, 0) > 0 for p in ("encoders", "correlation", "update", "upsampling")), parts
    assert sum(parts.values()) == pytest.approx(result.total_ms) == pytest.approx(sum(result.by("op_type").values()))
    assert "Conv" in result.by("op_type")
    # Kernel times are most of an inference, and the profiler's own cost does not double it.
    assert 0.75 < result.coverage < 1.25, result.coverage
    assert not list(tmp_path.glob("*.json"))  # ONNX Runtime's profile JSON is read and removed


@pytest.mark.slow
def test_bench_profile_writes_one_profile_per_runner(tmp_path):
    session = run_benchmark(BenchRequest(backends="ort-cpu,torch-cpu", model="tiny-flownas", resolution="128x128",
                                         iters=2, threads=1, timing=TimingConfig(warmup_runs=1, warmup_s=0, runs=3),
                                         out=tmp_path / "b", profile=True, profile_runs=2))
    folder = tmp_path / "b" / "profile"
    for name in session.results:
        stem = name.replace("/", "_")
        record = json.loads((folder / f"{stem}.json").read_text())
        rows = list(csv.DictReader((folder / f"{stem}.csv").open()))
        assert rows and sum(float(r["ms"]) for r in rows) == pytest.approx(record["total_ms"], rel=1e-4)
        assert record["whole_median_ms"] == pytest.approx(session.results[name].stats.median_ms)
        assert record["provenance"]["kind"] == "profile" and (folder / f"{stem}.png").stat().st_size > 0
        assert "| model part | ms | share |" in (folder / f"{stem}.md").read_text()
    torch_record = json.loads((folder / "tiny-flownas_torch-cpu.json").read_text())
    assert torch_record["tool"] == "torch.profiler" and torch_record["by_part"]["encoders"] > 0


def test_tensorrt_layer_profile_needs_tensorrt_and_a_gpu():
    pytest.importorskip("tensorrt", reason="TensorRT is not installed here (its PyPI wheels download from NVIDIA): "
                                           "the IProfiler path of bench.profile.profile_trt is not run")


def test_fused_node_names_take_their_original_nodes_part():
    from bench.profile import _part_of_event

    parts = {"/MatMul": "correlation", "/fnet/conv1/Conv": "encoders"}
    assert _part_of_event("/MatMul/MatmulTransposeFusion//MatMulScaleFusion/", parts) == "correlation"
    assert _part_of_event("/fnet/conv1/Conv", parts) == "encoders"
    assert _part_of_event("/update_block/gru/Conv_fused", parts) == "update"  # by scope
