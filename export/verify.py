"""Numerical verification of artifacts through the runners: any two of checkpoint, ONNX file, engine.

Flow models are compared on image pairs (the real pair when one is given, plus seeded synthetic pairs) by flow
end-point error; any other graph is compared output by output on seeded generated inputs. Both run through the
same runners the benchmarks use (`export.runners`), activated for the comparison and deactivated after.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import cv2
import numpy as np

from flownas.errors import ToolkitError

from .runners import ENGINE_SUFFIXES, Runner
from .spec import DEFAULT_TOLERANCE_EPE

FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
Pair = tuple[str, np.ndarray, np.ndarray]
REAL_PAIR_FILES = ("frame10.png", "frame11.png")


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
    real_pair: str | None = None  # the real pair's folder, or None when only synthetic pairs were compared

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
                "max_epe": self.max_epe, "real_pair": self.real_pair, "pairs": [asdict(p) for p in self.pairs]}

    def summary(self) -> str:
        lines = [f"  {p.name:<24} max|diff| {p.max_abs_diff:.2e}   EPE {p.epe:.2e} px" for p in self.pairs]
        verdict = "OK" if self.ok else "FAILED"
        return "\n".join(lines + [f"  {verdict}: max EPE {self.max_epe:.2e} px (tolerance {self.tolerance_epe:g} px)"])


def compare_flows(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(max |a-b| over all components, mean end-point distance) for flows `[H,W,2]`."""
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return float(np.abs(diff).max()), float(np.sqrt((diff**2).sum(-1)).mean())


def real_pair_images(real_dir: str | os.PathLike, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """frame10.png / frame11.png of `real_dir` resized to HxW; a one-line error when the folder lacks them."""
    from flownas.data.flow_io import read_image

    folder = Path(real_dir)
    missing = [f for f in REAL_PAIR_FILES if not (folder / f).is_file()]
    if missing:
        raise VerificationError(f"real pair {folder}: {' and '.join(missing)} not found (expected a folder with "
                                f"{' and '.join(REAL_PAIR_FILES)}, e.g. a Middlebury sequence)")
    first, second = (cv2.resize(read_image(folder / f), (width, height), interpolation=cv2.INTER_AREA)
                     for f in REAL_PAIR_FILES)
    return first, second


def verification_pairs(height: int, width: int, real_dir: str | os.PathLike | None = None,
                       n_synthetic: int = 2) -> list[Pair]:
    """Seeded synthetic pairs with exact motion, plus the real pair in `real_dir` (resized) when one is given.

    Library code never looks outside the repository for data: without `real_dir` only synthetic pairs are used.
    """
    from flownas.data.synthetic import make_pair

    pairs: list[Pair] = []
    if real_dir is not None:
        pairs.append((f"{Path(real_dir).name} (resized)", *real_pair_images(real_dir, height, width)))
    for seed in range(1000, 1000 + n_synthetic):
        pair = make_pair(height, width, seed=seed)
        pairs.append((f"synthetic seed {seed}", pair["image1"], pair["image2"]))
    return pairs


def verify(reference: FlowFn, candidate: FlowFn, pairs: Sequence[Pair],
           tolerance_epe: float = DEFAULT_TOLERANCE_EPE, real_pair: str | None = None) -> VerifyReport:
    """Flows of two flow functions on every pair, compared (max abs difference and EPE)."""
    report = VerifyReport(tolerance_epe, real_pair=real_pair)
    for name, image1, image2 in pairs:
        max_abs, epe = compare_flows(reference(image1, image2), candidate(image1, image2))
        report.pairs.append(PairResult(name, max_abs, epe))
    return report


def flow_feeds(image1: np.ndarray, image2: np.ndarray) -> dict[str, np.ndarray]:
    """uint8 RGB `[H,W,3]` x2 -> the flow graphs' inputs `image1`, `image2` float32 `[1,3,H,W]`."""
    to_nchw = lambda im: np.ascontiguousarray(im.transpose(2, 0, 1)[None], dtype=np.float32)  # noqa: E731
    return {"image1": to_nchw(image1), "image2": to_nchw(image2)}


def runner_flow_fn(runner: Runner) -> FlowFn:
    """A flow function over an ACTIVE runner of a flow graph (output `flow` `[1,2,H,W]` -> `[H,W,2]`)."""
    return lambda a, b: runner.infer(flow_feeds(a, b))["flow"][0].transpose(1, 2, 0)


def verify_runners(reference: Runner, candidate: Runner, pairs: Sequence[Pair],
                   tolerance_epe: float = DEFAULT_TOLERANCE_EPE, real_pair: str | None = None) -> VerifyReport:
    """Activate both runners, compare their flows on `pairs`, deactivate them (also on errors)."""
    with contextlib.ExitStack() as stack:
        for runner in (reference, candidate):
            if not runner.active:
                stack.enter_context(runner)
        return verify(runner_flow_fn(reference), runner_flow_fn(candidate), pairs, tolerance_epe, real_pair)


# --------------------------------------------------------------------------------------------- any graph
@dataclass
class OutputResult:
    name: str
    max_abs_diff: float
    max_rel_diff: float
    ok: bool


@dataclass
class GraphReport:
    """Output-by-output comparison of two runners on the same generated inputs (not a flow model)."""

    atol: float
    rtol: float
    outputs: list[OutputResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.outputs) and all(o.ok for o in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {"atol": self.atol, "rtol": self.rtol, "ok": self.ok, "outputs": [asdict(o) for o in self.outputs]}

    def summary(self) -> str:
        lines = [f"  {o.name:<24} max|diff| {o.max_abs_diff:.2e}   max rel {o.max_rel_diff:.2e}   "
                 f"{'ok' if o.ok else 'FAILED'}" for o in self.outputs]
        return "\n".join(lines + [f"  {'OK' if self.ok else 'FAILED'} (|a-b| <= {self.atol:g} + {self.rtol:g}*|a|)"])


def compare_outputs(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
                    atol: float = 1e-4, rtol: float = 1e-3) -> GraphReport:
    """np.allclose-style comparison of every output both produced; a missing or mis-shaped output fails."""
    report = GraphReport(atol, rtol)
    for name, ref in reference.items():
        if name not in candidate or np.shape(candidate[name]) != np.shape(ref):
            got = np.shape(candidate[name]) if name in candidate else "nothing"
            raise VerificationError(f"output {name!r}: reference shape {np.shape(ref)}, candidate gave {got}")
        a, b = np.asarray(ref, np.float64), np.asarray(candidate[name], np.float64)
        diff = np.abs(a - b)
        rel = diff / np.maximum(np.abs(a), 1e-12)
        ok = bool(np.all(diff <= atol + rtol * np.abs(a)))
        report.outputs.append(OutputResult(name, float(diff.max(initial=0)), float(rel.max(initial=0)), ok))
    return report


def verify_graph(reference: Runner, candidate: Runner, feeds: Mapping[str, np.ndarray], atol: float = 1e-4,
                 rtol: float = 1e-3) -> GraphReport:
    """Run both runners on `feeds` (activated here, deactivated after) and compare their outputs."""
    with contextlib.ExitStack() as stack:
        for runner in (reference, candidate):
            if not runner.active:
                stack.enter_context(runner)
        return compare_outputs(reference.infer(feeds), candidate.infer(feeds), atol, rtol)


def artifact_kind(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in ENGINE_SUFFIXES:
        return "engine"
    if suffix in (".pt", ".pth", ".ckpt", ".tar"):
        return "checkpoint"
    raise VerificationError(f"{path}: unknown artifact type {suffix!r} (expected .pt/.pth, .onnx or .engine/.plan)")
