"""Build TensorRT engines from ONNX files, with a JSON record of how each engine was made.

Written against the TensorRT 10 / 11 Python API (docs.nvidia.com/deeplearning/tensorrt, "Python API
Documentation" and the 10.x -> 11.x migration guide):

* fp32 builds parse into a plain network and clear TF32 (enabled by default, it rounds FP32 inner products to
  10-bit mantissas), so "fp32" means IEEE fp32;
* fp16 builds rewrite the ONNX with explicit casts (`export.precision.to_fp16_strongly_typed`) and parse it
  into a STRONGLY_TYPED network. TensorRT 11 removed BuilderFlag.FP16/BF16/INT8 and the calibrators, so this
  is the only route there; using it on 10 as well gives one behaviour: the types written in the graph are the
  types that run, and coordinates, correlation and GridSample stay fp32.

`build_verified_engine` is what `export trt` runs: build to a temporary file, check the engine against ONNX
Runtime CPU at shapes inside its profile, and only then publish the engine and its record.
`tensorrt` is imported inside the functions that need it: this module imports on machines without it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import onnx

from flownas.errors import UserInputError
from flownas.fileio import atomic_write_bytes, atomic_write_text
from flownas.provenance import provenance

from .metadata import decode_metadata
from .precision import PRECISION_KEY, PRECISION_VALUE, fp16_summary, to_fp16_strongly_typed
from .trt_runtime import TensorRTUnavailable, gpu_info, import_tensorrt

__all__ = ["ShapeProfile", "TensorRTUnavailable", "build_engine", "build_verified_engine", "engine_sidecar_path",
           "parse_shape_spec", "profiles_from_specs", "read_engine_record", "validate_profiles",
           "verification_points"]

PRECISIONS = ("fp32", "fp16")
DEFAULT_TOLERANCE_EPE = {"fp32": 1e-3, "fp16": 5e-2}  # px: fp32 as the ONNX export check; fp16 rounds more
MIN_VERIFY_SIDE = 32  # px: the synthetic verification pairs (flownas.data.synthetic.make_pair) need 32x32
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShapeProfile:
    """Shapes one input may take in an engine: TensorRT's optimization profile (min <= opt <= max per axis)."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def __post_init__(self) -> None:
        for field in ("min", "opt", "max"):
            object.__setattr__(self, field, tuple(int(d) for d in getattr(self, field)))
        if not len(self.min) == len(self.opt) == len(self.max):
            raise ValueError(f"profile ranks differ: min {self.min}, opt {self.opt}, max {self.max}")
        if any(d < 1 for d in self.min) or not all(a <= b <= c for a, b, c in zip(self.min, self.opt, self.max)):
            raise ValueError(f"profile needs 1 <= min <= opt <= max per axis: min {self.min}, opt {self.opt}, "
                             f"max {self.max}")

    @classmethod
    def fixed(cls, shape: tuple[int, ...]) -> "ShapeProfile":
        return cls(shape, shape, shape)

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def parse_shape_spec(spec: str) -> dict[str, tuple[int, ...]]:
    """`"image1:1x3x384x512,image2:1x3x384x512"` -> `{"image1": (1, 3, 384, 512), ...}`.

    Same syntax as trtexec's --minShapes/--optShapes/--maxShapes/--shapes: comma-separated `name:dims`,
    dims joined by `x`; a name containing ':' is written in single quotes (`'input:0':1x3x8x8`).
    Errors are one line naming the bad piece.
    """
    if not spec or not spec.strip():
        raise ValueError("empty shape spec: expected name:DxDx...[,name:DxDx...], e.g. image1:1x3x384x512")
    shapes: dict[str, tuple[int, ...]] = {}
    for raw in spec.split(","):
        piece = raw.strip()
        name, sep, dims = piece.rpartition(":")
        name = name.strip().strip("'\"")
        if not sep or not name:
            raise ValueError(f"bad shape spec piece {piece!r}: expected name:DxDx..., e.g. image1:1x3x384x512")
        if name in shapes:
            raise ValueError(f"bad shape spec piece {piece!r}: input {name!r} is given twice")
        shapes[name] = tuple(_positive_dim(piece, dim) for dim in dims.split("x"))
    return shapes


