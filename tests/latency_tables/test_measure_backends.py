"""Backends of `lut measure` beyond ONNX Runtime: torch-cpu times the modules rebuilt from the manifest (the same
computation as the ONNX graphs), trt and torch-cuda refuse in one line before writing anything when their runtime
or device is missing, engine/cache paths; key graphs traced at the proxy size and deduplicated key structures."""
from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import latency_tables.measure as measure
from bench.protocol import TimingConfig
from flownas.errors import MissingDependencyError
from flownas.models import TINY_DECODER
from flownas.registry import TINY_SPACE
from latency_tables import graphs
from latency_tables.build import build_table
from latency_tables.keys import encoder_keys, fixed_keys
from latency_tables.measure import measure_keys, measurements_path, read_manifest, read_measurements, sidecar_path
from latency_tables.table import assemble, write_key_graphs
from latency_tables.trt_engines import (check_engine_record, check_trt, engine_is_built, engine_path,
                                        timing_cache_path)

FAST = TimingConfig(warmup_runs=1, warmup_s=0.0, runs=3, duration_s=0.0)
SIZE = (64, 64)


def _keys():
    return encoder_keys(TINY_SPACE.smallest(), TINY_SPACE, *SIZE, decoder=TINY_DECODER)


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory) -> Path:
    keys = _keys()
    block = next(k for k in keys if k.kind == "block")
    twin = replace(block, stage=block.stage + 5, first=not block.first)  # same structure, another id
    return write_key_graphs(keys + [twin], tmp_path_factory.mktemp("keys"), TINY_DECODER, TINY_SPACE)


def _copy(key_dir: Path, dest: Path) -> Path:
    shutil.copytree(key_dir, dest, ignore=shutil.ignore_patterns("measurements-*", "table.*"))
    return dest


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _trt_available() -> bool:
    try:
        check_trt()
    except MissingDependencyError:
        return False
    return True


def test_same_structure_keys_share_one_graph_file_and_one_measurement(key_dir, tmp_path, monkeypatch):
    folder = _copy(key_dir, tmp_path / "k")
    manifest = read_manifest(folder)
    files = [g["file"] for g in manifest["graphs"]]
    assert len(files) == len(_keys()) + 1 and len(set(files)) == len(_keys())  # the twin reuses its block's file
    assert sorted(p.name for p in (folder / "graphs").iterdir()) == sorted(Path(f).name for f in set(files))
    timed = []
    real = measure._time_graph
    monkeypatch.setattr(measure, "_time_graph", lambda runner, config: timed.append(runner.path) or real(runner, config))
    measure_keys(folder, config=FAST, threads=1, remeasure_cv=None)
    assert len(timed) == len(set(timed)) == len(set(files)) + len(manifest["empties"])
    rows = read_measurements(measurements_path(folder, "ort-cpu"))
    block, twin = (g["id"] for g in manifest["graphs"] if g["file"] == files[-1])
    assert rows[block] == rows[twin] and set(rows) == {g["id"] for g in manifest["graphs"]} | set(manifest["empties"])


def test_proxy_traced_graphs_compute_the_key_at_its_real_size(key_dir):
    import onnxruntime as ort

    manifest = read_manifest(key_dir)
    proxied = 0
    for entry in manifest["graphs"]:
        module, shapes = graphs.record_module(entry, manifest["decoder"])
        key = graphs.Key.from_dict(entry["key"])
        if graphs.proxy_key(key) != key:  # exported through the proxy path, not traced again at full size
            proxy_inputs = graphs.example_inputs(graphs.proxy_key(key))
            assert graphs.reshape_graph(graphs._trace(module, proxy_inputs), key) is not None, key.id
            proxied += 1
        feeds = {name: np.random.default_rng(1).standard_normal(shape).astype(np.float32)
                 for name, shape in shapes.items()}
        session = ort.InferenceSession(str(key_dir / entry["file"]), providers=["CPUExecutionProvider"])
        with torch.no_grad():
            expected = module(*(torch.from_numpy(v) for v in feeds.values())).numpy()
        got = session.run(None, feeds)[0]
        assert got.shape == key.output_shape() == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert proxied >= 5  # most keys of this folder went through the proxy path


