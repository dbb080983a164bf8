"""ONNX export: parity with PyTorch on ONNX Runtime, dynamic shapes, opset guard, metadata, CLI errors."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import cli
from export.onnx_export import ExportError, ExportSpec, export_onnx, read_metadata
from flownas.arch import SearchSpace
from flownas.models import RAFT, FlowNASNet
from flownas.weights import save_checkpoint
from tests_helpers import one_conv_onnx


def _pair(height, width, seed=0):
    gen = torch.Generator().manual_seed(seed)
    image1 = torch.rand(1, 3, height, width, generator=gen) * 255
    return image1, torch.roll(image1, shifts=(2, -3), dims=(2, 3))


def _run_both(model, path, height, width, iters):
    image1, image2 = _pair(height, width)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image1": image1.numpy(), "image2": image2.numpy()})[0]
    with torch.no_grad():
        expected = model(image1, image2, iters=iters).numpy()
    return got, expected


def _epe(a, b):
    return float(np.sqrt(((a - b) ** 2).sum(axis=1)).mean())


@pytest.fixture(scope="module")
def raft_small():
    torch.manual_seed(0)
    return RAFT(small=True).eval()


def test_raft_onnx_matches_pytorch(raft_small, tmp_path):
    path = tmp_path / "raft.onnx"
    record = export_onnx(raft_small, path, ExportSpec(128, 160, iters=2))
    got, expected = _run_both(raft_small, path, 128, 160, 2)
    assert got.shape == expected.shape == (1, 2, 128, 160)
    assert _epe(got, expected) < 1e-4 and np.abs(got - expected).max() < 1e-3
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    assert record["file_size_bytes"] == path.stat().st_size
    meta = read_metadata(path)
    assert (meta["export_height"], meta["export_width"], meta["export_iters"]) == (128, 160, 2)


@pytest.mark.slow
def test_dynamo_export_matches_pytorch_and_the_torchscript_export(raft_small, tmp_path):
    pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript (pip install '.[dynamo]')")
    path = tmp_path / "dynamo.onnx"
    export_onnx(raft_small, path, ExportSpec(128, 160, iters=2, opset=18, exporter="dynamo"))
    got, expected = _run_both(raft_small, path, 128, 160, 2)
    assert _epe(got, expected) < 1e-4 and np.abs(got - expected).max() < 1e-3
    assert read_metadata(path)["export_exporter"] == "dynamo"
    assert onnx.load(str(path)).opset_import[0].version >= 18


@pytest.mark.slow  # a full-size FlowNAS subnet per seed
@pytest.mark.parametrize("seed", [0, 1])
def test_random_subnet_onnx_matches_pytorch(tmp_path, seed):
    torch.manual_seed(seed)
    arch = SearchSpace.flownas().sample(np.random.default_rng(seed))
    model = FlowNASNet(arch).eval()
    path = tmp_path / "subnet.onnx"
    export_onnx(model, path, ExportSpec(128, 128, iters=2))
    got, expected = _run_both(model, path, 128, 128, 2)
    assert _epe(got, expected) < 1e-4
    assert read_metadata(path)["arch_id"] == arch.id


@pytest.mark.slow
def test_dynamic_export_runs_at_two_sizes(raft_small, tmp_path):
    path = tmp_path / "dynamic.onnx"
    export_onnx(raft_small, path, ExportSpec(128, 128, iters=2, dynamic=True))
    for height, width in [(128, 128), (192, 256)]:
        got, expected = _run_both(raft_small, path, height, width, 2)
        assert got.shape == (1, 2, height, width)
        assert _epe(got, expected) < 1e-4


@pytest.mark.slow
def test_metadata_records_how_the_file_was_made(raft_small, tmp_path):
    path = tmp_path / "m.onnx"
    export_onnx(raft_small, path, ExportSpec(128, 128, iters=3, opset=16))
    meta = read_metadata(path)
    assert meta["arch_id"] == "raft-small"
    assert (meta["export_height"], meta["export_width"], meta["export_iters"], meta["export_opset"]) == (128, 128, 3, 16)
    assert meta["torch_version"] == str(torch.__version__) and "toolkit_version" in meta
    assert onnx.load(str(path)).opset_import[0].version == 16


@pytest.mark.parametrize("spec, message", [
    (ExportSpec(128, 128, opset=20), "opset 20 refused for TensorRT"),
    (ExportSpec(128, 128, opset=15), "opset 15 has no GridSample"),
    (ExportSpec(130, 128), "must be multiples of 8"),
    (ExportSpec(64, 128), "at least 128"),
    (ExportSpec(128, 128, iters=0), "at least 1"),
    (ExportSpec(128, 128, exporter="dynamo"), "the dynamo exporter writes opset >= 18, not 17: pass --opset 18"),
    (ExportSpec(128, 128, exporter="dynamo", opset=18, dynamic=True), "--dynamic with the dynamo exporter"),
    (ExportSpec(128, 128, exporter="jit"), "exporter 'jit' is not one of torchscript, dynamo"),
])
def test_invalid_specs_are_refused(spec, message):
    with pytest.raises(ExportError, match=message):
        spec.validate()


@pytest.mark.slow  # export, verification, then `verify` loads both artifacts again
def test_cli_export_writes_verified_file_and_record(raft_small, tmp_path, capsys):
    weights = save_checkpoint(tmp_path / "w.pt", raft_small)
    out = tmp_path / "model.onnx"
    code = cli.main(["export", "onnx", "--weights", str(weights), "--resolution", "128x128", "--iters", "2",
                     "--out", str(out)])
    assert code == 0 and out.is_file()
    record = json.loads(out.with_suffix(".json").read_text())
    check = record["verification"]["128x128"]
    assert check["ok"] and check["max_epe"] < 1e-4 and len(check["pairs"]) >= 2
    assert cli.main(["verify", str(weights), str(out)]) == 0


def test_cli_export_leaves_no_file_when_verification_fails(raft_small, tmp_path, capsys):
    weights = save_checkpoint(tmp_path / "w.pt", raft_small)
    out = tmp_path / "model.onnx"
    code = cli.main(["export", "onnx", "--weights", str(weights), "--resolution", "128x128", "--iters", "1",
                     "--out", str(out), "--tolerance", "0"])
    assert code == 2 and "differs from PyTorch" in capsys.readouterr().err
    assert list(tmp_path.glob("model*")) == [] and not list(tmp_path.glob(".model*"))


@pytest.mark.parametrize("argv, message", [
    (["--weights", "missing.pt"], "missing.pt: checkpoint file not found"),
    (["--weights", "W", "--resolution", "100x128"], "must be multiples of 8"),
    (["--weights", "W", "--opset", "21"], "opset 21 refused"),
    (["--supernet", "W"], "--supernet needs --arch"),
])
def test_cli_export_bad_input_is_one_line(raft_small, tmp_path, capsys, argv, message):
    weights = str(save_checkpoint(tmp_path / "w.pt", raft_small))
    argv = [weights if a == "W" else a for a in argv]
    code = cli.main(["export", "onnx", *argv, "--out", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_cli_export_unknown_arch(published_keys, tmp_path, capsys):
    from conftest import random_published_state

    supernet = tmp_path / "s.pth"
    torch.save(random_published_state(published_keys, "flownas"), supernet)
    code = cli.main(["export", "onnx", "--supernet", str(supernet), "--arch", "nope", "--out", str(tmp_path / "x.onnx")])
    assert code == 2 and "unknown architecture 'nope'" in capsys.readouterr().err


def test_cli_trt_without_tensorrt_is_one_clear_error(tmp_path, capsys):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here: the missing-TensorRT path cannot be exercised")
    except ImportError:
        pass
    path = one_conv_onnx(tmp_path / "m.onnx")
    code = cli.main(["export", "trt", str(path), "--out", str(tmp_path / "m.engine")])
    err = capsys.readouterr().err
    assert code == 2 and "TensorRT is not installed" in err and err.count("\n") == 1
    assert not (tmp_path / "m.engine").exists()


def test_cli_lint_reports_and_sets_exit_code(tmp_path, capsys):
    clean = one_conv_onnx(tmp_path / "m.onnx")
    assert cli.main(["export", "lint", str(clean)]) == 0
    assert "0 error(s)" in capsys.readouterr().out
    model = onnx.load(str(clean))
    model.graph.node.append(onnx.helper.make_node("Unique", ["y"], ["u"]))  # an operator TensorRT lacks
    model.graph.output.append(onnx.helper.make_tensor_value_info("u", onnx.TensorProto.FLOAT, None))
    onnx.save(model, str(tmp_path / "bad.onnx"))
    assert cli.main(["export", "lint", str(tmp_path / "bad.onnx")]) == 1
    assert "unsupported-op" in capsys.readouterr().out
