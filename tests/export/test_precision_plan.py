"""Precision plans, INT8 Q/DQ and FP16 graphs, calibration, verified reduced-precision exports, the sweep.

Graphs come from the tiny FlowNAS test model at 128x128 with 2 iterations (exported once per module).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from export.onnx_export import ExportSpec, export_onnx
from export.precision_export import FlowReference, PlanCheck, export_precision_onnx
from export.precision_plan import (GROUPS, PrecisionPlan, PrecisionPlanError, always_fp32_nodes, groups_present,
                                   node_group, node_precisions, parse_precision)
from export.precision_sweep import SweepEntry, choose_per_group
from export.quantize import (CalibrationError, CalibrationSet, apply_plan, calibration_pairs, parse_calibration,
                             precision_summary, save_model)
from export.verify import VerificationError, verification_pairs
from flownas.errors import ToolkitError
from flownas.registry import create_model

ort = pytest.importorskip("onnxruntime")
SPEC = ExportSpec(128, 128, iters=2)
FP32_ONLY = ("MatMul", "Softmax", "GatherElements", "Gather", "GridSample")


@pytest.fixture(scope="module")
def tiny():
    return create_model("tiny-flownas").eval()


@pytest.fixture(scope="module")
def fp32_graph(tiny, tmp_path_factory) -> onnx.ModelProto:
    path = tmp_path_factory.mktemp("fp32") / "tiny.onnx"
    export_onnx(tiny, path, SPEC)
    return onnx.load(str(path))


@pytest.fixture(scope="module")
def calib() -> list:
    return calibration_pairs(CalibrationSet(pairs=2), 128, 128)


def _run(model: onnx.ModelProto, pair) -> np.ndarray:
    from export.verify import flow_feeds

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["flow"], flow_feeds(pair[1], pair[2]))[0]


def _fp32_only_nodes_read_fp32(model: onnx.ModelProto) -> list[str]:
    """Names of correlation / softmax / gather nodes that read a dequantized or a float16 tensor (should be none)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.input)}
    producer = {out: node for node in model.graph.node for out in node.output}
    bad = []
    for node in model.graph.node:
        if node.op_type not in FP32_ONLY:
            continue
        for name in node.input:
            if name in producer and producer[name].op_type == "DequantizeLinear" or types.get(name) == TensorProto.FLOAT16:
                bad.append(node.name)
    return bad


# --------------------------------------------------------------------------------------------- plans
def test_plan_defaults_missing_groups_to_fp32_and_round_trips(tmp_path: Path) -> None:
    plan = PrecisionPlan({"gru": "fp16", "encoder_blocks": "int8"})
    assert plan.groups["stem"] == "fp32" and plan.label() == "mixed" and set(plan.groups) == set(GROUPS)
    plan.save(tmp_path / "p.json", extra={"note": "kept"})
    loaded = PrecisionPlan.load(tmp_path / "p.json")
    assert loaded.groups == plan.groups and loaded.name == str(tmp_path / "p.json")
    assert PrecisionPlan.uniform("int8").label() == "int8" and parse_precision("fp16").groups["gru"] == "fp16"


@pytest.mark.parametrize("content, expected", [
    ('{"groups": {"decoder": "int8"}}', "unknown group 'decoder'"),
    ('{"groups": {"gru": "int4"}}', "precision 'int4' is not one of"),
    ('{"groups": ', "not valid JSON"),
    ('[1, 2]', "expected an object"),
])
def test_bad_plan_files_fail_in_one_line_naming_the_file(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(PrecisionPlanError) as info:
        parse_precision(str(path))
    assert expected in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, ToolkitError)


def test_precision_value_that_is_neither_name_nor_json_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PrecisionPlanError, match="expected one of fp32, fp16, bf16, int8"):
        parse_precision("int4")
    with pytest.raises(PrecisionPlanError, match="not found"):
        parse_precision(str(tmp_path / "missing.json"))


