"""Make tests/fixtures/torchvision_raft_flow.npz: flows of torchvision's RAFT for seeded weights and images.

Run once with an interpreter that has torchvision (it cannot be installed beside the project's CPU torch):
    /path/to/venv-with-torchvision/bin/python tools/torchvision_fixture.py
The weights are NOT stored: tests rebuild them from the same seed with the published torchvision key list
(`random_published_state` in tests/conftest.py), load them with `flownas.load_model` and compare flows.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from conftest import CHECKPOINT_KEYS, random_published_state  # noqa: E402

from fixture_specs import TORCHVISION_FIXTURE, fixture_images  # noqa: E402


def main() -> None:
    from torchvision.models.optical_flow import raft_large, raft_small

    keys = json.loads(CHECKPOINT_KEYS.read_text())
    flows = {}
    for layout, build in (("torchvision-large", raft_large), ("torchvision-small", raft_small)):
        model = build(weights=None).eval()
        model.load_state_dict(random_published_state(keys, layout, seed=TORCHVISION_FIXTURE["seed"]))
        image1, image2 = fixture_images()
        with torch.no_grad():  # torchvision's RAFT takes images already scaled to [-1, 1]
            flow = model(2 * image1 / 255 - 1, 2 * image2 / 255 - 1, num_flow_updates=TORCHVISION_FIXTURE["iters"])[-1]
        flows[layout] = flow.numpy()
    out = REPO / "tests" / "fixtures" / "torchvision_raft_flow.npz"
    np.savez_compressed(out, **{k.replace("-", "_"): v for k, v in flows.items()},
                        torch_version=np.array(str(torch.__version__)))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
