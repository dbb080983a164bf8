"""What a training run shows while it runs: a tqdm bar, TensorBoard scalars and flow pictures, `metrics.csv`.

Only rank 0 writes. `metrics.csv` has one row per validated subnet (step, subnet kind, arch id, EPE, 1/3/5 px);
a resumed run first drops rows written after the checkpoint it resumes from, so the file never holds a step twice.
TensorBoard event files are append-only; a resumed run starts a new event file in the same folder (TensorBoard
shows the newest value of a step).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .fileio import atomic_write_text

METRIC_COLUMNS = ("step", "subnet", "arch_id", "epe", "1px", "3px", "5px", "pairs")


class TrainLogger:
    """Progress bar + TensorBoard + metrics.csv for rank 0; a silent stand-in elsewhere (`enabled=False`)."""

    def __init__(self, out: Path, *, start: int, total: int, enabled: bool = True, progress: bool = True,
                 tensorboard: bool = True) -> None:
        self.out, self.enabled = Path(out), enabled
        self.metrics_path = self.out / "metrics.csv"
        self.bar = self.writer = None
        if not enabled:
            return
        self._trim_metrics(start)
        if progress:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=start or None)

    def _trim_metrics(self, start: int) -> None:
        if not self.metrics_path.is_file():
            atomic_write_text(self.metrics_path, ",".join(METRIC_COLUMNS) + "\n")
            return
        rows = list(csv.DictReader(io.StringIO(self.metrics_path.read_text())))
        keep = [r for r in rows if r.get("step", "").isdigit() and int(r["step"]) <= start]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, METRIC_COLUMNS, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(keep)
        atomic_write_text(self.metrics_path, buffer.getvalue())

    def step(self, step: int, scalars: Mapping[str, float], pairs_per_s: float) -> None:
        """After optimizer step `step` (1-based): advance the bar, log scalars."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            shown = {k: f"{v:.3f}" for k, v in scalars.items() if k in ("loss/largest", "loss/model", "fad")}
            self.bar.set_postfix(**shown, pairs_s=f"{pairs_per_s:.2f}")
        if self.writer is not None:
            for name, value in scalars.items():
                self.writer.add_scalar(name, value, step)
            self.writer.add_scalar("throughput/pairs_per_s", pairs_per_s, step)

    def validation(self, step: int, rows: list[dict[str, Any]], pictures: Mapping[str, np.ndarray]) -> None:
        """Append validation rows to metrics.csv, log their EPE and the flow pictures (HxWx3 uint8)."""
        if not self.enabled:
            return
        with open(self.metrics_path, "a", newline="") as handle:
            csv.DictWriter(handle, METRIC_COLUMNS, lineterminator="\n", extrasaction="ignore").writerows(
                [{"step": step, **row} for row in rows])
        if self.writer is not None:
            for row in rows:
                self.writer.add_scalar(f"val_epe/{row['subnet']}", row["epe"], step)
            for name, picture in pictures.items():
                self.writer.add_image(f"flow/{name}", picture, step, dataformats="HWC")
            self.writer.flush()
        if self.bar is not None:
            self.bar.write("step {}: ".format(step) + ", ".join(f"{r['subnet']} EPE {r['epe']:.3f}" for r in rows))

    def write(self, message: str) -> None:
        if self.enabled:
            (self.bar.write if self.bar is not None else print)(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
