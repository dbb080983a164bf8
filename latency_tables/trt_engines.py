"""TensorRT engines of a key folder: one fp32 engine per key graph and per empty graph, one shared timing cache.

    key_dir/engines/graphs/<key id>.engine (+ .engine.json)   # built from key_dir/graphs/<key id>.onnx
    key_dir/engines/empty/<signature>.engine  (+ .engine.json)
    key_dir/trt-timing.cache                                   # every build loads it and saves it back

Engines are built by `export.tensorrt.build_engine` (TensorRT 10/11 Python API; it imports no torch): fp32 with
BuilderFlag.TF32 cleared, the timing cache created with `config.create_timing_cache(bytes)` and attached with
`config.set_timing_cache(cache, ignore_mismatch=False)` (tactic timings from another GPU or TensorRT version must
not steer the choice), and serialised atomically after every build, so an interrupted run resumes with every
tactic timed so far. An engine is published atomically and its JSON record after it: an engine with its record is
never built again; one without (a build killed in between) is rebuilt. Hundreds of small graphs share most
tactics (the same convolution shapes recur), which is what makes the shared cache worth it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from flownas.errors import MissingDependencyError

ENGINES_DIR = "engines"
TIMING_CACHE = "trt-timing.cache"
ENGINE_SUFFIX = ".engine"
WORKSPACE_MB = 1024  # one block or decoder graph: far below this; a smaller pool leaves fewer tactics out


def timing_cache_path(key_dir: str | os.PathLike) -> Path:
    """The one timing cache every engine build of `key_dir` shares."""
    return Path(key_dir) / TIMING_CACHE


def engine_path(key_dir: str | os.PathLike, onnx_file: str) -> Path:
    """Where the engine of the manifest's graph file `onnx_file` ("graphs/<id>.onnx") lives."""
    return Path(key_dir) / ENGINES_DIR / Path(onnx_file).with_suffix(ENGINE_SUFFIX)  # ids keep their dots


def check_trt() -> dict[str, Any]:
    """TensorRT 10/11, a CUDA Python binding and a GPU, or MissingDependencyError (one line); returns the GPU's
    description ({"name", "compute_capability", ...}). Run before any file is written."""
    from export.trt_runtime import TensorRTUnavailable, cuda_backend, import_tensorrt

    try:
        trt = import_tensorrt()
        backend = cuda_backend()  # names every binding tried and why it failed
    except TensorRTUnavailable as exc:  # a MissingDependencyError: say which backend needed it
        raise TensorRTUnavailable(f"backend trt: {exc}") from None
    try:
        info = dict(backend.device_info())
    except RuntimeError as exc:  # CudaError: a binding that loads but finds no usable device
        raise MissingDependencyError(f"backend trt: no usable NVIDIA GPU ({exc})") from None
    finally:
        backend.close()
    info["tensorrt"] = str(trt.__version__)
    return info


def engine_is_built(engine: Path) -> bool:
    """An engine counts as built when it and its record exist (the record is written last)."""
    from export.tensorrt import engine_sidecar_path

    return engine.is_file() and engine_sidecar_path(engine).is_file()


def check_engine_record(engine: Path, gpu: dict[str, Any], precision: str = "fp32") -> None:
    """Refuse an engine built on another GPU or TensorRT version (it would not load, or time other tactics)."""
    from export.tensorrt import engine_sidecar_path

    from .measure import LatencyTableError

    record = json.loads(engine_sidecar_path(engine).read_text())
    built = (record.get("device"), record.get("tensorrt_version"), record.get("precision"))
    wanted = (gpu.get("name"), gpu.get("tensorrt"), precision)
    if built != wanted:
        raise LatencyTableError(f"{engine}: built as (GPU, TensorRT, precision) {built}, this run has {wanted}; "
                                f"delete {engine.parents[1]} and {TIMING_CACHE} to rebuild the engines")


def ensure_engine(key_dir: str | os.PathLike, onnx_file: str, gpu: dict[str, Any],
                  workspace_mb: int = WORKSPACE_MB, precision: str = "fp32") -> Path:
    """The engine of `onnx_file`, built (shared timing cache) unless already built; returns its path. `precision`:
    the key graph's (an fp32 graph builds in fp32, TF32 off; a lowered graph strongly typed, as written)."""
    from export.tensorrt import build_engine

    key_dir = Path(key_dir)
    engine = engine_path(key_dir, onnx_file)
    if engine_is_built(engine):
        check_engine_record(engine, gpu, precision)
        return engine
    engine.parent.mkdir(parents=True, exist_ok=True)
    build_engine(key_dir / onnx_file, engine, precision="fp32", workspace_mb=workspace_mb,
                 timing_cache=timing_cache_path(key_dir), metadata={"latency_key_graph": onnx_file})
    return engine
