"""Running a flow model on numpy images: the piece shared by `infer`, `evaluate` and the demo."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def image_to_tensor(image: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 RGB `[H,W,3]` -> float32 `[1,3,H,W]` in [0,255]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().to(device)


@torch.inference_mode()
def estimate_flow(
    model: nn.Module,
    image1: np.ndarray,
    image2: np.ndarray,
    iters: int = 12,
    pad_mode: str = "sintel",
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Flow `[H,W,2]` float32 from image1 to image2 (uint8 RGB `[H,W,3]` each)."""
    if image1.shape != image2.shape:
        raise ValueError(f"images differ in size: {image1.shape[:2]} vs {image2.shape[:2]}")
    flow = model(image_to_tensor(image1, device), image_to_tensor(image2, device), iters=iters, pad_mode=pad_mode)
    return flow[0].permute(1, 2, 0).cpu().numpy()
