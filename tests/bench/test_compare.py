"""`bench compare A B`: ratios of the medians of two saved reports and a Mann-Whitney U test per row, checked
by hand and against scipy; the `bench` command keeps measuring without the action."""
from __future__ import annotations

import copy
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from scipy.stats import mannwhitneyu

from bench.compare import CompareError, compare_reports, format_comparison
from bench.protocol import TimingConfig
from flownas.errors import ToolkitError
from tests_helpers import one_conv_onnx

REPO = Path(__file__).resolve().parents[2]
QUICK = TimingConfig(warmup_runs=1, warmup_s=0.0, runs=7)


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two real reports of the same one-conv graph on ort-cpu (two runs)."""
    from bench.session import BenchRequest, run_benchmark

    root = tmp_path_factory.mktemp("reports")
    graph = one_conv_onnx(root / "conv.onnx")
    for name in ("a", "b"):
        run_benchmark(BenchRequest(backends="ort-cpu", onnx=str(graph), timing=QUICK, out=root / name))
    return root / "a" / "results.json", root / "b" / "results.json"


def _with_samples(path: Path, samples: list[float], out: Path, **runner: str) -> Path:
    """A copy of the report at `path` whose one result holds `samples` (and other runner fields), measured on a
    quiet machine (the real run's load depends on whoever else shares this one)."""
    data = json.loads(path.read_text())
    for load in data["load"].values():
        load["loaded"] = False
    data["results"][0]["samples_ms"]["latency_ms"] = samples
    data["results"][0].update(runner)
    out.write_text(json.dumps(data))
    return out


def test_real_reports_ratio_and_p_value(reports: tuple[Path, Path]) -> None:
    a, b = reports
    samples_a = json.loads(a.read_text())["results"][0]["samples_ms"]["latency_ms"]
    samples_b = json.loads(b.read_text())["results"][0]["samples_ms"]["latency_ms"]
    result = compare_reports(a, b)
    (row,) = result["rows"]
    assert (row["model"], row["backend"], row["n_a"], row["n_b"]) == ("conv", "ort-cpu", 7, 7)
    assert row["median_a_ms"] == statistics.median(samples_a) and row["median_b_ms"] == statistics.median(samples_b)
    assert row["ratio"] == pytest.approx(statistics.median(samples_b) / statistics.median(samples_a), rel=1e-12)
    assert row["p_value"] == mannwhitneyu(samples_a, samples_b, alternative="two-sided").pvalue
    assert row["significant"] == (row["p_value"] < 0.01)
    assert result["only_in_a"] == [] and result["only_in_b"] == []
    assert "separate runs" in result["notes"][0]


def test_hand_worked_separated_samples_are_significant(reports: tuple[Path, Path], tmp_path: Path) -> None:
    a = _with_samples(reports[0], [float(v) for v in range(1, 8)], tmp_path / "a.json")           # 1..7
    b = _with_samples(reports[1], [float(v) for v in range(8, 15)], tmp_path / "b.json")          # 8..14
    (row,) = compare_reports(a, b)["rows"]
    assert row["median_a_ms"] == 4.0 and row["median_b_ms"] == 11.0
    assert row["ratio"] == pytest.approx(11 / 4) and row["change_pct"] == pytest.approx(175.0)
    # Every A below every B: U_A = 0; with 7 runs each (no ties) scipy's test is exact, and the two-sided p is
    # the two extreme orderings out of C(14, 7) = 3432.
    assert row["u_statistic"] == 0.0
    assert row["p_value"] == pytest.approx(2 / math.comb(14, 7), rel=1e-9)
    assert row["significant"] and row["note"] == ""


def test_larger_samples_use_scipys_p_value(reports: tuple[Path, Path], tmp_path: Path) -> None:
    xa, xb = [float(v) for v in range(1, 31)], [float(v) + 0.5 for v in range(10, 40)]
    a = _with_samples(reports[0], xa, tmp_path / "a.json")
    b = _with_samples(reports[1], xb, tmp_path / "b.json")
    (row,) = compare_reports(a, b)["rows"]
    assert row["p_value"] == mannwhitneyu(xa, xb, alternative="two-sided").pvalue < 0.01 and row["significant"]
    assert row["u_statistic"] == sum(x > y for x in xa for y in xb)
    assert row["ratio"] == pytest.approx(statistics.median(xb) / statistics.median(xa))


def test_hand_worked_interleaved_samples_are_not_significant(reports: tuple[Path, Path], tmp_path: Path) -> None:
    xa, xb = [1.0, 3.0, 5.0, 7.0, 9.0], [2.0, 4.0, 6.0, 8.0, 10.0]
    a = _with_samples(reports[0], xa, tmp_path / "a.json")
    b = _with_samples(reports[1], xb, tmp_path / "b.json")
    result = compare_reports(a, b)
    (row,) = result["rows"]
    # U_A counts the pairs in which A is larger: 0 + 1 + 2 + 3 + 4 = 10 of 25.
    assert row["u_statistic"] == 10.0 == sum(x > y for x in xa for y in xb)
    assert row["ratio"] == pytest.approx(6.0 / 5.0)
    assert row["p_value"] == mannwhitneyu(xa, xb, alternative="two-sided").pvalue > 0.01
    assert not row["significant"]
    text = format_comparison(result)
    assert "| conv | ort-cpu | fp32 | 5/5 | 5.000 | 6.000 | 1.200x (+20.0%) |" in text
    assert "not significant" in text


def test_too_few_runs_are_said(reports: tuple[Path, Path], tmp_path: Path) -> None:
    a = _with_samples(reports[0], [1.0, 1.1, 1.2], tmp_path / "a.json")
    b = _with_samples(reports[1], [5.0, 5.1, 5.2], tmp_path / "b.json")
    (row,) = compare_reports(a, b)["rows"]
    assert row["p_value"] == pytest.approx(2 / math.comb(6, 3)) and not row["significant"]  # 0.1: the floor
    assert "too few runs (3 and 3)" in row["note"]


def test_rows_in_one_report_only_and_folders(reports: tuple[Path, Path], tmp_path: Path) -> None:
    data = json.loads(reports[1].read_text())
    other = copy.deepcopy(data["results"][0])
    other.update(backend="torch-cpu", name="conv/torch-cpu")
    data["results"].append(other)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "results.json").write_text(json.dumps(data))
    result = compare_reports(reports[0].parent, tmp_path / "b")
    assert [r["backend"] for r in result["rows"]] == ["ort-cpu"]
    assert result["only_in_b"] == [{"model": "conv", "backend": "torch-cpu", "precision": "fp32"}]
    assert "only in B: conv torch-cpu fp32" in format_comparison(result)


