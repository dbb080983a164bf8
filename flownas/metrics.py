"""Optical-flow accuracy metrics (FACTS §4) and their dataset-level aggregation.

Per pixel, the end-point error is EPE = ||pred - gt||_2. Over the valid pixels:
- `epe`: mean EPE;
- `px1`, `px3`, `px5`: fraction (0..1) of pixels with EPE strictly below 1, 3, 5 px;
- `fl_all`: KITTI's outlier percentage (0..100), pixels with EPE > 3 px *and* EPE > 5% of ||gt||.

Layouts. Flow arrays may be numpy arrays or torch tensors (any device or float dtype), in one of
`hwc` [H,W,2], `chw` [2,H,W], `bhwc` [B,H,W,2] or `bchw` [B,2,H,W]. Without an explicit `layout`, it is
detected from the shape: channels-first when the leading (3-D) or second (4-D) dimension has size 2 and the
last does not, channels-last when only the last has size 2; a shape where both have size 2 (e.g. a 2x2 image
[2,2,2]) is ambiguous and raises, asking for `layout`. pred and gt are detected separately, so a `chw`
prediction can be scored against an `hwc` ground truth. The valid mask is [H,W], [B,H,W] or [B,1,H,W]
(bool, or numeric with valid >= 0.5 as in RAFT's KITTI loader); None means every pixel is valid.
Computation is float64 on the CPU so that sums over whole datasets do not lose precision.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Sequence

import numpy as np

PX_THRESHOLDS = (1, 3, 5)
FL_ABS_PX = 3.0  # KITTI outlier: EPE above 3 px ...
FL_REL = 0.05  # ... and above 5% of the ground-truth magnitude
LAYOUTS = ("hwc", "chw", "bhwc", "bchw")
AGGREGATIONS = ("pooled", "per_image")
METRIC_KEYS = ("epe", "px1", "px3", "px5", "fl_all")


def _to_numpy(x: Any) -> np.ndarray:
    # Duck-typed torch support keeps this module importable without torch; bf16/fp16 tensors are
    # widened on the torch side because numpy has no bfloat16.
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        return (x.double() if x.is_floating_point() else x).numpy()
    return np.asarray(x)


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in x.shape) if hasattr(x, "shape") else tuple(np.shape(x))


def detect_layout(shape: Sequence[int]) -> str:
    """The layout of a flow array of `shape` ("hwc", "chw", "bhwc" or "bchw"); ValueError if ambiguous."""
    shape = tuple(shape)
    if len(shape) not in (3, 4):
        raise ValueError(f"flow must be [H,W,2], [2,H,W], [B,H,W,2] or [B,2,H,W]; got shape {shape}")
    first = shape[0] if len(shape) == 3 else shape[1]
    first_is_2, last_is_2 = first == 2, shape[-1] == 2
    if first_is_2 and last_is_2:
        raise ValueError(f"flow shape {shape} is ambiguous (channels could be first or last); pass layout=")
    if not (first_is_2 or last_is_2):
        raise ValueError(f"flow shape {shape} has no 2-channel (u, v) dimension")
    return ("b" if len(shape) == 4 else "") + ("chw" if first_is_2 else "hwc")


def _flow_batch(x: Any, layout: str | None) -> np.ndarray:
    """Any accepted layout -> float64 [N,H,W,2]."""
    shape = _shape(x)
    if layout is None:
        layout = detect_layout(shape)
    elif layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    channel_axis = {"hwc": 2, "chw": 0, "bhwc": 3, "bchw": 1}[layout]
    if len(shape) != len(layout) or shape[channel_axis] != 2:
        raise ValueError(f"flow shape {shape} does not fit layout {layout!r}")
    arr = np.asarray(_to_numpy(x), dtype=np.float64)
    if layout in ("chw", "bchw"):
        arr = np.moveaxis(arr, channel_axis, -1)
    return arr if arr.ndim == 4 else arr[None]


def _valid_batch(valid: Any, n: int, h: int, w: int) -> np.ndarray:
    """[H,W] (single image), [N,H,W] or [N,1,H,W] -> bool [N,H,W]."""
    if valid is None:
        return np.ones((n, h, w), dtype=bool)
    arr = _to_numpy(valid)
    accepted = {(n, h, w), (n, 1, h, w)} | ({(h, w)} if n == 1 else set())
    if arr.shape not in accepted:
        raise ValueError(f"valid mask shape {arr.shape} does not match flow of {n} image(s) of {h}x{w} "
                         f"(expected [H,W] for one image, [B,H,W] or [B,1,H,W])")
    mask = arr.astype(bool) if arr.dtype == bool else arr >= 0.5
    return mask.reshape(n, h, w)


@dataclass(frozen=True)
class PixelCounts:
    """Sufficient statistics of one image (or a pooled set): sums over valid pixels."""

    n_valid: int
    epe_sum: float
    below: tuple[int, ...]  # pixels with EPE < each of PX_THRESHOLDS
    fl_outliers: int

    def __add__(self, other: "PixelCounts") -> "PixelCounts":
        return PixelCounts(self.n_valid + other.n_valid, self.epe_sum + other.epe_sum,
                           tuple(a + b for a, b in zip(self.below, other.below)), self.fl_outliers + other.fl_outliers)

    def metrics(self) -> dict[str, float]:
        """epe, px1, px3, px5 and fl_all of these pixels; ValueError when there are none."""
        if self.n_valid == 0:
            raise ValueError("no valid pixels: EPE is undefined")
        out = {"epe": self.epe_sum / self.n_valid}
        out.update({f"px{t}": c / self.n_valid for t, c in zip(PX_THRESHOLDS, self.below)})
        out["fl_all"] = 100.0 * self.fl_outliers / self.n_valid
        return out


def pixel_counts(pred: Any, gt: Any, valid: Any = None, *, layout: str | None = None) -> list[PixelCounts]:
    """Per-image `PixelCounts` for flows in any accepted layout (see the module docstring)."""
    shapes = f"pred shape {_shape(pred)}, gt shape {_shape(gt)}"
    try:
        p, g = _flow_batch(pred, layout), _flow_batch(gt, layout)
    except ValueError as exc:
        raise ValueError(f"{exc} ({shapes})") from None
    if p.shape != g.shape:
        raise ValueError(f"pred and gt disagree: {shapes} (as [B,H,W,2]: {p.shape} vs {g.shape})")
    mask = _valid_batch(valid, *p.shape[:3])
    epe = np.sqrt(((p - g) ** 2).sum(axis=-1))
    mag = np.sqrt((g ** 2).sum(axis=-1))
    counts = []
    for e, m, v in zip(epe, mag, mask):
        e, m = e[v], m[v]
        # Written without dividing by |gt| (RAFT divides), so zero-motion pixels need no special case.
        outliers = int(np.count_nonzero((e > FL_ABS_PX) & (e > FL_REL * m)))
        below = tuple(int(np.count_nonzero(e < t)) for t in PX_THRESHOLDS)
        counts.append(PixelCounts(int(e.size), float(e.sum()), below, outliers))
    return counts


def flow_metrics(pred: Any, gt: Any, valid: Any = None, *, layout: str | None = None) -> dict[str, float]:
    """{"epe", "px1", "px3", "px5", "fl_all"} over the valid pixels of `pred` vs `gt`.

    pred, gt: flow [H,W,2], [2,H,W], [B,H,W,2] or [B,2,H,W] (numpy or torch); a batch is pooled over all its
    valid pixels. valid: bool [H,W] / [B,H,W] or None (all valid). ValueError on mismatched or ambiguous
    shapes (quoting both) and when no pixel is valid.
    """
    counts = pixel_counts(pred, gt, valid, layout=layout)
    return sum(counts[1:], counts[0]).metrics()


class MetricAccumulator:
    """Dataset-level metrics under one benchmark's convention.

    - "pooled" (Sintel): every metric over all valid pixels of all images together, so large or
      fully valid images weigh more.
    - "per_image" (KITTI): EPE and px rates are computed per image, then averaged over images; fl_all stays
      pooled over all valid pixels, as KITTI's official Fl-all.
    """

    def __init__(self, aggregation: str = "pooled") -> None:
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {aggregation!r}; expected one of {AGGREGATIONS}")
        self.aggregation = aggregation
        self._ids: list[Hashable] = []
        self._counts: list[PixelCounts] = []

    def __len__(self) -> int:
        return len(self._counts)

    def update(self, pred: Any, gt: Any, valid: Any = None, sample_id: Any = None, *,
               layout: str | None = None) -> None:
        """Add one image, or a batch ([B,...] flows with `sample_id` None or a sequence of B ids).

        An image without valid pixels raises ValueError naming it: its EPE is undefined, and dropping it
        silently would change the per-image average.
        """
        counts = pixel_counts(pred, gt, valid, layout=layout)
        ids = self._sample_ids(sample_id, len(counts))
        for sid, c in zip(ids, counts):
            if c.n_valid == 0:
                raise ValueError(f"sample {sid!r}: no valid pixels")
        self._ids.extend(ids)
        self._counts.extend(counts)

    def _sample_ids(self, sample_id: Any, n: int) -> list[Any]:
        if sample_id is None:
            return list(range(len(self), len(self) + n))  # running index over the whole dataset
        if isinstance(sample_id, (list, tuple)):
            if len(sample_id) != n:
                raise ValueError(f"{len(sample_id)} sample ids for a batch of {n} images")
            return list(sample_id)
        if n != 1:
            raise ValueError(f"one sample id {sample_id!r} for a batch of {n} images; pass a list of {n}")
        return [sample_id]

    def summary(self) -> dict[str, float]:
        """Dataset metrics (METRIC_KEYS) plus `n_images` and `n_valid` (valid pixels)."""
        if not self._counts:
            raise ValueError("no samples were added: metrics are undefined")
        pooled = sum(self._counts[1:], self._counts[0])
        out = pooled.metrics()
        if self.aggregation == "per_image":
            per_image = [c.metrics() for c in self._counts]
            for key in METRIC_KEYS[:-1]:  # everything but fl_all, which KITTI pools
                out[key] = float(np.mean([m[key] for m in per_image]))
        out.update(n_images=len(self._counts), n_valid=pooled.n_valid)
        return out

    def rows(self) -> list[dict[str, Any]]:
        """One dict per image: sample_id, epe, px1, px3, px5, fl_all, n_valid (for CSV reports)."""
        return [{"sample_id": sid, **c.metrics(), "n_valid": c.n_valid} for sid, c in zip(self._ids, self._counts)]
