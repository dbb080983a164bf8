"""Export a flow model to ONNX: fixed iteration count unrolled, final upsampled flow only.

The traced graph is the model's own inference path (`FlowModel._iterate`) on images whose sides are
multiples of 8, so no padding logic is traced. Metadata recording how the file was made is stored in the
ONNX `metadata_props`; the graph is checked, then simplified (constant folding) by onnxslim.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import onnx
import torch
from torch import Tensor, nn

import flownas
from flownas.fileio import atomic_path, clean_legacy_dirs, scratch_dir
from flownas.models import FlowModel, model_identity  # noqa: F401  (model_identity re-exported)

from .metadata import read_metadata  # noqa: F401  (re-exported for callers of the exporter)

from .spec import (DEFAULT_OPSET, INPUT_NAMES, MAX_TRT_OPSET, MIN_OPSET, OUTPUT_NAMES,  # noqa: F401  (re-exported)
                   ExportError, ExportSpec)


class FlowExportWrapper(nn.Module):
    """`(image1, image2) -> flow` in [0,255] -> `[B,2,H,W]`: the model's eval path with a fixed `iters`.

    The correlation lookup is the gather formulation (same samples as GridSample, see `CorrPyramid`),
    which exports to far fewer and cheaper nodes.
    """

    def __init__(self, model: FlowModel, iters: int, lookup: str = "gather") -> None:
        super().__init__()
        self.model = model
        self.iters, self.lookup = iters, lookup
        # torch.onnx.export restores the wrapper's mode afterwards; a fresh Module would be in train mode.
        self.eval()

    def forward(self, image1: Tensor, image2: Tensor) -> Tensor:
        # x * (2/255) - 1 is one Mul and one Sub; the reference's 2*(x/255)-1 traces to three ops.
        image1 = image1 * (2.0 / 255.0) - 1.0
        image2 = image2 * (2.0 / 255.0) - 1.0
        return self.model._iterate(image1, image2, self.iters, None, lookup=self.lookup)[-1]


def export_onnx(model: FlowModel, out_path: str | os.PathLike, spec: ExportSpec,
                extra_metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Trace, check, simplify and write `out_path` atomically; returns the metadata record."""
    spec.validate()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    # The old code's `tmpXXXXXXXX/raw.onnx` folders, left by killed exports (they carry no pid: age tells).
    clean_legacy_dirs(out_path.parent, r"tmp[a-z0-9_]{8}", r"raw\.onnx")
    with scratch_dir(out_path, "export") as tmp:  # pid-named: a killed export's scratch goes at the next one
        raw_path = tmp / "raw.onnx"
        _trace(model, raw_path, spec)
        graph = _simplify(onnx.load(str(raw_path)))
    record = export_record(model, spec, time.perf_counter() - start, extra_metadata)
    onnx.helper.set_model_props(graph, {k: json.dumps(v) if not isinstance(v, str) else v for k, v in record.items()})
    onnx.checker.check_model(graph, full_check=True)
    atomic_save_onnx(graph, out_path)
    record["file_size_bytes"] = out_path.stat().st_size
    return record


def _trace(model: FlowModel, path: Path, spec: ExportSpec) -> None:
    wrapper = FlowExportWrapper(model, spec.iters, spec.lookup)
    example = torch.rand(spec.batch, 3, spec.height, spec.width) * 255
    dynamic_axes = None
    if spec.dynamic:
        axes = {0: "batch", 2: "height", 3: "width"}
        dynamic_axes = {"image1": axes, "image2": axes, "flow": axes}
    if spec.exporter == "dynamo":
        _export_dynamo(wrapper, example, path, spec)
        return
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python ints from shapes are expected
        torch.onnx.export(
            wrapper, (example, example.clone()), str(path), dynamo=False, opset_version=spec.opset,
            input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )


def _export_dynamo(wrapper: nn.Module, example: Tensor, path: Path, spec: ExportSpec) -> None:
    """torch.export + onnxscript (`torch.onnx.export(..., dynamo=True)`), the exporter torch is moving to."""
    import io

    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it; pip install onnxscript)
    except ImportError:
        from flownas.errors import MissingDependencyError

        raise MissingDependencyError("the dynamo exporter needs onnxscript: pip install onnxscript") from None
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _torch_onnx_quiet():
        warnings.simplefilter("ignore")  # its progress and FutureWarnings: the toolkit reports the export itself
        program = torch.onnx.export(wrapper, (example, example.clone()), dynamo=True, opset_version=spec.opset,
                                    input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES))
    program.save(str(path))


@contextlib.contextmanager
def _torch_onnx_quiet() -> Iterator[None]:
    """The dynamo exporter logs a warning per torchvision operator it cannot register when torchvision is not
    installed (nms, roi_align ...: none of them in a flow model); errors still show."""
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        exporter_log.setLevel(level)


def _simplify(graph: onnx.ModelProto) -> onnx.ModelProto:
    import onnxslim

    return onnxslim.slim(graph)


def export_record(model: FlowModel, spec: ExportSpec, seconds: float, extra: dict[str, Any] | None) -> dict[str, Any]:
    """How the artifact was made (stored in the ONNX file and printed by the CLI): the toolkit's provenance
    record (kind "onnx") plus the model config, the export settings (`export_*`) and the export time."""
    from flownas.provenance import library_version, provenance

    record = provenance("onnx", arch_id=model_identity(model), resolution=(spec.height, spec.width),
                        iters=spec.iters, precision="fp32", backend="onnx", extra={
                            "model_config": model.config(), **{f"export_{k}": v for k, v in asdict(spec).items()},
                            "torch_version": str(torch.__version__), "onnx_version": onnx.__version__,
                            "onnxruntime_version": library_version("onnxruntime", "onnxruntime-gpu"),
                            "export_seconds": round(seconds, 2)})
    record["toolkit_version"] = flownas.__version__
    record.update(extra or {})
    return record


def atomic_save_onnx(graph: onnx.ModelProto, path: Path) -> None:
    with atomic_path(path) as tmp:
        onnx.save(graph, str(tmp))
