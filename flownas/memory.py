"""How much memory one inference needs, how much there is, and a check that refuses with concrete remedies.

The estimate (bytes, float32 correlation; `dtype_bytes` for the other activations), for padded input
H x W, batch B, N = (H/8)*(W/8) pixels at 1/8 resolution, L levels of radius r, K = (2r+1)^2:

    peak = inputs + max(encoders, decoder)
    inputs   = 4 * (2*B*3*H*W) * dtype_bytes      raw, padded, normalised and concatenated image copies
    encoders = 3 * max(2*B*e_f, B*e_c) * H*W       three live tensors (block input + two in flight) of the
                                                   widest activation; e_f, e_c = bytes per input pixel of the
                                                   widest feature / context encoder tensor, probed on the model
    decoder  = resident + max(correlation build peak, correlation resident + lookup + update step)
    resident = B*N*(2*C + 2*(hidden + context) + 8) * dtype_bytes   (fmaps, GRU state, context, coords)

correlation (V_l = 4*B*N*N_l bytes, N_l = pixels of level l, pooled with odd edges dropped):
  all-pairs: sum_l V_l (built in place, kept for every iteration); lookup 3*B*N*L*K*4 (samples, concat, transpose)
  gather:    the same volume target-major, each level zero-padded by 2r+2 on both sides (kept: sum_l padded V_l);
             while building, the unpadded level, its pooled successor and an odd-edge copy coexist with it
  lean:      fmap2 pooled per level (< 0.34*B*C*N*4) plus one chunk working set (flownas.nn.corr.LEAN_CHUNK_BYTES)
update step: 2*B*N*(L*K + sum of update widths + 3*(hidden + context + motion)) * dtype_bytes, and for convex
upsampling at the last step 2432*B*N*4 (mask, its softmax, the 9-neighbour product and its sum at full size).

Checked against the real peak resident memory of CPU inference in tests/flownas/test_memory.py: the estimate
lies within 0.5x-2x of the measurement (it is meant to err on the high side).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .errors import ToolkitError
from .models import DecoderSpec, FlowModel
from .nn.corr import LEAN_CHUNK_BYTES, lean_bytes_per_pixel
from .nn.update import UPSAMPLE_FACTOR

CORR_KINDS = ("all-pairs", "gather", "lean")
GB = 1e9
# A DecoderSpec alone does not say which encoders run: assume RAFT large's (64 channels at 1/2 resolution,
# 16 float32 values per input pixel, 64 bytes).
DEFAULT_ENCODER_BYTES_PER_PIXEL = 64.0
_PROBE_SIDE = 64
# per 1/8 pixel: mask and its softmax (9 per fine pixel), the 9-neighbour product (x2 channels), its sum
_CONVEX_FLOATS_PER_PIXEL = 2 * 9 * UPSAMPLE_FACTOR**2 + 2 * 9 * UPSAMPLE_FACTOR**2 + 2 * UPSAMPLE_FACTOR**2


class MemoryBudgetError(ToolkitError, RuntimeError):
    """An inference that would need more memory than the device has (one line, with remedies)."""


@dataclass(frozen=True)
class _Profile:
    """What the estimate needs from a model: its decoder and the widest encoder tensor per input pixel."""

    spec: DecoderSpec
    feature_bytes_per_pixel: float
    context_bytes_per_pixel: float


def estimate_inference_bytes(spec_or_model: DecoderSpec | FlowModel, height: int, width: int, *, batch: int = 1,
                             corr: str = "all-pairs", dtype_bytes: int = 4) -> int:
    """Peak bytes of one forward pass (weights excluded) on images `[batch,3,height,width]`; see module docs.

    A model's encoders are probed once on a 64x64 input (in eval mode, no gradients) to find their widest tensor.
    """
    return _estimate(_profile(spec_or_model), height, width, batch=batch, corr=corr, dtype_bytes=dtype_bytes)


def available_bytes(device: str | torch.device = "cpu") -> int:
    """Free memory for a new allocation: `torch.cuda.mem_get_info` on CUDA, else MemAvailable (and any cgroup limit)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        free = _meminfo_available()
    except (OSError, ValueError):  # not Linux: physical pages not in use
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    limit = _cgroup_headroom()
    return free if limit is None else min(free, limit)


def _meminfo_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024  # reported in kB
    raise ValueError("/proc/meminfo has no MemAvailable line")


def _cgroup_headroom() -> int | None:
    """memory.max - memory.current of this process's cgroup (v2), when a limit is set: containers report
    the host's MemAvailable, not their own limit."""
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((root / "memory.current").read_text()))
    except (OSError, ValueError):
        return None


