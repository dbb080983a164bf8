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
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import onnx

from flownas.errors import UserInputError
from flownas.fileio import atomic_write_bytes, atomic_write_text
from flownas.provenance import provenance

from .metadata import decode_metadata
from .precision import PRECISION_KEY, PRECISION_VALUE, fp16_summary, to_fp16_strongly_typed
from .profiles import ShapeProfile, parse_shape_spec, profiles_from_specs, validate_profiles  # noqa: F401
from .trt_runtime import TensorRTUnavailable, gpu_info, import_tensorrt

__all__ = ["ShapeProfile", "TensorRTUnavailable", "build_engine", "build_verified_engine", "engine_sidecar_path",
           "parse_shape_spec", "profiles_from_specs", "read_engine_record", "validate_profiles",
           "verification_points"]

PRECISIONS = ("fp32", "fp16")
DEFAULT_TOLERANCE_EPE = {"fp32": 1e-3, "fp16": 5e-2}  # px: fp32 as the ONNX export check; fp16 rounds more
MIN_VERIFY_SIDE = 32  # px: the synthetic verification pairs (flownas.data.synthetic.make_pair) need 32x32
_log = logging.getLogger(__name__)


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
    loaded if present and saved after the build. The record is the toolkit's provenance record (kind "engine":
    arch id, resolution, iterations from the ONNX record, precision, GPU, versions, creation date) plus
    TensorRT version, profiles, input/output names and dtypes, the ONNX metadata_props merged with
    `metadata` and the build time; it is returned. Raises `TensorRTUnavailable` (one line) without
    TensorRT or an NVIDIA GPU. The engine is not run: `build_verified_engine` checks it before publishing.
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    cache_path = Path(timing_cache) if timing_cache is not None else None
    _check_arguments(onnx_path, precision, workspace_mb)
    trt = import_tensorrt()
    gpu = _gpu_record()
    start = time.perf_counter()
    model = onnx.load(str(onnx_path))
    onnx_meta = decode_metadata(model)
    planned = onnx_meta.get("precision") if "precision_plan" in onnx_meta else None
    model_bytes, summary = _network_source(model, onnx_path, precision)
    # A precision-plan graph carries its own casts and Q/DQ: TensorRT builds it strongly typed, as written.
    strongly_typed = precision == "fp16" or planned is not None or _major(trt) >= 11
    serialized, inputs, outputs, used_profiles = _build(
        trt, model_bytes, onnx_path, precision, profiles or {}, workspace_mb, cache_path, strongly_typed)
    build_time_s = round(time.perf_counter() - start, 3)
    # Drop the old record first: an engine must never sit next to a record describing another build.
    engine_sidecar_path(engine_path).unlink(missing_ok=True)
    atomic_write_bytes(engine_path, bytes(serialized))
    meta = {**onnx_meta, **(metadata or {})}
    record = provenance(
        "engine", arch_id=meta.get("arch_id"), resolution=_resolution(meta), iters=_int_or_none(meta.get("iters")),
        precision=planned or precision, backend="tensorrt", device=gpu.get("name"), extra={
            "engine": engine_path.name, "engine_size_bytes": engine_path.stat().st_size,
            "engine_sha256": _sha256(engine_path), "onnx": str(onnx_path), "onnx_sha256": _sha256(onnx_path),
            "strongly_typed": strongly_typed, "tf32": False, "precision_summary": summary,
            "tensorrt_version": str(trt.__version__), "gpu": gpu,
            "profiles": {name: p.to_dict() for name, p in used_profiles.items()},
            "inputs": inputs, "outputs": outputs, "workspace_mb": workspace_mb,
            "timing_cache": str(cache_path) if cache_path else None, "metadata": meta,
            "build_time_s": build_time_s})
    # default=str: caller metadata may hold paths or numpy scalars; the record must still be written.
    record = json.loads(json.dumps(record, default=str))
    atomic_write_text(engine_sidecar_path(engine_path), json.dumps(record, indent=2, sort_keys=True))
    return record


