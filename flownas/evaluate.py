"""Validation loops: a model over a dataset, with each benchmark's metric convention."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence

import torch
from torch import nn
from tqdm import tqdm

from .logs import bar_disabled
from .metrics import MetricAccumulator

# on_sample(sample_id, image1 [3,H,W], predicted flow [2,H,W], ground truth [2,H,W], valid [H,W]), CPU tensors
SampleCallback = Callable[[str, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], None]


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    dataset: Any,
    iters: int = 12,
    device: str | torch.device = "cpu",
    max_samples: int | None = None,
    progress: bool = True,
    on_sample: Optional[SampleCallback] = None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Metrics over `dataset` (samples `(img1, img2, flow, valid)`); returns (summary, per-sample rows).

    Padding and EPE aggregation follow the dataset's `pad_mode` and `aggregation` attributes
    (Sintel: centred padding, pooled EPE; KITTI: bottom padding, EPE per image).
    on_sample: called once per pair with what was scored (e.g. to write pictures, `evaluate --write-outputs`),
        so outputs come from the very prediction the metrics used instead of a second run.
    """
    model = model.to(device).eval()
    pad_mode = getattr(dataset, "pad_mode", "sintel")
    accumulator = MetricAccumulator(getattr(dataset, "aggregation", "pooled"))
    count = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    for index in tqdm(range(count), desc="evaluate", unit="pair", disable=bar_disabled(progress)):
        image1, image2, flow_gt, valid = dataset[index]
        flow = model(image1[None].to(device), image2[None].to(device), iters=iters, pad_mode=pad_mode)
        sample_id = _sample_id(dataset, index)
        accumulator.update(flow[0].cpu(), flow_gt, valid, sample_id=sample_id)
        if on_sample is not None:
            on_sample(str(sample_id), image1, flow[0].float().cpu(), flow_gt, valid)
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


def calibrated_subnet(supernet: nn.Module, arch: Any, pairs: Sequence[tuple[torch.Tensor, ...]],
                      iters: int = 1, device: str | torch.device = "cpu") -> nn.Module:
    """The static subnet `arch` of `supernet` (weights copied) with BatchNorm statistics re-estimated on `pairs`.

    Supernet BN statistics mix every subnet that ran during training, so no subnet is evaluated with them:
    training validation, `evaluate --supernet` and the search all call this with the same kind of pairs
    (`(image1, image2, ...)` samples, one pair per batch). With no pairs the stored statistics are kept.
    """
    net = supernet.extract(arch)
    if pairs:
        recalibrate_bn(net, ((p[0][None], p[1][None]) for p in pairs), iters=iters, device=device)
    return net.to(device).eval()


def evaluate_subnet(supernet: nn.Module, arch: Any, dataset: Any, *, iters: int = 12, max_samples: int | None = None,
                    calibrate_bn: int = 8, calibration_seed: int = 0, device: str | torch.device = "cpu",
                    progress: bool = False, on_sample: Optional[SampleCallback] = None,
                    pairs: Optional[Sequence[tuple[torch.Tensor, ...]]] = None,
                    ) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Metrics of subnet `arch` of `supernet` on `dataset`, BN statistics re-estimated on `calibrate_bn` pairs of it.

    The one definition of a subnet's accuracy: `evaluate --supernet CKPT --arch A` and the search's fitness both
    call this, so any number in a search report can be re-checked from the command line. The calibration pairs are
    a seeded choice among the dataset's pairs (`flownas.data.stream.fixed_pairs`), the same for every subnet.
    """
    from .data.stream import fixed_pairs

    if pairs is None:  # callers scoring many subnets pass the same pairs once drawn (the search's fitness)
        pairs = fixed_pairs(dataset, calibrate_bn, seed=calibration_seed) if calibrate_bn else []
    net = calibrated_subnet(supernet, arch, pairs, device=device)
    return evaluate(net, dataset, iters=iters, device=device, max_samples=max_samples, progress=progress,
                    on_sample=on_sample)
