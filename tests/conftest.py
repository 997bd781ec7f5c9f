"""Test configuration: OpenMP must not spin on a shared 2-core machine."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real third-party samples folder (``../shared/data``); skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real samples folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def parity(shared_data: Path) -> Path:
    """The reference-parity fixtures (``shared/data/reference_parity``); skips when absent."""
    d = shared_data / "reference_parity"
    if not d.is_dir():
        pytest.skip(f"{d} is absent")
    return d


@pytest.fixture(scope="session")
def tiny_convert_args() -> list[str]:
    """``hotformerloc convert`` options for the ``small`` fixture (its ours_equivalent)."""
    return [
        "--variant",
        "hotformerloc-tiny",
        "--set",
        "octree_depth=7",
        "--set",
        "normalize_points=false",
    ]
