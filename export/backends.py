"""The backends registry: name -> runner class, with the aliases users type, read-only.

    >>> resolve_backend("onnxruntime-cpu").name
    'ort-cpu'

Each backend says what it runs (a PyTorch model, an ONNX file or an engine) and can check, before any slow work
(an export, a model load), that its libraries and device are present (`Backend.check()`).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from flownas.errors import MissingDependencyError, UserInputError

from .runners import EngineRunner, OrtRunner, Runner
from .torch_runner import TorchRunner


@dataclass(frozen=True)
class Backend:
    name: str
    runs: str          # "model" (a PyTorch module), "onnx" (an ONNX file) or "engine" (a TensorRT engine)
    device: str        # "cpu" or "cuda"
    runner: type[Runner]
    description: str
    provider: str | None = None  # ONNX Runtime provider key for the ort-* backends

    def check(self) -> None:
        """Raise MissingDependencyError (one line) when this machine cannot run the backend."""
        if self.runs == "onnx":
            from .runners import import_ort_provider

            import_ort_provider(self.provider or "cpu")
        elif self.runs == "engine":
            from .trt_runtime import import_tensorrt

            import_tensorrt()
        elif self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise MissingDependencyError(f"backend {self.name}: this PyTorch ({torch.__version__}) sees no CUDA "
                                             "GPU; install a CUDA build of torch or use torch-cpu")


BACKENDS: Mapping[str, Backend] = MappingProxyType({b.name: b for b in (
    Backend("torch-cpu", "model", "cpu", TorchRunner, "PyTorch eager on the CPU"),
    Backend("torch-cuda", "model", "cuda", TorchRunner, "PyTorch eager on a CUDA GPU (optionally as a CUDA graph)"),
    Backend("ort-cpu", "onnx", "cpu", OrtRunner, "ONNX Runtime, CPUExecutionProvider", "cpu"),
    Backend("ort-cuda", "onnx", "cuda", OrtRunner, "ONNX Runtime, CUDAExecutionProvider (onnxruntime-gpu)", "cuda"),
    Backend("ort-trt", "onnx", "cuda", OrtRunner,
            "ONNX Runtime, TensorrtExecutionProvider (onnxruntime-gpu + TensorRT)", "tensorrt"),
    Backend("trt", "engine", "cuda", EngineRunner, "a serialized TensorRT engine (tensorrt + cuda-python or pycuda)"),
)})

ALIASES: Mapping[str, str] = MappingProxyType({
    "torch": "torch-cpu", "pytorch": "torch-cpu", "pytorch-cpu": "torch-cpu", "eager": "torch-cpu",
    "pytorch-cuda": "torch-cuda", "torch-gpu": "torch-cuda",
    "ort": "ort-cpu", "onnxrt": "ort-cpu", "onnxruntime": "ort-cpu", "onnxruntime-cpu": "ort-cpu",
    "onnxrt-cpu": "ort-cpu", "ort-gpu": "ort-cuda", "onnxruntime-cuda": "ort-cuda", "onnxruntime-gpu": "ort-cuda",
    "onnxrt-cuda": "ort-cuda", "onnxruntime-trt": "ort-trt", "onnxruntime-tensorrt": "ort-trt",
    "ort-tensorrt": "ort-trt", "onnxrt-trt": "ort-trt",
    "tensorrt": "trt", "trtexec": "trt", "engine": "trt",
})


def resolve_backend(name: str) -> Backend:
    """The backend for a name or alias (case-insensitive); unknown names list the choices and a close match."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key in BACKENDS:
        return BACKENDS[key]
    close = difflib.get_close_matches(key, list(BACKENDS) + list(ALIASES), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UserInputError(f"unknown backend {name!r}{hint}: choose from {', '.join(BACKENDS)} "
                         f"(aliases: {', '.join(sorted(ALIASES))})")


def parse_backends(text: str) -> list[Backend]:
    """'torch-cpu,onnxrt' -> [torch-cpu, ort-cpu] (order kept, duplicates dropped, every name checked)."""
    names = [b.strip() for b in str(text).split(",") if b.strip()]
    if not names:
        raise UserInputError(f"no backend given: choose from {', '.join(BACKENDS)}")
    resolved = [resolve_backend(n) for n in names]
    return list({b.name: b for b in resolved}.values())
