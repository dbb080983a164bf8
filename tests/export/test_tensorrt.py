"""TensorRT engine building and running (export/tensorrt.py, export/trt_runtime.py).

Shape specs, profile checks, verification shapes, the builder-config order and the missing-TensorRT paths run
everywhere; engine tests (marked `tensorrt`) need TensorRT, a working CUDA Python binding and an NVIDIA GPU.
They skip with the reason otherwise; when TensorRT imports but no binding starts, the skip carries every
binding's error, and it is a failure if torch or nvidia-smi sees a GPU.
"""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from export.tensorrt import (
    DEFAULT_TOLERANCE_EPE, ShapeProfile, TensorRTUnavailable, _builder_config, build_engine, build_verified_engine,
    engine_sidecar_path, parse_shape_spec, profiles_from_specs, read_engine_record, validate_profiles,
    verification_points,
)
from export.trt_runtime import TrtRunner, cuda_backend
from flownas.errors import UserInputError


def _tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:  # a broken install counts as absent: build_engine reports it the same way
        return False
    return True


# -- shape specs and profiles (no TensorRT needed) -------------------------------------------------------
@pytest.mark.parametrize("spec, expected", [
    ("image1:1x3x384x512,image2:1x3x384x512", {"image1": (1, 3, 384, 512), "image2": (1, 3, 384, 512)}),
    (" image1 : 1x3x8x8 ", {"image1": (1, 3, 8, 8)}),
    ("'input:0':2x4", {"input:0": (2, 4)}),
    ("x:7", {"x": (7,)}),
])
def test_parse_shape_spec_valid(spec: str, expected: dict) -> None:
    assert parse_shape_spec(spec) == expected


@pytest.mark.parametrize("spec, bad_piece", [
    ("image1", "image1"),
    ("image1:1x3xAx512", "'A'"),
    ("image1:1x3x384x512,image2", "image2"),
    ("image1:", "image1:"),
    (":1x3", ":1x3"),
    ("a:1x0", "'0'"),
    ("a:1x-3", "'-3'"),
    ("a:1x3,,b:1x3", "''"),
    ("a:1x3,a:1x3", "given twice"),
    ("", "empty shape spec"),
])
def test_parse_shape_spec_errors_name_the_bad_piece(spec: str, bad_piece: str) -> None:
    with pytest.raises(ValueError, match=re.escape(bad_piece)) as info:
        parse_shape_spec(spec)
    assert "\n" not in str(info.value)


def test_shape_profile_validates_order_and_rank() -> None:
    ShapeProfile((1, 3, 8, 8), (1, 3, 16, 16), (1, 3, 32, 32))
    with pytest.raises(ValueError, match="min <= opt <= max"):
        ShapeProfile((1, 3, 32, 32), (1, 3, 16, 16), (1, 3, 8, 8))
    with pytest.raises(ValueError, match="ranks differ"):
        ShapeProfile((1, 3), (1, 3, 16), (1, 3, 16))
    assert ShapeProfile.fixed((1, 2)).to_dict() == {"min": [1, 2], "opt": [1, 2], "max": [1, 2]}


def test_profiles_from_trtexec_style_specs() -> None:
    profiles = profiles_from_specs("a:1x3x8x8", "a:1x3x16x16", "a:1x3x32x32")
    assert profiles == {"a": ShapeProfile((1, 3, 8, 8), (1, 3, 16, 16), (1, 3, 32, 32))}
    with pytest.raises(ValueError, match="different inputs"):
        profiles_from_specs("a:1x3", "b:1x3", "a:1x3")


def test_validate_profiles() -> None:
    inputs = {"image": (1, 3, -1, -1), "scale": (1,)}
    dynamic = ShapeProfile((1, 3, 8, 8), (1, 3, 16, 16), (1, 3, 32, 32))
    assert validate_profiles(inputs, {"image": dynamic}) == {"image": dynamic}
    with pytest.raises(ValueError, match=re.escape("image (1, 3, -1, -1)")):
        validate_profiles(inputs, {})
    with pytest.raises(ValueError, match=r"unknown inputs \['imgae'\]"):
        validate_profiles(inputs, {"image": dynamic, "imgae": dynamic})
    with pytest.raises(ValueError, match="varies axis 1, which the network fixes at 3"):
        validate_profiles(inputs, {"image": ShapeProfile((1, 1, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8))})
    with pytest.raises(ValueError, match="rank 2"):
        validate_profiles(inputs, {"image": ShapeProfile.fixed((1, 3))})


def test_engine_sidecar_path() -> None:
    assert engine_sidecar_path("out/raft.engine") == Path("out/raft.engine.json")


