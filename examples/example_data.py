"""The data the examples run on: a real annotated pack when ``../shared/realdata`` is there, else a
small simulated stand-in, so every example runs from the project alone and downloads nothing."""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT.parent / "shared" / "realdata"


def example_parser(doc: str) -> argparse.ArgumentParser:
    """The options every example shares: ``--pack`` (which real pack) and ``--out`` (where results go)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--pack", default="ribosome80s-10028", help="folder name in ../shared/realdata")
    parser.add_argument("--out", type=Path, default=ROOT / "demo-output", help="where results go")
    return parser


def find_dataset(pack: str, out: Path) -> Path:
    """The real pack ``pack`` if present, else a simulated globular-particle dataset under ``out``.

    The stand-in has 10 micrographs of 768² px (particles of 48 px, SNR 0.3, contaminants included)
    split 5 train / 2 valid / 3 test, and is simulated once (the same seed gives the same bytes).
    """
    real = REALDATA / pack
    if (real / "dataset.json").is_file():
        print(f"using the real pack {real}")
        return real
    from deeppick.simulate import SimConfig, simulate_dataset

    sim = out / "simulated-globular"
    if not (sim / "dataset.json").is_file():
        print(f"no {real}: simulating a stand-in data set in {sim}")
        config = SimConfig(molecule="globular", size_px=768, diameter_px=48, n_particles=60, snr=0.3)
        simulate_dataset(sim, config, n_micrographs=10, seed=1, split_fractions=(0.5, 0.2, 0.3), overwrite=True)
    return sim
