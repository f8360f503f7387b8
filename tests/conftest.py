"""Shared fixtures: the real annotated packs (skipped with a reason when absent) and small images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

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
