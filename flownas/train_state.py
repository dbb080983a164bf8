"""Training checkpoints: everything a run needs to continue exactly, written atomically, the last K kept.

A checkpoint (`OUT/checkpoints/step-0000100.pt`) holds the model, the FAD projections, the optimizer, the
scheduler and the gradient scaler states, the step, PyTorch's RNG states and the resolved config. Every other
random choice of a run (batches, augmentation, sampled subnets, input noise) is drawn from `(seed, step)`, so the
step is the whole data position and a resumed run repeats, bit for bit on CPU, what an uninterrupted run does.
Files are read with `torch.load(weights_only=True)`: tensors and plain containers only.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import ToolkitError
from .weights import atomic_torch_save

STATE_FORMAT = "flownas-train-state"
STATE_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d{7,})\.pt$")
# Keys that only change how a run is watched or saved; a resumed run may change them.
RESUMABLE_CHANGES = frozenset({"log_every", "val_every", "val_samples", "checkpoint_every", "keep_last",
                               "num_workers", "bn_calib_batches"})


class ResumeError(ToolkitError, ValueError):
    """No checkpoint to resume from, or one made with another config (one line naming the key)."""


def checkpoint_path(out: Path, step: int) -> Path:
    return Path(out) / CHECKPOINT_DIR / f"step-{step:07d}.pt"


def list_checkpoints(out: Path) -> list[tuple[int, Path]]:
    """(step, path) of the run's checkpoints, oldest first."""
    folder = Path(out) / CHECKPOINT_DIR
    found = []
    for path in folder.glob("step-*.pt") if folder.is_dir() else []:
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def rng_states(device: torch.device) -> dict[str, torch.Tensor]:
    states = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_rng(states: Mapping[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


def save_state(out: Path, step: int, state: Mapping[str, Any], keep_last: int) -> Path:
    """Write the checkpoint of `step` atomically, then delete all but the newest `keep_last`."""
    path = checkpoint_path(out, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"format": STATE_FORMAT, "format_version": STATE_VERSION, "step": step, **state}, path)
    for _, old in list_checkpoints(out)[:-max(1, keep_last)]:
        old.unlink(missing_ok=True)
    return path


def load_latest(out: Path) -> tuple[int, dict[str, Any], Path]:
    """(step, state, path) of the newest readable checkpoint of the run in `out`."""
    checkpoints = list_checkpoints(out)
    if not checkpoints:
        raise ResumeError(f"{Path(out) / CHECKPOINT_DIR}: no checkpoint to resume from (run without --resume)")
    step, path = checkpoints[-1]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt file: say which and why, in one line
        raise ResumeError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
                          ) from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ResumeError(f"{path}: not a {STATE_FORMAT} checkpoint")
    return step, state, path


def check_same_config(saved: Mapping[str, Any], current: Mapping[str, Any], path: Path) -> None:
    """A resumed run must train what the interrupted one trained; watching/saving keys may change."""
    for key in sorted(set(saved) | set(current)):
        if key in RESUMABLE_CHANGES:
            continue
        if saved.get(key) != current.get(key):
            raise ResumeError(f"{path}: the run was started with {key}={saved.get(key)!r}, this one has "
                              f"{key}={current.get(key)!r}; resume with the same value or use a new --out")
