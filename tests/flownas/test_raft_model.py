"""RAFT end to end: forward contract, padding, parameter counts."""
from __future__ import annotations

import pytest
import torch

from flownas.models import RAFT


@pytest.fixture(scope="module")
def raft_small():
    torch.manual_seed(0)
    return RAFT(small=True).eval()


def _pair(h: int, w: int, batch: int = 1, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    image1 = torch.rand(batch, 3, h, w, generator=gen) * 255
    return image1, torch.roll(image1, shifts=(1, 2), dims=(2, 3))


@pytest.mark.parametrize("small, expected", [(False, 5_257_536), (True, 990_162)])
def test_parameter_counts_match_published(small, expected):
    assert sum(p.numel() for p in RAFT(small=small).parameters()) == expected


def test_eval_returns_full_resolution_flow_for_any_size(raft_small):
    image1, image2 = _pair(131, 141)
    with torch.no_grad():
        flow = raft_small(image1, image2, iters=2)
    assert flow.shape == (1, 2, 131, 141) and flow.dtype == torch.float32
    assert torch.isfinite(flow).all()


def test_train_mode_returns_every_iteration(raft_small):
    image1, image2 = _pair(128, 136)
    raft_small.train()
    try:
        predictions = raft_small(image1, image2, iters=3)
    finally:
        raft_small.eval()
    assert isinstance(predictions, list) and len(predictions) == 3
    assert all(p.shape == (1, 2, 128, 136) for p in predictions)


def test_batch_elements_are_independent(raft_small):
    image1, image2 = _pair(128, 128, batch=2, seed=3)
    with torch.no_grad():
        both = raft_small(image1, image2, iters=2)
        second = raft_small(image1[1:], image2[1:], iters=2)
    assert torch.allclose(both[1:], second, atol=1e-4)


def test_large_model_runs():
    torch.manual_seed(0)
    model = RAFT().eval()
    image1, image2 = _pair(128, 128)
    with torch.no_grad():
        flow = model(image1, image2, iters=1)
    assert flow.shape == (1, 2, 128, 128) and torch.isfinite(flow).all()


def test_mismatched_images_are_refused(raft_small):
    with pytest.raises(ValueError, match=r"image1 \(1, 3, 128, 128\) vs image2 \(1, 3, 128, 136\)"):
        raft_small(torch.zeros(1, 3, 128, 128), torch.zeros(1, 3, 128, 136))


def test_too_small_images_are_refused(raft_small):
    with pytest.raises(ValueError, match="64x128 is too small"):
        raft_small(torch.zeros(1, 3, 64, 128), torch.zeros(1, 3, 64, 128))


def test_zero_iterations_are_refused(raft_small):
    with pytest.raises(ValueError, match="iters must be at least 1, got 0"):
        raft_small(torch.zeros(1, 3, 128, 128), torch.zeros(1, 3, 128, 128), iters=0)
