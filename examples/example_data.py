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
    """The real pack ``pack`` if present, else a simulated stand-in under ``out`` (and says which).

    The stand-in is made to show something: 12 micrographs of 768² px of a bell-shaped molecule of 56 px
    at SNR 0.05 (Baxter et al.'s typical cryo-EM noise), every contaminant the simulator draws (ice, a
    carbon edge, filaments, aggregates, broken particles) at twice the usual rate, split 6 train / 2 valid /
    4 test; simulated once (the same seed gives the same bytes).
    """
    real = REALDATA / pack
    if (real / "dataset.json").is_file():
        print(f"using the real pack {real}")
        return real
    from deeppick.simulate import SimConfig, simulate_dataset

    sim = out / "simulated-bell"
    print(f"no {real}: using SIMULATED micrographs instead (figures below are for simulated data), in {sim}")
    if not (sim / "dataset.json").is_file():
        config = SimConfig(molecule="bell", size_px=768, diameter_px=56, n_particles=50, snr=0.05, contamination=2.0)
        simulate_dataset(sim, config, n_micrographs=12, seed=1, split_fractions=(0.5, 0.17, 0.33), overwrite=True)
    return sim
