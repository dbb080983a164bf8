"""Running a flow model on numpy images: the piece shared by `infer`, `evaluate` and the demo."""
from __future__ import annotations

from contextlib import nullcontext

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
    scale: float | None = None,
    corr: str = "all-pairs",
    precision: str = "fp32",
    check_memory: bool = True,
) -> np.ndarray:
    """Flow `[H,W,2]` float32 (pixels, u then v) from image1 to image2 (uint8 RGB `[H,W,3]` each).

    max_side: images whose longer side exceeds it are downscaled (cv2.INTER_AREA, aspect ratio kept) before
        the model runs; the flow is resized back bilinearly and u, v are multiplied by the width and height
        ratios, so it is in the input's pixels.
    scale: resize factor instead of max_side (0.5 halves each side, 2 doubles it; cv2.INTER_AREA down,
        INTER_LINEAR up); the flow is brought back to the input's size and pixels the same way. Give one of
        max_side and scale, not both.
    precision: "fp32", or "fp16" / "bf16" to run the model under torch.autocast (fp16 on CUDA only, bf16 on
        CUDA GPUs that support it and on CPU); the flow returned is float32 either way.
    corr: "all-pairs" (the published correlation volume) or "lean" (same result, memory linear in H*W).
    check_memory: estimate the peak memory first (`flownas.memory.check_memory`, for models that have a
        decoder spec) and raise MemoryBudgetError with the remedies instead of running out of memory.
    """
    if image1.shape != image2.shape:
        raise ValueError(f"images differ in size: {image1.shape[:2]} vs {image2.shape[:2]}")
    height, width = image1.shape[:2]
    autocast = precision_context(precision, device)
    size = _run_size(model, height, width, max_side, scale)
    if check_memory and hasattr(model, "spec"):
        # a scale factor is checked at the size it gives (check_memory's own resizing knows only max_side)
        memory.check_memory(model, *((height, width) if scale is None else size), device, max_side=max_side,
                            corr=corr)
    if size != (height, width):
        shrink = size[0] * size[1] <= height * width
        interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        image1, image2 = (cv2.resize(image, size[::-1], interpolation=interpolation) for image in (image1, image2))
    # `corr` only when asked for: models following the older contract (no corr argument) keep working
    options = {} if corr == "all-pairs" else {"corr": corr}
    with autocast:
        flow = model(image_to_tensor(image1, device), image_to_tensor(image2, device), iters=iters,
                     pad_mode=pad_mode, **options)
    flow = flow.float()
    if size != (height, width):
        flow = _resize_flow(flow, height, width)
    return flow[0].permute(1, 2, 0).cpu().numpy()


PRECISIONS = ("fp32", "fp16", "bf16")


def check_precision(precision: str, device: str | torch.device = "cpu") -> None:
    """Refuse a precision the device cannot run, in one line, before any work: fp16 autocast needs CUDA
    (CPU fp16 kernels are missing or slower than fp32), bf16 needs a CPU or a GPU with bf16 support."""
    if precision not in PRECISIONS:
        raise UserInputError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    kind = torch.device(device).type
    if precision == "fp16" and kind != "cuda":
        raise UserInputError(f"--fp16 needs a CUDA device (got --device {device}); on CPU use --bf16 or fp32")
    if precision == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserInputError(f"--bf16: {torch.cuda.get_device_name(torch.device(device))} does not support "
                             "bfloat16; use --fp16 or fp32")
    if kind not in ("cpu", "cuda"):
        raise UserInputError(f"--device {device}: only cpu and cuda devices are supported")


def precision_context(precision: str, device: str | torch.device = "cpu"):
    """The autocast context for `precision` on `device` (a no-op for fp32), after `check_precision`."""
    check_precision(precision, device)
    if precision == "fp32":
        return nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def scaled_by(height: int, width: int, scale: float | None) -> tuple[int, int]:
    """The size `scale` gives (each side multiplied and rounded, at least 1 px); one line for a bad factor."""
    if scale is None:
        return height, width
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not np.isfinite(scale) or scale <= 0:
        raise UserInputError(f"--scale {scale!r}: the resize factor must be a positive number (e.g. 0.5)")
    return max(1, round(height * scale)), max(1, round(width * scale))


def _run_size(model: nn.Module, height: int, width: int, max_side: int | None,
              scale: float | None = None) -> tuple[int, int]:
    """The size the model sees; refuses a max_side or scale that leaves too few pixels for the correlation
    pyramid, and both at once (two answers to one question)."""
    if max_side is not None and scale is not None:
        raise UserInputError("--max-side and --scale both resize the input: give one of them, not both")
    if max_side is None and scale is None:
        return height, width
    if scale is not None:
        size, option = scaled_by(height, width, scale), f"--scale {scale}"
    else:
        if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1:
            raise UserInputError(f"max_side must be a positive integer, got {max_side!r}")
        size, option = memory.scaled_size(height, width, max_side), f"--max-side {max_side}"
    min_side = getattr(getattr(model, "spec", None), "min_side_px", None)
    if size != (height, width) and min_side and min(memory.padded_size(*size)) < min_side:
        raise UserInputError(
            f"{option} shrinks {width}x{height} to {size[1]}x{size[0]}, below the {min_side} px per "
            f"side (after padding to a multiple of 8) the model needs; use a larger {option.split()[0]}"
        )
    return size


def _resize_flow(flow: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """`[B,2,h,w]` flow -> `[B,2,height,width]`: bilinear resize, u scaled by width/w and v by height/h."""
    small_h, small_w = flow.shape[-2:]
    # align_corners=False maps pixel centres as cv2.INTER_AREA did on the way down
    flow = F.interpolate(flow, size=(height, width), mode="bilinear", align_corners=False)
    scale = torch.tensor([width / small_w, height / small_h], device=flow.device, dtype=flow.dtype)
    return flow * scale.view(1, 2, 1, 1)
