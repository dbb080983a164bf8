"""Library calls and the `lut` command line on a micro space at 128x128: a whole table built, resumed without
re-measuring, summarised, plotted and predicted; `lut measure` runs without importing torch."""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bench.protocol import TimingConfig
from flownas.models import TINY_DECODER
from latency_tables.build import build_table, plot_breakdown, predict_arch, show_table
from latency_tables.commands import add_lut_parser, run_lut
from latency_tables.keys import all_keys
from latency_tables.measure import LatencyTableError
from latency_tables.predictor import LatencyTable
from tests_helpers import MICRO

SIZE = (128, 128)
QUICK = TimingConfig(warmup_runs=1, warmup_s=0.0, runs=3)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    lines = []
    out = build_table(MICRO, *SIZE, tmp_path_factory.mktemp("lut") / "micro", config=QUICK, threads=1,
                      log=lines.append, decoder=TINY_DECODER)
    return out, lines


def _rows(folder):
    with (folder / "table.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_build_table_covers_every_key_and_resumes_without_remeasuring(built):
    out, lines = built
    keys = all_keys(MICRO, *SIZE, decoder=TINY_DECODER)
    assert sorted(r["id"] for r in _rows(out)) == sorted(k.id for k in keys)
    assert sum(line.startswith("measured ") for line in lines) >= len(keys)  # keys plus their empty graphs
    before = (out / "measurements-ort-cpu.csv").read_text()
    again = []
    assert build_table(MICRO, *SIZE, out, config=QUICK, threads=1, log=again.append, decoder=TINY_DECODER) == out
    assert not [line for line in again if line.startswith("measured ")]
    assert (out / "measurements-ort-cpu.csv").read_text() == before


def test_show_table_counts_slowest_keys_and_breakdown(built):
    out, _ = built
    keys = all_keys(MICRO, *SIZE, decoder=TINY_DECODER)
    record = show_table(out, arch="largest", iters=3)
    assert record["keys"] == len(keys) and record["backend"] == "ort-cpu" and record["resolution"] == list(SIZE)
    assert record["by_kind"] == dict(Counter(k.kind for k in keys))
    assert record["by_encoder"] == dict(Counter(k.encoder for k in keys))
    latencies = sorted((float(r["latency_ms"]) for r in _rows(out)), reverse=True)
    assert [s["latency_ms"] for s in record["slowest"]] == latencies[:10]
    table, largest = LatencyTable.load(out), MICRO.largest()
    assert record["arch"]["arch"] == largest.id
    assert record["arch"]["total_ms"] == pytest.approx(table.predict(largest, 3), rel=1e-12)
    assert "arch" not in show_table(out)


def test_predict_arch_and_manifest_checks(built):
    out, _ = built
    record = predict_arch(out, "smallest", 5, backend="ort-cpu", resolution=SIZE)
    parts = record["breakdown_ms"]
    assert sum(parts.values()) == pytest.approx(record["total_ms"], rel=1e-12)
    assert record["total_ms"] == pytest.approx(LatencyTable.load(out).predict(MICRO.smallest(), 5), rel=1e-12)
    with pytest.raises(LatencyTableError, match="backend"):
        predict_arch(out, "smallest", 5, backend="trt")
    assert predict_arch(out, "smallest", 5, backend="trt", force=True)["total_ms"] == record["total_ms"]


def test_plot_breakdown_writes_a_png(built, tmp_path):
    out, _ = built
    path = plot_breakdown(out, "largest", 4, tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]  # no temporary left beside it


def _parser():
    parser = argparse.ArgumentParser(prog="flownas")
    add_lut_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def _subparsers(parser):
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_lut_has_the_named_subcommands_each_option_with_help():
    lut = _subparsers(_parser())["lut"]
    commands = _subparsers(lut)
    assert set(commands) == {"keys", "measure", "assemble", "build", "show", "predict", "validate"}
    for name, sub in commands.items():
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"lut {name} {action.dest} has no help text"


def test_lut_predict_prints_the_breakdown_and_ends_with_the_total(built, capsys):
    out, _ = built
    args = _parser().parse_args(["lut", "predict", "--table", str(out), "--arch", "largest", "--iters", "6"])
    assert run_lut(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    total = LatencyTable.load(out).predict(MICRO.largest(), 6)
    assert lines[-1] == f"total: {total:.3f} ms"
    assert any(line.split()[0] == "fnet.stem" for line in lines[1:-1])
    args = _parser().parse_args(["lut", "show", str(out), "--json"])
    assert run_lut(args) == 0
    assert json.loads(capsys.readouterr().out)["keys"] == len(_rows(out))


def test_lut_measure_imports_no_torch(built, tmp_path):
    out, _ = built
    folder = tmp_path / "keys"
    folder.mkdir()
    for part in ("graphs", "empty"):
        shutil.copytree(out / part, folder / part)
    shutil.copy(out / "manifest.json", folder / "manifest.json")
    code = ("import argparse, sys\n"
            "from latency_tables.commands import add_lut_parser, run_lut\n"
            "p = argparse.ArgumentParser(); add_lut_parser(p.add_subparsers(dest='command'))\n"
            f"rc = run_lut(p.parse_args(['lut', 'measure', {str(folder)!r}, '--threads', '1', '--runs', '2', "
            "'--duration-s', '0', '--warmup-s', '0']))\n"
            "assert rc == 0, rc\n"
            "assert 'torch' not in sys.modules, 'lut measure imported torch'\n"
            "print('NO_TORCH_OK')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "NO_TORCH_OK" in result.stdout
    measured = {r["graph"] for r in csv.DictReader((folder / "measurements-ort-cpu.csv").open())}
    manifest = json.loads((folder / "manifest.json").read_text())
    assert measured == {g["id"] for g in manifest["graphs"]} | set(manifest["empties"])


def test_lut_assemble_to_another_folder_and_show_with_a_plot(built, tmp_path, capsys):
    out, _ = built
    args = _parser().parse_args(["lut", "assemble", str(out), "--out", str(tmp_path)])
    assert run_lut(args) == 0
    assert (tmp_path / "table.csv").read_text() == (out / "table.csv").read_text()
    plot = tmp_path / "where.png"
    args = _parser().parse_args(["lut", "show", str(tmp_path), "--arch", "smallest", "--iters", "2", "--plot",
                                 str(plot)])
    assert run_lut(args) == 0
    text = capsys.readouterr().out
    assert f"{len(_rows(out))} keys" in text and "slowest keys:" in text
    assert plot.read_bytes()[:4] == b"\x89PNG"
    no_arch = _parser().parse_args(["lut", "show", str(tmp_path), "--plot", str(tmp_path / "x.png")])
    assert run_lut(no_arch) == 2 and not (tmp_path / "x.png").exists()