def test_a_graph_with_shape_dependent_nodes_is_not_reshaped():
    key = fixed_keys(*SIZE, decoder=TINY_DECODER)[0]
    small = graphs.proxy_key(replace(key, kind="block"))  # only the geometry matters here
    traced = graphs._trace(graphs.Empty(small.output_shape()).eval(),
                           {n: torch.zeros(s) for n, s in small.input_shapes().items()})
    assert graphs.reshape_graph(traced, replace(key, kind="block")) is None  # Reshape/Expand: traced again


def test_torch_cpu_times_the_modules_and_records_threads_and_precision(key_dir, tmp_path):
    folder = _copy(key_dir, tmp_path / "k")
    before = torch.get_num_threads()
    seen = []
    path = measure_keys(folder, "torch-cpu", FAST, threads=1, progress=lambda g, s: seen.append(g))
    assert torch.get_num_threads() == before  # TorchRunner restores the process-wide thread count
    manifest = read_manifest(folder)
    rows = {r["graph"]: r for r in csv.DictReader(path.open())}
    assert set(rows) == {g["id"] for g in manifest["graphs"]} | set(manifest["empties"]) == set(seen)
    assert all(float(r["median_ms"]) > 0 and int(r["n"]) >= FAST.runs for r in rows.values())
    record = json.loads(sidecar_path(folder, "torch-cpu").read_text())
    assert record["backend"] == "torch-cpu" and record["precision"] == "fp32"
    assert record["threads"] == 1 and record["effective_threads"] == 1
    table = json.loads((assemble(folder, "torch-cpu", tmp_path / "t") / "table.json").read_text())
    assert table["backend"] == "torch-cpu" and table["threads"] == 1 and table["precision"] == "fp32"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: torch-cuda is not refused here")
def test_torch_cuda_without_a_gpu_is_refused_before_any_file(key_dir, tmp_path):
    folder = _copy(key_dir, tmp_path / "k")
    before = _listing(folder)
    with pytest.raises(MissingDependencyError, match="torch-cuda") as info:
        measure_keys(folder, "torch-cuda", FAST)
    assert "\n" not in str(info.value) and _listing(folder) == before


@pytest.mark.skipif(_trt_available(), reason="TensorRT, a CUDA binding and a GPU are present: trt is not refused")
def test_trt_without_tensorrt_is_refused_before_any_file(key_dir, tmp_path):
    folder = _copy(key_dir, tmp_path / "k")
    before = _listing(folder)
    with pytest.raises(MissingDependencyError) as info:
        measure_keys(folder, "trt", FAST)
    assert "\n" not in str(info.value) and _listing(folder) == before
    assert not sidecar_path(folder, "trt").exists() and not timing_cache_path(folder).exists()
    with pytest.raises(MissingDependencyError):  # a table build refuses before exporting any key graph
        build_table(TINY_SPACE, *SIZE, tmp_path / "build", "trt", FAST, decoder=TINY_DECODER)
    assert not (tmp_path / "build").exists()


def test_engine_and_timing_cache_paths(tmp_path):
    engine = engine_path(tmp_path, "graphs/fnet.block.s0.first.c16-16-16.k3.e1.s1.instance.32x32.b2.res.onnx")
    assert engine == tmp_path / "engines/graphs/fnet.block.s0.first.c16-16-16.k3.e1.s1.instance.32x32.b2.res.engine"
    assert engine_path(tmp_path, "empty/empty.x1x3x8x8.y1x3x8x8.onnx") == \
        tmp_path / "engines/empty/empty.x1x3x8x8.y1x3x8x8.engine"
    assert timing_cache_path(tmp_path) == tmp_path / "trt-timing.cache"  # one cache for every engine
    engine.parent.mkdir(parents=True)
    engine.write_bytes(b"plan")
    assert not engine_is_built(engine)  # a build killed before its record: rebuilt on resume
    record = {"device": "GPU A", "tensorrt_version": "10.9.0", "precision": "fp32"}
    Path(f"{engine}.json").write_text(json.dumps(record))
    assert engine_is_built(engine)
    check_engine_record(engine, {"name": "GPU A", "tensorrt": "10.9.0"})
    with pytest.raises(measure.LatencyTableError, match="GPU B"):
        check_engine_record(engine, {"name": "GPU B", "tensorrt": "10.9.0"})
