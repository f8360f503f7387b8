"""Training from what users have: particle stacks against coordinates, and DeepEM's retraining loop.

    python benchmarks/training_inputs.py [--pack ribosome80s-10028] [--seed 0]

1. **Stacks against coordinates.** The train split's labelled particles and as many random background
   centres (≥ 0.6 box from every particle) are boxed into MRC stacks at twice the particle box, by RELION's
   own extraction (``relion_preprocess``, normalised as RELION normalises) where RELION is installed, else
   by cropping. A model trained from the stacks (``train --positives --negatives-stack``) against one
   trained from the same particles' and background centres' coordinates, both with DeepPicker's patches
   (stacks carry no off-centre views) and the threshold chosen on the valid split: test AP (target:
   within 0.03).
2. **Refine.** A model trained on one labelled micrograph picks two more; its picks there, verified
   against the references (true positives accepted, false positives rejected, as a person verifying them
   would), refine it (``deeppick refine``); against a model trained on all three fully labelled micrographs.

Needs ../shared/realdata. About ten minutes for the ribosome pack on 2 cores.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see deeppick/__init__.py

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from deeppick.datasets import load_dataset
from deeppick.io import concat_picks, make_picks, read_micrograph, write_micrograph
from deeppick.metrics import MATCH_FRACTION, match_picks
from deeppick.patches import PatchConfig, extract_patches, patches_from_stacks, sample_negative_centres
from deeppick.pipeline import PickConfig, evaluate_model, pick_paths
from deeppick.train import TrainConfig
from deeppick.tuning import refine_picker, split_for_threshold, train_picker

from deeppick.benchmark import MATCH_FRACTION_OF_DIAMETER, default_realdata, require_realdata  # noqa: E402
REALDATA = default_realdata()


def test_ap(model, dataset) -> float:
    evaluation, _ = evaluate_model(model, dataset.paths("test"), dataset.picks, config=PickConfig(),
                                   match_px=MATCH_FRACTION_OF_DIAMETER * dataset.diameter_px)
    return evaluation.ap


def background_centres(dataset, paths, box_px: float, seed: int):
    rng = np.random.default_rng(seed)
    tables = []
    for path in paths:
        shape = read_micrograph(path).shape
        refs = dataset.picks_for(path.stem)[["x", "y"]].to_numpy()
        xy = sample_negative_centres(shape, refs, len(refs), min_distance_px=0.6 * box_px, rng=rng,
                                     edge_margin_px=box_px)
        tables.append(make_picks(path.stem, xy[:, 0], xy[:, 1]))
    return concat_picks(tables)


def stacks(work: Path, paths, particles, background, side: int) -> tuple[Path, Path, str]:
    """MRC stacks of the particles and the background, boxed at ``side`` px by RELION where it is installed."""
    import mrcfile

    if shutil.which("relion_preprocess"):
        mics = work / "Micrographs"
        mics.mkdir(parents=True)
        for path in paths:
            write_micrograph(mics / f"{path.stem}.mrc", read_micrograph(path), pixel_size_a=1.0)
        lines = ["", "data_optics", "", "loop_", "_rlnOpticsGroupName #1", "_rlnOpticsGroup #2",
                 "_rlnMicrographPixelSize #3", "_rlnVoltage #4", "_rlnSphericalAberration #5",
                 "_rlnAmplitudeContrast #6", "opticsGroup1 1 1.0 300 2.7 0.1", "", "data_micrographs", "", "loop_",
                 "_rlnMicrographName #1", "_rlnOpticsGroup #2", *(f"Micrographs/{p.stem}.mrc 1" for p in paths), ""]
        (work / "micrographs.star").write_text("\n".join(lines))
        out = {}
        for name, table in (("good", particles), ("bad", background)):
            coords = work / f"coords-{name}"
            for stem, rows in table.groupby("micrograph"):
                (coords / "Micrographs").mkdir(parents=True, exist_ok=True)
                text = "\n".join(["", "data_", "", "loop_", "_rlnCoordinateX #1", "_rlnCoordinateY #2",
                                  *(f"{x:.2f}\t{y:.2f}" for x, y in zip(rows["x"], rows["y"]))]) + "\n\n"
                (coords / "Micrographs" / f"{stem}.star").write_text(text)
            subprocess.run(["relion_preprocess", "--i", "micrographs.star", "--coord_dir", f"coords-{name}/",
                            "--coord_suffix", ".star", "--extract", "--extract_size", str(side), "--norm",
                            "--bg_radius", str(int(side * 0.375)), "--part_star", f"{name}.star", "--part_dir",
                            f"Extract-{name}/"], cwd=work, check=True, capture_output=True)
            images = [mrcfile.read(f) for f in sorted((work / f"Extract-{name}" / "Micrographs").glob("*.mrcs"))]
            out[name] = work / f"{name}.mrcs"
            with mrcfile.new(out[name]) as mrc:
                mrc.set_data(np.concatenate([i if i.ndim == 3 else i[None] for i in images]).astype(np.float32))
        return out["good"], out["bad"], "RELION's extraction (relion_preprocess --extract --norm)"
    out = {}
    for name, table in (("good", particles), ("bad", background)):
        crops = []
        for path in paths:
            image = np.pad(read_micrograph(path), side)
            for x, y in table.loc[table["micrograph"] == path.stem, ["x", "y"]].to_numpy():
                cx, cy = int(round(x)) + side, int(round(y)) + side
                crops.append(image[cy - side // 2:cy + side // 2, cx - side // 2:cx + side // 2])
        out[name] = work / f"{name}.mrcs"
        with mrcfile.new(out[name]) as mrc:
            mrc.set_data(np.stack(crops).astype(np.float32))
    return out["good"], out["bad"], "cropping (RELION not installed)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pack", default="ribosome80s-10028")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    require_realdata(REALDATA)
    dataset = load_dataset(REALDATA / args.pack)
    train, held_out = split_for_threshold(dataset)
    box_px = dataset.default_box_px()
    match_px = MATCH_FRACTION * dataset.diameter_px
    config = TrainConfig(seed=args.seed)
    plain = PatchConfig(negative_ratio=0.0, off_centre_ratio=0.0)  # only the centres given, as in the stacks

    work = Path(tempfile.mkdtemp(prefix="deeppick-inputs-"))
    try:
        particles = dataset.picks[dataset.picks["micrograph"].isin([p.stem for p in train])]
        background = background_centres(dataset, train, box_px, args.seed)
        side = 2 * int(round(box_px))
        good, bad, how = stacks(work, train, particles, background, side)
        from_coords = train_picker(extract_patches(train, particles, box_px, config=plain, negatives=background,
                                                   seed=args.seed), held_out=(held_out, dataset.picks),
                                   train_config=config, match_px=match_px)
        from_stacks = train_picker(patches_from_stacks(good, bad, box_px), held_out=(held_out, dataset.picks),
                                   train_config=config, match_px=match_px)
        coords_ap, stacks_ap = test_ap(from_coords, dataset), test_ap(from_stacks, dataset)
        print(f"1. {dataset.name}: {len(particles)} particles and {len(background)} background centres of "
              f"{len(train)} micrographs; stacks of {side} px by {how}")
        print(f"   test AP from coordinates {coords_ap:.3f}, from stacks {stacks_ap:.3f}: difference "
              f"{stacks_ap - coords_ap:+.3f} (target within 0.03)", flush=True)

        first, more = train[:1], train[1:3]
        one = train_picker(extract_patches(first, dataset.picks, box_px, seed=args.seed),
                           held_out=(held_out, dataset.picks), train_config=config, match_px=match_px)
        picks = pick_paths(one, more)
        accepted, rejected = [], []
        for path in more:
            mine = picks[picks["micrograph"] == path.stem]
            refs = dataset.picks_for(path.stem)[["x", "y"]].to_numpy()
            match = match_picks(mine[["x", "y"]].to_numpy(), mine["score"].to_numpy(), refs,
                                MATCH_FRACTION_OF_DIAMETER * dataset.diameter_px)
            tp = match.tp_in_input_order()
            accepted.append(mine[tp])
            rejected.append(mine[~tp])
        accepted, rejected = concat_picks(accepted), concat_picks(rejected)
        refined = refine_picker(one, more, accepted, rejected, held_out=(held_out, dataset.picks), train_config=config,
                                match_px=match_px)
        three = train_picker(extract_patches(train[:3], dataset.picks, box_px, seed=args.seed),
                             held_out=(held_out, dataset.picks), train_config=config, match_px=match_px)
        n_refs = int(dataset.picks["micrograph"].isin([p.stem for p in more]).sum())
        print(f"2. trained on {first[0].stem}: test AP {test_ap(one, dataset):.3f}; its picks on {len(more)} more "
              f"micrographs ({n_refs} references): {len(accepted)} accepted, {len(rejected)} rejected")
        print(f"   refined on them: test AP {test_ap(refined, dataset):.3f}; trained on all {len(train[:3])} fully "
              f"labelled: {test_ap(three, dataset):.3f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
