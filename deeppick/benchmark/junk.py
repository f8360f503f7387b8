"""Does the picker pick junk? Simulated micrographs with a carbon edge and ice through them, picked with no labels.

:func:`junk_check` simulates micrographs of a molecule with every one crossed by the carbon film's edge
and with ice crystals (the simulator's contaminants, with their exact masks), autopicks them with a
general model (one self-training round), and counts the picks above the threshold that lie within half
a box of a contaminant: for the general model and after self-training, beside the share of the
micrograph's area that lies that near (what picks scattered at random would give).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..simulate import SimConfig

JUNK_SIM = SimConfig(molecule="apoferritin-like", size_px=1024, diameter_px=56.0, n_particles=40, snr=0.1,
                     contaminants=("carbon", "ice"), contamination=4.0)  # carbon on every micrograph


def junk_check(model, work: str | os.PathLike, *, n_micrographs: int = 4, sim: SimConfig = JUNK_SIM,
               seed: int = 0, train_config=None, pick_config=None, config=None) -> dict:
    """Autopick simulated micrographs with carbon and ice (``config``: AutopickConfig's defaults, the seed
    ``seed``); the share of picks near a contaminant, before and after self-training, and of the area near one."""
    from scipy.ndimage import distance_transform_edt

    from ..autopick import AutopickConfig, autopick
    from ..io import write_micrograph
    from ..metrics import match_picks
    from ..pipeline import PickConfig
    from ..pretrain import PRETRAIN_TRAINING
    from ..simulate import simulate_micrograph

    folder = Path(work) / "junk-check"
    box_px = float(sim.resolved_diameter_px)
    near_px = box_px / 2
    distances, labels = {}, {}
    seeds = np.random.SeedSequence(seed).spawn(n_micrographs)
    for i, child in enumerate(seeds):
        micrograph = simulate_micrograph(sim, rng=np.random.default_rng(child), keep_layers=True)
        stem = f"junk_{i:02d}"
        write_micrograph(folder / f"{stem}.mrc", micrograph.image)
        distances[stem] = distance_transform_edt(~micrograph.contaminant_mask)
        labels[stem] = micrograph.centres_xy
    config = replace(config or AutopickConfig(), seed=seed)
    result = autopick(model, folder, box_px=box_px, config=config,
                      train_config=train_config or PRETRAIN_TRAINING, pick_config=pick_config or PickConfig())
    threshold = result.model.threshold

    def shares(candidates) -> dict:
        kept = candidates[candidates["score"] >= threshold]
        near = recalled = 0
        for stem, picks in kept.groupby("micrograph"):
            rows = np.clip(picks["y"].round().astype(int), 0, distances[stem].shape[0] - 1)
            cols = np.clip(picks["x"].round().astype(int), 0, distances[stem].shape[1] - 1)
            near += int((distances[stem][rows, cols] < near_px).sum())
            recalled += match_picks(picks[["x", "y"]].to_numpy(float), picks["score"].to_numpy(float),
                                    labels[stem], 0.25 * box_px).n_tp
        n_labels = sum(len(xy) for xy in labels.values())
        return {"picks": int(len(kept)), "near_junk": near / max(len(kept), 1), "recall": recalled / max(n_labels, 1)}

    area = float(np.mean([np.mean(d < near_px) for d in distances.values()]))
    return {"micrographs": n_micrographs, "box_px": box_px, "area_near_junk": area, "threshold": threshold,
            "general": shares(result.candidates[0]), "self_trained": shares(result.candidates[-1]),
            "rolled_back": result.skipped, "disc_rank": config.disc_rank, "sim": replace(sim).to_dict()}
