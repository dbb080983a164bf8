"""The memory-lean correlation: the same samples and the same flow as the all-pairs volume."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import random_published_state
from flownas.arch import SearchSpace, resolve_arch
from flownas.models import TINY_DECODER, FlowNASSupernet
from flownas.nn.corr import CorrPyramid, LeanCorrelation, coords_grid, lean_bytes_per_pixel
from flownas.weights import load_model


# A tiny search space (widths 8-32) for the tiny decoder, in the published dict format.
TINY_SPACE = {"width": [[8, 16], [16], [16, 24], [24], [24, 32], [32]], "kernel_size": [[3, 5]] * 6,
              "depth": [[1, 2]] * 6, "expand_ratio": [[1, 2]] * 6}


def _features(batch: int, dim: int, height: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, dim, height, width, generator=gen), torch.randn(batch, dim, height, width, generator=gen)


@pytest.mark.parametrize("batch, height, width, radius", [(2, 24, 20, 4), (1, 27, 35, 3), (1, 17, 22, 2)])
def test_lean_samples_equal_the_pyramid(batch, height, width, radius):
    f1, f2 = _features(batch, 16, height, width, seed=2)
    gen = torch.Generator().manual_seed(3)
    coords = coords_grid(batch, height, width) + torch.randn(batch, 2, height, width, generator=gen) * 15
    coords[0, :, 0, 0] = torch.tensor([-100.0, 300.0])  # a window far outside the volume: all zeros
    reference = CorrPyramid(f1, f2, 4, radius)(coords)
    # a chunk of 7 pixels: many chunks, the last one partial
    lean = LeanCorrelation(f1, f2, 4, radius, chunk_bytes=7 * lean_bytes_per_pixel(batch, 16, radius))
    assert lean.chunk == 7
    samples = lean(coords)
    assert samples.shape == reference.shape and samples.dtype == torch.float32
    assert torch.allclose(samples, reference, atol=1e-5), (samples - reference).abs().max()
    assert torch.all(samples[0, :, 0, 0] == 0)


def test_lean_channel_order_and_pooled_level_by_hand():
    """Level 0 at zero flow: channel (dx+r)*(2r+1)+(dy+r) is <f1(x,y), f2(x+dx,y+dy)>/sqrt(C); level 1 uses
    fmap2 averaged over 2x2 blocks with the odd last row/column dropped."""
    f1, f2 = _features(1, 8, 11, 13, seed=4)
    radius, taps = 2, 25
    out = LeanCorrelation(f1, f2, num_levels=2, radius=radius)(coords_grid(1, 11, 13))
    y, x = 5, 6
    for dx in range(-radius, radius + 1):
        for dy in range(-radius, radius + 1):
            channel = (dx + radius) * 5 + (dy + radius)
            expected = (f1[0, :, y, x] * f2[0, :, y + dy, x + dx]).sum() / 8**0.5
            assert torch.allclose(out[0, channel, y, x], expected, atol=1e-5), (dx, dy)
    # level 1 at pixel (x=6, y=5): centre (3, 2.5) on the 5x6 pooled map; offset dx=-1, dy=+0 -> (2, 2.5),
    # halfway between pooled rows 2 and 3 of column 2
    pooled = [[f2[0, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean(dim=(1, 2)) for j in range(6)] for i in range(5)]
    expected = (f1[0, :, y, x] * (pooled[2][2] + pooled[3][2]) / 2).sum() / 8**0.5
    channel = taps + (-1 + radius) * 5 + (0 + radius)
    assert torch.allclose(out[0, channel, y, x], expected, atol=1e-5)


def test_lean_pooling_matches_avg_pool_of_the_volume_on_odd_sizes():
    f1, f2 = _features(1, 4, 9, 7, seed=5)
    pyramid = CorrPyramid(f1, f2, num_levels=3, radius=0)
    lean = LeanCorrelation(f1, f2, num_levels=3, radius=0)
    assert [tuple(level.shape[-2:]) for level in lean.levels] == [tuple(v.shape[-2:]) for v in pyramid.pyramid]
    assert [tuple(level.shape[-2:]) for level in lean.levels] == [(9, 7), (4, 3), (2, 1)]
    assert torch.allclose(lean.levels[1], F.avg_pool2d(f2, 2), atol=1e-6)


def _pair(height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    image1 = torch.rand(1, 3, height, width, generator=gen) * 255
    return image1, torch.roll(image1, shifts=(2, 3), dims=(2, 3))


def _model(name: str, published_keys: dict):
    if name == "raft-large":
        return load_model(random_published_state(published_keys, "raft-large", seed=0))
    if name == "raft-small":
        return load_model(random_published_state(published_keys, "raft-small", seed=0))
    supernet = load_model(random_published_state(published_keys, "flownas", seed=3))
    return supernet.extract(resolve_arch("raft-k")).eval()


def _assert_same_flow(model, height: int, width: int, iters: int = 12) -> None:
    image1, image2 = _pair(height, width)
    with torch.no_grad():
        reference = model(image1, image2, iters=iters)
        lean = model(image1, image2, iters=iters, corr="lean")
    assert lean.shape == reference.shape == (1, 2, height, width)
    # The two sum the same products in another order; over 12 iterations float32 rounding grows with the flow's
    # size (on AVX2 kernels a 30 px flow differed by 1.0e-4), so the bound is relative to it.
    bound = 1e-4 + 1e-5 * reference.abs().max()
    assert (lean - reference).abs().max() <= bound, ((lean - reference).abs().max(), bound)


# 136 -> 17 rows at 1/8 (odd at level 0); 157x211 pads to 160x216 -> 20x27, pooled 10x13, 5x6, 2x3
# RAFT large and the FlowNAS net take 10-40 s each on 2 busy cores: marked slow, they run in `make test`.
@pytest.mark.parametrize("name, size", [
    ("raft-small", (128, 136)),
    ("raft-small", (157, 211)),
    pytest.param("raft-large", (136, 200), marks=pytest.mark.slow),
    pytest.param("raft-large", (157, 211), marks=pytest.mark.slow),
    pytest.param("raft-k", (128, 136), marks=pytest.mark.slow),
    pytest.param("raft-k", (157, 211), marks=pytest.mark.slow),
])
def test_lean_flow_equals_all_pairs_flow(published_keys, name, size):
    _assert_same_flow(_model(name, published_keys), *size)


def test_lean_flow_equals_all_pairs_with_the_tiny_decoder():
    torch.manual_seed(0)
    space = SearchSpace.from_dict(TINY_SPACE)
    net = FlowNASSupernet(space, decoder=TINY_DECODER).extract(space.largest()).eval()
    _assert_same_flow(net, 133, 150)


def test_unknown_correlation_mode_is_refused(published_keys):
    model = _model("raft-small", published_keys)
    with pytest.raises(ValueError, match="corr must be one of all-pairs, lean, got 'sparse'"):
        model(*_pair(128, 128), iters=1, corr="sparse")
