"""Run a serialized TensorRT engine with numpy in and out; no torch (deployment targets lack it).

TensorRT 10 removed the binding-index API: IO tensors are addressed by name (`set_input_shape`,
`set_tensor_address`, `execute_async_v3`). Buffers, streams and events come from cuda-python as in NVIDIA's
TensorRT Python samples, else pycuda (`export.cuda_bindings`: each binding is tried, failures are reported).
Host buffers are page-locked so copies are truly asynchronous and run at full speed, as trtexec's do.
With `cuda_graph=True` the engine's work is replayed as a CUDA graph, as trtexec 11 does by default.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .cuda_bindings import (  # noqa: F401  (re-exported: callers import them from here)
    BINDINGS, CudaBackend, CudaError, TensorRTUnavailable, binding_candidates, cuda_backend, gpu_info,
    select_cuda_binding,
)


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

    `cuda` forces a binding ("cuda-python" or "pycuda"; default: the first that works). `cuda_graph=True`
    captures the engine's `execute_async_v3` into a CUDA graph and launches that instead (less CPU launch
    overhead, as trtexec 11's default); it is captured again whenever input shapes or buffers change. Host <->
    device copies stay outside the graph, so `time_phases` still times them apart. Needs cuda-python.
    """

    def __init__(self, engine_path: str | os.PathLike, *, cuda: str | None = None, cuda_graph: bool = False) -> None:
        binding_candidates(cuda, cuda_graph=cuda_graph)  # refuse an unknown binding, or pycuda with graphs, now
        self.engine_path = Path(engine_path)
        self._prefer = cuda
        self.cuda_graph = bool(cuda_graph)
        self._active = False
        self.input_names: list[str] = []    # engine IO tensor names, filled by activate()
        self.output_names: list[str] = []
        self._graph_exec: Any = None        # instantiated CUDA graph and the bindings it was captured for
        self._graph_key: tuple | None = None

    def activate(self) -> "TrtRunner":
        """Deserialize the engine, create the context, a stream, timing events and per-tensor buffers."""
        if self._active:
            return self
        trt = import_tensorrt()
        plan = self.engine_path.read_bytes()
        self.cuda = cuda_backend(self._prefer, cuda_graph=self.cuda_graph)
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
        self._drop_graph()  # the graph holds the buffers' addresses: destroy it before freeing them
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

    def time_phases(self, feeds: dict[str, np.ndarray]) -> dict[str, float | bool]:
        """One run timed with CUDA events: `h2d_ms`, `compute_ms`, `d2h_ms`, `total_ms` (device clock, ms),
        and `cuda_graph` (whether the compute phase was a CUDA graph launch)."""
        self._run(feeds, timed=True)
        cuda, (start, copied_in, computed, copied_out) = self.cuda, self._events
        return {"h2d_ms": cuda.event_elapsed_ms(start, copied_in),
                "compute_ms": cuda.event_elapsed_ms(copied_in, computed),
                "d2h_ms": cuda.event_elapsed_ms(computed, copied_out),
                "total_ms": cuda.event_elapsed_ms(start, copied_out), "cuda_graph": self.cuda_graph}

    def describe(self) -> dict[str, Any]:
        """Engine file, CUDA binding, whether CUDA graphs are used, and IO tensors (`shape` -1 = dynamic)."""
        info: dict[str, Any] = {"engine": str(self.engine_path), "cuda_graph": self.cuda_graph,
                                "cuda_binding": self.cuda.name if self._active else self._prefer}
        if self._active:
            info["io"] = {t.name: {"input": t.is_input, "dtype": t.dtype.name, "shape": list(t.engine_shape)}
                          for t in self.tensors.values()}
        return info

    def _run(self, feeds: dict[str, np.ndarray], timed: bool) -> None:
        self._require_active()
        self._stage_inputs(feeds)
        if self.cuda_graph:
            self._ensure_graph()  # before the first event: capturing is set-up, not part of the timed run
        mark = (lambda i: self.cuda.event_record(self._events[i], self.stream)) if timed else (lambda i: None)
        mark(0)
        self._copy_inputs()
        mark(1)
        if self.cuda_graph:
            self.cuda.graph_launch(self._graph_exec, self.stream)
        else:
            self._enqueue()
        mark(2)
        for tensor in (t for t in self.tensors.values() if not t.is_input):
            self.cuda.memcpy_dtoh_async(tensor.host, tensor.device, tensor.nbytes, self.stream)
        mark(3)
        self.cuda.stream_sync(self.stream)

    def _copy_inputs(self) -> None:
        for tensor in (t for t in self.tensors.values() if t.is_input):
            self.cuda.memcpy_htod_async(tensor.device, tensor.host, tensor.nbytes, self.stream)

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.cuda.stream_handle(self.stream)):
            raise RuntimeError(f"execute_async_v3 failed for {self.engine_path.name} (see TensorRT's log)")

    def _ensure_graph(self) -> None:
        """Capture `execute_async_v3` into a CUDA graph unless one exists for these shapes and buffers.

        As trtexec does (samples/common/sampleInference.cpp, createEnqueueFunction): inputs copied in, one
        ordinary enqueue so that TensorRT's deferred set-up (shape inference, resource allocation) is not
        captured, then capture on the runner's stream. A graph bakes in shapes and device addresses, hence the key.
        """
        key = tuple((t.name, t.shape, t.device) for t in self.tensors.values())
        if key == self._graph_key:
            return
        self._drop_graph()
        self._copy_inputs()  # the warm-up reads real inputs, not freshly allocated (uninitialised) buffers
        self._enqueue()
        self.cuda.stream_sync(self.stream)
        self.cuda.graph_capture_begin(self.stream)
        try:
            captured = self.context.execute_async_v3(self.cuda.stream_handle(self.stream))
        except BaseException:
            self.cuda.graph_capture_abort(self.stream)
            raise
        if not captured:  # TensorRT returns False when an operation is not permitted under stream capture
            self.cuda.graph_capture_abort(self.stream)
            raise CudaError(f"{self.engine_path.name}: the engine cannot be captured into a CUDA graph (an "
                            "operation is not permitted under stream capture); run it with cuda_graph=False")
        self._graph_exec, self._graph_key = self.cuda.graph_capture_end(self.stream), key

    def _drop_graph(self) -> None:
        if self._graph_exec is not None:
            exec_, self._graph_exec, self._graph_key = self._graph_exec, None, None
            self.cuda.graph_exec_destroy(exec_)

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
