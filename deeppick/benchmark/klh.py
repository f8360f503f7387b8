"""DeepEM's KLH protocol: train on the first 50 micrographs of KLH Dataset I, test on the other 32.

KLH Dataset I (NRAMM; ``deeppick fetch klh-dataset-1``) holds 82 defocus pairs of 2048² px micrographs at
2.2 Å/px: ``*.001.mrc`` near to focus, ``*.002.mrc`` far from focus, and manual picks of side views.
DeepEM (Zhu et al. 2017) trained on 800 particle and 800 background patches from the first 50
far-from-focus micrographs, boxed at 272 px, tested on the other 32 and reported precision ≈ recall ≈ 0.90.

:func:`find_klh_data` reads a folder as users have the data (micrographs, and manual picks as EMAN
``.box``, STAR or any format :func:`deeppick.io.read_picks` reads, named after the micrograph or after
the pair) and says what it found and what is missing. :func:`klh_protocol` runs the protocol with
deeppick's training recipe; :func:`simulate_klh` writes KLH-like simulated data in the same layout, for
when the real data is not at hand (every output then says it is synthetic).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DatasetError, DeepPickError
from ..io import FORMAT_SUFFIX, MICROGRAPH_SUFFIXES, concat_picks, micrograph_stem, read_picks
from ..pipeline import PickConfig
from ..train import TrainConfig

KLH_BOX_PX = 272.0  # DeepEM's box for KLH at 2.2 Å/px
KLH_TRAIN_MICROGRAPHS = 50  # DeepEM: the first 50 micrographs train, the other 32 test
KLH_PARTICLES = 800  # DeepEM: 800 particle (and as many background) patches
HOLD_OUT_FRACTION = 0.15  # of the training micrographs: deeppick stops training and sets its threshold there
FAR_FROM_FOCUS, NEAR_TO_FOCUS = ".002", ".001"  # NRAMM's naming of the pair's two exposures


@dataclass
class KlhData:
    """The KLH micrographs with manual picks found in a folder, and what was left out and why."""

    folder: Path
    micrographs: list[Path]  # with picks, far from focus where the pairs are there, sorted by name
    picks: pd.DataFrame  # the manual picks, named by micrograph stem
    without_picks: list[str] = field(default_factory=list)  # micrographs no coordinate file names
    picks_without_micrograph: list[str] = field(default_factory=list)  # names in coordinate files, no image
    unreadable: list[str] = field(default_factory=list)  # files with a coordinate suffix that are not picks
    near_to_focus_left_out: int = 0
    synthetic: bool = False

    def summary(self) -> str:
        """What was found, in a few lines."""
        lines = [f"{self.folder}: {len(self.micrographs)} micrographs with {len(self.picks)} manual picks"
                 + (" (SYNTHETIC data: simulated KLH-like micrographs)" if self.synthetic else "")]
        if self.near_to_focus_left_out:
            lines.append(f"  {self.near_to_focus_left_out} near-to-focus micrographs (*{NEAR_TO_FOCUS}) left out: "
                         f"the protocol picks the far-from-focus ones (*{FAR_FROM_FOCUS})")
        if self.without_picks:
            lines.append(f"  {len(self.without_picks)} micrographs without manual picks left out "
                         f"(e.g. {', '.join(self.without_picks[:3])})")
        if self.unreadable:
            lines.append(f"  {len(self.unreadable)} files not read as picks (e.g. {', '.join(self.unreadable[:3])})")
        if self.picks_without_micrograph:
            lines.append(f"  picks for {len(self.picks_without_micrograph)} micrographs that are not here "
                         f"(e.g. {', '.join(self.picks_without_micrograph[:3])})")
        return "\n".join(lines)


def find_klh_data(folder: str | os.PathLike) -> KlhData:
    """The KLH micrographs and manual picks under ``folder`` (searched recursively).

    Where both exposures of the pairs are there, only the far-from-focus ``*.002`` micrographs are kept.
    A coordinate file matches a micrograph by name stem, or by the pair's name without ``.002``.

    Raises
    ------
    DatasetError
        Without micrographs, or when no coordinate file names one of them: with what was found.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder; give the folder holding the KLH micrographs and picks")
    images = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MICROGRAPH_SUFFIXES)
    if not images:
        archives = sorted(p.name for p in folder.rglob("*.tar*"))
        hint = f"; unpack {', '.join(archives)} here" if archives else ""
        raise DatasetError(f"{folder}: no micrographs ({', '.join(MICROGRAPH_SUFFIXES)}) found{hint}; the KLH "
                           f"data set's far-from-focus images are *{FAR_FROM_FOCUS}.mrc ('deeppick fetch "
                           "klh-dataset-1')")
    near = 0
    if any(micrograph_stem(p).endswith(FAR_FROM_FOCUS) for p in images):
        near = sum(micrograph_stem(p).endswith(NEAR_TO_FOCUS) for p in images)
        images = [p for p in images if not micrograph_stem(p).endswith(NEAR_TO_FOCUS)]
    by_stem = {micrograph_stem(p): p for p in images}
    coordinate_suffixes = set(FORMAT_SUFFIX.values())
    tables, unreadable = [], []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in coordinate_suffixes:
            try:
                tables.append(read_picks(path))
            except DeepPickError:  # a README.txt or a notes file beside the picks
                unreadable.append(path.name)
    picks = concat_picks(tables) if tables else pd.DataFrame(columns=["micrograph", "x", "y", "score"])
    named = {name: name if name in by_stem else f"{name}{FAR_FROM_FOCUS}" for name in picks["micrograph"].unique()}
    picks = picks.assign(micrograph=picks["micrograph"].map(named))
    orphans = sorted(name for name, stem in named.items() if stem not in by_stem)
    picks = picks[picks["micrograph"].isin(by_stem)].reset_index(drop=True)
    labelled = sorted(set(picks["micrograph"]))
    if not labelled:
        raise DatasetError(f"{folder}: {len(images)} micrographs but no manual picks naming any of them "
                           f"({len(tables)} coordinate files read"
                           f"{', naming e.g. ' + ', '.join(orphans[:3]) if orphans else ''}); coordinate files "
                           "are matched to micrographs by name (mic.002.mrc ↔ mic.002.box or mic.box)")
    return KlhData(folder=folder, micrographs=[by_stem[s] for s in labelled], picks=picks,
                   without_picks=sorted(set(by_stem) - set(labelled)), picks_without_micrograph=orphans,
                   unreadable=unreadable, near_to_focus_left_out=near)


