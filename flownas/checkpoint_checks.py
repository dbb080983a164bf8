"""Checks on what a checkpoint file holds, made before a model is built from it or its tensors are used.

A checkpoint is data from outside: its model config decides how much memory building the model allocates,
its state dict may hold anything torch's safe unpickler accepts. `flownas.weights` runs these checks and turns
a `CheckpointProblem` into a one-line `WeightsError` naming the file. Documented limits:

- a stored search space: at most `MAX_STAGES` stages and `MAX_CHOICES` choices per stage, every choice an
  integer from 1 to `MAX_SPACE_VALUES[gene]` (4096 channels, kernel 15, depth 16, expand ratio 8);
- every integer anywhere in a model config at most `MAX_CONFIG_INT` (no width, depth, radius or count in a
  real config comes near it; it also keeps 5000-digit integers out of error messages, which cannot print them);
- a model config of at most `MAX_CONFIG_VALUES` values (lists and dicts included);
- state-dict keys are strings, values dense (strided) real tensors with data: not sparse, meta or quantized.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

SPACE_GENES = ("width", "kernel_size", "depth", "expand_ratio")
MAX_SPACE_VALUES = {"width": 4096, "kernel_size": 15, "depth": 16, "expand_ratio": 8}
MAX_STAGES = 16
MAX_CHOICES = 64
MAX_CONFIG_INT = 65536
MAX_CONFIG_VALUES = 10_000
MAX_MODEL_PARAMETERS = 100_000_000  # 400 MB of float32; RAFT has 5.3 M, the FlowNAS supernet 8.1 M
MODEL_FAMILIES = ("raft", "flownas-supernet", "flownas")


class CheckpointProblem(ValueError):
    """Why a checkpoint's content is refused (one line, without the file name)."""


def preview(value: Any) -> str:
    """A short description of any value that is safe to print (huge integers cannot be turned into text)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return str(value) if abs(value) < 10**12 else f"an integer of {value.bit_length()} bits"
    if isinstance(value, (float, str)):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return f"a {type(value).__name__}"


def check_format_version(version: Any, newest: int) -> None:
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= newest:
        raise CheckpointProblem(f"'format_version' is {preview(version)} (expected an integer from 1 to {newest}; "
                                "a newer version needs a newer toolkit)")


def check_model_config(config: Any) -> None:
    """The 'model' entry of a toolkit checkpoint: its type, family, integer sizes and stored search space."""
    if not isinstance(config, Mapping):
        raise CheckpointProblem(f"'model' is {preview(config)} (expected a dict such as "
                                "{'family': 'raft', 'variant': 'small'})")
    family = config.get("family")
    if not isinstance(family, str) or family not in MODEL_FAMILIES:
        raise CheckpointProblem(f"model family {preview(family)} (expected one of {', '.join(MODEL_FAMILIES)})")
    _check_integers(config)
    if family != "raft" and "space" in config:
        check_space_sizes(config["space"])
    if family == "flownas" and not isinstance(config.get("arch"), Mapping):
        raise CheckpointProblem(f"model 'arch' is {preview(config.get('arch'))} (expected the published dict "
                                "{'width': [...], 'kernel_size': [...], 'depth': [...], 'expand_ratio': [...]})")


def _check_integers(config: Mapping) -> None:
    """Every integer in the (nested) config within MAX_CONFIG_INT; at most MAX_CONFIG_VALUES values in all."""
    stack, seen = [config], 0
    while stack:
        value = stack.pop()
        seen += 1
        if seen > MAX_CONFIG_VALUES:
            raise CheckpointProblem(f"model config holds more than {MAX_CONFIG_VALUES} values (expected a few dozen)")
        if isinstance(value, Mapping):
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_CONFIG_INT:
            raise CheckpointProblem(f"model config holds {preview(value)} (expected sizes of at most {MAX_CONFIG_INT})")


def check_space_sizes(space: Any) -> None:
    """A stored search space's stage count and choices, within the documented maxima (before any allocation)."""
    if not isinstance(space, Mapping):
        raise CheckpointProblem(f"stored search space is {preview(space)} (expected a dict of per-stage choices)")
    for gene in SPACE_GENES:
        stages = space.get(gene)
        if not isinstance(stages, (list, tuple)) or not 1 <= len(stages) <= MAX_STAGES:
            count = len(stages) if isinstance(stages, (list, tuple)) else preview(stages)
            raise CheckpointProblem(f"stored search space '{gene}' has {count} stages "
                                    f"(expected a list of 1 to {MAX_STAGES} stages)")
        for stage, choices in enumerate(stages):
            if not isinstance(choices, (list, tuple)) or not 1 <= len(choices) <= MAX_CHOICES:
                raise CheckpointProblem(f"stored search space '{gene}' stage {stage} is {preview(choices)} "
                                        f"(expected a list of 1 to {MAX_CHOICES} choices)")
            for value in choices:
                if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SPACE_VALUES[gene]:
                    raise CheckpointProblem(f"stored search space '{gene}' stage {stage} holds {preview(value)} "
                                            f"(expected integers from 1 to {MAX_SPACE_VALUES[gene]})")
    for key in ("stem_channels", "head_channels"):
        value = space.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SPACE_VALUES["width"]:
            raise CheckpointProblem(f"stored search space '{key}' is {preview(value)} "
                                    f"(expected an integer from 1 to {MAX_SPACE_VALUES['width']})")


def check_state_dict(state: Any, where: str = "'state_dict'") -> None:
    """A non-empty dict of string keys to dense real tensors."""
    if not isinstance(state, Mapping):
        raise CheckpointProblem(f"{where} is {preview(state)} (expected a dict of parameter names to tensors)")
    if not state:
        raise CheckpointProblem(f"{where} is empty (expected the model's tensors)")
    for key, value in state.items():
        if not isinstance(key, str):
            raise CheckpointProblem(f"{where} has the key {preview(key)} (expected parameter names as strings)")
        if not isinstance(value, Tensor):
            raise CheckpointProblem(f"{where} entry {key[:80]!r} is {preview(value)} (expected a tensor)")
        check_tensor(key, value)


def check_tensor(key: str, value: Tensor) -> None:
    """A tensor the model can copy from: dense, with data, not quantized, real-valued."""
    if value.layout != torch.strided:
        problem = f"a {str(value.layout).replace('torch.', '')} tensor"
    elif value.is_meta:
        problem = "a meta tensor without data"
    elif value.is_quantized:
        problem = f"a quantized {value.dtype} tensor"
    elif value.is_complex():
        problem = f"a complex {value.dtype} tensor"
    else:
        return
    raise CheckpointProblem(f"tensor {key[:80]!r} is {problem} (expected a dense real-valued tensor)")


def check_parameter_count(count: int) -> None:
    if count > MAX_MODEL_PARAMETERS:
        raise CheckpointProblem(f"model config describes {count:,} parameters, more than the "
                                f"{MAX_MODEL_PARAMETERS:,} limit (expected a RAFT or FlowNAS-sized network)")
