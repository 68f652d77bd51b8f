"""Shared fixtures: where the real data lives. Tiny models are in tiny.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tiny import save_tiny_model

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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random BERT with the real uncased WordPiece tokenizer of the packaged MiniLM."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-bert"), "bert")


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A scratch folder with its own tokenisation cache."""
    monkeypatch.setenv("BERTLOTTERY_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture(scope="session")
def chromium() -> str:
    """A real headless-capable Chromium: $BERTLOTTERY_CHROMIUM, else `chromium` on PATH (Debian's
    package, which the README's test command installs). Fails, never skips, when it is missing."""
    import shutil

    path = os.environ.get("BERTLOTTERY_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path or not Path(path).exists():
        pytest.fail("Chromium not found: install Debian's chromium package (apt-get install chromium) "
                    "or set BERTLOTTERY_CHROMIUM to a Chromium binary")
    return path


# Flags for Chromium on a machine with a closed network and no screen (the browser tests use them).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
