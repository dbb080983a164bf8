"""All-pairs correlation pyramid and its radius lookup (RAFT §3.2).

Kept as plain MatMul + avg-pool + GridSample so that it exports to ONNX/TensorRT without custom kernels.
Correlation and coordinates always stay in float32.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def coords_grid(batch: int, height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
    """Pixel coordinates `[B,2,H,W]`, channel 0 = x (column), channel 1 = y (row)."""
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32),
        torch.arange(width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack([xs, ys], dim=0)[None].expand(batch, -1, -1, -1)


def all_pairs_correlation(fmap1: Tensor, fmap2: Tensor) -> Tensor:
    """Dot products of every pixel pair, `[B,C,H,W] x2 -> [B*H*W, 1, H, W]`, scaled by 1/sqrt(C)."""
    batch, dim, ht, wd = fmap1.shape
    f1 = fmap1.float().reshape(batch, dim, ht * wd)
    f2 = fmap2.float().reshape(batch, dim, ht * wd)
    corr = torch.matmul(f1.transpose(1, 2), f2)
    return corr.reshape(batch * ht * wd, 1, ht, wd) / math.sqrt(dim)


def lookup_offsets(radius: int, device: torch.device | str = "cpu") -> Tensor:
    """Offsets `[2r+1, 2r+1, 2]` as (x, y) pairs; the x offset varies along the FIRST axis.

    This transposed order is what RAFT (princeton-vl and torchvision) feeds its update block, so the
    324 correlation channels of published weights are ordered level, x-offset, y-offset.
    """
    d = torch.linspace(-radius, radius, 2 * radius + 1, device=device)
    return torch.stack(torch.meshgrid(d, d, indexing="ij"), dim=-1)


class CorrPyramid:
    """Correlation volume pyramid built once per image pair and sampled every iteration."""

    def __init__(self, fmap1: Tensor, fmap2: Tensor, num_levels: int = 4, radius: int = 4) -> None:
        self.num_levels = num_levels
        self.radius = radius
        corr = all_pairs_correlation(fmap1, fmap2)
        self.batch, _, self.ht, self.wd = fmap1.shape
        self.pyramid = [corr]
        for _ in range(num_levels - 1):
            corr = F.avg_pool2d(corr, 2, stride=2)
            self.pyramid.append(corr)

    @property
    def out_channels(self) -> int:
        return self.num_levels * (2 * self.radius + 1) ** 2

    def __call__(self, coords: Tensor) -> Tensor:
        """Sample a (2r+1)^2 window around `coords [B,2,H,W]` on every level -> `[B, L*(2r+1)^2, H, W]`."""
        batch, _, ht, wd = coords.shape
        centroids = coords.permute(0, 2, 3, 1).reshape(batch * ht * wd, 1, 1, 2)
        offsets = lookup_offsets(self.radius, coords.device)[None]
        samples = []
        for level, corr in enumerate(self.pyramid):
            grid = centroids / 2**level + offsets
            sampled = _sample_pixels(corr, grid)
            samples.append(sampled.reshape(batch, ht, wd, -1))
        return torch.cat(samples, dim=-1).permute(0, 3, 1, 2).contiguous().float()


def _sample_pixels(image: Tensor, coords: Tensor) -> Tensor:
    """Bilinear sampling at pixel coordinates (align_corners=True, zeros outside)."""
    height, width = image.shape[-2:]
    x, y = coords.split([1, 1], dim=-1)
    grid = torch.cat([2 * x / (width - 1) - 1, 2 * y / (height - 1) - 1], dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
