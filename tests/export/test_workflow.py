"""Export and verification as library calls: verified-or-nothing, the real pair as an option, any two graphs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from export.onnx_export import ExportSpec
from export.verify import GraphReport, VerificationError, verification_pairs
from export.workflow import export_verified_onnx, verify_artifacts
from flownas.errors import ToolkitError
from flownas.models import RAFT
from tests_helpers import WEIGHT, conv_by_hand, one_conv_onnx


@pytest.fixture(scope="module")
def raft_small() -> RAFT:
    torch.manual_seed(0)
    return RAFT(small=True).eval()


@pytest.fixture(scope="module")
def verified(raft_small: RAFT, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[str]]:
    """RAFT small exported and verified at 128x128, 2 iterations (once per module), and the lines it logged."""
    lines: list[str] = []
    result = export_verified_onnx(raft_small, tmp_path_factory.mktemp("verified") / "m.onnx", ExportSpec(128, 128, 2),
                                  log=lines.append)
    return result, lines


def test_verified_export_returns_its_record_and_writes_it_beside(verified: tuple[Any, list[str]]) -> None:
    result, lines = verified
    assert result.path.is_file() and result.reports["128x128"].ok
    assert [p.name for p in result.reports["128x128"].pairs] == ["synthetic seed 1000", "synthetic seed 1001"]
    record = json.loads(result.path.with_suffix(".json").read_text())
    assert record["kind"] == "onnx" and record["arch_id"] == "raft-small" and record["resolution"] == [128, 128]
    assert record["iters"] == 2 and record["precision"] == "fp32" and record["verification_note"].startswith("synthetic")
    assert record["verification"]["128x128"]["max_epe"] < 1e-3 and any("verifying" in line for line in lines)


def test_real_pair_is_an_option_and_a_missing_one_fails_first(raft_small: RAFT, tmp_path: Path,
                                                               rubberwhale: Path) -> None:
    with pytest.raises(VerificationError, match="frame10.png and frame11.png not found"):
        export_verified_onnx(raft_small, tmp_path / "x.onnx", ExportSpec(128, 128, 1), real_pair=tmp_path / "none")
    assert not list(tmp_path.iterdir())  # refused before exporting: nothing written, no temp files
    result = export_verified_onnx(raft_small, tmp_path / "m.onnx", ExportSpec(128, 128, 1), real_pair=rubberwhale)
    assert result.reports["128x128"].pairs[0].name == "RubberWhale (resized)"
    assert result.record["verification"]["128x128"]["real_pair"] == str(rubberwhale)


def test_library_code_does_not_reach_outside_the_repository() -> None:
    names = [name for name, _, _ in verification_pairs(128, 128)]
    assert names == ["synthetic seed 1000", "synthetic seed 1001"]


@pytest.mark.slow  # the command line's twin (tests/export/test_export.py) runs in the fast set
def test_failed_verification_leaves_nothing(raft_small: RAFT, tmp_path: Path) -> None:
    with pytest.raises(VerificationError, match="no file written"):
        export_verified_onnx(raft_small, tmp_path / "m.onnx", ExportSpec(128, 128, 1), tolerance_epe=0.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_verify_any_two_graphs_output_by_output(tmp_path: Path) -> None:
    a = one_conv_onnx(tmp_path / "a.onnx")
    b = one_conv_onnx(tmp_path / "b.onnx")
    report = verify_artifacts(a, b)
    assert isinstance(report, GraphReport) and report.ok and report.outputs[0].max_abs_diff == 0.0
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(b))
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(WEIGHT * 1.01, "w"))  # a 1% different kernel
    onnx.save(model, str(b))
    report = verify_artifacts(a, b)
    from export.inputs import generate_inputs, onnx_io_specs, resolve_shapes

    specs, _ = onnx_io_specs(a)
    x = generate_inputs(specs, resolve_shapes(specs))["x"]  # the seeded inputs verify_artifacts generated
    assert not report.ok and report.outputs[0].max_abs_diff == pytest.approx(0.01 * np.abs(conv_by_hand(x)).max(),
                                                                              rel=1e-3)


def test_verify_at_a_resolution_the_static_graph_cannot_take(verified: tuple[Any, list[str]]) -> None:
    path = verified[0].path
    with pytest.raises(ToolkitError) as info:
        verify_artifacts(path, path, resolution="256x256")
    assert "axis 2 is fixed at 128" in str(info.value) and "\n" not in str(info.value)


def test_verify_refuses_unknown_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(VerificationError, match="unknown artifact type '.txt'"):
        verify_artifacts(tmp_path / "a.txt", tmp_path / "a.txt")
    with pytest.raises(VerificationError, match="nope.onnx: file not found"):
        verify_artifacts(tmp_path / "nope.onnx", tmp_path / "a.txt")