def build_verified_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, *, precision: str = "fp32",
                          profiles: dict[str, ShapeProfile] | None = None, workspace_mb: int = 4096,
                          timing_cache: str | os.PathLike | None = None, tolerance_epe: float | None = None,
                          real_pair: str | os.PathLike | None = None, cuda_graph: bool = False,
                          metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build a flow engine, check it against ONNX Runtime CPU, and only then write `engine_path` and its record.

    The engine is built to a temporary file beside `engine_path` and run (`TrtRunner`, with `cuda_graph`) on
    the verification pairs (seeded synthetic pairs, plus the real pair in the `real_pair` folder when given) at
    every shape of `verification_points`: profile min, opt and max, or the fixed shape, so no shape is checked
    that the engine does not accept. Its flow (`[B,2,H,W]`) is compared with `onnx_path`'s on ONNX Runtime CPU;
    `tolerance_epe` (px) defaults to `DEFAULT_TOLERANCE_EPE[precision]`. On success the engine is renamed to
    `engine_path` and the record (`build_engine`'s plus `verification`) written beside it and returned. On any
    failure (a verification above tolerance, an exception, KeyboardInterrupt) no new file is left behind, and a
    previous engine at `engine_path` is left as it was; the timing cache, a cache of measurements, is kept.
    """
    from .verify import VerificationError

    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    _check_arguments(onnx_path, precision, workspace_mb)
    planned = _plan_label(Path(onnx_path))
    if tolerance_epe is None and planned is not None:  # a precision-plan graph: TensorRT's INT8/FP16 kernels vs ORT's
        from .precision_export import DEFAULT_MAX_EPE_DELTA

        tolerance_epe = DEFAULT_MAX_EPE_DELTA.get(planned, DEFAULT_MAX_EPE_DELTA["int8"])
    tolerance = DEFAULT_TOLERANCE_EPE[precision] if tolerance_epe is None else float(tolerance_epe)
    if not tolerance >= 0:
        raise UserInputError(f"tolerance_epe must be a non-negative number of px, got {tolerance_epe!r}")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{engine_path.name}.", suffix=".tmp", dir=engine_path.parent)
    os.close(handle)
    tmp, published = Path(name), False
    try:
        record = build_engine(onnx_path, tmp, precision=precision, profiles=profiles, workspace_mb=workspace_mb,
                              timing_cache=timing_cache, metadata=metadata)
        points = verification_points(record["inputs"], record["profiles"])
        checks = _verify_engine(onnx_path, tmp, points, tolerance, real_pair, cuda_graph)
        record.update(engine=engine_path.name, verification={
            "reference": "onnxruntime-cpu", "cuda_graph": cuda_graph, "tolerance_epe": tolerance,
            "ok": all(c["ok"] for c in checks.values()), "shapes": checks})
        if not record["verification"]["ok"]:
            worst = max(checks, key=lambda k: checks[k]["max_epe"])
            raise VerificationError(f"{engine_path}: engine flow differs from ONNX Runtime at {worst} (max EPE "
                                    f"{checks[worst]['max_epe']:.2e} px > {tolerance:g} px); no engine written")
        engine_sidecar_path(engine_path).unlink(missing_ok=True)
        os.replace(tmp, engine_path)
        published = True
        atomic_write_text(engine_sidecar_path(engine_path), json.dumps(record, indent=2, sort_keys=True))
    except BaseException:
        for leftover in (tmp, engine_sidecar_path(tmp), *((engine_path,) if published else ())):
            leftover.unlink(missing_ok=True)
        raise
    engine_sidecar_path(tmp).unlink(missing_ok=True)
    return record


def verification_points(inputs: list[dict[str, Any]],
                        profiles: Mapping[str, Mapping[str, list[int]]]) -> list[tuple[int, int, int]]:
    """(batch, height, width) shapes at which to check a flow engine, all inside what it accepts.

    `inputs` and `profiles` are as in `build_engine`'s record: the flow graphs take `image1` and `image2`
    `[B,3,H,W]`. With profiles: their min, opt and max (in that order, duplicates dropped); else the fixed shape.
    """
    shapes = {io["name"]: tuple(io["shape"]) for io in inputs}
    if not {"image1", "image2"} <= set(shapes) or len(shapes["image1"]) != 4:
        raise UserInputError(f"verification runs flow graphs (inputs image1, image2 [B,3,H,W]); this engine has "
                             f"inputs {', '.join(f'{n} {list(s)}' for n, s in shapes.items())}")
    if "image1" in profiles:
        if profiles.get("image2") != profiles["image1"]:
            raise UserInputError(f"image1 and image2 need the same profile, got {dict(profiles.get('image2', {}))} "
                                 f"and {dict(profiles['image1'])}")
        candidates = [tuple(profiles["image1"][k]) for k in ("min", "opt", "max")]
    else:
        candidates = [shapes["image1"]]
    points = list(dict.fromkeys((int(s[0]), int(s[2]), int(s[3])) for s in candidates))
    small = [p for p in points if min(p[1:]) < MIN_VERIFY_SIDE]
    if small:
        raise UserInputError(f"profile shape {small[0][1]}x{small[0][2]} is below the {MIN_VERIFY_SIDE}x"
                             f"{MIN_VERIFY_SIDE} px the verification pairs need; raise --min")
    return points


def _verify_engine(onnx_path: Path, engine_path: Path, points: list[tuple[int, int, int]], tolerance: float,
                   real_pair: str | os.PathLike | None, cuda_graph: bool) -> dict[str, dict[str, Any]]:
    """{"BxHxW": VerifyReport.to_dict()} for the engine vs ONNX Runtime CPU; the engine runner is deactivated
    when the comparison ends, also on errors."""
    import onnxruntime as ort

    from .trt_runtime import TrtRunner
    from .verify import verification_pairs, verify

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    checks = {}
    with TrtRunner(engine_path, cuda_graph=cuda_graph) as runner:
        for batch, height, width in points:
            reference = _batched_flow_fn(lambda feeds: session.run(["flow"], feeds)[0], batch)
            candidate = _batched_flow_fn(lambda feeds: runner.infer(feeds)["flow"], batch)
            report = verify(reference, candidate, verification_pairs(height, width, real_pair), tolerance)
            checks[f"{batch}x{height}x{width}"] = report.to_dict()
    return checks


def _batched_flow_fn(infer: Callable[[dict[str, np.ndarray]], np.ndarray], batch: int) -> Callable:
    """A verify() flow function: the pair repeated `batch` times, flow `[B,2,H,W]` -> `[H, B*W, 2]` so that
    every batch element is compared."""
    def flow(image1: np.ndarray, image2: np.ndarray) -> np.ndarray:
        feeds = {name: np.ascontiguousarray(np.repeat(im.transpose(2, 0, 1)[None], batch, 0), np.float32)
                 for name, im in (("image1", image1), ("image2", image2))}
        out = np.asarray(infer(feeds))
        return out.transpose(2, 0, 3, 1).reshape(out.shape[2], -1, 2)

    return flow


def _resolution(meta: Mapping[str, Any]) -> tuple[int, int] | None:
    """[H, W] from the ONNX record (`resolution`, else `export_height`/`export_width`), when it has one."""
    value = meta.get("resolution") or [meta.get("export_height"), meta.get("export_width")]
    pair = [_int_or_none(v) for v in value] if isinstance(value, (list, tuple)) and len(value) == 2 else []
    return (pair[0], pair[1]) if len(pair) == 2 and None not in pair else None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _check_arguments(onnx_path: Path, precision: str, workspace_mb: int) -> None:
    if precision not in PRECISIONS:
        raise UserInputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if workspace_mb < 1:
        raise UserInputError(f"workspace_mb must be positive, got {workspace_mb}")
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {onnx_path}")
    from .metadata import read_metadata

    if read_metadata(onnx_path).get("int8_format") == "ort-cpu":  # before TensorRT is even imported
        raise UserInputError(f"{onnx_path}: INT8 written for ONNX Runtime CPU (uint8 activations); TensorRT has no "
                             "UINT8 Q/DQ: export it again with --int8-format tensorrt")


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


def _plan_label(onnx_path: Path) -> str | None:
    """"int8" / "fp16" / "mixed" for a graph written by `export onnx --precision`, None otherwise."""
    try:
        meta = decode_metadata(onnx.load(str(onnx_path), load_external_data=False))
    except Exception:  # a missing or broken file is reported by the build with its name
        return None
    return str(meta.get("precision") or "mixed") if "precision_plan" in meta else None


def _network_source(model: onnx.ModelProto, onnx_path: Path, precision: str) -> tuple[bytes, dict | None]:
    """The ONNX bytes TensorRT parses for this precision, and the fp16/fp32 node summary for fp16.

    A graph written by `export onnx --precision` (INT8 Q/DQ, FP16 casts per its plan) is parsed as it is."""
    meta = decode_metadata(model)
    if "precision_plan" in meta:
        return onnx_path.read_bytes(), {"precision_plan": meta["precision_plan"], "precision": meta.get("precision")}
    rewritten = meta.get(PRECISION_KEY) == PRECISION_VALUE
    if precision == "fp32":
        if rewritten:
            raise ValueError(f"{onnx_path} was rewritten for fp16 ({PRECISION_KEY} = {PRECISION_VALUE}); "
                             "build it with precision='fp16' or give the fp32 original")
        return onnx_path.read_bytes(), None
    half = model if rewritten else to_fp16_strongly_typed(model)
    return half.SerializeToString(), fp16_summary(half)


def _build(trt: Any, model_bytes: bytes, onnx_path: Path, precision: str, profiles: dict[str, ShapeProfile],
           workspace_mb: int, cache_path: Path | None, strongly_typed: bool | None = None
           ) -> tuple[Any, list[dict], list[dict], dict]:
    """Parse, configure and build; returns the serialized engine, IO descriptions and profiles used."""
    logger = _capturing_logger(trt)
    try:  # without a usable GPU the binding's factory returns nullptr, which pybind11 reports as TypeError
        builder = trt.Builder(logger)
    except (TypeError, RuntimeError) as exc:
        builder, logger.errors = None, [*logger.errors, " ".join(str(exc).split())]
    if builder is None:
        raise TensorRTUnavailable("TensorRT could not create a builder (no usable NVIDIA GPU?): "
                                  + " | ".join(logger.errors))
    typed = precision == "fp16" if strongly_typed is None else strongly_typed
    network = builder.create_network(_network_flags(trt, strongly_typed=typed))
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
