"""Run a serialized TensorRT engine with numpy in and out; no torch (deployment targets lack it).

TensorRT 10 removed the binding-index API: IO tensors are addressed by name (`set_input_shape`,
`set_tensor_address`, `execute_async_v3`). Buffers, streams and events come from cuda-python as in NVIDIA's
TensorRT Python samples (`samples/python/common_runtime.py`: each call returns `(err, *results)`), else pycuda.
Host buffers are page-locked so copies are truly asynchronous and run at full speed, as trtexec's do.
"""
from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
from flownas.errors import MissingDependencyError, ToolkitError


class TensorRTUnavailable(MissingDependencyError):
    """TensorRT, a CUDA Python binding or an NVIDIA GPU is missing; the message is one line."""


class CudaError(ToolkitError, RuntimeError):
    """A CUDA call failed; the message names the call."""


TRT_MISSING = ("TensorRT is not installed (pip install tensorrt needs NVIDIA's index); "
               "engine building needs an NVIDIA GPU")


def import_tensorrt() -> Any:
    """`import tensorrt`, or raise `TensorRTUnavailable`; only TensorRT 10 and 11 are supported."""
    try:
        import tensorrt as trt
    except ModuleNotFoundError as exc:
        raise TensorRTUnavailable(TRT_MISSING) from exc
    except (ImportError, OSError) as exc:  # the wheel is there but libnvinfer cannot load
        first_line = (str(exc).splitlines() or [""])[0]
        raise TensorRTUnavailable(f"{TRT_MISSING} ({type(exc).__name__}: {first_line})") from exc
    major = int(str(trt.__version__).split(".")[0])
    if major not in (10, 11):
        raise TensorRTUnavailable(f"TensorRT {trt.__version__} is not supported: this toolkit needs TensorRT 10 or 11")
    return trt


class _CudaPython:
    """cuda-python runtime bindings: `cuda.bindings.runtime` (>= 12.6; the only path in 13) or `cuda.cudart`."""

    name = "cuda-python"

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # cuda-python < 12.6; removed in 13.0 (cuda-bindings 13.0.0 release notes)
        self.rt = cudart
        try:
            count = self._call("cudaGetDeviceCount", cudart.cudaGetDeviceCount())
        except CudaError as exc:  # cudaErrorNoDevice / cudaErrorInsufficientDriver
            raise TensorRTUnavailable(f"no usable CUDA GPU ({exc})") from exc
        if count < 1:
            raise TensorRTUnavailable("no CUDA GPU found (cudaGetDeviceCount returned 0)")

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

    def device_info(self) -> dict[str, Any]:
        device = self._call("cudaGetDevice", self.rt.cudaGetDevice())
        prop = self._call("cudaGetDeviceProperties", self.rt.cudaGetDeviceProperties(device))
        name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
        return {"name": name.rstrip("\x00"), "compute_capability": f"{prop.major}.{prop.minor}",
                "index": int(device), "cuda_binding": self.name}

    def close(self) -> None:
        """Nothing to release: the runtime API owns the primary context."""


class _PyCuda:
    """pycuda driver bindings on the device's primary context (the one the CUDA runtime and TensorRT use)."""

    name = "pycuda"

    def __init__(self, device: int = 0) -> None:
        import pycuda.driver as drv

        self.drv = drv
        try:
            self._call("cuInit", drv.init)
            count = self._call("cuDeviceGetCount", drv.Device.count)
        except CudaError as exc:
            raise TensorRTUnavailable(f"no usable CUDA GPU ({exc})") from exc
        if count < 1:
            raise TensorRTUnavailable("no CUDA GPU found (pycuda sees no device)")
        self.index, self.device = device, drv.Device(device)
        self.context = self._call("cuDevicePrimaryCtxRetain", self.device.retain_primary_context)
        self._call("cuCtxPushCurrent", self.context.push)
        self._allocations: dict[int, Any] = {}

    def _call(self, fn: str, func: Any, *args: Any) -> Any:
        # pycuda raises its own exceptions; re-raise them with the CUDA call's name, like the other backend.
        try:
            return func(*args)
        except self.drv.Error as exc:
            raise CudaError(f"{fn} failed: {exc}") from exc

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
                "index": self.index, "cuda_binding": self.name}

    def close(self) -> None:
        self._call("cuCtxPopCurrent", self.context.pop)
        self._call("cuDevicePrimaryCtxRelease", self.context.detach)


CudaBackend = Union[_CudaPython, _PyCuda]  # the same methods, so callers never branch on the binding
_BACKENDS = {"cuda-python": (_CudaPython,), "pycuda": (_PyCuda,), None: (_CudaPython, _PyCuda)}


