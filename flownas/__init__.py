"""FlowNAS toolkit: RAFT and the FlowNAS supernet, data, training, evaluation and search."""
__version__ = "0.1.0"