def klh_split(paths: list[Path], n_train: int = KLH_TRAIN_MICROGRAPHS) -> tuple[list[Path], list[Path], list[Path]]:
    """``(fit, held_out, test)``: DeepEM's first ``n_train`` micrographs (by name) train, the rest test.

    With fewer than 82 micrographs the 50 : 32 proportion is kept. deeppick holds out the last
    :data:`HOLD_OUT_FRACTION` of the training micrographs (at least one) to stop training and choose the
    threshold, so the test micrographs stay unseen until they are scored.
    """
    paths = sorted(paths, key=lambda p: micrograph_stem(p))
    if len(paths) < 3:
        raise DatasetError(f"{len(paths)} labelled micrographs: the protocol needs at least 3 (train, held out, test)")
    if len(paths) <= n_train:
        n_train = max(2, min(len(paths) - 1, round(len(paths) * KLH_TRAIN_MICROGRAPHS / 82)))
    train, test = paths[:n_train], paths[n_train:]
    n_hold = max(1, round(HOLD_OUT_FRACTION * len(train)))
    return train[:-n_hold], train[-n_hold:], test


def klh_protocol(data: KlhData, out: str | os.PathLike, *, box_px: float = KLH_BOX_PX,
                 n_train: int = KLH_TRAIN_MICROGRAPHS, n_particles: int = KLH_PARTICLES,
                 train_config: TrainConfig = TrainConfig(), pick_config: PickConfig = PickConfig(),
                 report: bool = True, progress: bool = False) -> dict:
    """Run DeepEM's protocol on ``data``; write the model, the test picks, the report and the figures in ``out``.

    Trains with deeppick's recipe (:func:`deeppick.tuning.train_picker`) on at most ``n_particles``
    particles of the training micrographs (an even share of each) and as many background patches,
    picks the test micrographs keeping every candidate, and evaluates them at 0.2 box. Returns the
    figures: AP, the break-even point of the precision–recall curve (where precision = recall), and
    precision and recall at the F2 threshold chosen on the held-out training micrographs.
    """
    from ..io import write_picks_per_micrograph
    from ..metrics import MATCH_FRACTION
    from ..model import save_model
    from ..patches import PatchConfig, extract_patches
    from ..pipeline import effective_threshold, evaluate_model
    from ..tuning import train_picker

    out = Path(out)
    fit, held_out, test = klh_split(data.micrographs, n_train)
    fit_stems = {micrograph_stem(p) for p in fit}
    n_available = int(data.picks["micrograph"].isin(fit_stems).sum())
    per_micrograph = math.ceil(n_particles / len(fit)) if n_available > n_particles else None
    start = time.perf_counter()
    patches = extract_patches(fit, data.picks, box_px, config=PatchConfig(max_positives_per_micrograph=per_micrograph),
                              seed=train_config.seed, dataset="KLH (synthetic)" if data.synthetic else "KLH")
    match_px = MATCH_FRACTION * box_px
    model = train_picker(patches, held_out=(held_out, data.picks), train_config=train_config,
                         pick_config=pick_config, match_px=match_px, progress=progress)
    train_s = time.perf_counter() - start
    save_model(model, out / "klh-model.pt")
    start = time.perf_counter()
    evaluation, candidates = evaluate_model(model, test, data.picks, config=pick_config, match_px=match_px)
    pick_s = time.perf_counter() - start
    write_picks_per_micrograph(candidates, out / "test-picks", "star", box_px=box_px,
                               micrographs=[micrograph_stem(p) for p in test])
    thresholds, precision, recall = evaluation.curve()
    even = int(np.argmin(np.abs(precision - recall))) if len(thresholds) else None
    figures = {
        "synthetic": data.synthetic, "folder": str(data.folder), "box_px": box_px,
        "micrographs": {"train": len(fit), "held_out": len(held_out), "test": len(test)},
        "particles": {"train": patches.n_positive, "background": patches.n_negative,
                      "test_references": evaluation.n_refs},
        "ap": evaluation.ap,
        "break_even": None if even is None else {"precision": precision[even], "recall": recall[even],
                                                  "threshold": thresholds[even]},
        "f2_threshold": model.threshold,
        "threshold_not_chosen": model.info.get("threshold", {}).get("not_chosen"),
        "threshold_used": effective_threshold(model, pick_config),
        "at_f2_threshold": {"precision": evaluation.precision, "recall": evaluation.recall, "f2": evaluation.f2},
        "crYOLO_iou": {"precision": evaluation.precision_iou, "recall": evaluation.recall_iou,
                       "ap": evaluation.ap_iou, "mean_iou": evaluation.mean_iou},
        "auroc": evaluation.auroc, "centre_error_box": evaluation.centre_error_box,
        "match_px": match_px, "train_s": train_s, "pick_s_per_micrograph": pick_s / len(test),
        "deepem_reported": {"precision": 0.90, "recall": 0.90},
    }
    if report:
        from ..report import build_report, write_html_report

        title = "deeppick: DeepEM's KLH protocol, test micrographs" + (" (SYNTHETIC data)" if data.synthetic else "")
        built = build_report(out / "test-picks", test, references=data.picks, model=model, match_px=match_px,
                             title=title)
        figures["report"] = str(write_html_report(built, out / "report.html"))
    return figures


