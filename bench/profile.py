"""ONNX Runtime's per-operator time: where an exported graph spends its milliseconds."""
from __future__ import annotations

import collections
import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np


def ort_op_breakdown(path: str | os.PathLike, feeds: Mapping[str, np.ndarray], threads: int | None = None,
                     runs: int = 2, profile_dir: str | os.PathLike | None = None) -> dict[str, float]:
    """Milliseconds per inference by operator type, from ONNX Runtime's profiler (CPU provider).

    The first run (weight pre-packing, allocations) is excluded: only kernels inside the later `runs` count.
    The profiler's JSON is written into `profile_dir` (default: beside the model) and deleted after reading.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.enable_profiling = True
    folder = Path(profile_dir) if profile_dir else Path(path).parent
    options.profile_file_prefix = str(folder / f"{Path(path).stem}-profile")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(runs + 1):
        session.run(None, dict(feeds))
    profile = Path(session.end_profiling())
    try:
        events = json.loads(profile.read_text())
    finally:
        profile.unlink(missing_ok=True)
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[1:]
    totals: collections.Counter = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            if any(start <= event["ts"] <= end for start, end in windows):
                totals[event["args"]["op_name"]] += event["dur"] / 1e3
    return {op: ms / len(windows) for op, ms in totals.most_common()}


def breakdown_table(breakdowns: Mapping[str, Mapping[str, float]], limit: int = 14) -> list[str]:
    """Markdown rows: operator types as rows, one column per graph variant, plus the total."""
    names = list(breakdowns)
    ops = sorted({op for b in breakdowns.values() for op in b},
                 key=lambda op: -max(b.get(op, 0.0) for b in breakdowns.values()))
    lines = ["| operator | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for op in ops[:limit]:
        lines.append(f"| {op} | " + " | ".join(f"{breakdowns[n].get(op, 0.0):.1f}" for n in names) + " |")
    lines.append("| **total** | " + " | ".join(f"{sum(breakdowns[n].values()):.1f}" for n in names) + " |")
    return lines
