"""Distillation losses: RAFT's sequence loss, in-place distillation and Feature Alignment Distillation (FAD)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from flownas.distill import (
    DistillError, FeatureAlignment, TapProjection, encoder_taps, inplace_distill_loss, pair_taps, sequence_loss,
    teacher_taps,
)
from flownas.errors import ToolkitError
from flownas.registry import create_model


def _pair(size=(128, 128), batch=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    image1 = torch.rand(batch, 3, *size, generator=gen) * 255
    return image1, torch.roll(image1, shifts=(2, 3), dims=(2, 3))


@pytest.fixture(scope="module")
def tiny_supernet():
    return create_model("tiny-supernet", seed=1)


@pytest.fixture(scope="module")
def raft_small():
    return create_model("raft-small", seed=2)


# -- sequence_loss ---------------------------------------------------------------------------------------------
def test_sequence_loss_literal_case():
    # One image of 1x2 pixels, gt zero; gamma 0.5 so the first of two predictions weighs 0.5, the last 1.
    gt = torch.zeros(1, 2, 1, 2)
    pred1 = torch.tensor([[[[1.0, 2.0]], [[0.0, 0.0]]]])  # |.| sums to 3 over 4 values -> 0.75
    pred2 = torch.tensor([[[[0.0, 3.0]], [[0.0, 4.0]]]])  # sums to 7 -> 1.75; EPEs 0 and 5
    loss, metrics = sequence_loss([pred1, pred2], gt, torch.ones(1, 1, 2), gamma=0.5)
    assert loss.item() == pytest.approx(0.5 * 0.75 + 1.75)
    assert metrics == pytest.approx({"epe": 2.5, "1px": 0.5, "3px": 0.5, "5px": 0.5})  # 5 is not below 5


def _loop_reference(preds, gt, valid, gamma, max_flow):
    """RAFT's loss and metrics with plain loops over numpy arrays."""
    n = len(preds)
    b, c, h, w = gt.shape
    ok = np.zeros((b, h, w), dtype=bool)
    for i, y, x in itertools.product(range(b), range(h), range(w)):
        ok[i, y, x] = valid[i, y, x] >= 0.5 and np.hypot(gt[i, 0, y, x], gt[i, 1, y, x]) < max_flow
    loss = 0.0
    for k, pred in enumerate(preds):
        total = 0.0
        for i, ch, y, x in itertools.product(range(b), range(c), range(h), range(w)):
            total += ok[i, y, x] * abs(pred[i, ch, y, x] - gt[i, ch, y, x])
        loss += gamma ** (n - k - 1) * total / (b * c * h * w)
    epes = [np.hypot(*(preds[-1][i, :, y, x] - gt[i, :, y, x]))
            for i, y, x in itertools.product(range(b), range(h), range(w)) if ok[i, y, x]]
    metrics = {"epe": float(np.mean(epes))}
    metrics.update({f"{t}px": float(np.mean([e < t for e in epes])) for t in (1, 3, 5)})
    return loss, metrics


def test_sequence_loss_matches_loop_reference_with_masks():
    rng = np.random.default_rng(0)
    b, h, w = 2, 3, 4
    gt = rng.normal(0, 4, (b, 2, h, w))
    gt[0, :, 1, 1] = (300.0, 300.0)  # |gt| ~ 424 >= max_flow: excluded though valid
    valid = rng.uniform(0, 1, (b, h, w))  # values either side of the 0.5 threshold
    valid[0, 1, 1] = 1.0
    preds = [gt + rng.normal(0, s, gt.shape) for s in (6.0, 3.0, 1.5)]
    expected_loss, expected_metrics = _loop_reference(preds, gt, valid, 0.8, 400.0)
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    loss, metrics = sequence_loss([t(p) for p in preds], t(gt), t(valid))
    assert loss.item() == pytest.approx(expected_loss, rel=1e-5)
    assert metrics == pytest.approx(expected_metrics, rel=1e-5)
    # A [B,1,H,W] mask means the same
    loss4, _ = sequence_loss([t(p) for p in preds], t(gt), t(valid)[:, None])
    assert loss4.item() == pytest.approx(expected_loss, rel=1e-5)


