"""ONNX Runtime install checks (export/ortcheck.py) and the packaging that keeps one ONNX Runtime build."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from export.ortcheck import installed_ort_distributions, ort_install_problem

REPO = Path(__file__).resolve().parents[2]


def _dist_info(site: Path, name: str, version: str) -> None:
    """A minimal installed-distribution record, as pip writes it (`<name>-<version>.dist-info/METADATA`)."""
    folder = site / f"{name.replace('-', '_')}-{version}.dist-info"
    folder.mkdir(parents=True)
    (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_cpu_and_gpu_builds_side_by_side_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _dist_info(tmp_path, "onnxruntime", "1.17.3")
    _dist_info(tmp_path, "onnxruntime-gpu", "1.18.1")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = installed_ort_distributions()
    assert found["onnxruntime-gpu"] == "1.18.1" and "onnxruntime" in found
    problem = ort_install_problem()
    assert problem is not None and "\n" not in problem
    assert "onnxruntime-gpu 1.18.1" in problem
    assert problem.endswith("pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu")


def test_one_build_is_fine() -> None:
    assert ort_install_problem({"onnxruntime": "1.17.3"}) is None
    assert ort_install_problem({}) is None
    assert ort_install_problem({"onnxruntime-gpu": "1.18.1"}) is None
    two_others = ort_install_problem({"onnxruntime": "1.17.3", "onnxruntime-openvino": "1.17.0"})
    assert two_others is not None and two_others.endswith("pip install onnxruntime")


def test_this_environment_has_at_most_one_build() -> None:
    assert ort_install_problem() is None, ort_install_problem()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is in the standard library from Python 3.11")
def test_extras_install_exactly_one_onnxruntime_build() -> None:
    import re
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    name = lambda requirement: re.split(r"[<>=!~; \[]", requirement, maxsplit=1)[0].lower()  # noqa: E731
    ort = {"onnxruntime", "onnxruntime-gpu"}
    assert not ort & {name(r) for r in project["dependencies"]}  # the core leaves the choice to an extra
    extras = {extra: {name(r) for r in reqs} for extra, reqs in project["optional-dependencies"].items()}
    assert extras["cpu"] & ort == {"onnxruntime"} and extras["gpu"] & ort == {"onnxruntime-gpu"}
    assert all(len(reqs & ort) <= 1 for reqs in extras.values())
    assert project["license"] == "MIT"  # an SPDX string (PEP 639), not the deprecated table