@pytest.mark.parametrize("name, group", [
    ("/fnet/first_conv/Conv", "stem"), ("/cnet/norm1/InstanceNormalization", "stem"), ("/fnet/Relu", "stem"),
    ("/fnet/conv1/Conv", "stem"), ("/fnet/layer2/layer2.0/conv1/Conv", "encoder_blocks"),
    ("/cnet/blocks.3/shortcut/conv/Conv", "encoder_blocks"), ("/fnet/last_conv/Conv", "encoder_head"),
    ("/cnet/conv2/Conv", "encoder_head"), ("/update_block/encoder/convc1_1/Conv", "motion_encoder"),
    ("/update_block/encoder_1/Relu_2", "motion_encoder"), ("/update_block/gru_1/Sigmoid", "gru"),
    ("/update_block/gru/convq2_1/Conv", "gru"), ("/update_block/flow_head_1/Relu", "flow_head"),
    ("/update_block/mask/mask.2/Conv", "mask_head"),
    ("/MatMul", None), ("/Softmax", None), ("/GatherElements_3", None), ("/update_block_1/Mul", None),
    ("/fnetwork/Conv", None),
])
def test_node_names_map_to_groups(name: str, group: str | None) -> None:
    assert node_group(name) == group


def test_every_conv_of_the_exported_graph_is_placed_and_fp32_ops_are_fixed(fp32_graph: onnx.ModelProto) -> None:
    convs = [n for n in fp32_graph.graph.node if n.op_type == "Conv"]
    assert all(node_group(n.name) is not None for n in convs)
    assert groups_present(fp32_graph) == list(GROUPS)
    fixed = always_fp32_nodes(fp32_graph)
    precisions = node_precisions(fp32_graph, PrecisionPlan.uniform("int8"))
    for node in fp32_graph.graph.node:
        if node.op_type in FP32_ONLY:
            assert node.name in fixed and precisions[node.name] == "fp32"
    # Both iterations' flow-head output convs (coordinates, then the output flow) stay fp32.
    kept = sorted(n.name for n in convs if n.name in fixed)
    assert kept == ["/update_block/flow_head/conv2/Conv", "/update_block/flow_head/conv2_1/Conv"]


# --------------------------------------------------------------------------------------------- calibration
def test_calibration_is_a_deterministic_seeded_draw_held_out_from_validation() -> None:
    first = calibration_pairs(CalibrationSet(pairs=3, seed=0), 128, 136)
    again = calibration_pairs(CalibrationSet(pairs=3, seed=0), 128, 136)
    other = calibration_pairs(CalibrationSet(pairs=3, seed=1), 128, 136)
    assert [p[0] for p in first] == [p[0] for p in again] and [p[0] for p in first] != [p[0] for p in other]
    assert all(np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2]) for a, b in zip(first, again))
    assert first[0][1].shape == (128, 136, 3) and first[0][1].dtype == np.uint8
    validation = {p[0] for p in verification_pairs(128, 136)}
    assert not validation & {p[0] for p in first}


def test_calibration_from_a_real_folder_is_resized_to_the_export_size(rubberwhale: Path) -> None:
    pairs = calibration_pairs(parse_calibration(f"middlebury:{rubberwhale.parent}", pairs=1), 128, 160)
    assert pairs[0][0].startswith("RubberWhale") and pairs[0][1].shape == (128, 160, 3)


def test_calibration_arguments_are_checked() -> None:
    with pytest.raises(CalibrationError, match="at least 1"):
        parse_calibration("synthetic", pairs=0)
    with pytest.raises(CalibrationError, match="has 32 pairs, 40 asked"):
        calibration_pairs(CalibrationSet(split="val", pairs=40), 128, 128)
    with pytest.raises(ToolkitError, match="unknown dataset 'chair'"):
        calibration_pairs(parse_calibration("chair:/nowhere", pairs=1), 128, 128)


# --------------------------------------------------------------------------------------------- graphs
def test_int8_graph_is_symmetric_qdq_passes_full_check_and_runs(fp32_graph, calib) -> None:
    model = apply_plan(fp32_graph, PrecisionPlan.uniform("int8"), calib)
    onnx.checker.check_model(model, full_check=True)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    quant = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quant
    for node in quant:  # symmetric signed INT8: zero point 0 of type int8 (what TensorRT accepts)
        zero = inits[node.input[2]]
        assert zero.dtype == np.int8 and not zero.any()
    weight_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                 and inits[n.input[0]].ndim == 4]
    fixed = always_fp32_nodes(fp32_graph)  # iterations share weights: one DQ per distinct weight
    weights = {n.input[1] for n in fp32_graph.graph.node if n.op_type == "Conv" and n.name not in fixed}
    assert len(weight_dq) == len(weights)
    for node in weight_dq:  # per output channel: one scale per output channel, axis 0
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        assert inits[node.input[1]].shape == (inits[node.input[0]].shape[0],) and axis == 0
    assert _fp32_only_nodes_read_fp32(model) == []
    summary = precision_summary(model)
    assert summary["always_fp32_lowered"] == [] and summary["convs"]["gru"]["int8"] == 12
    flow32, flow8 = _run(fp32_graph, calib[0]), _run(model, calib[0])
    assert flow8.shape == flow32.shape and np.isfinite(flow8).all()
    assert 0 < np.abs(flow8 - flow32).max() < 1.0  # quantized: close, but not the same graph


