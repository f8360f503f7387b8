"""Training a picker on labelled micrographs and tuning it on held-out ones.

:func:`train_picker` is the one training recipe every entry point uses (``deeppick train``, ``fit``,
the benchmarks): train the network on a patch set (:mod:`~deeppick.train`), adopt the edge margin the
labels keep, then choose the post-processing (cleaning, peak window) and the F-beta threshold on
held-out labelled micrographs (:func:`choose_postprocess`), all stored in the model so ``pick`` needs
nothing else. :func:`fit_dataset` (``deeppick fit``) runs that recipe for a few boxes, low-passes and
patch recipes and keeps the one with the best held-out AP. :func:`select_threshold` re-chooses only the
threshold of an existing model.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import ConfigError, DeepPickError
from .io import concat_picks, micrograph_stem, picks_away_from, read_micrograph
from .metrics import BETA, MATCH_FRACTION, Evaluation, evaluate_picks
from .model import PickerModel
from .patches import PatchConfig, PatchSet, extract_patches
from .pipeline import (PickConfig, evaluate_model, pick_paths, picks_from_score_map, postprocess_config,
                       score_micrograph)
from .postprocess import PostprocessConfig, learn_edge_margin
from .preprocess import PreprocessConfig
from .threshold import choose_threshold
from .train import TrainConfig, evaluate_patches, train_model

# Boxes tried by fit_dataset, × particle diameter: context around the particle helps where particles are
# sparse and hurts where they touch, so the held-out micrographs decide (docs/measurements.md, *Box, peak
# window and edge margin*).
BOX_FACTORS = (1.0, 1.3)
# Low-pass σ (model px) tried at the chosen box: σ 1 barely filters a small particle's upsampled pixels,
# a stronger one suits noisy small particles; the held-out micrographs decide (same section).
LOWPASS_SIGMAS_MODEL_PX = (1.0, 2.5)
# Peak windows (× box) tried on the held-out micrographs. DeepPicker's 0.8 (picks ≥ 0.4 box apart) suits
# particles that keep their distance; where they crowd, neighbours sit closer and a wide window hides them.
PEAK_WINDOWS_BOX = (0.8, 0.6, 0.4)

HeldOut = tuple[list[Path], pd.DataFrame]  # held-out micrographs and their labelled centres


def train_picker(patches: PatchSet, *, held_out: HeldOut | None = None, train_config: TrainConfig = TrainConfig(),
                 init: PickerModel | None = None, pick_config: PickConfig = PickConfig(),
                 match_px: float | None = None, progress: bool = False, checkpoint=None,
                 resume: bool = False) -> PickerModel:
    """Train a picker on labelled patches and tune it on held-out labelled micrographs.

    1. :func:`~deeppick.train.train_model` on ``patches`` (from ``init``'s weights when given);
    2. :func:`adopt_label_edge_margin`: ``pick`` leaves out the border the labels leave out;
    3. with ``held_out = (paths, references)``: the particle/background accuracy on those micrographs'
       patches (``info['held_out_patches']``), then :func:`choose_postprocess` (cleaning, peak window and
       F2 threshold, matched at ``match_px``, default 0.2 box).

    A threshold that cannot be chosen (no candidate near a held-out label) leaves ``model.threshold``
    None and says why in ``info['threshold']['not_chosen']``: the trained network is kept.

    Example
    -------
    >>> import numpy as np
    >>> from deeppick.patches import extract_patches
    >>> rng = np.random.default_rng(0)
    >>> image = rng.normal(size=(256, 256)).astype(np.float32)
    >>> centres = np.array([[64.0, 64.0], [190.0, 70.0], [80.0, 180.0], [180.0, 180.0]])
    >>> for x, y in centres:
    ...     image[int(y) - 8:int(y) + 8, int(x) - 8:int(x) + 8] -= 3
    >>> patches = extract_patches(image, centres, box_px=32, seed=0)
    >>> model = train_picker(patches, train_config=TrainConfig(epochs=2))
    >>> model.box_px, model.info["edge_margin"]["from_labels"]
    (32.0, 4)
    """
    model = train_model(patches, train_config, init=init, progress=progress, checkpoint=checkpoint, resume=resume)
    model = adopt_label_edge_margin(model, patches)
    if held_out is None:
        return model
    paths, references = held_out
    valid = extract_patches(paths, references, model.box_px, config=PatchConfig(off_centre_ratio=0.0),
                            preprocess=model.preprocess,
                            seed=train_config.seed)  # particle vs background: what accuracy measures
    model.info["held_out_patches"] = evaluate_patches(model, valid)
    try:
        return choose_postprocess(model, paths, references, pick_config=pick_config, match_px=match_px)
    except DeepPickError as exc:
        model.info["threshold"] = {"not_chosen": str(exc)}
        return model


def refine_picker(model: PickerModel, micrographs, accepted: pd.DataFrame, rejected: pd.DataFrame, *,
                  held_out: HeldOut | None = None, train_config: TrainConfig = TrainConfig(),
                  negative_ratio: float | None = None, match_px: float | None = None,
                  progress: bool = False) -> PickerModel:
    """DeepEM's retraining loop: fine-tune ``model`` on picks a person verified on new micrographs.

    ``accepted`` (true positives) become particles, ``rejected`` (false positives, e.g. the particles of
    junk 2-D classes) explicit background, beside random background ≥ 0.6 box from every accepted pick
    (``negative_ratio`` per particle; default: the model's recipe); the patches follow the recipe the model
    was trained with (its off-centre views). Then :func:`train_picker` from ``model``'s weights, with the
    threshold re-chosen on ``held_out`` micrographs when given (else the model's is kept).
    """
    recipe = PatchConfig.from_dict(model.info.get("trained_on", {}).get("patch_config") or {})
    if negative_ratio is not None:
        recipe = replace(recipe, negative_ratio=negative_ratio)
    patches = extract_patches(micrographs, accepted, model.box_px, config=recipe, preprocess=model.preprocess,
                              negatives=rejected, seed=train_config.seed, progress=progress)
    tuned = train_picker(patches, held_out=held_out, train_config=train_config, init=model, match_px=match_px,
                         progress=progress)
    if held_out is None:
        tuned.threshold, tuned.postprocess = model.threshold, model.postprocess
        tuned.info["threshold"] = {**model.info.get("threshold", {}), "kept_from": model.info.get("name")}
    tuned.info["refined"] = {"from": model.info.get("name"), "accepted": int(len(accepted)),
                             "rejected": int(len(rejected)), "micrographs": sorted(set(accepted["micrograph"]))}
    return tuned


def complete_labels(model: PickerModel, micrographs, labels: pd.DataFrame, *, config: PickConfig = PickConfig(),
                    same_particle_box: float = 0.5) -> tuple[pd.DataFrame, int]:
    """Partial labels completed by a model trained on them: ``labels`` plus the model's picks above its
    threshold on ``micrographs`` that lie farther than ``same_particle_box`` × box from every label.

    When users label only some particles of each micrograph, background drawn away from the labels also
    falls on the unlabelled particles; retraining on the completed labels puts the model's confident picks
    on the particle side instead (self-training, as autopick does without any labels). Returns the
    completed labels (``micrograph``, ``x``, ``y``) and the number of picks added.
    """
    if model.threshold is None:
        raise ConfigError("completing partial labels needs a model with a threshold: train it with held-out "
                          "labelled micrographs")
    picks = pick_paths(model, micrographs, config=replace(config, keep_all=False))
    new = picks_away_from(picks, labels, same_particle_box * model.box_px)
    new = new.sort_values("micrograph", kind="mergesort")[["micrograph", "x", "y"]]  # grouped in stem order
    completed = pd.concat([labels[["micrograph", "x", "y"]], new], ignore_index=True)
    return completed, int(len(new))


def train_on_partial_labels(micrographs, labels: pd.DataFrame, box_px: float, *, held_out: HeldOut,
                            patch_config: PatchConfig = PatchConfig(),
                            preprocess: PreprocessConfig = PreprocessConfig(), negatives=None,
                            train_config: TrainConfig = TrainConfig(), init: PickerModel | None = None,
                            match_px: float | None = None, dataset: str | None = None,
                            completion_beta: float | None = None, progress: bool = False) -> PickerModel:
    """Train a picker on micrographs where only some particles are labelled.

    :func:`train_picker` on the labels, :func:`complete_labels` with that model's picks above its
    threshold on the same micrographs, then :func:`train_picker` again, from scratch, on the completed
    labels. ``held_out`` micrographs must be fully labelled: they choose both models' thresholds.
    ``completion_beta``: complete at the F-beta-optimal threshold of the first model instead of its F2 one.
    """
    def patches(centres):
        return extract_patches(micrographs, centres, box_px, config=patch_config, preprocess=preprocess,
                               negatives=negatives, seed=train_config.seed, dataset=dataset, progress=progress)

    first = train_picker(patches(labels), held_out=held_out, train_config=train_config, init=init,
                         match_px=match_px, progress=progress)
    if completion_beta is not None:  # a stricter cut than F2's adds fewer false picks as particles
        first = select_threshold(first, held_out[0], held_out[1], beta=completion_beta, match_px=match_px)
    completed, added = complete_labels(first, micrographs, labels)
    model = train_picker(patches(completed), held_out=held_out, train_config=train_config, init=init,
                         match_px=match_px, progress=progress)
    model.info["partial_labels"] = {"labels": int(len(labels)), "added": added, "completion_beta": completion_beta,
                                    "first_model_held_out_ap": held_out_ap(first)}
    return model


def adopt_label_edge_margin(model: PickerModel, patch_set: PatchSet) -> PickerModel:
    """Store in ``model`` the edge margin its training labels keep (:func:`~deeppick.postprocess.learn_edge_margin`).

    The positives' distances to their micrograph's edge, in boxes, come from the patch set's centres and
    per-micrograph shapes. ``pick`` then drops candidates nearer the edge than the annotator picked
    (``model.postprocess.edge_margin_box``; ``info['edge_margin']`` says where it came from).
    A patch set without positives or shapes leaves the model unchanged.
    """
    sources = patch_set.metadata.get("sources", [])
    positive = np.flatnonzero(np.asarray(patch_set.labels) == 1)
    distances = []
    for i in positive:
        source = sources[int(patch_set.source[i])] if int(patch_set.source[i]) < len(sources) else {}
        if not source.get("shape") or not source.get("box_px"):
            continue
        rows, cols = source["shape"]
        x, y = float(patch_set.x[i]), float(patch_set.y[i])
        distances.append(min(x, y, cols - 1 - x, rows - 1 - y) / float(source["box_px"]))
    margin = learn_edge_margin(distances)
    if margin is None:
        return model
    model.postprocess = replace(postprocess_config(model), edge_margin_box=margin)
    model.info["edge_margin"] = {"box": margin, "from_labels": len(distances),
                                 "rule": "1st percentile of the labels' edge distance − 0.05 box"}
    return model


def choose_postprocess(model: PickerModel, paths: list[Path], references: pd.DataFrame, *,
                       pick_config: PickConfig = PickConfig(), match_px: float | None = None,
                       windows_box=PEAK_WINDOWS_BOX, beta: float = BETA) -> PickerModel:
    """Choose the cleaning rule and the peak window on held-out labelled micrographs; store them and the
    F-beta threshold in ``model``.

    Every combination of DeepPicker's large-region cleaning (on, off) and peak window (``windows_box``)
    picks the held-out ``paths``, scanned once each, and the best AP wins; ties keep the earlier setting
    (cleaning on, the widest window: the paper's). In crowded micrographs touching particles merge into
    regions several particles large, which the cleaning removes as if they were ice, and close neighbours
    need a narrower window. The choice is stored in ``model.postprocess`` (``pick`` follows it), the AP of
    each in ``info['postprocess_tried']``, and the threshold as :func:`select_threshold` does.
    """
    _require_held_out(paths)
    base = postprocess_config(model, pick_config)
    settings = []
    cleaning_on = base.max_area_factor if np.isfinite(base.max_area_factor) else PostprocessConfig().max_area_factor
    for cleaning in (cleaning_on, float("inf")):  # a tuned model is tried both ways again
        for window in dict.fromkeys([float(w) for w in windows_box] or [base.peak_window_box]):
            settings.append(replace(base, max_area_factor=cleaning, peak_window_box=window))
    # One micrograph in memory at a time: its score map serves every setting, only the picks are kept.
    tables: list[list[pd.DataFrame]] = [[] for _ in settings]
    for path in map(Path, paths):
        image = read_micrograph(path)
        score_map = score_micrograph(model, image, config=pick_config, path=path)
        for table, post in zip(tables, settings):
            table.append(picks_from_score_map(model, image, score_map, name=micrograph_stem(path),
                                              config=replace(pick_config, post=post, keep_all=True)))
    stems = [micrograph_stem(p) for p in paths]
    tried, best = {}, None
    for table, post in zip(tables, settings):
        evaluation = evaluate_picks(concat_picks(table), references, model.box_px, match_px=match_px, beta=beta,
                                    micrographs=stems)
        cleaning = "off" if post.max_area_factor == float("inf") else "on"
        tried[f"cleaning {cleaning}, window {post.peak_window_box:g}"] = float(evaluation.ap)
        if best is None or evaluation.ap > best[0].ap:
            best = (evaluation, post)
    evaluation, post = best
    model.postprocess = post
    model.info["postprocess_tried"] = tried
    return _store_threshold(model, evaluation, [Path(p) for p in paths], beta, pick_config.candidate_min_score)


def select_threshold(model: PickerModel, paths: list[Path], references: pd.DataFrame, *,
                     config: PickConfig = PickConfig(), beta: float = BETA,
                     match_fraction: float = MATCH_FRACTION, match_px: float | None = None) -> PickerModel:
    """Choose the F-beta-optimal score threshold on labelled micrographs and store it in ``model``.

    ``paths`` are held-out micrographs (never trained on) and ``references`` their labelled centres.
    The model's ``threshold`` is set and ``info['threshold']`` records how it was chosen. If no candidate
    matches a reference the threshold stays unset and a :class:`ConfigError` explains why.
    """
    _require_held_out(paths)
    evaluation, _ = evaluate_model(model, paths, references, config=replace(config, threshold=None),
                                   match_fraction=match_fraction, match_px=match_px, beta=beta)
    return _store_threshold(model, evaluation, paths, beta, config.candidate_min_score)


def _require_held_out(paths) -> None:
    if not paths:
        raise ConfigError("no held-out labelled micrographs to choose the threshold on; "
                          "give a dataset with a 'valid' split or --validation DIR")


def _store_threshold(model: PickerModel, evaluation: Evaluation, paths: list[Path], beta: float,
                     candidate_min_score: float) -> PickerModel:
    """Set ``model.threshold`` to the F-beta optimum of ``evaluation`` (held-out ``paths``) and record it."""
    threshold, fbeta = choose_threshold(evaluation, beta)
    if not np.isfinite(threshold):
        raise ConfigError(f"no pick on the {len(paths)} validation micrograph(s) matched a reference; "
                          "the model has not learned these particles (check --box-px and the labels)")
    # A threshold below the candidate floor cannot be reproduced by pick: clamp it to the floor.
    threshold = max(float(threshold), candidate_min_score)
    model.threshold = threshold
    model.info["threshold"] = {
        "value": threshold, "beta": beta, "fbeta": float(fbeta), "ap": float(evaluation.ap),
        "micrographs": [micrograph_stem(p) for p in paths], "n_references": int(evaluation.n_refs),
        "match_px": float(evaluation.max_dist_px),
    }
    return model


def held_out_ap(model: PickerModel) -> float:
    """The AP on the held-out micrographs that :func:`choose_postprocess` recorded (0 where none was chosen)."""
    return float(model.info.get("threshold", {}).get("ap", 0.0))


def split_for_threshold(dataset, holdout_fraction: float = 0.15) -> tuple[list[Path], list[Path]]:
    """Training and threshold micrographs of a dataset: ``train`` and ``valid`` splits.

    A dataset without a ``valid`` split gives up the last ``holdout_fraction`` of its ``train``
    micrographs (at least one) for the threshold, so the threshold is never chosen on trained-on data.
    """
    train, valid = dataset.paths("train"), dataset.paths("valid")
    if not train:
        raise ConfigError(f"{dataset.root}: no micrographs in the 'train' split")
    if not valid:
        if len(train) < 2:
            raise ConfigError(f"{dataset.root}: one train micrograph and no 'valid' split: nothing is left "
                              "to choose the threshold on; add a valid micrograph to dataset.json")
        n_hold = max(1, int(round(holdout_fraction * len(train))))
        train, valid = train[:-n_hold], train[-n_hold:]
    return train, valid


def fit_dataset(dataset, *, box_px: float | None = None, train_config: TrainConfig = TrainConfig(),
                patch_config: PatchConfig = PatchConfig(), pick_config: PickConfig = PickConfig(),
                max_micrographs: int | None = None, progress: bool = False, box_factors=BOX_FACTORS,
                lowpass_sigmas_model_px=LOWPASS_SIGMAS_MODEL_PX, try_without_off_centre: bool = True,
                preprocess: PreprocessConfig = PreprocessConfig()) -> PickerModel:
    """Semi-automated training on a labelled dataset: train, choose the box, choose the F2 threshold.

    Runs :func:`train_picker` on the ``train`` split (at most ``max_micrographs`` of it), tuned on the
    held-out micrographs of :func:`split_for_threshold`, for each choice below, and keeps the model with
    the best held-out AP (matched at 0.2 × diameter throughout, so boxes are compared fairly), in order:

    1. with ``try_without_off_centre`` and off-centre views in ``patch_config``: whether to keep them
       (a model with and one without, at the first box and low-pass);
    2. without ``box_px``: the box, one model per ``factor × diameter_px`` in ``box_factors``;
    3. at that box: the low-pass, one model per other σ in ``lowpass_sigmas_model_px``.

    Every model prepares micrographs with ``preprocess``, its low-pass replaced by the σ being tried.
    Ties keep the earlier choice. ``info['dataset']`` records the micrographs used for training and
    threshold, and the AP of every choice tried.
    """
    train_paths, valid_paths = split_for_threshold(dataset)
    if max_micrographs is not None:
        train_paths = train_paths[:max_micrographs]
    if box_px:
        boxes = [float(box_px)]
    else:
        diameter = dataset.default_box_px()
        boxes = sorted({float(round(f * diameter)) for f in box_factors})
    match_px = MATCH_FRACTION * (dataset.diameter_px or boxes[0])
    sigmas = list(lowpass_sigmas_model_px) or [preprocess.lowpass_sigma_model_px]
    recipes = [patch_config]
    if try_without_off_centre and patch_config.off_centre_ratio:
        recipes.append(replace(patch_config, off_centre_ratio=0.0))

    def fit(box: float, sigma: float, recipe: PatchConfig) -> PickerModel:
        prepared = replace(preprocess, lowpass_sigma_model_px=sigma)
        patches = extract_patches(train_paths, dataset.picks, box, config=recipe, preprocess=prepared,
                                  seed=train_config.seed,
                                  dataset=dataset.name, progress=progress)
        return train_picker(patches, held_out=(valid_paths, dataset.picks), train_config=train_config,
                            pick_config=pick_config, match_px=match_px, progress=progress)

    best, tried_off_centre = None, {}
    for recipe in recipes:
        model = fit(boxes[0], sigmas[0], recipe)
        tried_off_centre[f"{recipe.off_centre_ratio:g}"] = held_out_ap(model)
        if best is None or held_out_ap(model) > held_out_ap(best):
            best, kept = model, recipe
    tried_box = {boxes[0]: held_out_ap(best)}
    for box in boxes[1:]:
        model = fit(box, sigmas[0], kept)
        tried_box[box] = held_out_ap(model)
        if tried_box[box] > held_out_ap(best):
            best = model
    tried_sigma = {sigmas[0]: held_out_ap(best)}
    for sigma in sigmas[1:]:
        model = fit(best.box_px, sigma, kept)
        tried_sigma[sigma] = held_out_ap(model)
        if tried_sigma[sigma] > held_out_ap(best):
            best = model
    if best.threshold is None:
        raise ConfigError(f"{dataset.root}: no model picked a labelled particle of the held-out micrographs: "
                          f"{best.info['threshold']['not_chosen']}")
    best.info["dataset"] = {"name": dataset.name, "train": [micrograph_stem(p) for p in train_paths],
                            "threshold": [micrograph_stem(p) for p in valid_paths],
                            "off_centre_ratio_tried": tried_off_centre,
                            "box_px_tried": {f"{b:g}": a for b, a in tried_box.items()},
                            "lowpass_sigma_tried": {f"{g:g}": a for g, a in tried_sigma.items()}}
    return best


def postprocess_summary(model: PickerModel) -> str:
    """'peak window W box, cleaning on|off': the post-processing stored in ``model``."""
    if model.postprocess is None:
        return "peak window default, cleaning on"
    cleaning = "off" if model.postprocess.max_area_factor == float("inf") else "on"
    return f"peak window {model.postprocess.peak_window_box:g} box, cleaning {cleaning}"


def recipe_summary(model: PickerModel) -> str:
    """What :func:`fit_dataset` chose, on one line: box, low-pass, off-centre views, post-processing, edge
    margin (``deeppick fit`` and the semi-automated example print it)."""
    views = model.info.get("trained_on", {}).get("patch_config", {}).get("off_centre_ratio", 0)
    margin = None if model.postprocess is None else model.postprocess.edge_margin_box
    background = model.preprocess.highpass_sigma_model_px
    return (f"box {model.box_px:g} px, low-pass σ {model.preprocess.lowpass_sigma_model_px:g} model px, "
            + (f"background subtracted at σ {background:g} model px, " if background else "")
            + f"off-centre views {f'{views:g} per particle' if views else 'none'}, {postprocess_summary(model)}"
            + ("" if margin is None else f", edge margin {margin:.2f} box"))


def training_summary(model: PickerModel) -> str:
    """What :func:`train_picker` did, on one line: patch accuracy, held-out figures, the threshold."""
    info = model.info
    line = (f"held-out patch accuracy {info['val_accuracy']:.3f} (epoch {info['best_epoch']} of "
            f"{info['epochs_run']})" if info.get("val_accuracy") is not None else "no held-out patches")
    patches = info.get("held_out_patches")
    if patches:
        line += f"; accuracy on the {patches['n']} patches of the held-out micrographs {patches['accuracy']:.3f}"
    chosen = info.get("threshold", {})
    if "not_chosen" in chosen:
        line += f"; threshold not chosen: {chosen['not_chosen']}"
    elif model.threshold is not None:
        line += (f"; F2-optimal threshold {model.threshold:.3f} on {len(chosen['micrographs'])} held-out "
                 f"micrograph(s) (F2 {chosen['fbeta']:.3f}, {postprocess_summary(model)})")
    else:
        line += "; no held-out micrographs, so pick will cut at 0.5 (choose one with 'deeppick threshold')"
    return line