def test_sequence_loss_ignores_masked_pixels():
    gt = torch.zeros(1, 2, 2, 2)
    gt[0, :, 0, 0] = 500.0  # beyond max_flow
    valid = torch.tensor([[[1.0, 0.4], [0.5, 1.0]]])  # pixel (0,1) invalid, (1,0) valid at exactly 0.5
    pred = torch.zeros(1, 2, 2, 2)
    pred[0, :, 0, 0] = 123.0  # differs from gt only where |gt| >= max_flow
    pred[0, :, 0, 1] = 77.0  # ... and where valid < 0.5
    loss, metrics = sequence_loss([pred], gt, valid)
    assert loss.item() == 0.0
    assert metrics["epe"] == 0.0 and metrics["1px"] == 1.0
    pred[0, 0, 1, 0] = 8.0  # a valid pixel counts, divided by all 8 values
    loss, metrics = sequence_loss([pred], gt, valid)
    assert loss.item() == pytest.approx(1.0)
    assert metrics["epe"] == pytest.approx(8.0 / 2)  # two valid pixels: (1,0) and (1,1)
    loss, _ = sequence_loss([pred], gt, valid, max_flow=1000.0)  # now (0,0) counts: 2 * 377 more
    assert loss.item() == pytest.approx((8.0 + 2 * 377.0) / 8)


def test_sequence_loss_gradient_and_shape_errors():
    gt = torch.zeros(1, 2, 2, 2)
    pred = torch.ones(1, 2, 2, 2, requires_grad=True)
    loss, _ = sequence_loss([pred], gt, torch.ones(1, 2, 2))
    loss.backward()
    assert torch.allclose(pred.grad, torch.full_like(pred, 1 / 8))
    with pytest.raises(DistillError, match="prediction 0"):
        sequence_loss([torch.zeros(1, 2, 2, 3)], gt, torch.ones(1, 2, 2))
    with pytest.raises(ToolkitError, match="valid mask"):
        sequence_loss([pred], gt, torch.ones(1, 3, 2))
    with pytest.raises(DistillError, match="empty"):
        sequence_loss([], gt, torch.ones(1, 2, 2))


# -- in-place distillation -------------------------------------------------------------------------------------
def test_inplace_distill_loss():
    target = torch.randn(2, 2, 3, 4, requires_grad=True)
    assert inplace_distill_loss([target.detach().clone()] * 3, target).item() == 0.0
    preds = [target.detach() + 2.0, (target.detach() - 1.0).requires_grad_()]
    loss = inplace_distill_loss(preds, target, gamma=0.5)
    assert loss.item() == pytest.approx(0.5 * 2.0 + 1.0)  # every pixel counts, no mask
    loss.backward()
    assert target.grad is None  # the largest subnet's flow is a fixed target
    assert preds[1].grad is not None


# -- tap pairing -----------------------------------------------------------------------------------------------
def test_pair_taps_rules():
    raft = [(64, 64), (64, 64), (32, 32), (16, 16), (16, 16)]
    assert pair_taps(raft, raft) == [(i, i) for i in range(5)]
    # tiny space: stem 1/2, end of stage 1 at 1/4, head at 1/8 -> stem, layer2, head
    assert pair_taps([(64, 64), (32, 32), (16, 16)], raft) == [(0, 0), (1, 2), (2, 4)]
    # a middle tap at 1/8 takes the deepest middle teacher tap (layer3), not the head
    assert pair_taps([(64, 64), (16, 16), (16, 16)], raft) == [(0, 0), (1, 3), (2, 4)]
    with pytest.raises(DistillError, match="8x8"):
        pair_taps([(64, 64), (8, 8), (16, 16)], raft)


# -- FeatureAlignment --------------------------------------------------------------------------------------------
def _random_taps(channels, sizes, batch=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, *s, generator=gen) for c, s in zip(channels, sizes)]


def test_fad_zero_when_projected_student_equals_teacher():
    s_ch, t_ch, sizes = [4, 6], [5, 3], [(8, 8), (4, 4)]
    fad = FeatureAlignment({"fnet": s_ch, "cnet": s_ch}, {"fnet": t_ch, "cnet": t_ch})
    student = {e: _random_taps(s_ch, sizes, seed=i) for i, e in enumerate(("fnet", "cnet"))}
    with torch.no_grad():
        teacher = {e: [p(x) for p, x in zip(fad.projections[e], student[e])] for e in student}
    assert fad(student, teacher).item() == 0.0
    teacher["cnet"][1] = teacher["cnet"][1] + 1.0
    assert fad(student, teacher).item() > 0.0


