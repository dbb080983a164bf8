"""Cross-check this toolkit's RAFT against torchvision's independent implementation.

torchvision cannot be installed beside the CPU torch build the project uses, so this runs in two
interpreters: `python tools/torchvision_parity.py make OUT.pt` in an environment with torchvision
(random weights, randomised BN statistics, two random image pairs, its flow), then
`python tools/torchvision_parity.py check OUT.pt` in the project's environment, which loads the same
weights through `flownas.load_model` and reports the largest flow difference.
"""
from __future__ import annotations

import sys

import torch


def make(path: str, iters: int = 6) -> None:
    from torchvision.models.optical_flow import raft_large, raft_small

    torch.manual_seed(0)
    record = {}
    for name, build in (("large", raft_large), ("small", raft_small)):
        model = build(weights=None)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
        model.eval()
        image1 = torch.rand(2, 3, 136, 192) * 255
        image2 = torch.roll(image1, shifts=(2, 3), dims=(2, 3))
        with torch.no_grad():  # torchvision's RAFT expects images already scaled to [-1, 1]
            flow = model(2 * image1 / 255 - 1, 2 * image2 / 255 - 1, num_flow_updates=iters)[-1]
        record[name] = {"state": model.state_dict(), "image1": image1, "image2": image2, "flow": flow, "iters": iters}
    torch.save(record, path)


def check(path: str) -> None:
    from flownas.weights import load_model

    record = torch.load(path, weights_only=True)
    for name, item in record.items():
        model = load_model(item["state"])
        with torch.no_grad():
            flow = model(item["image1"], item["image2"], iters=item["iters"])
        diff = (flow - item["flow"]).abs().max().item()
        print(f"raft-{name}: max |flow - torchvision flow| = {diff:.3g} px (flow magnitude up to {item['flow'].abs().max():.2f})")


if __name__ == "__main__":
    {"make": make, "check": check}[sys.argv[1]](sys.argv[2])
