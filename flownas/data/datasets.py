"""Optical-flow datasets in their published folder layouts.

Each dataset yields `(image1, image2, flow, valid)`: `torch.float32 [3, H, W]` in [0, 255] (twice),
`torch.float32 [2, H, W]` and `torch.bool [H, W]`. An optional `augmentor(img1, img2, flow, valid)`
runs on the numpy arrays (uint8 [H,W,3] x2, float32 [H,W,2], bool [H,W]) before conversion.

Class attributes tell the evaluation loop how to treat a dataset: `pad_mode` ("sintel" centred
padding, "kitti" bottom padding), `sparse` (ground truth only at some pixels) and `aggregation`
("pooled" EPE over all valid pixels, or "per_image" mean of per-image EPEs, the KITTI convention).

`DATASETS` is a read-only mapping of name -> `DatasetEntry` (factory, whether it needs a root, splits,
default split, description); `build_dataset(name, root, split, augmentor)` looks names up there and
`list_datasets()` lists them.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .flow_io import read_flow, read_image
from .synthetic import SyntheticFlow
from ..errors import ToolkitError

PathLike = Union[str, "os.PathLike[str]"]
Augmentor = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                     tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
Sample = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class DatasetError(ToolkitError, ValueError):
    """A dataset root is missing, empty or inconsistent, or a sample cannot be used."""


def _require_dir(path: Path, layout: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{path}: folder not found (expected layout {layout})")
    return path


def _require_file(path: Path, layout: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found (expected layout {layout})")
    return path


def _choice(value: str, allowed: dict[str, str], what: str) -> str:
    """Canonical spelling of `value` among `allowed` (alias -> canonical)."""
    if value not in allowed:
        raise DatasetError(f"unknown {what} {value!r} (expected one of {', '.join(sorted(allowed))})")
    return allowed[value]


class FlowDataset(Dataset):
    """Base class: `samples` is a list of (image1, image2, flow) paths; subclasses fill it."""

    pad_mode = "sintel"
    sparse = False
    aggregation = "pooled"
    layout = ""  # human-readable expected layout, quoted in errors

    def __init__(self, root: PathLike, augmentor: Optional[Augmentor] = None) -> None:
        self.root = Path(root)
        self.augmentor = augmentor
        self.samples: list[tuple[Path, Path, Path]] = []
        _require_dir(self.root, self.layout)

    def _finish(self, samples: Sequence[tuple[Path, Path, Path]], what: str) -> None:
        if not samples:
            raise DatasetError(f"{self.root}: no {what} samples found (expected layout {self.layout})")
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def sample_id(self, index: int) -> str:
        """Stable name of sample `index` for reports: the first image's path relative to the root."""
        first = self.samples[index][0]
        try:
            return first.relative_to(self.root).with_suffix("").as_posix()
        except ValueError:
            return first.with_suffix("").as_posix()

    def load_numpy(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Sample `index` as numpy arrays (img1, img2 uint8 [H,W,3]; flow float32 [H,W,2]; valid bool [H,W])."""
        path1, path2, flow_path = self.samples[index]
        image1, image2 = read_image(path1), read_image(path2)
        if image1.shape != image2.shape:
            raise DatasetError(f"image pair differs in size: {path1} is {image1.shape[1]}x{image1.shape[0]}, "
                               f"{path2} is {image2.shape[1]}x{image2.shape[0]}")
        flow, valid = read_flow(flow_path)
        if flow.shape[:2] != image1.shape[:2]:
            raise DatasetError(f"flow {flow_path} is {flow.shape[1]}x{flow.shape[0]} but image {path1} "
                               f"is {image1.shape[1]}x{image1.shape[0]}")
        return image1, image2, flow, valid

    def __getitem__(self, index: int) -> Sample:
        image1, image2, flow, valid = self.load_numpy(index)
        if self.augmentor is not None:
            image1, image2, flow, valid = self.augmentor(image1, image2, flow, valid)
        return (_chw(image1), _chw(image2), _chw(flow), torch.from_numpy(np.array(valid, dtype=bool)))


def _chw(array: np.ndarray) -> torch.Tensor:
    """[H, W, C] numpy -> contiguous float32 [C, H, W] tensor (copies, so augmentor views are safe)."""
    return torch.from_numpy(np.array(array, dtype=np.float32).transpose(2, 0, 1).copy())


class Sintel(FlowDataset):
    """MPI-Sintel training set: consecutive frame pairs within each scene.

    Layout: root/training/{clean,final}/SCENE/frame_XXXX.png, root/training/flow/SCENE/frame_XXXX.flo
    (flow of frame XXXX towards frame XXXX+1). Splits: "training" = all scenes; "val" = the scenes in
    `VAL_SCENES`; "train" = all other scenes. The split is by scene, not by frame, because consecutive
    frames of one scene are nearly identical and a frame-level split would leak validation data.
    The five validation scenes (about 20% of the pairs) cover five of the scene families with a mix
    of small and large motion.
    """

    VAL_SCENES = ("ambush_2", "bamboo_2", "cave_4", "market_6", "temple_2")
    layout = "root/training/{clean,final}/SCENE/frame_XXXX.png + root/training/flow/SCENE/frame_XXXX.flo"
    pad_mode = "sintel"
    sparse = False
    aggregation = "pooled"

    def __init__(self, root: PathLike, split: str = "training", dstype: str = "clean",
                 augmentor: Optional[Augmentor] = None) -> None:
        super().__init__(root, augmentor)
        self.split = _choice(split, {"training": "training", "train": "train", "val": "val"}, "Sintel split")
        self.dstype = _choice(dstype, {"clean": "clean", "final": "final"}, "Sintel pass")
        image_root = _require_dir(self.root / "training" / self.dstype, self.layout)
        flow_root = _require_dir(self.root / "training" / "flow", self.layout)
        samples = []
        for scene in sorted(p for p in image_root.iterdir() if p.is_dir()):
            if not self._in_split(scene.name):
                continue
            frames = sorted(scene.glob("frame_*.png"))
            for first, second in zip(frames[:-1], frames[1:]):
                flow = _require_file(flow_root / scene.name / f"{first.stem}.flo", self.layout)
                samples.append((first, second, flow))
        self._finish(samples, f"Sintel {self.dstype} {self.split}")

    def _in_split(self, scene: str) -> bool:
        if self.split == "training":
            return True
        return (scene in self.VAL_SCENES) == (self.split == "val")


class KITTI(FlowDataset):
    """KITTI 2015 flow training set: XXXXXX_10.png -> XXXXXX_11.png with sparse flow_occ ground truth."""

    layout = "root/training/image_2/XXXXXX_{10,11}.png + root/training/flow_occ/XXXXXX_10.png"
    pad_mode = "kitti"
    sparse = True
    aggregation = "per_image"

    def __init__(self, root: PathLike, split: str = "training", augmentor: Optional[Augmentor] = None) -> None:
        super().__init__(root, augmentor)
        # The test split has no public ground truth, so only "training" can be evaluated.
        self.split = _choice(split, {"training": "training"}, "KITTI split")
        image_root = _require_dir(self.root / "training" / "image_2", self.layout)
        flow_root = _require_dir(self.root / "training" / "flow_occ", self.layout)
        samples = []
        for first in sorted(image_root.glob("*_10.png")):
            frame = first.name[: -len("_10.png")]
            second = _require_file(image_root / f"{frame}_11.png", self.layout)
            samples.append((first, second, _require_file(flow_root / first.name, self.layout)))
        self._finish(samples, "KITTI training")

    def sample_id(self, index: int) -> str:
        return self.samples[index][0].stem


class FlyingChairs(FlowDataset):
    """FlyingChairs: root/data/XXXXX_img1.ppm, _img2.ppm, _flow.flo and root/chairs_split.txt.

    chairs_split.txt has one line per sample in sorted file order: 1 = train, 2 = val.
    """

    layout = "root/data/XXXXX_{img1,img2}.ppm + root/data/XXXXX_flow.flo + root/chairs_split.txt"

    def __init__(self, root: PathLike, split: str = "train", augmentor: Optional[Augmentor] = None) -> None:
        super().__init__(root, augmentor)
        self.split = _choice(split, {"train": "train", "training": "train", "val": "val", "validation": "val"},
                             "FlyingChairs split")
        data = _require_dir(self.root / "data", self.layout)
        flows = sorted(data.glob("*_flow.flo"))
        labels = self._read_split(_require_file(self.root / "chairs_split.txt", self.layout), len(flows))
        wanted = 1 if self.split == "train" else 2
        samples = []
        for flow, label in zip(flows, labels):
            if label == wanted:
                stem = flow.name[: -len("_flow.flo")]
                samples.append((_require_file(data / f"{stem}_img1.ppm", self.layout),
                                _require_file(data / f"{stem}_img2.ppm", self.layout), flow))
        self._finish(samples, f"FlyingChairs {self.split}")

    @staticmethod
    def _read_split(path: Path, count: int) -> list[int]:
        labels = path.read_text().split()
        if any(label not in ("1", "2") for label in labels):
            raise DatasetError(f"{path}: expected one label 1 (train) or 2 (val) per line")
        if len(labels) != count:
            raise DatasetError(f"{path}: {len(labels)} split labels but {count} flow files in "
                               f"{path.parent / 'data'} (expected one label per sample)")
        return [int(label) for label in labels]

    def sample_id(self, index: int) -> str:
        return self.samples[index][2].name[: -len("_flow.flo")]


class FlyingThings3D(FlowDataset):
    """FlyingThings3D (left camera), RAFT's layout.

    Images: root/{frames_cleanpass,frames_finalpass}/{TRAIN,TEST}/{A,B,C}/NNNN/left/XXXX.png.
    Flow: root/optical_flow/{TRAIN,TEST}/{A,B,C}/NNNN/into_future/left/OpticalFlowIntoFuture_XXXX_L.pfm
    pairs frame XXXX with XXXX+1; "into_past" pairs frame XXXX with XXXX-1 using
    into_past/left/OpticalFlowIntoPast_XXXX_L.pfm.
    """

    layout = ("root/frames_{cleanpass,finalpass}/{TRAIN,TEST}/{A,B,C}/NNNN/left/XXXX.png + root/optical_flow/"
              "{TRAIN,TEST}/{A,B,C}/NNNN/into_{future,past}/left/OpticalFlowInto{Future,Past}_XXXX_L.pfm")
    _PASSES = {"frames_cleanpass": "frames_cleanpass", "clean": "frames_cleanpass",
               "frames_finalpass": "frames_finalpass", "final": "frames_finalpass"}

    def __init__(self, root: PathLike, dstype: str = "frames_cleanpass", split: str = "TRAIN",
                 direction: str = "into_future", augmentor: Optional[Augmentor] = None) -> None:
        super().__init__(root, augmentor)
        self.dstype = _choice(dstype, self._PASSES, "FlyingThings3D pass")
        self.split = _choice(split, {"TRAIN": "TRAIN", "TEST": "TEST", "train": "TRAIN", "test": "TEST"},
                             "FlyingThings3D split")
        self.direction = _choice(direction, {"into_future": "into_future", "into_past": "into_past"},
                                 "FlyingThings3D direction")
        image_root = _require_dir(self.root / self.dstype / self.split, self.layout)
        flow_root = _require_dir(self.root / "optical_flow" / self.split, self.layout)
        samples = []
        for sequence in sorted(image_root.glob("*/*/left")):
            relative = sequence.parent.relative_to(image_root)  # e.g. A/0000
            samples += self._sequence_samples(sequence, flow_root / relative / self.direction / "left")
        self._finish(samples, f"FlyingThings3D {self.dstype} {self.split} {self.direction}")

    def _sequence_samples(self, frames_dir: Path, flow_dir: Path) -> list[tuple[Path, Path, Path]]:
        frames = {int(p.stem): p for p in frames_dir.glob("*.png") if p.stem.isdigit()}
        step = 1 if self.direction == "into_future" else -1
        word = "Future" if step == 1 else "Past"
        samples = []
        for number in sorted(frames):
            partner = frames.get(number + step)
            if partner is not None:
                flow = flow_dir / f"OpticalFlowInto{word}_{frames[number].stem}_L.pfm"
                samples.append((frames[number], partner, _require_file(flow, self.layout)))
        return samples


class Middlebury(FlowDataset):
    """Middlebury pairs with ground truth: root holds frame10.png, frame11.png, flow10.flo, or root
    holds sub-folders that do (one sample each; sub-folders without all three files are skipped,
    since Middlebury's "other-data" ships some sequences without ground truth)."""

    layout = "root/{frame10.png,frame11.png,flow10.flo} or root/SEQUENCE/{frame10.png,frame11.png,flow10.flo}"
    _FILES = ("frame10.png", "frame11.png", "flow10.flo")

    def __init__(self, root: PathLike, split: Optional[str] = None, augmentor: Optional[Augmentor] = None) -> None:
        super().__init__(root, augmentor)
        # Only the ground-truth pairs can be evaluated, so there is a single split.
        if split not in (None, "training"):
            raise DatasetError(f"unknown Middlebury split {split!r} (expected None or 'training')")
        folders = [self.root] if self._complete(self.root) else sorted(
            p for p in self.root.iterdir() if p.is_dir() and self._complete(p))
        self._finish([tuple(folder / name for name in self._FILES) for folder in folders], "Middlebury")

    @classmethod
    def _complete(cls, folder: Path) -> bool:
        return all((folder / name).is_file() for name in cls._FILES)

    def sample_id(self, index: int) -> str:
        return self.samples[index][0].parent.name


# --------------------------------------------------------------------------------------------- registry
DatasetFactory = Callable[..., Dataset]


@dataclass(frozen=True)
class DatasetEntry:
    """A named dataset: `factory(root, split=..., augmentor=...)` builds it; `splits` are its canonical
    split names (the dataset classes also accept a few aliases, e.g. "validation" for FlyingChairs)."""

    name: str
    factory: DatasetFactory
    needs_root: bool
    splits: tuple[str, ...]
    default_split: str
    description: str


def _synthetic(root: Optional[PathLike], split: str, augmentor: Optional[Augmentor]) -> Dataset:
    """Synthetic pairs with exact flow; needs no root. "train": 10,000 pairs (seed 0); "val": 32 (seed 1)."""
    if split not in ("val", "train"):
        raise DatasetError(f"synthetic split {split!r} is not one of ('train', 'val')")
    train = split == "train"
    return SyntheticFlow(length=10_000 if train else 32, size=(256, 320), seed=0 if train else 1, augmentor=augmentor)


_SINTEL_SPLITS = ("training", "train", "val")
_ENTRIES = (
    DatasetEntry("sintel-clean", lambda root, split, augmentor: Sintel(root, split, "clean", augmentor),
                 True, _SINTEL_SPLITS, "training", "MPI-Sintel clean pass (val = 5 held-out scenes)"),
    DatasetEntry("sintel-final", lambda root, split, augmentor: Sintel(root, split, "final", augmentor),
                 True, _SINTEL_SPLITS, "training", "MPI-Sintel final pass (val = 5 held-out scenes)"),
    DatasetEntry("kitti", lambda root, split, augmentor: KITTI(root, split, augmentor),
                 True, ("training",), "training", "KITTI 2015 flow, sparse ground truth"),
    DatasetEntry("chairs", lambda root, split, augmentor: FlyingChairs(root, split, augmentor),
                 True, ("train", "val"), "train", "FlyingChairs with chairs_split.txt"),
    DatasetEntry("things-clean", lambda root, split, augmentor: FlyingThings3D(
        root, "frames_cleanpass", split, augmentor=augmentor),
                 True, ("TRAIN", "TEST"), "TRAIN", "FlyingThings3D clean pass, left camera, into the future"),
    DatasetEntry("things-final", lambda root, split, augmentor: FlyingThings3D(
        root, "frames_finalpass", split, augmentor=augmentor),
                 True, ("TRAIN", "TEST"), "TRAIN", "FlyingThings3D final pass, left camera, into the future"),
    DatasetEntry("middlebury", lambda root, split, augmentor: Middlebury(root, split, augmentor),
                 True, ("training",), "training", "Middlebury frame10/frame11/flow10 triplets"),
    DatasetEntry("synthetic", _synthetic, False, ("val", "train"), "val",
                 "synthetic pairs with exact flow (no download)"),
)
# Read-only: a dataset name means the same thing in every process; nothing registers at runtime.
DATASETS: Mapping[str, DatasetEntry] = MappingProxyType({entry.name: entry for entry in _ENTRIES})


def list_datasets() -> list[str]:
    """Sorted names accepted by `build_dataset`."""
    return sorted(DATASETS)


def build_dataset(name: str, root: Optional[PathLike], split: Optional[str] = None,
                  augmentor: Optional[Augmentor] = None) -> Dataset:
    """Dataset `name` (a key of `DATASETS`) at `root`; `split=None` picks the dataset's default split.

    `root` may be None only for datasets that need none (`synthetic`).
    """
    entry = DATASETS.get(name)
    if entry is None:
        close = difflib.get_close_matches(str(name), list(DATASETS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DatasetError(f"unknown dataset {name!r} (expected one of {', '.join(list_datasets())}){hint}")
    if entry.needs_root and root is None:
        raise DatasetError(f"dataset {name!r} needs its root folder, got None")
    return entry.factory(root, split=entry.default_split if split is None else split, augmentor=augmentor)
