"""Runners with one lifecycle (activate, infer, release) around PyTorch eager, ONNX Runtime and TensorRT.

    with make_runner("ort-cpu", onnx="raft.onnx") as runner:
        flow = runner.infer({"image1": a, "image2": b})["flow"]

Inputs and outputs are numpy arrays keyed by tensor name (`image1`, `image2`: float32 `[B,3,H,W]` in [0,255];
`flow`: `[B,2,H,W]`). Runners on a GPU also offer `timed_run`, one run timed on the device clock with its
host-to-device, compute and device-to-host phases, as trtexec reports them. torch and onnxruntime are imported
only by the runners that use them: the TensorRT engine runner needs tensorrt and a CUDA binding, no torch.
"""
from __future__ import annotations

import copy
import importlib.metadata
import json
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from flownas.errors import ToolkitError

Feeds = Mapping[str, np.ndarray]
IMAGE_INPUTS = ("image1", "image2")

BACKENDS: dict[str, str] = {
    "torch-cpu": "PyTorch eager on the CPU",
    "torch-cuda": "PyTorch eager on a CUDA GPU (optionally as a CUDA graph)",
    "ort-cpu": "ONNX Runtime, CPUExecutionProvider",
    "ort-cuda": "ONNX Runtime, CUDAExecutionProvider (onnxruntime-gpu)",
    "ort-trt": "ONNX Runtime, TensorrtExecutionProvider (onnxruntime-gpu + TensorRT)",
    "trt": "a serialized TensorRT engine (tensorrt + cuda-python or pycuda)",
}
ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                 "tensorrt": "TensorrtExecutionProvider"}
_ORT_BACKEND = {"cpu": "ort-cpu", "cuda": "ort-cuda", "tensorrt": "ort-trt"}


class BenchError(ToolkitError, ValueError):
    """A user-facing benchmarking problem (backend, file, missing library); the message is one line."""


def library_version(*distributions: str) -> str | None:
    """Installed version of the first distribution found (read from metadata: nothing is imported)."""
    for dist in distributions:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def check_backend(backend: str) -> str:
    """`backend` if it is known, else a `BenchError` listing the valid ones."""
    if backend not in BACKENDS:
        raise BenchError(f"unknown backend {backend!r}: choose from {', '.join(sorted(BACKENDS))}")
    return backend


class Runner(ABC):
    """Activate / infer / release around one model on one backend (Polygraphy's runner shape)."""

    backend = "runner"
    has_device_clock = False  # True: `timed_run` times runs with CUDA events instead of the host clock

    def __init__(self, *, model_name: str, device: str = "cpu", precision: str = "fp32",
                 threads: int | None = None) -> None:
        self.model_name, self.device, self.precision, self.threads = model_name, device, precision, threads
        self._active = False

    @property
    def active(self) -> bool:
        return self._active

    def activate(self) -> "Runner":
        """Load the model / session / engine and allocate buffers; a second call does nothing."""
        if not self._active:
            self._activate()
            self._active = True
        return self

    def release(self) -> None:
        """Free what `activate` allocated; the runner can be activated again."""
        if self._active:
            self._active = False
            self._release()

    def infer(self, feeds: Feeds) -> dict[str, np.ndarray]:
        """One synchronous run: numpy in, new numpy arrays out."""
        self._require_active()
        return self._infer(feeds)

    def timed_run(self, feeds: Feeds) -> dict[str, float]:
        """One run timed on the device clock: `latency_ms` and its phases (only where `has_device_clock`)."""
        self._require_active()
        if not self.has_device_clock:
            raise NotImplementedError(f"{self.backend} has no device clock: time `infer` on the host")
        return self._timed_run(feeds)

    def _require_active(self) -> None:
        if not self._active:
            raise RuntimeError(f"{self.backend} runner is not active: call activate() or use it in a with-block")

    def describe(self) -> dict[str, Any]:
        """Backend, model, device, precision, threads, timing clock and library versions."""
        return {"backend": self.backend, "model": self.model_name, "device": self.device,
                "precision": self.precision, "threads": self.threads,
                "timing": "CUDA events" if self.has_device_clock else "host perf_counter",
                "versions": {k: v for k, v in self._versions().items() if v is not None}}

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc_info: Any) -> None:
        self.release()

    @abstractmethod
    def _activate(self) -> None: ...

    @abstractmethod
    def _infer(self, feeds: Feeds) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _release(self) -> None: ...

    def _timed_run(self, feeds: Feeds) -> dict[str, float]:
        raise NotImplementedError

    def _versions(self) -> dict[str, str | None]:
        return {"numpy": np.__version__}


