"""Flow formats, images, colour coding, datasets (real layouts and synthetic) and augmentation."""
from .datasets import DATASETS, DatasetError, build_dataset
from .flow_io import FlowFormatError, read_flow, read_image, write_flow, write_image
from .viz import flow_to_color, save_flow_image

__all__ = [
    "DATASETS", "DatasetError", "FlowFormatError", "build_dataset", "flow_to_color", "read_flow",
    "read_image", "save_flow_image", "write_flow", "write_image",
]
