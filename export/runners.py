"""One runner contract for any graph: ONNX files on ONNX Runtime, TensorRT engines, PyTorch modules.

    with OrtRunner("model.onnx") as runner:                       # activate() ... deactivate()
        outputs = runner.infer({"x": x})                          # named numpy arrays in and out

Polygraphy's loader/runner split: a runner declares its inputs (`input_specs()`: names, shapes with dynamic axes,
dtypes), so inputs can be generated for any graph (`export.inputs`), and `infer` takes and returns numpy arrays keyed
by tensor name. The lifecycle is `activate` / `infer` / `deactivate` everywhere (the engine runner included);
a runner can be activated again after `deactivate`. Runners on a GPU also offer `timed_run`: one run timed on the
device clock with its host-to-device, compute and device-to-host phases, as trtexec reports them.

"fp32" means IEEE fp32 on every backend: TF32 is switched off for ONNX Runtime's CUDA provider and for PyTorch on
CUDA (both default to it on Ampere and newer), as the TensorRT fp32 build already does.
onnxruntime, tensorrt and the CUDA bindings are imported only by the runners that use them; this module needs numpy.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from flownas.errors import MissingDependencyError, ToolkitError, one_line
from flownas.provenance import library_version

from .inputs import TensorSpec, check_feeds, onnx_io_specs

Feeds = Mapping[str, np.ndarray]
ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
ORT_BACKENDS = {"cpu": "ort-cpu", "cuda": "ort-cuda", "tensorrt": "ort-trt"}
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


class RunnerError(ToolkitError, ValueError):
    """A runner cannot be made or run as asked (missing file, provider, precision, input); one line."""


class Runner(ABC):
    """Activate / infer / deactivate around one model on one backend (Polygraphy's runner shape)."""

    backend = "runner"
    has_device_clock = False  # True: `timed_run` times runs with CUDA events instead of the host clock

    def __init__(self, *, name: str, device: str = "cpu", precision: str = "fp32", threads: int | None = None) -> None:
        self.name, self.device, self.precision, self.threads = name, device, precision, threads
        self._active = False
        self._checked: tuple | None = None  # input names and shapes last checked against input_specs()

    @property
    def model_name(self) -> str:  # the name rows of a report are grouped by
        return self.name

    @property
    def active(self) -> bool:
        return self._active

    def activate(self) -> "Runner":
        """Load the model / session / engine and allocate buffers; a second call does nothing."""
        if not self._active:
            self._activate()
            self._active = True
        return self

    def deactivate(self) -> None:
        """Free what `activate` allocated; the runner can be activated again."""
        if self._active:
            self._active = False
            self._deactivate()

    def infer(self, feeds: Feeds) -> dict[str, np.ndarray]:
        """One synchronous run: numpy arrays by input name in, new numpy arrays by output name out."""
        self._require_active()
        signature = tuple((name, getattr(array, "shape", None)) for name, array in feeds.items())
        if signature != self._checked:  # timing loops feed the same shapes: check them once, not every run
            check_feeds(self.input_specs(), feeds, f"{self.backend} runner for {self.name}")
            self._checked = signature
        return self._infer(feeds)

    def timed_run(self, feeds: Feeds) -> dict[str, float]:
        """One run timed on the device clock: `latency_ms` and its phases (only where `has_device_clock`)."""
        self._require_active()
        if not self.has_device_clock:
            raise NotImplementedError(f"{self.backend} has no device clock: time `infer` on the host")
        return self._timed_run(feeds)

    @abstractmethod
    def input_specs(self) -> list[TensorSpec]:
        """Declared inputs (names, shapes with dynamic axes as str/None, dtypes); available before activation."""

    def artifacts(self) -> list[Path]:
        """Files this runner executes (ONNX file, engine), for the report's list of measured files."""
        return []

    def describe(self) -> dict[str, Any]:
        """Backend, model, device, precision, threads, timing clock and library versions."""
        return {"backend": self.backend, "model": self.name, "device": self.device, "precision": self.precision,
                "threads": self.threads, "timing": "CUDA events" if self.has_device_clock else "host perf_counter",
                "versions": {k: v for k, v in self._versions().items() if v is not None}}

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc_info: Any) -> None:
        self.deactivate()

    def _require_active(self) -> None:
        if not self._active:
            raise RuntimeError(f"{self.backend} runner is not active: call activate() or use it in a with-block")

    @abstractmethod
    def _activate(self) -> None: ...

    @abstractmethod
    def _deactivate(self) -> None: ...

    @abstractmethod
    def _infer(self, feeds: Feeds) -> dict[str, np.ndarray]: ...

    def _timed_run(self, feeds: Feeds) -> dict[str, float]:
        raise NotImplementedError

    def _versions(self) -> dict[str, str | None]:
        return {"numpy": np.__version__}


