"""The runner contract on graphs that are not flow models: named arrays in and out, declared specs, inputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from export.backends import ALIASES, BACKENDS, parse_backends, resolve_backend
from export.inputs import (TensorSpec, generate_inputs, image_pair, is_flow_graph, load_array, onnx_io_specs,
                           parse_input_files, parse_shape_spec, resolve_shapes)
from export.runners import OrtRunner, RunnerError
from export.torch_runner import TorchRunner
from flownas.errors import ToolkitError, UserInputError
from tests_helpers import WEIGHT, conv_by_hand, one_conv_onnx

@pytest.fixture
def conv_file(tmp_path: Path) -> Path:
    return one_conv_onnx(tmp_path / "conv.onnx")


def test_onnx_runner_runs_any_graph_by_name(conv_file: Path) -> None:
    x = np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)
    with OrtRunner(conv_file) as runner:
        assert [s.describe() for s in runner.input_specs()] == ["x:1x3x8x8 float32"]
        y = runner.infer({"x": x})["y"]
    np.testing.assert_allclose(y, conv_by_hand(x), atol=1e-5)


def test_torch_runner_runs_any_module_by_name() -> None:
    conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
    conv.weight.data = torch.from_numpy(WEIGHT)
    spec = TensorSpec("x", (2, 3, 8, 8), np.dtype(np.float32))
    x = np.random.default_rng(1).random((2, 3, 8, 8), dtype=np.float32)
    with TorchRunner(conv, inputs=[spec], outputs=["y"], name="conv") as runner:
        y = runner.infer({"x": x})["y"]
        with pytest.raises(UserInputError, match="missing \\['x'\\]"):
            runner.infer({"z": x})
        with pytest.raises(UserInputError, match="axis 1 is fixed at 3"):
            runner.infer({"x": x[:, :2]})
    np.testing.assert_allclose(y, conv_by_hand(x), atol=1e-5)


def test_runner_lifecycle_is_activate_infer_deactivate(conv_file: Path) -> None:
    runner = OrtRunner(conv_file)
    x = {"x": np.zeros((1, 3, 8, 8), np.float32)}
    with pytest.raises(RuntimeError, match="not active"):
        runner.infer(x)
    runner.activate()
    assert runner.active and runner.session is not None
    runner.deactivate()
    assert not runner.active and runner.session is None
    with runner:  # and back again
        assert runner.infer(x)["y"].shape == (1, 4, 8, 8)


def test_static_graph_refuses_other_shapes_in_one_line(conv_file: Path) -> None:
    with OrtRunner(conv_file) as runner, pytest.raises(UserInputError) as info:
        runner.infer({"x": np.zeros((1, 3, 16, 16), np.float32)})
    assert "axis 2 is fixed at 8" in str(info.value) and "\n" not in str(info.value)


def test_dynamic_axes_need_a_shape_and_take_one(tmp_path: Path) -> None:
    path = one_conv_onnx(tmp_path / "dyn.onnx", batch="N")
    specs, outputs = onnx_io_specs(path)
    assert specs[0].shape == ("N", 3, 8, 8) and specs[0].is_dynamic and outputs[0].name == "y"
    with pytest.raises(UserInputError, match="--input-shape x:1x3x8x8"):
        resolve_shapes(specs)
    shapes = resolve_shapes(specs, parse_shape_spec("x:5x3x8x8"))
    feeds = generate_inputs(specs, shapes, seed=4)
    assert feeds["x"].shape == (5, 3, 8, 8) and feeds["x"].dtype == np.float32
    assert 0 <= feeds["x"].min() and feeds["x"].max() < 1  # Polygraphy's default range
    np.testing.assert_array_equal(feeds["x"], generate_inputs(specs, shapes, seed=4)["x"])  # seeded
    with OrtRunner(path) as runner:
        np.testing.assert_allclose(runner.infer(feeds)["y"], conv_by_hand(feeds["x"]), atol=1e-5)


@pytest.mark.parametrize("spec, message", [
    ("x", "bad piece 'x'"), ("x:1x0x8", "dimension '0'"), ("x:1xax8", "dimension 'a'"),
    ("x:1x3,x:1x3", "given twice"), ("", "empty shape spec"), ("x:" + "9" * 12, "not a positive integer"),
])
def test_shape_spec_errors_name_the_piece(spec: str, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        parse_shape_spec(spec)


def test_shapes_must_fit_the_declared_rank_and_names(conv_file: Path) -> None:
    specs, _ = onnx_io_specs(conv_file)
    with pytest.raises(UserInputError, match="rank 3"):
        resolve_shapes(specs, {"x": (1, 3, 8)})
    with pytest.raises(UserInputError, match="no input named 'image1'"):
        resolve_shapes(specs, {"image1": (1, 3, 8, 8)})


def test_inputs_from_npy_files(tmp_path: Path, conv_file: Path) -> None:
    x = np.random.default_rng(2).random((1, 3, 8, 8))  # float64 on disk: cast to the declared float32
    np.save(tmp_path / "x.npy", x)
    arrays = parse_input_files(f"x:{tmp_path / 'x.npy'}")
    specs, _ = onnx_io_specs(conv_file)
    feeds = generate_inputs(specs, resolve_shapes(specs, arrays=arrays), arrays=arrays)
    assert feeds["x"].dtype == np.float32 and np.allclose(feeds["x"], x)


@pytest.mark.parametrize("content, message", [
    (b"", "bad header"), (b"\x93NUMPY\x01\x00garbage", "bad header"), (b"PK\x03\x04zip", "bad header"),
])
def test_bad_npy_inputs_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.npy"
    path.write_bytes(content)
    with pytest.raises(UserInputError, match=message):
        load_array(path)


def test_npy_header_larger_than_the_file_is_refused_before_allocating(tmp_path: Path) -> None:
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": (99999, 99999)})
    path = tmp_path / "huge.npy"
    path.write_bytes(buffer.getvalue() + b"\0" * 64)  # claims 40 GB, holds 64 bytes
    with pytest.raises(UserInputError, match="declares \\[99999, 99999\\]"):
        load_array(path)


def test_flow_pair_is_the_first_image_shifted() -> None:
    pair = image_pair((1, 3, 16, 24), 0)
    assert pair["image1"].dtype == np.float32 and 0 <= pair["image1"].min() and pair["image1"].max() <= 255
    np.testing.assert_array_equal(pair["image2"][:, :, 2:, :-3], pair["image1"][:, :, :-2, 3:])
    assert is_flow_graph([TensorSpec("image1", (1, 3, None, None), np.dtype("float32")),
                          TensorSpec("image2", (1, 3, None, None), np.dtype("float32"))])


@pytest.mark.parametrize("alias, name", [("onnxruntime-cpu", "ort-cpu"), ("onnxrt", "ort-cpu"),
                                         ("tensorrt", "trt"), ("PyTorch", "torch-cpu"), ("ORT-CUDA", "ort-cuda")])
def test_backend_aliases(alias: str, name: str) -> None:
    assert resolve_backend(alias).name == name


def test_every_alias_points_at_a_backend_and_the_registry_is_read_only() -> None:
    assert set(ALIASES.values()) <= set(BACKENDS)
    with pytest.raises(TypeError):
        BACKENDS["mine"] = BACKENDS["trt"]  # type: ignore[index]
    assert [b.name for b in parse_backends("onnxrt,ort-cpu,torch")] == ["ort-cpu", "torch-cpu"]
    with pytest.raises(UserInputError, match="did you mean 'ort-cpu'"):
        resolve_backend("ort-cpus")


def test_cpu_providers_run_the_graphs_own_precision(conv_file: Path) -> None:
    with pytest.raises(RunnerError, match="runs the graph's own precision \\(fp32\\)"):
        OrtRunner(conv_file, "cpu", precision="fp16")
    assert OrtRunner(conv_file).precision == "fp32"


def test_fp32_means_fp32_in_the_ort_provider_options(conv_file: Path) -> None:
    """The options handed to ONNX Runtime (its CUDA provider defaults to TF32; fp32 must not)."""
    runner = OrtRunner.__new__(OrtRunner)  # provider options only: no GPU provider is needed to build them
    runner.provider, runner.precision, runner.cache_dir = "tensorrt", "fp16", conv_file.parent / "trt-cache"
    chain = runner.provider_chain()
    assert chain[0] == ("TensorrtExecutionProvider", {
        "trt_fp16_enable": "True", "trt_int8_enable": "False", "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(runner.cache_dir), "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(runner.cache_dir)})
    assert chain[1] == ("CUDAExecutionProvider", {"use_tf32": "0"}) and chain[2] == "CPUExecutionProvider"
    runner.provider = "cuda"
    assert runner.provider_chain()[0] == ("CUDAExecutionProvider", {"use_tf32": "0"})


def test_missing_files_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ToolkitError, match="nope.onnx: ONNX file not found"):
        OrtRunner(tmp_path / "nope.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x01garbage")
    with pytest.raises(ToolkitError, match="not a readable ONNX file"):
        OrtRunner(tmp_path / "bad.onnx")
