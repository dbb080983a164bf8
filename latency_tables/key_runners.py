"""One runner per graph of a key folder, for each backend `lut measure` times on.

    ort-cpu / ort-cuda / ort-trt   the ONNX file on ONNX Runtime (`export.runners.OrtRunner`)
    trt                            an fp32 engine built from the ONNX file (`latency_tables.trt_engines`), run by
                                   `export.runners.EngineRunner` and timed on the device clock
    torch-cpu / torch-cuda         the PyTorch module rebuilt from the manifest record (`graphs.record_module`),
                                   run by `export.torch_runner.TorchRunner` (CUDA events on cuda)

`check_backend` runs before any work and raises MissingDependencyError (one line) when the backend's runtime,
bindings or device are missing. Each backend imports only its own runtime: ort-* never import torch or TensorRT,
trt imports TensorRT + a CUDA binding, torch-* import torch (and `latency_tables.graphs`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from flownas.errors import MissingDependencyError

ORT_BACKENDS = {"ort-cpu": "cpu", "ort-cuda": "cuda", "ort-trt": "tensorrt"}
TORCH_BACKENDS = {"torch-cpu": "cpu", "torch-cuda": "cuda"}
BACKENDS = (*ORT_BACKENDS, "trt", *TORCH_BACKENDS)
CPU_BACKENDS = ("ort-cpu", "torch-cpu")

# (graph id, "key" | "empty", manifest graph file, manifest entry of a key using it) -> an inactive runner
RunnerFactory = Callable[[str, str, str, Mapping[str, Any]], Any]


def check_backend(backend: str) -> dict[str, Any]:
    """Raise MissingDependencyError (one line) unless this machine can time `backend`; returns facts to record
    (GPU for trt and torch-cuda, torch's default thread count for torch backends). Writes nothing."""
    if backend in ORT_BACKENDS:
        from export.runners import import_ort_provider

        import_ort_provider(ORT_BACKENDS[backend])
        return {}
    if backend == "trt":
        from .trt_engines import check_trt

        return {"gpu": check_trt()}
    if backend in TORCH_BACKENDS:
        try:
            import torch
        except ImportError:
            raise MissingDependencyError(f"backend {backend}: PyTorch is not installed (pip install torch); "
                                         "or time the ONNX graphs with --backend ort-cpu") from None
        facts: dict[str, Any] = {"torch_default_threads": torch.get_num_threads()}
        if backend == "torch-cuda":
            if not torch.cuda.is_available():
                raise MissingDependencyError(f"backend torch-cuda: this PyTorch ({torch.__version__}) sees no CUDA "
                                             "GPU; install a CUDA build of torch or use torch-cpu")
            facts["gpu"] = {"name": torch.cuda.get_device_name(0)}
        return facts
    raise MissingDependencyError(f"backend {backend!r} is unknown: choose from {', '.join(BACKENDS)}")


def runner_factory(backend: str, key_dir: Path, manifest: Mapping[str, Any], threads: int | None,
                   facts: Mapping[str, Any]) -> RunnerFactory:
    """How to make the runner of one graph of `key_dir` on `backend` (`facts` from `check_backend`)."""
    if backend in ORT_BACKENDS:
        from export.runners import OrtRunner

        return lambda graph, role, file, entry: OrtRunner(key_dir / file, ORT_BACKENDS[backend], threads=threads,
                                                          name=graph)
    if backend == "trt":
        return _engine_factory(key_dir, facts["gpu"])
    return _torch_factory(TORCH_BACKENDS[backend], manifest, threads)


def _engine_factory(key_dir: Path, gpu: Mapping[str, Any]) -> RunnerFactory:
    from export.runners import EngineRunner

    from .trt_engines import ensure_engine

    def make(graph: str, role: str, file: str, entry: Mapping[str, Any]) -> Any:
        precision = "fp32" if role == "empty" else entry["key"].get("precision", "fp32")
        return EngineRunner(ensure_engine(key_dir, file, dict(gpu), precision=precision), precision=precision,
                            name=graph)

    return make


def _torch_factory(device: str, manifest: Mapping[str, Any], threads: int | None) -> RunnerFactory:
    import numpy as np

    from export.inputs import TensorSpec
    from export.torch_runner import TorchRunner

    from . import graphs

    def make(graph: str, role: str, file: str, entry: Mapping[str, Any]) -> Any:
        module, shapes = graphs.record_module(entry, manifest.get("decoder"), empty=role == "empty")
        inputs = [TensorSpec(name, shape, np.dtype(np.float32)) for name, shape in shapes.items()]
        return TorchRunner(module, inputs=inputs, outputs=[graphs.OUTPUT_NAME], device=device, threads=threads,
                           name=graph)

    return make
