"""`bench` command (bench/commands.py) through its own argparse parser, and the suite's quick mode.

RAFT small at 128x128 with 1 iteration and two measured runs: these check wiring and errors, not speed.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import pytest
import torch

from bench import suite
from bench.commands import UNTRAINED_NOTE, add_bench_parser, run_bench
from bench.runners import export_temp_onnx
from flownas.errors import ToolkitError
from flownas.models import RAFT

FAST = ["--runs", "2", "--warmup-runs", "1", "--warmup-s", "0"]


def _tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return True


def _bench(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="flownas")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    return run_bench(parser.parse_args(["bench", *argv]))


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return export_temp_onnx(RAFT(small=True).eval(), (128, 128), 1, tmp_path_factory.mktemp("onnx"), "raft-small")


def test_untrained_model_on_two_backends(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench"
    assert _bench("--model", "raft-small", "--backend", "torch-cpu,ort-cpu", "--resolution", "128x128",
                  "--iters", "1", "--threads", "1", "--out", str(out), *FAST) == 0
    assert {p.name for p in out.iterdir()} == {"results.csv", "report.md", "latency.png", "results.json"}
    record = json.loads((out / "results.json").read_text())
    assert [r["backend"] for r in record["results"]] == ["torch-cpu", "ort-cpu"]
    assert {r["runner"]["threads"] for r in record["results"]} == {1}
    from flownas.complexity import count_macs
    from flownas.weights import untrained_model

    macs = count_macs(untrained_model("raft-small"), 128, 128, 1)["total"]  # counted independently here
    assert record["results"][0]["meta"] == {"resolution": "128x128", "iters": 1, "batch": 1, "macs": macs}
    # A runner may reuse heap the one before it freed, so its RSS rise can be 0; the sampler itself is tested
    # in test_cost.py. Here: every runner has its own finite, non-negative figure.
    assert all(r["memory"]["host_peak_increase_mb"] >= 0 for r in record["results"])
    assert UNTRAINED_NOTE in record["notes"]
    printed = capsys.readouterr().out
    assert "speed-up vs torch-cpu" in printed and str(out / "report.md") in printed


def test_onnx_file_gives_resolution_and_iterations(onnx_file: Path, tmp_path: Path) -> None:
    assert _bench("--onnx", str(onnx_file), "--backend", "ort-cpu", "--precision", "fp32", "--out",
                  str(tmp_path), *FAST) == 0
    (result,) = json.loads((tmp_path / "results.json").read_text())["results"]
    from bench.cost import graph_macs

    assert result["meta"] == {"resolution": "128x128", "iters": 1, "batch": 1, "macs": graph_macs(onnx_file)}
    assert result["model"] == "raft-small"


def test_onnx_file_with_a_matching_model_for_torch(onnx_file: Path, tmp_path: Path) -> None:
    assert _bench("--onnx", str(onnx_file), "--model", "raft-small", "--backend", "ort-cpu,torch-cpu",
                  "--baseline", "ort-cpu", "--out", str(tmp_path), *FAST) == 0
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["baseline"] == "ort-cpu" and record["ratios"][1]["max_abs_diff_vs_baseline"] < 1e-4


@pytest.mark.slow  # a second export; the untrained-model test covers the path
def test_checkpoint_on_torch_and_exported_onnx(tmp_path: Path) -> None:
    from flownas.weights import save_checkpoint

    torch.manual_seed(1)
    weights = save_checkpoint(tmp_path / "small.pt", RAFT(small=True).eval())
    assert _bench("--weights", str(weights), "--backend", "torch-cpu,ort-cpu", "--resolution", "128x128", "--iters",
                  "1", "--out", str(tmp_path / "out"), *FAST) == 0
    record = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {r["model"] for r in record["results"]} == {"small"} and UNTRAINED_NOTE not in record["notes"]
    assert record["ratios"][1]["max_abs_diff_vs_baseline"] < 1e-4


@pytest.mark.parametrize("argv, message", [
    (["--onnx", "missing.onnx", "--backend", "ort-cpu"], "missing.onnx: file not found"),
    (["--model", "raft-small", "--backend", "torch-cpu,jax"], "unknown backend 'jax': choose from torch-cpu"),
    (["--model", "raft-small", "--backend", "trt"], "give --engine"),
    (["--backend", "torch-cpu"], "nothing to benchmark"),
    (["--model", "raft-small", "--arch", "raft-s", "--backend", "torch-cpu"], "--arch .* needs --weights"),
    (["--model", "raft-small", "--backend", "torch-cpu", "--cuda-graph"], "torch-cuda and trt only"),
    (["--model", "raft-small", "--backend", "torch-cpu", "--baseline", "ort-cpu"], "not among the backends"),
    (["--model", "raft-small", "--backend", "torch-cpu", "--runs", "0"], "at least 1"),
])
def test_bad_input_gives_clear_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ToolkitError, match=message):
        _bench(*argv)


@pytest.mark.parametrize("argv, message", [
    (["--iters", "3"], "--iters 3 differs from the 1 iterations unrolled"),
    (["--resolution", "256x256"], "differs from 128x128, the fixed input size"),
    (["--model", "raft", "--backend", "ort-cpu,torch-cpu"], "holds raft-small"),
    (["--backend", "ort-cpu,torch-cpu"], "torch-cpu runs PyTorch eager: give --weights or --model"),
])
def test_onnx_file_must_fit_the_request(onnx_file: Path, argv: list[str], message: str) -> None:
    backend = [] if "--backend" in argv else ["--backend", "ort-cpu"]
    with pytest.raises(ToolkitError, match=message):
        _bench("--onnx", str(onnx_file), *backend, *argv)


def test_not_an_onnx_file(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"\xff\x00 not protobuf")
    with pytest.raises(ToolkitError, match="not a readable ONNX file"):
        _bench("--onnx", str(bogus), "--backend", "ort-cpu")


@pytest.mark.skipif(_tensorrt_importable(), reason="tensorrt is importable here")
def test_engine_without_tensorrt(tmp_path: Path) -> None:
    engine = tmp_path / "raft.engine"
    engine.write_bytes(b"\x00" * 16)
    with pytest.raises(ToolkitError) as info:
        _bench("--engine", str(engine), "--backend", "trt")
    assert "TensorRT" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.slow  # the suite itself: tests/bench/test_suite.py
def test_suite_quick_mode(tmp_path: Path) -> None:
    argv = ["--models", "raft-small", "--resolution", "128x128", "--iters", "1", "--runs", "2", "--warmup-s", "0",
            "--out", str(tmp_path)]
    assert suite.main(argv) == 0
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert len(rows) == 3 and "raft-small,torch-cpu" in rows[1] and "raft-small,ort-cpu" in rows[2]
    assert suite.main(["--models", "raft-xl", "--out", str(tmp_path)]) == 2


def test_json_output_is_the_only_thing_on_stdout_and_batch_sets_throughput(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    import cli

    assert cli.main(["bench", "--model", "tiny-flownas", "--backend", "ort-cpu", "--resolution", "128x128",
                     "--iters", "1", "--batch", "2", "--threads", "1", "--json", "--out", str(tmp_path / "b"),
                     *FAST]) == 0
    captured = capsys.readouterr()
    record = json.loads(captured.out)  # nothing but the document
    assert "measuring" in captured.err
    (result,) = record["results"]
    assert result["meta"]["batch"] == 2 and record["files"]["markdown"].endswith("report.md")
    with (tmp_path / "b" / "results.csv").open() as handle:
        row = next(csv.DictReader(handle))
    assert float(row["pairs_per_s"]) == pytest.approx(2 * 1000 / result["stats"]["median_ms"])
    assert int(row["batch"]) == 2 and float(row["gmacs"]) > 0 and float(row["peak_host_mb"]) >= 0
