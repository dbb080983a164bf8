"""RAFT's residual feature/context encoders (large: BasicEncoder, small: SmallEncoder).

Names follow the princeton-vl release (conv1, norm1, layerN.M.convK, downsample.0/1, conv2).
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

NORMS = ("instance", "batch", "none")


def make_norm(kind: str, channels: int) -> nn.Module:
    """The norms RAFT uses; 'none' is an empty Sequential so it owns no state-dict keys."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Sequential()
    raise ValueError(f"norm {kind!r} is not one of {NORMS}")


class ResidualBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, norm: str, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1)
        self.norm1 = make_norm(norm, planes)
        self.norm2 = make_norm(norm, planes)
        self.downsample = None
        if stride != 1:
            # norm3 and downsample.1 are the same module, as in the release (both appear in its keys).
            self.norm3 = make_norm(norm, planes)
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride), self.norm3)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return F.relu(x + y)


class BottleneckBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, norm: str, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes // 4, 1, padding=0)
        self.conv2 = nn.Conv2d(planes // 4, planes // 4, 3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(planes // 4, planes, 1, padding=0)
        self.norm1 = make_norm(norm, planes // 4)
        self.norm2 = make_norm(norm, planes // 4)
        self.norm3 = make_norm(norm, planes)
        self.downsample = None
        if stride != 1:
            self.norm4 = make_norm(norm, planes)
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride), self.norm4)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        y = F.relu(self.norm3(self.conv3(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return F.relu(x + y)


class ResNetEncoder(nn.Module):
    """7x7/2 stem, three stages of two blocks (strides 1, 2, 2), 1x1 head: output stride 8."""

    def __init__(self, block: type[nn.Module], widths: tuple[int, int, int, int], output_dim: int, norm: str) -> None:
        super().__init__()
        stem, *stages = widths
        self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3)
        self.norm1 = make_norm(norm, stem)
        in_planes = stem
        for index, (planes, stride) in enumerate(zip(stages, (1, 2, 2)), start=1):
            layer = nn.Sequential(block(in_planes, planes, norm, stride), block(planes, planes, norm, 1))
            self.add_module(f"layer{index}", layer)
            in_planes = planes
        self.conv2 = nn.Conv2d(in_planes, output_dim, 1)
        _init_like_raft(self)

    def forward(self, x: Tensor, taps: list[Tensor] | None = None) -> Tensor:
        """`[B,3,H,W]` -> `[B,output_dim,H/8,W/8]`; appends FAD feature taps to `taps` when given."""
        x = F.relu(self.norm1(self.conv1(x)))
        _tap(taps, x)
        for layer in (self.layer1, self.layer2, self.layer3):
            x = layer(x)
            _tap(taps, x)
        x = self.conv2(x)
        _tap(taps, x)
        return x


def basic_encoder(output_dim: int, norm: str) -> ResNetEncoder:
    return ResNetEncoder(ResidualBlock, (64, 64, 96, 128), output_dim, norm)


def small_encoder(output_dim: int, norm: str) -> ResNetEncoder:
    return ResNetEncoder(BottleneckBlock, (32, 32, 64, 96), output_dim, norm)


def _tap(taps: list[Tensor] | None, x: Tensor) -> None:
    if taps is not None:
        taps.append(x)


def _init_like_raft(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