def test_ort_cpu_int8_format_quantizes_conv_outputs_in_uint8_and_keeps_fp32_readers_fp32(fp32_graph, calib,
                                                                                        tmp_path) -> None:
    model = apply_plan(fp32_graph, PrecisionPlan.uniform("int8"), calib, int8_format="ort-cpu")
    onnx.checker.check_model(model, full_check=True)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {out: n for n in model.graph.node for out in n.output}
    activation_q = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    assert activation_q and all(inits[n.input[2]].dtype == np.uint8 for n in activation_q)  # x86 u8s8 kernels
    # Conv outputs are quantized (DQ -> Conv -> Q), so ONNX Runtime can fuse QLinearConv.
    assert any(producer.get(n.input[0]) is not None and producer[n.input[0]].op_type == "Conv" for n in activation_q)
    assert _fp32_only_nodes_read_fp32(model) == []
    flow32, flow8 = _run(fp32_graph, calib[0]), _run(model, calib[0])
    assert np.isfinite(flow8).all() and 0 < np.abs(flow8 - flow32).max() < 1.0
    path = tmp_path / "ort.onnx"
    save_model(model, path)
    from export.tensorrt import build_engine
    from flownas.errors import UserInputError

    with pytest.raises(UserInputError, match="TensorRT has no UINT8 Q/DQ: export it again with --int8-format tensorrt"):
        build_engine(path, tmp_path / "x.engine")
    with pytest.raises(CalibrationError, match="--int8-format 'u8'"):
        parse_calibration("synthetic", int8_format="u8")


def test_int8_calibration_is_deterministic(fp32_graph, calib) -> None:
    plan = PrecisionPlan({"encoder_blocks": "int8"})
    first, second = (apply_plan(fp32_graph, plan, calib, "percentile") for _ in range(2))
    scales = lambda m: {i.name: i.raw_data for i in m.graph.initializer if "scale" in i.name}  # noqa: E731
    assert scales(first) and scales(first) == scales(second)


def test_fp16_and_mixed_plans_cast_only_their_groups(fp32_graph, calib) -> None:
    fp16 = apply_plan(fp32_graph, PrecisionPlan.uniform("fp16"), calib)
    onnx.checker.check_model(fp16, full_check=True)
    assert _fp32_only_nodes_read_fp32(fp16) == []
    summary = precision_summary(fp16)
    assert summary["casts"] > 4 and summary["quantize_linear"] == 0 and summary["convs"]["flow_head"]["fp32"] == 2
    assert fp16.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert fp16.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    mixed = apply_plan(fp32_graph, PrecisionPlan({"gru": "fp16", "encoder_blocks": "int8"}), calib)
    onnx.checker.check_model(mixed, full_check=True)
    convs = precision_summary(mixed)["convs"]
    assert convs["gru"] == {"int8": 0, "fp16": 12, "fp32": 0}
    assert convs["encoder_blocks"] == {"int8": 32, "fp16": 0, "fp32": 0}
    assert convs["stem"] == {"int8": 0, "fp16": 0, "fp32": 2} and convs["mask_head"]["fp32"] == 2
    assert _fp32_only_nodes_read_fp32(mixed) == []
    assert np.abs(_run(mixed, calib[1]) - _run(fp32_graph, calib[1])).max() < 1.0


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_every_single_group_plan_keeps_correlation_softmax_and_gathers_fp32(fp32_graph, calib, precision) -> None:
    for group in GROUPS:
        model = apply_plan(fp32_graph, PrecisionPlan({group: precision}), calib)
        onnx.checker.check_model(model, full_check=True)
        assert _fp32_only_nodes_read_fp32(model) == [], group
        convs = precision_summary(model)["convs"]
        assert convs[group][precision] > 0 and all(c[precision] == 0 for g, c in convs.items() if g != group)


def test_bf16_is_refused_with_the_reason(fp32_graph) -> None:
    with pytest.raises(PrecisionPlanError, match="opset 22"):
        apply_plan(fp32_graph, PrecisionPlan({"gru": "bf16"}))


def test_int8_without_calibration_pairs_is_refused(fp32_graph) -> None:
    with pytest.raises(CalibrationError, match="need calibration pairs"):
        apply_plan(fp32_graph, PrecisionPlan({"gru": "int8"}), [])


