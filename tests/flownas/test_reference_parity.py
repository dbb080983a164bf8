"""RAFT against torchvision's independent implementation, through a committed fixture.

`tools/torchvision_fixture.py` ran torchvision's raft_large/raft_small (in an environment that has it)
on weights rebuilt here from the same seed and the published torchvision key list; only its flows are
stored. Loading the same weights with `flownas.load_model` must reproduce them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import random_published_state
from fixture_specs import TORCHVISION_FIXTURE, fixture_images
from flownas.weights import load_model

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "torchvision_raft_flow.npz"


@pytest.mark.parametrize("layout", ["torchvision-large", "torchvision-small"])
def test_flow_equals_torchvision(published_keys, layout):
    reference = np.load(FIXTURE)[layout.replace("-", "_")]
    model = load_model(random_published_state(published_keys, layout, seed=TORCHVISION_FIXTURE["seed"]))
    image1, image2 = fixture_images()
    with torch.no_grad():
        flow = model(image1, image2, iters=TORCHVISION_FIXTURE["iters"]).numpy()
    scale = max(1.0, float(np.abs(reference).max()))
    assert flow.shape == reference.shape
    # float32 round-off only (the reference ran on another torch build): far below any real difference
    assert np.abs(flow - reference).max() <= 1e-4 * scale, np.abs(flow - reference).max()
