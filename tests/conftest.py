"""Shared fixtures: where the real data lives. Tiny models are in tiny.py."""

from __future__ import annotations

import os
from pathlib import Path

# The suite runs in parallel (pytest-xdist, `-n auto --dist loadfile` in pyproject.toml): one worker
# process per core, each test file on one worker. Each worker gets its share of the cores and OpenMP
# threads that sleep while they wait, set here before torch starts its thread pool, so that the workers
# (and the CLI processes their tests start, which inherit this environment) do not fight over cores
# (bertlottery.threads explains the collapse when they do).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    from bertlottery.threads import usable_cores

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ["OMP_NUM_THREADS"] = str(max(1, usable_cores() // _WORKERS))

import pytest  # noqa: E402

from tiny import save_tiny_model  # noqa: E402

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

# How long a browser test waits for the page before it fails, longer than Playwright's 30 s: in the suite's
# parallel run on CI's two cores Chromium's processes share them with two workers in training (here, with a
# browser test at low priority beside four busy processes, it took 64 s instead of 10). A wait ends as soon
# as its condition holds, so a longer bound slows only a test that fails.
BROWSER_WAIT_MS = 120_000


def new_page(browser, **options):
    """``browser.new_page(**options)`` whose waits, clicks and navigations time out after ``BROWSER_WAIT_MS``."""
    page = browser.new_page(**options)
    page.set_default_timeout(BROWSER_WAIT_MS)
    return page


def pytest_xdist_auto_num_workers(config) -> int | None:
    """``-n auto``: one worker per core this process may run on (its affinity, where xdist counts the whole
    machine's physical cores), and at most one per 3 GiB of available memory (a worker holds torch,
    transformers and, at most, a bert-base-sized model in training). ``PYTEST_XDIST_AUTO_NUM_WORKERS``
    still decides where it is set."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist's own hook reads it
    from bertlottery.threads import usable_cores

    workers = usable_cores()
    try:
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        workers = min(workers, int(meminfo["MemAvailable"].split()[0]) // (3 * 1024 * 1024))
    except (OSError, KeyError, ValueError):
        pass  # no /proc (macOS, Windows): the cores alone
    return max(1, workers)


# Files that take minutes go to the workers first, so that the rest of the suite runs beside them and the
# workers finish together (measured on 2 cores, one thread each: test_real_data.py about 15 minutes, most of
# it the README's quickstart study; test_families.py about 4, the MPNet-base fine-tuning).
FIRST = ("test_real_data.py", "test_families.py")


def pytest_collection_modifyitems(items) -> None:
    def rank(item) -> int:
        name = item.path.name
        return FIRST.index(name) if name in FIRST else len(FIRST)

    items.sort(key=rank)  # stable: the order inside each file, and of the other files, is kept
