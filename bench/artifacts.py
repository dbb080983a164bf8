"""`inspect PATH`: what any artifact of the toolkit is and how it was made, read from the file itself.

Artifacts: checkpoints (toolkit format and the published RAFT / torchvision / FlowNAS layouts), ONNX files,
TensorRT engines (their `<engine>.json` record; the engine itself only where TensorRT is installed), latency
tables (`table.json` or its folder), benchmark reports (`results.json` or its folder), training runs
(`train.json` or its folder), search results, and any other JSON record carrying a provenance record.

Every answer has the same shape (`inspect_artifact`): the artifact kind, the file's size and SHA-256, the
provenance record (`flownas.provenance.RECORD_KEYS`, None where the artifact has none), inputs/outputs, and the
kind's own facts (operators and TensorRT lint for ONNX, parameters and MACs for checkpoints, ...).

Only checkpoints import torch: ONNX files, engine records, tables and reports are read with onnx/json, so
`inspect` stays fast and works on a deployment target without PyTorch. Latency tables are read as JSON, never
through `latency_tables` (imports flow the other way).
"""
from __future__ import annotations

import json
import os
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Mapping

from flownas.errors import ToolkitError, one_line
from flownas.fileio import file_record
from flownas.provenance import RECORD_KEYS

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".tar", ".bin")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
FOLDER_FILES = ("table.json", "results.json", "train.json")  # what makes a folder an artifact, in this order
SEARCH_FORMAT_PREFIX = "flownas-search-result/"
DEFAULT_MAC_RESOLUTION, DEFAULT_MAC_ITERS = (384, 512), 12  # `flownas arch show`'s defaults
KINDS = ("checkpoint", "onnx", "engine", "latency-table", "bench-report", "training-run", "search-result", "record")
EXPECTED = ("a checkpoint (.pt/.pth), an ONNX file, a TensorRT engine (.engine/.plan/.trt), saved outputs (.npz), "
            "a latency table, "
            "a benchmark report, a training run or search result (their JSON or folder)")


class ArtifactError(ToolkitError, ValueError):
    """A path that is not an artifact `inspect` can read; one line naming it and what was expected."""


