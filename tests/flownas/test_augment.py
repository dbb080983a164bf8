"""Augmentation: shapes, and that flips and rescales keep the flow mapping image1 onto image2."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from flownas.data.augment import FlowAugmentor, SparseFlowAugmentor, color_jitter, resize_sparse_flow
from flownas.data.synthetic import make_pair

GEOMETRY_ONLY = dict(photometric=False, eraser_prob=0.0)


def shifted_pair(height: int, width: int, u: int, v: int, seed: int = 0):
    """Hand-made pair with constant integer flow (u, v) >= 0: img2[y+v, x+u] == img1[y, x]."""
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.integers(0, 256, (height + v, width + u, 3)).astype(np.uint8), (0, 0), 1.5)
    img1, img2 = big[v:v + height, u:u + width].copy(), big[:height, :width].copy()
    flow = np.broadcast_to(np.float32([u, v]), (height, width, 2)).copy()
    return img1, img2, flow, np.ones((height, width), bool)


def warp_error(img1, img2, flow, valid=None, border=3):
    """Mean |img2(x + flow) - img1| over pixels whose destination lies inside the frame, away from the edge."""
    h, w = flow.shape[:2]
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    tx, ty = gx + flow[..., 0], gy + flow[..., 1]
    warped = cv2.remap(img2, tx, ty, cv2.INTER_LINEAR).astype(np.float64)
    inside = (tx >= border) & (tx <= w - 1 - border) & (ty >= border) & (ty <= h - 1 - border)
    inside &= valid if valid is not None else True
    return float(np.abs(warped - img1).mean(-1)[inside].mean())


@pytest.mark.parametrize("cls", [FlowAugmentor, SparseFlowAugmentor])
@pytest.mark.parametrize("size", [(120, 160), (40, 50)])  # larger than the crop, and smaller (upscaled)
def test_output_shapes_equal_crop(cls, size):
    pair = make_pair(*size, 0)
    aug = cls((64, 96), seed=1)
    for _ in range(5):
        img1, img2, flow, valid = aug(pair["image1"], pair["image2"], pair["flow"], pair["valid"])
        assert img1.shape == img2.shape == (64, 96, 3) and img1.dtype == img2.dtype == np.uint8
        assert flow.shape == (64, 96, 2) and flow.dtype == np.float32
        assert valid.shape == (64, 96) and valid.dtype == bool
        assert all(a.flags.c_contiguous for a in (img1, img2, flow, valid))


def test_horizontal_flip_negates_u():
    img1, img2, flow, valid = shifted_pair(48, 64, 3, 2)
    aug = FlowAugmentor((48, 64), seed=0, spatial_aug_prob=0.0, h_flip_prob=1.0, v_flip_prob=0.0, **GEOMETRY_ONLY)
    a1, a2, af, av = aug(img1, img2, flow, valid)
    np.testing.assert_array_equal(a1, img1[:, ::-1])
    np.testing.assert_array_equal(a2, img2[:, ::-1])
    assert (af[..., 0] == -3.0).all() and (af[..., 1] == 2.0).all() and av.all()
    np.testing.assert_array_equal(a2[2:, :-3], a1[:-2, 3:])  # the negated flow still maps a1 onto a2


def test_vertical_flip_negates_v():
    img1, img2, flow, valid = shifted_pair(48, 64, 3, 2)
    aug = FlowAugmentor((48, 64), seed=0, spatial_aug_prob=0.0, h_flip_prob=0.0, v_flip_prob=1.0, **GEOMETRY_ONLY)
    a1, a2, af, _ = aug(img1, img2, flow, valid)
    assert (af[..., 0] == 3.0).all() and (af[..., 1] == -2.0).all()
    np.testing.assert_array_equal(a2[:-2, 3:], a1[2:, :-3])


def test_scaling_by_two_doubles_flow():
    img1, img2, flow, valid = shifted_pair(40, 56, 3, 1)
    # 2**1 = 2 and the crop fits in 80x112 with the 8 px margin, so no larger scale is forced.
    aug = FlowAugmentor((64, 96), seed=0, min_scale=1.0, max_scale=1.0, spatial_aug_prob=1.0, stretch_prob=0.0,
                        do_flip=False, **GEOMETRY_ONLY)
    a1, a2, af, av = aug(img1, img2, flow, valid)
    np.testing.assert_allclose(af[..., 0], 6.0, atol=1e-5)
    np.testing.assert_allclose(af[..., 1], 2.0, atol=1e-5)
    assert av.all()
    # The output is a window of the bilinear 2x resize, and the doubled flow maps a1 onto a2.
    big = cv2.resize(img1, (112, 80), interpolation=cv2.INTER_LINEAR)
    score = cv2.matchTemplate(big, a1, cv2.TM_SQDIFF)
    assert score.min() == 0.0
    assert warp_error(a1, a2, af) < 1.5 < warp_error(a1, a2, af / 2)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_geometry_keeps_flow_consistent(seed):
    """After random scale, stretch, flips and crop, the augmented flow still warps img2 onto img1."""
    pair = make_pair(96, 128, seed, n_layers=0, max_motion=5.0)  # smooth flow, occlusions only at the border
    aug = FlowAugmentor((64, 80), seed=seed, h_flip_prob=0.5, v_flip_prob=0.5, **GEOMETRY_ONLY)
    img1, img2, flow, valid = aug(pair["image1"], pair["image2"], pair["flow"], pair["valid"])
    right = warp_error(img1, img2, flow, valid)
    wrong = warp_error(img1, img2, flow * np.float32([-1.0, 1.0]), valid)  # as if a flip forgot to negate u
    assert right < 3.0 and wrong > 2.0 * right, (right, wrong)


def test_sparse_rescale_scatters_points():
    rng = np.random.default_rng(0)
    valid = rng.random((60, 80)) < 0.1
    flow = rng.uniform(-20, 20, (60, 80, 2)).astype(np.float32) * valid[..., None]
    up_flow, up_valid = resize_sparse_flow(flow, valid, (120, 160))
    assert up_valid.sum() == valid.sum()  # upscaling never merges points
    ys, xs = np.nonzero(valid)
    np.testing.assert_allclose(up_flow[2 * ys, 2 * xs], flow[ys, xs] * 2.0)  # (x+0.5)*2-0.5 rounds to 2x
    assert up_flow[~up_valid].max(initial=0) == 0 and up_flow[~up_valid].min(initial=0) == 0
    down_flow, down_valid = resize_sparse_flow(flow, valid, (30, 40))
    assert 0.7 * valid.sum() <= down_valid.sum() <= valid.sum()  # a few collisions at 10% density
    scaled = {tuple(v) for v in (flow[valid] * 0.5)}
    assert all(tuple(v) in scaled for v in down_flow[down_valid])  # values are scaled originals, not blends


def test_sparse_augmentor_rescales_flow_and_keeps_valid_count():
    rng = np.random.default_rng(1)
    img1, img2, _, _ = shifted_pair(50, 70, 2, 1)
    valid = rng.random((50, 70)) < 0.2
    flow = np.where(valid[..., None], np.float32([2.0, 1.0]), np.float32(0.0)).astype(np.float32)
    aug = SparseFlowAugmentor((99, 139), seed=0, min_scale=1.0, max_scale=1.0, spatial_aug_prob=1.0, **GEOMETRY_ONLY)
    _, _, af, av = aug(img1, img2, flow, valid)
    assert 0.95 * valid.sum() <= av.sum() <= valid.sum()  # 2x upscale, one row/column cropped away
    np.testing.assert_array_equal(af[av], np.broadcast_to(np.float32([4.0, 2.0]), (int(av.sum()), 2)))
    assert (af[~av] == 0).all()


@pytest.mark.parametrize("cls", [FlowAugmentor, SparseFlowAugmentor])
def test_same_seed_same_output(cls):
    pair = make_pair(80, 112, 3)
    arrays = (pair["image1"], pair["image2"], pair["flow"], pair["valid"])
    outs = [cls((48, 64), do_flip=True, seed=s)(*arrays) for s in (5, 5, 6)]
    via_rng = cls((48, 64), do_flip=True, rng=np.random.default_rng(5))(*arrays)
    for a, b, c in zip(outs[0], outs[1], via_rng):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert any(not np.array_equal(a, b) for a, b in zip(outs[0], outs[2]))


def test_color_jitter_behaviour():
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(30, 220, (32, 48, 3)).astype(np.uint8), (0, 0), 1.0)
    identity = color_jitter(image, np.random.default_rng(1), 0.0, 0.0, 0.0, 0.0)
    assert np.abs(identity.astype(int) - image).max() <= 1  # HSV round trip is lossless up to rounding
    bright = color_jitter(image, np.random.default_rng(2), 0.4, 0.0, 0.0, 0.0).astype(np.float64)
    ratio = bright[image > 20] / image[image > 20]
    assert 0.6 <= ratio.mean() <= 1.4 and ratio.std() < 0.02  # one multiplicative factor for all pixels
    stacked = color_jitter(np.concatenate([image, image]), np.random.default_rng(3))
    np.testing.assert_array_equal(stacked[:32], stacked[32:])  # symmetric jitter: same parameters


def test_eraser_fills_boxes_in_image2_only():
    img1, img2, flow, valid = shifted_pair(120, 160, 0, 0)
    aug = FlowAugmentor((120, 160), seed=4, photometric=False, eraser_prob=1.0, spatial_aug_prob=0.0, do_flip=False)
    a1, a2, af, _ = aug(img1, img2, flow, valid)
    np.testing.assert_array_equal(a1, img1)
    np.testing.assert_array_equal(af, flow)
    changed = (a2 != img2).any(-1)
    assert changed.any()
    ys, xs = np.nonzero(changed)
    assert ys.max() - ys.min() < 200 and xs.max() - xs.min() < 200
    np.testing.assert_array_equal(np.unique(a2[changed], axis=0), img2.reshape(-1, 3).mean(0).astype(np.uint8)[None])
