"""`inspect PATH` on every artifact kind the toolkit writes, made tiny here; errors are one line; no torch where
none is needed (checked in a fresh interpreter)."""
from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.artifacts import format_inspection, inspect_artifact
from bench.inspect_cli import add_inspect_parser, run_inspect
from bench.protocol import TimingConfig
from flownas.errors import ToolkitError
from flownas.provenance import RECORD_KEYS, provenance
from tests_helpers import one_conv_onnx

REPO = Path(__file__).resolve().parents[2]
TABLE = REPO / "latency_tables" / "tables" / "ort-cpu-128x192"
QUICK = TimingConfig(warmup_runs=1, warmup_s=0.0, runs=5)


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One of each light artifact (no torch): ONNX, engine + record, table, bench report, train run, search."""
    root = tmp_path_factory.mktemp("artifacts")
    conv = one_conv_onnx(root / "conv.onnx")
    engine = root / "conv.engine"
    engine.write_bytes(b"serialized engine bytes")
    record = provenance("engine", arch_id="conv", resolution=(8, 8), iters=None, precision="fp16",
                        backend="tensorrt", device="NVIDIA H100", extra={
                            "engine": engine.name, "engine_sha256": hashlib.sha256(engine.read_bytes()).hexdigest(),
                            "tensorrt_version": "10.15.1", "inputs": [{"name": "x", "dtype": "float32",
                                                                        "shape": [1, 3, 8, 8]}],
                            "outputs": [{"name": "y", "dtype": "float16", "shape": [1, 4, 8, 8]}]})
    Path(f"{engine}.json").write_text(json.dumps(record))
    table = root / "table"
    shutil.copytree(TABLE, table)
    from bench.session import BenchRequest, run_benchmark

    run_benchmark(BenchRequest(backends="ort-cpu", onnx=str(conv), timing=QUICK, out=root / "report"))
    run = root / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"")  # named, never opened: a training run's inspection lists its checkpoints
    (run / "train.json").write_text(json.dumps({"record": {
        "out": str(run), "model": "tiny-flownas", "supernet": False, "start_step": 0, "final_step": 3, "steps": 10,
        "interrupted": True, "weights": None, "last_checkpoint": str(run / "last.pt"), "teacher": None,
        "world_size": 1, "wall_s": 1.5, "pairs_per_s": 4.0, "validation": [{"step": 2, "epe": 3.25}]},
        "provenance": provenance("training-run", arch_id="tiny-flownas", resolution=(128, 128), iters=2,
                                 precision="fp32", backend="torch", device="cpu")}))
    search = root / "search.json"
    search.write_text(json.dumps({"format": "flownas-search-result/1", "arch_id": "w16", "latency_ms": 3.5,
                                  "error": 1.25, "front": [{"arch_id": "w16"}, {"arch_id": "w24"}],
                                  "evaluations": 40, "generations": 3, "config": {"population": 8},
                                  "provenance": provenance("search-result", arch_id="w16")}))
    return {"onnx": conv, "engine": engine, "table": table, "report": root / "report", "run": run, "search": search}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A toolkit checkpoint of tiny-flownas recorded at 128x128, 2 iterations; and its parameter count."""
    from flownas.registry import create_model
    from flownas.weights import save_checkpoint

    model = create_model("tiny-flownas")
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", model,
                           {"resolution": [128, 128], "iters": 2})
    return path, sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------------ each kind
def test_every_answer_has_the_same_keys_and_a_full_provenance_record(artifacts: dict[str, Path]) -> None:
    for name, path in artifacts.items():
        record = inspect_artifact(path)
        assert {"path", "kind", "file", "provenance", "inputs", "outputs", "details", "notes"} <= set(record), name
        if record["provenance"] is not None:
            assert tuple(record["provenance"]) == RECORD_KEYS, name
        json.dumps(record)  # --json prints it: it must be JSON-ready as it is
        assert format_inspection(record).startswith(f"{record['path']}: {record['kind']}")


def test_onnx_io_operators_and_lint(artifacts: dict[str, Path]) -> None:
    record = inspect_artifact(artifacts["onnx"])
    assert record["kind"] == "onnx" and record["provenance"] is None
    assert record["inputs"] == [{"name": "x", "shape": [1, 3, 8, 8], "dtype": "float32"}]
    assert record["outputs"] == [{"name": "y", "shape": [1, 4, 8, 8], "dtype": "float32"}]
    assert record["operators"] == {"Conv": 1}
    assert record["lint"]["ok"] and record["lint"]["errors"] == 0 and record["lint"]["opset"] == 17
    assert record["details"]["weights"] == 4 * 3 * 3 * 3  # the one conv's kernel
    data = artifacts["onnx"].read_bytes()
    assert record["file"] == {"size_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert any("no provenance record" in n for n in record["notes"])
    text = format_inspection(record)
    assert "x:1x3x8x8 float32" in text and "Conv 1" in text and "0 error(s)" in text


def test_onnx_lint_errors_are_counted(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Unique", ["x"], ["y"])  # "N" in TensorRT's operator table
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "u.onnx"))
    record = inspect_artifact(tmp_path / "u.onnx")
    assert not record["lint"]["ok"] and record["lint"]["errors"] >= 1
    assert record["outputs"] == [{"name": "y", "shape": [None], "dtype": "float32"}]
    assert "will NOT parse" in format_inspection(record) and "y:? float32" in format_inspection(record)