# --------------------------------------------------------------------------------------------- verified export
@pytest.mark.slow
def test_verified_int8_export_writes_a_record_naming_plan_and_calibration(tiny, tmp_path: Path) -> None:
    result = export_precision_onnx(tiny, tmp_path / "m.onnx", SPEC, PrecisionPlan.uniform("int8"),
                                   CalibrationSet(pairs=2), max_epe_delta=0.5)
    record = json.loads((tmp_path / "m.json").read_text())
    assert record["precision"] == "int8" and record["precision_plan"]["gru"] == "int8"
    assert record["calibration"]["dataset"] == "synthetic" and len(record["calibration"]["sample_ids"]) == 2
    assert record["verification"]["max_epe_delta"] == result.check.max_epe_delta <= 0.5
    assert record["precision_summary"]["always_fp32_lowered"] == []
    stored = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(stored, full_check=True)
    assert json.loads({p.key: p.value for p in stored.metadata_props}["precision_plan"])["stem"] == "int8"
    # The stored graph reproduces the verified deltas when checked again independently.
    again = FlowReference(tiny, SPEC.iters, verification_pairs(128, 128)).check(tmp_path / "m.onnx")
    assert again == pytest.approx(result.check.pairs, rel=1e-5, abs=1e-7)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.onnx"]
    from export.runners import OrtRunner, onnx_precision

    assert onnx_precision(tmp_path / "m.onnx") == "int8"  # runners and reports label the graph by its plan
    assert OrtRunner(tmp_path / "m.onnx").precision == "int8"


@pytest.mark.slow
def test_plan_above_the_tolerance_is_refused_and_leaves_no_file(tiny, tmp_path: Path) -> None:
    with pytest.raises(VerificationError, match="no file written"):
        export_precision_onnx(tiny, tmp_path / "m.onnx", SPEC, PrecisionPlan.uniform("int8"),
                              CalibrationSet(pairs=2), max_epe_delta=1e-9)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------- sweep
def _entry(group: str, precision: str, delta: float | None, ms: float | None) -> SweepEntry:
    return SweepEntry(group, precision, delta, ms, None if delta is not None else "failed")


def test_proposal_takes_the_fastest_precision_within_budget_per_group() -> None:
    entries = [_entry("gru", "int8", 0.30, 5.0), _entry("gru", "fp16", 0.01, 7.0),      # int8 fits, fastest
               _entry("stem", "int8", 0.90, 4.0), _entry("stem", "fp16", 0.02, 9.0),    # int8 over budget
               _entry("mask_head", "int8", 0.10, 11.0), _entry("mask_head", "fp16", 0.05, 12.0),  # slower than fp32
               _entry("flow_head", "int8", None, None), _entry("flow_head", "fp16", 0.6, 8.0)]   # nothing fits
    assert choose_per_group(entries, ("int8", "fp16"), 0.5, baseline_ms=10.0) == {"gru": "int8", "stem": "fp16"}
    # Untimed: candidate order decides among those that fit.
    untimed = [SweepEntry(e.group, e.precision, e.max_epe_delta, None, e.error) for e in entries]
    assert choose_per_group(untimed, ("int8", "fp16"), 0.5) == {"gru": "int8", "stem": "fp16", "mask_head": "int8"}


@pytest.mark.slow
def test_sweep_proposes_a_plan_within_budget_that_export_accepts(tiny, tmp_path: Path) -> None:
    from export.precision_sweep import precision_sweep, write_sweep

    result = precision_sweep(tiny, SPEC, CalibrationSet(pairs=2), max_epe_delta=0.5, candidates=("int8",),
                             groups=("gru", "mask_head"), timer=None, work_dir=tmp_path)
    assert [(e.group, e.precision) for e in result.entries] == [("gru", "int8"), ("mask_head", "int8")]
    assert all(e.max_epe_delta is not None and e.max_epe_delta > 0 for e in result.entries)
    assert result.proposal_check.max_epe_delta <= 0.5
    # Each group alone changes the flow by far less than half the budget, so together they fit: both lowered.
    assert all(e.max_epe_delta < 0.25 for e in result.entries)
    assert {g: p for g, p in result.proposal.groups.items() if p != "fp32"} == {"gru": "int8", "mask_head": "int8"}
    assert result.proposal_check.summary["convs"]["gru"]["int8"] == 12
    plan_file = write_sweep(result, tmp_path / "plan.json")
    assert PrecisionPlan.load(plan_file).groups == result.proposal.groups
    assert json.loads(plan_file.read_text())["sweep"]["calibration"]["pairs"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]  # the sweep's scratch is gone
    # A zero budget keeps everything fp32.
    strict = precision_sweep(tiny, SPEC, CalibrationSet(pairs=1), max_epe_delta=0.0, candidates=("int8",),
                             groups=("mask_head",), timer=None, work_dir=tmp_path)
    assert strict.proposal.precisions() == {"fp32"} and isinstance(strict.proposal_check, PlanCheck)


