"""Synthetic optical-flow pairs with exact ground truth, for training and demos without downloads.

A scene is a stack of layers composited back to front: a textured background covering the frame and
`n_layers` textured foreground shapes (ellipses, convex polygons). Each layer carries

* a texture: a continuous RGB function of real-valued image-1 coordinates (a base colour, a bicubic
  (Catmull-Rom) interpolation of a random low-resolution noise grid, and a sum of random sinusoids),
  evaluated analytically in numpy -- no resampling of a pixel image, so no interpolation error;
* a shape (foreground only), tested analytically at real-valued coordinates;
* a motion p -> f(p): affine for foreground layers, affine plus a smooth low-frequency sinusoidal
  deformation for the background.

Image 1 samples each pixel's top layer at the pixel itself. Image 2 samples, at pixel q, the top layer
among those whose shape contains f^-1(q), at f^-1(q). The flow at p is therefore exactly f(p) - p for
p's top layer, up to the 8-bit rounding of the images. The background's non-affine motion has no
closed-form inverse; it is inverted numerically by a contracting fixed-point iteration (the deformation's
Lipschitz constant is kept <= 0.15), to a tolerance of 1e-5 px (see `_SmoothField`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .flow_io import write_flow, write_image

# The background deformation's Lipschitz constant: with the affine part close to identity the inverse
# fixed-point map contracts by roughly this factor per iteration.
_DEFORM_LIPSCHITZ = 0.15
_INVERSE_TOL = 1e-5  # px; well below the 1e-4 px promised
_INVERSE_MAX_ITERS = 60

Array = np.ndarray


@dataclass
class _Texture:
    """Continuous RGB texture t(x, y) in [0, 255]; `x`, `y` are real-valued pixel coordinates."""

    base: Array  # (3,) mean colour
    grid: Array  # (gh, gw, 3) noise samples, placed every `spacing` px starting at (origin, origin)
    spacing: float
    origin: float
    freqs: Array  # (K, 2) cycles per pixel
    phases: Array  # (K,)
    amps: Array  # (K, 3) per-channel amplitude of each sinusoid

    def __call__(self, x: Array, y: Array) -> Array:
        """(N,) coordinates -> (N, 3) float64 colours."""
        noise = _catmull_rom(self.grid, (x - self.origin) / self.spacing, (y - self.origin) / self.spacing)
        waves = np.sin(2 * np.pi * (np.outer(x, self.freqs[:, 0]) + np.outer(y, self.freqs[:, 1])) + self.phases)
        return np.clip(self.base + noise + waves @ self.amps, 0.0, 255.0)


def _catmull_rom_weights(t: Array) -> list[Array]:
    """Cubic-convolution (a = -0.5) weights of the 4 taps at offsets -1, 0, 1, 2 for fractions t."""
    t2, t3 = t * t, t * t * t
    return [(-t3 + 2 * t2 - t) / 2, (3 * t3 - 5 * t2 + 2) / 2, (-3 * t3 + 4 * t2 + t) / 2, (t3 - t2) / 2]


def _catmull_rom(grid: Array, gx: Array, gy: Array) -> Array:
    """Bicubic interpolation of grid (gh, gw, C) at real grid coordinates (N,) -> (N, C).

    Out-of-range taps are clamped, which keeps the function continuous everywhere. Gathering from one
    contiguous plane per channel with np.take is ~4x faster than fancy-indexing (N, C) rows.
    """
    gh, gw, channels = grid.shape
    ix, iy = np.floor(gx), np.floor(gy)
    wx, wy = _catmull_rom_weights(gx - ix), _catmull_rom_weights(gy - iy)
    ix, iy = ix.astype(np.intp), iy.astype(np.intp)
    cols = [np.clip(ix + i - 1, 0, gw - 1) for i in range(4)]
    planes = [np.ascontiguousarray(grid[..., c]).ravel() for c in range(channels)]
    out = np.zeros((channels, gx.size))
    for j in range(4):
        row = np.clip(iy + j - 1, 0, gh - 1) * gw
        for i in range(4):
            index, weight = row + cols[i], wy[j] * wx[i]
            for c in range(channels):
                out[c] += weight * np.take(planes[c], index)
    return out.T


@dataclass
class _Affine:
    """p -> c + (I + B)(p - c) + t, with c the frame centre; the flow (B(p - c) + t) is linear in (B, t)."""

    centre: Array  # (2,)
    linear: Array  # (2, 2) B
    shift: Array  # (2,) t

    def forward(self, x: Array, y: Array) -> tuple[Array, Array]:
        dx, dy = x - self.centre[0], y - self.centre[1]
        b, t = self.linear, self.shift
        return x + b[0, 0] * dx + b[0, 1] * dy + t[0], y + b[1, 0] * dx + b[1, 1] * dy + t[1]

    def inverse(self, x: Array, y: Array) -> tuple[Array, Array]:
        inv = np.linalg.inv(np.eye(2) + self.linear)
        dx, dy = x - self.centre[0] - self.shift[0], y - self.centre[1] - self.shift[1]
        return self.centre[0] + inv[0, 0] * dx + inv[0, 1] * dy, self.centre[1] + inv[1, 0] * dx + inv[1, 1] * dy

    def scaled(self, k: float) -> "_Affine":
        return _Affine(self.centre, self.linear * k, self.shift * k)


@dataclass
class _SmoothField:
    """Affine motion plus a smooth deformation d(p) = sum_k a_k sin(2 pi w_k . p + phi_k).

    The inverse has no closed form; `inverse` solves q = A(p) + d(p) by the fixed-point iteration
    p <- A^-1(q - d(p)). Its contraction factor is |A^-1| * Lip(d), and Lip(d) <= sum_k |a_k| 2 pi |w_k|
    is kept <= 0.15 at construction, so a handful of iterations reach the tolerance (1e-5 px, checked).
    """

    affine: _Affine
    amps: Array  # (K, 2) displacement amplitude, px
    freqs: Array  # (K, 2) cycles per pixel
    phases: Array  # (K,)

    def deformation(self, x: Array, y: Array) -> tuple[Array, Array]:
        s = np.sin(2 * np.pi * (np.multiply.outer(x, self.freqs[:, 0]) + np.multiply.outer(y, self.freqs[:, 1]))
                   + self.phases)
        return s @ self.amps[:, 0], s @ self.amps[:, 1]

    def forward(self, x: Array, y: Array) -> tuple[Array, Array]:
        ax, ay = self.affine.forward(x, y)
        dx, dy = self.deformation(x, y)
        return ax + dx, ay + dy

    def inverse(self, x: Array, y: Array) -> tuple[Array, Array]:
        px, py = self.affine.inverse(x, y)
        for _ in range(_INVERSE_MAX_ITERS):
            dx, dy = self.deformation(px, py)
            nx, ny = self.affine.inverse(x - dx, y - dy)
            step = max(np.abs(nx - px).max(initial=0.0), np.abs(ny - py).max(initial=0.0))
            px, py = nx, ny
            if step < _INVERSE_TOL:
                return px, py
        raise RuntimeError(f"background inverse did not converge (last step {step:.2e} px)")

    def scaled(self, k: float) -> "_SmoothField":
        return _SmoothField(self.affine.scaled(k), self.amps * k, self.freqs, self.phases)


@dataclass
class _Shape:
    """Ellipse (`axes`, `angle`) or convex polygon (`vertices`, counter-clockwise in area sign)."""

    centre: Array
    axes: Optional[Array] = None
    angle: float = 0.0
    vertices: Optional[Array] = None  # (K, 2)

    def contains(self, x: Array, y: Array) -> Array:
        dx, dy = x - self.centre[0], y - self.centre[1]
        if self.vertices is None:
            c, s = np.cos(self.angle), np.sin(self.angle)
            return ((c * dx + s * dy) / self.axes[0]) ** 2 + ((-s * dx + c * dy) / self.axes[1]) ** 2 <= 1.0
        inside = np.ones(x.shape, bool)
        v = self.vertices - self.centre
        for k in range(len(v)):  # inside a convex polygon = on the inner side of every edge
            ex, ey = v[(k + 1) % len(v)] - v[k]
            inside &= ex * (dy - v[k, 1]) - ey * (dx - v[k, 0]) >= 0
        return inside


@dataclass
class _Layer:
    texture: _Texture
    motion: Any  # _Affine or _SmoothField
    shape: Optional[_Shape]  # None: the background, covering everything

    def contains(self, x: Array, y: Array) -> Array:
        return np.ones(x.shape, bool) if self.shape is None else self.shape.contains(x, y)


def _random_texture(rng: np.random.Generator, height: int, width: int, margin: float) -> _Texture:
    spacing = rng.uniform(4.0, 10.0)
    gh, gw = (int(np.ceil((n + 2 * margin) / spacing)) + 4 for n in (height, width))
    n_waves = 4
    period = rng.uniform(12.0, 48.0, n_waves)  # >= 12 px so bilinear warping stays accurate
    angle = rng.uniform(0, 2 * np.pi, n_waves)
    return _Texture(
        base=rng.uniform(40.0, 215.0, 3),
        grid=rng.uniform(-1.0, 1.0, (gh, gw, 3)) * rng.uniform(30.0, 60.0),
        spacing=spacing, origin=-margin - spacing,
        freqs=np.stack([np.cos(angle), np.sin(angle)], 1) / period[:, None],
        phases=rng.uniform(0, 2 * np.pi, n_waves),
        amps=rng.uniform(-1.0, 1.0, (n_waves, 3)) * rng.uniform(8.0, 25.0))


def _random_affine(rng: np.random.Generator, centre: Array, extent: float, max_motion: float, affine: bool) -> _Affine:
    shift = rng.uniform(-1.0, 1.0, 2) * max_motion
    linear = np.zeros((2, 2))
    if affine:  # rotation, zoom and shear displacing by ~max_motion/2 at distance `extent`; entries <= 0.1
        # keep I + B well conditioned (|(I + B)^-1| <= 1.25), which the background's fixed point relies on
        linear = rng.uniform(-1.0, 1.0, (2, 2)) * min(0.5 * max_motion / max(extent, 1.0), 0.1)
    return _Affine(centre, linear, shift)


def _random_smooth(rng: np.random.Generator, base: _Affine, height: int, width: int, max_motion: float) -> _SmoothField:
    n_terms = 3
    period = rng.uniform(0.6, 2.0, n_terms) * max(height, width)
    angle = rng.uniform(0, 2 * np.pi, n_terms)
    freqs = np.stack([np.cos(angle), np.sin(angle)], 1) / period[:, None]
    direction = rng.uniform(-1.0, 1.0, (n_terms, 2))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True) + 1e-12
    # Split the Lipschitz budget equally between terms: |a_k| 2 pi |w_k| <= budget / K.
    limit = _DEFORM_LIPSCHITZ / n_terms / (2 * np.pi * np.linalg.norm(freqs, axis=1))
    magnitude = np.minimum(rng.uniform(0.3, 1.0, n_terms) * max_motion / 2, limit)
    return _SmoothField(base, direction * magnitude[:, None], freqs, rng.uniform(0, 2 * np.pi, n_terms))


def _random_shape(rng: np.random.Generator, height: int, width: int) -> _Shape:
    size = min(height, width)
    centre = rng.uniform([0.0, 0.0], [width, height])
    radius = rng.uniform(0.08, 0.25) * size
    if rng.random() < 0.5:
        return _Shape(centre, axes=radius * rng.uniform(0.5, 1.0, 2), angle=rng.uniform(0, np.pi))
    points = centre + rng.normal(size=(rng.integers(5, 10), 2)) * radius / 1.5
    hull = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    hull = hull if hull.shape[0] >= 3 else centre + radius * np.array([[1, 0], [-0.5, 0.8], [-0.5, -0.8]])
    area2 = np.sum(hull[:, 0] * np.roll(hull[:, 1], -1) - np.roll(hull[:, 0], -1) * hull[:, 1])
    return _Shape(centre, vertices=hull if area2 > 0 else hull[::-1].copy())


def _bounded(motion: Any, xs: Array, ys: Array, max_motion: float) -> Any:
    """Scale the motion so |f(p) - p| <= max_motion at the pixels xs, ys (the flow is linear in its parameters)."""
    if xs.size == 0:
        return motion
    fx, fy = motion.forward(xs, ys)
    peak = np.sqrt((fx - xs) ** 2 + (fy - ys) ** 2).max()
    return motion if peak <= max_motion else motion.scaled(max_motion / peak * (1 - 1e-6))


def _build_scene(rng: np.random.Generator, height: int, width: int, xs: Array, ys: Array, max_motion: float,
                 n_layers: int, occlusions: bool, smooth: bool, affine: bool) -> list[_Layer]:
    margin = 2 * max_motion + 0.3 * max(height, width)  # texture grids cover any inverse-mapped point
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    extent = float(np.hypot(width, height)) / 2
    motion: Any = _random_affine(rng, centre, extent, max_motion, affine)
    if smooth:
        motion = _random_smooth(rng, motion, height, width, max_motion)
    background = _Layer(_random_texture(rng, height, width, margin), _bounded(motion, xs, ys, max_motion), None)
    layers = [background]
    for _ in range(n_layers):
        shape = _random_shape(rng, height, width)
        inside = shape.contains(xs, ys)
        own = _random_affine(rng, shape.centre, 0.25 * min(height, width), max_motion, affine)
        # Without occlusions, foreground moves with the background: no motion boundary, nothing hidden.
        motion = _bounded(own, xs[inside], ys[inside], max_motion) if occlusions else background.motion
        layers.append(_Layer(_random_texture(rng, height, width, margin), motion, shape))
    return layers


def _composite(layers: list[_Layer], xs: Array, ys: Array, warp: bool) -> tuple[Array, Array, list]:
    """Top layer per pixel and colours (N, 3); with `warp`, every layer is looked up at f^-1(pixel)."""
    label = np.zeros(xs.shape, np.int64)
    coords, inverses = [], {}
    for index, layer in enumerate(layers):
        if warp and id(layer.motion) not in inverses:  # layers sharing the background motion invert once
            inverses[id(layer.motion)] = layer.motion.inverse(xs, ys)
        u, v = inverses[id(layer.motion)] if warp else (xs, ys)
        label[layer.contains(u, v)] = index
        coords.append((u, v))
    colour = np.empty(xs.shape + (3,))
    for index, layer in enumerate(layers):
        mask = label == index
        colour[mask] = layer.texture(coords[index][0][mask], coords[index][1][mask])
    return label, colour, coords


def _flow_and_occlusion(layers: list[_Layer], label: Array, xs: Array, ys: Array, height: int, width: int,
                        occlusions: bool) -> tuple[Array, Array]:
    """Forward flow (N, 2) of each pixel's top layer, and whether its destination is hidden or off-frame."""
    flow = np.empty(xs.shape + (2,))
    for index, layer in enumerate(layers):
        mask = label == index
        fx, fy = layer.motion.forward(xs[mask], ys[mask])
        flow[mask] = np.stack([fx - xs[mask], fy - ys[mask]], -1)
    flow = flow.astype(np.float32).astype(np.float64)  # judge destinations by the flow actually returned
    dx, dy = xs + flow[:, 0], ys + flow[:, 1]
    # "In frame" means bilinearly samplable from image 2: within the pixel centres [0, W-1] x [0, H-1].
    occluded = (dx < 0) | (dx > width - 1) | (dy < 0) | (dy > height - 1)
    if occlusions:  # hidden when a layer above the pixel's own covers its destination in image 2
        for index in range(1, len(layers)):
            below = label < index
            u, v = layers[index].motion.inverse(dx[below], dy[below])
            occluded[below] |= layers[index].contains(u, v)
    return flow, occluded


