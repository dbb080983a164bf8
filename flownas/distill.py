"""Losses for supernet training: RAFT's sequence loss, in-place distillation and Feature Alignment Distillation.

- `sequence_loss`: RAFT's `train.py` loss (FACTS §6), exponentially weighted L1 over the per-iteration predictions.
- `inplace_distill_loss`: BigNAS in-place distillation, the same sequence L1 against the largest subnet's
  (detached) final flow, every pixel valid (the largest subnet predicts a flow everywhere).
- `FeatureAlignment`: the FAD loss (FACTS §1) between the encoders' feature taps of the student (supernet or any
  flow model) and those of a frozen, well-trained teacher RAFT; `teacher_taps` computes the teacher side.

FAD design (the FlowNAS paper names the taps but publishes no loss, so the choices here are ours):

- Projections on the student side. Student and teacher tap channels differ (and the student's vary with the
  active subnet), so each student tap goes through a learned 1x1 convolution to the teacher's channel count. The
  teacher's features are the fixed target: projecting them instead would let the loss shrink by collapsing the
  teacher's projection, and reducing the teacher would throw away what it knows. A 1x1 projection only mixes
  channels, so the student's spatial structure must match the teacher's, which is what alignment asks.
- One projection per tap serves every subnet. It stores the student's *largest* channel count and a narrower
  subnet uses the leading input columns `weight[:, :c_in]`, the supernet's own slicing convention (a smaller
  choice is the leading slice of the stored weights), so the projection is shared like the supernet's weights.
- Normalised MSE. Each pair's mean squared error is divided by the teacher tap's mean square (+eps): taps differ
  in magnitude by orders (a normalised stem vs an unnormalised head), and without this the largest one would
  dominate the sum. The result is scale-free: 1.0 for a projection that outputs zeros, whatever the tap.
- Frozen teacher. The teacher runs in eval mode under no_grad and its taps are detached again in the loss, so it
  never moves: a teacher that adapts to the student would let both meet half-way instead of the student learning
  good features. Its BatchNorm uses running statistics, as when it was evaluated.

Tap pairing (`pair_taps`): when student and teacher give as many taps with the same spatial sizes (FlowNAS vs RAFT:
stem, stages 1, 3, 5 / layers 1-3, head at 1/2, 1/2, 1/4, 1/8, 1/8), taps pair by position. Otherwise (e.g. the
tiny test space has 3 taps: stem, end of stage 1, head) the first student tap pairs with the teacher's first (stem
with stem) and the last with the last (head with head) when their sizes agree; every other student tap pairs with
the deepest teacher tap of the same spatial size, preferring the teacher's middle taps (the end of a stage, where
the features of a resolution are most refined). A student tap whose size no teacher tap has is an error.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .errors import ToolkitError
from .metrics import PX_THRESHOLDS
from .models import FlowNASSupernet
from .nn.padding import InputPadder

ENCODERS = ("fnet", "cnet")
NORM_EPS = 1e-8  # keeps the normalised MSE finite for an all-zero teacher tap
Size = tuple[int, int]
Pairs = list[tuple[int, int]]


class DistillError(ToolkitError, ValueError):
    """Shapes or models that the distillation losses cannot work with; one line naming what was wrong."""


# -- flow losses -------------------------------------------------------------------------------------------------
def _gamma_weights(n: int, gamma: float) -> list[float]:
    # The last prediction weighs 1, earlier ones decay geometrically (RAFT: gamma**(n - i - 1)).
    return [gamma ** (n - i - 1) for i in range(n)]


def _check_predictions(predictions: Sequence[Tensor], target: Tensor, what: str) -> None:
    if len(predictions) == 0:
        raise DistillError(f"{what}: predictions is an empty list; expected one flow [B,2,H,W] per iteration")
    if target.dim() != 4 or target.shape[1] != 2:
        raise DistillError(f"{what}: target flow must be [B,2,H,W], got shape {tuple(target.shape)}")
    for i, pred in enumerate(predictions):
        if pred.shape != target.shape:
            raise DistillError(f"{what}: prediction {i} has shape {tuple(pred.shape)}, "
                               f"target has {tuple(target.shape)}")


def _valid_mask(valid: Tensor, flow_gt: Tensor, max_flow: float) -> Tensor:
    """bool [B,H,W]: RAFT's `(valid >= 0.5) & (|gt| < max_flow)`; accepts valid [B,H,W] or [B,1,H,W]."""
    b, _, h, w = flow_gt.shape
    if tuple(valid.shape) == (b, 1, h, w):
        valid = valid[:, 0]
    if tuple(valid.shape) != (b, h, w):
        raise DistillError(f"valid mask has shape {tuple(valid.shape)}, expected [B,H,W] = {[b, h, w]} "
                           f"(or [B,1,H,W]) for flow of shape {tuple(flow_gt.shape)}")
    magnitude = flow_gt.pow(2).sum(dim=1).sqrt()
    return (valid.float() >= 0.5) & (magnitude < max_flow)


