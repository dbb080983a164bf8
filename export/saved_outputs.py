"""Saved outputs: run an artifact on one machine, carry one file to the target machine, compare there.

Polygraphy's target-device workflow (`polygraphy run --save-outputs` here, `--load-outputs` there): the
reference machine runs the artifact (checkpoint, ONNX file or engine) on the verification inputs and writes
one `.npz` holding the inputs, every output per case and a provenance record; the target machine, which may
lack PyTorch or the reference's backend, runs its own artifact on exactly those inputs and compares.

    record = save_outputs(OrtRunner("m.onnx"), verification_pairs(384, 512), "ref.npz")       # here
    report = compare_with_saved(EngineRunner("m.engine"), "ref.npz")                          # there
    report.ok, report.summary()

File layout (one `.npz`, written atomically; every entry a plain numeric or unicode array, no pickles):

    __record__   0-d unicode array: the JSON record (format, provenance, artifact sha256, runner, cases)
    c{i}.in{j}   input j of case i (a verification pair's images, or generated inputs of any graph)
    c{i}.out{k}  output k of case i

The record maps those keys to tensor names, so names with any characters (`input:0`, `onnx::Conv_3`) survive.
The file is read entry by entry with `allow_pickle=False` after checking each header: nothing in it is
executed, and a damaged file is reported as one line naming what is wrong.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np

from flownas.errors import ToolkitError, UserInputError
from flownas.fileio import atomic_path, file_record, parse_resolution
from flownas.provenance import cpu_model, provenance

from .inputs import check_feeds, generate_inputs, is_flow_graph, parse_shape_spec, resolve_shapes
from .runners import Runner, artifact_metadata
from .verify import (DEFAULT_TOLERANCE_EPE, VerificationError, artifact_kind, compare_flows, compare_outputs,
                     flow_feeds, verification_pairs)

FORMAT = "flownas-saved-outputs"
FORMAT_VERSION = 1
RECORD_KEY = "__record__"
FLOW_OUTPUT = "flow"
DEFAULT_ATOL, DEFAULT_RTOL = 1e-4, 1e-3  # any graph, output by output (what `verify A B` uses)
DEFAULT_BACKENDS = {"checkpoint": "torch-cpu", "onnx": "ort-cpu", "engine": "trt"}
_RUNS = {"checkpoint": "model", "onnx": "onnx", "engine": "engine"}  # artifact kind -> Backend.runs
_KIND_NAMES = {"checkpoint": "a checkpoint", "onnx": "an ONNX file", "engine": "a TensorRT engine"}

Feeds = Mapping[str, np.ndarray]
Case = tuple[str, dict[str, np.ndarray]]
# What save_outputs takes: verification pairs (name, image1, image2), named feeds (name, feeds), or one feeds dict.
CaseInputs = Union[Feeds, Sequence[tuple]]


class SavedOutputsError(ToolkitError, ValueError):
    """A saved-outputs file is missing, not one, damaged, or does not fit the artifact it is compared with."""


@dataclass
class SavedCase:
    """One case of a saved-outputs file: the inputs fed and the outputs the reference produced."""

    name: str
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]


@dataclass
class SavedOutputs:
    """A saved-outputs file as read back: its record (provenance of the reference run) and its cases."""

    path: Path
    record: dict[str, Any]
    cases: list[SavedCase]


# --------------------------------------------------------------------------------------------- cases
def as_cases(inputs: CaseInputs) -> list[Case]:
    """Normalise what `save_outputs` accepts into named feeds.

    A mapping is one case of feeds; a sequence holds feeds dicts, verification pairs `(name, image1, image2)`
    (uint8 `[H,W,3]` images, turned into the flow graphs' `image1`/`image2` inputs) or `(name, feeds)` tuples.
    """
    if isinstance(inputs, Mapping):
        return [("inputs", {k: np.asarray(v) for k, v in inputs.items()})]
    cases: list[Case] = []
    for i, item in enumerate(inputs):
        if isinstance(item, Mapping):
            cases.append((f"inputs {i}", {k: np.asarray(v) for k, v in item.items()}))
        elif len(item) == 3:
            name, image1, image2 = item
            cases.append((str(name), flow_feeds(image1, image2)))
        elif len(item) == 2 and isinstance(item[1], Mapping):
            cases.append((str(item[0]), {k: np.asarray(v) for k, v in item[1].items()}))
        else:
            raise TypeError("cases are feeds dicts, (name, image1, image2) pairs or (name, feeds) tuples")
    if not cases:
        raise UserInputError("no inputs to save: give at least one pair or feeds dict")
    return cases


# --------------------------------------------------------------------------------------------- save
def save_outputs(runner: Runner, inputs: CaseInputs, path: str | os.PathLike, *,
                 artifact: str | os.PathLike | None = None, arch_id: str | None = None,
                 iters: int | None = None) -> dict[str, Any]:
    """Run `runner` on every case of `inputs` and write inputs, outputs and a provenance record to `path`.

    The runner is activated here when it is not active (and deactivated after). Every case runs before the
    file is opened and the file is written atomically, so a failure leaves no file (and an older `path` intact).
    `artifact` (default: the runner's own file) is hashed into the record, so the target machine can tell
    whether it runs the very same file. Returns the record stored in the file.
    """
    cases = as_cases(inputs)
    with _active(runner):
        results = [(name, feeds, runner.infer(feeds)) for name, feeds in cases]
        record = run_record(runner, "saved-outputs", artifact=artifact, arch_id=arch_id, iters=iters,
                            feeds=cases[0][1])
    arrays: dict[str, np.ndarray] = {}
    record.update(format=FORMAT, format_version=FORMAT_VERSION, cases=[])
    for i, (name, feeds, outputs) in enumerate(results):
        entry = {"name": name, "inputs": _store(arrays, f"c{i}.in", feeds, f"input of {name!r}"),
                 "outputs": _store(arrays, f"c{i}.out", outputs, f"output of {name!r}")}
        record["cases"].append(entry)
    arrays[RECORD_KEY] = np.array(json.dumps(record, default=str))
    _refuse_overwriting_artifact(path, record)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:  # a file handle: np.savez would append ".npz"
        np.savez(handle, **arrays)
    return record


def _store(arrays: dict[str, np.ndarray], prefix: str, tensors: Feeds, what: str) -> dict[str, dict[str, Any]]:
    """Put `tensors` into `arrays` under `prefix{j}`; their record: name -> key, shape, dtype."""
    stored = {}
    for j, (name, value) in enumerate(tensors.items()):
        array = np.ascontiguousarray(value)
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise UserInputError(f"{what} {name!r} is {array.dtype}; only numeric and bool arrays can be saved")
        arrays[f"{prefix}{j}"] = array
        stored[name] = {"key": f"{prefix}{j}", "shape": list(array.shape), "dtype": array.dtype.name}
    return stored


def _refuse_overwriting_artifact(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    artifact = (record.get("artifact") or {}).get("path")
    if artifact and Path(path).exists() and Path(path).resolve() == Path(artifact).resolve():
        raise UserInputError(f"--save-outputs {path}: that is the artifact itself; give a new .npz file name")


@contextlib.contextmanager
def _active(runner: Runner):  # noqa: ANN202  (a context manager)
    """The runner active inside the block; deactivated after only when this block activated it."""
    with contextlib.ExitStack() as stack:
        if not runner.active:
            stack.enter_context(runner)
        yield runner


def run_record(runner: Runner, kind: str, *, artifact: str | os.PathLike | None = None,
               arch_id: str | None = None, iters: int | None = None,
               feeds: Feeds | None = None) -> dict[str, Any]:
    """Provenance of one run of `runner`: artifact path and sha256, arch id, resolution, iterations, precision,
    backend and its library versions, device, date. Called while the runner is active (GPU names are known)."""
    files = runner.artifacts()
    artifact = artifact if artifact is not None else (files[0] if files else None)
    info = runner.describe()
    resolution = None
    if feeds is not None and set(feeds) >= {"image1"} and np.ndim(feeds["image1"]) == 4:
        resolution = list(np.shape(feeds["image1"])[2:])
    if iters is None:
        iters = info.get("iters")
    device = cpu_model() if runner.device == "cpu" else (info.get("gpu") or runner.device)
    return provenance(kind, arch_id=arch_id, resolution=resolution, iters=iters, precision=runner.precision,
                      backend=runner.backend, device=device, extra={
                          "artifact": file_record(artifact) if artifact is not None else None,
                          "runner": info})


# --------------------------------------------------------------------------------------------- load
def load_saved_outputs(path: str | os.PathLike) -> SavedOutputs:
    """Read a saved-outputs file back; one-line errors for a missing, foreign, damaged or pickled file."""
    path = Path(path)
    if not path.is_file():
        raise SavedOutputsError(f"{path}: saved-outputs file not found (write one with "
                                f"`verify ARTIFACT --save-outputs {path.name}`)")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError):
        raise SavedOutputsError(f"{path}: not a saved-outputs file (not a readable .npz archive: truncated, or "
                                "not written by `verify --save-outputs`)") from None
    with archive:
        entries = {info.filename[:-4]: info for info in archive.infolist() if info.filename.endswith(".npy")}
        if RECORD_KEY not in entries:
            raise SavedOutputsError(f"{path}: not a saved-outputs file (a .npz without the {RECORD_KEY} entry that "
                                    "`verify --save-outputs` writes)")
        record = _parse_record(path, _read_entry(path, archive, entries, RECORD_KEY))
        cases = [SavedCase(case["name"], *(
            {name: _read_entry(path, archive, entries, _key(path, case, part, name), numeric=True)
             for name in case[part]} for part in ("inputs", "outputs")))
            for case in record["cases"]]
    return SavedOutputs(path, record, cases)


def _read_entry(path: Path, archive: zipfile.ZipFile, entries: Mapping[str, zipfile.ZipInfo], key: str,
                numeric: bool = False) -> np.ndarray:
    """One array of the archive: header checked (no object arrays, size consistent) before numpy reads it."""
    if key not in entries:
        raise SavedOutputsError(f"{path}: corrupt saved-outputs file (entry {key} named in its record is missing)")
    try:
        data = archive.read(entries[key])  # checks the entry's CRC-32: flipped or truncated bytes are caught here
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError) as exc:
        raise SavedOutputsError(f"{path}: corrupt saved-outputs file (entry {key}: {type(exc).__name__})") from None
    try:
        stream = io.BytesIO(data)
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(stream)
    except Exception:  # numpy raises ValueError, SyntaxError or tokenizer errors for damaged headers
        raise SavedOutputsError(f"{path}: corrupt saved-outputs file (entry {key} has no valid .npy header)") from None
    if dtype.hasobject:
        raise SavedOutputsError(f"{path}: entry {key} holds pickled Python objects; refused (a saved-outputs file "
                                "holds numeric arrays only, and nothing from a file is executed)")
    if numeric and not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise SavedOutputsError(f"{path}: corrupt saved-outputs file (entry {key} holds {dtype}, expected numbers)")
    if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize > len(data):
        raise SavedOutputsError(f"{path}: corrupt saved-outputs file (entry {key} is shorter than its header says)")
    return np.load(io.BytesIO(data), allow_pickle=False)


def _parse_record(path: Path, array: np.ndarray) -> dict[str, Any]:
    """The JSON record, with the fields this reader relies on checked (format, version, cases)."""
    try:
        if array.dtype.kind != "U" or array.ndim != 0:
            raise ValueError
        record = json.loads(str(array[()]))
    except ValueError:
        raise SavedOutputsError(f"{path}: corrupt saved-outputs file ({RECORD_KEY} is not a JSON record)") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise SavedOutputsError(f"{path}: not a saved-outputs file (its record's format is "
                                f"{record.get('format') if isinstance(record, dict) else None!r}, expected {FORMAT!r})")
    version = record.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise SavedOutputsError(f"{path}: saved-outputs format version {version!r}; this toolkit reads up to "
                                f"{FORMAT_VERSION} (update the toolkit here)")
    cases = record.get("cases")
    good = isinstance(cases, list) and cases and all(
        isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("inputs"), dict)
        and isinstance(c.get("outputs"), dict) and c["outputs"] for c in cases)
    if not good:
        raise SavedOutputsError(f"{path}: corrupt saved-outputs file (its record lists no cases with inputs and "
                                "outputs)")
    return record


def _key(path: Path, case: Mapping[str, Any], part: str, name: str) -> str:
    entry = case[part][name]
    if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
        raise SavedOutputsError(f"{path}: corrupt saved-outputs file (no entry key for {part[:-1]} {name!r} of "
                                f"{case['name']!r})")
    return entry["key"]


# --------------------------------------------------------------------------------------------- compare
@dataclass
class OutputCheck:
    """One output of one case: the flow output by EPE (px), any other output np.allclose-style."""

    case: str
    output: str
    max_abs_diff: float
    epe: float | None  # mean end-point error for a flow output [B,2,H,W]; None for other outputs
    max_rel_diff: float | None  # None for a flow output (judged by EPE)
    ok: bool


@dataclass
class SavedComparison:
    """The outputs of a run here against those saved in a file made elsewhere, with both provenance records."""

    path: str
    tolerance_epe: float
    atol: float
    rtol: float
    saved: dict[str, Any]  # the record in the file: where and how the reference outputs were made
    here: dict[str, Any]   # the same record for this run
    checks: list[OutputCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[OutputCheck]:
        return [c for c in self.checks if not c.ok]

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "ok": self.ok, "tolerance_epe": self.tolerance_epe, "atol": self.atol,
                "rtol": self.rtol, "checks": [asdict(c) for c in self.checks], "notes": list(self.notes),
                "saved": self.saved, "here": self.here}

    def summary(self) -> str:
        lines = [f"  {'':<11}{'saved (' + self.path + ')':<44}here"]
        lines += [f"  {label:<11}{a:<44}{b}" for label, a, b in _record_rows(self.saved, self.here)]
        lines += [f"  note: {n}" for n in self.notes]
        for c in self.checks:
            metric = f"EPE {c.epe:.2e} px" if c.epe is not None else f"max rel {c.max_rel_diff:.2e}"
            lines.append(f"  {c.case:<24} {c.output:<12} max|diff| {c.max_abs_diff:.2e}   {metric}   "
                         f"{'ok' if c.ok else 'FAILED'}")
        rule = f"EPE <= {self.tolerance_epe:g} px for flow, |a-b| <= {self.atol:g} + {self.rtol:g}*|a| otherwise"
        if self.ok:
            lines.append(f"  OK: {len(self.checks)} output(s) match the saved ones ({rule})")
        else:
            names = sorted({c.output for c in self.failed})
            lines.append(f"  FAILED: output(s) {', '.join(map(repr, names))} differ from the saved ones in "
                         f"{len(self.failed)} of {len(self.checks)} check(s) ({rule})")
        return "\n".join(lines)


def _record_rows(saved: Mapping[str, Any], here: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Side-by-side rows of the two provenance records (what a user compares first when outputs differ)."""
    def artifact(r: Mapping[str, Any]) -> str:
        a = r.get("artifact") or {}
        return f"{Path(a['path']).name} sha256 {a['sha256'][:12]}" if a.get("path") and a.get("sha256") else "-"

    def versions(r: Mapping[str, Any]) -> str:
        v = (r.get("runner") or {}).get("versions") or {}
        return ", ".join(f"{k} {v[k]}" for k in sorted(v)) or "-"

    def value(r: Mapping[str, Any], key: str) -> str:
        v = r.get(key)
        return "x".join(map(str, v)) if key == "resolution" and v else ("-" if v is None else str(v))

    rows = [("file", artifact(saved), artifact(here))]
    rows += [(k, value(saved, k), value(here, k)) for k in ("arch_id", "resolution", "iters", "precision",
                                                             "backend", "device", "host", "created")]
    return rows + [("libs", versions(saved), versions(here))]


def compare_with_saved(runner: Runner, saved: SavedOutputs | str | os.PathLike, *,
                       tolerance_epe: float = DEFAULT_TOLERANCE_EPE, atol: float = DEFAULT_ATOL,
                       rtol: float = DEFAULT_RTOL, artifact: str | os.PathLike | None = None,
                       arch_id: str | None = None, iters: int | None = None) -> SavedComparison:
    """Run `runner` on the inputs stored in `saved` and compare with the stored outputs.

    Same metrics as `verify A B`: a flow output (`flow`, `[B,2,H,W]`, of a graph taking image1/image2) by max
    abs difference and EPE against `tolerance_epe` px; any other output by max abs / max relative difference,
    passing when |a-b| <= atol + rtol*|a|. The stored inputs must fit the runner's declared inputs (names,
    ranks, fixed axes, kind of dtype) before anything runs; an output the runner does not produce is an error.
    """
    saved = saved if isinstance(saved, SavedOutputs) else load_saved_outputs(saved)
    _check_inputs_fit(runner, saved, artifact)
    flow_model = is_flow_graph(runner.input_specs())
    with _active(runner):
        here = run_record(runner, "saved-outputs-check", artifact=artifact, arch_id=arch_id, iters=iters,
                          feeds=saved.cases[0].inputs)
        report = SavedComparison(str(saved.path), tolerance_epe, atol, rtol, saved.record, here)
        for case in saved.cases:
            got = runner.infer(case.inputs)
            for name, expected in case.outputs.items():
                report.checks.append(_check_output(saved.path, runner, case.name, name, expected, got, flow_model,
                                                   tolerance_epe, atol, rtol))
    report.notes = _differences(saved.record, here)
    return report


def _check_inputs_fit(runner: Runner, saved: SavedOutputs, artifact: str | os.PathLike | None) -> None:
    """Names, shapes and dtype kinds of the saved inputs against the runner's declared inputs; one line."""
    what = Path(artifact).name if artifact is not None else f"the {runner.backend} runner for {runner.name}"
    specs = {s.name: s for s in runner.input_specs()}
    for case in saved.cases:
        lacking, unknown = [n for n in specs if n not in case.inputs], [n for n in case.inputs if n not in specs]
        if lacking or unknown:  # names first, in both directions: "missing" alone reads ambiguously
            parts = ([f"the file has no {', '.join(map(repr, lacking))}"] if lacking else []) + \
                    ([f"{what} has no input {', '.join(map(repr, unknown))}"] if unknown else [])
            raise SavedOutputsError(f"{saved.path}: saved inputs {_describe(case.inputs)} do not fit {what}, which "
                                    f"takes {', '.join(s.describe() for s in specs.values())}: {'; '.join(parts)}")
        try:
            check_feeds(list(specs.values()), case.inputs, "it")
        except UserInputError as exc:
            raise SavedOutputsError(f"{saved.path}: saved inputs {_describe(case.inputs)} do not fit {what}: "
                                    f"{exc}") from None
        for name, array in case.inputs.items():
            if not _same_kind(array.dtype, specs[name].dtype):
                raise SavedOutputsError(f"{saved.path}: input {name!r} is saved as {array.dtype}; {what} takes "
                                        f"{specs[name].describe()}")


def _describe(feeds: Feeds) -> str:
    return ", ".join(f"{k}:{'x'.join(map(str, np.shape(v)))} {np.asarray(v).dtype}" for k, v in feeds.items())


def _same_kind(a: np.dtype, b: np.dtype) -> bool:
    """float with float, integer with integer (signed or not), bool with bool: runners cast within a kind."""
    kind = lambda d: "f" if d.kind == "f" else "i" if d.kind in "iu" else d.kind  # noqa: E731
    return kind(np.dtype(a)) == kind(np.dtype(b))


def _check_output(path: Path, runner: Runner, case: str, name: str, expected: np.ndarray,
                  got: Mapping[str, np.ndarray], flow_model: bool, tolerance_epe: float, atol: float,
                  rtol: float) -> OutputCheck:
    if name not in got:
        raise SavedOutputsError(f"{path}: output {name!r} was saved, but {runner.name} on {runner.backend} gives "
                                f"no output {name!r} (it gives {', '.join(map(repr, got)) or 'nothing'})")
    if np.shape(got[name]) != np.shape(expected):
        raise SavedOutputsError(f"{path}: output {name!r} of {case!r} was saved with shape "
                                f"{list(np.shape(expected))}, {runner.name} on {runner.backend} gives "
                                f"{list(np.shape(got[name]))}")
    if flow_model and name == FLOW_OUTPUT and np.ndim(expected) == 4 and np.shape(expected)[1] == 2:
        max_abs, epe = compare_flows(np.moveaxis(expected, 1, -1), np.moveaxis(got[name], 1, -1))
        return OutputCheck(case, name, max_abs, epe, None, bool(epe <= tolerance_epe))
    result = compare_outputs({name: expected}, {name: got[name]}, atol, rtol).outputs[0]
    return OutputCheck(case, name, result.max_abs_diff, None, result.max_rel_diff, result.ok)


def _differences(saved: Mapping[str, Any], here: Mapping[str, Any]) -> list[str]:
    """What differs between the two runs beyond backend and machine (expected to differ): a likely cause."""
    notes = []
    for key in ("arch_id", "resolution", "iters", "precision"):
        if saved.get(key) is not None and here.get(key) is not None and saved.get(key) != here.get(key):
            notes.append(f"{key} differs: saved {saved[key]}, here {here[key]}")
    a, b = saved.get("artifact") or {}, here.get("artifact") or {}
    if a.get("sha256") and a.get("sha256") == b.get("sha256"):
        notes.append("the same artifact file (sha256 matches)")
    return notes


# --------------------------------------------------------------------------------------------- artifacts
def artifact_runner(path: str | os.PathLike, *, backend: str | None = None, arch: Any = None,
                    iters: int = 12) -> Runner:
    """A runner for an artifact on `backend` (default: torch-cpu for a checkpoint, ort-cpu for ONNX, trt for
    an engine); a backend that cannot run this kind of file, or is missing here, is a one-line error."""
    from .backends import BACKENDS, resolve_backend

    kind = artifact_kind(path)
    if not Path(path).is_file():
        raise VerificationError(f"{path}: file not found")
    chosen = resolve_backend(backend or DEFAULT_BACKENDS[kind])
    if chosen.runs != _RUNS[kind]:
        fits = [b.name for b in BACKENDS.values() if b.runs == _RUNS[kind]]
        raise UserInputError(f"--backend {chosen.name} cannot run {path} ({_KIND_NAMES[kind]}); choose from "
                             f"{', '.join(fits)}")
    chosen.check()
    if kind == "checkpoint":
        from flownas.loading import load_flow_model

        from .torch_runner import flow_model_runner

        model = load_flow_model(path, arch=arch)
        return flow_model_runner(model, iters, device=chosen.device, name=Path(path).stem)
    if kind == "onnx":
        from .runners import OrtRunner

        return OrtRunner(path, chosen.provider or "cpu")
    from .runners import EngineRunner

    return EngineRunner(path)


def _identity(runner: Runner, meta: Mapping[str, Any]) -> str | None:
    """The arch id for records: the export record's, else the PyTorch model's own."""
    if meta.get("arch_id"):
        return str(meta["arch_id"])
    module = getattr(runner, "module", None)
    if module is not None and hasattr(module, "config"):
        from flownas.models import model_identity

        return model_identity(module)
    return None


def save_artifact_outputs(artifact: str | os.PathLike, out: str | os.PathLike, *, backend: str | None = None,
                          arch: Any = None, iters: int | None = None, resolution: str | tuple[int, int] | None = None,
                          real_pair: str | os.PathLike | None = None, input_shapes: str | None = None,
                          n_synthetic: int = 2) -> dict[str, Any]:
    """`verify ARTIFACT --save-outputs OUT`: the artifact on `backend`, on the inputs `verify` uses, saved.

    A flow model gets the verification pairs (seeded synthetic ones, plus the real pair in `real_pair`) at
    `resolution` (default: the export's); any other graph seeded generated inputs (`input_shapes` fixes
    dynamic axes, trtexec syntax). Returns the record written into `out`.
    """
    meta = artifact_metadata(artifact) if Path(artifact).is_file() else {}
    iters = iters or meta.get("export_iters") or 12
    runner = artifact_runner(artifact, backend=backend, arch=arch, iters=iters)
    specs = runner.input_specs()
    if is_flow_graph(specs):
        if input_shapes:
            raise UserInputError(f"--input-shape is for graphs that are not flow models; {artifact} is one: give "
                                 "--resolution HxW")
        height, width = (parse_resolution(resolution) if isinstance(resolution, str) else tuple(resolution)
                         if resolution else (meta.get("export_height", 384), meta.get("export_width", 512)))
        cases: CaseInputs = verification_pairs(height, width, real_pair, n_synthetic)
    else:
        if resolution or real_pair:
            raise UserInputError(f"--resolution and --real-pair are for flow models; {artifact} takes "
                                 f"{', '.join(s.describe() for s in specs)}: give --input-shape instead")
        shapes = resolve_shapes(specs, parse_shape_spec(input_shapes) if input_shapes else None)
        cases = [("generated (seed 0)", generate_inputs(specs, shapes, seed=0))]
    return save_outputs(runner, cases, out, artifact=artifact, arch_id=_identity(runner, meta),
                        iters=iters if is_flow_graph(specs) else None)  # other graphs have no iterations


def verify_saved_outputs(artifact: str | os.PathLike, saved_path: str | os.PathLike, *,
                         backend: str | None = None, arch: Any = None, iters: int | None = None,
                         tolerance_epe: float = DEFAULT_TOLERANCE_EPE, atol: float = DEFAULT_ATOL,
                         rtol: float = DEFAULT_RTOL) -> SavedComparison:
    """`verify ARTIFACT --load-outputs F`: the artifact here on F's inputs, compared with F's outputs.

    F is read (and any damage reported) before the model is loaded. A checkpoint runs F's iteration count
    unless `iters` is given; an ONNX file or engine runs the iterations unrolled in it.
    """
    saved = load_saved_outputs(saved_path)
    meta = artifact_metadata(artifact) if Path(artifact).is_file() else {}
    iters = iters or meta.get("export_iters") or saved.record.get("iters") or 12
    runner = artifact_runner(artifact, backend=backend, arch=arch, iters=iters)
    flow_model = is_flow_graph(runner.input_specs())
    return compare_with_saved(runner, saved, tolerance_epe=tolerance_epe, atol=atol, rtol=rtol, artifact=artifact,
                              arch_id=_identity(runner, meta), iters=iters if flow_model else None)

