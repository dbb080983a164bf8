"""All-pairs correlation pyramid and its radius lookup (RAFT §3.2).

Kept as plain MatMul + avg-pool + GridSample so that it exports to ONNX/TensorRT without custom kernels.
Correlation and coordinates always stay in float32.

The all-pairs volume takes 4*(H*W/64)^2 bytes per image pair: 1.3 GB at 1280x720, 140 GB at 4000x3000.
`LeanCorrelation` computes the same samples on demand from the feature maps (RAFT's "alternate"
correlation), in memory linear in the number of pixels.
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
    # In place: an out-of-place division would hold a second copy of the (largest) volume at the peak.
    return corr.div_(math.sqrt(dim)).reshape(batch * ht * wd, 1, ht, wd)


def lookup_offsets(radius: int, device: torch.device | str = "cpu") -> Tensor:
    """Offsets `[2r+1, 2r+1, 2]` as (x, y) pairs; the x offset varies along the FIRST axis.

    This transposed order is what RAFT (princeton-vl and torchvision) feeds its update block, so the
    324 correlation channels of published weights are ordered level, x-offset, y-offset.
    """
    d = torch.linspace(-radius, radius, 2 * radius + 1, device=device)
    return torch.stack(torch.meshgrid(d, d, indexing="ij"), dim=-1)


PYRAMID_LOOKUPS = ("grid_sample", "gather")
LOOKUPS = PYRAMID_LOOKUPS + ("lean",)
LEAN_CHUNK_BYTES = 64 * 2**20  # working set of one chunk of the lean lookup


def correlation_lookup(fmap1: Tensor, fmap2: Tensor, num_levels: int, radius: int,
                       lookup: str = "grid_sample") -> "CorrPyramid | LeanCorrelation":
    """The correlation sampler for `lookup` in LOOKUPS; all return identical samples up to float round-off."""
    if lookup == "lean":
        return LeanCorrelation(fmap1, fmap2, num_levels, radius)
    return CorrPyramid(fmap1, fmap2, num_levels, radius, lookup=lookup)


class CorrPyramid:
    """Correlation volume pyramid built once per image pair and sampled every iteration.

    Two lookups compute the same bilinear samples (align_corners=True, zeros outside):
    - "grid_sample": one GridSample per level on `[B*H*W,1,H,W]` volumes, as the reference code does;
    - "gather": volumes are kept target-pixel-major (`[H2,W2,B*H1*W1]`, zero-padded), a window's integer
      taps are gathered and blended with the four bilinear weights that all offsets of a window share
      (offsets are whole pixels). It avoids GridSample, its per-sample coordinate arithmetic and the
      channel transposes, which dominate an exported graph's non-convolution time.
    """

    def __init__(self, fmap1: Tensor, fmap2: Tensor, num_levels: int = 4, radius: int = 4,
                 lookup: str = "grid_sample") -> None:
        if lookup not in PYRAMID_LOOKUPS:
            raise ValueError(f"correlation lookup {lookup!r} is not one of {LOOKUPS}")
        self.num_levels, self.radius, self.lookup = num_levels, radius, lookup
        if lookup == "grid_sample":
            corr = all_pairs_correlation(fmap1, fmap2)
            self.pyramid = [corr]
            for _ in range(num_levels - 1):
                corr = F.avg_pool2d(corr, 2, stride=2)
                self.pyramid.append(corr)
        else:
            self._build_gather_pyramid(fmap1, fmap2)

    def _build_gather_pyramid(self, fmap1: Tensor, fmap2: Tensor) -> None:
        batch, dim, ht, wd = fmap1.shape
        f1 = fmap1.float().reshape(batch, dim, ht * wd)
        f2 = fmap2.float().reshape(batch, dim, ht * wd)
        corr = torch.matmul(f2.transpose(1, 2), f1).div_(math.sqrt(dim))  # [B, HW2, HW1]
        corr = corr.permute(1, 0, 2).reshape(ht, wd, batch * ht * wd)
        self.pad = 2 * self.radius + 2  # wide enough to hold a whole window of out-of-range taps
        self.sizes, self.padded = [], []
        for level in range(self.num_levels):
            if level:
                h, w = corr.shape[0] // 2, corr.shape[1] // 2  # 2x2 average pooling, odd edges dropped
                corr = corr[: 2 * h, : 2 * w].reshape(h, 2, w, 2, -1).mean(dim=(1, 3))
            self.sizes.append(tuple(corr.shape[:2]))
            self.padded.append(F.pad(corr, [0, 0] + [self.pad] * 4).flatten(0, 1))

    def __call__(self, coords: Tensor) -> Tensor:
        """Sample a (2r+1)^2 window around `coords [B,2,H,W]` on every level -> `[B, L*(2r+1)^2, H, W]`."""
        batch, _, ht, wd = coords.shape
        if self.lookup == "gather":
            xy = coords.permute(1, 0, 2, 3).reshape(2, batch * ht * wd)
            samples = torch.cat([self._gather_level(level, xy) for level in range(self.num_levels)], dim=0)
            return samples.reshape(-1, batch, ht, wd).permute(1, 0, 2, 3).float()
        centroids = coords.permute(0, 2, 3, 1).reshape(batch * ht * wd, 1, 1, 2)
        offsets = lookup_offsets(self.radius, coords.device)[None]
        samples = []
        for level, corr in enumerate(self.pyramid):
            sampled = _sample_pixels(corr, centroids / 2**level + offsets)
            samples.append(sampled.reshape(batch, ht, wd, -1))
        return torch.cat(samples, dim=-1).permute(0, 3, 1, 2).contiguous().float()

    def _gather_level(self, level: int, xy: Tensor) -> Tensor:
        """`[2,N]` pixel coordinates -> `[(2r+1)^2, N]` samples, x-offset major like the reference."""
        r, pad, taps = self.radius, self.pad, 2 * self.radius + 2
        height, width = self.sizes[level]
        xy = xy / 2**level
        base = torch.floor(xy)
        frac = xy - base
        # Windows entirely outside the volume are clamped so that they lie in the zero padding.
        x0 = base[:1].clamp(-(r + 2), width + r)
        y0 = base[1:].clamp(-(r + 2), height + r)
        row_len = width + 2 * pad
        start = ((y0 + (pad - r)) * row_len + (x0 + (pad - r))).long()  # [1, N]
        steps = torch.arange(taps, device=xy.device)
        window = (steps[:, None] + steps[None, :] * row_len).reshape(-1, 1)  # x tap major, y tap minor
        values = torch.gather(self.padded[level], 0, (start + window).expand(-1, xy.shape[1]))
        values = values.view(taps, taps, -1)  # [x tap, y tap, N]
        fx, fy = frac[:1].view(1, 1, -1), frac[1:].view(1, 1, -1)
        cols = values[:-1] + fx * (values[1:] - values[:-1])  # blend along x: [dx, y tap, N]
        blended = cols[:, :-1] + fy * (cols[:, 1:] - cols[:, :-1])  # blend along y: [dx, dy, N]
        return blended.reshape((2 * r + 1) ** 2, -1)


class LeanCorrelation:
    """The pyramid's samples computed on demand, without the all-pairs volume (RAFT's alternate correlation).

    By linearity, 2x2-pooling the volume over target pixels equals correlating with the 2x2-pooled fmap2
    (level l: fmap2 pooled l times, odd edges dropped as avg_pool2d does), and bilinearly sampling the volume
    (zeros outside) equals the dot product of fmap1 with bilinearly sampled fmap2. Each call samples fmap2_l
    at every pixel's (2r+1)^2 window and dots it with fmap1, for chunks of pixels whose working set
    (window + its transposed copy for the batched product) stays under `chunk_bytes`.
    Memory: the pooled fmap2 levels (< 1.34x fmap2) plus one chunk, instead of 4*B*(H*W)^2*4/3 bytes.
    """

    def __init__(self, fmap1: Tensor, fmap2: Tensor, num_levels: int = 4, radius: int = 4,
                 chunk_bytes: int = LEAN_CHUNK_BYTES) -> None:
        batch, dim, ht, wd = fmap1.shape
        self.num_levels, self.radius, self.dim = num_levels, radius, dim
        self.fmap1 = fmap1.float().reshape(batch, dim, ht * wd)
        level = fmap2.float()
        self.levels = [level]
        for _ in range(num_levels - 1):
            level = F.avg_pool2d(level, 2, stride=2)
            self.levels.append(level)
        self.chunk = max(1, chunk_bytes // lean_bytes_per_pixel(batch, dim, radius))

    def __call__(self, coords: Tensor) -> Tensor:
        """`coords [B,2,H,W]` -> `[B, L*(2r+1)^2, H, W]`, channels ordered level, x-offset, y-offset."""
        batch, _, ht, wd = coords.shape
        pixels = ht * wd
        centroids = coords.float().permute(0, 2, 3, 1).reshape(batch, pixels, 1, 2)
        offsets = lookup_offsets(self.radius, coords.device).reshape(1, 1, -1, 2)  # x-offset major
        out = torch.empty(batch, self.num_levels, offsets.shape[2], pixels, device=coords.device)
        for start in range(0, pixels, self.chunk):
            stop = min(pixels, start + self.chunk)
            fmap1 = self.fmap1[:, :, start:stop]
            for level, fmap2 in enumerate(self.levels):
                window = _sample_pixels(fmap2, centroids[:, start:stop] / 2**level + offsets)  # [B,C,P,K]
                dots = torch.einsum("bcpk,bcp->bkp", window, fmap1)
                out[:, level, :, start:stop] = dots / math.sqrt(self.dim)
        return out.reshape(batch, -1, ht, wd)


def lean_bytes_per_pixel(batch: int, dim: int, radius: int) -> int:
    """Float32 working set of `LeanCorrelation` per pixel of a chunk: the window and its transposed copy."""
    return 2 * batch * dim * (2 * radius + 1) ** 2 * 4


def _sample_pixels(image: Tensor, coords: Tensor) -> Tensor:
    """Bilinear sampling at pixel coordinates (align_corners=True, zeros outside)."""
    height, width = image.shape[-2:]
    x, y = coords.split([1, 1], dim=-1)
    grid = torch.cat([2 * x / (width - 1) - 1, 2 * y / (height - 1) - 1], dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
