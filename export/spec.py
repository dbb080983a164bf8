"""What an ONNX export is asked to be (resolution, iterations, opset...), checked without importing torch."""
from __future__ import annotations

from dataclasses import dataclass

from flownas.errors import ToolkitError

# GridSample exists from opset 16; TensorRT's parser mishandles its modes from opset 20 (FACTS §5).
MIN_OPSET, MAX_TRT_OPSET, DEFAULT_OPSET = 16, 19, 17
INPUT_NAMES, OUTPUT_NAMES = ("image1", "image2"), ("flow",)


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

    def validate(self) -> None:
        if self.height % 8 or self.width % 8 or min(self.height, self.width) < 128:
            raise ExportError(f"resolution {self.height}x{self.width} must be multiples of 8, at least 128 per side")
        if self.iters < 1:
            raise ExportError(f"iterations must be at least 1, got {self.iters}")
        if self.opset < MIN_OPSET:
            raise ExportError(f"opset {self.opset} has no GridSample (needs opset >= {MIN_OPSET})")
        if self.for_tensorrt and self.opset > MAX_TRT_OPSET:
            raise ExportError(
                f"opset {self.opset} refused for TensorRT targets: TensorRT's ONNX parser mishandles "
                f"GridSample modes at opset >= 20 ('linear' silently becomes nearest); use {MIN_OPSET}-{MAX_TRT_OPSET}"
            )
