"""Runners (bench/runners.py) and the protocol on real models: lifecycle, agreement between PyTorch and ONNX
Runtime, measured results, and clear one-line errors for bad input. RAFT small at 128x128, 1 iteration.

GPU tests (torch-cuda, ort-cuda, trt engines) are marked and skip with the reason where there is no GPU.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from bench.protocol import TimingConfig, benchmark, compare, make_feeds
from bench.runners import (BACKENDS, BenchError, EngineRunner, OrtRunner, TorchRunner, export_temp_onnx,
                           flow_model_runner, make_runner)
from flownas.errors import MissingDependencyError, ToolkitError
from flownas.models import RAFT

SIZE, ITERS = (128, 128), 1
QUICK = TimingConfig(warmup_runs=1, warmup_s=0.0, runs=3)


def _tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:  # a broken install counts as absent, as the runner reports it
        return False
    return True


@pytest.fixture(scope="module")
def model() -> RAFT:
    torch.manual_seed(0)
    return RAFT(small=True).eval()


@pytest.fixture(scope="module")
def onnx_file(model: RAFT, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_temp_onnx(model, SIZE, ITERS, tmp_path_factory.mktemp("onnx"), "raft-small")


@pytest.fixture(scope="module")
def feeds() -> dict[str, np.ndarray]:
    return make_feeds(*SIZE)


# -- lifecycle -------------------------------------------------------------------------------------------
def test_torch_runner_lifecycle(model: RAFT, feeds: dict) -> None:
    runner = flow_model_runner(model, ITERS, threads=1, name="raft-small")
    with pytest.raises(RuntimeError, match="not active"):
        runner.infer(feeds)
    with pytest.raises(RuntimeError, match="not active"):
        runner.timed_run(feeds)
    before = torch.get_num_threads()
    with runner as active:
        assert active is runner and runner.active and torch.get_num_threads() == 1
        assert runner.describe()["threads"] == 1
        flow = runner.infer(feeds)["flow"]
        assert flow.shape == (1, 2, *SIZE) and flow.dtype == np.float32
        with pytest.raises(NotImplementedError, match="no device clock"):  # CPU runners are timed on the host
            runner.timed_run(feeds)
    assert not runner.active and torch.get_num_threads() == before  # deactivate restores torch's thread count
    with pytest.raises(RuntimeError, match="not active"):
        runner.infer(feeds)
    runner.activate().activate()  # activating twice is harmless, and a released runner can come back
    assert runner.infer(feeds)["flow"].shape == (1, 2, *SIZE)
    runner.deactivate()
    runner.deactivate()


def test_ort_runner_lifecycle_frees_the_session(onnx_file: Path, feeds: dict) -> None:
    runner = OrtRunner(onnx_file, "cpu", threads=1)
    with pytest.raises(RuntimeError, match="not active"):
        runner.infer(feeds)
    with runner:
        assert runner.session is not None and [s.name for s in runner.input_specs()] == ["image1", "image2"]
        assert runner.infer(feeds)["flow"].shape == (1, 2, *SIZE)
        info = runner.describe()
        assert info["providers"] == ["CPUExecutionProvider"] and info["threads"] == 1
    assert runner.session is None and not runner.active
    with runner, pytest.raises(ValueError, match="missing"):
        runner.infer({"image1": feeds["image1"]})


def test_torch_and_ort_runners_agree(model: RAFT, onnx_file: Path, feeds: dict) -> None:
    with flow_model_runner(model, ITERS) as eager, OrtRunner(onnx_file) as session:
        a, b = eager.infer(feeds)["flow"], session.infer(feeds)["flow"]
    assert a.shape == b.shape and np.abs(a - b).max() < 1e-4  # px


def test_describe_records_backend_device_precision_threads_versions(model: RAFT, onnx_file: Path) -> None:
    torch_info = flow_model_runner(model, ITERS, name="raft-small").describe()
    assert {k: torch_info[k] for k in ("backend", "model", "device", "precision", "timing")} == {
        "backend": "torch-cpu", "model": "raft-small", "device": "cpu", "precision": "fp32",
        "timing": "host perf_counter"}
    assert torch_info["versions"]["torch"] == torch.__version__
    ort_info = OrtRunner(onnx_file, precision="fp32").describe()
    assert ort_info["backend"] == "ort-cpu" and ort_info["versions"]["onnxruntime"] == ort.__version__
    assert ort_info["threads"] == "onnxruntime default" and ort_info["model"] == "raft-small"


# -- protocol on real runners ------------------------------------------------------------------------------
def test_benchmark_measures_and_releases(model: RAFT, feeds: dict) -> None:
    runner = flow_model_runner(model, ITERS, name="raft-small")
    result = benchmark(runner, feeds, QUICK, meta={"resolution": "128x128"})
    assert not runner.active  # activated for the measurement, released after
    assert result.name == "raft-small/torch-cpu" and result.backend == "torch-cpu" and result.model == "raft-small"
    assert result.stats.count == 3 and len(result.samples["latency_ms"]) == 3 and result.phases == {}
    assert result.warmup_runs == 1 and result.meta == {"resolution": "128x128"}
    assert 0 < result.stats.min_ms <= result.stats.median_ms <= result.stats.max_ms
    env = result.environment
    assert env["cpu"] and env["logical_cpus"] >= 1 and "torch" in env["versions"] and env["date"]
    assert result.outputs["flow"].shape == (1, 2, *SIZE)


def test_compare_shares_one_run_and_flags_noise(model: RAFT, onnx_file: Path, feeds: dict) -> None:
    runners = {"eager": flow_model_runner(model, ITERS), "ort": OrtRunner(onnx_file)}
    config = TimingConfig(warmup_runs=1, warmup_s=0.0, runs=2, duration_s=0.05, cv_warn=1e-9)
    results = compare(runners, feeds, config)
    assert list(results) == ["eager", "ort"] and results["eager"].run_id == results["ort"].run_id
    assert results["eager"].stats.count == results["ort"].stats.count >= 2  # same number of rounds
    assert all(any("too noisy to trust" in w for w in r.warnings) for r in results.values())
    assert not any(r.active for r in runners.values())


def test_compare_leaves_an_active_runner_active(model: RAFT, feeds: dict) -> None:
    with flow_model_runner(model, ITERS) as runner:
        compare({"eager": runner}, feeds, QUICK)
        assert runner.active


# -- make_runner and bad input ---------------------------------------------------------------------------
def test_make_runner_builds_each_cpu_backend(model: RAFT, onnx_file: Path) -> None:
    assert isinstance(make_runner("pytorch", model=model, iters=ITERS), TorchRunner)
    runner = make_runner("ort-cpu", onnx=onnx_file, threads=1)
    assert isinstance(runner, OrtRunner) and runner.threads == 1 and runner.path == onnx_file


@pytest.mark.slow  # an export of its own
def test_make_runner_exports_a_model_for_ort_into_the_scratch_folder(model: RAFT, feeds: dict,
                                                                     tmp_path: Path) -> None:
    runner = make_runner("onnxrt", model=model, iters=ITERS, resolution=SIZE, model_name="tmp-raft", scratch=tmp_path)
    assert runner.path == tmp_path / "tmp-raft.onnx" and runner.path.is_file() and runner.backend == "ort-cpu"
    with runner, flow_model_runner(model, ITERS) as eager:
        assert np.abs(runner.infer(feeds)["flow"] - eager.infer(feeds)["flow"]).max() < 1e-4


def test_unknown_backend_lists_the_valid_ones() -> None:
    with pytest.raises(ToolkitError) as info:
        make_runner("tensorflow", model=object())
    assert "unknown backend 'tensorflow'" in str(info.value)
    assert all(b in str(info.value) for b in BACKENDS)


def test_missing_onnx_file(tmp_path: Path) -> None:
    with pytest.raises(ToolkitError, match="nope.onnx: ONNX file not found"):
        make_runner("ort-cpu", onnx=tmp_path / "nope.onnx")


@pytest.mark.parametrize("backend, kwargs, message", [
    ("trt", {"onnx": "x.onnx"}, "give --engine"),
    ("ort-cpu", {}, "needs --onnx"),
    ("torch-cpu", {"onnx": "x.onnx"}, "give --weights or --model"),
    ("ort-cpu", {"model": object()}, "needs a resolution"),
    ("torch-cpu", {"model": object(), "cuda_graph": True}, "torch-cuda and trt only"),
])
def test_backend_and_source_must_fit(backend: str, kwargs: dict, message: str) -> None:
    with pytest.raises(BenchError, match=message):
        make_runner(backend, **kwargs)


def test_missing_engine_file(tmp_path: Path) -> None:
    with pytest.raises(ToolkitError, match="engine file not found"):
        make_runner("trt", engine=tmp_path / "nope.engine")


@pytest.mark.skipif(_tensorrt_importable(), reason="tensorrt is importable here")
def test_trt_backend_without_tensorrt_is_one_clear_line(tmp_path: Path) -> None:
    engine = tmp_path / "raft.engine"
    engine.write_bytes(b"not used: TensorRT is checked first")
    with pytest.raises(MissingDependencyError) as info:
        make_runner("trt", engine=engine)
    message = str(info.value)
    assert "TensorRT" in message and "\n" not in message


@pytest.mark.parametrize("backend, provider", [("ort-cuda", "CUDAExecutionProvider"),
                                               ("ort-trt", "TensorrtExecutionProvider")])
def test_ort_gpu_provider_missing_says_what_to_install(onnx_file: Path, backend: str, provider: str) -> None:
    if provider in ort.get_available_providers():
        pytest.skip(f"{provider} is available here")
    with pytest.raises(MissingDependencyError) as info:
        make_runner(backend, onnx=onnx_file)
    message = str(info.value)
    assert provider in message and "onnxruntime-gpu" in message and "\n" not in message


def test_torch_cuda_without_gpu_fails_on_activate(model: RAFT) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is available here")
    runner = make_runner("torch-cuda", model=model, iters=ITERS)
    with pytest.raises(ToolkitError, match="sees no CUDA GPU"):
        runner.activate()
    assert not runner.active


# -- GPU ---------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_torch_cuda_phases_and_agreement(model: RAFT, feeds: dict, cuda_graph: bool) -> None:
    with flow_model_runner(model, ITERS) as cpu:
        reference = cpu.infer(feeds)["flow"]
    runner = flow_model_runner(model, ITERS, device="cuda", cuda_graph=cuda_graph)
    result = benchmark(runner, feeds, QUICK)
    assert set(result.phases) == {"h2d_ms", "compute_ms", "d2h_ms", "host_ms"}
    assert result.runner["timing"] == "CUDA events" and result.runner["gpu"]
    assert np.abs(result.outputs["flow"] - reference).max() < 1e-2
    assert next(model.parameters()).device.type == "cpu"  # the runner worked on a copy


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
def test_torch_cuda_runs_without_tf32_and_restores_the_setting(model: RAFT) -> None:
    """fp32 means IEEE fp32 (README): cuDNN convolutions would use TF32 by PyTorch's default."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cudnn.allow_tf32 = True
    try:
        with flow_model_runner(model, ITERS, device="cuda") as runner:
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
            assert runner.describe()["tf32"] is False
        assert torch.backends.cudnn.allow_tf32  # the user's setting comes back on deactivation
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.gpu
def test_ort_cuda_agrees_with_cpu(onnx_file: Path, feeds: dict) -> None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("CUDAExecutionProvider unavailable (pip install onnxruntime-gpu)")
    with OrtRunner(onnx_file, "cpu") as cpu, OrtRunner(onnx_file, "cuda") as gpu:
        assert np.abs(cpu.infer(feeds)["flow"] - gpu.infer(feeds)["flow"]).max() < 1e-2


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_trt_engine_runner_times_three_phases(onnx_file: Path, feeds: dict, tmp_path: Path) -> None:
    if not _tensorrt_importable():
        pytest.skip("TensorRT is not installed")
    from export.tensorrt import build_engine
    from export.trt_runtime import gpu_info

    if gpu_info() is None:
        pytest.skip("no CUDA GPU visible through cuda-python or pycuda")
    engine = tmp_path / "raft-small.engine"
    build_engine(onnx_file, engine)
    runner = make_runner("trt", engine=engine)
    assert isinstance(runner, EngineRunner) and runner.precision == "fp32"
    result = benchmark(runner, feeds, QUICK)
    assert {"h2d_ms", "compute_ms", "d2h_ms", "host_ms"} <= set(result.phases)
    with OrtRunner(onnx_file) as cpu:
        assert np.abs(result.outputs["flow"] - cpu.infer(feeds)["flow"]).max() < 1e-2
