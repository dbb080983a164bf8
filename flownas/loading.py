"""Loading the model a command runs: a checkpoint, or a subnet of a supernet checkpoint, never a supernet by accident.

`load_model` returns whatever a file holds (a FlowNAS supernet included: training and search need it). Commands
that *run* a network (infer, evaluate, export, bench) go through `load_flow_model`, which refuses a supernet
without `arch` instead of silently running its largest subnet, and keeps wrong-architecture errors to one line.
"""
from __future__ import annotations

import os
from typing import Any

from .errors import ToolkitError, UserInputError


def load_flow_model(weights: str | os.PathLike, arch: Any = None, device: str = "cpu") -> Any:
    """A static flow model (RAFT or a FlowNAS subnet) in eval mode from `weights` (+ `arch` for a supernet)."""
    from .models import FlowNASSupernet
    from .weights import load_model

    check_device(device)
    try:
        model = load_model(weights, arch=arch, device=device)
    except ToolkitError as exc:
        raise type(exc)(_short(str(exc))) from None
    if isinstance(model, FlowNASSupernet):
        raise UserInputError(f"{weights} holds a FlowNAS supernet: choose the subnet to run with --arch "
                             "(a name such as raft-k, an id, or a JSON file)")
    return model


def check_device(device: str) -> None:
    """A torch device string this machine has (`cpu`, `cuda`, `cuda:1`); one line otherwise."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserInputError(f"--device {device!r} is not a torch device (expected cpu, cuda or cuda:N)") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise UserInputError(f"--device {device}: this PyTorch ({torch.__version__}) sees no CUDA GPU; "
                                 "use --device cpu or install a CUDA build of torch")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise UserInputError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif parsed.type != "cpu":
        raise UserInputError(f"--device {device}: only cpu and cuda devices are supported")


def _short(message: str, limit: int = 300) -> str:
    """Error messages quoting whole configs stay readable: long ones are cut with a marker."""
    return message if len(message) <= limit else message[: limit - 20].rstrip() + " ... (shortened)"