# -- a tiny flow-like model ------------------------------------------------------------------------------
def _export_tiny(path: Path) -> Path:
    """conv -> relu -> conv features, a coordinate conv, GridSample and a correlation MatMul; dynamic H, W."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
            self.flow = nn.Conv2d(8, 2, 3, padding=1)

        def forward(self, image: torch.Tensor, grid: torch.Tensor):
            feat = self.conv2(torch.relu(self.conv1(image)))
            coords = grid + 0.1 * self.flow(feat).permute(0, 2, 3, 1)
            sampled = F.grid_sample(feat, coords, mode="bilinear", align_corners=True)
            flat = feat.flatten(2)
            return sampled, torch.matmul(flat.transpose(1, 2), flat) / math.sqrt(8)

    torch.manual_seed(0)
    image, grid = torch.randn(1, 3, 16, 16), torch.rand(1, 16, 16, 2) * 2 - 1
    axes = {"image": {2: "h", 3: "w"}, "grid": {1: "h", 2: "w"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Tiny().eval(), (image, grid), str(path), dynamo=False, opset_version=17,
                          input_names=["image", "grid"], output_names=["sampled", "corr"], dynamic_axes=axes)
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {"arch_id": "tiny-test", "export_iters": "1", "export_height": "16"})
    onnx.save(model, str(path))
    return path


def _feeds(height: int, width: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"image": rng.standard_normal((1, 3, height, width), dtype=np.float32),
            "grid": rng.uniform(-1, 1, (1, height, width, 2)).astype(np.float32)}


PROFILES = {"image": ShapeProfile((1, 3, 8, 8), (1, 3, 16, 16), (1, 3, 32, 32)),
            "grid": ShapeProfile((1, 8, 8, 2), (1, 16, 16, 2), (1, 32, 32, 2))}


# -- without TensorRT ------------------------------------------------------------------------------------
@pytest.mark.skipif(_tensorrt_importable(), reason="TensorRT is installed: the missing-TensorRT path cannot run")
def test_build_engine_without_tensorrt_raises_one_line(tmp_path: Path) -> None:
    onnx_path = _export_tiny(tmp_path / "tiny.onnx")
    with pytest.raises(TensorRTUnavailable) as info:
        build_engine(onnx_path, tmp_path / "tiny.engine", profiles=PROFILES)
    message = str(info.value)
    assert "\n" not in message and message.startswith("TensorRT is not installed")
    assert not (tmp_path / "tiny.engine").exists()


@pytest.mark.skipif(_tensorrt_importable(), reason="TensorRT is installed: the missing-TensorRT path cannot run")
def test_runner_without_tensorrt_raises_one_line(tmp_path: Path) -> None:
    with pytest.raises(TensorRTUnavailable, match="^TensorRT is not installed[^\n]*$"):
        TrtRunner(tmp_path / "missing.engine").activate()


def test_build_engine_checks_arguments_first(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="precision must be one of"):
        build_engine(tmp_path / "x.onnx", tmp_path / "x.engine", precision="int8")
    with pytest.raises(FileNotFoundError, match="x.onnx"):
        build_engine(tmp_path / "x.onnx", tmp_path / "x.engine")


def test_runtime_imports_without_torch_or_onnx() -> None:
    """Deployment targets run engines with numpy, TensorRT and a CUDA binding only."""
    code = "import sys, export.trt_runtime; assert not {'torch', 'onnx'} & set(sys.modules), sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_runner_refuses_inference_before_activation(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not active"):
        TrtRunner(tmp_path / "x.engine").infer({})


# -- with TensorRT and a GPU -----------------------------------------------------------------------------
def _visible_gpu() -> str | None:
    """What torch or nvidia-smi reports as a GPU on this machine, or None."""
    try:
        import torch

        if torch.cuda.is_available():
            return f"torch sees {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    if shutil.which("nvidia-smi"):
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
        if listing.returncode == 0 and "GPU" in listing.stdout:
            return f"nvidia-smi lists {listing.stdout.strip().splitlines()[0]}"
    return None


@pytest.fixture(scope="module")
def gpu_ready() -> None:
    """Skip without TensorRT; with it, a CUDA binding must start (skip with every binding's error, or fail
    when a GPU is visible: then the bindings are broken, not absent)."""
    from export.trt_runtime import import_tensorrt

    try:
        import_tensorrt()
    except TensorRTUnavailable as exc:
        pytest.skip(f"engine tests need TensorRT and an NVIDIA GPU: {exc}")
    try:
        cuda_backend().close()
    except TensorRTUnavailable as exc:
        visible = _visible_gpu()
        if visible:
            pytest.fail(f"{visible}, but no CUDA Python binding works: {exc}")
        pytest.skip(f"TensorRT imports but no CUDA binding works, and no GPU is visible: {exc}")


@pytest.fixture(scope="module")
def engines(tmp_path_factory, gpu_ready) -> dict[str, Path]:
    """fp32 and fp16 engines of the tiny model (built once per module), plus its ONNX file."""
    folder = tmp_path_factory.mktemp("trt")
    onnx_path = _export_tiny(folder / "tiny.onnx")
    out = {"onnx": onnx_path}
    for precision in ("fp32", "fp16"):
        out[precision] = folder / f"tiny_{precision}.engine"
        build_engine(onnx_path, out[precision], precision=precision, profiles=PROFILES, workspace_mb=256,
                     timing_cache=folder / "timing.cache", metadata={"iterations": 1, "arch_id": "override"})
    return out


def _onnxruntime(onnx_path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_sidecar_records_the_build(engines: dict[str, Path], precision: str) -> None:
    record = read_engine_record(engines[precision])
    assert record == json.loads(engine_sidecar_path(engines[precision]).read_text())
    assert record["precision"] == precision and record["tf32"] is False
    assert record["tensorrt_version"].split(".")[0] in ("10", "11")
    assert record["gpu"]["name"] and re.fullmatch(r"\d+\.\d+", record["gpu"]["compute_capability"])
    assert record["profiles"]["image"] == PROFILES["image"].to_dict()
    assert [(io["name"], io["dtype"]) for io in record["inputs"]] == [("image", "float32"), ("grid", "float32")]
    assert [(io["name"], io["dtype"]) for io in record["outputs"]] == [("sampled", "float32"), ("corr", "float32")]
    assert record["metadata"]["export_iters"] == 1 and record["metadata"]["arch_id"] == "override"
    assert record["kind"] == "engine" and record["arch_id"] == "override" and record["backend"] == "tensorrt"
    assert record["device"] == record["gpu"]["name"] and record["resolution"] is None  # no export_width given
    assert record["build_time_s"] > 0 and record["created"].endswith("+00:00") and record["toolkit_version"]
    assert record["engine_size_bytes"] == engines[precision].stat().st_size
    if precision == "fp16":
        assert record["strongly_typed"] and record["precision_summary"]["fp16_ops"]["Conv"] == 2


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-4), ("fp16", 1e-2)])
@pytest.mark.parametrize("size", [(16, 16), (24, 32)])
def test_engine_matches_onnxruntime(engines: dict[str, Path], precision: str, tolerance: float, size) -> None:
    feeds = _feeds(*size)
    want = _onnxruntime(engines["onnx"], feeds)
    with TrtRunner(engines[precision]) as runner:
        got = runner.infer(feeds)
    assert set(got) == set(want)
    for name in want:
        assert got[name].shape == want[name].shape
        if precision == "fp32":
            np.testing.assert_allclose(got[name], want[name], rtol=tolerance, atol=tolerance)
        else:
            assert np.abs(got[name] - want[name]).max() / np.abs(want[name]).max() < tolerance


@pytest.mark.tensorrt
def test_time_phases_and_shape_checks(engines: dict[str, Path]) -> None:
    with TrtRunner(engines["fp32"]) as runner:
        phases = runner.time_phases(_feeds(16, 16))
        assert set(phases) == {"h2d_ms", "compute_ms", "d2h_ms", "total_ms"}
        assert all(v >= 0 for v in phases.values()) and phases["compute_ms"] > 0
        assert phases["total_ms"] >= phases["compute_ms"]
        with pytest.raises(ValueError, match="does not fit the engine"):
            runner.infer(_feeds(64, 64))
        with pytest.raises(ValueError, match="missing"):
            runner.infer({"image": _feeds(16, 16)["image"]})


@pytest.mark.tensorrt
def test_dynamic_inputs_without_profiles_are_refused(engines: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dynamic inputs need shape profiles.*image.*grid"):
        build_engine(engines["onnx"], tmp_path / "x.engine")


@pytest.mark.tensorrt
def test_timing_cache_is_saved(engines: dict[str, Path]) -> None:
    cache = engines["onnx"].parent / "timing.cache"
    assert cache.is_file() and cache.stat().st_size > 0


# -- verification shapes, arguments and the build path without a GPU ---------------------------------------------
FLOW_INPUTS = [{"name": n, "dtype": "float32", "shape": [-1, 3, -1, -1]} for n in ("image1", "image2")]


def _flow_profiles(low, opt, high) -> dict[str, dict[str, list[int]]]:
    profile = ShapeProfile(low, opt, high).to_dict()
    return {"image1": profile, "image2": dict(profile)}


def test_verification_points_are_the_profile_corners() -> None:
    profiles = _flow_profiles((1, 3, 128, 160), (1, 3, 256, 320), (2, 3, 384, 512))
    assert verification_points(FLOW_INPUTS, profiles) == [(1, 128, 160), (1, 256, 320), (2, 384, 512)]
    same = _flow_profiles((1, 3, 64, 64), (1, 3, 64, 64), (1, 3, 96, 128))
    assert verification_points(FLOW_INPUTS, same) == [(1, 64, 64), (1, 96, 128)]  # min == opt checked once


def test_verification_points_of_a_fixed_engine_and_refusals() -> None:
    fixed = [{"name": n, "dtype": "float32", "shape": [1, 3, 384, 512]} for n in ("image1", "image2")]
    assert verification_points(fixed, {}) == [(1, 384, 512)]
    with pytest.raises(UserInputError, match=r"inputs image \[1, 3, 8, 8\]"):
        verification_points([{"name": "image", "dtype": "float32", "shape": [1, 3, 8, 8]}], {})
    mismatched = _flow_profiles((1, 3, 64, 64), (1, 3, 64, 64), (1, 3, 64, 64))
    mismatched["image2"] = ShapeProfile.fixed((1, 3, 96, 96)).to_dict()
    with pytest.raises(UserInputError, match="same profile"):
        verification_points(FLOW_INPUTS, mismatched)
    with pytest.raises(UserInputError, match="16x64 is below the 32x32"):
        verification_points(FLOW_INPUTS, _flow_profiles((1, 3, 16, 64), (1, 3, 64, 64), (1, 3, 64, 64)))


def test_build_verified_engine_refuses_bad_arguments_before_writing(tmp_path: Path) -> None:
    onnx_path = _export_tiny(tmp_path / "tiny.onnx")
    with pytest.raises(UserInputError, match="tolerance_epe"):
        build_verified_engine(onnx_path, tmp_path / "out" / "x.engine", tolerance_epe=-1.0)
    with pytest.raises(UserInputError, match="precision must be one of"):
        build_verified_engine(onnx_path, tmp_path / "x.engine", precision="int8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.onnx"]
    assert DEFAULT_TOLERANCE_EPE == {"fp32": 1e-3, "fp16": 5e-2}


@pytest.mark.skipif(_tensorrt_importable(), reason="TensorRT is installed: the missing-TensorRT path cannot run")
def test_build_verified_engine_without_tensorrt_leaves_nothing(tmp_path: Path) -> None:
    onnx_path = _export_tiny(tmp_path / "tiny.onnx")
    with pytest.raises(TensorRTUnavailable, match="^TensorRT is not installed"):
        build_verified_engine(onnx_path, tmp_path / "tiny.engine", profiles=PROFILES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.onnx"]  # no temporary engine or sidecar


class _RecordingConfig:
    """Records the calls `_builder_config` makes, in order (it needs no GPU to decide them)."""

    def __init__(self, calls: list) -> None:
        self.calls = calls

    def __getattr__(self, name: str):
        return lambda *args: self.calls.append((name, *args)) or 0


def test_fp32_builder_config_clears_tf32_and_never_sets_reduced_precision() -> None:
    flags = SimpleNamespace(TF32="TF32", FP16="FP16", BF16="BF16", INT8="INT8")
    trt = SimpleNamespace(BuilderFlag=flags, MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"))
    calls: list = []
    builder = SimpleNamespace(create_builder_config=lambda: _RecordingConfig(calls),
                              create_optimization_profile=lambda: _RecordingConfig(calls))
    _builder_config(trt, builder, {"image": PROFILES["image"]}, workspace_mb=256)
    names = [c[0] for c in calls]
    assert calls[0] == ("set_memory_pool_limit", "WORKSPACE", 256 << 20)
    assert ("clear_flag", "TF32") in calls and not any(c[0] == "set_flag" for c in calls)
    assert names.index("clear_flag") < names.index("add_optimization_profile")
    assert ("set_shape", "image", (1, 3, 8, 8), (1, 3, 16, 16), (1, 3, 32, 32)) in calls


def test_runner_refuses_pycuda_graphs_and_unknown_bindings_at_construction(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="cuda_graph=True needs cuda-python"):
        TrtRunner(tmp_path / "x.engine", cuda="pycuda", cuda_graph=True)
    with pytest.raises(UserInputError, match="unknown CUDA binding 'cupy'"):
        TrtRunner(tmp_path / "x.engine", cuda="cupy")
    info = TrtRunner(tmp_path / "x.engine", cuda_graph=True).describe()
    assert info == {"engine": str(tmp_path / "x.engine"), "cuda_graph": True, "cuda_binding": None}


# -- CUDA graphs and the verified build (TensorRT and a GPU) ------------------------------------------------------
@pytest.mark.tensorrt
def test_cuda_graph_runs_match_plain_runs_across_shape_changes(engines: dict[str, Path]) -> None:
    try:
        cuda_backend(cuda_graph=True).close()
    except TensorRTUnavailable as exc:  # e.g. only pycuda works here: it cannot capture graphs
        pytest.skip(f"CUDA graphs need cuda-python: {exc}")
    sizes = [(16, 16), (24, 32), (16, 16)]  # the second and third need a new capture: shapes and buffers change
    with TrtRunner(engines["fp32"]) as plain:
        want = [plain.infer(_feeds(*size, seed=i)) for i, size in enumerate(sizes)]
    with TrtRunner(engines["fp32"], cuda_graph=True) as graphed:
        got = [graphed.infer(_feeds(*size, seed=i)) for i, size in enumerate(sizes)]
        phases = graphed.time_phases(_feeds(16, 16))
        assert graphed.describe()["cuda_graph"] is True and graphed.describe()["cuda_binding"] == "cuda-python"
    assert phases["cuda_graph"] is True and phases["compute_ms"] > 0
    for expected, actual in zip(want, got):
        for name in expected:  # the same engine and kernels: replaying them as a graph changes no bit
            np.testing.assert_array_equal(actual[name], expected[name])


def _export_tiny_flow(path: Path) -> Path:
    """image1, image2 [B,3,H,W] -> flow [B,2,H,W]: two convolutions over the pair; dynamic batch, H, W."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 3, padding=1)).eval()

    class Flow(nn.Module):
        def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
            return net(torch.cat([image1, image2], 1) / 255.0)

    axes = {n: {0: "b", 2: "h", 3: "w"} for n in ("image1", "image2", "flow")}
    pair = (torch.rand(1, 3, 32, 32) * 255, torch.rand(1, 3, 32, 32) * 255)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Flow(), pair, str(path), dynamo=False, opset_version=17, input_names=["image1", "image2"],
                          output_names=["flow"], dynamic_axes=axes)
    return path


