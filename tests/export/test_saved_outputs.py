"""`verify A --save-outputs F` here, `verify A --load-outputs F` on the target: cross-backend, damage, safety."""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import cli
from export.onnx_export import ExportSpec, export_onnx
from export.runners import OrtRunner
from export.saved_outputs import (RECORD_KEY, SavedOutputsError, compare_with_saved, load_saved_outputs,
                                  save_outputs)
from flownas.data.synthetic import make_pair
from flownas.models import RAFT
from flownas.weights import save_checkpoint
from tests_helpers import conv_by_hand, one_conv_onnx


@pytest.fixture(scope="module")
def raft_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """RAFT small (seeded) as a checkpoint and as ONNX at 128x128, 1 iteration (exported once per module)."""
    folder = tmp_path_factory.mktemp("raft")
    torch.manual_seed(0)
    model = RAFT(small=True).eval()
    export_onnx(model, folder / "m.onnx", ExportSpec(128, 128, iters=1))
    return save_checkpoint(folder / "m.pt", model), folder / "m.onnx"


def _record(path: Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as data:
        return json.loads(str(data[RECORD_KEY][()]))


def _rewrite(path: Path, edit: Callable[[dict[str, np.ndarray]], None]) -> None:
    """Edit a saved file's arrays in place, as a user with numpy would (np.savez keeps the .npz layout)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    edit(arrays)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def _output_key(path: Path, case: int, output: str) -> str:
    return _record(path)["cases"][case]["outputs"][output]["key"]


def _one_line_error(capsys: pytest.CaptureFixture[str], code: int) -> str:
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


# --------------------------------------------------------------------------------------------- round trips
def test_save_on_ort_cpu_then_load_on_torch_cpu_passes(raft_files: tuple[Path, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint, onnx_path = raft_files
    saved = tmp_path / "ref.npz"
    assert cli.main(["verify", str(onnx_path), "--save-outputs", str(saved)]) == 0
    record = _record(saved)
    assert record["backend"] == "ort-cpu" and record["arch_id"] == "raft-small" and record["iters"] == 1
    assert record["resolution"] == [128, 128] and record["precision"] == "fp32" and record["created"]
    assert record["artifact"]["sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert "onnxruntime" in record["runner"]["versions"] and record["device"]
    # the stored inputs are the verification pairs, and the stored outputs what ONNX Runtime gives on them
    data = load_saved_outputs(saved)
    assert [c.name for c in data.cases] == ["synthetic seed 1000", "synthetic seed 1001"]
    first = data.cases[0]
    np.testing.assert_array_equal(first.inputs["image1"][0].transpose(1, 2, 0),
                                  make_pair(128, 128, seed=1000)["image1"].astype(np.float32))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(first.outputs["flow"], session.run(["flow"], first.inputs)[0])

    capsys.readouterr()
    assert cli.main(["verify", str(checkpoint), "--load-outputs", str(saved)]) == 0  # torch-cpu, other machine
    out = capsys.readouterr().out
    assert "ort-cpu" in out and "torch-cpu" in out and "m.onnx sha256" in out and "m.pt sha256" in out
    assert out.count(" ok") == 2 and "OK: 2 output(s)" in out


def test_python_api_saves_and_compares_any_graph(tmp_path: Path) -> None:
    path = one_conv_onnx(tmp_path / "conv.onnx")
    x = np.random.default_rng(7).standard_normal((1, 3, 8, 8)).astype(np.float32)
    record = save_outputs(OrtRunner(path), {"x": x}, tmp_path / "ref.npz")
    assert record["backend"] == "ort-cpu" and record["iters"] is None and record["resolution"] is None
    data = load_saved_outputs(tmp_path / "ref.npz")
    np.testing.assert_array_equal(data.cases[0].inputs["x"], x)
    np.testing.assert_allclose(data.cases[0].outputs["y"], conv_by_hand(x), atol=1e-5)  # a real run, by hand
    report = compare_with_saved(OrtRunner(path), tmp_path / "ref.npz")
    assert report.ok and report.checks[0].output == "y" and report.checks[0].max_abs_diff == 0.0
    assert report.saved["artifact"]["sha256"] == report.here["artifact"]["sha256"]
    assert "the same artifact file (sha256 matches)" in report.notes


# --------------------------------------------------------------------------------------------- failures
def test_perturbed_output_fails_with_non_zero_exit_and_names_it(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = one_conv_onnx(tmp_path / "conv.onnx")
    saved = tmp_path / "ref.npz"
    assert cli.main(["verify", str(path), "--save-outputs", str(saved)]) == 0
    key = _output_key(saved, 0, "y")
    original = load_saved_outputs(saved).cases[0].outputs["y"]

    def bump(arrays: dict[str, np.ndarray]) -> None:
        arrays[key] = arrays[key].copy()
        arrays[key][0, 2, 3, 4] += 0.5

    _rewrite(saved, bump)
    capsys.readouterr()
    assert cli.main(["verify", str(path), "--load-outputs", str(saved)]) == 1
    out = capsys.readouterr().out
    assert "FAILED: output(s) 'y'" in out
    report = compare_with_saved(OrtRunner(path), saved)
    expected = abs(float(np.float32(original[0, 2, 3, 4]) + np.float32(0.5)) - float(original[0, 2, 3, 4]))
    assert not report.ok and [c.output for c in report.failed] == ["y"]
    assert report.failed[0].max_abs_diff == pytest.approx(expected, rel=1e-9)


def test_perturbed_flow_fails_by_its_epe(raft_files: tuple[Path, Path], tmp_path: Path) -> None:
    _, onnx_path = raft_files
    saved = tmp_path / "ref.npz"
    save_outputs(OrtRunner(onnx_path), [("pair", *[make_pair(128, 128, seed=5)[k] for k in ("image1", "image2")])],
                 saved)
    key = _output_key(saved, 0, "flow")

    def shift(arrays: dict[str, np.ndarray]) -> None:  # (0.3, 0.4) px everywhere: EPE 0.5 px, max |diff| 0.4
        arrays[key] = arrays[key] + np.array([0.3, 0.4], np.float32).reshape(1, 2, 1, 1)

    _rewrite(saved, shift)
    report = compare_with_saved(OrtRunner(onnx_path), saved)
    (check,) = report.checks
    assert not report.ok and check.output == "flow" and check.max_rel_diff is None
    assert check.epe == pytest.approx(0.5, abs=1e-5) and check.max_abs_diff == pytest.approx(0.4, abs=1e-5)


def test_mismatched_shapes_and_names_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "ref.npz"
    assert cli.main(["verify", str(one_conv_onnx(tmp_path / "small.onnx", size=8)), "--save-outputs", str(saved)]) == 0
    capsys.readouterr()
    bigger = one_conv_onnx(tmp_path / "big.onnx", size=16)
    err = _one_line_error(capsys, cli.main(["verify", str(bigger), "--load-outputs", str(saved)]))
    assert "saved inputs x:1x3x8x8 float32 do not fit big.onnx" in err
    assert "input x:1x3x16x16 float32: axis 2 is fixed at 16 in the graph, got 8" in err

    model = onnx.load(str(bigger))  # the same graph with its input renamed x -> z
    model.graph.input[0].name = model.graph.node[0].input[0] = "z"
    onnx.save(model, str(tmp_path / "renamed.onnx"))
    err = _one_line_error(capsys, cli.main(["verify", str(tmp_path / "renamed.onnx"), "--load-outputs", str(saved)]))
    assert "saved inputs x:1x3x8x8 float32 do not fit renamed.onnx, which takes z:1x3x16x16 float32" in err
    assert "the file has no 'z'; renamed.onnx has no input 'x'" in err


# --------------------------------------------------------------------------------------------- file safety
def test_failed_write_leaves_no_file_and_keeps_an_old_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = one_conv_onnx(tmp_path / "conv.onnx")
    x = np.ones((1, 3, 8, 8), np.float32)
    real_write = np.lib.format.write_array
    calls: list[int] = []

    def write_then_fail(*args: Any, **kwargs: Any) -> None:  # the first entry is written, the second fails
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_write(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", write_then_fail)
    with pytest.raises(OSError, match="No space left"):
        save_outputs(OrtRunner(path), {"x": x}, tmp_path / "ref.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conv.onnx"]  # no file, no hidden temporary

    monkeypatch.setattr(np.lib.format, "write_array", real_write)
    save_outputs(OrtRunner(path), {"x": x}, tmp_path / "ref.npz")
    before = (tmp_path / "ref.npz").read_bytes()
    calls.clear()
    monkeypatch.setattr(np.lib.format, "write_array", write_then_fail)
    with pytest.raises(OSError):
        save_outputs(OrtRunner(path), {"x": 2 * x}, tmp_path / "ref.npz")
    assert (tmp_path / "ref.npz").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conv.onnx", "ref.npz"]


def test_saved_file_holds_no_pickled_objects(tmp_path: Path) -> None:
    path = one_conv_onnx(tmp_path / "conv.onnx")
    save_outputs(OrtRunner(path), {"x": np.ones((1, 3, 8, 8), np.float32)}, tmp_path / "ref.npz")
    with zipfile.ZipFile(tmp_path / "ref.npz") as archive:
        names = archive.namelist()
        for name in names:
            stream = io.BytesIO(archive.read(name))
            assert np.lib.format.read_magic(stream) == (1, 0)
            _, _, dtype = np.lib.format.read_array_header_1_0(stream)
            assert not dtype.hasobject and (dtype.kind in "fiub" or dtype.kind == "U"), (name, dtype)
    assert sorted(names) == ["__record__.npy", "c0.in0.npy", "c0.out0.npy"]
    with np.load(tmp_path / "ref.npz", allow_pickle=False) as data:  # every entry loads without pickle
        assert all(data[k] is not None for k in data.files)


class _Trap:
    """Unpickling this would create a folder: the marker shows whether anything from the file was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.mkdir, (str(self.marker),)


def test_a_pickled_entry_is_refused_and_not_executed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = one_conv_onnx(tmp_path / "conv.onnx")
    saved = tmp_path / "ref.npz"
    save_outputs(OrtRunner(path), {"x": np.ones((1, 3, 8, 8), np.float32)}, saved)
    key, marker = _output_key(saved, 0, "y"), tmp_path / "executed"
    with np.load(saved, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays[key] = np.array([_Trap(marker)], dtype=object)
    with open(saved, "wb") as handle:
        np.savez(handle, **arrays)  # numpy pickles object arrays when writing
    err = _one_line_error(capsys, cli.main(["verify", str(path), "--load-outputs", str(saved)]))
    assert f"entry {key} holds pickled Python objects; refused" in err and not marker.exists()


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flipped(path: Path) -> None:  # one byte of the output's data changed: its CRC-32 no longer matches
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{_output_key(path, 0, 'y')}.npy")
    offset = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200  # inside the array's data
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _foreign_npz(path: Path) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, a=np.zeros(3))


def _foreign_record(path: Path) -> None:
    _rewrite(path, lambda arrays: arrays.update({RECORD_KEY: np.array(json.dumps({"format": "other"}))}))


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.unlink(), "ref.npz: saved-outputs file not found"),
    (lambda p: p.write_text("hello"), "ref.npz: not a saved-outputs file (not a readable .npz archive"),
    (_truncated, "ref.npz: not a saved-outputs file (not a readable .npz archive"),
    (_flipped, "ref.npz: corrupt saved-outputs file (entry c0.out0: BadZipFile)"),
    (_foreign_npz, "ref.npz: not a saved-outputs file (a .npz without the __record__ entry"),
    (_foreign_record, "ref.npz: not a saved-outputs file (its record's format is 'other'"),
])
def test_missing_foreign_or_damaged_files_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              damage: Callable[[Path], None], message: str) -> None:
    path = one_conv_onnx(tmp_path / "conv.onnx")
    saved = tmp_path / "ref.npz"
    save_outputs(OrtRunner(path), {"x": np.ones((1, 3, 8, 8), np.float32)}, saved)
    damage(saved)
    err = _one_line_error(capsys, cli.main(["verify", str(path), "--load-outputs", str(saved)]))
    assert message in err
    with pytest.raises(SavedOutputsError):
        load_saved_outputs(saved)


@pytest.mark.parametrize("argv, message", [
    (["--save-outputs", "F", "--load-outputs", "F"], "--save-outputs and --load-outputs together"),
    (["A", "--save-outputs", "F"], "--save-outputs takes one artifact; got two"),
    ([], "verify needs two artifacts"),
    (["--load-outputs", "F", "--resolution", "128x128"], "--resolution cannot be used with it"),
    (["--save-outputs", "F", "--backend", "torch-cpu"], "--backend torch-cpu cannot run"),
    (["A", "--backend", "ort-cpu"], "--backend chooses how A runs with --save-outputs"),
    (["--save-outputs", "A"], "that is the artifact itself"),
])
def test_flags_that_make_no_sense_together_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       argv: list[str], message: str) -> None:
    path = one_conv_onnx(tmp_path / "conv.onnx")
    saved = tmp_path / "ref.npz"
    save_outputs(OrtRunner(path), {"x": np.ones((1, 3, 8, 8), np.float32)}, saved)
    before = saved.read_bytes()
    argv = [str(path) if a == "A" else str(saved) if a == "F" else a for a in argv]
    err = _one_line_error(capsys, cli.main(["verify", str(path), *argv]))
    assert message in err and saved.read_bytes() == before and path.is_file()
