"""Video files through OpenCV: frames in (RGB, streamed) for `infer VIDEO`, side-by-side videos out.

OpenCV decodes to BGR; everything here speaks RGB like `flow_io.read_image`, so the model never sees swapped
channels. Frames are streamed, never held all at once: a long video costs two frames of memory.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ..errors import UserInputError
from ..fileio import atomic_path
from .flow_io import PathLike

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm")
# Containers that OpenCV's bundled FFmpeg writes with the MPEG-4 Part 2 ("mp4v") codec.
WRITE_SUFFIXES = (".mp4", ".avi", ".mov", ".m4v")
DEFAULT_FPS = 10.0  # for frame folders, and videos whose header carries no frame rate


@dataclass(frozen=True)
class VideoInfo:
    path: str
    fps: float
    height: int
    width: int
    frame_count: int  # from the container header: an estimate, some formats do not store it exactly


def is_video(path: PathLike) -> bool:
    """A path whose suffix names a video container (by name only: whether it decodes is `probe_video`'s job)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _open(path: Path) -> cv2.VideoCapture:
    if not path.is_file():
        raise UserInputError(f"{path}: video file not found")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise UserInputError(f"{path}: OpenCV cannot open this video (unsupported or damaged file)")
    return capture


def probe_video(path: PathLike) -> VideoInfo:
    """Frame rate, size and frame count of a video, after checking two frames decode; one-line errors otherwise.

    Called before any model is loaded, so a bad file fails in a second, not after minutes of set-up.
    """
    path = Path(path)
    capture = _open(path)
    try:
        frames = [capture.read()[1] for _ in range(2)]
        fps = capture.get(cv2.CAP_PROP_FPS)
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()
    decoded = sum(frame is not None for frame in frames)
    if decoded < 2:
        raise UserInputError(f"{path}: need at least two frames for optical flow, decoded {decoded}")
    height, width = frames[0].shape[:2]
    return VideoInfo(str(path), float(fps) if fps and fps > 0 else DEFAULT_FPS, height, width, max(count, 2))


def iter_video_frames(path: PathLike) -> Iterator[np.ndarray]:
    """Every frame of a video as `uint8 [H, W, 3]` RGB, in order, decoded one at a time."""
    capture = _open(Path(path))
    try:
        while True:
            ok, frame = capture.read()
            if not ok or frame is None:
                return
            if frame.ndim == 2:
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
            yield np.ascontiguousarray(frame[:, :, 2::-1])  # BGR(A) -> RGB
    finally:
        capture.release()


def check_video_target(path: PathLike) -> Path:
    """The output video path, if its container is one `video_writer` can write; a one-line error otherwise."""
    path = Path(path)
    if path.suffix.lower() not in WRITE_SUFFIXES:
        raise UserInputError(f"--video {path}: unsupported video type (expected {', '.join(WRITE_SUFFIXES)})")
    return path


class _RGBWriter:
    """Appends RGB frames of one fixed size to an open cv2.VideoWriter."""

    def __init__(self, writer: cv2.VideoWriter, height: int, width: int) -> None:
        self._writer, self.size, self.frames = writer, (height, width), 0

    def write(self, rgb: np.ndarray) -> None:
        if rgb.shape[:2] != self.size or rgb.dtype != np.uint8:
            raise ValueError(f"video frame {rgb.shape} {rgb.dtype} does not match the video's uint8 {self.size}")
        self._writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
        self.frames += 1


@contextmanager
def video_writer(path: PathLike, fps: float, height: int, width: int) -> Iterator[_RGBWriter]:
    """Write an mp4v video atomically: frames go to a temporary file beside `path` (with the same suffix,
    since OpenCV picks the container from it), renamed over `path` only when the block finishes; on an
    error nothing appears at `path`. An empty video (no frame written) is an error too."""
    path = check_video_target(path)
    with atomic_path(path) as tmp:
        staged = tmp.with_name(tmp.name + path.suffix)
        writer = cv2.VideoWriter(str(staged), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
        try:
            if not writer.isOpened():
                raise UserInputError(f"--video {path}: OpenCV cannot write an mp4v video here "
                                     "(no FFmpeg video backend in this OpenCV build?)")
            frames = _RGBWriter(writer, height, width)
            yield frames
            writer.release()
            if frames.frames == 0:
                raise UserInputError(f"--video {path}: no frames to write")
            os.replace(staged, tmp)
        finally:
            writer.release()
            if staged.exists():
                staged.unlink()