def _positive_dim(piece: str, dim: str) -> int:
    if not dim.strip().isdigit() or int(dim) < 1:
        raise ValueError(f"bad shape spec piece {piece!r}: dimension {dim!r} is not a positive integer")
    return int(dim)


def profiles_from_specs(min_shapes: str, opt_shapes: str | None = None,
                        max_shapes: str | None = None) -> dict[str, ShapeProfile]:
    """Profiles from three trtexec-style specs; a missing opt/max spec repeats the min shapes."""
    low = parse_shape_spec(min_shapes)
    opt = parse_shape_spec(opt_shapes) if opt_shapes else low
    high = parse_shape_spec(max_shapes) if max_shapes else low
    if not set(low) == set(opt) == set(high):
        raise ValueError(f"min/opt/max shape specs name different inputs: {sorted(low)}, {sorted(opt)}, "
                         f"{sorted(high)}")
    return {name: ShapeProfile(low[name], opt[name], high[name]) for name in low}


def validate_profiles(input_shapes: dict[str, tuple[int, ...]],
                      profiles: dict[str, ShapeProfile]) -> dict[str, ShapeProfile]:
    """Check profiles against a network's inputs (`-1` marks a dynamic axis); returns the profiles to set.

    Every dynamic input needs a profile; profiles may not name unknown inputs, must have the input's rank
    and must keep fixed axes at their size.
    """
    unknown = sorted(set(profiles) - set(input_shapes))
    if unknown:
        raise ValueError(f"profiles for unknown inputs {unknown}; the network's inputs are {sorted(input_shapes)}")
    missing = [f"{name} {tuple(shape)}" for name, shape in input_shapes.items()
               if any(d < 0 for d in shape) and name not in profiles]
    if missing:
        raise ValueError(f"dynamic inputs need shape profiles (min/opt/max): {', '.join(missing)}")
    for name, profile in profiles.items():
        shape = tuple(input_shapes[name])
        if len(profile.min) != len(shape):
            raise ValueError(f"profile for {name} has rank {len(profile.min)}, the input has shape {shape}")
        for axis, dim in enumerate(shape):
            if dim >= 0 and {profile.min[axis], profile.opt[axis], profile.max[axis]} != {dim}:
                raise ValueError(f"profile for {name} varies axis {axis}, which the network fixes at {dim}")
    return dict(profiles)


def engine_sidecar_path(engine_path: str | os.PathLike) -> Path:
    """Where the JSON record of an engine lives: `<engine>.json` next to it (`raft.engine.json`)."""
    return Path(f"{os.fspath(engine_path)}.json")


def read_engine_record(engine_path: str | os.PathLike) -> dict[str, Any]:
    """The sidecar record `build_engine` wrote for this engine."""
    return json.loads(engine_sidecar_path(engine_path).read_text())


