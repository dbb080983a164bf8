"""Dataset loaders on small fixtures written in each dataset's real layout and file formats."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from flownas.data.datasets import (DATASETS, KITTI, DatasetError, FlyingChairs, FlyingThings3D, Middlebury,
                                   Sintel, build_dataset)
from flownas.data.flow_io import write_flow, write_pfm
from flownas.errors import ToolkitError

H, W = 6, 10


class Fixture:
    """Writes random frames and flows, remembering what was written (RGB images, flow, valid) by path."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.images: dict[Path, np.ndarray] = {}
        self.flows: dict[Path, tuple[np.ndarray, np.ndarray]] = {}

    def image(self, path: Path, size: tuple[int, int] = (H, W)) -> None:
        rgb = self.rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), rgb[:, :, ::-1])
        self.images[path] = rgb

    def flow(self, path: Path, sparse: bool = False) -> None:
        # Multiples of 1/64 so the KITTI png stores them exactly.
        flow = np.round(self.rng.normal(size=(H, W, 2)) * 5 * 64).astype(np.float32) / 64
        valid = self.rng.random((H, W)) > 0.4 if sparse else np.ones((H, W), bool)
        flow[~valid] = 0
        if path.suffix == ".pfm":
            write_pfm(path, flow)
        else:
            write_flow(path, flow, valid)
        self.flows[path] = (flow, valid)

    def check(self, dataset, index: int) -> None:
        image1, image2, flow, valid = dataset[index]
        path1, path2, flow_path = dataset.samples[index]
        assert image1.dtype == torch.float32 and image1.shape == (3, H, W)
        assert flow.dtype == torch.float32 and flow.shape == (2, H, W)
        assert valid.dtype == torch.bool and valid.shape == (H, W)
        np.testing.assert_array_equal(image1.numpy().transpose(1, 2, 0), self.images[path1])
        np.testing.assert_array_equal(image2.numpy().transpose(1, 2, 0), self.images[path2])
        np.testing.assert_array_equal(flow.numpy().transpose(1, 2, 0), self.flows[flow_path][0])
        np.testing.assert_array_equal(valid.numpy(), self.flows[flow_path][1])


def _sintel(root: Path, fx: Fixture, scenes: dict[str, int]) -> None:
    for scene, frames in scenes.items():
        for dstype in ("clean", "final"):
            for i in range(1, frames + 1):
                fx.image(root / "training" / dstype / scene / f"frame_{i:04d}.png")
        for i in range(1, frames):
            fx.flow(root / "training" / "flow" / scene / f"frame_{i:04d}.flo")


def test_sintel_pairs_values_and_split(tmp_path: Path) -> None:
    fx = Fixture()
    _sintel(tmp_path, fx, {"alley_1": 3, "ambush_2": 2, "market_6": 3})
    clean = Sintel(tmp_path, split="training", dstype="clean")
    assert len(clean) == 2 + 1 + 2
    assert (Sintel.pad_mode, Sintel.sparse, Sintel.aggregation) == ("sintel", False, "pooled")
    first = clean.samples[0]
    assert [p.name for p in first] == ["frame_0001.png", "frame_0002.png", "frame_0001.flo"]
    assert first[0].parent.name == "alley_1" and clean.sample_id(0) == "training/clean/alley_1/frame_0001"
    for index in range(len(clean)):
        fx.check(clean, index)
    final = build_dataset("sintel-final", tmp_path)
    assert all(s[0].parts[-3] == "final" for s in final.samples)
    fx.check(final, 4)
    train, val = Sintel(tmp_path, split="train"), Sintel(tmp_path, split="val")
    train_ids = {train.sample_id(i) for i in range(len(train))}
    val_ids = {val.sample_id(i) for i in range(len(val))}
    assert train_ids.isdisjoint(val_ids)
    assert train_ids | val_ids == {clean.sample_id(i) for i in range(len(clean))}
    assert {s[0].parent.name for s in val.samples} == {"ambush_2", "market_6"}