def _images(feeds: Feeds) -> tuple[np.ndarray, np.ndarray]:
    if set(feeds) != set(IMAGE_INPUTS):
        raise ValueError(f"feeds must be exactly {list(IMAGE_INPUTS)}, got {sorted(feeds)}")
    return tuple(np.ascontiguousarray(feeds[k], dtype=np.float32) for k in IMAGE_INPUTS)  # type: ignore[return-value]


class TorchRunner(Runner):
    """PyTorch eager, the model's own `forward` (padding included), on the CPU or a CUDA GPU.

    On CUDA, inputs go through page-locked host buffers into persistent device tensors, so a run has the
    same three phases as a TensorRT engine; `cuda_graph=True` captures the forward once and replays it,
    which removes Python and kernel-launch overhead as trtexec's default CUDA graphs do.
    `threads` sets torch's (process-wide) intra-op thread count while active; the old value is restored.
    """

    def __init__(self, model: Any, iters: int = 12, device: str = "cpu", threads: int | None = None,
                 cuda_graph: bool = False, precision: str = "fp32", model_name: str | None = None) -> None:
        if device not in ("cpu", "cuda"):
            raise BenchError(f"TorchRunner device must be 'cpu' or 'cuda', got {device!r}")
        if cuda_graph and device != "cuda":
            raise BenchError("CUDA graphs need device='cuda' (backend torch-cuda)")
        if iters < 1:
            raise BenchError(f"iterations must be at least 1, got {iters}")
        name = model_name or "-".join(str(v) for v in model.config().values() if isinstance(v, str))
        super().__init__(model_name=name, device=device, precision=precision, threads=threads)
        self.backend = f"torch-{device}"
        self.has_device_clock = device == "cuda"
        self.model, self.iters, self.cuda_graph = model, iters, cuda_graph
        self._cuda: dict[str, Any] | None = None  # device buffers, events and graph, made on the first CUDA run

    def _activate(self) -> None:
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            raise BenchError(f"backend torch-cuda: this PyTorch ({torch.__version__}) sees no CUDA GPU; "
                             "install a CUDA build of torch or use torch-cpu")
        self._torch, self._saved_threads = torch, torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        # A model elsewhere is copied, not moved (Module.to works in place): one model may back a torch-cpu
        # and a torch-cuda runner in the same comparison.
        first = next(self.model.parameters(), None)
        here = first is None or first.device.type == self.device
        self._net = (self.model if here else copy.deepcopy(self.model).to(self.device)).eval()

    def _release(self) -> None:
        self._torch.set_num_threads(self._saved_threads)
        self._net, self._cuda = None, None  # drops a device copy, device buffers and the graph's memory pool
        if self.device == "cuda":
            self._torch.cuda.empty_cache()

    def _infer(self, feeds: Feeds) -> dict[str, np.ndarray]:
        if self.device == "cuda":
            self._cuda_run(feeds, timed=False)
            return {"flow": self._cuda["host_out"].numpy().copy()}
        image1, image2 = (self._torch.from_numpy(a) for a in _images(feeds))
        with self._torch.inference_mode():
            return {"flow": self._net(image1, image2, iters=self.iters).numpy()}  # a fresh tensor: no copy

    def _timed_run(self, feeds: Feeds) -> dict[str, float]:
        return self._cuda_run(feeds, timed=True)

    def _cuda_run(self, feeds: Feeds, timed: bool) -> dict[str, float]:
        """Stage, copy in, compute, copy out, synchronise; with CUDA events between the phases."""
        torch, images = self._torch, _images(feeds)
        state = self._cuda_state(images[0].shape)
        for host, array in zip(state["host_in"], images):
            host.numpy()[...] = array  # host-side staging, outside the device-timed phases (as TrtRunner)
        start, copied_in, computed, copied_out = state["events"]
        start.record()
        for device, host in zip(state["dev_in"], state["host_in"]):
            device.copy_(host, non_blocking=True)
        copied_in.record()
        out = self._compute(state)
        computed.record()
        state["host_out"].copy_(out, non_blocking=True)
        copied_out.record()
        copied_out.synchronize()
        if not timed:
            return {}
        h2d, compute, d2h = (a.elapsed_time(b) for a, b in ((start, copied_in), (copied_in, computed),
                                                           (computed, copied_out)))
        return {"latency_ms": start.elapsed_time(copied_out), "h2d_ms": h2d, "compute_ms": compute, "d2h_ms": d2h}

    def _compute(self, state: dict[str, Any]) -> Any:
        if state["graph"] is not None:
            state["graph"].replay()
            return state["graph_out"]
        with self._torch.inference_mode():
            return self._net(*state["dev_in"], iters=self.iters)

    def _cuda_state(self, shape: tuple[int, ...]) -> dict[str, Any]:
        """Pinned host and device buffers for `shape` (rebuilt when the shape changes), events, graph."""
        if self._cuda is not None and self._cuda["shape"] == shape:
            return self._cuda
        torch = self._torch
        host_in = [torch.empty(shape, dtype=torch.float32, pin_memory=True) for _ in IMAGE_INPUTS]
        dev_in = [torch.zeros(shape, dtype=torch.float32, device="cuda") for _ in IMAGE_INPUTS]
        state = {"shape": shape, "host_in": host_in, "dev_in": dev_in, "graph": None, "graph_out": None,
                 "events": [torch.cuda.Event(enable_timing=True) for _ in range(4)]}
        if self.cuda_graph:
            state["graph"], state["graph_out"] = self._capture(dev_in)
        out = self._compute(state)  # also sizes the pinned output buffer
        state["host_out"] = torch.empty(tuple(out.shape), dtype=out.dtype, pin_memory=True)
        torch.cuda.synchronize()
        self._cuda = state
        return state

    def _capture(self, dev_in: list[Any]) -> tuple[Any, Any]:
        """Capture one forward as a CUDA graph; warm-up runs on a side stream first, as PyTorch requires."""
        torch = self._torch
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), torch.no_grad():
                for _ in range(3):
                    self._net(*dev_in, iters=self.iters)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.no_grad(), torch.cuda.graph(graph):
                out = self._net(*dev_in, iters=self.iters)
        except RuntimeError as exc:  # host synchronisation or dynamic shapes inside the forward
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BenchError(f"CUDA graph capture failed ({first}); run without --cuda-graph") from None
        return graph, out

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(iters=self.iters, cuda_graph=self.cuda_graph)
        if self._active:
            info["threads"] = self._torch.get_num_threads()
            if self.device == "cuda":
                info["gpu"] = self._torch.cuda.get_device_name()
        return info

    def _versions(self) -> dict[str, str | None]:
        return {**super()._versions(), "torch": library_version("torch")}


