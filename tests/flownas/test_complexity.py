"""Parameter and MAC counts against formulas worked out independently from the block specs."""
from __future__ import annotations

import pytest
import torch

from flownas.arch import ArchConfig, SearchSpace, resolve_arch
from flownas.complexity import count_macs, count_parameters
from flownas.models import RAFT, TINY_DECODER, FlowNASNet
from flownas.registry import TINY_SPACE, list_models, model_entry

SPACE = SearchSpace.flownas()


def _encoder_params(arch, batch_norm: bool, space=SPACE, out: int = 256) -> int:
    """Stem conv (+bias) [+BN], every block's convs [+BNs], the 1x1 head to `out` channels."""
    bn = 2 if batch_norm else 0  # weight and bias per channel
    stem = space.stem_channels
    total = 3 * stem * 49 + stem + bn * stem
    blocks = arch.blocks(space)
    for b in blocks:
        if b.has_expand:
            total += b.in_channels * b.mid_channels + bn * b.mid_channels
        total += b.mid_channels * b.kernel_size ** 2 + bn * b.mid_channels
        total += b.mid_channels * b.out_channels + bn * b.out_channels
        if b.in_channels != b.out_channels:
            total += b.in_channels * b.out_channels
    return total + blocks[-1].out_channels * out


def _encoder_macs(arch, height: int, width: int, space=SPACE, out: int = 256) -> int:
    """MACs of one encoder on one image: conv output pixels times (inputs per group x kernel area)."""
    h, w = height // 2, width // 2
    total = h * w * space.stem_channels * 3 * 49
    blocks = arch.blocks(space)
    for b in blocks:
        if b.has_expand:
            total += h * w * b.in_channels * b.mid_channels
        h, w = h // b.stride, w // b.stride
        total += h * w * b.mid_channels * b.kernel_size ** 2
        total += h * w * b.mid_channels * b.out_channels
        if b.in_channels != b.out_channels:
            total += h * w * b.in_channels * b.out_channels
    return total + h * w * blocks[-1].out_channels * out


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
    assert counts["total"] == counts["fnet"] + counts["cnet"] + counts["update_block"]


def test_raft_k_total_is_the_block_formula_sum():
    # The number `arch show raft-k` prints (tests/test_cli.py), from the formula rather than from the model.
    arch = resolve_arch("raft-k")
    update = count_parameters(RAFT())["update_block"]
    assert _encoder_params(arch, batch_norm=False) + _encoder_params(arch, batch_norm=True) + update == 5_101_712


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


@pytest.mark.parametrize("name", [n for n in list_models(tag="test") if model_entry(n).family == "flownas"])
def test_tiny_registered_counts_match_block_formula(name):
    # The tiny space (stem 16) and tiny decoder (features 64, hidden + context 32 + 32) change every width.
    config = model_entry(name).config_dict()
    arch = ArchConfig.from_dict(config["arch"], TINY_SPACE)
    feature, context = TINY_DECODER.feature_dim, TINY_DECODER.hidden_dim + TINY_DECODER.context_dim
    with torch.device("meta"):
        counts = count_parameters(FlowNASNet(arch, TINY_SPACE, decoder=TINY_DECODER))
    assert counts["fnet"] == _encoder_params(arch, False, TINY_SPACE, feature)
    assert counts["cnet"] == _encoder_params(arch, True, TINY_SPACE, context)
    macs = count_macs(config, 128, 160, iters=1)
    assert macs["fnet"] == 2 * _encoder_macs(arch, 128, 160, TINY_SPACE, feature)
    assert macs["cnet"] == _encoder_macs(arch, 128, 160, TINY_SPACE, context)
    hw = (128 // 8) * (160 // 8)
    assert macs["correlation"] == hw * hw * feature  # all-pairs dot products over the feature channels
