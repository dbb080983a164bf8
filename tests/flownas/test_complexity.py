"""Parameter and MAC counts against formulas worked out independently from the block specs."""
from __future__ import annotations

import pytest
import torch

from flownas.arch import resolve_arch
from flownas.complexity import count_macs, count_parameters
from flownas.models import RAFT, FlowNASNet



def _encoder_params(arch, batch_norm: bool) -> int:
    """Stem conv (+bias) [+BN], every block's convs [+BNs], the 1x1 head to 256 channels."""
    bn = 2 if batch_norm else 0  # weight and bias per channel
    total = 3 * 64 * 49 + 64 + bn * 64
    for b in arch.blocks():
        if b.has_expand:
            total += b.in_channels * b.mid_channels + bn * b.mid_channels
        total += b.mid_channels * b.kernel_size ** 2 + bn * b.mid_channels
        total += b.mid_channels * b.out_channels + bn * b.out_channels
        if b.in_channels != b.out_channels:
            total += b.in_channels * b.out_channels
    return total + arch.blocks()[-1].out_channels * 256


def _encoder_macs(arch, height: int, width: int) -> int:
    """MACs of one encoder on one image: conv output pixels times (inputs per group x kernel area)."""
    h, w = height // 2, width // 2
    total = h * w * 64 * 3 * 49
    for b in arch.blocks():
        if b.has_expand:
            total += h * w * b.in_channels * b.mid_channels
        h, w = h // b.stride, w // b.stride
        total += h * w * b.mid_channels * b.kernel_size ** 2
        total += h * w * b.mid_channels * b.out_channels
        if b.in_channels != b.out_channels:
            total += h * w * b.in_channels * b.out_channels
    return total + h * w * arch.blocks()[-1].out_channels * 256


def test_raft_large_counts_published_parameters():
    counts = count_parameters(RAFT())
    assert counts["total"] == 5_257_536
    assert counts["fnet"] + counts["cnet"] + counts["update_block"] == counts["total"]


@pytest.mark.parametrize("name", ["raft-s", "raft-k", "largest", "smallest"])
def test_flownas_parameters_match_block_formula(name):
    arch = resolve_arch(name)
    with torch.device("meta"):
        counts = count_parameters(FlowNASNet(arch))
    raft = count_parameters(RAFT())
    assert counts["fnet"] == _encoder_params(arch, batch_norm=False)
    assert counts["cnet"] == _encoder_params(arch, batch_norm=True)
    assert counts["update_block"] == raft["update_block"]  # the decoder is RAFT-large's


@pytest.mark.parametrize("name", ["raft-k", "smallest"])
def test_flownas_macs_match_block_formula(name):
    arch = resolve_arch(name)
    config = {"family": "flownas", "arch": arch.to_dict()}
    macs = count_macs(config, 128, 192, iters=1)
    assert macs["fnet"] == 2 * _encoder_macs(arch, 128, 192)  # the feature encoder sees both images
    assert macs["cnet"] == _encoder_macs(arch, 128, 192)
    hw = (128 // 8) * (192 // 8)
    assert macs["correlation"] == hw * hw * 256


def test_update_macs_scale_with_iterations():
    config = {"family": "raft", "variant": "small"}
    one, three = count_macs(config, 128, 128, iters=1), count_macs(config, 128, 128, iters=3)
    assert three["update_block"] == 3 * one["update_block"]
    assert three["fnet"] == one["fnet"] and three["cnet"] == one["cnet"]