def test_sintel_missing_flow_and_empty_split(tmp_path: Path) -> None:
    fx = Fixture()
    _sintel(tmp_path, fx, {"alley_1": 3})
    with pytest.raises(DatasetError, match="no Sintel clean val samples"):
        Sintel(tmp_path, split="val")
    (tmp_path / "training" / "flow" / "alley_1" / "frame_0002.flo").unlink()
    with pytest.raises(DatasetError, match="frame_0002.flo"):
        Sintel(tmp_path)
    with pytest.raises(DatasetError, match="Sintel pass"):
        Sintel(tmp_path, dstype="albedo")


def test_kitti_sparse_per_image(tmp_path: Path) -> None:
    fx = Fixture(1)
    for frame in ("000000", "000001"):
        fx.image(tmp_path / "training" / "image_2" / f"{frame}_10.png")
        fx.image(tmp_path / "training" / "image_2" / f"{frame}_11.png")
        fx.flow(tmp_path / "training" / "flow_occ" / f"{frame}_10.png", sparse=True)
    dataset = build_dataset("kitti", tmp_path)
    assert isinstance(dataset, KITTI) and len(dataset) == 2
    assert (dataset.pad_mode, dataset.sparse, dataset.aggregation) == ("kitti", True, "per_image")
    assert [p.name for p in dataset.samples[1]] == ["000001_10.png", "000001_11.png", "000001_10.png"]
    assert dataset.sample_id(1) == "000001_10"
    for index in range(2):
        fx.check(dataset, index)
    assert not dataset[0][3].all()


def _chairs(root: Path, fx: Fixture, labels: list[int]) -> None:
    for i in range(1, len(labels) + 1):
        fx.image(root / "data" / f"{i:05d}_img1.ppm")
        fx.image(root / "data" / f"{i:05d}_img2.ppm")
        fx.flow(root / "data" / f"{i:05d}_flow.flo")
    (root / "chairs_split.txt").write_text("".join(f"{label}\n" for label in labels))


def test_flying_chairs_split_file(tmp_path: Path) -> None:
    fx = Fixture(2)
    _chairs(tmp_path, fx, [1, 2, 1, 1, 2])
    train, val = FlyingChairs(tmp_path, "train"), build_dataset("chairs", tmp_path, split="val")
    assert [train.sample_id(i) for i in range(len(train))] == ["00001", "00003", "00004"]
    assert [val.sample_id(i) for i in range(len(val))] == ["00002", "00005"]
    for dataset in (train, val):
        for index in range(len(dataset)):
            fx.check(dataset, index)
    (tmp_path / "chairs_split.txt").write_text("1\n2\n1\n1\n")
    with pytest.raises(DatasetError, match="4 split labels but 5 flow files"):
        FlyingChairs(tmp_path)


def _things(root: Path, fx: Fixture, frames: range) -> None:
    for letter in ("A", "B"):
        sequence = f"{letter}/0000"
        for i in frames:
            fx.image(root / "frames_cleanpass" / "TRAIN" / sequence / "left" / f"{i:04d}.png")
            flow_dir = root / "optical_flow" / "TRAIN" / sequence
            fx.flow(flow_dir / "into_future" / "left" / f"OpticalFlowIntoFuture_{i:04d}_L.pfm")
            fx.flow(flow_dir / "into_past" / "left" / f"OpticalFlowIntoPast_{i:04d}_L.pfm")


def test_flying_things_future_and_past(tmp_path: Path) -> None:
    fx = Fixture(3)
    _things(tmp_path, fx, range(6, 9))
    future = build_dataset("things-clean", tmp_path)
    assert len(future) == 2 * 2
    a, b, flow = future.samples[1]
    assert (a.name, b.name, flow.name) == ("0007.png", "0008.png", "OpticalFlowIntoFuture_0007_L.pfm")
    past = FlyingThings3D(tmp_path, dstype="clean", direction="into_past")
    a, b, flow = past.samples[0]
    assert (a.name, b.name, flow.name) == ("0007.png", "0006.png", "OpticalFlowIntoPast_0007_L.pfm")
    assert a.parts[-4] == "A" and past.samples[2][0].parts[-4] == "B"
    for dataset in (future, past):
        for index in range(len(dataset)):
            fx.check(dataset, index)
    with pytest.raises(DatasetError, match="frames_finalpass"):
        build_dataset("things-final", tmp_path)


