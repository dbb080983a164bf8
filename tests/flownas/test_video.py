"""Video files through OpenCV: probing, RGB frame order, atomic side-by-side writing, one-line errors."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from flownas.data.video import (DEFAULT_FPS, check_video_target, is_video, iter_video_frames, probe_video,
                                video_writer)
from flownas.errors import UserInputError

RED, BLUE = (255, 0, 0), (0, 0, 255)  # RGB


def _write_bgr_video(path: Path, frames: list[np.ndarray], fps: float = 12.0) -> None:
    """Written with OpenCV directly (BGR), independently of the module under test."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()


def _solid(height: int, width: int, rgb: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.uint8), (height, width, 3)).copy()


def test_frames_come_back_rgb_in_order(tmp_path: Path) -> None:
    path = tmp_path / "in.mp4"
    # BGR on disk: a red frame is (0, 0, 255) for OpenCV
    _write_bgr_video(path, [_solid(64, 80, RED[::-1]), _solid(64, 80, BLUE[::-1]), _solid(64, 80, RED[::-1])])
    info = probe_video(path)
    assert (info.height, info.width, info.fps, info.frame_count) == (64, 80, 12.0, 3)
    frames = list(iter_video_frames(path))
    assert len(frames) == 3 and all(f.shape == (64, 80, 3) and f.dtype == np.uint8 for f in frames)
    # mp4v is lossy: solid colours survive within a few levels
    np.testing.assert_allclose(frames[0].reshape(-1, 3).mean(0), RED, atol=8)
    np.testing.assert_allclose(frames[1].reshape(-1, 3).mean(0), BLUE, atol=8)


def test_unreadable_and_too_short_videos_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="video file not found"):
        probe_video(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(UserInputError, match="junk.mp4") as info:
        probe_video(junk)
    assert "\n" not in str(info.value)
    single = tmp_path / "single.mp4"
    _write_bgr_video(single, [_solid(64, 64, RED)])
    with pytest.raises(UserInputError, match="at least two frames for optical flow, decoded 1"):
        probe_video(single)


def test_writer_round_trip_size_count_and_colour(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    with video_writer(path, 8.0, 48, 96) as writer:
        for _ in range(3):
            writer.write(np.concatenate([_solid(48, 48, RED), _solid(48, 48, BLUE)], axis=1))
    assert writer.frames == 3
    capture = cv2.VideoCapture(str(path))
    size = (capture.get(cv2.CAP_PROP_FRAME_HEIGHT), capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    assert size == (48, 96) and capture.get(cv2.CAP_PROP_FPS) == 8.0
    capture.release()
    frames = list(iter_video_frames(path))
    assert len(frames) == 3
    np.testing.assert_allclose(frames[0][:, 8:40].reshape(-1, 3).mean(0), RED, atol=8)
    np.testing.assert_allclose(frames[0][:, 56:88].reshape(-1, 3).mean(0), BLUE, atol=8)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]  # no temporary file left beside it


def test_writer_is_atomic_on_error(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    with pytest.raises(ValueError, match="does not match"):
        with video_writer(path, 8.0, 48, 64) as writer:
            writer.write(_solid(48, 64, RED))
            writer.write(_solid(32, 64, RED))  # wrong size: the video must not appear
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UserInputError, match="no frames"):
        with video_writer(path, 8.0, 48, 64):
            pass
    assert list(tmp_path.iterdir()) == []


def test_target_and_suffix_checks() -> None:
    assert is_video("a/B.MP4") and is_video("x.avi") and not is_video("frame10.png")
    assert check_video_target("x.mp4") == Path("x.mp4")
    with pytest.raises(UserInputError, match=r"--video x\.gif: unsupported video type"):
        check_video_target("x.gif")
    assert DEFAULT_FPS > 0