# --------------------------------------------------------------------------------------------- ONNX Runtime
def import_ort_provider(provider: str) -> Any:
    """The onnxruntime module if it offers `provider` ("cpu", "cuda", "tensorrt"); else one line saying what to do."""
    if provider not in ORT_PROVIDERS:
        raise RunnerError(f"unknown ONNX Runtime provider {provider!r}: choose from {', '.join(ORT_PROVIDERS)}")
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingDependencyError("onnxruntime is not installed: pip install onnxruntime (CPU) or "
                                     "onnxruntime-gpu (CUDA/TensorRT)") from None
    name, available = ORT_PROVIDERS[provider], ort.get_available_providers()
    if name not in available:
        from .ortcheck import ort_install_problem

        hint = ort_install_problem()
        extra = " and TensorRT's libraries on the library path" if provider == "tensorrt" else ""
        raise MissingDependencyError(
            f"backend {ORT_BACKENDS[provider]}: ONNX Runtime {ort.__version__} has no {name} (available: "
            f"{', '.join(available)}); {hint or 'install onnxruntime-gpu in place of onnxruntime' + extra}")
    return ort


def onnx_precision(path: Path) -> str:
    """The precision an ONNX file was written in: its precision plan's label ("int8", "fp16" or "mixed") when
    `export onnx --precision` wrote one, "fp16" for the strongly typed rewrite, else "fp32"."""
    from .metadata import read_metadata
    from .precision import PRECISION_KEY, PRECISION_VALUE

    try:
        meta = read_metadata(path)
    except Exception:  # unreadable files are reported by onnx_io_specs with the file named
        return "fp32"
    if "precision_plan" in meta:  # the record of `export onnx --precision` names the plan's label
        return str(meta.get("precision") or "mixed")
    return "fp16" if meta.get(PRECISION_KEY) == PRECISION_VALUE else "fp32"


