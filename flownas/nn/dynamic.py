"""Weight-sharing (dynamic) FlowNAS encoder: one set of max-size weights, sliced per architecture.

Module names reproduce the FlowNAS release (`blocks.N.mobile_inverted_conv.depth_conv.conv.conv.weight`,
`...bn.bn.running_mean`, `shortcut.conv.conv.weight`, `last_conv.point_linear.conv.conv.weight`) so its
state dicts load directly. A smaller choice uses the leading slice `w[:out, :in]`; a 3x3 depthwise kernel is
the centre crop of the stored 5x5 one.
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..arch import ArchConfig, SearchSpace, expanded_channels, mid_channels
from .mbconv import BlockShape, MBBlock, StaticEncoder, encoder_shapes, make_norm2d, shortcut_pool, stage_ends


class DynamicPointConv(nn.Module):
    """1x1 conv whose active input channels follow the input and output channels are chosen per call."""

    def __init__(self, max_in: int, max_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(max_in, max_out, 1, bias=False)

    def sliced_weight(self, in_channels: int, out_channels: int) -> Tensor:
        return self.conv.weight[:out_channels, :in_channels]

    def forward(self, x: Tensor, out_channels: int) -> Tensor:
        return F.conv2d(x, self.sliced_weight(x.shape[1], out_channels))


class DynamicDepthwiseConv(nn.Module):
    def __init__(self, max_channels: int, max_kernel: int) -> None:
        super().__init__()
        self.max_kernel = max_kernel
        self.conv = nn.Conv2d(max_channels, max_channels, max_kernel, groups=max_channels, bias=False)

    def sliced_weight(self, channels: int, kernel: int) -> Tensor:
        start = (self.max_kernel - kernel) // 2
        return self.conv.weight[:channels, :, start : start + kernel, start : start + kernel]

    def forward(self, x: Tensor, kernel: int, stride: int) -> Tensor:
        channels = x.shape[1]
        weight = self.sliced_weight(channels, kernel)
        return F.conv2d(x, weight, stride=stride, padding=kernel // 2, groups=channels)


class DynamicBatchNorm(nn.Module):
    """BatchNorm over the leading channels; sliced running statistics are updated in place in training."""

    def __init__(self, max_channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(max_channels)

    def forward(self, x: Tensor) -> Tensor:
        c, bn = x.shape[1], self.bn
        use_batch_stats = bn.training or bn.running_mean is None
        momentum = 0.0 if bn.momentum is None else bn.momentum
        if bn.training and bn.momentum is None:  # cumulative average, as nn.BatchNorm2d does
            bn.num_batches_tracked.add_(1)
            momentum = 1.0 / float(bn.num_batches_tracked)
        return F.batch_norm(
            x, bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c],
            use_batch_stats, momentum, bn.eps,
        )

    def copy_to(self, target: nn.BatchNorm2d) -> None:
        c = target.num_features
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(target, name).data.copy_(getattr(self.bn, name).data[:c])
        target.num_batches_tracked.data.copy_(self.bn.num_batches_tracked.data)


class DynamicInstanceNorm(nn.Module):
    """InstanceNorm without parameters: nothing to slice."""

    def forward(self, x: Tensor) -> Tensor:
        return F.instance_norm(x)


def dynamic_norm(kind: str, channels: int) -> nn.Module:
    return DynamicBatchNorm(channels) if kind == "batch" else DynamicInstanceNorm()


class DynamicConvLayer(nn.Module):
    """conv (+ norm) (+ ReLU), named `.conv.conv` / `.bn.bn` as in the release."""

    def __init__(self, conv: nn.Module, norm: nn.Module | None, relu: bool) -> None:
        super().__init__()
        self.conv = conv
        self.bn = norm
        self.relu = relu

    def forward(self, x: Tensor, *conv_args: int) -> Tensor:
        x = self.conv(x, *conv_args)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class DynamicMBBlock(nn.Module):
    """One supernet block slot; `active_*` attributes are set by `SuperEncoder.set_active`."""

    def __init__(self, max_in: int, max_out: int, max_kernel: int, max_expand: int, stride: int, has_expand: bool, norm: str):
        super().__init__()
        self.stride, self.has_expand, self.norm = stride, has_expand, norm
        max_mid = expanded_channels(max_in, max_expand)
        conv = nn.Module()
        if has_expand:
            conv.inverted_bottleneck = DynamicConvLayer(DynamicPointConv(max_in, max_mid), dynamic_norm(norm, max_mid), True)
        conv.depth_conv = DynamicConvLayer(DynamicDepthwiseConv(max_mid, max_kernel), dynamic_norm(norm, max_mid), True)
        conv.point_linear = DynamicConvLayer(DynamicPointConv(max_mid, max_out), dynamic_norm(norm, max_out), False)
        self.mobile_inverted_conv = conv
        self.shortcut = DynamicConvLayer(DynamicPointConv(max_in, max_out), None, False)
        self.active_out, self.active_kernel, self.active_expand = max_out, max_kernel, max_expand

    def shape(self, in_channels: int) -> BlockShape:
        mid = mid_channels(in_channels, self.active_expand, self.has_expand)
        return BlockShape(in_channels, self.active_out, self.active_kernel, mid, self.stride, self.has_expand, self.norm)

    def forward(self, x: Tensor) -> Tensor:
        shape = self.shape(x.shape[1])
        conv = self.mobile_inverted_conv
        y = conv.inverted_bottleneck(x, shape.mid_channels) if shape.has_expand else x
        y = conv.depth_conv(y, shape.kernel_size, shape.stride)
        y = conv.point_linear(y, shape.out_channels)
        if shape.identity_shortcut:
            return y + x
        skip = shortcut_pool(x, shape.stride)
        return y + (self.shortcut(skip, shape.out_channels) if shape.shortcut_conv else skip)

    def copy_to(self, block: MBBlock) -> None:
        """Copy the active slice of every weight into a static block of the active shape."""
        shape = block.shape
        src, dst = self.mobile_inverted_conv, block.mobile_inverted_conv
        if shape.has_expand:
            weight = src.inverted_bottleneck.conv.sliced_weight(shape.in_channels, shape.mid_channels)
            _copy_layer(src.inverted_bottleneck, dst.inverted_bottleneck, weight)
        weight = src.depth_conv.conv.sliced_weight(shape.mid_channels, shape.kernel_size)
        _copy_layer(src.depth_conv, dst.depth_conv, weight)
        weight = src.point_linear.conv.sliced_weight(shape.mid_channels, shape.out_channels)
        _copy_layer(src.point_linear, dst.point_linear, weight)
        if shape.shortcut_conv:
            block.shortcut.conv.weight.data.copy_(self.shortcut.conv.sliced_weight(shape.in_channels, shape.out_channels))


def _copy_layer(src: DynamicConvLayer, dst: nn.Module, weight: Tensor) -> None:
    dst.conv.weight.data.copy_(weight)
    if isinstance(src.bn, DynamicBatchNorm):
        src.bn.copy_to(dst.norm)


class SuperEncoder(nn.Module):
    """Supernet encoder over a `SearchSpace`: blocks are numbered by slot (stage offsets)."""

    def __init__(self, space: SearchSpace, norm: str, output_dim: int) -> None:
        super().__init__()
        self.space, self.norm_kind, self.output_dim = space, norm, output_dim
        self.first_conv = nn.Conv2d(3, space.stem_channels, 7, stride=2, padding=3, bias=True)
        self.norm1 = make_norm2d(norm, space.stem_channels)
        self.blocks = nn.ModuleList(self._build_slots())
        max_width = max(space.widths[-1])
        head = nn.Module()
        head.point_linear = DynamicConvLayer(DynamicPointConv(max_width, output_dim), None, False)
        self.last_conv = head
        self.active_arch = space.largest()
        self._zero_init_last_norms()

    def _zero_init_last_norms(self) -> None:
        """Each block starts as its shortcut: the last BN scale is zero, as in the FlowNAS release."""
        for block in self.blocks:
            norm = block.mobile_inverted_conv.point_linear.bn
            if isinstance(norm, DynamicBatchNorm):
                nn.init.zeros_(norm.bn.weight)

    def _build_slots(self) -> list[DynamicMBBlock]:
        space, slots = self.space, []
        prev_max = space.stem_channels
        for stage, stride in enumerate(space.strides):
            max_out, max_expand = max(space.widths[stage]), max(space.expand_ratios[stage])
            has_expand = max_expand > 1
            for j in range(max(space.depths[stage])):
                max_in = prev_max if j == 0 else max_out
                slots.append(DynamicMBBlock(max_in, max_out, max(space.kernel_sizes[stage]), max_expand,
                                            stride if j == 0 else 1, has_expand, self.norm_kind))
            prev_max = max_out
        return slots

    def set_active(self, arch: ArchConfig) -> None:
        for stage, offset in enumerate(self.space.stage_offsets):
            for j in range(max(self.space.depths[stage])):
                block = self.blocks[offset + j]
                block.active_out = arch.width[stage]
                block.active_kernel = arch.kernel_size[stage]
                block.active_expand = arch.expand_ratio[stage]
        self.active_arch = arch

    def active_blocks(self) -> list[DynamicMBBlock]:
        depths = self.active_arch.depth
        return [self.blocks[off + j] for off, d in zip(self.space.stage_offsets, depths) for j in range(d)]

    def forward(self, x: Tensor, taps: list[Tensor] | None = None) -> Tensor:
        """`[B,3,H,W]` -> `[B,output_dim,H/8,W/8]` for the active architecture."""
        x = F.relu(self.norm1(self.first_conv(x)))
        if taps is not None:
            taps.append(x)
        tap_after = {stage_ends(self.active_arch)[i] for i in (1, 3, 5) if i < len(self.active_arch.depth)}
        for index, block in enumerate(self.active_blocks(), start=1):
            x = block(x)
            if taps is not None and index in tap_after:
                taps.append(x)
        x = self.last_conv.point_linear(x, self.output_dim)
        if taps is not None:
            taps.append(x)
        return x

    def active_shapes(self) -> list[BlockShape]:
        return encoder_shapes(self.active_arch, self.space, self.norm_kind)

    def extract(self) -> StaticEncoder:
        """A static encoder for the active architecture with the weights copied."""
        shapes = self.active_shapes()
        static = StaticEncoder(shapes, stage_ends(self.active_arch), self.space.stem_channels, self.output_dim, self.norm_kind)
        for block, target in zip(self.active_blocks(), static.blocks):
            block.copy_to(target)
        static.first_conv.load_state_dict(self.first_conv.state_dict())
        static.norm1.load_state_dict(self.norm1.state_dict())
        head = self.last_conv.point_linear.conv.sliced_weight(shapes[-1].out_channels, self.output_dim)
        static.last_conv.weight.data.copy_(head)
        return static
