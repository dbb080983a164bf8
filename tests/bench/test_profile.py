"""Per-operator profiles (`bench.profile`, `bench --profile`): parts placed by scope and graph position, operator
times that account for the measured whole-model time, files written by the benchmark."""
from __future__ import annotations

import csv
import json

import pytest
from onnx import TensorProto, helper

from bench.profile import (NO_GROUP, _layer_nodes, _layer_part, _source_node, node_parts, part_by_scope,
                           profile_figure, profile_runner, write_profile)
from bench.protocol import TimingConfig, benchmark, make_feeds
from bench.session import BenchRequest, run_benchmark
from export.onnx_export import ExportSpec, export_onnx
from export.precision_plan import GROUPS
from export.runners import OrtRunner
from export.trt_profile import LayerTimes, layer_kind
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


@pytest.fixture(scope="module")
def tiny_graph(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "tiny-flownas.onnx"
    export_onnx(untrained_model("tiny-flownas"), path, ExportSpec(128, 128, iters=2))
    return path


def test_ort_rows_carry_precision_plan_groups_and_renamed_nodes_find_their_part(tiny_graph, tmp_path):
    result = profile_runner(OrtRunner(tiny_graph, "cpu", threads=1), make_feeds(128, 128), runs=2, work_dir=tmp_path)
    groups = result.by_group()
    assert set(groups) <= set(GROUPS) | {NO_GROUP}
    assert all(groups.get(g, 0) > 0 for g in ("stem", "encoder_blocks", "gru", "motion_encoder", "flow_head")), groups
    assert sum(groups.values()) == pytest.approx(result.total_ms)
    for row in result.rows:
        if row["name"].startswith(("/fnet/", "/cnet/")):
            assert row["part"] == "encoders", row
    # Layout reorders and NCHWc convs go to the node they serve: "other" is the input preparation only
    # (2 * x / 255 - 1 on both frames, then the concatenation for the feature encoder).
    other = {r["op_type"] for r in result.rows if r["part"] == "other"}
    assert other <= {"Div", "Mul", "Sub", "Add", "Concat", "Cast"}, other
    assert not list(tmp_path.iterdir())  # profiler JSON and optimized graph both removed

    paths = write_profile(result, tmp_path / "out", "tiny")
    rows = list(csv.DictReader(paths["csv"].open()))
    assert {r["group"] for r in rows} == set(groups)
    assert sum(float(r["share"]) for r in rows) == pytest.approx(1.0, abs=1e-4)
    markdown = paths["markdown"].read_text()
    assert "| layer group (precision plans) | ms | share |" in markdown and "| gru |" in markdown


def test_renamed_ort_nodes_map_to_their_source():
    producers = {"/cnet/Relu_output_0": "/cnet/Relu", "/fnet/first_conv/Conv_output_0": "/fnet/first_conv/Conv"}
    reorders = {"ReorderInput_token_3": "/fnet/first_conv/Conv_output_0_nchwc"}
    assert _source_node("/cnet/Relu_output_0_nchwc", producers) == "/cnet/Relu"
    assert _source_node("ReorderInput_token_3", producers, reorders) == "/fnet/first_conv/Conv"  # reorder, NCHWc
    assert _source_node("/MatMul", producers) == "/MatMul" and _source_node("x_nchwc", producers) == "x_nchwc"


def test_profile_figure_is_the_coverage_of_the_written_profile(tmp_path):
    coverage = profile_figure("tiny-flownas", 128, 128, iters=2, runs=2, threads=1, timed_runs=3,
                              out_dir=tmp_path / "fig", work_dir=tmp_path)
    record = json.loads((tmp_path / "fig" / "profile.json").read_text())
    assert coverage == pytest.approx(record["total_ms"] / record["whole_median_ms"]) == pytest.approx(record["coverage"])
    assert 0.2 < coverage < 5  # same order as the wall time: neither per-run totals nor microseconds
    assert record["provenance"]["kind"] == "profile" and "profile_figure('tiny-flownas'" in record["provenance"]["command"]


# --------------------------------------------------------------------------------------------- TensorRT
def test_tensorrt_layer_names_give_kind_nodes_and_part():
    assert layer_kind("/fnet/conv1/Conv + /fnet/Relu") == "Conv" and layer_kind("/Softmax_3") == "Softmax"
    assert layer_kind("Reformatting CopyNode for Input Tensor 0 to /fnet/conv1/Conv") == "Reformat"
    assert layer_kind("PWN(/update_block/gru/Sigmoid, /update_block/gru/Mul)") == "Pointwise"
    assert layer_kind("{ForeignNode[/MatMul.../Softmax]}") == "ForeignNode" and layer_kind("17") == "layer"
    name = "{ForeignNode[/fnet/blocks.0/conv/Conv.../MatMul_2]}"
    assert _layer_nodes(name) == ["/fnet/blocks.0/conv/Conv", "/MatMul_2"]
    parts = {"/MatMul": "correlation", "/Softmax": "upsampling"}
    assert _layer_part("PWN(/Softmax, /Mul_9)", parts) == "upsampling"
    assert _layer_part("/update_block/gru/convz1/Conv + PWN(/update_block/gru/Sigmoid)", parts) == "update"
    assert _layer_part("/Gather_4", parts) == "other"  # no source graph entry, no scope


def test_layer_times_average_per_inference_in_engine_order():
    times = LayerTimes()
    for conv_ms in (1.0, 2.0):  # two inferences, as TensorRT reports them: every layer once per enqueue
        times.add("/fnet/conv1/Conv", conv_ms)
        times.add("/MatMul", 0.5)
        times.runs += 1
    assert times.per_inference() == {"/fnet/conv1/Conv": 1.5, "/MatMul": 0.5}
    assert list(times.per_inference()) == ["/fnet/conv1/Conv", "/MatMul"]
    with pytest.raises(ValueError, match="no profiled runs"):
        LayerTimes().per_inference()


@pytest.fixture
def trt_gpu():
    """Skip without TensorRT or a working CUDA binding (always, on machines without an NVIDIA GPU)."""
    from export.trt_runtime import TensorRTUnavailable, cuda_backend, import_tensorrt

    try:
        import_tensorrt()
        cuda_backend().close()
    except TensorRTUnavailable as exc:
        pytest.skip(f"the TensorRT IProfiler profile needs TensorRT and an NVIDIA GPU: {exc}")


@pytest.mark.tensorrt
def test_tensorrt_layer_profile_accounts_for_the_compute_time(trt_gpu, tiny_graph, tmp_path):
    from export.runners import EngineRunner
    from export.tensorrt import build_engine

    engine = tmp_path / "tiny.engine"
    build_engine(tiny_graph, engine, precision="fp32")
    feeds = make_feeds(128, 128)
    runner = EngineRunner(engine)
    whole = benchmark(runner, feeds, TimingConfig(warmup_runs=3, warmup_s=0, runs=20)).stats.median_ms
    result = profile_runner(runner, feeds, runs=5, whole_median_ms=whole)
    parts = result.by_part()
    assert result.tool == "tensorrt IProfiler" and result.rows and result.total_ms > 0
    assert parts.get("encoders", 0) > 0 and parts.get("update", 0) > 0, parts
    assert parts.get("correlation", 0) + parts.get("upsampling", 0) > 0, parts  # placed through the source ONNX
    # Layer times are GPU time inside the engine; the median includes the copies, so below it but not far.
    assert 0.2 < result.coverage < 1.5, result.coverage


def test_fused_node_names_take_their_original_nodes_part():
    from bench.profile import _part_of_event

    parts = {"/MatMul": "correlation", "/fnet/conv1/Conv": "encoders"}
    assert _part_of_event("/MatMul/MatmulTransposeFusion//MatMulScaleFusion/", parts) == "correlation"
    assert _part_of_event("/fnet/conv1/Conv", parts) == "encoders"
    assert _part_of_event("/update_block/gru/Conv_fused", parts) == "update"  # by scope
