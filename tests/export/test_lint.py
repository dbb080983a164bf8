"""Tests for export.lint: hand-built ONNX graphs, one per TensorRT pitfall, plus a real torch export."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from flownas.errors import ToolkitError
from export.lint import TRT_SUPPORTED_OPS, TRT_UNSUPPORTED_OPS, LintError, LintReport, lint_onnx


def _model(nodes, inputs, outputs, opset=17, initializers=(), extra_opsets=()) -> onnx.ModelProto:
    """A model with explicit opset imports (default domain first)."""
    graph = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), initializer=list(initializers))
    imports = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, v) for d, v in extra_opsets)]
    return helper.make_model(graph, opset_imports=imports)


def _vi(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def _codes(report: LintReport, severity: str | None = None) -> set[str]:
    return {f.code for f in report.findings if severity is None or f.severity == severity}


def _gridsample_model(opset: int, **attrs) -> onnx.ModelProto:
    node = helper.make_node("GridSample", ["x", "grid"], ["y"], name="gs", **attrs)
    return _model([node], [_vi("x", [1, 2, 8, 8]), _vi("grid", [1, 8, 8, 2])], [_vi("y", [1, 2, 8, 8])], opset=opset)


def test_conv_relu_is_clean():
    w = numpy_helper.from_array(np.zeros((4, 3, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    report = lint_onnx(_model(nodes, [_vi("x", [1, 3, 16, 16])], [_vi("y", [1, 4, 16, 16])], initializers=[w]))
    assert report.ok and report.errors == [] and report.warnings == []
    assert report.opset == 17


def test_tables_are_disjoint_and_contain_key_ops():
    assert not TRT_SUPPORTED_OPS & set(TRT_UNSUPPORTED_OPS)
    assert {"Conv", "GridSample", "MatMul", "Resize", "If", "Loop"} <= TRT_SUPPORTED_OPS


def test_unsupported_op_is_an_error():
    node = helper.make_node("Unique", ["x"], ["y"])
    report = lint_onnx(_model([node], [_vi("x", [4])], [_vi("y", None)], opset=17))
    assert not report.ok and "unsupported-op" in _codes(report, "error")
    assert "Unique" in report.errors[0].message


def test_op_missing_from_table_is_an_error():
    node = helper.make_node("SomeFutureOp", ["x"], ["y"])
    report = lint_onnx(_model([node], [_vi("x", [4])], [_vi("y", [4])]))
    assert "unsupported-op" in _codes(report, "error")


def test_custom_domain_op_needs_plugin():
    node = helper.make_node("CorrelationCUDA", ["a", "b"], ["y"], domain="com.flownas")
    model = _model([node], [_vi("a", [1, 4, 8, 8]), _vi("b", [1, 4, 8, 8])], [_vi("y", [1, 64, 8, 8])],
                   extra_opsets=[("com.flownas", 1)])
    report = lint_onnx(model)
    assert "custom-op" in _codes(report, "error")
    assert "needs a TensorRT plugin" in report.errors[0].message and "com.flownas" in report.errors[0].message


def test_gridsample_opset16_has_no_gridsample_error():
    report = lint_onnx(_gridsample_model(16, align_corners=1))
    assert report.ok
    assert not any(f.code.startswith("gridsample") and f.severity == "error" for f in report.findings)
    assert "gridsample-align-corners" in _codes(report, "info")


def test_gridsample_opset20_is_an_error():
    report = lint_onnx(_gridsample_model(20, mode="linear"))
    assert "gridsample-opset" in _codes(report, "error")
    assert "opset 16-19" in next(f.message for f in report.errors if f.code == "gridsample-opset")


def test_gridsample_before_opset16_is_an_error():
    assert "gridsample-opset" in _codes(lint_onnx(_gridsample_model(15)), "error")


def test_gridsample_cubic_is_an_error():
    report = lint_onnx(_gridsample_model(17, mode="bicubic"))
    assert _codes(report, "error") == {"gridsample-mode"}


def test_gridsample_bad_padding_and_5d_input():
    node = helper.make_node("GridSample", ["x", "grid"], ["y"], padding_mode="wrap")
    model = _model([node], [_vi("x", [1, 2, 4, 8, 8]), _vi("grid", [1, 4, 8, 8, 3])], [_vi("y", None)], opset=17)
    assert {"gridsample-padding", "gridsample-rank"} <= _codes(lint_onnx(model), "error")


def test_gridsample_inside_if_branch_is_caught():
    gs = helper.make_node("GridSample", ["x", "grid"], ["t"], mode="linear")
    then_g = helper.make_graph([gs], "then", [], [_vi("t", [1, 2, 8, 8])])
    else_g = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [], [_vi("e", [1, 2, 8, 8])])
    node = helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_g, else_branch=else_g)
    inputs = [_vi("cond", [], TensorProto.BOOL), _vi("x", [1, 2, 8, 8]), _vi("grid", [1, 8, 8, 2])]
    report = lint_onnx(_model([node], inputs, [_vi("y", [1, 2, 8, 8])], opset=20))
    hits = [f for f in report.errors if f.code == "gridsample-opset"]
    assert hits and hits[0].node.startswith("branch/then_branch/")


def test_dynamic_input_warns_about_profile():
    node = helper.make_node("Relu", ["x"], ["y"])
    report = lint_onnx(_model([node], [_vi("x", ["batch", 3, "H", "W"])], [_vi("y", ["batch", 3, "H", "W"])]))
    finding = next(f for f in report.warnings if f.code == "dynamic-input")
    assert "'H'" in finding.message and "--min/--opt/--max" in finding.message
    assert report.ok


def test_int64_input_warns():
    node = helper.make_node("Cast", ["idx"], ["y"], to=TensorProto.INT32)
    report = lint_onnx(_model([node], [_vi("idx", [4], TensorProto.INT64)], [_vi("y", [4], TensorProto.INT32)]))
    assert "int64-io" in _codes(report, "warning") and report.ok


def test_int64_initializer_beyond_int32_is_an_error():
    big = numpy_helper.from_array(np.array([1, 2**40], np.int64), "big")
    node = helper.make_node("Add", ["x", "big"], ["y"])
    report = lint_onnx(_model([node], [_vi("x", [2], TensorProto.INT64)], [_vi("y", [2], TensorProto.INT64)],
                              initializers=[big]))
    assert "int64-overflow" in _codes(report, "error")


def test_int64_initializers_that_fit_are_one_info():
    inits = [numpy_helper.from_array(np.array([1, 2], np.int64), f"s{i}") for i in range(3)]
    nodes = [helper.make_node("Reshape", ["x", "s0"], ["a"]), helper.make_node("Reshape", ["a", "s1"], ["b"]),
             helper.make_node("Reshape", ["b", "s2"], ["y"])]
    report = lint_onnx(_model(nodes, [_vi("x", [2])], [_vi("y", [1, 2])], initializers=inits))
    infos = [f for f in report.findings if f.code == "int64-weights"]
    assert len(infos) == 1 and infos[0].message.startswith("3 ") and report.ok


def test_slice_int64_max_end_is_not_an_error():
    starts = numpy_helper.from_array(np.array([1], np.int64), "starts")
    ends = numpy_helper.from_array(np.array([np.iinfo(np.int64).max], np.int64), "ends")
    axes = numpy_helper.from_array(np.array([0], np.int64), "axes")
    node = helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"])
    report = lint_onnx(_model([node], [_vi("x", [4])], [_vi("y", [3])], initializers=[starts, ends, axes]))
    assert report.ok


def test_resize_and_scatternd_restrictions():
    resize = helper.make_node("Resize", ["x", "", "scales"], ["r"], mode="cubic",
                              coordinate_transformation_mode="tf_crop_and_resize")
    scatter = helper.make_node("ScatterND", ["r", "idx", "upd"], ["y"], reduction="add")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    inputs = [_vi("x", [1, 1, 4, 4]), _vi("idx", [1, 4], TensorProto.INT64), _vi("upd", [1])]
    report = lint_onnx(_model([resize, scatter], inputs, [_vi("y", [1, 1, 8, 8])], opset=18, initializers=[scales]))
    assert {"resize-mode", "resize-coord-mode", "scatternd-reduction"} <= _codes(report, "error")


def test_reduce_axes_must_be_constant_and_double_warns():
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"])
    inputs = [_vi("x", [2, 3], TensorProto.DOUBLE), _vi("axes", [1], TensorProto.INT64)]
    report = lint_onnx(_model([node], inputs, [_vi("y", [2, 1], TensorProto.DOUBLE)], opset=18))
    assert "axes-not-constant" in _codes(report, "error") and "double-dtype" in _codes(report, "warning")


def test_string_input_and_opset_too_new():
    node = helper.make_node("Identity", ["s"], ["y"])
    report = lint_onnx(_model([node], [_vi("s", [1], TensorProto.STRING)], [_vi("y", [1], TensorProto.STRING)],
                              opset=26))
    assert "unsupported-dtype" in _codes(report, "error") and "opset-too-new" in _codes(report, "warning")


def test_missing_file_raises_one_line_lint_error(tmp_path):
    missing = tmp_path / "nope.onnx"
    with pytest.raises(LintError) as info:
        lint_onnx(missing)
    assert str(missing) in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, ToolkitError)  # the command line prints these as one line


def test_garbage_or_empty_file_raises_lint_error(tmp_path):
    bad, empty = tmp_path / "bad.onnx", tmp_path / "empty.onnx"
    bad.write_text("this is not a protobuf\n" * 10)
    empty.write_bytes(b"")  # parses as an empty ModelProto, so it needs its own check
    for path in (bad, empty, tmp_path):  # tmp_path: a directory is not a model file either
        with pytest.raises(LintError, match=path.name):
            lint_onnx(path)


def test_report_table_and_dict():
    report = lint_onnx(_gridsample_model(20))
    table = report.format_table()
    assert "SEVERITY" in table and "gridsample-opset" in table and table.index("error") < table.index("info")
    data = report.to_dict()
    assert data["ok"] is False and data["errors"] == len(report.errors) and data["opset"] == 20


def test_profile_shapes_sees_intermediate_rank():
    # The GridSample input comes from an Unsqueeze: only shape inference reveals it is 5-D.
    axes = numpy_helper.from_array(np.array([2], np.int64), "axes")
    nodes = [helper.make_node("Unsqueeze", ["x", "axes"], ["x5"]),
             helper.make_node("GridSample", ["x5", "grid"], ["y"])]
    model = _model(nodes, [_vi("x", [1, 2, 8, 8]), _vi("grid", [1, 4, 8, 8, 3])], [_vi("y", None)],
                   opset=17, initializers=[axes])
    assert "gridsample-rank" not in _codes(lint_onnx(model))
    assert "gridsample-rank" in _codes(lint_onnx(model, profile_shapes=True), "error")


def test_real_torch_grid_sample_export_is_clean(tmp_path):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    class Warp(torch.nn.Module):
        def forward(self, img, flow):
            n, _, h, w = img.shape
            ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
            grid = torch.stack([xs, ys], dim=-1).unsqueeze(0) + flow.permute(0, 2, 3, 1)
            return F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=True)

    path = tmp_path / "warp.onnx"
    torch.onnx.export(Warp().eval(), (torch.rand(1, 3, 16, 16), torch.zeros(1, 2, 16, 16)), str(path),
                      input_names=["img", "flow"], output_names=["out"], opset_version=17, dynamo=False)
    report = lint_onnx(path)
    assert report.opset == 17 and report.path == str(path)
    assert report.ok, report.format_table()
    assert "GridSample" in {f.op_type for f in report.findings}  # the align_corners note proves it was seen


# -- "axes must be an initializer": Slice / Squeeze / Unsqueeze / Pad (onnx-tensorrt docs/operators.md) ----------
def _i64(name, values):
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _axes_errors(report: LintReport) -> list:
    return [f for f in report.errors if f.code == "axes-not-constant"]


@pytest.mark.parametrize("op, inputs, opset", [
    ("Slice", ["x", "starts", "ends", "axes"], 17),
    ("Squeeze", ["x", "axes"], 13),
    ("Unsqueeze", ["x", "axes"], 13),
    ("Pad", ["x", "pads", "", "axes"], 18),
])
@pytest.mark.parametrize("axes_from", ["graph-input", "initializer", "constant-node"])
def test_axes_must_be_a_build_time_constant(op, inputs, opset, axes_from):
    inits = [_i64("starts", [0]), _i64("ends", [1]), _i64("pads", [0, 1])]
    nodes, graph_inputs = [helper.make_node(op, inputs, ["y"], name="n")], [_vi("x", [1, 4])]
    if axes_from == "graph-input":
        graph_inputs.append(_vi("axes", [1], TensorProto.INT64))
    elif axes_from == "initializer":
        inits.append(_i64("axes", [0]))
    else:
        nodes.insert(0, helper.make_node("Constant", [], ["axes"], value=_i64("c", [0])))
    report = lint_onnx(_model(nodes, graph_inputs, [_vi("y", None)], opset=opset, initializers=inits))
    hits = _axes_errors(report)
    if axes_from == "graph-input":
        assert len(hits) == 1 and hits[0].node == "n" and hits[0].op_type == op
        assert "axes 'axes'" in hits[0].message and "\n" not in hits[0].message
    else:
        assert hits == [], hits


def test_slice_bounds_and_pad_pads_may_be_computed():
    # The parser imports Slice starts/ends/steps and Pad pads as shape tensors: only `axes` must be constant.
    slice_ = helper.make_node("Slice", ["x", "s", "e", "axes", "st"], ["a"])
    pad = helper.make_node("Pad", ["a", "p"], ["y"])
    graph_inputs = [_vi("x", [1, 4]), *(_vi(n, [1], TensorProto.INT64) for n in ("s", "e", "st")),
                    _vi("p", [4], TensorProto.INT64)]
    model = _model([slice_, pad], graph_inputs, [_vi("y", None)], opset=18, initializers=[_i64("axes", [1])])
    report = lint_onnx(model)
    assert _axes_errors(report) == [] and report.ok


def test_squeeze_axes_attribute_before_opset13_is_not_an_input():
    node = helper.make_node("Unsqueeze", ["x"], ["y"], axes=[0])
    assert _axes_errors(lint_onnx(_model([node], [_vi("x", [4])], [_vi("y", [1, 4])], opset=11))) == []


def test_pad_without_axes_input_and_before_opset18():
    node = helper.make_node("Pad", ["x", "pads"], ["y"])
    report = lint_onnx(_model([node], [_vi("x", [4])], [_vi("y", [5])], opset=13, initializers=[_i64("pads", [0, 1])]))
    assert _axes_errors(report) == []


def test_axes_from_outer_graph_input_inside_if_branch_is_caught():
    unsq = helper.make_node("Unsqueeze", ["x", "axes"], ["t"], name="u")
    then_g = helper.make_graph([unsq], "then", [], [_vi("t", [1, 4])])
    const_axes = helper.make_node("Constant", [], ["k"], value=_i64("k", [0]))
    else_g = helper.make_graph([const_axes, helper.make_node("Unsqueeze", ["x", "k"], ["e"], name="ok")], "else", [],
                               [_vi("e", [1, 4])])
    node = helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_g, else_branch=else_g)
    inputs = [_vi("cond", [], TensorProto.BOOL), _vi("x", [4]), _vi("axes", [1], TensorProto.INT64)]
    hits = _axes_errors(lint_onnx(_model([node], inputs, [_vi("y", [1, 4])], opset=17)))
    assert [f.node for f in hits] == ["branch/then_branch/u"]


def test_axes_inside_loop_body():
    # Loop body inputs: iteration count, condition, one loop-carried tensor; the carried tensor is not a constant.
    body_inputs = [_vi("i", [], TensorProto.INT64), _vi("c", [], TensorProto.BOOL),
                   _vi("carried", [1], TensorProto.INT64)]
    body_init = _i64("body_axes", [0])
    nodes = [helper.make_node("Squeeze", ["v", "carried"], ["bad"], name="from_carried"),
             helper.make_node("Squeeze", ["v", "body_axes"], ["good"], name="from_init"),
             helper.make_node("Identity", ["c"], ["c_out"]), helper.make_node("Identity", ["carried"], ["carried_out"])]
    body = helper.make_graph(nodes, "body", body_inputs,
                             [_vi("c_out", [], TensorProto.BOOL), _vi("carried_out", [1], TensorProto.INT64),
                              _vi("bad", None), _vi("good", None)], initializer=[body_init])
    loop = helper.make_node("Loop", ["n", "", "axes0"], ["final", "scan_bad", "scan_good"], name="loop", body=body)
    inputs = [_vi("n", [], TensorProto.INT64), _vi("v", [1, 4])]
    report = lint_onnx(_model([loop], inputs, [_vi("final", [1], TensorProto.INT64)], opset=17,
                              initializers=[_i64("axes0", [0])]))
    assert [f.node for f in _axes_errors(report)] == ["loop/body/from_carried"]
