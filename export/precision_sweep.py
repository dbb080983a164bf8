"""Sensitivity sweep: lower one layer group at a time, measure the flow change, propose the fastest safe plan.

For each group present in the graph and each candidate precision (INT8, FP16 by default), the FP32 graph is
rewritten with only that group lowered and compared with FP32 PyTorch on the calibration pairs and on the
held-out verification pairs (EPE delta, px), and timed by `timer(onnx_path, feeds) -> ms` (default: a median of
a few ONNX Runtime CPU runs; the export package does not import the benchmark package, so a caller wanting
bench's protocol passes its own timer). The proposal takes, per group, the fastest precision whose own delta is
within `max_epe_delta`, then checks the combination -- deltas do not add exactly -- and, while it is over the
budget, returns the group with the largest single-group delta to FP32. The proposal is saved as a plan file
that `export onnx --precision PLAN.json` reads; the sweep record lies beside it.
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

from flownas.fileio import scratch_dir
from flownas.provenance import cpu_int8_note

from .onnx_export import ExportSpec, export_onnx
from .precision_export import FlowReference, PlanCheck, median_ort_latency_ms, plan_graph
from .precision_plan import GROUPS, PrecisionPlan, PrecisionPlanError, groups_present
from .quantize import CalibrationSet, calibration_pairs, precision_summary, save_model
from .verify import flow_feeds, verification_pairs

Timer = Callable[[Path, dict[str, np.ndarray]], float]
Log = Callable[[str], None]
DEFAULT_CANDIDATES = ("int8", "fp16")


def _quiet(_: str) -> None:
    """Library calls print nothing unless given a log function."""


@dataclass
class SweepEntry:
    group: str
    precision: str
    max_epe_delta: float | None
    latency_ms: float | None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "precision": self.precision, "max_epe_delta": self.max_epe_delta,
                "latency_ms": self.latency_ms, "error": self.error}


@dataclass
class SweepResult:
    """Per-(group, precision) deltas and latencies, the FP32 baseline, the proposed plan and its check."""

    baseline_ms: float | None
    entries: list[SweepEntry]
    proposal: PrecisionPlan
    proposal_check: PlanCheck
    proposal_ms: float | None
    max_epe_delta: float
    record: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"max_epe_delta_budget": self.max_epe_delta, "baseline_fp32_ms": self.baseline_ms,
                "entries": [e.to_dict() for e in self.entries], "proposal": self.proposal.to_dict()["groups"],
                "proposal_check": self.proposal_check.to_dict(), "proposal_ms": self.proposal_ms, **self.record}

    def table(self) -> str:
        lines = [f"{'group':<16} {'precision':<9} {'EPE delta px':>12} {'ms':>9}"]
        for e in self.entries:
            delta = f"{e.max_epe_delta:.2e}" if e.max_epe_delta is not None else "-"
            ms = f"{e.latency_ms:.1f}" if e.latency_ms is not None else "-"
            lines.append(f"{e.group:<16} {e.precision:<9} {delta:>12} {ms:>9}" + (f"  ({e.error})" if e.error else ""))
        base = f"{self.baseline_ms:.1f} ms" if self.baseline_ms is not None else "-"
        prop = f"{self.proposal_ms:.1f} ms" if self.proposal_ms is not None else "-"
        lines.append(f"fp32: {base}; proposal {json.dumps(self.proposal.groups)}: {prop}, "
                     f"EPE delta {self.proposal_check.max_epe_delta:.2e} px (budget {self.max_epe_delta:g})")
        return "\n".join(lines)


def precision_sweep(model: Any, spec: ExportSpec, calibration: CalibrationSet | None = None, *,
                    max_epe_delta: float = 0.5, candidates: Sequence[str] = DEFAULT_CANDIDATES,
                    groups: Sequence[str] | None = None, real_pair: str | os.PathLike | None = None,
                    n_synthetic: int = 2, timer: Timer | None = median_ort_latency_ms,
                    work_dir: str | os.PathLike | None = None, log: Log = _quiet) -> SweepResult:
    """Sweep `candidates` over `groups` (default: every group the graph has) and propose a plan.

    `timer=None` skips timing: the proposal then lowers every group that fits the budget, preferring the
    order of `candidates` (INT8 before FP16). Scratch files live beside `work_dir` (default: the cwd).
    """
    spec.validate()
    calibration = calibration or CalibrationSet()
    for precision in candidates:
        if precision not in ("int8", "fp16"):
            raise PrecisionPlanError(f"sweep precision {precision!r}: only int8 and fp16 can be written (bf16 needs "
                                     "ONNX opset 22, see export.quantize)")
    if "int8" in candidates and timer is median_ort_latency_ms and (note := cpu_int8_note()):
        log(f"warning: {note}")
    calib = calibration_pairs(calibration, spec.height, spec.width)
    pairs = list(calib) + verification_pairs(spec.height, spec.width, real_pair, n_synthetic)
    feeds = flow_feeds(*pairs[-1][1:])
    anchor = Path(work_dir or ".") / "precision-sweep"
    start = time.perf_counter()
    with scratch_dir(anchor, "sweep") as tmp:
        fp32_path = tmp / "fp32.onnx"
        export_onnx(model, fp32_path, spec)
        fp32 = onnx.load(str(fp32_path))
        wanted = list(groups) if groups else groups_present(fp32)
        unknown = [g for g in wanted if g not in GROUPS]
        if unknown:
            raise PrecisionPlanError(f"sweep groups {unknown}: not among {', '.join(GROUPS)}")
        reference = FlowReference(model, spec.iters, pairs)
        baseline = timer(fp32_path, feeds) if timer else None

        def evaluate(plan: PrecisionPlan, name: str) -> tuple[PlanCheck, float | None]:
            graph = plan_graph(fp32, plan, calib, calibration)
            path = tmp / f"{name}.onnx"
            save_model(graph, path)
            check = PlanCheck(plan.to_dict()["groups"], reference.check(path), precision_summary(graph))
            return check, timer(path, feeds) if timer else None

        entries = []
        for group in wanted:
            for precision in candidates:
                try:
                    check, ms = evaluate(PrecisionPlan().with_group(group, precision), f"{group}-{precision}")
                    entries.append(SweepEntry(group, precision, check.max_epe_delta, ms))
                except Exception as exc:  # one failing variant must not end the sweep: it is reported instead
                    entries.append(SweepEntry(group, precision, None, None, " ".join(str(exc).split())[:200]))
                log(_entry_line(entries[-1]))
        proposal, check, proposal_ms = _propose(entries, candidates, max_epe_delta, baseline, evaluate, log)
    result = SweepResult(baseline, entries, proposal, check, proposal_ms, float(max_epe_delta))
    result.record = {"calibration": {**calibration.to_dict(), "sample_ids": [p[0] for p in calib]},
                     "validation_pairs": [p[0] for p in pairs[len(calib):]], "resolution": [spec.height, spec.width],
                     "iters": spec.iters, "timer": getattr(timer, "__name__", str(timer)) if timer else None,
                     "sweep_seconds": round(time.perf_counter() - start, 1)}
    return result


def _entry_line(entry: SweepEntry) -> str:
    if entry.error:
        return f"  {entry.group:<16} {entry.precision:<5} failed: {entry.error}"
    ms = f", {entry.latency_ms:.1f} ms" if entry.latency_ms is not None else ""
    return f"  {entry.group:<16} {entry.precision:<5} EPE delta {entry.max_epe_delta:.2e} px{ms}"


def choose_per_group(entries: Sequence[SweepEntry], candidates: Sequence[str], max_epe_delta: float,
                     baseline_ms: float | None = None) -> dict[str, str]:
    """Per group, the fastest precision whose single-group delta fits (candidate order when untimed or tied).

    Groups where nothing fits, or (when timed against `baseline_ms`) where nothing beats FP32, are left out:
    they stay FP32.
    """
    chosen: dict[str, str] = {}
    rank = {p: i for i, p in enumerate(candidates)}
    for group in dict.fromkeys(e.group for e in entries):
        fits = [e for e in entries if e.group == group and e.error is None and e.max_epe_delta is not None
                and e.max_epe_delta <= max_epe_delta]
        if fits:
            best = min(fits, key=lambda e: (e.latency_ms if e.latency_ms is not None else 0.0, rank[e.precision]))
            if baseline_ms is None or best.latency_ms is None or best.latency_ms < baseline_ms:
                chosen[group] = best.precision
    return chosen


def _propose(entries: Sequence[SweepEntry], candidates: Sequence[str], max_epe_delta: float,
             baseline_ms: float | None, evaluate: Callable[[PrecisionPlan, str], tuple[PlanCheck, float | None]],
             log: Log) -> tuple[PrecisionPlan, PlanCheck, float | None]:
    chosen = choose_per_group(entries, candidates, max_epe_delta, baseline_ms)
    delta = {(e.group, e.precision): e.max_epe_delta for e in entries if e.max_epe_delta is not None}
    while True:
        plan = PrecisionPlan(chosen)
        check, ms = evaluate(plan, "proposal")
        log(f"  proposal {json.dumps(chosen)}: EPE delta {check.max_epe_delta:.2e} px")
        if check.max_epe_delta <= max_epe_delta or not chosen:
            return plan, check, ms
        # Over budget together: give back the most sensitive group and try again.
        worst = max(chosen, key=lambda g: delta[(g, chosen[g])])
        del chosen[worst]


def write_sweep(result: SweepResult, plan_path: str | os.PathLike) -> Path:
    """Save the proposal as a plan file (with the sweep record under "sweep") that `export onnx` reads."""
    from flownas.provenance import provenance

    record = provenance("precision-plan", precision=result.proposal.label(), backend="onnxruntime-cpu",
                        extra={"sweep": result.to_dict()})
    result.proposal.save(plan_path, extra=record)
    return Path(plan_path)