def klh_table(figures: dict) -> str:
    """The protocol's figures as the lines ``deeppick benchmark klh`` prints."""
    tag = "SYNTHETIC (simulated KLH-like data): " if figures["synthetic"] else ""
    m, p = figures["micrographs"], figures["particles"]
    even, at = figures["break_even"] or {}, figures["at_f2_threshold"]
    lines = [f"{tag}DeepEM's KLH protocol: box {figures['box_px']:g} px; {m['train']} + {m['held_out']} held-out "
             f"training micrographs ({p['train']} particles, {p['background']} background patches), "
             f"{m['test']} test micrographs ({p['test_references']} references); "
             f"match ≤ {figures['match_px']:.0f} px",
             f"{tag}AP {figures['ap']:.3f}",
             f"{tag}precision = recall at {even.get('precision', float('nan')):.3f} (threshold "
             f"{even.get('threshold', float('nan')):.3g}); DeepEM reported ≈ 0.90",
             f"{tag}F2 threshold {figures['f2_threshold']:.3g} (chosen on the held-out training micrographs): "
             f"precision {at['precision']:.3f}, recall {at['recall']:.3f}, F2 {at['f2']:.3f}"
             if figures["f2_threshold"] is not None else
             f"{tag}no F2 threshold could be chosen ({figures['threshold_not_chosen']}); at the default "
             f"{figures['threshold_used']:.3g}: precision {at['precision']:.3f}, recall {at['recall']:.3f}",
             f"{tag}as crYOLO counts (IoU > 0.6): AP {figures['crYOLO_iou']['ap']:.3f}, mean IoU "
             f"{figures['crYOLO_iou']['mean_iou']:.3f}; AUROC {figures['auroc']:.3f}"]
    if figures.get("report"):
        lines.append(f"report: {figures['report']}")
    return "\n".join(lines)


def simulate_klh(folder: str | os.PathLike, *, n_micrographs: int = 82, size_px: int = 2048,
                 particles: int = 14, snr: float = 0.05, seed: int = 0, box_px: float = KLH_BOX_PX) -> KlhData:
    """KLH-like simulated micrographs in the published layout: ``NAME.002.mrc`` and ``NAME.002.box``.

    The simulator's ``klh-like`` molecule at 2.2 Å/px (about 182 px long), side and top views, at
    ``snr``; the picks are written as EMAN boxes of ``box_px``, as manual pickers wrote them, so the
    reader is the one real data goes through. Returns :func:`find_klh_data` of the folder, marked synthetic.
    """
    from ..io import make_picks, write_micrograph, write_picks
    from ..simulate import SimConfig, simulate_micrograph

    folder = Path(folder)
    config = SimConfig(molecule="klh-like", size_px=size_px, pixel_size_a=2.2, views="side-top",
                       n_particles=particles, snr=snr)
    seeds = np.random.SeedSequence(seed).spawn(n_micrographs)
    for i, child in enumerate(seeds):
        stem = f"klhsim_{i:03d}{FAR_FROM_FOCUS}"
        mrc, box = folder / "micrographs" / f"{stem}.mrc", folder / "picks" / f"{stem}.box"
        if mrc.is_file() and box.is_file():
            continue  # a rerun keeps what an interrupted one wrote
        sim = simulate_micrograph(config, rng=np.random.default_rng(child))
        write_picks(make_picks(stem, sim.centres_xy[:, 0], sim.centres_xy[:, 1]), box, "box", box_px=box_px)
        write_micrograph(mrc, sim.image, pixel_size_a=config.pixel_size_a)
    return replace(find_klh_data(folder), synthetic=True)
