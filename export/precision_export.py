"""Reduced-precision ONNX exports, verified against FP32 PyTorch like every export (verified or nothing).

    from export.precision_export import export_precision_onnx
    result = export_precision_onnx(model, "m-int8.onnx", ExportSpec(384, 512, 12), PrecisionPlan.uniform("int8"),
                                   CalibrationSet("synthetic", pairs=8), max_epe_delta=0.5)

The FP32 graph is exported to scratch, rewritten by the plan (`export.quantize.apply_plan`), checked with
`onnx.checker` (full_check), run on ONNX Runtime CPU and compared with the FP32 PyTorch model on the
verification pairs (seeded synthetic, plus the real pair when given; disjoint from the calibration pairs).
The flow's end-point distance to PyTorch's ("EPE delta") bounds the change of EPE against any ground truth
(triangle inequality), so it is the gate: above `max_epe_delta` nothing is written.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx

from flownas.fileio import atomic_path, atomic_write_text, scratch_dir

from .onnx_export import ExportError, ExportSpec, export_onnx
from .precision_plan import PrecisionPlan
from .quantize import CalibrationSet, apply_plan, check_plan_writable, calibration_pairs, precision_summary, save_model
from .verify import Pair, VerificationError, compare_flows, verification_pairs

Log = Callable[[str], None]
# px, flow end-point distance to FP32 PyTorch: fp32 as `export onnx`; fp16 as `export trt --precision fp16`.
DEFAULT_MAX_EPE_DELTA = {"fp32": 1e-3, "fp16": 5e-2, "bf16": 1e-1, "int8": 5e-1}


def _quiet(_: str) -> None:
    """Library calls print nothing unless given a log function."""


def default_max_epe_delta(plan: PrecisionPlan) -> float:
    """The loosest default among the plan's precisions (an INT8 group dominates the error)."""
    return max(DEFAULT_MAX_EPE_DELTA[p] for p in plan.precisions())


@dataclass
class PlanCheck:
    """A rewritten graph's flows against FP32 PyTorch: per-pair EPE delta, the max, the graph's summary."""

    plan: dict[str, str]
    pairs: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def max_epe_delta(self) -> float:
        return max(self.pairs.values()) if self.pairs else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan, "max_epe_delta": self.max_epe_delta, "pairs": self.pairs, "summary": self.summary}


class FlowReference:
    """FP32 PyTorch flows of a model on fixed pairs, computed once and reused for every candidate graph."""

    def __init__(self, model: Any, iters: int, pairs: Sequence[Pair]) -> None:
        from .torch_runner import flow_model_runner
        from .verify import runner_flow_fn

        self.pairs = list(pairs)
        with flow_model_runner(model, iters, name="pytorch-fp32") as runner:
            flow = runner_flow_fn(runner)
            self.flows = [flow(a, b) for _, a, b in self.pairs]

    def check(self, onnx_path: Path) -> dict[str, float]:
        """EPE delta (px) of the ONNX graph on ONNX Runtime CPU against the reference, per pair."""
        from .runners import OrtRunner
        from .verify import runner_flow_fn

        with OrtRunner(onnx_path, "cpu") as runner:
            flow = runner_flow_fn(runner)
            return {name: compare_flows(ref, flow(a, b))[1] for (name, a, b), ref in zip(self.pairs, self.flows)}


def plan_graph(fp32_model: onnx.ModelProto, plan: PrecisionPlan, calibration: Sequence[Pair],
               settings: CalibrationSet) -> onnx.ModelProto:
    """The FP32 graph rewritten by `plan` (INT8 calibrated on `calibration` with `settings`' method and format),
    fully checked (an invalid graph raises here, not in a runtime)."""
    model = apply_plan(fp32_model, plan, calibration, settings.method, settings.int8_format, settings.weights_7bit())
    onnx.checker.check_model(model, full_check=True)
    return model


@dataclass
class PrecisionExportResult:
    path: Path
    record: dict[str, Any]
    check: PlanCheck


