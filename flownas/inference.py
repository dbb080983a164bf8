"""Running a flow model on numpy images: the piece shared by `infer`, `evaluate` and the demo."""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import memory
from .errors import UserInputError


def image_to_tensor(image: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 RGB `[H,W,3]` -> float32 `[1,3,H,W]` in [0,255]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().to(device)


@torch.inference_mode()
def estimate_flow(
    model: nn.Module,
    image1: np.ndarray,
    image2: np.ndarray,
    iters: int = 12,
    *,
    pad_mode: str = "sintel",
    device: str | torch.device = "cpu",
    max_side: int | None = None,
    corr: str = "all-pairs",
    check_memory: bool = True,
) -> np.ndarray:
    """Flow `[H,W,2]` float32 (pixels, u then v) from image1 to image2 (uint8 RGB `[H,W,3]` each).

    max_side: images whose longer side exceeds it are downscaled (cv2.INTER_AREA, aspect ratio kept) before
        the model runs; the flow is resized back bilinearly and u, v are multiplied by the width and height
        ratios, so it is in the input's pixels.
    corr: "all-pairs" (the published correlation volume) or "lean" (same result, memory linear in H*W).
    check_memory: estimate the peak memory first (`flownas.memory.check_memory`, for models that have a
        decoder spec) and raise MemoryBudgetError with the remedies instead of running out of memory.
    """
    if image1.shape != image2.shape:
        raise ValueError(f"images differ in size: {image1.shape[:2]} vs {image2.shape[:2]}")
    height, width = image1.shape[:2]
    size = _run_size(model, height, width, max_side)
    if check_memory and hasattr(model, "spec"):
        memory.check_memory(model, height, width, device, max_side=max_side, corr=corr)
    if size != (height, width):
        image1, image2 = (cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA) for image in (image1, image2))
    # `corr` only when asked for: models following the older contract (no corr argument) keep working
    options = {} if corr == "all-pairs" else {"corr": corr}
    flow = model(image_to_tensor(image1, device), image_to_tensor(image2, device), iters=iters, pad_mode=pad_mode,
                 **options)
    if size != (height, width):
        flow = _resize_flow(flow, height, width)
    return flow[0].permute(1, 2, 0).cpu().numpy()


def _run_size(model: nn.Module, height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """The size the model sees; refuses a max_side that leaves too few pixels for the correlation pyramid."""
    if max_side is None:
        return height, width
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1:
        raise UserInputError(f"max_side must be a positive integer, got {max_side!r}")
    size = memory.scaled_size(height, width, max_side)
    min_side = getattr(getattr(model, "spec", None), "min_side_px", None)
    if size != (height, width) and min_side and min(memory.padded_size(*size)) < min_side:
        raise UserInputError(
            f"--max-side {max_side} shrinks {width}x{height} to {size[1]}x{size[0]}, below the {min_side} px per "
            f"side (after padding to a multiple of 8) the model needs; use a larger --max-side"
        )
    return size


def _resize_flow(flow: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """`[B,2,h,w]` flow -> `[B,2,height,width]`: bilinear resize, u scaled by width/w and v by height/h."""
    small_h, small_w = flow.shape[-2:]
    # align_corners=False maps pixel centres as cv2.INTER_AREA did on the way down
    flow = F.interpolate(flow, size=(height, width), mode="bilinear", align_corners=False)
    scale = torch.tensor([width / small_w, height / small_h], device=flow.device, dtype=flow.dtype)
    return flow * scale.view(1, 2, 1, 1)
