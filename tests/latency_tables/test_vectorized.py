"""The vectorised predictor equals the scalar one on random architectures, encodes/decodes losslessly, and names a
missing key. Tables here are synthetic (random latencies for every key of the tiny space, written in the table
format) so that the comparison covers every key without measuring one."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from flownas.arch import SearchSpace
from flownas.models import TINY_DECODER
from flownas.registry import TINY_SPACE
from latency_tables.keys import all_keys
from latency_tables.measure import LatencyTableError
from latency_tables.predictor import LatencyTable
from latency_tables.table import TABLE_COLUMNS
from latency_tables.vectorized import VectorPredictor, decode, encode, sample_encoded

SIZE = (128, 128)


def write_synthetic_table(folder, space, drop=(), calibration=None, seed=0):
    """table.csv with a random latency per key of `space` (less the ids in `drop`) and a matching table.json."""
    rng = np.random.default_rng(seed)
    keys = [k for k in all_keys(space, *SIZE, decoder=TINY_DECODER) if k.id not in drop]
    with (folder / "table.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, TABLE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for key in keys:
            ms = float(rng.uniform(0.01, 3.0))
            writer.writerow({**key.to_dict(), "latency_ms": ms, "p10_ms": ms, "p90_ms": ms, "cv": 0.0, "n": 1,
                             "raw_ms": ms, "overhead_ms": 0.0})
    manifest = {"backend": "ort-cpu", "device": "test", "precision": "fp32", "resolution": list(SIZE), "batch": 1,
                "space": space.to_dict(), "decoder": TINY_DECODER.to_dict()}
    if calibration:
        manifest["calibration"] = calibration
    (folder / "table.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize("calibration", [None, {"scale": 1.1, "offset_ms": 0.3}])
def test_predict_many_equals_the_scalar_predictor_on_1000_random_archs(tmp_path, calibration):
    table = LatencyTable.load(write_synthetic_table(tmp_path, TINY_SPACE, calibration=calibration))
    rng = np.random.default_rng(1)
    archs = [TINY_SPACE.sample(rng) for _ in range(1000)]
    iters = rng.integers(1, 20, size=1000)
    fast = VectorPredictor(table)
    got = fast.predict_many(archs, iters)
    want = np.array([table.predict(a, int(i)) for a, i in zip(archs, iters)])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    np.testing.assert_allclose(fast.predict_many(fast.encode(archs), 7, calibrated=False),
                               [table.predict(a, 7, calibrated=False) for a in archs], rtol=0, atol=1e-9)
    assert not fast.missing_keys


def test_the_flownas_space_encodes_and_predicts_like_the_scalar_path(tmp_path):
    space = SearchSpace.flownas()  # 6 stages, three-way choices: exercises the flat indexing beyond the tiny space
    table = LatencyTable.load(write_synthetic_table(tmp_path, space, seed=3))
    enc = sample_encoded(space, 200, np.random.default_rng(2))
    archs = decode(enc, space)
    assert np.array_equal(encode(archs, space), enc)
    got = VectorPredictor(table).predict_many(enc, 12)
    np.testing.assert_allclose(got, [table.predict(a, 12) for a in archs], rtol=0, atol=1e-9)


def test_sample_encoded_covers_every_choice_within_range():
    enc = sample_encoded(TINY_SPACE, 5000, np.random.default_rng(0))
    sizes = [[len(TINY_SPACE.gene(g).choices[s]) for g in ("width", "kernel_size", "depth", "expand_ratio")]
             for s in range(TINY_SPACE.num_stages)]
    assert enc.shape == (5000, 3, 4)
    for s, stage in enumerate(sizes):
        for g, size in enumerate(stage):
            assert set(np.unique(enc[:, s, g])) == set(range(size))


def test_a_missing_key_raises_naming_it_only_for_archs_that_need_it(tmp_path):
    largest = TINY_SPACE.largest()
    # The repeat block of the last stage at its widest: only architectures running it need the key.
    table_all = LatencyTable.load(write_synthetic_table(tmp_path, TINY_SPACE))
    needed = [k.id for k in table_all.keys(largest) if k.kind == "block" and k.stage == 2 and not k.first]
    folder = tmp_path / "holed"
    folder.mkdir()
    table = LatencyTable.load(write_synthetic_table(folder, TINY_SPACE, drop={needed[0]}))
    fast = VectorPredictor(table)
    assert fast.missing_keys == {needed[0]}
    smallest = TINY_SPACE.smallest()
    assert fast.predict_many([smallest], 4)[0] == pytest.approx(table.predict(smallest, 4), abs=1e-9)
    with pytest.raises(LatencyTableError, match=needed[0].replace(".", r"\.")) as err:
        fast.predict_many([smallest, largest], 4)
    assert largest.id in str(err.value)
    with pytest.raises(ValueError, match="iters"):
        fast.predict_many([smallest], 0)


def test_out_of_range_or_misshapen_indices_are_refused(tmp_path):
    fast = VectorPredictor(LatencyTable.load(write_synthetic_table(tmp_path, TINY_SPACE)))
    enc = sample_encoded(TINY_SPACE, 10, np.random.default_rng(0))
    enc[3, 1, 1] = 2  # stage 1 has two kernel choices: index 2 would land on another entry of the flat array
    with pytest.raises(ValueError, match="encoded architecture 3: kernel_size index 2 of stage 1"):
        fast.predict_many(enc, 4)
    with pytest.raises(ValueError, match=r"\[N, 3, 4\]"):
        fast.predict_many(enc[:, :2], 4)