def sequence_loss(predictions: Sequence[Tensor], flow_gt: Tensor, valid: Tensor, gamma: float = 0.8,
                  max_flow: float = 400.0) -> tuple[Tensor, dict[str, float]]:
    """RAFT's training loss and the metrics of its last prediction (FACTS §6).

    predictions: the n per-iteration flows [B,2,H,W]; flow_gt [B,2,H,W]; valid [B,H,W] or [B,1,H,W] (>= 0.5 is
    valid). Pixels with |gt| >= max_flow are excluded too. Prediction i weighs gamma**(n-i-1) times the mean
    over *all* pixels and both channels of valid * |pred - gt| (RAFT divides by every pixel, not by the valid
    ones, and so do we for identical numbers). Metrics of the last prediction over the valid pixels: "epe",
    "1px", "3px", "5px" (fraction of pixels with EPE strictly below 1, 3, 5 px); NaN when no pixel is valid.
    """
    _check_predictions(predictions, flow_gt, "sequence_loss")
    flow_gt = flow_gt.float()
    mask = _valid_mask(valid, flow_gt, max_flow)
    weights = _gamma_weights(len(predictions), gamma)
    maskf = mask[:, None].float()
    loss = sum(w * (maskf * (pred.float() - flow_gt).abs()).mean() for w, pred in zip(weights, predictions))
    with torch.no_grad():
        epe = (predictions[-1].float() - flow_gt).pow(2).sum(dim=1).sqrt()[mask]
        metrics = {"epe": float(epe.mean())}
        metrics.update({f"{t}px": float((epe < t).float().mean()) for t in PX_THRESHOLDS})
    return loss, metrics  # type: ignore[return-value]  # sum of tensors is a tensor


def inplace_distill_loss(predictions: Sequence[Tensor], teacher_flow: Tensor, gamma: float = 0.8) -> Tensor:
    """BigNAS in-place distillation: sequence L1 of `predictions` against the largest subnet's final flow.

    `teacher_flow` [B,2,H,W] is detached here (the largest subnet learns from ground truth only); every pixel is
    valid, and prediction i of n weighs gamma**(n-i-1) times its mean absolute error.
    """
    _check_predictions(predictions, teacher_flow, "inplace_distill_loss")
    target = teacher_flow.detach().float()
    weights = _gamma_weights(len(predictions), gamma)
    return sum(w * (pred.float() - target).abs().mean() for w, pred in zip(weights, predictions))  # type: ignore


# -- feature taps --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the block, the previous mode (of every submodule) restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


def encoder_taps(model: nn.Module, image1: Tensor, image2: Tensor, pad_mode: str = "sintel"
                 ) -> dict[str, list[Tensor]]:
    """The FAD taps of `model`'s encoders for 0..255 images, exactly as `FlowModel.forward(..., taps=)` gets them.

    Pads and normalises as the forward does, then runs only the encoders (`model.encode`): the correlation and
    update iterations are not needed for taps. Runs in the model's current mode and grad state.
    """
    padder = InputPadder(image1.shape, mode=pad_mode)
    image1, image2 = padder.pad(image1, image2)
    image1, image2 = 2 * (image1 / 255.0) - 1.0, 2 * (image2 / 255.0) - 1.0
    taps: dict[str, list[Tensor]] = {}
    model.encode(image1, image2, taps)
    return taps