def _check_ort_provider(provider: str) -> Any:
    """The onnxruntime module, if it offers `provider`; else a one-line `BenchError` saying what to install."""
    if provider not in ORT_PROVIDERS:
        raise BenchError(f"unknown ONNX Runtime provider {provider!r}: choose from {', '.join(ORT_PROVIDERS)}")
    try:
        import onnxruntime as ort
    except ImportError:
        raise BenchError("onnxruntime is not installed: pip install onnxruntime (CPU) or onnxruntime-gpu") from None
    name, available = ORT_PROVIDERS[provider], ort.get_available_providers()
    if name not in available:
        extra = " and TensorRT's libraries on the library path" if provider == "tensorrt" else ""
        raise BenchError(f"backend {_ORT_BACKEND[provider]}: ONNX Runtime {ort.__version__} has no {name} "
                         f"(available: {', '.join(available)}); install onnxruntime-gpu in place of "
                         f"onnxruntime{extra}")
    return ort


class OrtRunner(Runner):
    """An ONNX file on ONNX Runtime with one execution provider (cpu, cuda or tensorrt).

    Provider chains follow ONNX Runtime's advice (TensorRT, then CUDA, then CPU for unsupported nodes), but a
    session whose first provider is not the requested one is refused: CPU timings must never be reported as
    GPU ones. Runs go through `session.run` with numpy, so copies are included and timing is on the host.
    `spin=False` (the default) stops ONNX Runtime's idle pool threads from spin-waiting after each run: on a
    small CPU they otherwise steal the cores from whatever runs next, and measured interleaved with PyTorch
    they made eager RAFT-small look 3x slower on a 2-core machine (and ONNX Runtime itself was no faster).
    """

    def __init__(self, onnx_path: str | Path, provider: str = "cpu", threads: int | None = None,
                 precision: str = "fp32", model_name: str | None = None, keep: Any = None,
                 spin: bool = True) -> None:
        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise BenchError(f"ONNX file not found: {self.path}")
        self._ort = _check_ort_provider(provider)
        super().__init__(model_name=model_name or self.path.stem, device="cpu" if provider == "cpu" else "cuda",
                         precision=precision, threads=threads)
        self.provider, self.backend = provider, _ORT_BACKEND[provider]
        self._keep = keep  # e.g. the TemporaryDirectory of an ONNX file exported for this runner
        self.spin = spin
        self.session: Any = None

    def _activate(self) -> None:
        ort, wanted = self._ort, ORT_PROVIDERS[self.provider]
        chain = {"cpu": ["CPUExecutionProvider"], "cuda": [wanted, "CPUExecutionProvider"],
                 "tensorrt": [wanted, "CUDAExecutionProvider", "CPUExecutionProvider"]}[self.provider]
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        if not self.spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(str(self.path), options, providers=chain)
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BenchError(f"{self.path}: ONNX Runtime cannot load it ({first})") from None
        if session.get_providers()[0] != wanted:
            raise BenchError(f"backend {self.backend}: ONNX Runtime fell back to {session.get_providers()[0]} "
                             f"(CUDA/cuDNN/TensorRT libraries missing?); refusing to time it as {wanted}")
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]

    def _release(self) -> None:
        self.session = None  # ONNX Runtime frees the session's memory when the object goes

    def _infer(self, feeds: Feeds) -> dict[str, np.ndarray]:
        missing = set(self.input_names) - set(feeds)
        if missing:
            raise ValueError(f"{self.path.name} needs inputs {self.input_names}, missing {sorted(missing)}")
        outputs = self.session.run(None, {name: feeds[name] for name in self.input_names})
        return dict(zip(self.output_names, outputs))

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(onnx=str(self.path), providers=self.session.get_providers() if self.session else None,
                    spin_wait=self.spin)
        if info["threads"] is None:
            info["threads"] = "onnxruntime default"
        return info

    def _versions(self) -> dict[str, str | None]:
        return {**super()._versions(), "onnxruntime": self._ort.__version__}


