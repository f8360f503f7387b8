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

from deeppick.pipeline import PickConfig  # noqa: E402
from deeppick.scan import ScanConfig  # noqa: E402
from deeppick.train import TrainConfig  # noqa: E402

REALDATA = Path(os.environ.get("DEEPPICK_REALDATA", Path(__file__).resolve().parents[2] / "shared" / "realdata"))
ANNOTATED_PACKS = ("ribosome80s-10028", "betagal-10017", "cryoppp-10059")

torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped without one; benchmarks/gpu_check.sh runs "
                                       "them)")

SIM_DIAMETER_PX = 40  # the particles of ``sim_dataset``




@pytest.fixture(scope="session")
def realdata() -> Path:
    """Folder of the real packs; tests that need it skip, saying so, where a clone has no ../shared."""
    if not (REALDATA / "README.md").is_file():
        pytest.skip(f"needs the real annotated packs in {REALDATA} (../shared/realdata beside the project)")
    return REALDATA


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# A small simulated dataset and a model trained on its train split, shared by the tests of picking,
# batches and tuning.


@pytest.fixture(scope="session")
def sim_dataset(tmp_path_factory):
    """Six simulated 320² micrographs of a globular particle (3 train, 1 valid, 2 test)."""
    from deeppick.datasets import load_dataset
    from deeppick.simulate import SimConfig, simulate_dataset

    root = tmp_path_factory.mktemp("sim") / "globular"
    config = SimConfig(molecule="globular", size_px=320, diameter_px=SIM_DIAMETER_PX, n_particles=14, snr=1.0,
                       contaminants=())
    return load_dataset(simulate_dataset(root, config, n_micrographs=6, seed=3, split_fractions=(0.5, 0.17, 0.33)))


@pytest.fixture(scope="session")
def trained(sim_dataset, tmp_path_factory):
    """The file of a model trained on ``sim_dataset``'s train split (no threshold, no chosen post-processing)."""
    from deeppick.model import save_model
    from deeppick.patches import extract_dataset_patches
    from deeppick.train import TrainConfig, train_model

    patches = extract_dataset_patches(sim_dataset, "train", box_px=SIM_DIAMETER_PX, seed=0)
    model = train_model(patches, TrainConfig(epochs=12, seed=0, optimizer="adam", patience=12), progress=False)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(model, path)
    return path


# Two simulated molecules, a general model pretrained on them, and a third molecule to autopick; tiny
# settings (one rotation, a coarse grid, two epochs) keep the pretraining and autopick tests quick.
FAST_PICK = PickConfig(scan=ScanConfig(step_px=8.0, rotations=False))
FAST_TRAIN = TrainConfig(epochs=2, batch_size=32)


def _sim(folder: Path, molecule: str, diameter_px: float, n_particles: int, seed: int,
         n_micrographs: int = 3) -> Path:
    from deeppick.simulate import SimConfig, simulate_dataset

    config = SimConfig(molecule=molecule, size_px=256, diameter_px=diameter_px, n_particles=n_particles, snr=0.5,
                       contamination=0.0)
    return simulate_dataset(folder / molecule, config, n_micrographs=n_micrographs, seed=seed,
                            split_fractions=(0.5, 0.5, 0.0) if n_micrographs == 2 else (2 / 3, 1 / 3, 0.0))


@pytest.fixture(scope="session")
def sources(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("zoo")
    return [_sim(root, "ring", 48, 12, 1), _sim(root, "bell", 64, 8, 2)]


@pytest.fixture(scope="session")
def general(sources):
    from deeppick.pretrain import PretrainConfig, pretrain

    return pretrain(sources, config=PretrainConfig(total_positives=24, box_factors=(1.0,)), train_config=FAST_TRAIN,
                    pick_config=FAST_PICK)


@pytest.fixture(scope="session")
def target(tmp_path_factory) -> Path:
    """A new molecule with its coordinate files (which autopick must never read)."""
    return _sim(tmp_path_factory.mktemp("target"), "globular", 56, 10, 3, n_micrographs=2)
