"""Middlebury colour wheel: structure, hand-worked colours, normalisation, invalid pixels, PNG output."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from flownas.data.viz import flow_to_color, make_colorwheel, save_flow_image


def _one_pixel(u: float, v: float, max_flow: float | None = None) -> list[int]:
    return flow_to_color(np.array([[[u, v]]], np.float32), max_flow=max_flow)[0, 0].tolist()


def test_colour_wheel_segments() -> None:
    wheel = make_colorwheel()
    assert wheel.shape == (55, 3)
    # Segment starts: red, yellow, green, cyan, blue, magenta at offsets 0, 15, 21, 25, 36, 49.
    starts = {0: (255, 0, 0), 15: (255, 255, 0), 21: (0, 255, 0), 25: (0, 255, 255), 36: (0, 0, 255),
              49: (255, 0, 255)}
    for index, colour in starts.items():
        assert tuple(wheel[index]) == colour
    # Inside RY, green ramps up in steps of floor(255 * k / 15).
    assert wheel[1].tolist() == [255, 17, 0]
    assert wheel[54].tolist() == [255, 0, 255 - 212]


def test_hand_worked_directions_at_full_magnitude() -> None:
    # Right (+u): angle position 0 -> wheel[0] = red.
    assert _one_pixel(3.0, 0.0, max_flow=3.0) == [255, 0, 0]
    # Down (+v): position (−0.5 + 1)/2 * 54 = 13.5 -> halfway between wheel[13] and wheel[14]:
    # green floor((221 + 238) / 2) = 229.
    assert _one_pixel(0.0, 2.0, max_flow=2.0) == [255, 229, 0]
    # Left (−u): position 27 -> wheel[27] = CB segment index 2: green 255 − floor(510/11) = 209.
    assert _one_pixel(-1.0, 0.0, max_flow=1.0) == [0, 209, 255]
    # Without max_flow the largest magnitude normalises to (just under) full saturation.
    assert _one_pixel(7.5, 0.0) == [255, 0, 0]


def test_magnitude_blends_to_white_and_darkens_beyond_max() -> None:
    assert _one_pixel(0.0, 0.0) == [255, 255, 255]
    # Half magnitude to the right: 1 − 0.5 · (1 − 0) = 0.5 -> floor(127.5) = 127 in G and B.
    assert _one_pixel(0.5, 0.0, max_flow=1.0) == [255, 127, 127]
    # Beyond max_flow: the wheel colour times 0.75 -> floor(191.25) = 191.
    assert _one_pixel(2.0, 0.0, max_flow=1.0) == [191, 0, 0]


def test_negative_zero_v_still_red() -> None:
    # arctan2 of ±0 differs by 2π; both must mean "pointing right".
    assert _one_pixel(1.0, -0.0, max_flow=1.0) == [255, 0, 0]


def test_normalisation_is_scale_invariant_and_ignores_invalid() -> None:
    flow = np.random.default_rng(0).normal(size=(6, 8, 2)).astype(np.float32)
    np.testing.assert_array_equal(flow_to_color(flow), flow_to_color(flow * 4))
    valid = np.ones((6, 8), bool)
    valid[2, 3] = False
    spiked = flow.copy()
    spiked[2, 3] = (1e6, 0)  # a huge invalid value must not change the normalisation
    image = flow_to_color(spiked, valid=valid)
    assert image[2, 3].tolist() == [0, 0, 0]
    np.testing.assert_array_equal(image[valid], flow_to_color(flow, valid=valid)[valid])
    nan_flow = flow.copy()
    nan_flow[0, 0] = np.nan
    assert flow_to_color(nan_flow)[0, 0].tolist() == [0, 0, 0]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"\[H, W, 2\]"):
        flow_to_color(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="max_flow"):
        flow_to_color(np.zeros((4, 4, 2)), max_flow=0)


def test_save_flow_image_writes_rgb_png(tmp_path: Path) -> None:
    flow = np.random.default_rng(1).normal(size=(5, 9, 2)).astype(np.float32)
    path = tmp_path / "out" / "flow.png"
    save_flow_image(path, flow, max_flow=2.0)
    written = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
    np.testing.assert_array_equal(written, flow_to_color(flow, max_flow=2.0))
    assert [p.name for p in path.parent.iterdir()] == ["flow.png"]
    with pytest.raises(ValueError, match="png"):
        save_flow_image(tmp_path / "flow.jpg", flow)
