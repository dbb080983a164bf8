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
