"""Shared fixtures: where the real data lives. Tiny models are in tiny.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    """The real GLUE folder: $BERTLOTTERY_GLUE_DIR (set by .ci/run), else ../shared/data/glue.

    A test that needs it fails, never skips, when it cannot be found.
    """
    env = os.environ.get("BERTLOTTERY_GLUE_DIR")
    path = Path(env) if env else REPO.parent / "shared" / "data" / "glue"
    if not (path / "RTE" / "dev.tsv").is_file():
        source = "BERTLOTTERY_GLUE_DIR" if env else "the default next to the checkout"
        pytest.fail(f"real GLUE data not found at {path} ({source}); set BERTLOTTERY_GLUE_DIR to ../shared/data/glue")
    return path


@pytest.fixture
def reference_dir() -> Path:
    """The paper's released masks: $BERTLOTTERY_REFERENCE_DIR, else ../shared/reference/prasanna2020."""
    env = os.environ.get("BERTLOTTERY_REFERENCE_DIR")
    path = Path(env) if env else REPO.parent / "shared" / "reference" / "prasanna2020"
    if not (path / "masks" / "heads_mlps").is_dir():
        pytest.fail(f"released masks not found at {path}: set BERTLOTTERY_REFERENCE_DIR")
    return path
