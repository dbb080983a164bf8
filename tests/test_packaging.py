"""Packaging (issue 13 item 7): pyproject builds a wheel and an editable install with no setuptools deprecation
warning, the wheel ships every module and data file the toolkit reads at run time (and no tests), and torch is
pinned to the range the ONNX export is tested with.

The builds call setuptools' PEP 517 hooks (what `pip install .` and `pip install -e .` call) in a subprocess, on a
copy of the repository: offline, no build folder left in the checkout, under a second each.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("flownas", "export", "bench", "latency_tables")
PY_MODULES = ("cli.py", "pipeline.py", "nas.py", "nas_pipeline.py")
# One hook per process, as pip runs them (setuptools' hooks are not meant to share one): every setuptools
# deprecation warning is an error, the wheel's file name is the last line printed.
BUILD = """
import sys, warnings
from setuptools.warnings import SetuptoolsDeprecationWarning
warnings.simplefilter("error", SetuptoolsDeprecationWarning)
from setuptools import build_meta
print(getattr(build_meta, sys.argv[1])(sys.argv[2]))
"""
SKIP_COPY = shutil.ignore_patterns(".venv", ".git", "outputs", "runs", "build", "dist", "*.egg-info", "__pycache__",
                                   ".pytest_cache", "tests")


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """Wheel and editable wheel built from a copy of the checkout, with the build's console output."""
    root = tmp_path_factory.mktemp("packaging")
    source = root / "src"
    shutil.copytree(REPO, source, ignore=SKIP_COPY)
    built = {"output": ""}
    for kind, hook in (("wheel", "build_wheel"), ("editable", "build_editable")):
        (root / kind).mkdir()
        done = subprocess.run([sys.executable, "-c", BUILD, hook, str(root / kind)], cwd=source, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        built[kind] = root / kind / done.stdout.strip().splitlines()[-1]
        built["output"] += done.stdout + done.stderr
    return built


def test_builds_print_no_deprecation_warning(built):
    lines = [line for line in built["output"].lower().splitlines() if "deprecat" in line]
    assert lines == []


def _wheel_files(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as wheel:
        return set(wheel.namelist())


def test_wheel_ships_every_module_and_runtime_data_file_and_no_tests(built):
    files = _wheel_files(built["wheel"])
    expected = {str(path.relative_to(REPO)) for package in PACKAGES for path in (REPO / package).rglob("*.py")
                if "__pycache__" not in path.parts}
    expected |= {str(path.relative_to(REPO)) for path in (REPO / "flownas" / "configs" / "train").glob("*.yaml")}
    expected |= {str(path.relative_to(REPO)) for path in (REPO / "latency_tables" / "tables").glob("*/table.*")}
    assert len(expected) > 100 and {"flownas/configs/train/synthetic.yaml",
                                     "latency_tables/tables/ort-cpu-384x512/table.csv"} <= expected
    assert sorted(expected - files) == []
    assert set(PY_MODULES) <= files
    assert not any(name.startswith(("tests/", "tools/", ".venv/", "outputs/")) for name in files)


def _dist_info(path: Path, name: str) -> str:
    with zipfile.ZipFile(path) as wheel:
        (member,) = [m for m in wheel.namelist() if m.endswith(f".dist-info/{name}")]
        return wheel.read(member).decode()


def test_metadata_has_an_spdx_license_and_the_flownas_script(built):
    metadata = _dist_info(built["wheel"], "METADATA")
    assert "License-Expression: MIT" in metadata.splitlines()
    assert "Classifier: License ::" not in metadata  # PEP 639: the expression replaces license classifiers
    assert "flownas = cli:main" in _dist_info(built["wheel"], "entry_points.txt")
    assert "flownas = cli:main" in _dist_info(built["editable"], "entry_points.txt")


def test_torch_is_pinned_to_a_range_that_holds_the_tested_version():
    from packaging.requirements import Requirement
    from packaging.version import Version

    import torch

    requirements = {r.name: r for r in map(Requirement, _pyproject()["project"]["dependencies"])}
    torch_range = requirements["torch"].specifier
    installed = Version(torch.__version__.split("+")[0])
    assert installed in torch_range  # the version the export tests run with here
    assert Version("2.12.0") not in torch_range and Version("2.15.0") not in torch_range  # bounded both ways
    assert Version("4.66") in requirements["tqdm"].specifier and Version("4.65") not in requirements["tqdm"].specifier


def test_no_deprecated_setuptools_keys_and_explicit_package_discovery():
    config = _pyproject()
    assert isinstance(config["project"]["license"], str)  # an SPDX expression, not the deprecated {text = ...}
    setuptools = config["tool"]["setuptools"]
    assert set(setuptools["packages"]["find"]["include"]) == {f"{p}*" for p in PACKAGES}
    assert {f"{m}.py" for m in setuptools["py-modules"]} == set(PY_MODULES)
    assert not {"license-files", "namespace-packages", "tests-require"} & set(setuptools)  # deprecated keys
