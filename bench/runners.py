"""Runners for benchmarks: the one runner contract of `export.runners`, plus building runners by backend name.

    runner = make_runner("ort-cpu", onnx="raft.onnx")                           # any ONNX file
    runner = make_runner("torch-cpu", model=model, iters=12)                    # a flow model's own forward
    runner = make_runner("onnxrt", model=model, iters=12, resolution=(384, 512), scratch=folder)  # exported first

Backends and their aliases live in `export.backends` (`BACKENDS`, `resolve_backend`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from export.backends import BACKENDS, Backend, parse_backends, resolve_backend
from export.runners import EngineRunner, OrtRunner, Runner, engine_record
from export.torch_runner import TorchRunner, flow_model_runner
from flownas.errors import ToolkitError

__all__ = ["BACKENDS", "Backend", "BenchError", "EngineRunner", "OrtRunner", "Runner", "TorchRunner", "engine_record",
           "export_temp_onnx", "flow_model_runner", "make_runner", "parse_backends", "resolve_backend"]


class BenchError(ToolkitError, ValueError):
    """A user-facing benchmarking problem (arguments that do not fit together); the message is one line."""


def export_temp_onnx(model: Any, resolution: tuple[int, int], iters: int, folder: str | Path,
                     name: str = "model", batch: int = 1, precision: str = "fp32", int8_format: str = "tensorrt") -> Path:
    """Export `model` with the toolkit's default export (gather lookup) to `folder/<name>.onnx`; in `precision`
    (fp16 / int8: the uniform plan, INT8 calibrated on 8 synthetic pairs in `int8_format`) when not fp32. A speed
    benchmark does not gate on the flow change (accuracy is `export onnx --precision`'s and `verify`'s job)."""
    from export.onnx_export import ExportError, ExportSpec, export_onnx

    path = Path(folder) / f"{name}{'' if precision == 'fp32' else '-' + precision}.onnx"
    spec = ExportSpec(resolution[0], resolution[1], iters, batch=batch)
    try:
        if precision == "fp32":
            export_onnx(model, path, spec)
        else:
            from export.precision_export import export_precision_onnx
            from export.precision_plan import PrecisionPlan
            from export.quantize import CalibrationSet

            export_precision_onnx(model, path, spec, PrecisionPlan.uniform(precision),
                                  CalibrationSet(int8_format=int8_format), max_epe_delta=float("inf"))
    except ExportError as exc:
        raise BenchError(f"cannot export {name} for ONNX Runtime: {exc}") from None
    return path


def make_runner(backend: str, *, onnx: str | Path | None = None, engine: str | Path | None = None,
                model: Any = None, iters: int = 12, threads: int | None = None, precision: str | None = None,
                resolution: tuple[int, int] | None = None, model_name: str | None = None,
                cuda_graph: bool = False, scratch: str | Path | None = None, batch: int = 1) -> Runner:
    """A runner for `backend` (a name or alias), after checking that the given artifacts fit it (one-line errors).

    `trt` needs an engine; `ort-*` an ONNX file, or a flow model (and `resolution`) exported into `scratch`;
    `torch-*` a flow model. A model exported for `ort-*` is exported at `batch`, and in `precision` (int8 in
    ONNX Runtime CPU's format on ort-cpu, TensorRT's elsewhere).
    """
    spec = resolve_backend(backend)
    if cuda_graph and spec.name not in ("torch-cuda", "trt"):
        raise BenchError(f"CUDA graphs apply to backends torch-cuda and trt only, not {spec.name}")
    if spec.runs == "engine":
        if engine is None:
            raise BenchError("backend trt runs a TensorRT engine: give --engine (build one with `export trt`)")
        return EngineRunner(engine, precision=precision, name=model_name, cuda_graph=cuda_graph)
    if spec.runs == "onnx":
        if onnx is None and spec.name != "ort-trt" and precision in ("int8", "fp16"):
            onnx = _export_for(spec, model, resolution, iters, scratch, model_name, batch, precision)
            precision = None  # the exported graph holds its precision
        elif onnx is None:  # ort-trt applies fp16 itself to an fp32 graph
            onnx = _export_for(spec, model, resolution, iters, scratch, model_name, batch)
        return OrtRunner(onnx, spec.provider or "cpu", threads=threads, precision=precision, name=model_name)
    if model is None:
        raise BenchError(f"backend {spec.name} runs PyTorch eager: give --weights or --model "
                         "(an ONNX file or an engine cannot run in PyTorch)")
    return flow_model_runner(model, iters, device=spec.device, threads=threads, precision=precision or "fp32",
                             cuda_graph=cuda_graph, name=model_name)


def _export_for(spec: Backend, model: Any, resolution: tuple[int, int] | None, iters: int,
                scratch: str | Path | None, name: str | None, batch: int = 1, precision: str = "fp32") -> Path:
    if model is None:
        raise BenchError(f"backend {spec.name} needs --onnx, or a model (--weights or --model) to export")
    if resolution is None or scratch is None:
        raise BenchError(f"backend {spec.name}: exporting the model to ONNX needs a resolution and a scratch folder")
    spec.check()  # fail before a long export, not after
    int8_format = "ort-cpu" if spec.name == "ort-cpu" else "tensorrt"
    return export_temp_onnx(model, resolution, iters, scratch, name or "model", batch, precision, int8_format)

