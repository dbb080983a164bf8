"""Export and verification as library calls (the CLI's `export onnx` and `verify` are thin layers over these).

    from export.workflow import export_verified_onnx, verify_artifacts
    result = export_verified_onnx(model, "raft-k.onnx", ExportSpec(384, 512, iters=12), real_pair="data/RubberWhale")
    report = verify_artifacts("raft-k.pt", "raft-k.onnx")

An export is written to a temporary file, verified against PyTorch on ONNX Runtime, and only then renamed into
place with its JSON record beside it: a failed verification (or a crash) leaves nothing behind.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

from flownas.fileio import atomic_path, atomic_write_text, parse_resolution

from .inputs import generate_inputs, is_flow_graph, parse_shape_spec, resolve_shapes
from .onnx_export import ExportSpec, export_onnx
from .runners import OrtRunner, Runner, artifact_metadata, runner_for_file
from .verify import (DEFAULT_TOLERANCE_EPE, GraphReport, VerificationError, VerifyReport, artifact_kind,
                     real_pair_images, verification_pairs, verify_graph, verify_runners)

Log = Callable[[str], None]
DYNAMIC_CHECK_OFFSET = (64, 128)  # a dynamic export is also verified this much larger than its export size


def _quiet(_: str) -> None:
    """The default log: library calls print nothing unless given a log function."""


@dataclass
class ExportResult:
    """A verified ONNX file: its path, its record (provenance + verification), the per-size reports."""

    path: Path
    record: dict[str, Any]
    reports: dict[str, VerifyReport] = field(default_factory=dict)


def export_verified_onnx(model: Any, out_path: str | os.PathLike, spec: ExportSpec, *,
                         real_pair: str | os.PathLike | None = None, tolerance_epe: float = DEFAULT_TOLERANCE_EPE,
                         n_synthetic: int = 2, source: str | None = None, log: Log = _quiet) -> ExportResult:
    """Export `model` (a static flow model) to `out_path`, verified on ONNX Runtime against PyTorch.

    Verification pairs: `n_synthetic` seeded synthetic pairs, plus the real pair in `real_pair` (a folder with
    frame10.png/frame11.png) when given. A dynamic export is checked at its export size and at a larger one.
    Above `tolerance_epe` (px) a VerificationError is raised and no file is written. `out.json` holds the record.
    """
    spec.validate()
    if real_pair is not None:
        real_pair_images(real_pair, 128, 128)  # a missing real pair fails now, not after a long export
    out = Path(out_path)
    sizes = [(spec.height, spec.width)]
    if spec.dynamic:
        sizes.append((spec.height + DYNAMIC_CHECK_OFFSET[0], spec.width + DYNAMIC_CHECK_OFFSET[1]))
    reports: dict[str, VerifyReport] = {}
    with atomic_path(out) as tmp:  # the file appears only once it has been verified
        log(f"exporting {out.name}: {spec.height}x{spec.width}, {spec.iters} iterations, opset {spec.opset}")
        record = export_onnx(model, tmp, spec, {"source": source})
        for height, width in sizes:
            log(f"verifying on ONNX Runtime against PyTorch at {height}x{width}")
            report = _verify_export(model, tmp, spec.iters, height, width, real_pair, tolerance_epe, n_synthetic)
            log(report.summary())
            if not report.ok:
                raise VerificationError(f"{out}: ONNX flow differs from PyTorch (max EPE {report.max_epe:.2e} px > "
                                        f"{tolerance_epe:g} px); no file written")
            reports[f"{height}x{width}"] = report
    record.update(file_size_bytes=out.stat().st_size, verification={k: r.to_dict() for k, r in reports.items()})
    if real_pair is None:
        record["verification_note"] = "synthetic pairs only (no --real-pair given)"
    atomic_write_text(out.with_suffix(".json"), json.dumps(record, indent=2, default=str))
    return ExportResult(out, record, reports)


def _verify_export(model: Any, onnx_path: Path, iters: int, height: int, width: int,
                   real_pair: str | os.PathLike | None, tolerance: float, n_synthetic: int) -> VerifyReport:
    from .torch_runner import flow_model_runner

    pairs = verification_pairs(height, width, real_pair, n_synthetic)
    reference = flow_model_runner(model, iters, name="pytorch")
    return verify_runners(reference, OrtRunner(onnx_path, "cpu"), pairs, tolerance,
                          str(real_pair) if real_pair else None)


# --------------------------------------------------------------------------------------------- verify A B
Report = Union[VerifyReport, GraphReport]


def verify_artifacts(a: str | os.PathLike, b: str | os.PathLike, *, arch: Any = None, iters: int | None = None,
                     resolution: str | tuple[int, int] | None = None, real_pair: str | os.PathLike | None = None,
                     tolerance_epe: float = DEFAULT_TOLERANCE_EPE, input_shapes: str | None = None,
                     atol: float = 1e-4, rtol: float = 1e-3) -> Report:
    """Compare two artifacts (checkpoint, ONNX file, engine) through the runners.

    Flow models (a checkpoint, or graphs with inputs image1/image2) are compared by flow EPE on verification
    pairs at `resolution` (default: the graph's export size); any other pair of graphs output by output on seeded
    generated inputs (`input_shapes` fixes dynamic axes, trtexec syntax).
    """
    for path in (a, b):
        if not Path(path).is_file():
            raise VerificationError(f"{path}: file not found")
        artifact_kind(path)
    meta = artifact_metadata(a) or artifact_metadata(b)
    iters = iters or meta.get("export_iters") or 12
    runners = [_runner(path, iters, arch) for path in (a, b)]
    specs = [r.input_specs() for r in runners]
    if all(is_flow_graph(s) for s in specs):
        height, width = (parse_resolution(resolution) if isinstance(resolution, str) else
                         tuple(resolution) if resolution else (meta.get("export_height", 384), meta.get("export_width", 512)))
        pairs = verification_pairs(height, width, real_pair)
        return verify_runners(runners[0], runners[1], pairs, tolerance_epe, str(real_pair) if real_pair else None)
    if any(is_flow_graph(s) for s in specs):
        raise VerificationError(f"{a} and {b} do not take the same inputs: one is a flow model, the other not")
    shapes = resolve_shapes(specs[0], parse_shape_spec(input_shapes) if input_shapes else None)
    return verify_graph(runners[0], runners[1], generate_inputs(specs[0], shapes), atol, rtol)


def _runner(path: str | os.PathLike, iters: int, arch: Any) -> Runner:
    if artifact_kind(path) == "checkpoint":
        from flownas.loading import load_flow_model

        from .torch_runner import flow_model_runner

        return flow_model_runner(load_flow_model(path, arch=arch), iters, name=Path(path).stem)
    return runner_for_file(path)

