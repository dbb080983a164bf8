"""FlowNAS toolkit: RAFT and the FlowNAS supernet, data, training, evaluation and search."""
__version__ = "0.1.0"

from .arch import ArchConfig, SearchSpace, resolve_arch  # noqa: E402
from .models import RAFT, FlowNASNet, FlowNASSupernet  # noqa: E402
from .weights import load_model, save_checkpoint  # noqa: E402

__all__ = ["ArchConfig", "FlowNASNet", "FlowNASSupernet", "RAFT", "SearchSpace", "load_model", "resolve_arch",
           "save_checkpoint"]
