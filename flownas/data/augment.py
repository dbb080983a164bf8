"""RAFT-style training augmentation on numpy arrays (no torchvision, no PIL).

Both augmentors are callables `aug(img1, img2, flow, valid) -> (img1, img2, flow, valid)` on
uint8 [H,W,3], uint8 [H,W,3], float32 [H,W,2], bool [H,W], returning arrays of the crop size.
Order as in RAFT: colour jitter, eraser on image 2, then the spatial part (scale, flips, crop).

Every random draw comes from the augmentor's own `np.random.Generator` (`rng=` or `seed=`), so a run
is reproducible. A DataLoader with workers copies the generator into each worker unchanged; call
`reseed` from a `worker_init_fn` to give the workers different streams.
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

Array = np.ndarray
_GREY = np.array([0.299, 0.587, 0.114])  # ITU-R 601 luma, as PIL's convert("L")


def _blend(image: Array, other: Array | float, factor: float) -> Array:
    return np.clip(image * factor + other * (1.0 - factor), 0.0, 255.0)


def _shift_hue(image: Array, shift: float) -> Array:
    """Rotate hue by `shift` turns (in [-0.5, 0.5]); image float [H,W,3] in [0,255]."""
    hsv = cv2.cvtColor((image / 255.0).astype(np.float32), cv2.COLOR_RGB2HSV)  # H in degrees
    hsv[..., 0] = np.mod(hsv[..., 0] + 360.0 * shift, 360.0)
    return np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float64) * 255.0, 0.0, 255.0)


def color_jitter(image: Array, rng: np.random.Generator, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.4, hue: float = 0.5 / 3.14) -> Array:
    """torchvision-ColorJitter equivalent on uint8 RGB [H,W,3] -> uint8 [H,W,3].

    Factors are drawn from [1-b, 1+b] (hue shift from [-hue, hue] turns) and the four adjustments are
    applied in a random order. Contrast blends towards the mean luma of the whole input, so jittering
    two images stacked vertically (as RAFT does) applies identical parameters to both.
    """
    factors = {
        "brightness": rng.uniform(max(0.0, 1 - brightness), 1 + brightness),
        "contrast": rng.uniform(max(0.0, 1 - contrast), 1 + contrast),
        "saturation": rng.uniform(max(0.0, 1 - saturation), 1 + saturation),
        "hue": rng.uniform(-hue, hue),
    }
    out = image.astype(np.float64)
    for op in rng.permutation(list(factors)):
        factor = factors[op]
        if op == "brightness":
            out = _blend(out, 0.0, factor)
        elif op == "contrast":
            out = _blend(out, float((out @ _GREY).mean()), factor)
        elif op == "saturation":
            out = _blend(out, (out @ _GREY)[..., None], factor)
        else:
            out = _shift_hue(out, factor)
    return np.rint(out).astype(np.uint8)


def resize_dense(img1: Array, img2: Array, flow: Array, valid: Array, size: tuple[int, int]
                 ) -> tuple[Array, Array, Array, Array]:
    """Bilinear resize of a dense sample to `size` (H, W); flow values scale by the actual factors.

    cv2 maps output x' = (x + 0.5) * W'/W - 0.5, so a displacement u becomes u * W'/W exactly.
    A pixel stays valid only if every bilinear contributor was valid.
    """
    height, width = size
    fx, fy = width / img1.shape[1], height / img1.shape[0]
    resize = lambda a: cv2.resize(a, (width, height), interpolation=cv2.INTER_LINEAR)  # noqa: E731
    flow = resize(flow.astype(np.float32)) * np.array([fx, fy], np.float32)
    valid = resize(valid.astype(np.float32)) > 0.999
    return resize(img1), resize(img2), flow, valid


def resize_sparse_flow(flow: Array, valid: Array, size: tuple[int, int]) -> tuple[Array, Array]:
    """Rescale sparse flow [H,W,2] / valid [H,W] to `size` (H', W') by scattering the valid points.

    Interpolating would mix measured values with the zeros of invalid pixels. Each valid point moves
    to the nearest output pixel of its rescaled position (same convention as cv2.resize) with its flow
    scaled by (W'/W, H'/H); when downscaling, points landing on one pixel keep the last one in raster order.
    """
    height, width = size
    fx, fy = width / flow.shape[1], height / flow.shape[0]
    ys, xs = np.nonzero(valid)
    nx = np.rint((xs + 0.5) * fx - 0.5).astype(np.intp)
    ny = np.rint((ys + 0.5) * fy - 0.5).astype(np.intp)
    keep = (nx >= 0) & (nx < width) & (ny >= 0) & (ny < height)
    out_flow = np.zeros((height, width, 2), np.float32)
    out_valid = np.zeros((height, width), bool)
    out_flow[ny[keep], nx[keep]] = flow[ys[keep], xs[keep]] * np.array([fx, fy], np.float32)
    out_valid[ny[keep], nx[keep]] = True
    return out_flow, out_valid


class FlowAugmentor:
    """Dense (Sintel/Things/synthetic) augmentation, RAFT defaults. Outputs have shape `crop_size` (H, W).

    `photometric=False` turns off the colour jitter and `eraser_prob=0` the eraser, leaving only the
    geometric part; the probabilities are RAFT's and exposed so tests and ablations can pin them.
    """

    jitter = (0.4, 0.4, 0.4, 0.5 / 3.14)  # brightness, contrast, saturation, hue
    crop_margin = 8  # rescaled images are at least crop + margin, so crops are not all at one offset

    def __init__(self, crop_size: tuple[int, int], min_scale: float = -0.2, max_scale: float = 0.5,
                 do_flip: bool = True, rng: Optional[np.random.Generator] = None, seed: Optional[int] = None, *,
                 photometric: bool = True, asymmetric_color_prob: float = 0.2, eraser_prob: float = 0.5,
                 eraser_bounds: tuple[int, int] = (50, 100), spatial_aug_prob: float = 0.8,
                 stretch_prob: float = 0.8, max_stretch: float = 0.2, h_flip_prob: float = 0.5,
                 v_flip_prob: float = 0.1) -> None:
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.min_scale, self.max_scale = min_scale, max_scale
        self.do_flip = do_flip
        self.rng = rng if rng is not None else np.random.default_rng(seed)
        self.photometric, self.asymmetric_color_prob = photometric, asymmetric_color_prob
        self.eraser_prob, self.eraser_bounds = eraser_prob, eraser_bounds
        self.spatial_aug_prob, self.stretch_prob, self.max_stretch = spatial_aug_prob, stretch_prob, max_stretch
        self.h_flip_prob, self.v_flip_prob = h_flip_prob, v_flip_prob

    def reseed(self, seed: int) -> None:
        """Replace the generator, e.g. per DataLoader worker."""
        self.rng = np.random.default_rng(seed)

    def color_transform(self, img1: Array, img2: Array) -> tuple[Array, Array]:
        """Jitter both images alike, or (with prob `asymmetric_color_prob`) independently."""
        if self.rng.random() < self.asymmetric_color_prob:
            return color_jitter(img1, self.rng, *self.jitter), color_jitter(img2, self.rng, *self.jitter)
        stack = color_jitter(np.concatenate([img1, img2], axis=0), self.rng, *self.jitter)
        return stack[: img1.shape[0]], stack[img1.shape[0]:]

    def eraser_transform(self, img1: Array, img2: Array) -> tuple[Array, Array]:
        """Paint 1-2 boxes of image 2 with its mean colour: simulated occlusions with no flow change."""
        if self.rng.random() >= self.eraser_prob:
            return img1, img2
        img2 = img2.copy()
        height, width = img2.shape[:2]
        mean = img2.reshape(-1, 3).mean(axis=0)
        low, high = self.eraser_bounds
        for _ in range(self.rng.integers(1, 3)):
            x0, y0 = self.rng.integers(0, width), self.rng.integers(0, height)
            dx, dy = self.rng.integers(low, high), self.rng.integers(low, high)
            img2[y0:y0 + dy, x0:x0 + dx] = mean
        return img1, img2

    def _draw_scale(self, height: int, width: int) -> tuple[float, float, bool]:
        """(scale_x, scale_y, forced): random RAFT scale, never below what the crop needs."""
        needed = max((self.crop_size[0] + self.crop_margin) / height, (self.crop_size[1] + self.crop_margin) / width)
        scale_x = scale_y = 2.0 ** self.rng.uniform(self.min_scale, self.max_scale)
        if self.rng.random() < self.stretch_prob:
            scale_x *= 2.0 ** self.rng.uniform(-self.max_stretch, self.max_stretch)
            scale_y *= 2.0 ** self.rng.uniform(-self.max_stretch, self.max_stretch)
        forced = height < self.crop_size[0] or width < self.crop_size[1]  # must upscale to crop at all
        return max(scale_x, needed), max(scale_y, needed), forced

    def _flip(self, img1: Array, img2: Array, flow: Array, valid: Array) -> tuple[Array, Array, Array, Array]:
        """Mirroring the frame negates the flow component along the mirrored axis."""
        if self.do_flip and self.rng.random() < self.h_flip_prob:
            img1, img2, flow, valid = img1[:, ::-1], img2[:, ::-1], flow[:, ::-1] * [-1.0, 1.0], valid[:, ::-1]
        if self.do_flip and self.rng.random() < self.v_flip_prob:
            img1, img2, flow, valid = img1[::-1], img2[::-1], flow[::-1] * [1.0, -1.0], valid[::-1]
        return img1, img2, flow, valid

    def _crop_origin(self, height: int, width: int) -> tuple[int, int]:
        return (int(self.rng.integers(0, height - self.crop_size[0] + 1)),
                int(self.rng.integers(0, width - self.crop_size[1] + 1)))

    def spatial_transform(self, img1: Array, img2: Array, flow: Array, valid: Array
                          ) -> tuple[Array, Array, Array, Array]:
        height, width = img1.shape[:2]
        scale_x, scale_y, forced = self._draw_scale(height, width)
        if self.rng.random() < self.spatial_aug_prob or forced:
            size = (int(round(height * scale_y)), int(round(width * scale_x)))
            img1, img2, flow, valid = self._resize(img1, img2, flow, valid, size)
        img1, img2, flow, valid = self._flip(img1, img2, flow, valid)
        y0, x0 = self._crop_origin(*img1.shape[:2])
        window = (slice(y0, y0 + self.crop_size[0]), slice(x0, x0 + self.crop_size[1]))
        return img1[window], img2[window], flow[window], valid[window]

    def _resize(self, img1: Array, img2: Array, flow: Array, valid: Array, size: tuple[int, int]
                ) -> tuple[Array, Array, Array, Array]:
        return resize_dense(img1, img2, flow, valid, size)

    def __call__(self, img1: Array, img2: Array, flow: Array, valid: Array) -> tuple[Array, Array, Array, Array]:
        """uint8 [H,W,3] x2, float32 [H,W,2], bool [H,W] -> same types at `crop_size`, contiguous."""
        if img1.shape != img2.shape or flow.shape[:2] != img1.shape[:2] or valid.shape != img1.shape[:2]:
            raise ValueError(f"inconsistent shapes {img1.shape}, {img2.shape}, {flow.shape}, {valid.shape}")
        img1, img2 = np.asarray(img1, np.uint8), np.asarray(img2, np.uint8)
        if self.photometric:
            img1, img2 = self.color_transform(img1, img2)
        img1, img2 = self.eraser_transform(img1, img2)
        img1, img2, flow, valid = self.spatial_transform(img1, img2, flow.astype(np.float32), valid.astype(bool))
        return (np.ascontiguousarray(img1), np.ascontiguousarray(img2),
                np.ascontiguousarray(flow, dtype=np.float32), np.ascontiguousarray(valid, dtype=bool))


class SparseFlowAugmentor(FlowAugmentor):
    """Sparse (KITTI) augmentation, RAFT defaults: milder jitter, always symmetric, no stretch, no flip
    unless asked (KITTI is trained with do_flip=False), flow rescaled by scattering (`resize_sparse_flow`),
    and crops biased towards the image border where KITTI's valid points lie."""

    jitter = (0.3, 0.3, 0.3, 0.3 / 3.14)
    crop_margin = 1
    border_margin = (20, 50)  # (y, x): crop origins are drawn this far past the edges, then clipped

    def __init__(self, crop_size: tuple[int, int], min_scale: float = -0.2, max_scale: float = 0.5,
                 do_flip: bool = False, rng: Optional[np.random.Generator] = None, seed: Optional[int] = None, *,
                 photometric: bool = True, asymmetric_color_prob: float = 0.0, eraser_prob: float = 0.5,
                 eraser_bounds: tuple[int, int] = (50, 100), spatial_aug_prob: float = 0.8,
                 stretch_prob: float = 0.0, max_stretch: float = 0.2, h_flip_prob: float = 0.5,
                 v_flip_prob: float = 0.0) -> None:
        super().__init__(crop_size, min_scale, max_scale, do_flip, rng, seed, photometric=photometric,
                         asymmetric_color_prob=asymmetric_color_prob, eraser_prob=eraser_prob,
                         eraser_bounds=eraser_bounds, spatial_aug_prob=spatial_aug_prob, stretch_prob=stretch_prob,
                         max_stretch=max_stretch, h_flip_prob=h_flip_prob, v_flip_prob=v_flip_prob)

    def _resize(self, img1: Array, img2: Array, flow: Array, valid: Array, size: tuple[int, int]
                ) -> tuple[Array, Array, Array, Array]:
        resize = lambda a: cv2.resize(a, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)  # noqa: E731
        flow, valid = resize_sparse_flow(flow, valid, size)
        return resize(img1), resize(img2), flow, valid

    def _crop_origin(self, height: int, width: int) -> tuple[int, int]:
        (ch, cw), (my, mx) = self.crop_size, self.border_margin
        y0 = self.rng.integers(0, height - ch + my + 1)
        x0 = self.rng.integers(-mx, width - cw + mx + 1)
        return int(np.clip(y0, 0, height - ch)), int(np.clip(x0, 0, width - cw))
