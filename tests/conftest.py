"""Shared test fixtures: the real Middlebury pair from ../shared (never copied into the repo)."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUBBERWHALE = REPO.parent / "shared" / "data" / "middlebury" / "RubberWhale"


@pytest.fixture
def rubberwhale() -> Path:
    """Folder with frame10.png, frame11.png and flow10.flo (584x388), or skip."""
    if not (RUBBERWHALE / "flow10.flo").is_file():
        pytest.skip(f"real Middlebury data not found at {RUBBERWHALE}")
    return RUBBERWHALE


CHECKPOINT_KEYS = REPO.parent / "shared" / "reference" / "checkpoint-keys.json"
LAYOUT_TITLES = {
    "raft-large": "raft_large (princeton-vl RAFT, e.g. raft-things.pth)",
    "raft-small": "raft_small (princeton-vl RAFT, raft-small.pth)",
    "flownas": "flownas_supernet (FlowNAS-RAFT-S / FlowNAS-RAFT-K release files: the whole supernet)",
    "torchvision-large": "torchvision raft_large (torchvision.models.optical_flow, Raft_Large_Weights)",
    "torchvision-small": "torchvision raft_small (torchvision.models.optical_flow, Raft_Small_Weights)",
}


@pytest.fixture(scope="session")
def published_keys() -> dict:
    """Every key, shape and dtype of the published checkpoints (../shared/reference), or skip."""
    import json

    if not CHECKPOINT_KEYS.is_file():
        pytest.skip(f"published key list not found at {CHECKPOINT_KEYS}")
    return json.loads(CHECKPOINT_KEYS.read_text())


def random_published_state(published_keys: dict, layout: str, seed: int = 0, strip_module: bool = False) -> dict:
    """A state dict with the published names and shapes, filled with seeded random values.

    Kernels are scaled by fan-in, norm scales sit around 1, running variances are positive and batch
    counters are integers, as in a trained checkpoint, so flows stay in a realistic range.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape, dtype in published_keys[LAYOUT_TITLES[layout]]:
        if dtype == "int64":
            value = torch.tensor(1000, dtype=torch.int64).reshape(shape)
        elif name.endswith("running_var"):
            value = torch.rand(shape, generator=gen) + 0.5
        elif len(shape) >= 2:  # conv kernels scaled by fan-in, so activations stay well conditioned
            fan_in = max(1, int(torch.tensor(shape[1:]).prod()))
            value = torch.randn(shape, generator=gen) / fan_in**0.5
        elif name.endswith(".weight"):  # norm scales around 1
            value = 1 + 0.1 * torch.randn(shape, generator=gen)
        else:  # biases and running means
            value = 0.1 * torch.randn(shape, generator=gen)
        state[name[len("module."):] if strip_module and name.startswith("module.") else name] = value
    # In RAFT the strided block's last norm and downsample.1 are one module, saved under both names.
    for name in state:
        if ".downsample.1." in name:
            for alias in ("norm3", "norm4"):
                twin = name.replace("downsample.1", alias)
                if twin in state and state[twin].shape == state[name].shape:
                    state[twin] = state[name]
    return state
