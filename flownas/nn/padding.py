"""Replicate-padding of images to multiples of 8, as in RAFT's evaluation code."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

PAD_MODES = ("sintel", "kitti")


class InputPadder:
    """Pads `[...,H,W]` tensors so H and W are multiples of `divisor` and crops results back.

    mode "sintel": centred in both directions. mode "kitti": width centred, all height padding at the
    bottom — the convention of RAFT's KITTI evaluation, kept for identical numbers.
    """

    def __init__(self, shape: tuple[int, ...], mode: str = "sintel", divisor: int = 8) -> None:
        if mode not in PAD_MODES:
            raise ValueError(f"padding mode {mode!r} is not one of {PAD_MODES}")
        self.height, self.width = int(shape[-2]), int(shape[-1])
        pad_h = (-self.height) % divisor
        pad_w = (-self.width) % divisor
        top = pad_h // 2 if mode == "sintel" else 0
        # F.pad order: left, right, top, bottom
        self.pad_lrtb = (pad_w // 2, pad_w - pad_w // 2, top, pad_h - top)

    @property
    def needed(self) -> bool:
        return any(self.pad_lrtb)

    def pad(self, *inputs: Tensor) -> list[Tensor]:
        if not self.needed:
            return list(inputs)
        return [F.pad(x, self.pad_lrtb, mode="replicate") for x in inputs]

    def unpad(self, x: Tensor) -> Tensor:
        left, right, top, bottom = self.pad_lrtb
        ht, wd = x.shape[-2:]
        return x[..., top : ht - bottom, left : wd - right]
