"""Shared test fixtures: the real Middlebury pair from ../shared (never copied into the repo)."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUBBERWHALE = REPO.parent / "shared" / "data" / "middlebury" / "RubberWhale"


@pytest.fixture
def rubberwhale() -> Path:
    """Folder with frame10.png, frame11.png and flow10.flo (584x388), or skip."""
    if not (RUBBERWHALE / "flow10.flo").is_file():
        pytest.skip(f"real Middlebury data not found at {RUBBERWHALE}")
    return RUBBERWHALE
