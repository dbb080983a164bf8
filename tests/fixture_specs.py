"""Seeds and sizes shared by tests and by the tools that made their fixtures (kept in one place)."""
from __future__ import annotations

import torch

TORCHVISION_FIXTURE = {"seed": 11, "iters": 4, "size": (128, 160)}


def fixture_images() -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded image pair `[1,3,H,W]` in [0,255]; the second is the first shifted by (2, 3) px."""
    gen = torch.Generator().manual_seed(TORCHVISION_FIXTURE["seed"])
    image1 = torch.rand(1, 3, *TORCHVISION_FIXTURE["size"], generator=gen) * 255
    return image1, torch.roll(image1, shifts=(2, 3), dims=(2, 3))
