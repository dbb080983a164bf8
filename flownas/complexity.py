"""Parameter and multiply-accumulate counts, per component, for any model of the toolkit.

MACs are counted by PyTorch's own FLOP counter (aten-level: convolutions, and the batched MatMul of the
correlation volume) while the model runs on the `meta` device, so nothing is computed and every op that
really runs is counted: both encoders (the feature encoder sees both images), every update iteration,
the mask head and the upsampler. One MAC = 2 FLOPs. Grid sampling, pooling and elementwise ops have no
multiply-accumulates and are not counted (as in the usual convention).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .weights import build_model

COMPONENTS = ("fnet", "cnet", "update_block")


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameters per component (fnet, cnet, update_block) and in total."""
    counts = {name: sum(p.numel() for p in getattr(model, name).parameters()) for name in COMPONENTS}
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


def count_macs(config: Mapping[str, Any] | nn.Module, height: int, width: int, iters: int = 12) -> dict[str, int]:
    """MACs of one forward pass on a `[1,3,height,width]` pair: per component, correlation and total."""
    if isinstance(config, nn.Module):
        config = config.config()
    with torch.device("meta"):
        model = build_model(config).eval()
        image = torch.empty(1, 3, height, width)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(image, image, iters=iters)
    per_module = counter.get_flop_counts()
    root = type(model).__name__
    macs = {name: sum(per_module.get(f"{root}.{name}", {}).values()) // 2 for name in COMPONENTS}
    macs["total"] = counter.get_total_flops() // 2
    macs["correlation"] = macs["total"] - sum(macs[name] for name in COMPONENTS)
    return macs