def test_middlebury_single_folder_and_folder_of_folders(tmp_path: Path) -> None:
    fx = Fixture(4)
    for name in ("Dimetrodon", "Venus"):
        fx.image(tmp_path / name / "frame10.png")
        fx.image(tmp_path / name / "frame11.png")
        fx.flow(tmp_path / name / "flow10.flo")
    fx.image(tmp_path / "NoTruth" / "frame10.png")  # no ground truth: skipped
    several = build_dataset("middlebury", tmp_path)
    assert [several.sample_id(i) for i in range(len(several))] == ["Dimetrodon", "Venus"]
    single = Middlebury(tmp_path / "Venus")
    assert len(single) == 1
    for dataset in (several, single):
        for index in range(len(dataset)):
            fx.check(dataset, index)


def test_real_middlebury_rubberwhale(rubberwhale: Path) -> None:
    dataset = Middlebury(rubberwhale)
    image1, image2, flow, valid = dataset[0]
    assert image1.shape == image2.shape == (3, 388, 584) and flow.shape == (2, 388, 584)
    assert 0 <= float(image1.min()) and float(image1.max()) <= 255
    assert not valid.all() and float(flow[:, valid].norm(dim=0).max()) < 10


def test_augmentor_runs_on_numpy_arrays(tmp_path: Path) -> None:
    fx = Fixture(5)
    _chairs(tmp_path, fx, [1])
    seen = []

    def flip(img1, img2, flow, valid):
        seen.append(tuple(type(x) for x in (img1, img2, flow, valid)))
        flipped = flow[:, ::-1] * np.array([-1, 1], np.float32)
        return img1[:, ::-1], img2[:, ::-1], flipped, valid[:, ::-1]

    image1, _, flow, _ = build_dataset("chairs", tmp_path, augmentor=flip)[0]
    assert seen == [(np.ndarray,) * 4]
    path1, _, flow_path = FlyingChairs(tmp_path).samples[0]
    np.testing.assert_array_equal(image1.numpy().transpose(1, 2, 0), fx.images[path1][:, ::-1])
    np.testing.assert_array_equal(flow[0].numpy(), -fx.flows[flow_path][0][:, ::-1, 0])


def test_errors_name_paths(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match="nowhere.*expected layout") as error:
        build_dataset("sintel-clean", missing)
    assert "\n" not in str(error.value)
    (tmp_path / "empty" / "training" / "image_2").mkdir(parents=True)
    (tmp_path / "empty" / "training" / "flow_occ").mkdir()
    with pytest.raises(DatasetError, match="no KITTI training samples"):
        KITTI(tmp_path / "empty")
    with pytest.raises(DatasetError, match="unknown dataset 'nope'"):
        build_dataset("nope", tmp_path)
    assert {"sintel-clean", "sintel-final", "kitti", "chairs", "things-clean", "things-final",
            "middlebury"} <= set(DATASETS)
    assert issubclass(DatasetError, ToolkitError)  # the command line prints these as one line


def test_image_pair_of_different_sizes(tmp_path: Path) -> None:
    fx = Fixture(6)
    fx.image(tmp_path / "frame10.png")
    fx.image(tmp_path / "frame11.png", size=(H + 2, W))
    fx.flow(tmp_path / "flow10.flo")
    dataset = Middlebury(tmp_path)  # sizes are checked at load time, not while indexing files
    with pytest.raises(DatasetError, match=rf"frame10.png is {W}x{H}.*frame11.png is {W}x{H + 2}"):
        dataset[0]