def build_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, *, precision: str = "fp32",
                 profiles: dict[str, ShapeProfile] | None = None, workspace_mb: int = 4096,
                 timing_cache: str | os.PathLike | None = None,
                 metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build `engine_path` from `onnx_path` and write its record to `engine_sidecar_path(engine_path)`.

    `profiles` maps input names to `ShapeProfile`s (needed for every dynamic input); `timing_cache` is a file
    loaded if present and saved after the build. The record holds TensorRT version, GPU, precision,
    profiles, input/output names and dtypes, the ONNX metadata_props merged with `metadata`, build time,
    UTC date and toolkit version; it is returned. Raises `TensorRTUnavailable` (one line) without
    TensorRT or an NVIDIA GPU.
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    cache_path = Path(timing_cache) if timing_cache is not None else None
    _check_arguments(onnx_path, precision, workspace_mb)
    trt = import_tensorrt()
    gpu = _gpu_record()
    start = time.perf_counter()
    model = onnx.load(str(onnx_path))
    onnx_meta = decode_metadata(model)
    model_bytes, summary = _network_source(model, onnx_path, precision)
    strongly_typed = precision == "fp16" or _major(trt) >= 11
    serialized, inputs, outputs, used_profiles = _build(
        trt, model_bytes, onnx_path, precision, profiles or {}, workspace_mb, cache_path)
    build_time_s = round(time.perf_counter() - start, 3)
    # Drop the old record first: an engine must never sit next to a record describing another build.
    engine_sidecar_path(engine_path).unlink(missing_ok=True)
    atomic_write_bytes(engine_path, bytes(serialized))
    record = {
        "engine": engine_path.name, "engine_size_bytes": engine_path.stat().st_size,
        "engine_sha256": _sha256(engine_path), "onnx": str(onnx_path), "onnx_sha256": _sha256(onnx_path),
        "precision": precision, "strongly_typed": strongly_typed, "tf32": False, "precision_summary": summary,
        "tensorrt_version": str(trt.__version__), "gpu": gpu,
        "profiles": {name: p.to_dict() for name, p in used_profiles.items()},
        "inputs": inputs, "outputs": outputs, "workspace_mb": workspace_mb,
        "timing_cache": str(cache_path) if cache_path else None,
        "metadata": {**onnx_meta, **(metadata or {})},
        "build_time_s": build_time_s,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "toolkit_version": _toolkit_version(),
    }
    # default=str: caller metadata may hold paths or numpy scalars; the record must still be written.
    record = json.loads(json.dumps(record, default=str))
    atomic_write_bytes(engine_sidecar_path(engine_path), json.dumps(record, indent=2, sort_keys=True).encode())
    return record


def _check_arguments(onnx_path: Path, precision: str, workspace_mb: int) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if workspace_mb < 1:
        raise ValueError(f"workspace_mb must be positive, got {workspace_mb}")
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {onnx_path}")


def _gpu_record() -> dict[str, Any]:
    """GPU name and compute capability via cuda-python / pycuda, else torch.cuda; no GPU -> TensorRTUnavailable."""
    info = gpu_info()
    if info is None:
        info = _torch_gpu()
    if info is None:
        raise TensorRTUnavailable("no NVIDIA GPU found through cuda-python, pycuda or torch.cuda; "
                                  "engine building needs one")
    return info


def _torch_gpu() -> dict[str, Any] | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return {"name": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}", "index": 0,
            "cuda_binding": "torch"}


def _network_source(model: onnx.ModelProto, onnx_path: Path, precision: str) -> tuple[bytes, dict | None]:
    """The ONNX bytes TensorRT parses for this precision, and the fp16/fp32 node summary for fp16."""
    rewritten = decode_metadata(model).get(PRECISION_KEY) == PRECISION_VALUE
    if precision == "fp32":
        if rewritten:
            raise ValueError(f"{onnx_path} was rewritten for fp16 ({PRECISION_KEY} = {PRECISION_VALUE}); "
                             "build it with precision='fp16' or give the fp32 original")
        return onnx_path.read_bytes(), None
    half = model if rewritten else to_fp16_strongly_typed(model)
    return half.SerializeToString(), fp16_summary(half)


