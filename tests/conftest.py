"""Shared fixtures: the real annotated packs (skipped with a reason when absent) and small images."""

from __future__ import annotations

import os
from pathlib import Path

# On a shared 2-core machine, OpenMP threads that spin while waiting make torch ~15× slower under load
# (measured for the scanner tests); passive waiting costs little on an idle machine. Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

REALDATA = Path(os.environ.get("DEEPPICK_REALDATA", Path(__file__).resolve().parents[2] / "shared" / "realdata"))
ANNOTATED_PACKS = ("ribosome80s-10028", "betagal-10017", "cryoppp-10059")

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def realdata() -> Path:
    """Folder of the real packs; tests that need it skip, saying so, where a clone has no ../shared."""
    if not (REALDATA / "README.md").is_file():
        pytest.skip(f"needs the real annotated packs in {REALDATA} (../shared/realdata beside the project)")
    return REALDATA


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
