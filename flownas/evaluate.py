"""Validation loops: a model over a dataset, with each benchmark's metric convention."""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn
from tqdm import tqdm

from .metrics import MetricAccumulator


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    dataset: Any,
    iters: int = 12,
    device: str | torch.device = "cpu",
    max_samples: int | None = None,
    progress: bool = True,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Metrics over `dataset` (samples `(img1, img2, flow, valid)`); returns (summary, per-sample rows).

    Padding and EPE aggregation follow the dataset's `pad_mode` and `aggregation` attributes
    (Sintel: centred padding, pooled EPE; KITTI: bottom padding, EPE per image).
    """
    model = model.to(device).eval()
    pad_mode = getattr(dataset, "pad_mode", "sintel")
    accumulator = MetricAccumulator(getattr(dataset, "aggregation", "pooled"))
    count = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    for index in tqdm(range(count), desc="evaluate", unit="pair", disable=not progress):
        image1, image2, flow_gt, valid = dataset[index]
        flow = model(image1[None].to(device), image2[None].to(device), iters=iters, pad_mode=pad_mode)
        accumulator.update(flow[0].cpu(), flow_gt, valid, sample_id=_sample_id(dataset, index))
    return accumulator.summary(), accumulator.rows()


def _sample_id(dataset: Any, index: int) -> str:
    return dataset.sample_id(index) if hasattr(dataset, "sample_id") else str(index)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], iters: int = 1,
                   device: str | torch.device = "cpu") -> int:
    """Re-estimate BatchNorm statistics for the current (sub)network on image pairs; returns batches used.

    Statistics are reset and accumulated as a plain average (momentum=None) in train mode, then the model
    is put back in eval mode. Only BN running statistics change; no weight is touched.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.to(device).train()
    used = 0
    try:
        for image1, image2 in batches:
            model(image1.to(device), image2.to(device), iters=iters)
            used += 1
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.eval()
    if used == 0:
        raise ValueError("BN recalibration needs at least one batch of image pairs")
    return used