def test_exported_flow_model_carries_its_record(tmp_path: Path) -> None:
    from export.onnx_export import export_onnx
    from export.spec import ExportSpec
    from flownas.registry import create_model

    model = create_model("tiny-flownas").eval()
    made = export_onnx(model, tmp_path / "tiny.onnx", ExportSpec(height=128, width=128, iters=1))
    record = inspect_artifact(tmp_path / "tiny.onnx")
    prov = record["provenance"]
    assert prov["kind"] == "onnx" and prov["arch_id"] == made["arch_id"] and prov["resolution"] == [128, 128]
    assert prov["iters"] == 1 and prov["created"] == made["created"]
    assert [t["name"] for t in record["inputs"]] == ["image1", "image2"]
    assert record["inputs"][0]["shape"] == [1, 3, 128, 128] and record["outputs"][0]["shape"] == [1, 2, 128, 128]
    assert record["details"]["record_source"] == "metadata_props"
    assert sum(record["operators"].values()) >= record["operators"]["Conv"] > 0


def test_engine_read_from_its_record(artifacts: dict[str, Path]) -> None:
    record = inspect_artifact(artifacts["engine"])
    assert record["kind"] == "engine"
    assert record["provenance"]["precision"] == "fp16" and record["provenance"]["backend"] == "tensorrt"
    assert record["outputs"] == [{"name": "y", "dtype": "float16", "shape": [1, 4, 8, 8]}]
    assert record["details"]["tensorrt_version"] == "10.15.1"
    assert not any("another build" in n for n in record["notes"])
    if importlib.util.find_spec("tensorrt") is None:
        assert any("TensorRT is not installed" in n for n in record["notes"])
    assert inspect_artifact(Path(f"{artifacts['engine']}.json"))["provenance"] == record["provenance"]


def test_engine_whose_record_describes_another_build(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    engine = tmp_path / "other.plan"
    engine.write_bytes(b"rebuilt")
    shutil.copy(f"{artifacts['engine']}.json", f"{engine}.json")
    assert any("describes another build" in n for n in inspect_artifact(engine)["notes"])
    bare = tmp_path / "bare.trt"
    bare.write_bytes(b"x")
    record = inspect_artifact(bare)
    assert record["provenance"] is None and any("no JSON record" in n for n in record["notes"])


def test_latency_table_folder_and_file(artifacts: dict[str, Path]) -> None:
    original = json.loads((TABLE / "table.json").read_text())
    with (TABLE / "table.csv").open() as handle:
        rows = sum(1 for _ in csv.DictReader(handle))
    for path in (artifacts["table"], artifacts["table"] / "table.json"):
        record = inspect_artifact(path)
        assert record["kind"] == "latency-table"
        assert record["provenance"] == {k: original.get(k) for k in RECORD_KEYS}  # older tables: no cpu_isa
        assert record["details"]["keys"] == original["keys"] and record["details"]["table_csv_rows"] == rows
        assert record["notes"] == []


def test_bench_report_folder_and_file(artifacts: dict[str, Path]) -> None:
    saved = json.loads((artifacts["report"] / "results.json").read_text())
    for path in (artifacts["report"], artifacts["report"] / "results.json"):
        record = inspect_artifact(path)
        assert record["kind"] == "bench-report" and record["provenance"]["kind"] == "bench-report"
        (row,) = record["details"]["results"]
        assert row["backend"] == "ort-cpu" and row["runs"] == 5
        assert row["median_ms"] == saved["results"][0]["stats"]["median_ms"]
    assert "conv/ort-cpu: median" in format_inspection(record)


def test_training_run_folder_and_file(artifacts: dict[str, Path]) -> None:
    for path in (artifacts["run"], artifacts["run"] / "train.json"):
        record = inspect_artifact(path)
        assert record["kind"] == "training-run" and record["provenance"]["kind"] == "training-run"
        assert record["provenance"]["resolution"] == [128, 128]
        details = record["details"]
        assert details["final_step"] == 3 and details["checkpoints"] == ["last.pt"]
        assert details["validation_points"] == 1 and details["last_validation"] == {"step": 2, "epe": 3.25}
        assert any("interrupted at step 3 of 10" in n for n in record["notes"])


def test_search_result(artifacts: dict[str, Path]) -> None:
    record = inspect_artifact(artifacts["search"])
    assert record["kind"] == "search-result" and record["provenance"]["arch_id"] == "w16"
    assert record["details"]["front_size"] == 2 and record["details"]["error"] == 1.25


def test_toolkit_checkpoint_parameters_and_macs(checkpoint: tuple[Path, int]) -> None:
    path, parameters = checkpoint
    record = inspect_artifact(path)
    assert record["kind"] == "checkpoint" and record["provenance"]["kind"] == "checkpoint"
    assert record["provenance"]["resolution"] == [128, 128] and record["provenance"]["iters"] == 2
    c = record["complexity"]
    assert c["parameters"]["total"] == parameters
    assert c["parameters"]["total"] >= c["parameters"]["fnet"] + c["parameters"]["cnet"] + c["parameters"]["update_block"]
    assert c["resolution"] == [128, 128] and c["iters"] == 2
    macs = c["macs"]
    assert macs["total"] == macs["fnet"] + macs["cnet"] + macs["update_block"] + macs["correlation"] > 0
    # Asked iterations replace the recorded ones: the encoders run once, the update block once more per
    # iteration, so its MACs grow by the same step each time (the mask head and upsampler run once).
    one, three = (inspect_artifact(path, iters=n)["complexity"]["macs"] for n in (1, 3))
    assert one["fnet"] == macs["fnet"] == three["fnet"] and one["cnet"] == three["cnet"]
    assert three["update_block"] - macs["update_block"] == macs["update_block"] - one["update_block"] > 0
    assert record["inputs"][0] == {"name": "image1", "shape": [1, 3, 128, 128], "dtype": "float32"}
    assert record["details"]["dtypes"] == ["float32", "int64"]  # weights; BatchNorm's num_batches_tracked
    assert f"parameters: {parameters:,}" in format_inspection(record)


def test_published_raft_small_layout(tmp_path: Path) -> None:
    import torch

    from flownas.registry import create_model

    path = tmp_path / "raft-small.pth"
    torch.save({f"module.{k}": v for k, v in create_model("raft-small").state_dict().items()}, path)
    record = inspect_artifact(path, resolution=(128, 128), iters=1)
    assert record["details"]["layout"] == "raft-small" and record["provenance"] is None
    assert record["complexity"]["parameters"]["total"] == 990_162  # RAFT small (FACTS.md section 2)
    assert record["inputs"][0]["shape"] == [1, 3, "H", "W"]
    assert any("carries no provenance record" in n for n in record["notes"])


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("name, content, message", [
    ("missing.onnx", None, "no such file or folder"),
    ("notes.txt", b"hello", "unknown artifact type '.txt'"),
    ("bad.onnx", b"\x00\x01garbage", "not"),
    ("plain.json", b'{"a": 1}', "without a toolkit provenance record"),
    ("list.json", b"[1, 2]", "JSON list, not a toolkit record"),
    ("broken.json", b"{", "not a JSON file"),
    ("bad.pt", b"not a zip", "not a readable PyTorch checkpoint"),
    ("empty-folder", "dir", "a folder holding none of table.json"),
])
def test_missing_or_unknown_is_one_line(tmp_path: Path, name: str, content: object, message: str) -> None:
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)  # type: ignore[arg-type]
    with pytest.raises(ToolkitError, match=message) as caught:
        inspect_artifact(path)
    assert "\n" not in str(caught.value) and name in str(caught.value)