def _build(trt: Any, model_bytes: bytes, onnx_path: Path, precision: str, profiles: dict[str, ShapeProfile],
           workspace_mb: int, cache_path: Path | None) -> tuple[Any, list[dict], list[dict], dict]:
    """Parse, configure and build; returns the serialized engine, IO descriptions and profiles used."""
    logger = _capturing_logger(trt)
    try:  # without a usable GPU the binding's factory returns nullptr, which pybind11 reports as TypeError
        builder = trt.Builder(logger)
    except (TypeError, RuntimeError) as exc:
        builder, logger.errors = None, [*logger.errors, " ".join(str(exc).split())]
    if builder is None:
        raise TensorRTUnavailable("TensorRT could not create a builder (no usable NVIDIA GPU?): "
                                  + " | ".join(logger.errors))
    network = builder.create_network(_network_flags(trt, strongly_typed=precision == "fp16"))
    parser = trt.OnnxParser(network, logger)
    # parse(model, path): the path lets the parser find external weight files next to the ONNX file.
    if not parser.parse(model_bytes, str(onnx_path)):
        errors = [" ".join(str(parser.get_error(i)).split()) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT could not parse {onnx_path} ({len(errors)} errors):\n" + "\n".join(errors))
    inputs = [_describe(trt, network.get_input(i)) for i in range(network.num_inputs)]
    outputs = [_describe(trt, network.get_output(i)) for i in range(network.num_outputs)]
    used = validate_profiles({io["name"]: tuple(io["shape"]) for io in inputs}, profiles)
    config = _builder_config(trt, builder, used, workspace_mb)
    _attach_timing_cache(config, cache_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path}: "
                           + (" | ".join(logger.errors) or "no error was logged"))
    if cache_path is not None:
        atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))
    return serialized, inputs, outputs, used


def _network_flags(trt: Any, strongly_typed: bool) -> int:
    # 1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED), as the Builder docs write it. In TensorRT 11 the
    # flag is deprecated and ignored (networks are always strongly typed), so a missing member means the same.
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 1 << int(flag) if strongly_typed and flag is not None else 0


def _builder_config(trt: Any, builder: Any, profiles: dict[str, ShapeProfile], workspace_mb: int) -> Any:
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb * (1 << 20))
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 tensors compute in IEEE fp32, not TF32
    if profiles:
        profile = builder.create_optimization_profile()
        for name, shape in profiles.items():
            profile.set_shape(name, shape.min, shape.opt, shape.max)
        if config.add_optimization_profile(profile) < 0:
            raise ValueError(f"TensorRT rejected the optimization profile {[p.to_dict() for p in profiles.values()]}")
    return config


def _attach_timing_cache(config: Any, cache_path: Path | None) -> None:
    """Load a serialized timing cache (as NVIDIA's samples/python/common.py setup_timing_cache does)."""
    if cache_path is None:
        return
    data = cache_path.read_bytes() if cache_path.is_file() else b""
    cache = config.create_timing_cache(data)
    # ignore_mismatch=False: timings measured on another GPU or TensorRT version must not steer tactics.
    if config.set_timing_cache(cache, ignore_mismatch=False) is False:
        _log.warning("timing cache %s does not match this GPU/TensorRT; starting an empty one", cache_path)
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def _capturing_logger(trt: Any) -> Any:
    """A TensorRT logger that keeps errors for exception messages and forwards warnings to `logging`."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)  # required when subclassing ILogger (Python API docs, "The Build Phase")
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(" ".join(str(msg).split()))
            elif severity == trt.ILogger.Severity.WARNING:
                _log.warning("TensorRT: %s", msg)

    return _Logger()


def _describe(trt: Any, tensor: Any) -> dict[str, Any]:
    return {"name": tensor.name, "dtype": _dtype_name(trt, tensor.dtype), "shape": [int(d) for d in tensor.shape]}


def _dtype_name(trt: Any, dtype: Any) -> str:
    """numpy's name for a TensorRT dtype (float32, float16, int32...), TensorRT's own for types numpy lacks."""
    try:
        return np.dtype(trt.nptype(dtype)).name
    except (TypeError, KeyError):
        return str(getattr(dtype, "name", dtype)).lower()


def _major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


def _toolkit_version() -> str:
    import flownas

    return flownas.__version__


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