def test_fad_is_normalised_per_tap():
    s_ch, t_ch, sizes = [4, 6], [5, 3], [(8, 8), (4, 4)]
    fad = FeatureAlignment({"fnet": s_ch, "cnet": s_ch}, {"fnet": t_ch, "cnet": t_ch})
    for p in fad.parameters():
        torch.nn.init.zeros_(p)
    student = {e: _random_taps(s_ch, sizes) for e in ("fnet", "cnet")}
    # Taps of very different magnitudes: a zero projection scores 1 on each, so the mean is 1.
    teacher = {e: [s * x for s, x in zip((1e-2, 1e3), _random_taps(t_ch, sizes, seed=5))] for e in ("fnet", "cnet")}
    assert fad(student, teacher).item() == pytest.approx(1.0, rel=1e-3)


def test_fad_manual_value():
    fad = FeatureAlignment({"fnet": [2], "cnet": [2]}, {"fnet": [1], "cnet": [1]})
    with torch.no_grad():
        for e in ("fnet", "cnet"):
            fad.projections[e][0].conv.weight.copy_(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1))
            fad.projections[e][0].conv.bias.zero_()
    # projection picks channel 0: student [1, 3] vs teacher [2, 2]: MSE (1 + 1) / 2 = 1, mean square 4 -> 0.25
    s = torch.tensor([1.0, 3.0]).view(1, 1, 1, 2).repeat(1, 2, 1, 1)
    t = torch.full((1, 1, 1, 2), 2.0)
    loss = fad({"fnet": [s], "cnet": [s]}, {"fnet": [t], "cnet": [torch.full((1, 1, 1, 2), 1.0)]})
    # cnet: (0 + 4) / 2 = 2 over mean square 1 -> 2; average of the two encoders
    assert loss.item() == pytest.approx((0.25 + 2.0) / 2, rel=1e-5)


def test_fad_gradients_reach_student_and_projections_not_teacher(tiny_supernet, raft_small):
    student, teacher = tiny_supernet, raft_small
    fad = FeatureAlignment.from_models(student, teacher)
    image1, image2 = _pair(batch=2)
    student.train()
    student.zero_grad(set_to_none=True)
    taps: dict = {}
    student(image1, image2, iters=1, taps=taps)
    # Teacher taps built *with* grad, so only the loss's own detach keeps the teacher out of the graph.
    t_taps = encoder_taps(teacher, image1, image2)
    assert any(p.requires_grad for p in teacher.parameters())
    for tap in taps["fnet"] + taps["cnet"]:
        tap.retain_grad()
    fad(taps, t_taps).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(tap.grad is not None and tap.grad.abs().sum() > 0 for tap in taps["fnet"] + taps["cnet"])
    assert student.fnet.first_conv.weight.grad.abs().sum() > 0
    assert student.cnet.first_conv.weight.grad.abs().sum() > 0
    for p in fad.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    student.eval()


def test_teacher_taps_are_frozen_and_restore_mode(raft_small):
    image1, image2 = _pair()
    raft_small.train()
    taps = teacher_taps(raft_small, image1, image2)
    assert raft_small.training  # mode restored
    assert all(not t.requires_grad for t in taps["fnet"] + taps["cnet"])
    assert [t.shape[0] for t in taps["fnet"]] == [2] * 5 and [t.shape[0] for t in taps["cnet"]] == [1] * 5
    raft_small.eval()


def test_narrower_subnet_uses_leading_input_slice(tiny_supernet, raft_small):
    student = tiny_supernet
    fad = FeatureAlignment.from_models(student, raft_small)
    assert fad.projections["fnet"][1].conv.in_channels == 24  # stage-1 width at the largest subnet
    image1, image2 = _pair()
    student.set_active(student.space.smallest())
    try:
        taps: dict = {}
        student(image1, image2, iters=1, taps=taps)
        assert taps["fnet"][1].shape[1] == 16
        projection = fad.projections["fnet"][1]
        # Independently: a 1x1 conv is a channel contraction with the first 16 input columns.
        w = projection.conv.weight[:, :16, 0, 0]
        expected = torch.einsum("oc,bchw->bohw", w, taps["fnet"][1]) + projection.conv.bias[None, :, None, None]
        assert torch.allclose(projection(taps["fnet"][1]), expected, atol=1e-5)
        fad(taps, teacher_taps(raft_small, image1, image2)).backward()
        grad = projection.conv.weight.grad[:, :, 0, 0]
        assert torch.count_nonzero(grad[:, 16:]) == 0
        assert torch.count_nonzero(grad[:, :16]) > 0
    finally:
        student.set_active(student.space.largest())
        student.zero_grad(set_to_none=True)