def teacher_taps(teacher: nn.Module, image1: Tensor, image2: Tensor, pad_mode: str = "sintel"
                 ) -> dict[str, list[Tensor]]:
    """The frozen teacher's FAD taps for the 0..255 images the student sees: eval mode, no_grad.

    `{"fnet": [...], "cnet": [...]}`, fnet taps with both frames on the batch axis (frame 1 first), cnet taps of
    frame 1; equal to the taps a student with the same weights collects in its eval-mode forward. The teacher's
    own mode is restored afterwards.
    """
    with torch.no_grad(), _eval_mode(teacher):
        return encoder_taps(teacher, image1, image2, pad_mode)


def _sizes(taps: Sequence[Tensor]) -> list[Size]:
    return [(int(t.shape[-2]), int(t.shape[-1])) for t in taps]


def pair_taps(student_sizes: Sequence[Size], teacher_sizes: Sequence[Size]) -> Pairs:
    """(student index, teacher index) pairs by spatial size; the rule is in the module docstring."""
    student_sizes, teacher_sizes = [tuple(s) for s in student_sizes], [tuple(s) for s in teacher_sizes]
    if not student_sizes or not teacher_sizes:
        raise DistillError(f"cannot pair feature taps: student has {len(student_sizes)}, "
                           f"teacher has {len(teacher_sizes)}")
    if student_sizes == teacher_sizes:
        return [(i, i) for i in range(len(student_sizes))]
    last_s, last_t = len(student_sizes) - 1, len(teacher_sizes) - 1
    middle = range(1, last_t)
    pairs = []
    for i, size in enumerate(student_sizes):
        ends = {0: 0, last_s: last_t}
        if i in ends and teacher_sizes[ends[i]] == size:
            pairs.append((i, ends[i]))
            continue
        same = [j for j in middle if teacher_sizes[j] == size] or \
               [j for j in range(len(teacher_sizes)) if teacher_sizes[j] == size]
        if not same:
            raise DistillError(f"student feature tap {i} has spatial size {size[0]}x{size[1]}, which no teacher "
                               f"tap has (teacher tap sizes: {teacher_sizes})")
        pairs.append((i, same[-1]))
    return pairs