# --------------------------------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_exports_int8_and_refuses_a_bad_plan(tiny, tmp_path: Path, capsys) -> None:
    import cli
    from flownas.weights import save_checkpoint

    weights = save_checkpoint(tmp_path / "tiny.pt", tiny)
    base = ["export", "onnx", "--weights", str(weights), "--resolution", "128x128", "--iters", "2"]
    assert cli.main([*base, "--out", str(tmp_path / "q.onnx"), "--precision", "int8",
                     "--calibration-pairs", "2", "--calibration-method", "entropy"]) == 0
    record = json.loads((tmp_path / "q.json").read_text())
    assert record["calibration"]["method"] == "entropy" and record["precision"] == "int8"
    (tmp_path / "bad.json").write_text('{"groups": {"gru": "int3"}}')
    assert cli.main([*base, "--out", str(tmp_path / "b.onnx"), "--precision", str(tmp_path / "bad.json")]) != 0
    assert "int3" in capsys.readouterr().err and not (tmp_path / "b.onnx").exists()


@pytest.mark.parametrize("extra, expected", [
    (["--precision", "bf16"], "opset 22"),
    (["--precision", "int8", "--dynamic"], "drop --dynamic"),
    (["--precision", "int8", "--calibration-pairs", "0"], "at least 1"),
])
def test_cli_refuses_unwritable_requests_before_loading_the_model(tmp_path: Path, capsys, extra, expected) -> None:
    import cli

    # The weights file does not exist: the refusal must come first, from the arguments alone.
    code = cli.main(["export", "onnx", "--weights", str(tmp_path / "missing.pt"), "--resolution", "128x128",
                     "--out", str(tmp_path / "x.onnx"), *extra])
    assert code != 0 and expected in capsys.readouterr().err and list(tmp_path.iterdir()) == []


def _conv_weight_codes(model: onnx.ModelProto) -> np.ndarray:
    """Every quantized conv weight code (the int8 initializers that DequantizeLinear nodes read), concatenated."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    codes = [inits[n.input[0]].ravel() for n in model.graph.node
             if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].dtype == np.int8]
    return np.concatenate(codes)


def test_7bit_weights_stay_within_64_and_8bit_weights_use_the_full_range(fp32_graph, calib) -> None:
    """Per-channel symmetric weights: each channel's largest weight maps to the end of the range, [-127, 127], or
    [-64, 64] with reduce_range (onnxruntime.quantization's symmetric 7-bit range), so the extremes are hit."""
    full = _conv_weight_codes(apply_plan(fp32_graph, PrecisionPlan.uniform("int8"), calib, int8_format="ort-cpu"))
    seven = _conv_weight_codes(apply_plan(fp32_graph, PrecisionPlan.uniform("int8"), calib, int8_format="ort-cpu",
                                          weights_7bit=True))
    assert full.size == seven.size > 0
    assert np.abs(full).max() == 127 and np.abs(seven).max() == 64


@pytest.mark.parametrize("setting, int8_format, dot_product, expected", [
    ("auto", "ort-cpu", False, True), ("auto", "ort-cpu", True, False), ("auto", "tensorrt", False, False),
    ("on", "tensorrt", True, True), ("off", "ort-cpu", False, False)])
def test_reduce_range_auto_applies_only_to_ort_cpu_int8_on_cpus_without_dot_products(
        monkeypatch, setting, int8_format, dot_product, expected) -> None:
    import flownas.provenance

    monkeypatch.setattr(flownas.provenance, "cpu_features", lambda cpuinfo=None: ("avx512_vnni",) if dot_product
                        else ("avx2",))
    calibration = parse_calibration(None, 2, int8_format=int8_format, reduce_range=setting)
    assert calibration.weights_7bit() is expected and calibration.to_dict()["weights_7bit"] is expected
    with pytest.raises(CalibrationError, match="--reduce-range 'maybe' is not one of auto, on, off"):
        parse_calibration(None, 2, reduce_range="maybe")
