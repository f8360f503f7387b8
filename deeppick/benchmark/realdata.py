"""The real annotated packs: semi-automated picking, and fully automated picking of a molecule left out.

* :func:`semi_automated`: train on a pack's train split, choose the F2 threshold on its held-out
  micrographs (:func:`deeppick.tuning.fit_dataset`), pick its test split keeping every candidate, and
  evaluate at 0.25 × diameter; with two figures that tell missing labels from picking errors.
* :func:`leave_one_out`: pretrain a general model on the *other* packs and the simulated molecule zoo,
  autopick the held-out pack's test split with no labels at several boxes and at the box it estimates,
  beside two label-free pickers (:mod:`deeppick.benchmark.baselines`); then the particle-free check.

``deeppick benchmark realdata`` runs both per pack and prints one table.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..pretrain import GeneralRecipe
from . import (MATCH_FRACTION_OF_DIAMETER, PACKS, RELION_LOG_AP, SEMI_AUTOMATED_TARGET_AP, TOPAZ_GENERAL_AP,
               require_realdata)


# --------------------------------------------------------------------------------------------------
# semi-automated


def semi_automated(pack: str | os.PathLike, *, train_config=None, patch_config=None, preprocess=None,
                   max_micrographs: int | None = None, model_path: str | os.PathLike | None = None,
                   save_to: str | os.PathLike | None = None) -> dict:
    """Train on ``pack`` (or load ``model_path``), pick its test split, and return the figures.

    Returns AP, precision, recall and F2 at the chosen threshold, the centre error, the issue's target and
    Topaz's figure for the pack, the top-half precision and far-false-positive share
    (:func:`false_positive_figures`), and the training and picking times.
    """
    from ..datasets import load_dataset
    from ..model import load_model, save_model
    from ..patches import PatchConfig
    from ..pipeline import PickConfig, evaluate_model
    from ..preprocess import PreprocessConfig
    from ..train import TrainConfig
    from ..tuning import fit_dataset

    ds = load_dataset(pack)
    start = time.perf_counter()
    if model_path:
        model = load_model(model_path)
    else:
        model = fit_dataset(ds, train_config=train_config or TrainConfig(), max_micrographs=max_micrographs,
                            patch_config=patch_config or PatchConfig(), preprocess=preprocess or PreprocessConfig())
    trained = 0.0 if model_path else time.perf_counter() - start
    if save_to:
        save_model(model, Path(save_to) / f"{ds.root.name}.pt")
    test = ds.paths("test")
    start = time.perf_counter()
    ev, candidates = evaluate_model(model, test, ds.picks, config=PickConfig(),
                                    match_px=MATCH_FRACTION_OF_DIAMETER * ds.diameter_px)
    picked = time.perf_counter() - start
    post = model.postprocess
    name = ds.root.name
    return {"pack": name, "box_px": model.box_px, "val_patch_acc": model.info.get("val_accuracy"),
            "peak_window_box": post.peak_window_box, "cleaning": post.max_area_factor != float("inf"),
            "valid_AP": model.info.get("threshold", {}).get("ap"), "threshold": model.threshold, "AP": ev.ap,
            "target": SEMI_AUTOMATED_TARGET_AP.get(name), "topaz": TOPAZ_GENERAL_AP.get(name),
            "precision": ev.precision, "recall": ev.recall, "F2": ev.f2, "centre_err_box": ev.centre_error_box,
            "AP_iou": ev.ap_iou, "auroc": ev.auroc, "train_s": trained, "pick_s_per_mic": picked / len(test),
            **false_positive_figures(candidates, ds.picks, test, ds.diameter_px, model.threshold)}


def false_positive_figures(candidates: pd.DataFrame, references: pd.DataFrame, test_paths, diameter_px: float,
                           threshold: float) -> dict:
    """Precision of the top-ranked picks (as many as half the references), and the share of false positives
    above ``threshold`` lying ≥ 0.7 diameter from every reference: not a misplaced or second pick of a
    labelled particle, so an unlabelled particle or junk (matched at 0.25 × diameter, as the AP)."""
    from ..io import micrograph_stem
    from ..metrics import match_picks

    ranked, far, n_fp, n_refs = [], 0, 0, 0
    for path in test_paths:
        stem = micrograph_stem(path)
        picks = candidates[candidates["micrograph"] == stem]
        refs = references.loc[references["micrograph"] == stem, ["x", "y"]].to_numpy(float)
        xy = picks[["x", "y"]].to_numpy(float)
        result = match_picks(xy, picks["score"].to_numpy(float), refs, MATCH_FRACTION_OF_DIAMETER * diameter_px)
        ranked += list(zip(result.scores, result.tp))
        n_refs += len(refs)
        fp = ~result.tp & (result.scores >= threshold)
        if fp.any():
            n_fp += int(fp.sum())
            if len(refs) == 0:
                far += int(fp.sum())
            else:
                nearest = np.hypot(*(xy[result.order[fp]][:, None] - refs[None]).transpose(2, 0, 1)).min(axis=1)
                far += int((nearest >= 0.7 * diameter_px).sum())
    ranked.sort(key=lambda t: -t[0])
    top = ranked[:max(n_refs // 2, 1)]
    return {"precision_top_half": sum(tp for _, tp in top) / max(len(top), 1),
            "fp_far_fraction": far / n_fp if n_fp else float("nan")}


def semi_automated_table(rows: list[dict]) -> str:
    lines = [f"{'pack':<20}{'box':>5}{'AP':>7}{'target':>8}{'Topaz':>7}{'P':>7}{'R':>7}{'F2':>7}{'thr':>7}"
             f"{'train s':>9}{'s/mic':>7}{'P top':>7}{'FP far':>8}"]
    for r in rows:
        met = "" if r["target"] is None else ("ok" if r["AP"] >= r["target"] else "MISSED")
        lines.append(f"{r['pack']:<20}{r['box_px']:>5.0f}{r['AP']:>7.3f}{_num(r['target'], 8, 2)}"
                     f"{_num(r['topaz'], 7, 2)}{r['precision']:>7.3f}{r['recall']:>7.3f}{r['F2']:>7.3f}"
                     f"{_num(r['threshold'], 7, 3)}{r['train_s']:>9.0f}{r['pick_s_per_mic']:>7.1f}"
                     f"{r['precision_top_half']:>7.3f}{r['fp_far_fraction']:>8.2f}  {met}")
    return "\n".join(lines)


def _num(value, width: int, digits: int) -> str:
    return f"{'–':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


# --------------------------------------------------------------------------------------------------
# leave one molecule out


@dataclass(frozen=True)
class LeaveOneOutRecipe(GeneralRecipe):
    """How the general model of :func:`leave_one_out` is made (:class:`~deeppick.pretrain.GeneralRecipe`'s
    fields) and used (None: the library's default)."""

    finetune_epochs: int | None = None  # most fine-tuning epochs
    max_test: int | None = None  # autopick the first N test micrographs [all]
    max_growth: float = -1.0  # the drift guard's limit; 0: no guard; -1: AutopickConfig's
    min_stand_out: float = -1.0  # the stand-out that keeps a grown model; 0: the count alone; -1: AutopickConfig's
    off_centre: float | None = None  # off-centre views per self-training particle
    general_box: str | None = None  # the box the general model picks at (AutopickConfig.general_box)
    disc_rank: str | None = None  # where candidates are ranked with their dark-disc depth (AutopickConfig.disc_rank)
    # candidates moved to the darkest disc within this × the estimated diameter; 0: off; -1: AutopickConfig's
    disc_centre: float = -1.0
    # the fine-tuned model's least box, × the estimated diameter; 0: the given box; -1: AutopickConfig's
    min_box: float = -1.0
    relion_log: bool = True  # compare with RELION's LoG picker where it is installed
    boxes: tuple[float, ...] = (0.9, 1.1, 1.3, 1.5)  # autopick at these × the diameter, and at the estimate

    @classmethod
    def reduced(cls, **changes) -> "LeaveOneOutRecipe":
        """The quick recipe for trying ideas: 4,000 particles, 10 epochs, 4 train micrographs per pack,
        8 zoo micrographs, 3 test micrographs, scans without rotations."""
        quick = dict(positives=4000, epochs=10, finetune_epochs=10, max_train=4, zoo_micrographs=8, max_test=3,
                     rotations=False)
        return cls(**{**quick, **{k: v for k, v in changes.items() if v is not None}})

    def settings(self) -> dict:
        """What decides the general model (:meth:`~deeppick.pretrain.GeneralRecipe.resolved`): a cached one is
        reused only if these match."""
        return self.resolved()


def leave_one_out(root: str | os.PathLike, held_out: str, out: str | os.PathLike,
                  recipe: LeaveOneOutRecipe = LeaveOneOutRecipe(), progress=print) -> dict:
    """Pretrain without ``held_out`` (cached in ``out``), autopick its test split at each box and at the
    estimated one, compare with the label-free pickers, and run the particle-free check. Returns the row
    (also written to ``out/result-<pack>.json``)."""
    from ..autopick import AutopickConfig, autopick, estimate_box
    from ..datasets import load_dataset
    from ..io import concat_picks
    from ..metrics import evaluate_picks
    from ..model import load_model, save_model
    from ..pretrain import PRETRAIN_TRAINING, pretrain_general
    from .baselines import disc_filter_picks, relion_log_picks

    root, out = require_realdata(root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    pick_config = recipe.pick_config()
    seeded = replace(PRETRAIN_TRAINING, seed=recipe.seed)
    tune_config = seeded if recipe.finetune_epochs is None else replace(seeded, epochs=recipe.finetune_epochs)
    config = recipe.pretrain_config()
    auto_config = AutopickConfig(seed=recipe.seed)
    if recipe.off_centre is not None:
        auto_config = replace(auto_config, off_centre_ratio=recipe.off_centre)
    if recipe.max_growth >= 0:
        auto_config = replace(auto_config, max_growth=recipe.max_growth or None)
    if recipe.min_stand_out >= 0:
        auto_config = replace(auto_config, min_stand_out=recipe.min_stand_out or None)
    if recipe.general_box is not None:
        auto_config = replace(auto_config, general_box=recipe.general_box)
    if recipe.disc_rank is not None:
        auto_config = replace(auto_config, disc_rank=recipe.disc_rank)
    if recipe.disc_centre >= 0:
        auto_config = replace(auto_config, disc_centre_diameters=recipe.disc_centre or None)
    if recipe.min_box >= 0:
        auto_config = replace(auto_config, min_box_diameters=recipe.min_box or None)

    held = load_dataset(root / held_out)
    model_path = out / f"general-without-{held_out}.pt"
    model = load_model(model_path) if model_path.is_file() else None
    if model is None or model.info.get("leave_one_out") != recipe.settings():
        others = [root / p for p in PACKS if p != held_out and (root / p).is_dir()]
        model, _ = pretrain_general(others, out, recipe)
        model.info["leave_one_out"] = recipe.settings()
        save_model(model, model_path)
    test = held.paths("test")[:recipe.max_test]
    stems = [p.stem for p in test]
    diameter = held.diameter_px
    match_px = MATCH_FRACTION_OF_DIAMETER * diameter
    estimate = estimate_box(model, test, seed=recipe.seed)
    per_box = {}
    for label, box in [(f"{f:g}×", round(f * diameter)) for f in recipe.boxes] + [("auto", None)]:
        result = autopick(model, test, box_px=box, config=auto_config, train_config=tune_config,
                          pick_config=pick_config, estimate=estimate)
        def ap(candidates) -> float:
            return evaluate_picks(candidates, held.picks, result.box_px, match_px=match_px,
                                  threshold=result.model.threshold, micrographs=stems).ap

        # the general model at this box, also where its pass (the pseudo-labels) was at its own box
        ap_pass = ap(result.candidates[0])
        ap_general = ap_pass if result.general_box_px == result.box_px else ap(autopick(
            model, test, box_px=result.box_px, config=replace(auto_config, iterations=0, general_box="given"),
            pick_config=pick_config, estimate=estimate).candidates[0])
        # box_px: the fine-tuned model's, given_box_px: the box asked for (None: estimated)
        per_box[label] = {"box_px": result.box_px, "given_box_px": box, "ap_general": ap_general,
                          "general_box_px": result.general_box_px,
                          "ap_general_pass": ap_pass, "ap_self_trained": ap(result.candidates[-1]),
                          "n_top": result.n_top, "skipped": result.skipped, "drift": result.drift,
                          "peak_window_box": result.pick_config.post.peak_window_box}
        if progress:
            progress(json.dumps({"pack": held_out, "box": label, **per_box[label]}, default=float))
    disc = evaluate_picks(concat_picks([disc_filter_picks(p, diameter, round(diameter)) for p in test]),
                          held.picks, diameter, match_px=match_px, micrographs=stems)
    log = relion_log_picks(test, diameter) if recipe.relion_log else None
    log_ap = None if log is None else evaluate_picks(log, held.picks, diameter, match_px=match_px,
                                                     micrographs=stems).ap
    noise = particle_free(model, out, 56.0, auto_config, tune_config, pick_config)
    row = {"pack": held_out, "diameter_px": diameter, "estimate_px": estimate.diameter_px,
           "estimate_box_px": estimate.box_px, "estimate_curve": estimate.curve, "per_box": per_box,
           "topaz_ap": TOPAZ_GENERAL_AP.get(held_out),
           "ap_disc_filter": disc.ap, "ap_relion_log": log_ap, "relion_log_quoted": RELION_LOG_AP.get(held_out),
           "particle_free": noise, "n_test": len(test), "settings": recipe.settings(),
           "pretraining": {"box_factors": list(config.box_factors), "junk_share": config.junk_share,
                           "empty_share": config.empty_share},
           "drift_guard": auto_config.max_growth, "drift_guard_stand_out": auto_config.min_stand_out,
           "general_box": auto_config.general_box, "disc_rank": auto_config.disc_rank,
           "disc_centre": auto_config.disc_centre_diameters, "min_box": auto_config.min_box_diameters,
           "seconds": round(time.perf_counter() - start)}
    (out / f"result-{held_out}.json").write_text(json.dumps(row, indent=1, default=float) + "\n")
    return row


def particle_free(model, work: Path, box_px: float, auto_config, tune_config, pick_config, n: int = 3) -> dict:
    """Autopick on particle-free simulated micrographs: picks per micrograph of the general model and after
    self-training (with the drift guard), and the share of candidate scores below the threshold."""
    from ..autopick import autopick
    from ..simulate import simulate_empty_zoo

    empty = simulate_empty_zoo(Path(work) / "particle-free", n_micrographs=n, size_px=1024, seed=1000)
    result = autopick(model, empty / "micrographs", box_px=box_px, config=auto_config, train_config=tune_config,
                      pick_config=pick_config)
    threshold = result.model.threshold
    general, final = result.candidates[0], result.candidates[-1]
    n_general = general["micrograph"].nunique() or 1
    return {"general_picks_per_micrograph": float((general["score"] >= threshold).sum() / n_general),
            "final_picks_per_micrograph": float((final["score"] >= threshold).sum() / n),
            "below_threshold": float(np.mean(final["score"] < threshold)) if len(final) else 1.0,
            "candidates": int(len(final)), "rolled_back": result.skipped is not None and not result.n_top,
            **broken_figures(final, empty, threshold, box_px, n), "drift": result.drift}


def broken_figures(candidates: pd.DataFrame, folder: Path, threshold: float, box_px: float, n: int) -> dict:
    """How much of a particle-free check the broken particles account for: the picks per micrograph within
    half a box of one (``broken/`` of the simulated folder), and the share of the other candidates below the
    threshold. A broken particle is a particle-shaped object every picker boxes; the rest is the noise and
    the other contaminants."""
    from ..io import picks_away_from, read_picks

    files = sorted((Path(folder) / "broken").glob("*.star"))
    if not files:
        return {"picks_on_broken_per_micrograph": 0.0, "below_threshold_off_broken": (
            float(np.mean(candidates["score"] < threshold)) if len(candidates) else 1.0)}
    away = picks_away_from(candidates, pd.concat([read_picks(f) for f in files], ignore_index=True), box_px / 2)
    picked, picked_away = (candidates["score"] >= threshold).sum(), (away["score"] >= threshold).sum()
    return {"picks_on_broken_per_micrograph": float((picked - picked_away) / n),
            "below_threshold_off_broken": float(np.mean(away["score"] < threshold)) if len(away) else 1.0}


def einstein_from_noise(model, work: str | os.PathLike, *, n: int = 3, box_px: float = 56.0) -> dict:
    """DeepPicker §3's check for one model, without self-training: pick ``n`` particle-free simulated
    micrographs keeping every candidate; the share of candidate scores below the model's threshold and
    the picks per micrograph above it.

    The micrographs carry contaminants at twice the usual rate (:func:`~deeppick.simulate.simulate_empty_zoo`);
    ``noise_only`` gives the same figures on ``n`` micrographs of noise alone, which tells picking noise
    from picking junk.
    """
    from ..pipeline import PickConfig, effective_threshold, pick_paths
    from ..pretrain import with_box
    from ..simulate import simulate_empty_zoo

    model = with_box(model, box_px)
    threshold = effective_threshold(model)

    def check(folder: Path) -> dict:
        candidates = pick_paths(model, sorted((folder / "micrographs").iterdir()), config=PickConfig(keep_all=True))
        scores = candidates["score"].to_numpy(float)
        return {"n_candidates": int(len(scores)), "below": float(np.mean(scores < threshold)) if len(scores) else 1.0,
                "picks_per_micrograph": float((scores >= threshold).sum() / n),
                **broken_figures(candidates, folder, threshold, box_px, n)}

    work = Path(work)
    contaminated = simulate_empty_zoo(work / "particle-free", n_micrographs=n, size_px=1024, seed=1000)
    noise = simulate_empty_zoo(work / "noise-only", n_micrographs=n, size_px=1024, seed=1000, contamination=0.0)
    return {"threshold": threshold, **check(contaminated), "noise_only": check(noise)}


def _guard_words(row: dict) -> str:
    if not row.get("drift_guard"):
        return "off"
    stand_out = row.get("drift_guard_stand_out")
    return f"{row['drift_guard']:g}×" + (f" unless stand-out ≥ {stand_out:g}" if stand_out else "")


def _general_box_words(row: dict) -> str:
    return {"estimate": "the estimated box", "given": "the given box"}.get(row.get("general_box"), "the given box")


def _centre_words(row: dict) -> str:
    radius = row.get("disc_centre")
    if row.get("disc_rank", "off") == "off" or not radius:
        return ""
    return f", centred on the disc within {radius:g} diameter"


def _min_box_words(row: dict) -> str:
    least = row.get("min_box")
    return "as given" if not least else f"≥ {least:g} estimated diameter"


def leave_one_out_table(rows: list[dict], recipe: LeaveOneOutRecipe) -> str:
    labels = list(rows[0]["per_box"]) if rows else []
    head = rows[0] if rows else {}
    pretraining = head.get("pretraining", {})
    lines = [f"leave one molecule out ({'four rotations' if recipe.rotations else 'no rotations'}; pretraining "
             f"boxes × diameter {', '.join(f'{f:g}' for f in pretraining.get('box_factors', []))}, junk share "
             f"{pretraining.get('junk_share', 0):g}, particle-free share {pretraining.get('empty_share', 0):g}; "
             f"drift guard {_guard_words(head)}; general model's pass at {_general_box_words(head)}; dark-disc "
             f"ranking {head.get('disc_rank', 'off')}{_centre_words(head)}; fine-tuned box "
             f"{_min_box_words(head)}; seed "
             f"{recipe.seed}); AP general at the box → self-trained",
             f"{'held-out pack':<19} {'d px':>5} {'est.':>5} " + " ".join(f"{label:>12}" for label in labels)
             + f" {'spread':>6} {'LoG':>5} {'disc':>5} {'Topaz':>5}"]
    for r in rows:
        cells = [f"{r['per_box'][label]['ap_general']:.2f}→{r['per_box'][label]['ap_self_trained']:.3f}"
                 for label in labels]
        fixed = [r["per_box"][label]["ap_self_trained"] for label in labels if label != "auto"]
        log = "–" if r["ap_relion_log"] is None else f"{r['ap_relion_log']:.3f}"
        lines.append(f"{r['pack']:<19} {r['diameter_px']:>5.0f} {r['estimate_px']:>5.0f} "
                     + " ".join(f"{c:>12}" for c in cells)
                     + f" {max(fixed) - min(fixed) if fixed else 0:>6.3f} {log:>5} {r['ap_disc_filter']:>5.3f}"
                     + f" {_num(r['topaz_ap'], 5, 2)}")
    for r in rows:
        passes = {(c.get("general_box_px"), c.get("ap_general_pass")) for c in r["per_box"].values()
                  if c.get("general_box_px") is not None and c["general_box_px"] != c["box_px"]}
        if passes:
            lines.append(f"  {r['pack']}: the general model's pass (the pseudo-labels) at box "
                         + ", ".join(f"{box:g} px: AP {ap:.3f}" for box, ap in sorted(passes)))
        raised = [(label, c["given_box_px"], c["box_px"]) for label, c in r["per_box"].items()
                  if c.get("given_box_px") is not None and c["box_px"] > c["given_box_px"]]
        if raised:
            lines.append(f"  {r['pack']}: the fine-tuned model's box raised to hold the particle at "
                         + ", ".join(f"{label} ({given:g} → {box:g} px)" for label, given, box in raised))
    lines.append("particle-free micrographs (picks per micrograph: general model → after self-training; candidate "
                 "scores below the threshold):")
    for r in rows:
        n = r["particle_free"]
        lines.append(f"  general without {r['pack']}: {n['general_picks_per_micrograph']:.1f} → "
                     f"{n['final_picks_per_micrograph']:.1f}{' (rolled back)' if n['rolled_back'] else ''}; "
                     f"{n['below_threshold']:.1%} of {n['candidates']} below"
                     + (f"; {n['picks_on_broken_per_micrograph']:.1f} per micrograph on broken particles, "
                        f"{n['below_threshold_off_broken']:.1%} of the others below"
                        if "picks_on_broken_per_micrograph" in n else ""))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# both, one table


def realdata_benchmark(root: str | os.PathLike, out: str | os.PathLike, *, packs=PACKS,
                       recipe: LeaveOneOutRecipe = LeaveOneOutRecipe(), semi_train_config=None,
                       max_micrographs: int | None = None, progress=print) -> dict:
    """Semi-automated and leave-one-out figures per pack (models cached in ``out``)."""
    root, out = require_realdata(root), Path(out)
    rows = []
    for pack in packs:
        models = out / "semi-automated"
        cached = models / f"{pack}.pt"
        semi = semi_automated(root / pack, train_config=semi_train_config, max_micrographs=max_micrographs,
                              model_path=cached if cached.is_file() else None,
                              save_to=None if cached.is_file() else models)
        if progress:
            progress(json.dumps(semi, default=float))
        loo = leave_one_out(root, pack, out / "leave-one-out", recipe, progress=progress)
        rows.append({"pack": pack, "semi_automated": semi, "leave_one_out": loo})
    return {"root": str(root), "packs": list(packs), "recipe": asdict(recipe), "rows": rows}


def realdata_table(figures: dict) -> str:
    """One table: per pack, semi-automated AP against its target, and fully automated AP (estimated box)."""
    lines = [f"{'pack':<20}{'semi AP':>8}{'target':>8}{'auto: general':>15}{'self-trained':>13}{'box est.':>9}"
             f"{'spread':>8}{'LoG':>7}{'disc':>7}{'Topaz':>7}"]
    for row in figures["rows"]:
        semi, loo = row["semi_automated"], row["leave_one_out"]
        auto = loo["per_box"].get("auto", {})
        fixed = [v["ap_self_trained"] for k, v in loo["per_box"].items() if k != "auto"]
        log = loo["ap_relion_log"] if loo["ap_relion_log"] is not None else loo.get("relion_log_quoted")
        lines.append(f"{row['pack']:<20}{semi['AP']:>8.3f}{_num(semi['target'], 8, 2)}"
                     f"{auto.get('ap_general', float('nan')):>15.3f}{auto.get('ap_self_trained', float('nan')):>13.3f}"
                     f"{loo['estimate_box_px']:>9.0f}{(max(fixed) - min(fixed)) if fixed else 0:>8.3f}"
                     f"{_num(log, 7, 3)}{loo['ap_disc_filter']:>7.3f}{_num(loo['topaz_ap'], 7, 2)}")
    return "\n".join(lines)
