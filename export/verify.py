"""Numerical verification of exported artifacts: flows of two implementations on the same pairs.

A "flow function" maps two uint8 RGB images `[H,W,3]` to a flow `[H,W,2]`; one exists per artifact kind
(PyTorch checkpoint, ONNX file on ONNX Runtime, TensorRT engine), so any two can be compared.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
from flownas.errors import ToolkitError

FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
DEFAULT_TOLERANCE_EPE = 1e-3  # px, fp32
REAL_PAIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "middlebury" / "RubberWhale"


class VerificationError(ToolkitError, ValueError):
    """Two implementations disagree beyond the tolerance, or an artifact cannot be run."""


@dataclass
class PairResult:
    name: str
    max_abs_diff: float
    epe: float


@dataclass
class VerifyReport:
    tolerance_epe: float
    pairs: list[PairResult] = field(default_factory=list)

    @property
    def max_abs_diff(self) -> float:
        return max(p.max_abs_diff for p in self.pairs)

    @property
    def max_epe(self) -> float:
        return max(p.epe for p in self.pairs)

    @property
    def ok(self) -> bool:
        return bool(self.pairs) and self.max_epe <= self.tolerance_epe

    def to_dict(self) -> dict[str, Any]:
        return {"tolerance_epe": self.tolerance_epe, "ok": self.ok, "max_abs_diff": self.max_abs_diff,
                "max_epe": self.max_epe, "pairs": [asdict(p) for p in self.pairs]}

    def summary(self) -> str:
        lines = [f"  {p.name:<24} max|diff| {p.max_abs_diff:.2e} px   EPE {p.epe:.2e} px" for p in self.pairs]
        verdict = "OK" if self.ok else "FAILED"
        return "\n".join(lines + [f"  {verdict}: max EPE {self.max_epe:.2e} px (tolerance {self.tolerance_epe:g} px)"])


def compare_flows(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(max |a-b| over all components, mean end-point distance) for flows `[H,W,2]`."""
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return float(np.abs(diff).max()), float(np.sqrt((diff**2).sum(-1)).mean())


def verification_pairs(height: int, width: int, real_dir: str | os.PathLike | None = None,
                       n_synthetic: int = 2) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The real Middlebury pair resized to HxW (when present) plus seeded synthetic pairs."""
    from flownas.data.flow_io import read_image
    from flownas.data.synthetic import make_pair

    pairs = []
    real = Path(real_dir) if real_dir else REAL_PAIR
    if (real / "frame10.png").is_file() and (real / "frame11.png").is_file():
        images = [cv2.resize(read_image(real / f), (width, height), interpolation=cv2.INTER_AREA)
                  for f in ("frame10.png", "frame11.png")]
        pairs.append((f"{real.name} (resized)", *images))
    for seed in range(n_synthetic):
        pair = make_pair(height, width, seed=1000 + seed)
        pairs.append((f"synthetic seed {1000 + seed}", pair["image1"], pair["image2"]))
    return pairs


def verify(reference: FlowFn, candidate: FlowFn, pairs: list[tuple[str, np.ndarray, np.ndarray]],
           tolerance_epe: float = DEFAULT_TOLERANCE_EPE) -> VerifyReport:
    report = VerifyReport(tolerance_epe)
    for name, image1, image2 in pairs:
        max_abs, epe = compare_flows(reference(image1, image2), candidate(image1, image2))
        report.pairs.append(PairResult(name, max_abs, epe))
    return report


# --------------------------------------------------------------------------------------------- flow functions
def torch_flow_fn(model: Any, iters: int, device: str = "cpu") -> FlowFn:
    from flownas.inference import estimate_flow

    return lambda a, b: estimate_flow(model, a, b, iters=iters, device=device)


def onnx_flow_fn(path: str | os.PathLike, providers: tuple[str, ...] = ("CPUExecutionProvider",),
                 threads: int | None = None) -> FlowFn:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), options, providers=list(providers))
    except Exception as exc:
        raise VerificationError(f"{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0]})") from None
    return lambda a, b: session.run(None, _feeds(a, b))[0][0].transpose(1, 2, 0)


def engine_flow_fn(path: str | os.PathLike) -> FlowFn:
    from .trt_runtime import TrtRunner

    runner = TrtRunner(path)
    runner.activate()
    return lambda a, b: runner.infer(_feeds(a, b))["flow"][0].transpose(1, 2, 0)


def _feeds(image1: np.ndarray, image2: np.ndarray) -> dict[str, np.ndarray]:
    to_nchw = lambda im: np.ascontiguousarray(im.transpose(2, 0, 1)[None], dtype=np.float32)  # noqa: E731
    return {"image1": to_nchw(image1), "image2": to_nchw(image2)}


def artifact_kind(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".engine", ".plan", ".trt"):
        return "engine"
    if suffix in (".pt", ".pth", ".ckpt", ".tar"):
        return "checkpoint"
    raise VerificationError(f"{path}: unknown artifact type {suffix!r} (expected .pt/.pth, .onnx or .engine/.plan)")
