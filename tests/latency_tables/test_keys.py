"""Keys cover every executed unit of sampled architectures exactly once, and all_keys contains them all."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from flownas.arch import SearchSpace
from flownas.registry import TINY_SPACE
from latency_tables.keys import Key, all_keys, encoder_keys, fixed_keys

FLOWNAS = SearchSpace.flownas()
RAFT_LARGE_WIDTHS = SimpleNamespace(feature_dim=256, hidden_dim=128, context_dim=128)
TINY_WIDTHS = SimpleNamespace(feature_dim=64, hidden_dim=32, context_dim=32)


def _archs(space: SearchSpace, n: int = 50, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(n)]


@pytest.mark.parametrize("space", [FLOWNAS, TINY_SPACE], ids=["flownas", "tiny"])
def test_keys_cover_every_block_once(space):
    for arch in _archs(space):
        keys = encoder_keys(arch, space, 384, 512, batch=1, decoder=RAFT_LARGE_WIDTHS)
        blocks = arch.blocks(space)
        assert len(keys) == 2 * (len(blocks) + 2)
        for encoder, batch, norm, out in (("fnet", 2, "instance", 256), ("cnet", 1, "batch", 256)):
            mine = [k for k in keys if k.encoder == encoder]
            assert [k.kind for k in mine] == ["stem"] + ["block"] * len(blocks) + ["head"]
            assert all(k.batch == batch for k in mine)
            assert mine[0].in_channels == 3 and mine[0].out_channels == space.stem_channels
            assert (mine[0].height, mine[0].width) == (384, 512)
            assert mine[-1].in_channels == blocks[-1].out_channels and mine[-1].out_channels == out
            # the encoder's output stride is 8: the head sees the 1/8 map
            assert (mine[-1].height, mine[-1].width) == (48, 64)
            size = (192, 256)
            for key, b in zip(mine[1:-1], blocks):
                assert (key.stage, key.first, key.in_channels, key.out_channels, key.kernel, key.expand,
                        key.mid_channels, key.stride, key.has_expand) == \
                    (b.stage, b.index == 0, b.in_channels, b.out_channels, b.kernel_size, b.expand_ratio,
                     b.mid_channels, b.stride, b.has_expand)
                assert key.norm == norm and (key.height, key.width) == size
                assert key.shortcut == (b.stride == 1 and b.in_channels == b.out_channels)
                size = (size[0] // b.stride, size[1] // b.stride)


def test_keys_match_the_static_encoder_modules():
    from flownas.models import TINY_DECODER, FlowNASNet

    for arch in _archs(TINY_SPACE, 20, seed=1):
        net = FlowNASNet(arch, TINY_SPACE, decoder=TINY_DECODER)
        keys = encoder_keys(arch, TINY_SPACE, 128, 128, decoder=TINY_DECODER)
        for encoder in (net.fnet, net.cnet):
            name = "fnet" if encoder is net.fnet else "cnet"
            blocks = [k for k in keys if k.encoder == name and k.kind == "block"]
            assert len(blocks) == len(encoder.blocks)
            for key, module in zip(blocks, encoder.blocks):
                s = module.shape
                assert (key.in_channels, key.out_channels, key.kernel, key.mid_channels, key.stride, key.has_expand,
                        key.norm, key.shortcut) == (s.in_channels, s.out_channels, s.kernel_size, s.mid_channels,
                                                     s.stride, s.has_expand, s.norm, s.identity_shortcut)
                # an expand conv exists exactly when the key says so
                assert (module.mobile_inverted_conv.inverted_bottleneck is not None) == key.has_expand
            head = [k for k in keys if k.encoder == name and k.kind == "head"][0]
            assert (head.in_channels, head.out_channels) == (encoder.last_conv.in_channels,
                                                             encoder.last_conv.out_channels)
            stem = [k for k in keys if k.encoder == name and k.kind == "stem"][0]
            conv = encoder.first_conv
            assert (stem.kernel, stem.stride, stem.out_channels) == (conv.kernel_size[0], conv.stride[0],
                                                                    conv.out_channels)


@pytest.mark.parametrize("space,res", [(FLOWNAS, (384, 512)), (TINY_SPACE, (128, 128))], ids=["flownas", "tiny"])
def test_all_keys_contains_every_sampled_key(space, res):
    table = {k.id: k for k in all_keys(space, *res, decoder=RAFT_LARGE_WIDTHS)}
    assert len(table) == len(all_keys(space, *res, decoder=RAFT_LARGE_WIDTHS))  # ids are distinct
    used = set()
    for arch in _archs(space, 200, seed=2):
        for key in encoder_keys(arch, space, *res, decoder=RAFT_LARGE_WIDTHS):
            assert table[key.id] == key
            used.add(key.id)
    for key in fixed_keys(*res, decoder=RAFT_LARGE_WIDTHS):
        assert table[key.id] == key
    if space is TINY_SPACE:  # 256 architectures: 200 samples reach every block key (checked exhaustively below)
        assert len(used) >= len(table) - 10


def test_all_keys_is_exactly_the_union_over_the_tiny_space():
    # The tiny space has 256 architectures: enumerate them all and compare (independent of the per-stage logic).
    import itertools

    genes = [TINY_SPACE.widths, TINY_SPACE.kernel_sizes, TINY_SPACE.depths, TINY_SPACE.expand_ratios]
    union = {k.id for k in fixed_keys(128, 128, decoder=TINY_WIDTHS)}
    from flownas.arch import ArchConfig

    for values in itertools.product(*[itertools.product(*g) for g in genes]):
        arch = ArchConfig.build(TINY_SPACE.genes, dict(zip(TINY_SPACE.gene_names, values)))
        union |= {k.id for k in encoder_keys(arch, TINY_SPACE, 128, 128, decoder=TINY_WIDTHS)}
    assert union == {k.id for k in all_keys(TINY_SPACE, 128, 128, decoder=TINY_WIDTHS)}


def test_flownas_key_count_at_384x512():
    # Per encoder, hand-counted: stage s gives |w| x |k| x |e| x (|previous widths| + 1 repeat form):
    # 2*2*1*(1+1) + 2*2*3*(2+1) + 2*2*3*(2+1) + 3*2*3*(2+1) + 3*2*1*(3+1) + 2*2*1*(3+1) = 174 blocks,
    # plus 1 stem and 2 heads (two last-stage widths); two encoders, plus prologue and step.
    keys = all_keys(FLOWNAS, 384, 512, decoder=RAFT_LARGE_WIDTHS)
    assert len(keys) == 2 * (174 + 1 + 2) + 2 == 356


def test_key_round_trip_and_id():
    key = all_keys(TINY_SPACE, 128, 128, decoder=TINY_WIDTHS)[3]
    as_strings = {k: str(v) for k, v in key.to_dict().items()}
    assert Key.from_dict(as_strings) == key
    assert key.id == Key.from_dict(key.to_dict()).id


def test_resolution_must_be_a_multiple_of_8():
    with pytest.raises(ValueError, match="multiples of 8"):
        all_keys(TINY_SPACE, 100, 128, decoder=TINY_WIDTHS)
