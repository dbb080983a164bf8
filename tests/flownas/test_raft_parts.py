"""RAFT building blocks checked against hand-computed values."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from flownas.nn.corr import CorrPyramid, all_pairs_correlation, coords_grid
from flownas.nn.padding import InputPadder
from flownas.nn.update import RAFT_LARGE_UPDATE, UpdateBlock, UpdateSpec, bilinear_upsample, convex_upsample


def test_coords_grid_is_x_then_y():
    grid = coords_grid(2, 3, 4)
    assert grid.shape == (2, 2, 3, 4)
    assert grid[0, 0, 2, 3] == 3 and grid[0, 1, 2, 3] == 2


def test_all_pairs_correlation_is_scaled_dot_product():
    gen = torch.Generator().manual_seed(0)
    f1, f2 = torch.randn(1, 16, 3, 5, generator=gen), torch.randn(1, 16, 3, 5, generator=gen)
    corr = all_pairs_correlation(f1, f2)
    assert corr.shape == (15, 1, 3, 5)
    # pixel (row 1, col 2) of image 1 against pixel (row 2, col 4) of image 2
    expected = (f1[0, :, 1, 2] * f2[0, :, 2, 4]).sum() / 4.0
    assert torch.allclose(corr[1 * 5 + 2, 0, 2, 4], expected, atol=1e-6)


def test_lookup_channel_order_matches_raft():
    """At zero flow, channel (dx+r)*(2r+1)+(dy+r) of level 0 is the correlation with pixel (x+dx, y+dy)."""
    gen = torch.Generator().manual_seed(1)
    f1, f2 = torch.randn(1, 8, 16, 16, generator=gen), torch.randn(1, 8, 16, 16, generator=gen)
    radius = 2
    pyramid = CorrPyramid(f1, f2, num_levels=2, radius=radius)
    out = pyramid(coords_grid(1, 16, 16))
    assert out.shape == (1, 2 * 25, 16, 16)
    y, x = 7, 9
    for dx in range(-radius, radius + 1):
        for dy in range(-radius, radius + 1):
            channel = (dx + radius) * 5 + (dy + radius)
            expected = (f1[0, :, y, x] * f2[0, :, y + dy, x + dx]).sum() / (8 ** 0.5)
            assert torch.allclose(out[0, channel, y, x], expected, atol=1e-5), (dx, dy)


def test_lookup_is_bilinear_and_zero_outside():
    f1 = torch.ones(1, 1, 8, 8)
    f2 = torch.arange(64, dtype=torch.float32).reshape(1, 1, 8, 8)
    pyramid = CorrPyramid(f1, f2, num_levels=1, radius=0)
    coords = torch.zeros(1, 2, 8, 8)
    coords[:, 0] = 2.5  # x between columns 2 and 3
    coords[:, 1] = 1.0
    out = pyramid(coords)
    assert torch.allclose(out, torch.full_like(out, 8 + 2.5))
    coords[:, 0] = -3.0  # far outside: zero padding
    assert torch.all(pyramid(coords) == 0)


@pytest.mark.parametrize("mode, expected", [("sintel", (2, 3, 1, 2)), ("kitti", (2, 3, 0, 3))])
def test_padder_amounts_and_round_trip(mode, expected):
    x = torch.rand(1, 3, 13, 19)  # pads 3 rows and 5 columns to reach 16x24
    padder = InputPadder(x.shape, mode=mode)
    assert padder.pad_lrtb == expected
    (padded,) = padder.pad(x)
    assert padded.shape[-2:] == (16, 24)
    assert torch.equal(padder.unpad(padded), x)
    # replicate padding copies the edge
    left, _, top, _ = expected
    assert torch.equal(padded[..., top, :left], x[..., 0, :1].expand(-1, -1, left))


def test_padder_rejects_unknown_mode():
    with pytest.raises(ValueError, match="padding mode 'middle'"):
        InputPadder((8, 8), mode="middle")


def test_convex_upsample_of_constant_flow_is_scaled_constant_inside():
    flow = torch.tensor([1.5, -0.5]).view(1, 2, 1, 1).expand(1, 2, 4, 5).contiguous()
    mask = torch.randn(1, 9 * 64, 4, 5)
    up = convex_upsample(flow, mask)
    assert up.shape == (1, 2, 32, 40)
    interior = up[:, :, 8:24, 8:32]  # away from the zero-padded border of the 3x3 unfold
    assert torch.allclose(interior, (8 * flow[:, :, :1, :1]).expand_as(interior), atol=1e-5)


def test_convex_upsample_with_peaked_mask_copies_neighbour():
    flow = torch.randn(1, 2, 3, 3)
    mask = torch.full((1, 9, 8, 8, 3, 3), -1e4)
    mask[:, 4] = 1e4  # all weight on the centre of the 3x3 neighbourhood
    up = convex_upsample(flow, mask.view(1, 9 * 64, 3, 3))
    expected = 8 * flow.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)
    assert torch.allclose(up, expected, atol=1e-4)


def test_bilinear_upsample_scales_values_and_size():
    flow = torch.randn(1, 2, 4, 6)
    up = bilinear_upsample(flow)
    assert up.shape == (1, 2, 32, 48)
    assert torch.allclose(up[..., 0, 0], 8 * flow[..., 0, 0]) and torch.allclose(up[..., -1, -1], 8 * flow[..., -1, -1])
    assert torch.allclose(up, 8 * F.interpolate(flow, size=(32, 48), mode="bilinear", align_corners=True))


@pytest.mark.parametrize("batch, height, width, radius", [(2, 24, 20, 4), (1, 27, 35, 3)])
def test_gather_lookup_equals_grid_sample_lookup(batch, height, width, radius):
    gen = torch.Generator().manual_seed(2)
    f1, f2 = torch.randn(batch, 16, height, width, generator=gen), torch.randn(batch, 16, height, width, generator=gen)
    coords = coords_grid(batch, height, width) + torch.randn(batch, 2, height, width, generator=gen) * 15
    coords[0, :, 0, 0] = torch.tensor([-100.0, 300.0])  # a window far outside the volume
    reference = CorrPyramid(f1, f2, 4, radius)(coords)
    gathered = CorrPyramid(f1, f2, 4, radius, lookup="gather")(coords)
    assert gathered.shape == reference.shape
    assert torch.allclose(gathered, reference, atol=1e-5)


def test_unknown_lookup_is_refused():
    with pytest.raises(ValueError, match="lookup 'bicubic'"):
        CorrPyramid(torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 8, 8), lookup="bicubic")


def test_update_block_from_a_spec_without_mask_or_second_corr_conv():
    spec = UpdateSpec(corr_dims=(12,), flow_dims=(8, 4), motion_dim=10, flow_head_dim=6, mask_dim=0,
                      separable_gru=False)
    block = UpdateBlock(corr_channels=9, hidden_dim=5, context_dim=7, spec=spec)
    assert block.encoder.convc2 is None and not hasattr(block, "mask")
    assert block.encoder.conv.weight.shape == (8, 12 + 4, 3, 3)  # motion_dim - 2 outputs, the flow is appended
    assert block.gru.convz.weight.shape == (5, 5 + 7 + 10, 3, 3)
    net, mask, delta = block(torch.zeros(2, 5, 4, 6), torch.zeros(2, 7, 4, 6), torch.zeros(2, 9, 4, 6),
                             torch.zeros(2, 2, 4, 6))
    assert net.shape == (2, 5, 4, 6) and mask is None and delta.shape == (2, 2, 4, 6)


def test_update_block_mask_head_predicts_a_softmax_per_fine_pixel():
    block = UpdateBlock(corr_channels=9, hidden_dim=5, context_dim=7, spec=RAFT_LARGE_UPDATE)
    args = (torch.zeros(1, 5, 3, 4), torch.zeros(1, 7, 3, 4), torch.zeros(1, 9, 3, 4), torch.zeros(1, 2, 3, 4))
    _, mask, _ = block(*args)
    assert mask.shape == (1, 9 * 8 * 8, 3, 4)
    assert block(*args, compute_mask=False)[1] is None