def cuda_backend(prefer: str | None = None) -> CudaBackend:
    """A CUDA adapter: cuda-python if importable, else pycuda (`prefer` forces one of the two)."""
    if prefer not in _BACKENDS:
        raise ValueError(f"unknown CUDA binding {prefer!r}: choose 'cuda-python' or 'pycuda'")
    missing = []
    for backend in _BACKENDS[prefer]:
        try:
            return backend()
        except ImportError as exc:
            missing.append(f"{backend.name}: {exc}")
    raise TensorRTUnavailable("no CUDA Python binding (pip install cuda-python, or pycuda): " + "; ".join(missing))


def gpu_info() -> dict[str, Any] | None:
    """Name and compute capability of the current CUDA device, or None when no binding or GPU is present."""
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


@dataclass
class _Tensor:
    """One engine IO tensor with its device buffer and page-locked host staging buffer."""

    name: str
    is_input: bool
    dtype: np.dtype
    engine_shape: tuple[int, ...]
    device: int = 0
    host: np.ndarray | None = None
    capacity: int = 0
    shape: tuple[int, ...] = ()

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def view(self) -> np.ndarray:
        return self.host[: self.nbytes].view(self.dtype).reshape(self.shape)


class TrtRunner:
    """Activate / infer / deactivate lifecycle around one engine (Polygraphy's runner shape).

    >>> with TrtRunner("raft.engine") as runner:           # doctest: +SKIP
    ...     flow = runner.infer({"image1": a, "image2": b})["flow"]

    Inputs are numpy arrays keyed by tensor name (`[B,3,H,W]` float32 images for the flow engines);
    outputs come back as new numpy arrays. Dynamic inputs take any shape inside the engine's profile 0.
    """

    def __init__(self, engine_path: str | os.PathLike, *, cuda: str | None = None) -> None:
        self.engine_path = Path(engine_path)
        self._prefer = cuda
        self._active = False
        self.input_names: list[str] = []    # engine IO tensor names, filled by activate()
        self.output_names: list[str] = []

    def activate(self) -> "TrtRunner":
        """Deserialize the engine, create the context, a stream, timing events and per-tensor buffers."""
        if self._active:
            return self
        trt = import_tensorrt()
        plan = self.engine_path.read_bytes()
        self.cuda = cuda_backend(self._prefer)
        self._trt, self._logger = trt, trt.Logger(trt.Logger.WARNING)
        self.stream, self._events, self.tensors = None, [], {}
        self._active = True  # from here on, deactivate() undoes whatever part of the set-up happened
        try:
            self._runtime = trt.Runtime(self._logger)
            self.engine = self._runtime.deserialize_cuda_engine(plan)
            self.context = self.engine.create_execution_context() if self.engine is not None else None
            if self.context is None:
                raise RuntimeError(f"TensorRT could not load {self.engine_path} (built by another TensorRT "
                                   "version or for another GPU?)")
            self.stream = self.cuda.stream_create()
            self._events = [self.cuda.event_create() for _ in range(4)]
            self.tensors = {t.name: t for t in self._describe_tensors()}
            self.input_names = [t.name for t in self.tensors.values() if t.is_input]
            self.output_names = [t.name for t in self.tensors.values() if not t.is_input]
            for tensor in self.tensors.values():
                if all(d >= 0 for d in tensor.engine_shape):
                    tensor.shape = tensor.engine_shape
                    self._reserve(tensor, tensor.nbytes)
        except BaseException:
            self.deactivate()
            raise
        return self

    def deactivate(self) -> None:
        """Free buffers, events and the stream, then drop the context before the engine (TensorRT's order)."""
        if not self._active:
            return
        self._active = False
        for tensor in self.tensors.values():
            self._release(tensor)
        for event in self._events:
            self.cuda.event_destroy(event)
        if self.stream is not None:
            self.cuda.stream_destroy(self.stream)
        self.context = self.engine = self._runtime = None
        self.cuda.close()

    def __enter__(self) -> "TrtRunner":
        return self.activate()

    def __exit__(self, *exc_info: Any) -> None:
        self.deactivate()

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copy `feeds` in, run the engine once, return every output by name (synchronous)."""
        self._run(feeds, timed=False)
        return {name: self.tensors[name].view().copy() for name in self.output_names}

    def time_phases(self, feeds: dict[str, np.ndarray]) -> dict[str, float]:
        """One run timed with CUDA events: `h2d_ms`, `compute_ms`, `d2h_ms` and `total_ms` (device clock)."""
        self._run(feeds, timed=True)
        cuda, (start, copied_in, computed, copied_out) = self.cuda, self._events
        return {"h2d_ms": cuda.event_elapsed_ms(start, copied_in),
                "compute_ms": cuda.event_elapsed_ms(copied_in, computed),
                "d2h_ms": cuda.event_elapsed_ms(computed, copied_out),
                "total_ms": cuda.event_elapsed_ms(start, copied_out)}

    def _run(self, feeds: dict[str, np.ndarray], timed: bool) -> None:
        self._require_active()
        self._stage_inputs(feeds)
        mark = (lambda i: self.cuda.event_record(self._events[i], self.stream)) if timed else (lambda i: None)
        mark(0)
        for tensor in (t for t in self.tensors.values() if t.is_input):
            self.cuda.memcpy_htod_async(tensor.device, tensor.host, tensor.nbytes, self.stream)
        mark(1)
        if not self.context.execute_async_v3(self.cuda.stream_handle(self.stream)):
            raise RuntimeError(f"execute_async_v3 failed for {self.engine_path.name} (see TensorRT's log)")
        mark(2)
        for tensor in (t for t in self.tensors.values() if not t.is_input):
            self.cuda.memcpy_dtoh_async(tensor.host, tensor.device, tensor.nbytes, self.stream)
        mark(3)
        self.cuda.stream_sync(self.stream)

    def _stage_inputs(self, feeds: dict[str, np.ndarray]) -> None:
        """Check names and shapes, set dynamic shapes, size buffers, fill host buffers, bind addresses."""
        expected = set(self.input_names)
        if set(feeds) != expected:
            raise ValueError(f"feeds must be exactly {sorted(expected)}: missing {sorted(expected - set(feeds))}, "
                             f"unexpected {sorted(set(feeds) - expected)}")
        for name in self.input_names:
            tensor, array = self.tensors[name], np.asarray(feeds[name])
            array = np.ascontiguousarray(array.astype(tensor.dtype, casting="same_kind", copy=False))
            self._set_input_shape(tensor, array.shape)
            self._reserve(tensor, tensor.nbytes)
            tensor.host[: tensor.nbytes] = array.reshape(-1).view(np.uint8)
        for tensor in self.tensors.values():
            if not tensor.is_input:
                tensor.shape = tuple(self.context.get_tensor_shape(tensor.name))
                if any(d < 0 for d in tensor.shape):
                    raise RuntimeError(f"output {tensor.name} has a data-dependent shape {tensor.shape}; "
                                       "TrtRunner needs shapes known from the inputs")
                self._reserve(tensor, tensor.nbytes)
            if not self.context.set_tensor_address(tensor.name, tensor.device):
                raise RuntimeError(f"set_tensor_address failed for {tensor.name}")

    def _set_input_shape(self, tensor: _Tensor, shape: tuple[int, ...]) -> None:
        static = all(d >= 0 for d in tensor.engine_shape)
        fits = len(shape) == len(tensor.engine_shape) and all(
            d == e for d, e in zip(shape, tensor.engine_shape) if e >= 0)
        if fits and not static:
            fits = bool(self.context.set_input_shape(tensor.name, shape))
        if not fits:
            low, _, high = (self.engine.get_tensor_profile_shape(tensor.name, 0) if not static
                            else (tensor.engine_shape,) * 3)
            raise ValueError(f"input {tensor.name}: shape {tuple(shape)} does not fit the engine "
                             f"(allowed {tuple(low)} .. {tuple(high)})")
        tensor.shape = tuple(shape)

    def _describe_tensors(self) -> list[_Tensor]:
        trt, engine = self._trt, self.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        return [_Tensor(name, engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                        np.dtype(trt.nptype(engine.get_tensor_dtype(name))), tuple(engine.get_tensor_shape(name)))
                for name in names]

    def _reserve(self, tensor: _Tensor, nbytes: int) -> None:
        """Grow the tensor's device and pinned host buffers to `nbytes` (never shrink: shapes come and go)."""
        if nbytes <= tensor.capacity:
            return
        self._release(tensor)
        size = max(nbytes, 1)
        tensor.device, tensor.host, tensor.capacity = self.cuda.malloc(size), self.cuda.malloc_host(size), size

    def _release(self, tensor: _Tensor) -> None:
        if tensor.capacity:
            self.cuda.free(tensor.device)
            self.cuda.free_host(tensor.host)
            tensor.device, tensor.host, tensor.capacity = 0, None, 0

    def _require_active(self) -> "TrtRunner":
        if not self._active:
            raise RuntimeError("TrtRunner is not active: call activate() or use it as a context manager")
        return self
