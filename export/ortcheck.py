"""Detect a broken ONNX Runtime install: the CPU and GPU distributions installed side by side.

`onnxruntime` and `onnxruntime-gpu` (and the other builds: -directml, -openvino, ...) all install the same
`onnxruntime` package directory; whichever was installed last overwrites the other's files, so the CUDA and
TensorRT providers may silently be missing. Only distribution metadata is read: nothing is imported.
"""
from __future__ import annotations

import importlib.metadata
from typing import Iterable

# Distributions that provide the `onnxruntime` module (PyPI names as `importlib.metadata` reports them).
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
                     "onnxruntime-qnn", "onnxruntime-training")


def installed_ort_distributions(names: Iterable[str] = ORT_DISTRIBUTIONS) -> dict[str, str]:
    """{distribution: version} for each installed distribution that provides the `onnxruntime` module."""
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def ort_install_problem(installed: dict[str, str] | None = None) -> str | None:
    """One line explaining a conflicting ONNX Runtime install, or None when at most one build is installed.

    `installed` ({distribution: version}) defaults to what `installed_ort_distributions()` finds.
    """
    found = installed_ort_distributions() if installed is None else installed
    if len(found) < 2:
        return None
    listed = ", ".join(f"{name} {version}" for name, version in sorted(found.items()))
    keep = "onnxruntime-gpu" if "onnxruntime-gpu" in found else sorted(found)[0]
    # Uninstalling only the unwanted build would delete files the two share, so both go and one comes back.
    return (f"several ONNX Runtime builds are installed ({listed}); they share the `onnxruntime` module, so "
            f"providers may be missing: pip uninstall -y {' '.join(sorted(found))} && pip install {keep}")