def scaled_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """The size an image is resized to so its longer side is at most `max_side` (aspect ratio kept, rounded)."""
    if max_side is None or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def padded_size(height: int, width: int) -> tuple[int, int]:
    """The size the model runs at: each side padded up to a multiple of 8."""
    return -(-height // UPSAMPLE_FACTOR) * UPSAMPLE_FACTOR, -(-width // UPSAMPLE_FACTOR) * UPSAMPLE_FACTOR


def check_memory(spec_or_model: DecoderSpec | FlowModel, height: int, width: int,
                 device: str | torch.device = "cpu", *, max_side: int | None = None, batch: int = 1,
                 corr: str = "all-pairs", available: int | None = None) -> int:
    """Estimate the inference on `height x width` images (downscaled to `max_side` first, as `estimate_flow`
    does) and return the estimate in bytes, or raise MemoryBudgetError naming the estimate, what is
    available and the largest `--max-side` and/or `--corr lean` that fit. `available` defaults to
    `available_bytes(device)`."""
    profile = _profile(spec_or_model)
    available = available_bytes(device) if available is None else available
    h, w = scaled_size(height, width, max_side)
    need = _estimate(profile, h, w, batch=batch, corr=corr)
    if need <= available:
        return need
    scaled = f" (downscaled to {w}x{h})" if (h, w) != (height, width) else ""
    raise MemoryBudgetError(
        f"flow at {width}x{height}{scaled} with {corr} correlation needs about {need / GB:.1f} GB but "
        f"{available / GB:.1f} GB is available on {torch.device(device)}; "
        + _remedies(profile, height, width, available, batch, corr)
    )


def largest_max_side(spec_or_model: DecoderSpec | FlowModel, height: int, width: int, available: int, *,
                     batch: int = 1, corr: str = "all-pairs") -> int | None:
    """The largest `max_side` whose downscaled inference fits in `available` bytes (None if none does)."""
    return _largest_max_side(_profile(spec_or_model), height, width, available, batch, corr)


def _remedies(profile: _Profile, height: int, width: int, available: int, batch: int, corr: str) -> str:
    options = []
    side = _largest_max_side(profile, height, width, available, batch, corr)
    if side is not None:
        need = _estimate(profile, *scaled_size(height, width, side), batch=batch, corr=corr)
        options.append(f"--max-side {side} (about {need / GB:.1f} GB)")
    if corr != "lean":
        need = _estimate(profile, height, width, batch=batch, corr="lean")
        lean_side = None if need <= available else _largest_max_side(profile, height, width, available, batch, "lean")
        if need <= available:
            options.append(f"--corr lean (about {need / GB:.1f} GB)")
        elif lean_side is not None:
            need = _estimate(profile, *scaled_size(height, width, lean_side), batch=batch, corr="lean")
            options.append(f"--corr lean --max-side {lean_side} (about {need / GB:.1f} GB)")
    if not options:
        return "no --max-side (nor --corr lean) fits: free memory or use a device with more"
    return "use " + " or ".join(options)


def _largest_max_side(profile: _Profile, height: int, width: int, available: int, batch: int,
                      corr: str) -> int | None:
    # Both conditions are monotone in max_side: big enough for the pyramid, small enough to fit.
    def big_enough(side: int) -> bool:
        return min(padded_size(*scaled_size(height, width, side))) >= profile.spec.min_side_px

    def fits(side: int) -> bool:
        return _estimate(profile, *scaled_size(height, width, side), batch=batch, corr=corr) <= available

    smallest = _first_true(big_enough, 1, max(height, width) - 1)
    return None if smallest is None else _last_true(fits, smallest, max(height, width) - 1)


def _first_true(predicate: Callable[[int], bool], low: int, high: int) -> int | None:
    """Smallest x in [low, high] with predicate(x), for a predicate that goes false -> true (None if never)."""
    if high < low or not predicate(high):
        return None
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if predicate(mid) else (mid + 1, high)
    return low


def _last_true(predicate: Callable[[int], bool], low: int, high: int) -> int | None:
    """Largest x in [low, high] with predicate(x), for a predicate that goes true -> false (None if never)."""
    if high < low or not predicate(low):
        return None
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if predicate(mid) else (low, mid - 1)
    return low


def _profile(spec_or_model: DecoderSpec | FlowModel) -> _Profile:
    if isinstance(spec_or_model, DecoderSpec):
        return _Profile(spec_or_model, DEFAULT_ENCODER_BYTES_PER_PIXEL, DEFAULT_ENCODER_BYTES_PER_PIXEL)
    if isinstance(spec_or_model, FlowModel):
        return _Profile(spec_or_model.spec, *_probe_encoders(spec_or_model))
    raise TypeError(f"expected a DecoderSpec or a FlowModel, got {type(spec_or_model).__name__}")


def _probe_encoders(model: FlowModel) -> tuple[float, float]:
    """Bytes per input pixel of the widest tensor any module of fnet / cnet outputs (scales with H*W)."""
    device = next(model.parameters()).device
    probe = torch.zeros(1, 3, _PROBE_SIDE, _PROBE_SIDE, device=device)
    return tuple(_widest_output(encoder, probe) / _PROBE_SIDE**2 for encoder in (model.fnet, model.cnet))


def _widest_output(encoder: torch.nn.Module, probe: torch.Tensor) -> int:
    widest = [0]

    def hook(_module, _inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            widest[0] = max(widest[0], output.numel() * output.element_size())

    handles = [m.register_forward_hook(hook) for m in encoder.modules()]
    was_training = encoder.training
    try:
        encoder.eval()  # eval: a probe must not update BatchNorm statistics
        with torch.inference_mode():
            encoder(probe)
    finally:
        encoder.train(was_training)
        for handle in handles:
            handle.remove()
    return widest[0]


def _estimate(profile: _Profile, height: int, width: int, *, batch: int, corr: str, dtype_bytes: int = 4) -> int:
    if corr not in CORR_KINDS:
        raise ValueError(f"corr must be one of {', '.join(CORR_KINDS)}, got {corr!r}")
    spec = profile.spec
    ht, wd = padded_size(height, width)
    pixels = ht * wd
    inputs = 4 * (2 * batch * 3 * pixels) * dtype_bytes
    encoders = 3 * max(2 * batch * profile.feature_bytes_per_pixel, batch * profile.context_bytes_per_pixel) * pixels
    h8, w8 = ht // UPSAMPLE_FACTOR, wd // UPSAMPLE_FACTOR
    n = h8 * w8
    resident = batch * n * (2 * spec.feature_dim + 2 * (spec.hidden_dim + spec.context_dim) + 8) * dtype_bytes
    build, kept, lookup = _correlation_bytes(spec, batch, h8, w8, corr)
    decoder = resident + max(build, kept + lookup + _update_step_bytes(spec, batch, n, dtype_bytes))
    return int(math.ceil(inputs + max(encoders, decoder)))


def _level_sizes(h8: int, w8: int, levels: int) -> list[tuple[int, int]]:
    sizes = [(h8, w8)]
    for _ in range(levels - 1):
        sizes.append((sizes[-1][0] // 2, sizes[-1][1] // 2))
    return sizes


def _correlation_bytes(spec: DecoderSpec, batch: int, h8: int, w8: int, corr: str) -> tuple[int, int, int]:
    """(peak while building, bytes kept for the iterations, transient bytes of one lookup), float32."""
    n, taps = h8 * w8, (2 * spec.corr_radius + 1) ** 2
    sizes = _level_sizes(h8, w8, spec.corr_levels)
    volumes = [4 * batch * n * h * w for h, w in sizes]
    samples = 4 * batch * n * spec.corr_levels * taps
    if corr == "all-pairs":
        return sum(volumes), sum(volumes), 3 * samples
    if corr == "lean":
        pooled = sum(4 * batch * spec.feature_dim * h * w for h, w in sizes[1:])
        chunk = min(LEAN_CHUNK_BYTES, n * lean_bytes_per_pixel(batch, spec.feature_dim, spec.corr_radius))
        return pooled, pooled, chunk + 2 * samples
    pad = 2 * spec.corr_radius + 2
    padded = [4 * batch * n * (h + 2 * pad) * (w + 2 * pad) for h, w in sizes]
    build = volumes[0] * (2 if batch > 1 else 1)  # the target-major transpose copies when batch > 1
    for level in range(spec.corr_levels):
        odd_copy = volumes[level - 1] if level and (sizes[level - 1][0] % 2 or sizes[level - 1][1] % 2) else 0
        previous = volumes[level - 1] if level else 0
        build = max(build, sum(padded[: level + 1]) + previous + odd_copy + volumes[level])
    window = (2 * spec.corr_radius + 2) ** 2 * batch * n
    return build, sum(padded), (8 + 3 * 4) * window + samples


def _update_step_bytes(spec: DecoderSpec, batch: int, n: int, dtype_bytes: int) -> int:
    update = spec.update
    widths = sum(update.corr_dims) + sum(update.flow_dims) + update.motion_dim + update.flow_head_dim + update.mask_dim
    gru = 3 * (spec.hidden_dim + spec.context_dim + update.motion_dim)
    step = 2 * batch * n * (spec.corr_channels + widths + gru) * dtype_bytes
    return step + (4 * _CONVEX_FLOATS_PER_PIXEL * batch * n if update.mask_dim else 0)
