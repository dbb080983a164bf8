"""TensorRT engine building and running (export/tensorrt.py, export/trt_runtime.py).

Shape specs, profile checks and the missing-TensorRT path run everywhere; engine tests (marked `tensorrt`)
need TensorRT, a CUDA Python binding and an NVIDIA GPU, and skip with the reason otherwise.
"""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

from export.tensorrt import (
    ShapeProfile, TensorRTUnavailable, build_engine, engine_sidecar_path, parse_shape_spec, profiles_from_specs,
    read_engine_record, validate_profiles,
)
from export.trt_runtime import TrtRunner, gpu_info


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
@pytest.fixture(scope="module")
def engines(tmp_path_factory) -> dict[str, Path]:
    """fp32 and fp16 engines of the tiny model (built once per module), plus its ONNX file."""
    pytest.importorskip("tensorrt", reason="TensorRT not installed: engine tests need TensorRT and an NVIDIA GPU")
    if gpu_info() is None:
        pytest.skip("no NVIDIA GPU visible through cuda-python or pycuda: engine tests need one")
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
    assert record["build_time_s"] > 0 and record["date"].endswith("+00:00") and record["toolkit_version"]
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