class OrtRunner(Runner):
    """An ONNX file on ONNX Runtime with one execution provider (cpu, cuda or tensorrt).

    Provider chains follow ONNX Runtime's advice (TensorRT, then CUDA, then CPU for unsupported nodes), but a
    session whose first provider is not the requested one is refused: CPU timings must never be reported as GPU
    ones. Runs go through `session.run` with numpy, so copies are included and timing is on the host.
    `precision`: the CPU and CUDA providers run the graph's own types, so only that precision is accepted; the
    TensorRT provider builds fp16 engines on request (`trt_fp16_enable`). `cache_dir` keeps the TensorRT
    provider's engine and timing caches between runs. `spin=False` (the default) stops ONNX Runtime's idle pool
    threads from spin-waiting after each run: on a small CPU they otherwise steal the cores from whatever runs
    next (measured interleaved with PyTorch they made eager RAFT-small look 3x slower on a 2-core machine).
    """

    def __init__(self, onnx_path: str | Path, provider: str = "cpu", *, threads: int | None = None,
                 precision: str | None = None, name: str | None = None, spin: bool = False,
                 cache_dir: str | Path | None = None, profile_prefix: str | Path | None = None) -> None:
        self.path = Path(onnx_path)
        self.profile_prefix = profile_prefix  # ONNX Runtime's profiler on (bench.profile): JSON at this prefix
        if not self.path.is_file():
            raise RunnerError(f"{self.path}: ONNX file not found")
        self._ort = import_ort_provider(provider)
        self._inputs, self._outputs = onnx_io_specs(self.path)
        own = onnx_precision(self.path)
        precision = precision or own
        if precision != own and not (provider == "tensorrt" and precision == "fp16" and own == "fp32"):
            raise RunnerError(f"backend {ORT_BACKENDS[provider]} runs the graph's own precision ({own}); "
                              f"{precision} cannot be applied to {self.path.name} (export a {precision} graph, or "
                              "use ort-trt / trt for fp16)")
        super().__init__(name=name or self.path.stem, device="cpu" if provider == "cpu" else "cuda",
                         precision=precision, threads=threads)
        self.provider, self.backend, self.spin = provider, ORT_BACKENDS[provider], spin
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.session: Any = None

    def input_specs(self) -> list[TensorSpec]:
        return list(self._inputs)

    def output_specs(self) -> list[TensorSpec]:
        return list(self._outputs)

    def artifacts(self) -> list[Path]:
        return [self.path]

    def provider_chain(self) -> list[Any]:
        """Providers with their options: fp32 without TF32 on CUDA; precision and caches for TensorRT."""
        cuda = ("CUDAExecutionProvider", {"use_tf32": "0"})  # fp32 means fp32 (the CUDA provider defaults to TF32)
        if self.provider == "cpu":
            return ["CPUExecutionProvider"]
        if self.provider == "cuda":
            return [cuda, "CPUExecutionProvider"]
        trt: dict[str, str] = {"trt_fp16_enable": str(self.precision == "fp16"), "trt_int8_enable": "False"}
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            trt.update(trt_engine_cache_enable="True", trt_engine_cache_path=str(self.cache_dir),
                       trt_timing_cache_enable="True", trt_timing_cache_path=str(self.cache_dir))
        return [("TensorrtExecutionProvider", trt), cuda, "CPUExecutionProvider"]

    def _activate(self) -> None:
        ort, wanted = self._ort, ORT_PROVIDERS[self.provider]
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        if self.profile_prefix is not None:
            options.enable_profiling = True
            options.profile_file_prefix = str(self.profile_prefix)
        if not self.spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(str(self.path), options, providers=self.provider_chain())
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise RunnerError(f"{self.path}: ONNX Runtime cannot load it ({one_line(exc)})") from None
        if session.get_providers()[0] != wanted:
            raise RunnerError(f"backend {self.backend}: ONNX Runtime fell back to {session.get_providers()[0]} "
                              f"(CUDA/cuDNN/TensorRT libraries missing?); refusing to time it as {wanted}")
        self.session = session
        self._output_names = [o.name for o in session.get_outputs()]

    def _deactivate(self) -> None:
        self.session = None  # ONNX Runtime frees the session's memory when the object goes

    def _infer(self, feeds: Feeds) -> dict[str, np.ndarray]:
        inputs = {s.name: np.ascontiguousarray(feeds[s.name], dtype=s.dtype) for s in self._inputs}
        try:
            outputs = self.session.run(None, inputs)
        except Exception as exc:  # ORT's InvalidArgument etc.: shapes the graph cannot take
            raise RunnerError(f"{self.path.name}: ONNX Runtime refused the inputs ({one_line(exc)})") from None
        return dict(zip(self._output_names, outputs))

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(onnx=str(self.path), providers=self.session.get_providers() if self.session else None,
                    spin_wait=self.spin)
        if info["threads"] is None:
            info["threads"] = "onnxruntime default"
        return info

    def _versions(self) -> dict[str, str | None]:
        return {**super()._versions(), "onnxruntime": self._ort.__version__}


# --------------------------------------------------------------------------------------------- TensorRT engine
def engine_record(path: Path) -> dict[str, Any]:
    """The sidecar record `export trt` writes next to an engine (`x.engine.json`), or {}."""
    import json

    try:
        return json.loads(Path(f"{path}.json").read_text())
    except (OSError, ValueError):
        return {}


