"""Static MobileNet-style blocks and the static FlowNAS encoder built from an architecture.

A block computes `MBConv(x) + Shortcut(x)` with no activation after the add (FACTS §1):
MBConv = [1x1 expand -> norm -> ReLU] -> kxk depthwise (stride) -> norm -> ReLU -> 1x1 project -> norm.
Shortcut = identity, or avg-pool (stride 2) and/or a bias-free 1x1 conv when the shape changes.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..arch import ArchConfig, SearchSpace

ENCODER_NORMS = ("instance", "batch")


@dataclass(frozen=True)
class BlockShape:
    """Everything that fixes one static block's computation (also a latency-table key)."""

    in_channels: int
    out_channels: int
    kernel_size: int
    mid_channels: int
    stride: int
    has_expand: bool
    norm: str

    @property
    def shortcut_conv(self) -> bool:
        return self.in_channels != self.out_channels

    @property
    def identity_shortcut(self) -> bool:
        return not self.shortcut_conv and self.stride == 1


def encoder_shapes(arch: ArchConfig, space: SearchSpace, norm: str) -> list[BlockShape]:
    """The static block shapes of `arch` (from `ArchConfig.blocks`, the one place channels are derived)."""
    return [
        BlockShape(b.in_channels, b.out_channels, b.kernel_size, b.mid_channels, b.stride, b.has_expand, norm)
        for b in arch.blocks(space)
    ]


def make_norm2d(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels)  # no affine, no running statistics (fnet)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"encoder norm {kind!r} is not one of {ENCODER_NORMS}")


class ConvNorm(nn.Module):
    """Bias-free conv followed by an optional norm and ReLU."""

    def __init__(self, conv: nn.Conv2d, norm: nn.Module | None, relu: bool) -> None:
        super().__init__()
        self.conv = conv
        self.norm = norm
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.relu(x) if self.relu else x


class MBConv(nn.Module):
    def __init__(self, shape: BlockShape) -> None:
        super().__init__()
        mid, k = shape.mid_channels, shape.kernel_size
        if shape.has_expand:
            self.inverted_bottleneck = ConvNorm(
                nn.Conv2d(shape.in_channels, mid, 1, bias=False), make_norm2d(shape.norm, mid), relu=True
            )
        else:
            self.inverted_bottleneck = None
        depthwise = nn.Conv2d(mid, mid, k, stride=shape.stride, padding=k // 2, groups=mid, bias=False)
        self.depth_conv = ConvNorm(depthwise, make_norm2d(shape.norm, mid), relu=True)
        project = nn.Conv2d(mid, shape.out_channels, 1, bias=False)
        self.point_linear = ConvNorm(project, make_norm2d(shape.norm, shape.out_channels), relu=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.inverted_bottleneck is not None:
            x = self.inverted_bottleneck(x)
        return self.point_linear(self.depth_conv(x))


def shortcut_pool(x: Tensor, stride: int) -> Tensor:
    """Average-pool for a strided shortcut; pads by 1 when the width is odd (release semantics)."""
    if stride == 1:
        return x
    return F.avg_pool2d(x, stride, padding=1 if x.shape[-1] % 2 else 0)


class Shortcut(nn.Module):
    def __init__(self, shape: BlockShape) -> None:
        super().__init__()
        self.stride = shape.stride
        self.conv = nn.Conv2d(shape.in_channels, shape.out_channels, 1, bias=False) if shape.shortcut_conv else None

    def forward(self, x: Tensor) -> Tensor:
        x = shortcut_pool(x, self.stride)
        return x if self.conv is None else self.conv(x)


class MBBlock(nn.Module):
    def __init__(self, shape: BlockShape) -> None:
        super().__init__()
        self.shape = shape
        self.mobile_inverted_conv = MBConv(shape)
        self.shortcut = Shortcut(shape)

    def forward(self, x: Tensor) -> Tensor:
        return self.mobile_inverted_conv(x) + self.shortcut(x)


class StaticEncoder(nn.Module):
    """A FlowNAS encoder for one architecture: stem, MB blocks, 1x1 head. Output stride 8.

    `stage_ends[i]` is the number of blocks executed after stage i, used for the FAD feature taps.
    """

    def __init__(self, shapes: list[BlockShape], stage_ends: list[int], stem_channels: int, output_dim: int, norm: str):
        super().__init__()
        self.first_conv = nn.Conv2d(3, stem_channels, 7, stride=2, padding=3, bias=True)
        self.norm1 = make_norm2d(norm, stem_channels)
        self.blocks = nn.ModuleList(MBBlock(s) for s in shapes)
        self.stage_ends = list(stage_ends)
        self.last_conv = nn.Conv2d(shapes[-1].out_channels, output_dim, 1, bias=False)

    def forward(self, x: Tensor, taps: list[Tensor] | None = None) -> Tensor:
        """`[B,3,H,W]` -> `[B,output_dim,H/8,W/8]`; FAD taps: stem, stages 1, 3, 5, head."""
        x = F.relu(self.norm1(self.first_conv(x)))
        tap_after = {self.stage_ends[i] for i in (1, 3, 5) if i < len(self.stage_ends)}
        if taps is not None:
            taps.append(x)
        for index, block in enumerate(self.blocks, start=1):
            x = block(x)
            if taps is not None and index in tap_after:
                taps.append(x)
        x = self.last_conv(x)
        if taps is not None:
            taps.append(x)
        return x


def static_encoder(arch: ArchConfig, space: SearchSpace, norm: str, output_dim: int) -> StaticEncoder:
    """A freshly initialised static encoder for `arch`."""
    shapes = encoder_shapes(arch, space, norm)
    return StaticEncoder(shapes, stage_ends(arch), space.stem_channels, output_dim, norm)


def stage_ends(arch: ArchConfig) -> list[int]:
    """Number of blocks run once each stage is done (where the FAD taps sit)."""
    return list(itertools.accumulate(arch.depth))
