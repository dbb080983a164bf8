"""FlowNAS toolkit: RAFT and the FlowNAS supernet, data, training, evaluation and search.

Top-level names are imported lazily so that light modules (e.g. `flownas.arch`) load without torch.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ArchConfig": "arch", "SearchSpace": "arch", "resolve_arch": "arch",
    "RAFT": "models", "FlowNASSupernet": "models", "FlowNASNet": "models",
    "load_model": "weights", "save_checkpoint": "weights",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'flownas' has no attribute {name!r}")
