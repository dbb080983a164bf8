"""Key graphs compute what the real encoders compute; measurement resumes without re-measuring; assemble subtracts
the empty graphs' overhead; the measuring step runs without torch."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import latency_tables.measure as measure
from bench.protocol import TimingConfig
from flownas.models import TINY_DECODER, FlowNASNet
from flownas.registry import TINY_SPACE
from latency_tables.graphs import BASE_ITERS, STEP_SPAN, DecoderOnly, build_module, example_inputs
from latency_tables.keys import encoder_keys, fixed_keys
from latency_tables.measure import LatencyTableError, measure_keys, measurements_path, read_measurements
from latency_tables.table import assemble, write_key_graphs

REPO = Path(__file__).resolve().parents[2]
FAST = TimingConfig(warmup_runs=1, warmup_s=0.0, runs=3, duration_s=0.0)
SIZE = (128, 128)


def _keys(arch):
    return encoder_keys(arch, TINY_SPACE, *SIZE, decoder=TINY_DECODER) + fixed_keys(*SIZE, decoder=TINY_DECODER)


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("keys")
    return write_key_graphs(_keys(TINY_SPACE.smallest()), out, TINY_DECODER, TINY_SPACE)


def _fresh_copy(key_dir: Path, dest: Path) -> Path:
    shutil.copytree(key_dir, dest, ignore=shutil.ignore_patterns("measurements-*", "table.*"))
    return dest


def test_key_modules_reproduce_the_real_encoders_and_decoder():
    torch.manual_seed(0)
    arch = TINY_SPACE.sample(3)
    net = FlowNASNet(arch, TINY_SPACE, decoder=TINY_DECODER).eval()
    image1, image2 = torch.rand(2, 1, 3, *SIZE) * 255
    keys = _keys(arch)
    for name, encoder in (("fnet", net.fnet), ("cnet", net.cnet)):
        seen = []  # (module, input, output) in execution order, from hooks on the real encoder
        hooks = [m.register_forward_hook(lambda m, i, o: seen.append((m, i[0], o)))
                 for m in [encoder.norm1, *encoder.blocks, encoder.last_conv]]
        n1, n2 = image1 * (2 / 255) - 1, image2 * (2 / 255) - 1
        with torch.no_grad():
            encoder(torch.cat([n1, n2]) if name == "fnet" else n1)
        for h in hooks:
            h.remove()
        mine = [k for k in keys if k.encoder == name]
        assert len(mine) == len(seen)
        for key, (module, x, y) in zip(mine, seen):
            unit = build_module(key, TINY_DECODER)
            if key.kind == "stem":
                unit.load_state_dict({"first_conv." + k: v for k, v in encoder.first_conv.state_dict().items()}
                                     | {"norm1." + k: v for k, v in encoder.norm1.state_dict().items()})
                args = (image1, image2) if name == "fnet" else (n1,)
                y = torch.relu(y)
            else:
                unit.load_state_dict(module.state_dict())
                args = (x,)
            assert tuple(y.shape) == key.output_shape()
            assert tuple(unit(*example_inputs(key).values()).shape) == key.output_shape()
            with torch.no_grad():
                torch.testing.assert_close(unit(*args), y, rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # the decoder graphs run the model's own iterations on the encoder outputs
        n1, n2 = image1 * (2 / 255) - 1, image2 * (2 / 255) - 1
        fmaps, context = net.fnet(torch.cat([n1, n2])), net.cnet(n1)
        for key in fixed_keys(*SIZE, decoder=TINY_DECODER):
            unit = build_module(key, TINY_DECODER)
            unit.update_block.load_state_dict(net.update_block.state_dict())
            iters = BASE_ITERS + (STEP_SPAN if key.kind == "step" else 0)
            assert isinstance(unit, DecoderOnly) and unit.iters == iters
            expected = net._iterate(n1, n2, iters, None, lookup="gather")[-1]
            assert tuple(expected.shape) == key.output_shape()
            torch.testing.assert_close(unit(fmaps, context), expected, rtol=1e-4, atol=1e-4)


def test_manifest_lists_every_key_and_its_empty_graph(key_dir):
    manifest = json.loads((key_dir / "manifest.json").read_text())
    keys = _keys(TINY_SPACE.smallest())
    assert [g["id"] for g in manifest["graphs"]] == [k.id for k in keys]
    assert manifest["resolution"] == list(SIZE) and manifest["batch"] == 1
    assert manifest["decoder"] == TINY_DECODER.to_dict() and manifest["kind"] == "latency-keys"
    from export.inputs import onnx_io_specs

    for graph, key in zip(manifest["graphs"], keys):
        for file in (graph["file"], manifest["empties"][graph["empty"]]):
            inputs, outputs = onnx_io_specs(key_dir / file)
            assert {s.name: s.shape for s in inputs} == key.input_shapes()
            assert [s.shape for s in outputs] == [key.output_shape()]


def test_interrupted_measurement_resumes_without_remeasuring(key_dir, tmp_path, monkeypatch):
    folder = _fresh_copy(key_dir, tmp_path / "k")
    calls: list[str] = []
    real = measure._time_graph

    class Interrupt(Exception):
        pass

    def counting(runner, *args, **kwargs):
        if len(calls) == 7 and interrupt:
            raise Interrupt
        calls.append(runner.path.stem)
        return real(runner, *args, **kwargs)

    monkeypatch.setattr(measure, "_time_graph", counting)
    interrupt = True
    with pytest.raises(Interrupt):
        measure_keys(folder, config=FAST, threads=1, remeasure_cv=None)
    assert len(read_measurements(measurements_path(folder, "ort-cpu"))) == 7
    interrupt = False
    measure_keys(folder, config=FAST, threads=1, remeasure_cv=None)
    manifest = json.loads((folder / "manifest.json").read_text())
    every = [Path(f).stem for f in manifest["empties"].values()] + [g["id"] for g in manifest["graphs"]]
    files = [Path(f).stem for f in manifest["empties"].values()] + list(dict.fromkeys(
        Path(g["file"]).stem for g in manifest["graphs"]))
    assert sorted(calls) == sorted(files)  # each graph file measured exactly once over both runs
    calls.clear()
    measure_keys(folder, config=FAST, threads=1, remeasure_cv=None)
    assert calls == []
    # A torn last line (writer killed mid-row) loses only that row: exactly that graph is measured again.
    path = measurements_path(folder, "ort-cpu")
    text = path.read_text()
    path.write_text(text[: text.rstrip("\n").rfind("\n") + 1] + "decoder.step,key,1.2")
    measure_keys(folder, config=FAST, threads=1, remeasure_cv=None)
    assert calls == [manifest["graphs"][-1]["id"]]
    assert len(read_measurements(path)) == len(every)
    with pytest.raises(LatencyTableError, match="threads=1"):  # resuming must measure the same way
        measure_keys(folder, config=FAST, threads=2, remeasure_cv=None)


def test_assemble_subtracts_the_empty_graph_and_derives_prologue_and_step(key_dir, tmp_path):
    folder = _fresh_copy(key_dir, tmp_path / "k")
    measure_keys(folder, config=FAST, threads=1)
    out = assemble(folder, out_dir=tmp_path / "table")
    manifest = json.loads((folder / "manifest.json").read_text())
    raw = {r["graph"]: r for r in csv.DictReader((measurements_path(folder, "ort-cpu")).open())}
    rows = {r["id"]: r for r in csv.DictReader((out / "table.csv").open())}
    assert list(rows) == [g["id"] for g in manifest["graphs"]]
    for g in manifest["graphs"]:
        row, overhead = rows[g["id"]], float(raw[g["empty"]]["median_ms"])
        assert float(row["overhead_ms"]) == overhead and float(row["raw_ms"]) == float(raw[g["id"]]["median_ms"])
        if row["kind"] not in ("prologue", "step"):
            assert float(row["latency_ms"]) == pytest.approx(max(0.0, float(raw[g["id"]]["median_ms"]) - overhead))
    pro, step = (next(r for r in rows.values() if r["kind"] == k) for k in ("prologue", "step"))
    d1, d3 = float(pro["raw_ms"]), float(step["raw_ms"])  # decoder at 1 and at 3 iterations
    one = max(0.0, (d3 - d1) / STEP_SPAN)
    assert float(step["latency_ms"]) == pytest.approx(one)
    assert float(pro["latency_ms"]) == pytest.approx(max(0.0, d1 - float(pro["overhead_ms"]) - BASE_ITERS * one))
    record = json.loads((out / "table.json").read_text())
    assert record["kind"] == "latency-table" and record["backend"] == "ort-cpu" and record["threads"] == 1
    assert record["resolution"] == list(SIZE) and record["precision"] == "fp32" and record["batch"] == 1
    assert record["toolkit_version"] and record["device"] and "onnxruntime" in record["measure_versions"]
    assert record["base_iters"] == BASE_ITERS and record["step_span"] == STEP_SPAN


def test_a_key_folder_is_not_reused_for_another_decoder_or_resolution(key_dir, tmp_path):
    from dataclasses import replace

    folder = _fresh_copy(key_dir, tmp_path / "k")
    other = replace(TINY_DECODER, corr_radius=2)  # same widths, so the same key ids: stale graphs must not be kept
    with pytest.raises(LatencyTableError, match="decoder="):
        write_key_graphs(fixed_keys(*SIZE, decoder=other), folder, other, TINY_SPACE)
    with pytest.raises(LatencyTableError, match="resolution="):
        write_key_graphs(fixed_keys(128, 192, decoder=TINY_DECODER), folder, TINY_DECODER, TINY_SPACE)


def test_assemble_refuses_an_unfinished_measurement(key_dir, tmp_path):
    folder = _fresh_copy(key_dir, tmp_path / "k")
    with pytest.raises(LatencyTableError, match="not measured yet"):
        assemble(folder)


def test_measuring_imports_no_torch(key_dir, tmp_path):
    folder = _fresh_copy(key_dir, tmp_path / "k")
    script = (
        "import sys\n"
        "from bench.protocol import TimingConfig\n"
        "from latency_tables.measure import measure_keys\n"
        "from latency_tables.table import assemble\n"
        "from latency_tables.predictor import LatencyTable\n"
        f"measure_keys({str(folder)!r}, config=TimingConfig(warmup_runs=1, warmup_s=0.0, runs=2), threads=1)\n"
        f"table = LatencyTable.load(assemble({str(folder)!r}))\n"
        "print(table.predict(table.space.smallest(), 4))\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    prediction, torch_loaded = done.stdout.split()
    assert float(prediction) > 0 and torch_loaded == "False"