def make_pair(height: int, width: int, seed: int, *, max_motion: float = 8.0, n_layers: int = 3,
              occlusions: bool = True, smooth: bool = True, affine: bool = True) -> dict[str, Array]:
    """One synthetic pair with exact forward flow.

    Args:
        height, width: image size, each >= 32.
        seed: everything is drawn from `np.random.default_rng(seed)`; equal seeds give equal pairs.
        max_motion: bound on |flow| in pixels, enforced exactly on every pixel.
        n_layers: number of foreground shapes over the background.
        occlusions: if False, foreground layers move with the background, so only pixels leaving the
            frame are marked occluded.
        smooth: add the smooth non-affine deformation to the background motion.
        affine: if False, every motion is a pure translation (with `smooth=False`, `n_layers=0` the flow
            is constant).

    Returns:
        dict with `image1`, `image2` (uint8 [H,W,3] RGB), `flow` (float32 [H,W,2], (u, v): pixel (x, y)
        of image1 appears at (x+u, y+v) in image2), `valid` (bool [H,W], all True) and `occluded`
        (bool [H,W]: hidden by another layer in image2, or destination outside [0,W-1] x [0,H-1]).
    """
    if height < 32 or width < 32:
        raise ValueError(f"size must be at least 32x32, got {height}x{width}")
    if max_motion < 0 or n_layers < 0:
        raise ValueError("max_motion and n_layers must be non-negative")
    rng = np.random.default_rng(seed)
    gy, gx = np.mgrid[0:height, 0:width]
    xs, ys = gx.ravel().astype(np.float64), gy.ravel().astype(np.float64)
    layers = _build_scene(rng, height, width, xs, ys, max_motion, n_layers, occlusions, smooth, affine)
    label1, colour1, _ = _composite(layers, xs, ys, warp=False)
    _, colour2, _ = _composite(layers, xs, ys, warp=True)
    flow, occluded = _flow_and_occlusion(layers, label1, xs, ys, height, width, occlusions)
    to_image = lambda c: np.rint(c).astype(np.uint8).reshape(height, width, 3)  # noqa: E731
    return {
        "image1": to_image(colour1),
        "image2": to_image(colour2),
        "flow": flow.astype(np.float32).reshape(height, width, 2),
        "valid": np.ones((height, width), bool),
        "occluded": occluded.reshape(height, width),
    }