def export_precision_onnx(model: Any, out_path: str | os.PathLike, spec: ExportSpec, plan: PrecisionPlan,
                          calibration: CalibrationSet | None = None, *, max_epe_delta: float | None = None,
                          real_pair: str | os.PathLike | None = None, n_synthetic: int = 2,
                          source: str | None = None, log: Log = _quiet) -> PrecisionExportResult:
    """Export `model` in `plan`'s precisions to `out_path` (+ `.json` record) if its EPE delta stays in bounds.

    `calibration` (default: 8 synthetic pairs, min-max) is drawn at the export resolution. The record names the
    plan, the calibration set (its sample ids) and the verification. Above `max_epe_delta` (default
    `default_max_epe_delta(plan)`) a VerificationError is raised and neither file is written.
    """
    spec.validate()
    check_plan_writable(plan)
    if spec.dynamic:
        raise ExportError("reduced-precision exports are static: calibration and verification use the "
                                "export resolution; drop --dynamic")
    calibration = calibration or CalibrationSet()
    tolerance = default_max_epe_delta(plan) if max_epe_delta is None else float(max_epe_delta)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    calib = calibration_pairs(calibration, spec.height, spec.width) if "int8" in plan.precisions() else []
    start = time.perf_counter()
    with scratch_dir(out, "precision") as tmp:
        log(f"exporting FP32 {spec.height}x{spec.width}, {spec.iters} iterations, then applying plan {plan.name}")
        record = export_onnx(model, tmp / "fp32.onnx", spec, {"source": source})
        lowered = plan_graph(onnx.load(str(tmp / "fp32.onnx")), plan, calib, calibration)
        candidate = tmp / "candidate.onnx"
        save_model(lowered, candidate)
        pairs = verification_pairs(spec.height, spec.width, real_pair, n_synthetic)
        check = PlanCheck(plan.to_dict()["groups"], FlowReference(model, spec.iters, pairs).check(candidate),
                          precision_summary(lowered))
        for name, epe in check.pairs.items():
            log(f"  {name:<24} EPE delta {epe:.2e} px")
        if check.max_epe_delta > tolerance:
            raise VerificationError(f"{out}: plan {plan.name} changes the flow by {check.max_epe_delta:.3g} px "
                                    f"(> --max-epe-delta {tolerance:g} px); no file written")
        record.update(precision=plan.name, precision_plan=plan.to_dict()["groups"],
                      int8_format=calibration.int8_format if calib else None,
                      calibration={**calibration.to_dict(), "sample_ids": [p[0] for p in calib]} if calib else None,
                      verification={"reference": "pytorch-fp32", "max_epe_delta": check.max_epe_delta,
                                    "tolerance_epe_delta": tolerance, "pairs": check.pairs,
                                    "real_pair": str(real_pair) if real_pair else None},
                      precision_summary=check.summary, export_seconds=round(time.perf_counter() - start, 2))
        onnx.helper.set_model_props(lowered, {k: v if isinstance(v, str) else json.dumps(v, default=str)
                                              for k, v in record.items()})
        with atomic_path(out) as final:
            onnx.save(lowered, str(final))
    record["file_size_bytes"] = out.stat().st_size
    atomic_write_text(out.with_suffix(".json"), json.dumps(record, indent=2, default=str))
    return PrecisionExportResult(out, record, check)


def median_ort_latency_ms(onnx_path: Path, feeds: dict[str, np.ndarray], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time (ms) of ONNX Runtime CPU runs: a small timer for ranking plans, not a benchmark."""
    from .runners import OrtRunner

    with OrtRunner(onnx_path, "cpu") as runner:
        for _ in range(warmup):
            runner.infer(feeds)
        times = []
        for _ in range(repeats):
            begin = time.perf_counter()
            runner.infer(feeds)
            times.append((time.perf_counter() - begin) * 1e3)
    return float(np.median(times))