def test_projection_rejects_wider_student():
    with pytest.raises(DistillError, match="at most 4"):
        TapProjection(4, 3)(torch.zeros(1, 5, 2, 2))


def test_from_models_tiny_supernet_with_raft_small(tiny_supernet, raft_small):
    student = tiny_supernet
    smallest = student.space.smallest()
    student.set_active(smallest)
    student.train()
    raft_small.eval()
    try:
        fad = FeatureAlignment.from_models(student, raft_small, image_size=(128, 128))
        assert student.active_arch == smallest and student.training and not raft_small.training  # restored
    finally:
        student.set_active(student.space.largest())
        student.eval()
    assert fad.pairs == {"fnet": [(0, 0), (1, 2), (2, 4)], "cnet": [(0, 0), (1, 2), (2, 4)]}
    shapes = {e: [tuple(p.conv.weight.shape[:2]) for p in fad.projections[e]] for e in ("fnet", "cnet")}
    # student: stem 16, stage-1 max width 24, head 64 (fnet) / 64 (cnet); raft-small: 32, 64, 128 / 160 channels
    assert shapes == {"fnet": [(32, 16), (64, 24), (128, 64)], "cnet": [(32, 16), (64, 24), (160, 64)]}
    image1, image2 = _pair()
    loss = fad(teacher_taps(student, image1, image2), teacher_taps(raft_small, image1, image2))
    assert torch.isfinite(loss) and loss.item() > 0


def test_from_models_raft_small_with_raft_pairs_by_position(raft_small):
    raft = create_model("raft", seed=3)
    fad = FeatureAlignment.from_models(raft_small, raft)
    assert fad.pairs == {e: [(i, i) for i in range(5)] for e in ("fnet", "cnet")}
    shapes = {e: [tuple(p.conv.weight.shape[:2]) for p in fad.projections[e]] for e in ("fnet", "cnet")}
    assert shapes["fnet"] == [(64, 32), (64, 32), (96, 64), (128, 96), (256, 128)]
    assert shapes["cnet"] == [(64, 32), (64, 32), (96, 64), (128, 96), (256, 160)]
    image1, image2 = _pair()
    loss = fad(teacher_taps(raft_small, image1, image2), teacher_taps(raft, image1, image2))
    assert torch.isfinite(loss) and loss.item() > 0
    # the state dict (saved in training checkpoints) round-trips into a module built the same way
    again = FeatureAlignment.from_models(raft_small, raft)
    again.load_state_dict(fad.state_dict())
    assert again(teacher_taps(raft_small, image1, image2), teacher_taps(raft, image1, image2)).item() == loss.item()


def test_teacher_taps_equal_student_forward_taps():
    model = create_model("tiny-flownas", seed=4)
    image1, image2 = _pair(size=(124, 132))  # padded to 128x136 by both paths
    forward_taps: dict = {}
    with torch.no_grad():
        model(image1, image2, iters=1, taps=forward_taps)
    taps = teacher_taps(model, image1, image2)
    for e in ("fnet", "cnet"):
        assert len(taps[e]) == len(forward_taps[e]) == 3
        for a, b in zip(taps[e], forward_taps[e]):
            assert torch.equal(a, b)


def test_default_pairs_need_equal_counts():
    with pytest.raises(DistillError, match="by position"):
        FeatureAlignment({"fnet": [4, 4], "cnet": [4, 4]}, {"fnet": [4], "cnet": [4]})
    fad = FeatureAlignment({"fnet": [4, 4], "cnet": [4]}, {"fnet": [4], "cnet": [4]},
                           pairs={"fnet": [(1, 0)], "cnet": [(0, 0)]})
    x = torch.randn(1, 4, 2, 2)
    with torch.no_grad():
        target = fad.projections["fnet"][0](x)
        ctarget = fad.projections["cnet"][0](x)
    # only student tap 1 of fnet is compared
    assert fad({"fnet": [torch.zeros_like(x), x], "cnet": [x]}, {"fnet": [target], "cnet": [ctarget]}).item() == 0.0
