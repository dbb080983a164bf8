"""Synthetic pairs: determinism, bounds, and that the ground-truth flow really maps image1 onto image2."""
from __future__ import annotations


import cv2
import numpy as np
import pytest
import torch

from flownas.data.augment import FlowAugmentor
from flownas.data.synthetic import SyntheticFlow, _random_smooth, _Affine, make_pair, write_pair


def warp_back(image2: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """image2 sampled bilinearly at (x+u, y+v): equals image1 wherever the flow is right and unoccluded."""
    h, w = flow.shape[:2]
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(image2, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE).astype(np.float64)


def interior_mask(pair: dict) -> np.ndarray:
    """Non-occluded pixels at least 2 px away from any flow discontinuity or occlusion.

    Bilinear warping blends neighbouring pixels, so at layer boundaries it mixes two layers.
    """
    flow = pair["flow"]
    # Within a layer the flow is affine plus a slow deformation, so its second differences are ~0;
    # a jump between layers shows up in the second difference on both sides of the boundary.
    edge = np.zeros(flow.shape[:2], bool)
    edge[1:-1] |= np.abs(flow[2:] - 2 * flow[1:-1] + flow[:-2]).max(-1) > 0.01
    edge[:, 1:-1] |= np.abs(flow[:, 2:] - 2 * flow[:, 1:-1] + flow[:, :-2]).max(-1) > 0.01
    near = cv2.dilate((edge | pair["occluded"]).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    return ~near


def photometric_error(pair: dict, flow: np.ndarray, mask: np.ndarray) -> float:
    return float(np.abs(warp_back(pair["image2"], flow) - pair["image1"]).mean(-1)[mask].mean())


def test_deterministic_by_seed():
    a, b, c = make_pair(64, 80, 5), make_pair(64, 80, 5), make_pair(64, 80, 6)
    assert a.keys() == {"image1", "image2", "flow", "valid", "occluded"}
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["image1"], c["image1"])
    assert not np.array_equal(a["flow"], c["flow"])


def test_shapes_and_dtypes_any_size():
    pair = make_pair(37, 53, 0)
    assert pair["image1"].shape == pair["image2"].shape == (37, 53, 3)
    assert pair["image1"].dtype == pair["image2"].dtype == np.uint8
    assert pair["flow"].shape == (37, 53, 2) and pair["flow"].dtype == np.float32
    assert pair["valid"].dtype == bool and pair["valid"].all()
    assert pair["occluded"].shape == (37, 53) and pair["occluded"].dtype == bool
    with pytest.raises(ValueError):
        make_pair(16, 64, 0)


@pytest.mark.parametrize("max_motion", [2.0, 8.0, 20.0])
def test_flow_bounded_by_max_motion(max_motion):
    peaks = [np.linalg.norm(make_pair(64, 96, s, max_motion=max_motion)["flow"], axis=-1).max() for s in range(4)]
    assert max(peaks) <= max_motion + 1e-4
    assert np.mean(peaks) > 0.4 * max_motion  # the bound is used, not just respected by tiny motions


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gt_flow_warps_image2_onto_image1(seed):
    pair = make_pair(96, 128, seed, n_layers=3, max_motion=6.0)
    mask = interior_mask(pair)
    assert mask.mean() > 0.6
    right = photometric_error(pair, pair["flow"], mask)
    wrong = photometric_error(pair, pair["flow"] + np.float32([2.0, 0.0]), mask)
    assert right < 2.0, right
    assert wrong > 5.0 * right and wrong > 4.0, (right, wrong)


def test_occlusion_mask_marks_mismatches_and_off_frame():
    pairs = [make_pair(96, 128, s, n_layers=5, max_motion=8.0) for s in range(3)]
    errors, leaving = [], 0
    for pair in pairs:
        flow, occluded = pair["flow"], pair["occluded"]
        h, w = occluded.shape
        gy, gx = np.mgrid[0:h, 0:w]
        tx, ty = gx + flow[..., 0], gy + flow[..., 1]
        off = (tx < 0) | (tx > w - 1) | (ty < 0) | (ty > h - 1)
        assert occluded[off].all()  # leaving the frame counts as occluded
        leaving += off.sum()
        hidden = occluded & ~off
        errors.append(np.abs(warp_back(pair["image2"], flow) - pair["image1"]).mean(-1)[hidden])
    hidden_error = np.concatenate(errors)
    assert leaving > 0 and hidden_error.size > 50
    assert hidden_error.mean() > 10.0  # hidden pixels see another layer's texture


def test_without_occlusions_only_off_frame_pixels_are_occluded():
    pair = make_pair(64, 96, 3, n_layers=4, occlusions=False)
    flow = pair["flow"]
    gy, gx = np.mgrid[0:64, 0:96]
    off = (gx + flow[..., 0] < 0) | (gx + flow[..., 0] > 95) | (gy + flow[..., 1] < 0) | (gy + flow[..., 1] > 63)
    np.testing.assert_array_equal(pair["occluded"], off)


def test_pure_translation_gives_constant_flow_and_shifted_image():
    pair = make_pair(64, 96, 11, n_layers=0, smooth=False, affine=False, max_motion=5.0)
    flow = pair["flow"]
    assert np.abs(flow - flow[0, 0]).max() == 0.0
    assert 0.0 < np.linalg.norm(flow[0, 0]) <= 5.0
    mask = ~pair["occluded"]
    assert photometric_error(pair, flow, mask) < 1.0


def test_background_inverse_is_a_true_inverse():
    rng = np.random.default_rng(0)
    base = _Affine(np.array([63.5, 47.5]), np.array([[0.03, -0.02], [0.02, -0.03]]), np.array([2.0, -1.5]))
    field = _random_smooth(rng, base, 96, 128, max_motion=8.0)
    qx, qy = rng.uniform(-10, 138, 5000), rng.uniform(-10, 106, 5000)
    px, py = field.inverse(qx, qy)
    fx, fy = field.forward(px, py)
    assert np.abs(fx - qx).max() < 1e-4 and np.abs(fy - qy).max() < 1e-4
    dx, dy = field.deformation(qx, qy)
    assert np.abs(dx).max() > 0.05 or np.abs(dy).max() > 0.05  # the field is really non-affine


def test_dataset_items_match_make_pair():
    data = SyntheticFlow(length=3, size=(48, 64), seed=2, n_layers=2)
    assert len(data) == 3 and data.pad_mode == "sintel" and not data.sparse and data.aggregation == "pooled"
    image1, image2, flow, valid = data[1]
    pair = make_pair(48, 64, 2 * 1_000_003 + 1, n_layers=2)
    assert image1.dtype == image2.dtype == flow.dtype == torch.float32 and valid.dtype == torch.bool
    assert image1.shape == (3, 48, 64) and flow.shape == (2, 48, 64) and valid.shape == (48, 64)
    np.testing.assert_array_equal(image1.permute(1, 2, 0).numpy(), pair["image1"].astype(np.float32))
    np.testing.assert_array_equal(image2.permute(1, 2, 0).numpy(), pair["image2"].astype(np.float32))
    np.testing.assert_array_equal(flow.permute(1, 2, 0).numpy(), pair["flow"])
    assert len({data.sample_id(i) for i in range(3)}) == 3
    with pytest.raises(IndexError):
        data[3]


def test_dataset_applies_augmentor():
    aug = FlowAugmentor((32, 40), seed=0)
    image1, image2, flow, valid = SyntheticFlow(length=2, size=(48, 64), augmentor=aug)[0]
    assert image1.shape == image2.shape == (3, 32, 40) and flow.shape == (2, 32, 40) and valid.shape == (32, 40)


def test_write_pair_writes_middlebury_files(tmp_path):
    pair = make_pair(40, 56, 4)
    folder = write_pair(tmp_path / "scene", pair)
    flo = folder / "flow10.flo"
    assert flo.stat().st_size == 12 + 8 * 56 * 40
    raw = flo.read_bytes()
    assert np.frombuffer(raw[:4], "<f4")[0] == np.float32(202021.25)
    assert tuple(np.frombuffer(raw[4:12], "<i4")) == (56, 40)
    np.testing.assert_array_equal(np.frombuffer(raw[12:], "<f4").reshape(40, 56, 2), pair["flow"])
    for name, key in (("frame10.png", "image1"), ("frame11.png", "image2")):
        np.testing.assert_array_equal(cv2.imread(str(folder / name))[..., ::-1], pair[key])
    assert sorted(p.name for p in folder.iterdir()) == ["flow10.flo", "frame10.png", "frame11.png"]
