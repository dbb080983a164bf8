"""CUDA Python bindings behind one adapter: cuda-python (`cuda.bindings`) first, pycuda as the fallback.

Each binding is tried in turn and any failure to start it (not importable, no driver, a driver too old for the
binding's CUDA major version, no GPU) is kept as a reason; the first binding that starts is used, and when none
does the error lists every binding's reason on one line. cuda-python calls return `(err, *results)` (NVIDIA's
TensorRT samples, `samples/python/common_runtime.py`); pycuda raises its own exceptions. Nothing here imports
torch or onnx: deployment targets run engines with numpy, TensorRT and a binding only.
"""
from __future__ import annotations

import ctypes
import importlib.metadata
from typing import Any, Callable, Sequence, Union

import numpy as np

from flownas.errors import MissingDependencyError, ToolkitError, UserInputError, one_line


class TensorRTUnavailable(MissingDependencyError):
    """TensorRT, a CUDA Python binding or an NVIDIA GPU is missing; the message is one line."""


class CudaError(ToolkitError, RuntimeError):
    """A CUDA call failed; the message names the call."""


# Minimum Linux drivers per CUDA major version (CUDA toolkit release notes, "CUDA Driver" table: 12.x >= 525.60.13
# with minor-version compatibility, 13.x >= 580): a binding newer than the driver fails with InsufficientDriver.
# CUDA reports the same error when no driver is loaded at all.
_DRIVER_HINT = ("no NVIDIA driver, or one older than the binding's CUDA version needs (CUDA 12: >= 525, "
                "CUDA 13: >= 580); for an older driver pip install 'cuda-python==12.*'")


def _dist_version(*names: str) -> str:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "?"


