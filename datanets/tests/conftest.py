from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT
