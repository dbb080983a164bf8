"""What an ONNX export is asked to be (resolution, iterations, opset...), checked without importing torch."""
from __future__ import annotations

from dataclasses import dataclass

from flownas.errors import ToolkitError

# GridSample exists from opset 16; TensorRT's parser mishandles its modes from opset 20 (FACTS §5).
MIN_OPSET, MAX_TRT_OPSET, DEFAULT_OPSET = 16, 19, 17
INPUT_NAMES, OUTPUT_NAMES = ("image1", "image2"), ("flow",)
EXPORTERS, DYNAMO_MIN_OPSET = ("torchscript", "dynamo"), 18
DEFAULT_TOLERANCE_EPE = 1e-3  # px: the flow change an fp32 export may show against PyTorch


class ExportError(ToolkitError, ValueError):
    """A user-facing export problem (bad resolution, opset, model); the message is one line."""


@dataclass(frozen=True)
class ExportSpec:
    height: int
    width: int
    iters: int = 12
    opset: int = DEFAULT_OPSET
    batch: int = 1
    dynamic: bool = False
    for_tensorrt: bool = True
    lookup: str = "gather"
    # "torchscript": torch.onnx.export's tracer (dynamo=False), the default and what every figure here used;
    # "dynamo": its successor (torch.export + onnxscript, opset >= 18), which torch is moving to.
    exporter: str = "torchscript"

    def validate(self) -> None:
        if self.height % 8 or self.width % 8 or min(self.height, self.width) < 128:
            raise ExportError(f"resolution {self.height}x{self.width} must be multiples of 8, at least 128 per side")
        if self.iters < 1:
            raise ExportError(f"iterations must be at least 1, got {self.iters}")
        if self.exporter not in EXPORTERS:
            raise ExportError(f"exporter {self.exporter!r} is not one of {', '.join(EXPORTERS)}")
        if self.exporter == "dynamo" and self.opset < DYNAMO_MIN_OPSET:
            raise ExportError(f"the dynamo exporter writes opset >= {DYNAMO_MIN_OPSET}, not {self.opset}: "
                              f"pass --opset {DYNAMO_MIN_OPSET} (TensorRT takes up to {MAX_TRT_OPSET})")
        if self.exporter == "dynamo" and self.dynamic:
            raise ExportError("--dynamic with the dynamo exporter is not supported by the toolkit yet "
                              "(torch.export dynamic shapes); use the torchscript exporter")
        if self.opset < MIN_OPSET:
            raise ExportError(f"opset {self.opset} has no GridSample (needs opset >= {MIN_OPSET})")
        if self.for_tensorrt and self.opset > MAX_TRT_OPSET:
            raise ExportError(
                f"opset {self.opset} refused for TensorRT targets: TensorRT's ONNX parser mishandles "
                f"GridSample modes at opset >= 20 ('linear' silently becomes nearest); use {MIN_OPSET}-{MAX_TRT_OPSET}"
            )