class _CudaPython:
    """cuda-python runtime bindings: `cuda.bindings.runtime` (>= 12.6; the only path in 13) or `cuda.cudart`."""

    name = "cuda-python"
    supports_cuda_graph = True

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart
        except ModuleNotFoundError as exc:
            if exc.name not in ("cuda", "cuda.bindings"):  # bindings present, a dependency (cuda.pathfinder) not
                raise
            from cuda import cudart  # cuda-python < 12.6; removed in 13.0 (cuda-bindings 13.0.0 release notes)
        self.rt = cudart
        self.version = _dist_version("cuda-bindings", "cuda-python")
        err, count = cudart.cudaGetDeviceCount()
        if err == cudart.cudaError_t.cudaErrorInsufficientDriver:
            raise TensorRTUnavailable(f"cudaGetDeviceCount returned cudaErrorInsufficientDriver (bindings "
                                      f"{self.version}): {_DRIVER_HINT}")
        count = self._call("cudaGetDeviceCount", (err, count))
        if count < 1:
            raise TensorRTUnavailable("no CUDA GPU (cudaGetDeviceCount returned 0)")

    def _call(self, fn: str, result: tuple) -> Any:
        err, *values = result
        if err != self.rt.cudaError_t.cudaSuccess:
            _, name = self.rt.cudaGetErrorName(err)
            raise CudaError(f"{fn} failed: {name.decode() if isinstance(name, bytes) else name}")
        return values[0] if len(values) == 1 else tuple(values) or None

    def malloc(self, nbytes: int) -> int:
        return int(self._call("cudaMalloc", self.rt.cudaMalloc(nbytes)))

    def free(self, ptr: int) -> None:
        self._call("cudaFree", self.rt.cudaFree(ptr))

    def malloc_host(self, nbytes: int) -> np.ndarray:
        # Wrapping cudaMallocHost memory in numpy follows HostDeviceMem in samples/python/common_runtime.py.
        ptr = self._call("cudaMallocHost", self.rt.cudaMallocHost(nbytes))
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_uint8)), (nbytes,))

    def free_host(self, array: np.ndarray) -> None:
        self._call("cudaFreeHost", self.rt.cudaFreeHost(array.ctypes.data))

    def memcpy_htod_async(self, dst: int, src: np.ndarray, nbytes: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call("cudaMemcpyAsync", self.rt.cudaMemcpyAsync(dst, src.ctypes.data, nbytes, kind, stream))

    def memcpy_dtoh_async(self, dst: np.ndarray, src: int, nbytes: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call("cudaMemcpyAsync", self.rt.cudaMemcpyAsync(dst.ctypes.data, src, nbytes, kind, stream))

    def stream_create(self) -> Any:
        return self._call("cudaStreamCreate", self.rt.cudaStreamCreate())

    def stream_sync(self, stream: Any) -> None:
        self._call("cudaStreamSynchronize", self.rt.cudaStreamSynchronize(stream))

    def stream_destroy(self, stream: Any) -> None:
        self._call("cudaStreamDestroy", self.rt.cudaStreamDestroy(stream))

    def stream_handle(self, stream: Any) -> int:
        # int(obj) is deprecated in cuda-bindings 13 in favour of get_cuda_native_handle (13.0.0 release notes).
        try:
            from cuda.bindings.utils import get_cuda_native_handle

            return int(get_cuda_native_handle(stream))
        except (ImportError, TypeError):  # older bindings: no utils module, or no getter for this type
            return int(stream)

    def event_create(self) -> Any:
        return self._call("cudaEventCreate", self.rt.cudaEventCreate())

    def event_record(self, event: Any, stream: Any) -> None:
        self._call("cudaEventRecord", self.rt.cudaEventRecord(event, stream))

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        self._call("cudaEventSynchronize", self.rt.cudaEventSynchronize(end))
        return float(self._call("cudaEventElapsedTime", self.rt.cudaEventElapsedTime(start, end)))

    def event_destroy(self, event: Any) -> None:
        self._call("cudaEventDestroy", self.rt.cudaEventDestroy(event))

    # CUDA graphs, as trtexec's TrtCudaGraph (samples/common/sampleDevice.h) uses them: thread-local capture,
    # instantiate, destroy the graph once instantiated, launch the executable graph on the runner's stream.
    def graph_capture_begin(self, stream: Any) -> None:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._call("cudaStreamBeginCapture", self.rt.cudaStreamBeginCapture(stream, mode))

    def graph_capture_end(self, stream: Any) -> Any:
        """The captured graph, instantiated (`cudaGraphExec_t`); the graph itself is destroyed."""
        graph = self._call("cudaStreamEndCapture", self.rt.cudaStreamEndCapture(stream))
        try:
            # cuda-python 12 and 13 both take (graph, flags) (CUDA 12 dropped the error-node/log-buffer form).
            return self._call("cudaGraphInstantiate", self.rt.cudaGraphInstantiate(graph, 0))
        finally:
            self._call("cudaGraphDestroy", self.rt.cudaGraphDestroy(graph))

    def graph_capture_abort(self, stream: Any) -> None:
        """End a capture that failed and clear the error it left (trtexec's endCaptureOnError)."""
        err, graph = self.rt.cudaStreamEndCapture(stream)
        if err == self.rt.cudaError_t.cudaSuccess and graph is not None:
            self.rt.cudaGraphDestroy(graph)
        self.rt.cudaGetLastError()

    def graph_launch(self, graph_exec: Any, stream: Any) -> None:
        self._call("cudaGraphLaunch", self.rt.cudaGraphLaunch(graph_exec, stream))

    def graph_exec_destroy(self, graph_exec: Any) -> None:
        self._call("cudaGraphExecDestroy", self.rt.cudaGraphExecDestroy(graph_exec))

    def device_info(self) -> dict[str, Any]:
        device = self._call("cudaGetDevice", self.rt.cudaGetDevice())
        prop = self._call("cudaGetDeviceProperties", self.rt.cudaGetDeviceProperties(device))
        name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
        return {"name": name.rstrip("\x00"), "compute_capability": f"{prop.major}.{prop.minor}",
                "index": int(device), "cuda_binding": self.name, "cuda_binding_version": self.version}

    def close(self) -> None:
        """Nothing to release: the runtime API owns the primary context."""


class _PyCuda:
    """pycuda driver bindings on the device's primary context (the one the CUDA runtime and TensorRT use).

    pycuda (through release 2026.1) wraps no stream-capture API (`cuStreamBeginCapture`, `cuGraphInstantiate`),
    so CUDA graphs need cuda-python.
    """

    name = "pycuda"
    supports_cuda_graph = False

    def __init__(self, device: int = 0) -> None:
        import pycuda.driver as drv

        self.drv = drv
        self.version = _dist_version("pycuda")
        try:
            self._call("cuInit", drv.init)
            count = self._call("cuDeviceGetCount", drv.Device.count)
        except CudaError as exc:
            raise TensorRTUnavailable(f"no usable CUDA GPU ({exc})") from exc
        if count < 1:
            raise TensorRTUnavailable("no CUDA GPU (cuDeviceGetCount returned 0)")
        self.index, self.device = device, drv.Device(device)
        self.context = self._call("cuDevicePrimaryCtxRetain", self.device.retain_primary_context)
        self._call("cuCtxPushCurrent", self.context.push)
        self._allocations: dict[int, Any] = {}

    def _call(self, fn: str, func: Any, *args: Any) -> Any:
        # pycuda raises its own exceptions; re-raise them with the CUDA call's name, like the other backend.
        try:
            return func(*args)
        except self.drv.Error as exc:
            raise CudaError(f"{fn} failed: {one_line(exc)}") from exc

    def malloc(self, nbytes: int) -> int:
        allocation = self._call("cuMemAlloc", self.drv.mem_alloc, nbytes)
        self._allocations[int(allocation)] = allocation
        return int(allocation)

    def free(self, ptr: int) -> None:
        self._call("cuMemFree", self._allocations.pop(ptr).free)

    def malloc_host(self, nbytes: int) -> np.ndarray:
        return self._call("cuMemHostAlloc", self.drv.pagelocked_empty, (nbytes,), np.uint8)

    def free_host(self, array: np.ndarray) -> None:
        self._call("cuMemFreeHost", array.base.free)

    def memcpy_htod_async(self, dst: int, src: np.ndarray, nbytes: int, stream: Any) -> None:
        self._call("cuMemcpyHtoDAsync", self.drv.memcpy_htod_async, dst, src[:nbytes], stream)

    def memcpy_dtoh_async(self, dst: np.ndarray, src: int, nbytes: int, stream: Any) -> None:
        self._call("cuMemcpyDtoHAsync", self.drv.memcpy_dtoh_async, dst[:nbytes], src, stream)

    def stream_create(self) -> Any:
        return self._call("cuStreamCreate", self.drv.Stream)

    def stream_sync(self, stream: Any) -> None:
        self._call("cuStreamSynchronize", stream.synchronize)

    def stream_destroy(self, stream: Any) -> None:
        """pycuda destroys a stream when its Python object is collected."""

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def event_create(self) -> Any:
        return self._call("cuEventCreate", self.drv.Event)

    def event_record(self, event: Any, stream: Any) -> None:
        self._call("cuEventRecord", event.record, stream)

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        self._call("cuEventSynchronize", end.synchronize)
        return float(self._call("cuEventElapsedTime", start.time_till, end))

    def event_destroy(self, event: Any) -> None:
        """pycuda destroys an event when its Python object is collected."""

    def device_info(self) -> dict[str, Any]:
        major, minor = self.device.compute_capability()
        return {"name": self.device.name(), "compute_capability": f"{major}.{minor}",
                "index": self.index, "cuda_binding": self.name, "cuda_binding_version": self.version}

    def close(self) -> None:
        self._call("cuCtxPopCurrent", self.context.pop)
        self._call("cuDevicePrimaryCtxRelease", self.context.detach)


CudaBackend = Union[_CudaPython, _PyCuda]  # the same methods, so callers never branch on the binding
BINDINGS: dict[str, Callable[[], CudaBackend]] = {"cuda-python": _CudaPython, "pycuda": _PyCuda}  # preference order


def select_cuda_binding(candidates: Sequence[Callable[[], CudaBackend]],
                        skipped: Sequence[str] = ()) -> CudaBackend:
    """The first of `candidates` (binding classes, tried in order) that starts, else `TensorRTUnavailable`.

    A binding that cannot be imported, finds no driver or GPU, or whose CUDA version is newer than the driver
    (cudaErrorInsufficientDriver) is skipped and its reason kept; the error names every binding's reason (and
    the `skipped` notes) on one line. Errors of other types are bugs and propagate.
    """
    reasons = []
    for binding in candidates:
        name = getattr(binding, "name", getattr(binding, "__name__", repr(binding)))
        try:
            return binding()
        except ImportError as exc:
            reasons.append(f"{name}: not importable ({one_line(exc)})")
        except (OSError, RuntimeError) as exc:  # CudaError and TensorRTUnavailable are RuntimeErrors
            reasons.append(f"{name}: {one_line(exc)}")
    raise TensorRTUnavailable("no working CUDA Python binding (pip install cuda-python, or pycuda): "
                              + "; ".join([*reasons, *skipped]))


def binding_candidates(prefer: str | None = None, *, cuda_graph: bool = False) -> tuple[list[str], list[str]]:
    """(binding names to try in order, notes on bindings left out); refuses impossible choices in one line.

    `cuda_graph=True` needs stream capture, which only cuda-python offers: pycuda is then left out, and asking
    for it explicitly is refused.
    """
    if prefer not in (None, *BINDINGS):
        raise UserInputError(f"unknown CUDA binding {prefer!r}: choose 'cuda-python' or 'pycuda'")
    names = [prefer] if prefer else list(BINDINGS)
    if not cuda_graph:
        return names, []
    if prefer == "pycuda":
        raise UserInputError("cuda_graph=True needs cuda-python: pycuda has no CUDA stream-capture API "
                             "(use cuda='cuda-python' or cuda_graph=False)")
    capture = [n for n in names if getattr(BINDINGS[n], "supports_cuda_graph", False)]
    return capture, [f"{n}: not tried (no stream-capture API for cuda_graph=True)" for n in names if n not in capture]


def cuda_backend(prefer: str | None = None, *, cuda_graph: bool = False) -> CudaBackend:
    """A started CUDA adapter: cuda-python, else pycuda (`prefer` forces one; see `binding_candidates`)."""
    names, skipped = binding_candidates(prefer, cuda_graph=cuda_graph)
    return select_cuda_binding([BINDINGS[n] for n in names], skipped)


def gpu_info() -> dict[str, Any] | None:
    """Name and compute capability of the current CUDA device, or None when no binding or GPU works."""
    try:
        backend = cuda_backend()
    except (TensorRTUnavailable, CudaError):
        return None
    try:
        return backend.device_info()
    except CudaError:
        return None
    finally:
        backend.close()
