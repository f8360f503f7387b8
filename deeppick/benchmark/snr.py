"""Where picking breaks as the signal fades: train and test on simulated micrographs at each SNR.

DeepEM (Fig. 6) and crYOLO (Fig. 6) trace their pickers' accuracy as the SNR of simulated micrographs
falls from 0.1 towards 0.001. :func:`snr_sweep` does the same with deeppick's training recipe: at each
SNR one simulated data set (same molecule, same seeds, only the noise differs), a model trained on its
train split with the threshold chosen on its valid split, and the AP on its test split.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

from ..pipeline import PickConfig
from ..simulate import SimConfig
from ..train import TrainConfig

SNRS = (0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)  # DeepEM's and crYOLO's range
SPLIT = (0.6, 0.2, 0.2)  # train, valid, test micrographs of each data set
BROKEN_AP = 0.5  # below this AP the picker is called broken at that SNR


def snr_sweep(work: str | os.PathLike, *, snrs=SNRS, sim: SimConfig = SimConfig(size_px=1024, n_particles=40),
              n_micrographs: int = 10, train_config: TrainConfig = TrainConfig(),
              pick_config: PickConfig = PickConfig(), seed: int = 0, progress: bool = False) -> dict:
    """Train and test at each SNR of ``snrs``; returns the figures (one row per SNR) and where AP breaks.

    Data sets go to ``work/snr-<SNR>`` and are reused by a rerun. Each is ``n_micrographs`` micrographs of
    ``sim`` at that SNR, split by :data:`SPLIT`; the picker boxes the particle (box = diameter) and is
    evaluated at 0.2 box.
    """
    from ..datasets import load_dataset
    from ..metrics import MATCH_FRACTION
    from ..patches import extract_patches
    from ..pipeline import evaluate_model
    from ..simulate import simulate_dataset
    from ..tuning import train_picker

    rows = []
    for snr in snrs:
        start = time.perf_counter()
        folder = Path(work) / f"snr-{snr:g}"
        if not (folder / "dataset.json").is_file():
            simulate_dataset(folder, replace(sim, snr=snr, noise_level=None), n_micrographs=n_micrographs,
                             seed=seed, split_fractions=SPLIT, overwrite=True)
        dataset = load_dataset(folder)
        box_px = float(dataset.default_box_px())
        patches = extract_patches(dataset.paths("train"), dataset.picks, box_px, seed=seed, dataset=dataset.name)
        match_px = MATCH_FRACTION * box_px
        model = train_picker(patches, held_out=(dataset.paths("valid"), dataset.picks), train_config=train_config,
                             pick_config=pick_config, match_px=match_px, progress=progress)
        evaluation, _ = evaluate_model(model, dataset.paths("test"), dataset.picks, config=pick_config,
                                       match_px=match_px)
        rows.append({"snr": snr, "ap": evaluation.ap, "precision": evaluation.precision,
                     "recall": evaluation.recall, "f2": evaluation.f2, "threshold": model.threshold,
                     "val_patch_accuracy": model.info.get("val_accuracy"), "references": evaluation.n_refs,
                     "seconds": time.perf_counter() - start})
    broken = next((row["snr"] for row in rows if row["ap"] < BROKEN_AP), None)
    return {"molecule": sim.molecule, "size_px": list(sim.size_px), "particles_per_micrograph": sim.n_particles,
            "n_micrographs": n_micrographs, "split": list(SPLIT), "rows": rows, "broken_below_ap": BROKEN_AP,
            "first_snr_below": broken}


def snr_table(figures: dict) -> str:
    """The sweep as the lines ``deeppick benchmark snr`` prints."""
    lines = [f"SNR sweep: {figures['molecule']}, {figures['n_micrographs']} simulated micrographs of "
             f"{figures['size_px'][0]}² px per SNR (split {'/'.join(f'{f:g}' for f in figures['split'])})",
             f"{'SNR':>8} {'AP':>7} {'P':>7} {'R':>7} {'F2':>7} {'threshold':>10} {'s':>6}"]
    for row in figures["rows"]:
        threshold = "–" if row["threshold"] is None else f"{row['threshold']:.3g}"
        lines.append(f"{row['snr']:>8g} {row['ap']:>7.3f} {row['precision']:>7.3f} {row['recall']:>7.3f} "
                     f"{row['f2']:>7.3f} {threshold:>10} {row['seconds']:>6.0f}")
    broken = figures["first_snr_below"]
    lines.append(f"AP first falls below {figures['broken_below_ap']:g} at SNR {broken:g}" if broken is not None
                 else f"AP stays at or above {figures['broken_below_ap']:g} at every SNR tried")
    return "\n".join(lines)