# ------------------------------------------------------------------------------------------------ command line
def _inspect_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_inspect_parser(parser.add_subparsers(dest="command"))
    return run_inspect(parser.parse_args(["inspect", *argv]))


def test_cli_json_is_the_record(artifacts: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert _inspect_cli(str(artifacts["onnx"]), "--json") == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and json.loads(out) == inspect_artifact(artifacts["onnx"])
    assert _inspect_cli(str(artifacts["table"])) == 0
    assert "latency-table" in capsys.readouterr().out


def test_cli_refuses_a_bad_resolution(artifacts: dict[str, Path]) -> None:
    with pytest.raises(ToolkitError, match="resolution '12' is not of the form HxW"):
        _inspect_cli(str(artifacts["onnx"]), "--resolution", "12")


def test_no_torch_import_except_for_checkpoints(artifacts: dict[str, Path]) -> None:
    paths = [str(artifacts[k]) for k in ("onnx", "engine", "table", "report", "run", "search")]
    code = ("import sys, json; from bench.inspect_cli import add_inspect_parser, run_inspect\n"
            "from bench.artifacts import inspect_artifact, format_inspection\n"
            f"for p in {paths!r}: format_inspection(inspect_artifact(p))\n"
            "print(json.dumps(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_saved_outputs_show_their_record_cases_and_arrays(tmp_path):
    import numpy as np

    from bench.artifacts import inspect_artifact
    from export.runners import OrtRunner
    from export.saved_outputs import save_outputs
    from tests_helpers import one_conv_onnx

    graph = one_conv_onnx(tmp_path / "conv.onnx")
    x = np.ones((1, 3, 8, 8), np.float32)
    with OrtRunner(graph, "cpu") as runner:
        save_outputs(runner, [{"x": x}, {"x": 2 * x}], tmp_path / "ref.npz", artifact=graph)
    record = inspect_artifact(tmp_path / "ref.npz")
    assert record["kind"] == "saved-outputs" and len(record["details"]["cases"]) == 2
    assert record["inputs"] == [{"name": "x", "shape": [1, 3, 8, 8], "dtype": "float32"}]
    assert record["outputs"] == [{"name": "y", "shape": [1, 4, 8, 8], "dtype": "float32"}]
    assert record["provenance"]["backend"] == "ort-cpu"