class SyntheticFlow(Dataset):
    """`length` synthetic pairs of `size` (H, W); sample i is `make_pair(H, W, seed * 1_000_003 + i, ...)`.

    Items are `(image1, image2, flow, valid)`: float32 [3,H,W] in [0,255] twice, float32 [2,H,W],
    bool [H,W]. An `augmentor(img1, img2, flow, valid)` on the numpy arrays runs before conversion.
    """

    pad_mode = "sintel"
    sparse = False
    aggregation = "pooled"

    def __init__(self, length: int = 100, size: tuple[int, int] = (384, 512), seed: int = 0,
                 augmentor: Optional[Callable[..., tuple[Array, Array, Array, Array]]] = None,
                 **make_pair_kwargs: Any) -> None:
        self.length, self.size, self.seed = int(length), (int(size[0]), int(size[1])), int(seed)
        self.augmentor = augmentor
        self.make_pair_kwargs = make_pair_kwargs

    def __len__(self) -> int:
        return self.length

    def sample_seed(self, index: int) -> int:
        """The make_pair seed of sample `index`."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        return self.seed * 1_000_003 + index

    def sample_id(self, index: int) -> str:
        return f"synthetic/{self.sample_seed(index)}"

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        pair = make_pair(*self.size, self.sample_seed(index), **self.make_pair_kwargs)
        arrays = (pair["image1"], pair["image2"], pair["flow"], pair["valid"])
        if self.augmentor is not None:
            arrays = self.augmentor(*arrays)
        img1, img2, flow, valid = (np.ascontiguousarray(a) for a in arrays)
        return (torch.from_numpy(img1).permute(2, 0, 1).float(), torch.from_numpy(img2).permute(2, 0, 1).float(),
                torch.from_numpy(flow.astype(np.float32)).permute(2, 0, 1).contiguous(),
                torch.from_numpy(valid.astype(bool)))


def write_pair(folder: str | os.PathLike, pair: dict[str, Array]) -> Path:
    """Write frame10.png, frame11.png (RGB images) and flow10.flo (Middlebury) into `folder`; returns it."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    write_image(out / "frame10.png", pair["image1"])
    write_image(out / "frame11.png", pair["image2"])
    write_flow(out / "flow10.flo", pair["flow"])
    return out
