"""Shared fixtures: the committed recordings and one loaded model for the whole session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
AUDIO = FIXTURES / "audio"


@pytest.fixture(scope="session")
def audio_dir() -> Path:
    return AUDIO


@pytest.fixture(scope="session")
def references() -> dict[str, str]:
    """Reference transcript of each committed recording, by file name."""
    rows = [json.loads(line) for line in (AUDIO / "manifest.jsonl").read_text().splitlines()]
    return {row["audio"]: row["text"] for row in rows}


@pytest.fixture(scope="session")
def transcriber():
    """The packaged tiny.en model, loaded once (about 0.5 s, 100 MB)."""
    from ctxasr import Transcriber

    return Transcriber()
