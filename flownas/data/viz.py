"""Flow visualisation with the Middlebury colour wheel (Baker et al., "A Database and Evaluation
Methodology for Optical Flow", IJCV 2011), as used by the Middlebury, Sintel and RAFT tools.

Hue encodes direction, saturation encodes magnitude: zero flow is white, flow of the normalising
magnitude is the fully saturated wheel colour, and flow beyond it (only possible with an explicit
`max_flow`) is darkened to 75%. Flow pointing right (+u) is red, down (+v) is yellow-orange,
left is cyan-blue and up is blue-magenta.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from .flow_io import PathLike, atomic_write_bytes

# Number of colours in each hue transition, chosen by Baker et al. for perceptual uniformity.
WHEEL_SEGMENTS = (("RY", 15), ("YG", 6), ("GC", 4), ("CB", 11), ("BM", 13), ("MR", 6))
_EPSILON = 1e-5  # keeps the division defined for all-zero flow, as in the reference code


def make_colorwheel() -> np.ndarray:
    """The 55-entry Middlebury colour wheel, `float64 [55, 3]` RGB in 0..255, starting at red."""
    wheel = []
    # Each segment ramps one channel while the others are held: (channel that ramps, up or down, full channels).
    ramps = {"RY": (1, +1, (0,)), "YG": (0, -1, (1,)), "GC": (2, +1, (1,)),
             "CB": (1, -1, (2,)), "BM": (0, +1, (2,)), "MR": (2, -1, (0,))}
    for name, count in WHEEL_SEGMENTS:
        channel, direction, full = ramps[name]
        block = np.zeros((count, 3))
        ramp = np.floor(255 * np.arange(count) / count)
        block[:, channel] = ramp if direction > 0 else 255 - ramp
        block[:, list(full)] = 255
        wheel.append(block)
    return np.concatenate(wheel)


def _wheel_colors(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Colour of normalised flow (u, v) (magnitude 1 = saturated), `float64 [..., 3]` in 0..1."""
    wheel = make_colorwheel() / 255.0
    ncols = len(wheel)
    radius = np.sqrt(u * u + v * v)
    angle = np.arctan2(-v, -u) / np.pi  # in [-1, 1]; -1 is +u (red)
    # +1 and -1 both mean "pointing right"; fold +1 onto -1 so the sign of a zero v cannot pick the
    # other end of the wheel (the reference maps [-1, 1] onto 0..ncols-1 without wrapping).
    angle = np.where(angle >= 1.0, -1.0, angle)
    position = (angle + 1) / 2 * (ncols - 1)
    k0 = np.floor(position).astype(np.int64)
    k1 = (k0 + 1) % ncols
    frac = (position - k0)[..., None]
    colour = (1 - frac) * wheel[k0] + frac * wheel[k1]
    inside = (radius <= 1)[..., None]
    # Inside the unit circle: blend towards white as the magnitude shrinks; outside: darken.
    return np.where(inside, 1 - radius[..., None] * (1 - colour), colour * 0.75)


def flow_to_color(flow: np.ndarray, max_flow: Optional[float] = None,
                  valid: Optional[np.ndarray] = None) -> np.ndarray:
    """Colour-code `flow` (`[H, W, 2]`) as `np.uint8 [H, W, 3]` RGB.

    Magnitudes are divided by `max_flow` if given, else by the largest valid magnitude. Pixels where
    `valid` (`[H, W]` bool) is False, or whose flow is not finite, are black.
    """
    flow = np.asarray(flow, dtype=np.float64)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow_to_color: flow must have shape [H, W, 2], got {list(flow.shape)}")
    mask = np.isfinite(flow).all(axis=2)
    if valid is not None:
        valid = np.asarray(valid)
        if valid.shape != flow.shape[:2]:
            raise ValueError(f"flow_to_color: valid shape {list(valid.shape)} does not match flow "
                             f"{list(flow.shape[:2])}")
        mask &= valid.astype(bool)
    if max_flow is not None and not max_flow > 0:
        raise ValueError(f"flow_to_color: max_flow must be positive, got {max_flow}")
    uv = np.where(mask[..., None], flow, 0.0)
    if max_flow is None:
        magnitude = np.sqrt((uv ** 2).sum(axis=2))
        scale = float(magnitude.max()) + _EPSILON if magnitude.size else 1.0
    else:
        scale = float(max_flow)
    colour = _wheel_colors(uv[..., 0] / scale, uv[..., 1] / scale)
    image = np.floor(255 * colour).astype(np.uint8)
    image[~mask] = 0
    return image