class EngineRunner(Runner):
    """A serialized TensorRT engine through `export.trt_runtime.TrtRunner` (tensorrt + a CUDA binding, no torch).

    `timed_run` returns TrtRunner's CUDA-event phases: host-to-device copies, engine compute, device-to-host.
    `precision` is the engine's own (from its sidecar record); asking for another one is refused, since an
    engine's precision is fixed when it is built. `cuda_graph=True` replays the engine as a CUDA graph
    (trtexec 11's default) where the binding supports capture.
    """

    backend = "trt"
    has_device_clock = True

    def __init__(self, engine_path: str | Path, *, precision: str | None = None, name: str | None = None,
                 cuda: str | None = None, cuda_graph: bool = False) -> None:
        from .trt_runtime import import_tensorrt

        self.path = Path(engine_path)
        if not self.path.is_file():
            raise RunnerError(f"{self.path}: engine file not found")
        import_tensorrt()  # TensorRTUnavailable (a MissingDependencyError) names what is missing
        self.record = engine_record(self.path)
        own = self.record.get("precision", "unknown")
        if precision and own != "unknown" and precision != own:
            raise RunnerError(f"{self.path.name} was built for {own}; an engine cannot run as {precision} "
                              f"(build one with `export trt --precision {precision}`)")
        super().__init__(name=name or self.path.stem, device="cuda", precision=precision or own)
        self._cuda, self.cuda_graph = cuda, cuda_graph
        self._runner: Any = None

    def input_specs(self) -> list[TensorSpec]:
        if self._runner is not None and self._active:
            return [TensorSpec(t.name, tuple(t.engine_shape), np.dtype(t.dtype))
                    for t in self._runner.tensors.values() if t.is_input]
        return [TensorSpec(io["name"], tuple(d if d >= 0 else None for d in io["shape"]), np.dtype(io["dtype"]))
                for io in self.record.get("inputs", [])]

    def artifacts(self) -> list[Path]:
        return [self.path]

    def _activate(self) -> None:
        from .trt_runtime import TrtRunner

        self._runner = TrtRunner(self.path, cuda=self._cuda, cuda_graph=self.cuda_graph)
        self._runner.activate()

    def _deactivate(self) -> None:
        self._runner.deactivate()

    def _infer(self, feeds: Feeds) -> dict[str, np.ndarray]:
        return self._runner.infer(dict(feeds))

    def _timed_run(self, feeds: Feeds) -> dict[str, float]:
        phases = self._runner.time_phases(dict(feeds))
        return {"latency_ms": phases["total_ms"], "h2d_ms": phases["h2d_ms"], "compute_ms": phases["compute_ms"],
                "d2h_ms": phases["d2h_ms"]}

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(engine=str(self.path), cuda_graph=self.cuda_graph)
        if self._active:
            info.update(gpu=self._runner.cuda.device_info().get("name"), cuda_binding=self._runner.cuda.name)
        return info

    def _versions(self) -> dict[str, str | None]:
        return {**super()._versions(), "tensorrt": library_version("tensorrt", "tensorrt-cu12", "tensorrt-cu13"),
                "cuda-python": library_version("cuda-python"), "pycuda": library_version("pycuda")}


def artifact_metadata(path: str | Path) -> dict[str, Any]:
    """The export record of an ONNX file, or of the ONNX file an engine was built from; {} for other files."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        from .metadata import read_metadata

        try:
            return read_metadata(path)
        except Exception as exc:  # protobuf raises its own decode errors for files that are not ONNX
            raise RunnerError(f"{path}: not a readable ONNX file ({type(exc).__name__})") from None
    if path.suffix.lower() in ENGINE_SUFFIXES:
        return dict(engine_record(path).get("metadata", {}))
    return {}


def runner_for_file(path: str | Path, **kwargs: Any) -> Runner:
    """An ONNX Runtime CPU runner for `.onnx`, an engine runner for `.engine/.plan/.trt`."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return OrtRunner(path, "cpu", **kwargs)
    if suffix in ENGINE_SUFFIXES:
        return EngineRunner(path, **kwargs)
    raise RunnerError(f"{path}: cannot run a {suffix or 'suffix-less'} file (expected .onnx or .engine/.plan)")