def test_loaded_machine_and_other_versions_are_noted(reports: tuple[Path, Path], tmp_path: Path) -> None:
    data = json.loads(reports[1].read_text())
    run_id = data["results"][0]["run_id"]
    data["load"][run_id].update(loaded=True, load_start=9.0, load_end=9.5, cpus=2)
    data["environment"]["versions"]["onnxruntime"] = "0.0.1"
    (tmp_path / "b.json").write_text(json.dumps(data))
    result = compare_reports(reports[0], tmp_path / "b.json")
    assert "B ran on a loaded machine" in result["rows"][0]["note"]
    assert any(n.startswith("library versions differ: onnxruntime") and n.endswith("-> 0.0.1")
               for n in result["notes"])


@pytest.mark.parametrize("content, message", [
    (None, "benchmark report not found"),
    ("{", "not a JSON file"),
    ('{"title": "x"}', "not a benchmark report"),
])
def test_not_a_report_is_one_line(reports: tuple[Path, Path], tmp_path: Path, content: str | None,
                                  message: str) -> None:
    path = tmp_path / "x.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ToolkitError, match=message) as caught:
        compare_reports(reports[0], path)
    assert "\n" not in str(caught.value) and "x.json" in str(caught.value)


def test_nothing_in_common_is_one_line(reports: tuple[Path, Path], tmp_path: Path) -> None:
    b = _with_samples(reports[1], [1.0, 2.0], tmp_path / "b.json", model="other")
    with pytest.raises(CompareError, match="no \\(model, backend\\) in common: A has conv/ort-cpu; B has other/ort"):
        compare_reports(reports[0], b)


# ------------------------------------------------------------------------------------------------ command line
def test_bench_compare_on_the_command_line(reports: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    import cli

    assert cli.main(["bench", "compare", str(reports[0]), str(reports[1]), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["rows"] == compare_reports(*reports)["rows"]
    assert cli.main(["bench", "compare", str(reports[0]), str(reports[1])]) == 0
    assert "| model | backend |" in capsys.readouterr().out
    assert cli.main(["bench", "compare", str(reports[0]), "missing.json"]) == 2
    assert capsys.readouterr().err.strip() == ("error: missing.json: benchmark report not found (expected a "
                                               "results.json written by flownas bench)")


def test_bench_still_measures_without_the_action(capsys: pytest.CaptureFixture) -> None:
    import cli

    args = cli.build_parser().parse_args(["bench", "--weights", "w.pt", "--backend", "torch-cpu,ort-cpu"])
    assert args.bench_command is None and args.weights == "w.pt" and args.backend == "torch-cpu,ort-cpu"
    assert cli.main(["bench", "--model", "raft-small"]) == 2  # --backend is still required to measure
    assert "bench: --backend is required" in capsys.readouterr().err


def test_compare_imports_no_torch(reports: tuple[Path, Path]) -> None:
    code = ("import sys; from bench.compare import compare_reports, format_comparison\n"
            f"format_comparison(compare_reports({str(reports[0])!r}, {str(reports[1])!r}))\n"
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
