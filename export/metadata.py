"""Export records stored in ONNX `metadata_props` (JSON-encoded values); onnx only, no torch."""
from __future__ import annotations

import json
import os
from typing import Any

import onnx


def decode_metadata(graph: onnx.ModelProto) -> dict[str, Any]:
    """metadata_props as a dict, JSON values decoded (how `export_onnx` stores its record)."""
    out: dict[str, Any] = {}
    for prop in graph.metadata_props:
        try:
            out[prop.key] = json.loads(prop.value)
        except json.JSONDecodeError:
            out[prop.key] = prop.value
    return out


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The export record of an ONNX file."""
    return decode_metadata(onnx.load(str(path), load_external_data=False))
