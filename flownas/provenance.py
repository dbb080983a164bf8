"""One provenance record for every artifact the toolkit writes (checkpoint, ONNX, engine, table, report).

Every record has the same keys, so a user (or `inspect`) can read how any artifact was made:

    kind, arch_id, resolution [H, W], iters, precision, backend, device, cpu_isa, versions, toolkit_version,
    python, host, command, created (UTC, ISO 8601)

`cpu_isa` names the host CPU's instruction-set extensions that decide reduced-precision speed (AVX2, AVX-512,
VNNI, AMX, ARM dot product): the same INT8 graph is about 1.6x faster than FP32 on a CPU with VNNI and no
faster on one without (bench/results/precision.md), so a latency figure means little without it.

Keys that do not apply to an artifact are present with the value None. Library versions are read from
package metadata, so building a record imports nothing heavy (no torch on a deployment target).
"""
from __future__ import annotations

import datetime as _dt
import functools
import importlib.metadata
import os
import platform
import shlex
import sys
from typing import Any, Mapping, Sequence

from . import __version__

RECORD_KEYS = ("kind", "arch_id", "resolution", "iters", "precision", "backend", "device", "cpu_isa", "versions",
               "toolkit_version", "python", "host", "command", "created")
LIBRARIES = ("torch", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxslim", "tensorrt", "cuda-python",
             "pycuda", "opencv-python-headless", "opencv-python")


def library_version(*distributions: str) -> str | None:
    """Installed version of the first distribution found (package metadata only: nothing is imported)."""
    for dist in distributions:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def library_versions(names: Sequence[str] = LIBRARIES) -> dict[str, str]:
    """{distribution: version} for the installed ones among `names`."""
    return {name: v for name in names if (v := library_version(name))}


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (x86 and most ARM boards), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# CPU flags (x86 /proc/cpuinfo names; ARM "Features") that decide how fast FP32, BF16 and INT8 kernels run.
ISA_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
             "asimd", "asimddp", "i8mm", "bf16", "sve")
# Integer dot-product instructions: without one, ONNX Runtime's u8s8 kernels (MLAS) are no faster than FP32.
INT8_DOT_PRODUCT = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


@functools.lru_cache(maxsize=1)
def _host_cpuinfo() -> str:
    """/proc/cpuinfo, read once per process (records are written per latency-table key); "" where absent."""
    try:
        with open("/proc/cpuinfo") as handle:
            return handle.read()
    except OSError:
        return ""


def cpu_features(cpuinfo: str | None = None) -> tuple[str, ...]:
    """The ISA_FLAGS this CPU has, in ISA_FLAGS order (read from /proc/cpuinfo, or from `cpuinfo` text)."""
    if cpuinfo is None:
        cpuinfo = _host_cpuinfo()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return tuple(flag for flag in ISA_FLAGS if flag in flags)


def cpu_isa() -> str:
    """The provenance field `cpu_isa`: this CPU's ISA_FLAGS, space-separated ("avx2 fma f16c")."""
    return " ".join(cpu_features())


def has_int8_dot_product(features: Sequence[str] | None = None) -> bool:
    """Whether the CPU has integer dot-product instructions (VNNI, AMX-INT8, ARM dotprod/i8mm)."""
    return any(flag in INT8_DOT_PRODUCT for flag in (cpu_features() if features is None else features))


def cpu_int8_note(features: Sequence[str] | None = None) -> str | None:
    """A one-line warning when INT8 cannot be fast on this CPU, else None (what reports and logs print)."""
    features = cpu_features() if features is None else tuple(features)
    if has_int8_dot_product(features):
        return None
    isa = " ".join(features) or "no known SIMD flags"
    return (f"this CPU ({cpu_model()}: {isa}) has no INT8 dot-product instructions (VNNI, AMX, ARM dotprod), so "
            "ONNX Runtime's INT8 kernels run about as fast as FP32 here: INT8 speed-ups measured on it do not "
            "carry over to CPUs with VNNI, nor the other way round")


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that is running, shell-quoted (`flownas export onnx ...`), as trtexec echoes it."""
    argv = list(sys.argv if argv is None else argv)
    if argv and os.path.basename(argv[0]) in ("cli.py", "flownas", "__main__.py"):
        argv[0] = "flownas"
    return shlex.join(argv)


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def provenance(kind: str, *, arch_id: str | None = None, resolution: Sequence[int] | None = None,
               iters: int | None = None, precision: str | None = None, backend: str | None = None,
               device: str | None = None, command: str | None = None,
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The record for one artifact of `kind` ("checkpoint", "onnx", "engine", "bench-report", ...).

    `device` defaults to the CPU model; `command` to the running command line. `extra` keys are added after
    the standard ones and may not replace them (a clash is a bug in the caller).
    """
    record: dict[str, Any] = {
        "kind": kind, "arch_id": arch_id,
        "resolution": [int(v) for v in resolution] if resolution is not None else None,
        "iters": int(iters) if iters is not None else None, "precision": precision, "backend": backend,
        "device": device or cpu_model(), "cpu_isa": cpu_isa(), "versions": library_versions(),
        "toolkit_version": __version__,
        "python": platform.python_version(), "host": platform.node(),
        "command": command if command is not None else command_line(), "created": utc_now(),
    }
    clash = sorted(set(extra or {}) & set(RECORD_KEYS))
    if clash:
        raise KeyError(f"extra provenance keys {clash} would replace standard ones")
    record.update(extra or {})
    return record