class TrtEngineRunner(Runner):
    """A serialized TensorRT engine through `export.trt_runtime.TrtRunner` (tensorrt + a CUDA binding, no torch).

    `timed_run` returns TrtRunner's CUDA-event phases: host-to-device copies, engine compute, device-to-host.
    `precision` defaults to the one in the engine's sidecar record (written by `cli.py export trt`).
    """

    backend = "trt"
    has_device_clock = True

    def __init__(self, engine_path: str | Path, precision: str | None = None, model_name: str | None = None,
                 cuda: str | None = None) -> None:
        from export.trt_runtime import TensorRTUnavailable, TrtRunner, import_tensorrt

        self.path = Path(engine_path)
        if not self.path.is_file():
            raise BenchError(f"engine file not found: {self.path}")
        try:
            import_tensorrt()
        except TensorRTUnavailable as exc:
            raise BenchError(f"backend trt: {exc}") from None
        self.record = engine_record(self.path)
        super().__init__(model_name=model_name or self.path.stem, device="cuda",
                         precision=precision or self.record.get("precision", "unknown"))
        self._unavailable, self._runner = TensorRTUnavailable, TrtRunner(self.path, cuda=cuda)

    def _activate(self) -> None:
        try:
            self._runner.activate()
        except self._unavailable as exc:  # no CUDA binding or no GPU: still a one-line, user-facing problem
            raise BenchError(f"backend trt: {exc}") from None

    def _release(self) -> None:
        self._runner.deactivate()

    def _infer(self, feeds: Feeds) -> dict[str, np.ndarray]:
        return self._runner.infer(dict(feeds))

    def _timed_run(self, feeds: Feeds) -> dict[str, float]:
        phases = self._runner.time_phases(dict(feeds))
        return {"latency_ms": phases["total_ms"], "h2d_ms": phases["h2d_ms"], "compute_ms": phases["compute_ms"],
                "d2h_ms": phases["d2h_ms"]}

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["engine"] = str(self.path)
        if self._active:
            info.update(gpu=self._runner.cuda.device_info().get("name"), cuda_binding=self._runner.cuda.name)
        return info

    def _versions(self) -> dict[str, str | None]:
        return {**super()._versions(), "tensorrt": library_version("tensorrt", "tensorrt-cu12", "tensorrt-cu13"),
                "cuda-python": library_version("cuda-python"), "pycuda": library_version("pycuda")}