FLOW_PROFILES = {n: ShapeProfile((1, 3, 32, 32), (1, 3, 48, 64), (2, 3, 64, 96)) for n in ("image1", "image2")}


@pytest.mark.tensorrt
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_build_verified_engine_checks_profile_corners_then_publishes(gpu_ready, tmp_path: Path,
                                                                       cuda_graph: bool) -> None:
    onnx_path = _export_tiny_flow(tmp_path / "flow.onnx")
    engine = tmp_path / "flow.engine"
    record = build_verified_engine(onnx_path, engine, profiles=FLOW_PROFILES, workspace_mb=256,
                                   cuda_graph=cuda_graph)
    checked = record["verification"]
    assert list(checked["shapes"]) == ["1x32x32", "1x48x64", "2x64x96"] and checked["ok"]
    assert checked["cuda_graph"] is cuda_graph and checked["tolerance_epe"] == 1e-3
    assert record["engine"] == "flow.engine" and read_engine_record(engine) == record
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.engine", "flow.engine.json", "flow.onnx"]


@pytest.mark.tensorrt
def test_build_verified_engine_leaves_nothing_when_the_check_fails(gpu_ready, tmp_path: Path) -> None:
    from export.verify import VerificationError

    onnx_path = _export_tiny_flow(tmp_path / "flow.onnx")
    # fp16 rounds the convolutions: its flow cannot be within 1e-12 px of ONNX Runtime's fp32 flow.
    with pytest.raises(VerificationError, match="no engine written"):
        build_verified_engine(onnx_path, tmp_path / "flow.engine", precision="fp16", profiles=FLOW_PROFILES,
                              workspace_mb=256, tolerance_epe=1e-12)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.onnx"]


@pytest.mark.tensorrt
def test_real_builder_config_has_tf32_cleared(gpu_ready) -> None:
    from export.trt_runtime import import_tensorrt

    trt = import_tensorrt()
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    config = _builder_config(trt, builder, {}, workspace_mb=64)
    if hasattr(trt.BuilderFlag, "TF32"):
        assert not config.get_flag(trt.BuilderFlag.TF32)
