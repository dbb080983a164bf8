"""Seeded fuzzer: every bad input to the toolkit's readers must be refused with a one-line `ToolkitError`.

    python -m tools.fuzz --n 2000 --seed 0            # figures per reader; exit status 1 if anything escaped
    python -m tools.fuzz --n 200 --targets npy,image --keep fuzz-escapes/
    python -m tools.fuzz --cli                         # the campaign of bad command lines (see cli_campaign)

Readers fuzzed (`TARGETS`): read_flow on .flo / KITTI .png / .pfm / .npy, read_image, load_model (which calls
read_checkpoint), resolve_arch(path) and SearchSpace.from_file(path). Inputs start from valid files written by
the toolkit's own writers (tools/fuzz_cases.py), then crafted bad files, then 1-3 stacked byte mutations.

An input *escapes* when the reader raises anything that is not a ToolkitError, kills its process, runs past
`timeout_s` (a hang) or needs more than `memory_mb` MiB of address space. Isolation: the cases run in one
worker process started with the `spawn` method (a fresh interpreter: forking after torch started its thread pools
is not safe), which caps its own address space with `resource.setrlimit(RLIMIT_AS, baseline + memory_mb)`, so an
absurd allocation fails inside the reader (MemoryError / RuntimeError, an escape) instead of taking the machine
down. A worker that dies or hangs is replaced and the case is counted as an escape. RLIMIT_AS rather than
RLIMIT_DATA because mmap-based allocators (glibc for large blocks, OpenCV, torch) are only bounded by the former.
A refusal whose message spans lines or does not name the file is counted as *unclean* (reported separately).
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from tools.fuzz_cases import TARGETS, build_corpus, make_case

REPO = Path(__file__).resolve().parents[1]


@dataclass
class TargetStats:
    """Outcome counts of one reader; `escapes` counts each foreign exception type, crash and hang."""

    target: str
    inputs: int = 0
    accepted: int = 0
    refused: int = 0
    escapes: Counter = field(default_factory=Counter)
    unclean: int = 0  # refused, but the message spans lines or does not name the file
    examples: list = field(default_factory=list)  # "description: outcome" of the first escapes / unclean

    @property
    def escaped(self) -> int:
        return sum(self.escapes.values())


# --------------------------------------------------------------------------------------------- worker side
def _call_reader(target: str, path: str, index: int) -> None:
    from flownas.arch import SearchSpace, resolve_arch
    from flownas.data.flow_io import read_flow, read_image
    from flownas.weights import load_model

    if target in ("flo", "kitti_png", "pfm", "npy"):
        read_flow(path)
    elif target == "image":
        read_image(path)
    elif target == "checkpoint":
        load_model(path)
    elif target == "arch":
        resolve_arch(path if index % 2 else Path(path))  # a string goes through name/id/file detection
    elif target == "space":
        SearchSpace.from_file(path)
    else:
        raise ValueError(f"unknown fuzz target {target!r}")


def _first_line(exc: BaseException) -> str:
    try:
        text = str(exc).strip()
    except Exception as inner:  # e.g. an int too long to print: the message itself is broken
        return f"<message unprintable: {type(inner).__name__}>"
    return (text.splitlines() or [""])[0][:200]


def _outcome(target: str, path: str, index: int) -> tuple[str, str, str]:
    """('accepted'|'refused'|'unclean'|'escaped', exception type, first line of its message)."""
    from flownas.errors import ToolkitError

    try:
        _call_reader(target, path, index)
    except ToolkitError as exc:
        try:
            message = str(exc)
        except Exception:
            return "unclean", type(exc).__name__, "<message unprintable>"
        clean = "\n" not in message.strip() and Path(path).name in message
        return ("refused" if clean else "unclean"), type(exc).__name__, message[:200]
    except BaseException as exc:  # noqa: BLE001 - counting foreign exceptions is the point of the fuzzer
        if isinstance(exc, KeyboardInterrupt):
            raise
        return "escaped", type(exc).__name__, _first_line(exc)
    return "accepted", "", ""


def _address_space_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _worker(conn, memory_mb: int) -> None:
    """Run cases sent over `conn` until it closes; the address space is capped after the heavy imports."""
    import resource

    import torch

    import flownas.weights  # noqa: F401 - import torch, cv2 and the models before measuring the baseline

    torch.set_num_threads(1)
    # Decoders (libpng, libjpeg, OpenCV) print to the process's stderr about every broken file: silence them.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    warnings.simplefilter("ignore")
    limit = _address_space_bytes() + memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    conn.send(("ready", "", ""))
    while True:
        try:
            target, path, index = conn.recv()
        except EOFError:
            return
        conn.send(_outcome(target, path, index))


class _Worker:
    """One isolated reader process; replaced after a crash or a hang."""

    def __init__(self, memory_mb: int) -> None:
        self.memory_mb = memory_mb
        self.process: Optional[multiprocessing.Process] = None
        self._start()

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(child, self.memory_mb), daemon=True)
        self.process.start()
        child.close()
        if not self.conn.poll(300):
            raise RuntimeError("fuzz worker did not start within 300 s")
        self.conn.recv()

    def run(self, target: str, path: Path, index: int, timeout_s: float) -> tuple[str, str, str]:
        self.conn.send((target, str(path), index))
        try:
            if self.conn.poll(timeout_s):
                return self.conn.recv()
            outcome = ("escaped", "Hang", f"no answer within {timeout_s:g} s")
        except EOFError:
            self.process.join(5)
            outcome = ("escaped", "Crash", f"worker died (exit code {self.process.exitcode})")
        self.close()
        self._start()
        return outcome

    def close(self) -> None:
        self.conn.close()
        if self.process is not None and self.process.is_alive():
            self.process.kill()
        if self.process is not None:
            self.process.join(10)


# --------------------------------------------------------------------------------------------- campaign
def run_campaign(n: int, seed: int = 0, targets: Sequence[str] = TARGETS, timeout_s: float = 10.0,
                 memory_mb: int = 2048, keep: Optional[Path] = None, workdir: Optional[Path] = None
                 ) -> dict[str, TargetStats]:
    """Feed `n` inputs to each reader in `targets`; returns the outcome counts per reader.

    `keep`: a folder that receives a copy of every input that escaped or was refused uncleanly.
    """
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        raise ValueError(f"unknown fuzz targets {unknown} (choose from {', '.join(TARGETS)})")
    own_dir = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="flownas-fuzz-")) if own_dir else Path(workdir)
    try:
        corpus = build_corpus(folder / "seeds")
        worker = _Worker(memory_mb)
        try:
            return {t: _fuzz_target(worker, corpus, t, n, seed, timeout_s, folder, keep) for t in targets}
        finally:
            worker.close()
    finally:
        if own_dir:
            shutil.rmtree(folder, ignore_errors=True)


def _fuzz_target(worker: _Worker, corpus, target: str, n: int, seed: int, timeout_s: float,
                 folder: Path, keep: Optional[Path]) -> TargetStats:
    stats = TargetStats(target)
    case_dir = folder / target
    case_dir.mkdir(parents=True, exist_ok=True)
    for index in range(n):
        data, suffix, description = make_case(target, index, seed, corpus)
        path = case_dir / f"case-{index:05d}{suffix}"
        path.write_bytes(data)
        kind, exc_type, message = worker.run(target, path, index, timeout_s)
        stats.inputs += 1
        if kind == "accepted":
            stats.accepted += 1
        elif kind == "refused":
            stats.refused += 1
        else:
            if kind == "escaped":
                stats.escapes[exc_type] += 1
            else:
                stats.unclean += 1
                stats.refused += 1
            if len(stats.examples) < 12:
                stats.examples.append(f"{path.name} [{description}]: {kind} {exc_type}: {message}")
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, keep / f"{target}-{path.name}")
        path.unlink()
    return stats


def format_report(stats: dict[str, TargetStats]) -> str:
    """A plain-text table: inputs, accepted, refused, escapes (by type) and unclean refusals per reader."""
    lines = [f"{'reader':<11} {'inputs':>6} {'accepted':>8} {'refused':>7} {'escaped':>7} {'unclean':>7}  escapes by type"]
    for s in stats.values():
        kinds = ", ".join(f"{k} {v}" for k, v in s.escapes.most_common()) or "-"
        lines.append(f"{s.target:<11} {s.inputs:>6} {s.accepted:>8} {s.refused:>7} {s.escaped:>7} {s.unclean:>7}  {kinds}")
    total = sum(s.inputs for s in stats.values())
    lines.append(f"{'total':<11} {total:>6} {'':>8} {'':>7} {sum(s.escaped for s in stats.values()):>7} "
                 f"{sum(s.unclean for s in stats.values()):>7}")
    for s in stats.values():
        lines.extend(f"  {s.target}: {example}" for example in s.examples)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- CLI campaign
@dataclass
class CliOutcome:
    """One bad command line: what came back and what was wrong with it (an empty list: refused cleanly)."""

    args: list
    returncode: Optional[int]
    stderr: str
    problems: list


def _prepare_cli_files(folder: Path) -> None:
    """Images, a frame folder, a non-ONNX text file and two small checkpoints for the bad invocations."""
    import numpy as np
    import torch

    from flownas.arch import SearchSpace
    from flownas.data.flow_io import write_image
    from flownas.models import RAFT, FlowNASSupernet
    from flownas.weights import save_checkpoint

    rng = np.random.default_rng(0)
    frames = folder / "frames"
    for i, name in enumerate(("a.png", "b.png", "frames/f0.png", "frames/f1.png", "frames/f2.png")):
        write_image(folder / name, rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))
    frames.mkdir(exist_ok=True)
    (folder / "notonnx.txt").write_text("this is not an ONNX model\n")
    (folder / "other.onnx").write_bytes(b"\x08\x07")
    torch.manual_seed(0)
    save_checkpoint(folder / "W.pt", RAFT(small=True))
    tiny = SearchSpace.from_dict({"width": [[16]] * 6, "kernel_size": [[3]] * 6, "depth": [[1]] * 6,
                                  "expand_ratio": [[1]] + [[2]] * 5})
    save_checkpoint(folder / "supernet.pt", FlowNASSupernet(tiny))


# (arguments, text the one-line error must contain or None). Each must exit non-zero with one line, no traceback.
CLI_CASES: list = [
    (["infer", "--device", "cuda", "a.png", "b.png"], None),
    (["export", "trt", "notonnx.txt", "--out", "x.engine"], None),
    (["verify", "notonnx.txt", "other.onnx"], None),
    (["bench", "--model", "raft", "--backend", "torch-cpu", "--iters", "0"], None),
    (["arch", "sample", "--n", "-1"], None),
    (["export", "onnx", "--weights", "W.pt", "--out", "o.onnx", "--real-pair", "/missing", "--resolution", "128x128",
      "--iters", "1"], None),
    (["bench", "--model", "raft", "--backend", "torch-cpu", "--precision", "int3", "--resolution", "128x128",
      "--iters", "1", "--runs", "1", "--warmup-runs", "0", "--warmup-s", "0", "--out", "bench-out"], None),
    (["infer", "frames/", "--out", "x.flo"], None),
    (["arch", "show", "nope.json"], "not found"),
    (["infer", "--weights", "supernet.pt", "a.png", "b.png"], None),
]


def _cli_problems(proc: subprocess.CompletedProcess, expect: Optional[str]) -> list:
    problems = []
    if proc.returncode == 0:
        problems.append("exit code 0")
    if "Traceback (most recent call last)" in proc.stderr:
        problems.append("traceback")
    # Warnings may precede the error; the error itself must be one line.
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.lower().startswith("warning")]
    if len(lines) > 1:
        problems.append(f"{len(lines)}-line error output")
    if expect is not None and expect not in proc.stderr:
        problems.append(f"error does not say {expect!r}")
    return problems


def cli_campaign(folder: Path, cases: Sequence = CLI_CASES, timeout_s: float = 300.0) -> list:
    """Run `python cli.py ARGS` for each bad invocation in `folder` (its working directory); CUDA is hidden."""
    folder.mkdir(parents=True, exist_ok=True)
    _prepare_cli_files(folder)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    outcomes = []
    for args, expect in cases:
        try:
            proc = subprocess.run([sys.executable, str(REPO / "cli.py"), *args], cwd=folder, env=env,
                                  capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            outcomes.append(CliOutcome(list(args), None, "", [f"no exit within {timeout_s:g} s"]))
            continue
        outcomes.append(CliOutcome(list(args), proc.returncode, proc.stderr, _cli_problems(proc, expect)))
    return outcomes


def format_cli_report(outcomes: Sequence[CliOutcome]) -> str:
    lines = [f"CLI campaign: {sum(bool(o.problems) for o in outcomes)} of {len(outcomes)} invocations not refused cleanly"]
    for o in outcomes:
        status = "ok" if not o.problems else "; ".join(o.problems)
        last = (o.stderr.strip().splitlines() or [""])[-1][:160]
        lines.append(f"  cli.py {' '.join(o.args)} -> exit {o.returncode}: {status} | {last}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- command line
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="inputs per reader (default 500)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, from {', '.join(TARGETS)}")
    parser.add_argument("--timeout-s", type=float, default=10.0, help="per input; longer counts as a hang")
    parser.add_argument("--memory-mb", type=int, default=2048, help="address space allowed beyond the worker's baseline")
    parser.add_argument("--keep", type=Path, help="copy inputs that escaped into this folder")
    parser.add_argument("--cli", action="store_true", help="run the campaign of bad command lines instead")
    args = parser.parse_args(argv)
    if args.cli:
        with tempfile.TemporaryDirectory(prefix="flownas-cli-fuzz-") as folder:
            outcomes = cli_campaign(Path(folder))
        print(format_cli_report(outcomes))
        return 1 if any(o.problems for o in outcomes) else 0
    start = time.perf_counter()
    stats = run_campaign(args.n, args.seed, [t for t in args.targets.split(",") if t], args.timeout_s,
                         args.memory_mb, args.keep)
    print(format_report(stats))
    print(f"seed {args.seed}, {time.perf_counter() - start:.0f} s")
    return 1 if any(s.escaped for s in stats.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