def save_flow_image(path: PathLike, flow: np.ndarray, max_flow: Optional[float] = None,
                    valid: Optional[np.ndarray] = None) -> None:
    """Atomically write `flow_to_color(flow, max_flow, valid)` as an 8-bit RGB PNG at `path`."""
    if Path(path).suffix.lower() != ".png":
        raise ValueError(f"{path}: flow pictures are written as PNG (expected a .png path)")
    rgb = flow_to_color(flow, max_flow=max_flow, valid=valid)
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise ValueError(f"{path}: OpenCV could not encode the flow picture as PNG")
    atomic_write_bytes(path, buffer.tobytes())


def max_valid_magnitude(flow: np.ndarray, valid: Optional[np.ndarray] = None) -> float:
    """Largest finite flow magnitude among `valid` pixels (0.0 when there are none).

    Used as the one scale a prediction and its ground truth are both drawn on: normalising each picture by
    its own maximum would make a prediction with half the motion look just as saturated as the truth.
    """
    flow = np.asarray(flow, dtype=np.float64)
    magnitude = np.sqrt((flow ** 2).sum(axis=-1))
    mask = np.isfinite(magnitude)
    if valid is not None:
        mask &= np.asarray(valid, dtype=bool)
    return float(magnitude[mask].max()) if mask.any() else 0.0


def flow_comparison(pred: np.ndarray, gt: np.ndarray, valid: Optional[np.ndarray] = None,
                    gap: int = 4) -> tuple[np.ndarray, float]:
    """`uint8 [H, 2W+gap, 3]` RGB: prediction | ground truth on one shared scale, and that scale (px).

    The scale is the largest magnitude of the ground truth's valid pixels (1 px when the truth is all zero),
    so equal colours mean equal flow in both halves; a prediction beyond it is darkened (see `flow_to_color`).
    Pixels where the truth is invalid are black in the ground-truth half only.
    """
    max_flow = max_valid_magnitude(gt, valid) or 1.0
    left = flow_to_color(pred, max_flow=max_flow)
    right = flow_to_color(gt, max_flow=max_flow, valid=valid)
    spacer = np.full((left.shape[0], gap, 3), 255, np.uint8)
    return np.concatenate([left, spacer, right], axis=1), max_flow


def epe_error_map(pred: np.ndarray, gt: np.ndarray, valid: Optional[np.ndarray] = None,
                  max_epe: float = 5.0) -> np.ndarray:
    """`uint8 [H, W, 3]` RGB end-point-error map: EPE clipped to [0, max_epe] px through OpenCV's JET map
    (blue = 0, red = max_epe or more); pixels without valid ground truth are black.

    A fixed `max_epe` (rather than the image's own maximum) keeps maps of different pairs comparable.
    """
    if not max_epe > 0:
        raise ValueError(f"epe_error_map: max_epe must be positive, got {max_epe}")
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[2] != 2:
        raise ValueError(f"epe_error_map: pred {list(pred.shape)} and gt {list(gt.shape)} must both be [H, W, 2]")
    epe = np.sqrt(((pred - gt) ** 2).sum(axis=2))
    mask = np.isfinite(epe) if valid is None else np.isfinite(epe) & np.asarray(valid, dtype=bool)
    level = np.round(np.clip(np.where(mask, epe, 0.0), 0.0, max_epe) / max_epe * 255).astype(np.uint8)
    rgb = cv2.applyColorMap(level, cv2.COLORMAP_JET)[:, :, ::-1].copy()
    rgb[~mask] = 0
    return rgb


def colour_wheel_legend(size: int = 151) -> np.ndarray:
    """`uint8 [size, size, 3]` RGB legend of the colour coding: the flow each pixel would show if it pointed
    from the centre to that pixel, with the circle's radius as the normalising magnitude; white outside.

    Image axes match flow axes (+u right, +v down), so the legend reads directly against a flow picture.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 3:
        raise ValueError(f"colour_wheel_legend: size must be an integer of at least 3, got {size!r}")
    centre = (size - 1) / 2
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    flow = np.stack([(xs - centre) / centre, (ys - centre) / centre], axis=2)
    image = flow_to_color(flow, max_flow=1.0)
    image[np.sqrt((flow ** 2).sum(axis=2)) > 1.0] = 255
    return image


def save_rgb_png(path: PathLike, rgb: np.ndarray) -> None:
    """Atomically write an RGB `uint8 [H, W, 3]` picture as PNG (OpenCV wants BGR, hence the flip)."""
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1]))
    if not ok:
        raise ValueError(f"{path}: OpenCV could not encode the picture as PNG")
    atomic_write_bytes(path, buffer.tobytes())