# -- the FAD loss --------------------------------------------------------------------------------------------------
class TapProjection(nn.Module):
    """1x1 conv from up to `max_in` student channels to `out` teacher channels; fewer inputs use `weight[:, :c]`."""

    def __init__(self, max_in: int, out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(max_in, out, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        c, max_in = x.shape[1], self.conv.in_channels
        if c > max_in:
            raise DistillError(f"student feature tap has {c} channels, the projection takes at most {max_in} "
                               "(was the alignment built for another student?)")
        return F.conv2d(x, self.conv.weight[:, :c], self.conv.bias)


class FeatureAlignment(nn.Module):
    """Feature Alignment Distillation: normalised MSE between projected student taps and frozen teacher taps.

    `student_channels` / `teacher_channels`: per encoder ("fnet", "cnet") the channel count of every tap (the
    student's at its largest subnet); `pairs`: per encoder the (student tap, teacher tap) index pairs, default
    by position (equal tap counts required). Projections live in `projections[encoder][k]` for pair k, so the
    state dict (saved with training checkpoints) depends only on those arguments.
    """

    def __init__(self, student_channels: Mapping[str, Sequence[int]], teacher_channels: Mapping[str, Sequence[int]],
                 pairs: Mapping[str, Sequence[tuple[int, int]]] | None = None, eps: float = NORM_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.pairs: dict[str, Pairs] = {}
        self.projections = nn.ModuleDict()
        for encoder in ENCODERS:
            s_ch, t_ch = list(student_channels[encoder]), list(teacher_channels[encoder])
            enc_pairs = _default_pairs(encoder, s_ch, t_ch) if pairs is None else [tuple(p) for p in pairs[encoder]]
            for si, ti in enc_pairs:
                if not (0 <= si < len(s_ch) and 0 <= ti < len(t_ch)):
                    raise DistillError(f"{encoder}: tap pair ({si}, {ti}) is out of range for {len(s_ch)} student "
                                       f"and {len(t_ch)} teacher taps")
            self.pairs[encoder] = enc_pairs  # type: ignore[assignment]
            self.projections[encoder] = nn.ModuleList(TapProjection(s_ch[si], t_ch[ti]) for si, ti in enc_pairs)

    @classmethod
    def from_models(cls, student: nn.Module, teacher: nn.Module, image_size: Sequence[int] = (128, 128)
                    ) -> "FeatureAlignment":
        """Channel counts and tap pairing learned from one dummy pair of `image_size` through both encoders.

        A `FlowNASSupernet` student runs at its largest subnet, which has the
        most channels at every tap; its active subnet and both models' train/eval modes are restored. The new
        module is on the CPU; move it with `.to(device)`.
        """
        s_taps, t_taps = _probe(student, teacher, tuple(image_size))
        pairs = {e: pair_taps(_sizes(s_taps[e]), _sizes(t_taps[e])) for e in ENCODERS}
        channels = {e: [int(t.shape[1]) for t in s_taps[e]] for e in ENCODERS}
        t_channels = {e: [int(t.shape[1]) for t in t_taps[e]] for e in ENCODERS}
        return cls(channels, t_channels, pairs)

    def forward(self, student_taps: Mapping[str, Sequence[Tensor]], teacher_taps: Mapping[str, Sequence[Tensor]]
                ) -> Tensor:
        """Mean over encoders and tap pairs of ||P(student) - teacher||^2 / (mean(teacher^2) + eps).

        Teacher taps are detached: only the student and the projections receive gradients. Computed in float32
        (taps may be half precision under autocast).
        """
        terms = []
        for encoder, enc_pairs in self.pairs.items():
            s_list, t_list = student_taps[encoder], teacher_taps[encoder]
            for (si, ti), projection in zip(enc_pairs, self.projections[encoder]):
                if si >= len(s_list) or ti >= len(t_list):
                    raise DistillError(f"{encoder}: tap pair ({si}, {ti}) but {len(s_list)} student and "
                                       f"{len(t_list)} teacher taps were given")
                terms.append(self._pair_loss(projection(s_list[si]), t_list[ti], f"{encoder} tap {si}->{ti}"))
        return torch.stack(terms).mean()

    def _pair_loss(self, projected: Tensor, target: Tensor, what: str) -> Tensor:
        if projected.shape != target.shape:
            raise DistillError(f"{what}: projected student tap {tuple(projected.shape)} does not match the teacher "
                               f"tap {tuple(target.shape)} (same images and resolution expected)")
        target = target.detach().float()
        return F.mse_loss(projected.float(), target) / (target.pow(2).mean() + self.eps)


def _default_pairs(encoder: str, s_ch: list[int], t_ch: list[int]) -> Pairs:
    if len(s_ch) != len(t_ch):
        raise DistillError(f"{encoder}: {len(s_ch)} student taps and {len(t_ch)} teacher taps cannot pair by "
                           "position; pass pairs= or use FeatureAlignment.from_models")
    return [(i, i) for i in range(len(s_ch))]


def _probe(student: nn.Module, teacher: nn.Module, image_size: tuple[int, ...]
           ) -> tuple[dict[str, list[Tensor]], dict[str, list[Tensor]]]:
    """Both models' taps for one seeded dummy pair, the student at its largest subnet; nothing left changed."""
    if len(image_size) != 2 or min(image_size) < 1:
        raise DistillError(f"image_size must be (height, width) of positive integers, got {image_size!r}")
    gen = torch.Generator().manual_seed(0)
    image1 = torch.rand(1, 3, *image_size, generator=gen) * 255
    image2 = torch.rand(1, 3, *image_size, generator=gen) * 255
    supernet = isinstance(student, FlowNASSupernet)
    restore = student.active_arch if supernet else None
    try:
        if supernet:
            student.set_active(student.space.largest())
        with torch.no_grad(), _eval_mode(student):
            s_taps = encoder_taps(student, *(x.to(_device(student)) for x in (image1, image2)))
    finally:
        if supernet:
            student.set_active(restore)
    t_taps = teacher_taps(teacher, *(x.to(_device(teacher)) for x in (image1, image2)))
    return s_taps, t_taps


def _device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return torch.device("cpu") if parameter is None else parameter.device