def engine_record(path: Path) -> dict[str, Any]:
    """The sidecar record `cli.py export trt` writes next to an engine (`x.engine.json`), or {}."""
    sidecar = Path(f"{path}.json")  # export.tensorrt.engine_sidecar_path, without importing onnx for it
    try:
        return json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return {}


def export_temp_onnx(model: Any, resolution: tuple[int, int], iters: int, folder: str | Path,
                     name: str = "model") -> Path:
    """Export `model` with the toolkit's default export (gather lookup) to `folder/<name>.onnx`."""
    from export.onnx_export import ExportError, ExportSpec, export_onnx

    path = Path(folder) / f"{name}.onnx"
    try:
        export_onnx(model, path, ExportSpec(resolution[0], resolution[1], iters))
    except ExportError as exc:
        raise BenchError(f"cannot export {name} for ONNX Runtime: {exc}") from None
    return path


def make_runner(backend: str, *, onnx: str | Path | None = None, engine: str | Path | None = None,
                model: Any = None, iters: int = 12, threads: int | None = None, precision: str | None = None,
                resolution: tuple[int, int] | None = None, model_name: str | None = None,
                cuda_graph: bool = False) -> Runner:
    """A runner for `backend`, after checking that the given artifacts fit it (errors are one line).

    `trt` needs an engine; `ort-*` an ONNX file, or a model (and `resolution`) exported to a temporary
    ONNX file that lives as long as the runner; `torch-*` a model.
    """
    check_backend(backend)
    if cuda_graph and backend != "torch-cuda":
        raise BenchError(f"CUDA graphs apply to backend torch-cuda only, not {backend}")
    if backend == "trt":
        if engine is None:
            raise BenchError("backend trt runs a TensorRT engine: give --engine (build one with `cli.py export trt`)")
        return TrtEngineRunner(engine, precision=precision, model_name=model_name)
    if backend.startswith("ort-"):
        provider = {"ort-cpu": "cpu", "ort-cuda": "cuda", "ort-trt": "tensorrt"}[backend]
        keep = None
        if onnx is None:
            if model is None:
                raise BenchError(f"backend {backend} needs --onnx, or a model (--weights or --model) to export")
            if resolution is None:
                raise BenchError(f"backend {backend}: exporting the model to ONNX needs a resolution (HxW)")
            _check_ort_provider(provider)  # fail before a long export, not after
            keep = tempfile.TemporaryDirectory(prefix="bench-onnx-")
            onnx = export_temp_onnx(model, resolution, iters, keep.name, model_name or "model")
        return OrtRunner(onnx, provider, threads, precision or "fp32", model_name, keep=keep)
    if model is None:
        raise BenchError(f"backend {backend} runs PyTorch eager: give --weights or --model "
                         "(an ONNX file or an engine cannot run in PyTorch)")
    return TorchRunner(model, iters, device=backend.split("-", 1)[1], threads=threads, cuda_graph=cuda_graph,
                       precision=precision or "fp32", model_name=model_name)