# ------------------------------------------------------------------------------------------------ entry
def inspect_artifact(path: str | os.PathLike, *, resolution: tuple[int, int] | None = None,
                     iters: int | None = None) -> dict[str, Any]:
    """One JSON-ready record describing the artifact at `path` (see the module docstring for its keys).

    `resolution`/`iters` set the input size of a checkpoint's MAC count; by default the size recorded in the
    checkpoint, else 384x512 and 12 iterations. Raises `ArtifactError` (one line) for a missing or unknown file.
    """
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: no such file or folder (expected {EXPECTED})")
    if path.is_dir():
        return _inspect_folder(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _inspect_onnx(path)
    if suffix in ENGINE_SUFFIXES:
        return _inspect_engine(path)
    if suffix == ".json":
        return _inspect_json(path, _read_json(path))
    if suffix == ".npz":
        return _inspect_saved_outputs(path)
    if suffix in CHECKPOINT_SUFFIXES or zipfile.is_zipfile(path):  # torch.save writes a zip archive
        return _inspect_checkpoint(path, resolution, iters)
    raise ArtifactError(f"{path}: unknown artifact type {suffix or '(no suffix)'!r} (expected {EXPECTED})")


def _inspect_saved_outputs(path: Path) -> dict[str, Any]:
    """`verify --save-outputs` files: the reference run's record, its cases and every array's shape and dtype."""
    from export.saved_outputs import load_saved_outputs  # numpy only, read without pickle

    saved = load_saved_outputs(path)
    out = _base(path, "saved-outputs", saved.record)
    first = saved.cases[0] if saved.cases else None
    if first is not None:
        out["inputs"] = [{"name": k, "shape": list(v.shape), "dtype": str(v.dtype)} for k, v in first.inputs.items()]
        out["outputs"] = [{"name": k, "shape": list(v.shape), "dtype": str(v.dtype)} for k, v in first.outputs.items()]
    out["details"] = {"cases": [c.name for c in saved.cases],
                      "compare on the target": f"flownas verify ARTIFACT --load-outputs {path.name}"}
    return out


def _base(path: Path, kind: str, record: Mapping[str, Any] | None) -> dict[str, Any]:
    """The keys every answer has; kind-specific readers fill in the rest."""
    return {"path": str(path), "kind": kind, "file": _file_facts(path), "provenance": _provenance_of(record),
            "inputs": None, "outputs": None, "details": {}, "notes": []}


def _file_facts(path: Path) -> dict[str, Any] | None:
    if path.is_dir():
        return None
    facts = file_record(path)
    return {"size_bytes": facts["size_bytes"], "sha256": facts["sha256"]}


def _provenance_of(record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The standard provenance keys of `record`, or None when it is not a provenance record at all (an
    artifact made before the toolkit recorded one, or by another tool)."""
    if not isinstance(record, Mapping) or "kind" not in record:
        return None
    return {key: record.get(key) for key in RECORD_KEYS}


# ------------------------------------------------------------------------------------------------ JSON
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: not a JSON file ({one_line(exc)})") from None


def _inspect_folder(path: Path) -> dict[str, Any]:
    for name in FOLDER_FILES:
        if (path / name).is_file():
            return _inspect_json(path / name, _read_json(path / name), folder=path)
    raise ArtifactError(f"{path}: a folder holding none of {', '.join(FOLDER_FILES)} (expected a latency table, "
                        "benchmark report or training run folder)")


def _inspect_json(path: Path, data: Any, folder: Path | None = None) -> dict[str, Any]:
    """Recognise a JSON artifact by its content (its name may be anything)."""
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: JSON {type(data).__name__}, not a toolkit record (expected {EXPECTED})")
    nested = data.get("provenance") if isinstance(data.get("provenance"), dict) else {}
    kind = data.get("kind") if isinstance(data.get("kind"), str) else nested.get("kind")
    if kind == "bench-report" or isinstance(data.get("results"), list) and "ratios" in data:
        return _bench_report(path, data, folder)
    if kind == "latency-table":
        return _latency_table(path, data, folder)
    if kind == "training-run" or set(data) == {"record", "provenance"} and isinstance(data["record"], dict):
        return _training_run(path, data, folder)
    if str(data.get("format", "")).startswith(SEARCH_FORMAT_PREFIX):
        return _search_result(path, data)
    if kind == "engine" and "kind" in data:  # an engine's sidecar record given directly
        return _engine_record(path, data, engine=None)
    if kind is not None:
        return _generic_record(path, data if "kind" in data else nested)
    raise ArtifactError(f"{path}: JSON without a toolkit provenance record (no 'kind'); expected {EXPECTED}")


def _generic_record(path: Path, record: Mapping[str, Any]) -> dict[str, Any]:
    """Any other JSON record of the toolkit (an ONNX export's `.json` record, an evaluation summary, ...)."""
    out = _base(path, "record", record)
    out["details"] = {"record_kind": record.get("kind"),
                      **{k: v for k, v in record.items() if k not in RECORD_KEYS and _is_scalar(v)}}
    return out


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _bench_report(path: Path, data: Mapping[str, Any], folder: Path | None) -> dict[str, Any]:
    """A `bench` report's `results.json` (bench/report.py): one row per result with its headline numbers."""
    out = _base(path, "bench-report", data.get("provenance"))
    ratios = {r.get("name"): r for r in data.get("ratios", []) if isinstance(r, dict)}
    rows = []
    for result in data.get("results", []):
        stats = result.get("stats", {})
        ratio = ratios.get(result.get("name"), {})
        rows.append({"name": result.get("name"), "model": result.get("model"), "backend": result.get("backend"),
                     "precision": result.get("precision"), "runs": stats.get("count"),
                     "median_ms": stats.get("median_ms"), "p90_ms": stats.get("p90_ms"), "cv": stats.get("cv"),
                     "speedup_vs_baseline": ratio.get("speedup_vs_baseline"), "run_id": result.get("run_id")})
    env = data.get("environment") or {}
    out["details"] = {"title": data.get("title"), "baseline": data.get("baseline"), "results": rows,
                      "machine": {k: env.get(k) for k in ("cpu", "gpu", "usable_cpus", "os")},
                      "files_measured": data.get("files", []), "folder": str(folder) if folder else None}
    out["notes"] = list(data.get("warnings", []))
    return out


def _latency_table(path: Path, data: Mapping[str, Any], folder: Path | None) -> dict[str, Any]:
    """A latency table's `table.json` (latency_tables.table.assemble) and the row count of its `table.csv`."""
    out = _base(path, "latency-table", data)
    csv_path = path.parent / "table.csv"
    rows = _count_lines(csv_path) - 1 if csv_path.is_file() else None
    calibration = data.get("calibration") or {}
    out["details"] = {"keys": data.get("keys"), "table_csv_rows": rows, "batch": data.get("batch"),
                      "threads": data.get("threads"), "cpu": data.get("cpu"), "measured": data.get("measured"),
                      "timing_config": data.get("timing_config"), "base_iters": data.get("base_iters"),
                      "step_span": data.get("step_span"),
                      "calibration": {k: calibration.get(k) for k in ("scale", "offset_ms", "samples")}
                      if calibration else None,
                      "validation": sorted(p.name for p in (path.parent / "validation").glob("*"))
                      if (path.parent / "validation").is_dir() else []}
    if rows is None:
        out["notes"].append(f"no table.csv beside {path.name}: the table's latencies are missing")
    elif isinstance(data.get("keys"), int) and rows != data["keys"]:
        out["notes"].append(f"table.csv has {rows} rows but table.json records {data['keys']} keys")
    return out


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def _training_run(path: Path, data: Mapping[str, Any], folder: Path | None) -> dict[str, Any]:
    """A training run's `train.json` ({"record": TrainRecord, "provenance": ...}) and the checkpoints beside it."""
    out = _base(path, "training-run", data.get("provenance"))
    record = data.get("record") if isinstance(data.get("record"), dict) else {}
    validation = record.get("validation") or []
    out["details"] = {**{k: v for k, v in record.items() if k != "validation"},
                      "validation_points": len(validation), "last_validation": validation[-1] if validation else None,
                      "checkpoints": sorted(p.name for p in path.parent.iterdir()
                                            if p.suffix.lower() in CHECKPOINT_SUFFIXES)}
    if record.get("interrupted"):
        out["notes"].append(f"interrupted at step {record.get('final_step')} of {record.get('steps')}: "
                            "continue with --resume")
    return out


def _search_result(path: Path, data: Mapping[str, Any]) -> dict[str, Any]:
    """A search result (flownas.search.SearchResult.save): the best architecture and the front's size."""
    out = _base(path, "search-result", data.get("provenance"))
    out["details"] = {"format": data.get("format"), "arch_id": data.get("arch_id"),
                      "latency_ms": data.get("latency_ms"), "error": data.get("error"),
                      "evaluations": data.get("evaluations"), "generations": data.get("generations"),
                      "front_size": len(data.get("front") or []), "config": data.get("config")}
    return out


# ------------------------------------------------------------------------------------------------ ONNX
def _inspect_onnx(path: Path) -> dict[str, Any]:
    """Metadata record, declared I/O, operator counts and the TensorRT lint summary; onnx only, no torch."""
    from export.inputs import onnx_io_specs
    from export.lint import lint_onnx
    from export.metadata import decode_metadata

    proto = _load_onnx(path)
    metadata = decode_metadata(proto)
    sidecar = path.with_suffix(".json")
    record = metadata if "kind" in metadata else _sidecar_record(sidecar)
    out = _base(path, "onnx", record)
    inputs, outputs = onnx_io_specs(path)
    out["inputs"], out["outputs"] = [s.to_dict() for s in inputs], [s.to_dict() for s in outputs]
    out["operators"] = dict(Counter(node.op_type for node in _all_nodes(proto.graph)).most_common())
    lint = lint_onnx(proto)
    out["lint"] = {"ok": lint.ok, "opset": lint.opset, "errors": len(lint.errors), "warnings": len(lint.warnings),
                   "infos": len(lint.findings) - len(lint.errors) - len(lint.warnings),
                   "findings": [f"{f.severity} {f.code}: {f.message}" for f in lint.findings
                                if f.severity in ("error", "warning")]}
    out["details"] = {"opset": lint.opset, "ir_version": proto.ir_version,
                      "producer": f"{proto.producer_name} {proto.producer_version}".strip() or None,
                      "initializers": len(proto.graph.initializer),
                      "weights": sum(_numel(t.dims) for t in proto.graph.initializer),
                      "record_source": "metadata_props" if "kind" in metadata else
                      (sidecar.name if out["provenance"] else None),
                      **{k: metadata.get(k) for k in ("export_dynamic", "export_opset", "export_lookup")
                         if k in metadata}}
    if out["provenance"] is None:
        out["notes"].append("no provenance record (not exported by the toolkit, or made before it recorded one)")
    return out


def _load_onnx(path: Path) -> Any:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf decode errors, OSError: all mean "not a readable ONNX file"
        raise ArtifactError(f"{path}: not a readable ONNX file ({type(exc).__name__})") from None
    if not proto.opset_import and not proto.graph.node:  # protobuf happily parses arbitrary bytes
        raise ArtifactError(f"{path}: not an ONNX model (no opset imports and no nodes)")
    return proto


def _sidecar_record(path: Path) -> dict[str, Any] | None:
    """The `.json` record `export onnx` writes beside the file, if it is one."""
    try:
        data = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and "kind" in data else None


def _all_nodes(graph: Any) -> Iterator[Any]:
    """Nodes of the graph and of its subgraphs (If/Loop/Scan bodies), depth first."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _all_nodes(sub)


def _numel(dims: Any) -> int:
    count = 1
    for d in dims:
        count *= int(d)
    return count


# ------------------------------------------------------------------------------------------------ engines
def _inspect_engine(path: Path) -> dict[str, Any]:
    """The engine's JSON record (`<engine>.json`), checked against the file; the engine itself with TensorRT."""
    sidecar = Path(f"{path}.json")  # export.tensorrt.engine_sidecar_path: not imported, it pulls in numpy/onnx
    record = _read_json(sidecar) if sidecar.is_file() else None
    out = _engine_record(path, record if isinstance(record, dict) else {}, engine=path)
    if record is None:
        out["notes"].append(f"no JSON record beside the engine ({sidecar.name}): how it was built is unknown")
    elif out["file"] and record.get("engine_sha256") not in (None, out["file"]["sha256"]):
        out["notes"].append(f"{sidecar.name} describes another build (its engine_sha256 differs from the file's)")
    _add_engine_bindings(path, out)
    return out


def _engine_record(path: Path, record: Mapping[str, Any], engine: Path | None) -> dict[str, Any]:
    out = _base(path, "engine", record if record else None)
    out["inputs"], out["outputs"] = record.get("inputs"), record.get("outputs")
    out["details"] = {k: record.get(k) for k in ("tensorrt_version", "strongly_typed", "tf32", "workspace_mb",
                                                   "build_time_s", "onnx", "engine", "engine_size_bytes")}
    out["details"]["profiles"] = record.get("profiles")
    out["details"]["gpu"] = (record.get("gpu") or {}).get("name") if isinstance(record.get("gpu"), dict) else None
    return out


def _add_engine_bindings(path: Path, out: dict[str, Any]) -> None:
    """I/O tensors read from the engine itself, where TensorRT is installed (a deserialisation needs no GPU
    work beyond the runtime); without it the record's lists stand."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        out["notes"].append("TensorRT is not installed: the engine itself was not read (the record describes it)")
        return
    try:
        tensors = _engine_tensors(path)
    except Exception as exc:  # a foreign TensorRT version or GPU: say why, keep the record's view
        out["notes"].append(f"TensorRT could not deserialise the engine: {one_line(exc)[:200]}")
        return
    out["engine_tensors"] = tensors
    out["inputs"] = [t for t in tensors if t["mode"] == "input"]
    out["outputs"] = [t for t in tensors if t["mode"] == "output"]


def _engine_tensors(path: Path) -> list[dict[str, Any]]:
    from export.trt_runtime import import_tensorrt

    trt = import_tensorrt()
    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise RuntimeError("deserialize_cuda_engine returned None (built by another TensorRT version or GPU?)")
    tensors = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
        dtype = str(getattr(engine.get_tensor_dtype(name), "name", engine.get_tensor_dtype(name))).lower()
        tensors.append({"name": name, "mode": mode, "shape": [int(d) for d in engine.get_tensor_shape(name)],
                        "dtype": dtype})
    return tensors


# ------------------------------------------------------------------------------------------------ checkpoints
def _inspect_checkpoint(path: Path, resolution: tuple[int, int] | None, iters: int | None) -> dict[str, Any]:
    """Toolkit or published checkpoint: its record, model family, parameters and MACs (imports torch)."""
    from flownas import weights as W

    raw = W.read_checkpoint(path)
    if W.is_toolkit_checkpoint(raw):
        record = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else None
        config, layout, state = raw.get("model"), W.FORMAT_NAME, raw.get("state_dict") or {}
        if not isinstance(config, dict):
            raise ArtifactError(f"{path}: a {W.FORMAT_NAME} checkpoint without a 'model' config")
    else:
        record = None
        try:
            state = W.unwrap_state_dict(raw)
            layout = W.detect_layout(state)
        except W.WeightsError as exc:
            raise ArtifactError(f"{path}: {one_line(exc)}") from None
        config = _published_config(layout)
    out = _base(path, "checkpoint", record)
    size = _mac_size(record, resolution, iters)
    out["inputs"], out["outputs"] = _flow_io(size[0] if record and record.get("resolution") else None)
    out["details"] = {"layout": layout, "family": config.get("family"),
                      "arch_id": (record or {}).get("arch_id"), "tensors": len(state),
                      "dtypes": sorted({str(t.dtype).replace("torch.", "") for t in state.values()
                                        if hasattr(t, "dtype")})}
    out["complexity"] = _complexity(config, path, size, out["notes"])
    if record is None:
        out["notes"].append(f"published {layout} layout: it carries no provenance record")
    return out


def _published_config(layout: str) -> dict[str, Any]:
    """The model config of a published layout (flownas.weights builds the same models from them)."""
    if layout == "flownas-supernet":
        return {"family": "flownas-supernet"}  # the released FlowNAS space and RAFT large's decoder
    return {"family": "raft", "variant": "small" if layout.endswith("small") else "large"}


def _mac_size(record: Mapping[str, Any] | None, resolution: tuple[int, int] | None,
              iters: int | None) -> tuple[tuple[int, int], int]:
    """The input size and iterations MACs are counted at: asked, else recorded, else `arch show`'s defaults."""
    recorded = (record or {}).get("resolution")
    size = tuple(resolution or recorded or DEFAULT_MAC_RESOLUTION)
    return (int(size[0]), int(size[1])), int(iters or (record or {}).get("iters") or DEFAULT_MAC_ITERS)


def _flow_io(size: tuple[int, int] | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A flow model's inputs (image1, image2) and output (flow); H, W as recorded, else any multiple of 8."""
    h, w = size if size else ("H", "W")
    images = [{"name": n, "shape": [1, 3, h, w], "dtype": "float32"} for n in ("image1", "image2")]
    return images, [{"name": "flow", "shape": [1, 2, h, w], "dtype": "float32"}]


def _complexity(config: Mapping[str, Any], path: Path, size: tuple[tuple[int, int], int],
                notes: list[str]) -> dict[str, Any]:
    """Parameters (model built on the meta device: nothing allocated) and MACs at `size`."""
    import torch

    from flownas.complexity import count_macs, count_parameters
    from flownas.weights import build_model

    (height, width), iters = size
    try:
        with torch.device("meta"):
            params = count_parameters(build_model(config, str(path)))
    except ToolkitError as exc:
        raise ArtifactError(f"{path}: model config: {one_line(exc)}") from None
    out: dict[str, Any] = {"parameters": params, "macs": None, "resolution": [height, width], "iters": iters}
    try:
        out["macs"] = count_macs(config, height, width, iters)
    except (ValueError, RuntimeError) as exc:  # an input too small for the correlation pyramid
        notes.append(f"MACs not counted at {height}x{width}: {one_line(exc)}")
    if config.get("family") == "flownas-supernet":
        notes.append("supernet: MACs are its largest subnet's (a subnet's: flownas arch show ARCH)")
    return out


# ------------------------------------------------------------------------------------------------ text
def format_inspection(record: Mapping[str, Any]) -> str:
    """The record as terminal text: what it is, how it was made, its I/O and its kind's facts."""
    lines = [_headline(record)]
    lines += _provenance_lines(record.get("provenance"))
    for label in ("inputs", "outputs"):
        if record.get(label):
            lines.append(f"{label}: " + ", ".join(_tensor_text(t) for t in record[label]))
    lines += _section_lines(record)
    lines += [f"note: {n}" for n in record.get("notes", [])]
    return "\n".join(lines)


def _headline(record: Mapping[str, Any]) -> str:
    file = record.get("file")
    facts = f" ({file['size_bytes']:,} bytes, sha256 {file['sha256'][:16]}...)" if file else ""
    return f"{record['path']}: {record['kind']}{facts}"


def _provenance_lines(prov: Mapping[str, Any] | None) -> list[str]:
    if not prov:
        return ["made by: unknown (no provenance record)"]
    res = prov.get("resolution")
    shown = {"kind": prov.get("kind"), "arch": prov.get("arch_id"),
             "resolution": "x".join(map(str, res)) if res else None, "iters": prov.get("iters"),
             "precision": prov.get("precision"), "backend": prov.get("backend"), "device": prov.get("device")}
    versions = ", ".join(f"{k} {v}" for k, v in (prov.get("versions") or {}).items())
    return [f"made by: {prov.get('command')}",
            f"  on {prov.get('created')} at {prov.get('host')}, toolkit {prov.get('toolkit_version')}, "
            f"python {prov.get('python')}",
            "  " + ", ".join(f"{k} {v}" for k, v in shown.items() if v is not None),
            *([f"  versions: {versions}"] if versions else [])]


def _tensor_text(tensor: Mapping[str, Any]) -> str:
    dims = "x".join("?" if d is None or (isinstance(d, int) and d < 0) else str(d) for d in tensor.get("shape", []))
    return f"{tensor.get('name')}:{dims} {tensor.get('dtype')}"


def _section_lines(record: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    if record.get("operators"):
        ops = record["operators"]
        lines.append(f"operators ({sum(ops.values())} nodes): " + ", ".join(f"{k} {v}" for k, v in ops.items()))
    if record.get("lint"):
        lint = record["lint"]
        lines.append(f"TensorRT lint: opset {lint['opset']}, {lint['errors']} error(s), {lint['warnings']} "
                     f"warning(s), {lint['infos']} info: {'parses' if lint['ok'] else 'will NOT parse'}")
        lines += [f"  {f}" for f in lint["findings"]]
    if record.get("complexity"):
        lines += _complexity_lines(record["complexity"])
    rows = record.get("details", {}).get("results") if record["kind"] == "bench-report" else None
    for key, value in record.get("details", {}).items():
        if key != "results" and value not in (None, [], {}):
            lines.append(f"{key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")
    for row in rows or []:
        speedup = row.get("speedup_vs_baseline")
        lines.append(f"  {row['name']}: median {_num(row.get('median_ms'))} ms, p90 {_num(row.get('p90_ms'))} ms, "
                     f"{row.get('runs')} runs" + (f", {speedup:.2f}x vs baseline" if speedup else ""))
    return lines


def _complexity_lines(c: Mapping[str, Any]) -> list[str]:
    params = c["parameters"]
    parts = ", ".join(f"{k} {v:,}" for k, v in params.items() if k != "total")
    lines = [f"parameters: {params['total']:,} ({parts})"]
    if c.get("macs"):
        h, w = c["resolution"]
        lines.append(f"MACs at {h}x{w}, {c['iters']} iterations: {c['macs']['total'] / 1e9:.3f} G")
    return lines


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"

