"""RAFT's recurrent update operators and flow upsampling.

Module and parameter names follow the princeton-vl release so its checkpoints load without renaming.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


class FlowHead(nn.Module):
    def __init__(self, input_dim: int = 128, hidden_dim: int = 256) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(input_dim, hidden_dim, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden_dim, 2, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(F.relu(self.conv1(x)))


class ConvGRU(nn.Module):
    """3x3 convolutional GRU (RAFT small)."""

    def __init__(self, hidden_dim: int, input_dim: int) -> None:
        super().__init__()
        self.convz = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)
        self.convr = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)
        self.convq = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        return _gru_step(h, x, self.convz, self.convr, self.convq)


class SepConvGRU(nn.Module):
    """Separable GRU: a 1x5 (horizontal) step followed by a 5x1 (vertical) step (RAFT large)."""

    def __init__(self, hidden_dim: int = 128, input_dim: int = 256) -> None:
        super().__init__()
        channels = hidden_dim + input_dim
        self.convz1 = nn.Conv2d(channels, hidden_dim, (1, 5), padding=(0, 2))
        self.convr1 = nn.Conv2d(channels, hidden_dim, (1, 5), padding=(0, 2))
        self.convq1 = nn.Conv2d(channels, hidden_dim, (1, 5), padding=(0, 2))
        self.convz2 = nn.Conv2d(channels, hidden_dim, (5, 1), padding=(2, 0))
        self.convr2 = nn.Conv2d(channels, hidden_dim, (5, 1), padding=(2, 0))
        self.convq2 = nn.Conv2d(channels, hidden_dim, (5, 1), padding=(2, 0))

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        h = _gru_step(h, x, self.convz1, self.convr1, self.convq1)
        return _gru_step(h, x, self.convz2, self.convr2, self.convq2)


def _gru_step(h: Tensor, x: Tensor, convz: nn.Module, convr: nn.Module, convq: nn.Module) -> Tensor:
    hx = torch.cat([h, x], dim=1)
    z = torch.sigmoid(convz(hx))
    r = torch.sigmoid(convr(hx))
    q = torch.tanh(convq(torch.cat([r * h, x], dim=1)))
    return (1 - z) * h + z * q


class BasicMotionEncoder(nn.Module):
    """Encodes correlation samples and the current flow into 126 + 2 motion channels."""

    def __init__(self, corr_channels: int) -> None:
        super().__init__()
        self.convc1 = nn.Conv2d(corr_channels, 256, 1, padding=0)
        self.convc2 = nn.Conv2d(256, 192, 3, padding=1)
        self.convf1 = nn.Conv2d(2, 128, 7, padding=3)
        self.convf2 = nn.Conv2d(128, 64, 3, padding=1)
        self.conv = nn.Conv2d(64 + 192, 128 - 2, 3, padding=1)

    def forward(self, flow: Tensor, corr: Tensor) -> Tensor:
        cor = F.relu(self.convc2(F.relu(self.convc1(corr))))
        flo = F.relu(self.convf2(F.relu(self.convf1(flow))))
        out = F.relu(self.conv(torch.cat([cor, flo], dim=1)))
        return torch.cat([out, flow], dim=1)


class SmallMotionEncoder(nn.Module):
    """RAFT small's motion encoder: 80 + 2 motion channels."""

    def __init__(self, corr_channels: int) -> None:
        super().__init__()
        self.convc1 = nn.Conv2d(corr_channels, 96, 1, padding=0)
        self.convf1 = nn.Conv2d(2, 64, 7, padding=3)
        self.convf2 = nn.Conv2d(64, 32, 3, padding=1)
        self.conv = nn.Conv2d(128, 80, 3, padding=1)

    def forward(self, flow: Tensor, corr: Tensor) -> Tensor:
        cor = F.relu(self.convc1(corr))
        flo = F.relu(self.convf2(F.relu(self.convf1(flow))))
        out = F.relu(self.conv(torch.cat([cor, flo], dim=1)))
        return torch.cat([out, flow], dim=1)


class BasicUpdateBlock(nn.Module):
    """RAFT large: motion encoder, separable GRU, flow head and the convex-upsampling mask head."""

    def __init__(self, corr_channels: int, hidden_dim: int = 128, context_dim: int = 128) -> None:
        super().__init__()
        self.encoder = BasicMotionEncoder(corr_channels)
        self.gru = SepConvGRU(hidden_dim=hidden_dim, input_dim=context_dim + 128)
        self.flow_head = FlowHead(hidden_dim, hidden_dim=256)
        self.mask = nn.Sequential(
            nn.Conv2d(hidden_dim, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 64 * 9, 1, padding=0),
        )

    def forward(
        self, net: Tensor, inp: Tensor, corr: Tensor, flow: Tensor, compute_mask: bool = True
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """One GRU step; the upsampling mask is skipped when the caller will not upsample this step."""
        motion = self.encoder(flow, corr)
        net = self.gru(net, torch.cat([inp, motion], dim=1))
        delta_flow = self.flow_head(net)
        # The 0.25 scale balances gradients (RAFT paper); it is part of the published weights' behaviour.
        mask = 0.25 * self.mask(net) if compute_mask else None
        return net, mask, delta_flow


class SmallUpdateBlock(nn.Module):
    """RAFT small: 3x3 GRU, no mask head (flow is upsampled bilinearly)."""

    def __init__(self, corr_channels: int, hidden_dim: int = 96, context_dim: int = 64) -> None:
        super().__init__()
        self.encoder = SmallMotionEncoder(corr_channels)
        self.gru = ConvGRU(hidden_dim=hidden_dim, input_dim=context_dim + 82)
        self.flow_head = FlowHead(hidden_dim, hidden_dim=128)

    def forward(
        self, net: Tensor, inp: Tensor, corr: Tensor, flow: Tensor, compute_mask: bool = True
    ) -> tuple[Tensor, None, Tensor]:
        motion = self.encoder(flow, corr)
        net = self.gru(net, torch.cat([inp, motion], dim=1))
        return net, None, self.flow_head(net)


def convex_upsample(flow: Tensor, mask: Tensor, factor: int = 8) -> Tensor:
    """`[B,2,H,W]` flow -> `[B,2,8H,8W]`: each fine pixel is a softmax-weighted 3x3 combination."""
    batch, _, ht, wd = flow.shape
    mask = torch.softmax(mask.view(batch, 1, 9, factor, factor, ht, wd), dim=2)
    up = F.unfold(factor * flow, [3, 3], padding=1).view(batch, 2, 9, 1, 1, ht, wd)
    up = torch.sum(mask * up, dim=2).permute(0, 1, 4, 2, 5, 3)
    return up.reshape(batch, 2, factor * ht, factor * wd)


def bilinear_upsample(flow: Tensor, factor: int = 8) -> Tensor:
    """RAFT small's upsampling: bilinear resize (align_corners=True) with values scaled by `factor`."""
    size = (factor * flow.shape[2], factor * flow.shape[3])
    return factor * F.interpolate(flow, size=size, mode="bilinear", align_corners=True)
