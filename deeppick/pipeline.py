"""Picking: one micrograph, a folder of them, and the choice of the model's score threshold.

``pick_micrograph`` chains the stages: prepare (:mod:`~deeppick.preprocess`) → score map
(:mod:`~deeppick.scan`) → cleaning, peaks and pixel filters (:mod:`~deeppick.postprocess`) → a picks
table in micrograph pixels. ``pick_micrographs`` runs it over many files, writing one coordinate file per
micrograph atomically, skipping those already written (so an interrupted run resumes), and going on past
micrographs that cannot be read. A record in the output folder (``PICK_RECORD``) says which model and
settings wrote each file, so a rerun with another model or other settings is refused instead of leaving
a folder that mixes two pickers' files; beside STAR files, RELION's list of them (``COORDINATE_LIST``)
is the input coordinates of its Particle extraction. ``select_threshold`` picks held-out labelled micrographs and
stores the F-beta-optimal threshold in the model (:mod:`~deeppick.threshold`); ``choose_postprocess``
also chooses the cleaning rule and peak window there, and ``fit_dataset`` (``deeppick fit``) does all of
it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from .errors import ConfigError, CoordinateError, DeepPickError
from .io import (COORDINATE_LIST, FORMAT_SUFFIX, atomic_write_text, concat_picks, empty_picks, folder_lock,
                 is_coordinate_list, listed_file, make_picks, micrograph_stem, read_coordinate_list, read_micrograph,
                 relion_path, write_coordinate_list, write_picks)
from .metrics import BETA, MATCH_FRACTION, Evaluation, evaluate_picks
from .model import PickerModel
from .postprocess import (PostprocessConfig, clean_score_map, edge_mask, extreme_pixel_mask, find_peaks,
                          learn_edge_margin, sort_picks, top_n)
from .preprocess import PreprocessConfig, prepare_micrograph
from .scan import ScanConfig, ScoreMap, scan_micrograph
from .threshold import choose_threshold

DEFAULT_THRESHOLD = 0.5  # a model without a chosen threshold picks where the particle class wins
PICK_RECORD = ".deeppick-picks.json"  # in an output folder: which model and settings wrote which file


@dataclass(frozen=True)
class PickConfig:
    """How ``pick`` turns a micrograph into picks; every default comes from the stage configs."""

    scan: ScanConfig = field(default_factory=ScanConfig)
    post: PostprocessConfig | None = None  # None: the model's own (chosen at training), else the paper's
    # ours: peaks down to this score are candidates, so a threshold below 0.5 (F2 favours recall) and AP
    # see the whole ranked list; the pick threshold then decides what is written.
    candidate_min_score: float = 0.05
    threshold: float | None = None  # None: the model's F-beta threshold (or 0.5 if it has none)
    keep_all: bool = False  # write sub-threshold candidates too (re-threshold without re-picking)

    def __post_init__(self):
        if not 0 <= self.candidate_min_score <= 1:
            raise ConfigError(f"candidate_min_score must lie in [0, 1], got {self.candidate_min_score}")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise ConfigError(f"--threshold must lie in [0, 1] (a particle probability), got {self.threshold}")


def postprocess_config(model: PickerModel, config: PickConfig = PickConfig()) -> PostprocessConfig:
    """The post-processing ``pick`` applies: ``config.post``, else the model's stored choice, else defaults."""
    if config.post is not None:
        return config.post
    return PostprocessConfig.from_dict(model.info.get("postprocess", {}))


def effective_threshold(model: PickerModel, config: PickConfig) -> float:
    """The score cut ``pick`` applies: ``--threshold``, else the model's stored one, else 0.5."""
    if config.threshold is not None:
        return float(config.threshold)
    if model.threshold is not None and np.isfinite(model.threshold):
        return float(model.threshold)
    return DEFAULT_THRESHOLD


def pick_micrograph(model: PickerModel, image: np.ndarray, name: str, config: PickConfig = PickConfig(),
                    path: str | os.PathLike | None = None) -> pd.DataFrame:
    """Pick one micrograph.

    Parameters
    ----------
    model
        A trained model (its box size and preprocessing are used).
    image
        The micrograph, ``image[y, x]`` as read.
    name
        Micrograph name (stem) written in the picks table.
    config
        Scan, post-processing and threshold settings.
    path
        Where the image came from, for error messages.

    Returns
    -------
    DataFrame
        Picks table (centres in micrograph px), best score first: candidates at or above the threshold,
        or every candidate with ``config.keep_all``; at most ``top_n`` of them (see :func:`postprocess_config`).
    """
    return picks_from_score_map(model, image, name, score_micrograph(model, image, config, path or name), config)


def score_micrograph(model: PickerModel, image: np.ndarray, config: PickConfig = PickConfig(),
                     path: str | os.PathLike | None = None) -> ScoreMap:
    """The score map of one micrograph: prepare it for ``model`` and scan it (``config.scan``)."""
    prepared = prepare_micrograph(image, model.box_px, model.preprocess, path=str(path or "micrograph"))
    return scan_micrograph(model, prepared, config.scan)


def picks_from_score_map(model: PickerModel, image: np.ndarray, name: str, score_map: ScoreMap,
                         config: PickConfig = PickConfig()) -> pd.DataFrame:
    """The post-processing half of :func:`pick_micrograph`: cleaning, peaks, edge and pixel filters, threshold.

    ``score_map`` comes from :func:`score_micrograph` of the same ``image``; one map serves any number of
    post-processing settings (the held-out choices of :func:`fit_dataset` scan each micrograph once).
    """
    post = postprocess_config(model, config)
    cleaned = clean_score_map(score_map.scores, post.score_threshold, post.max_area_factor)
    window_grid = post.peak_window_box * model.preprocess.model_px / score_map.model_step_px
    rows, cols, scores = find_peaks(cleaned, window_grid, min_score=config.candidate_min_score)
    x, y = score_map.to_micrograph(rows, cols)
    keep = edge_mask(image.shape, x, y, post.edge_margin_box * model.box_px)
    keep[keep] = extreme_pixel_mask(image, x[keep], y[keep], model.box_px, post.extreme_sd, post.sd_range,
                                    post.max_extreme_fraction)
    return cut_picks(model, sort_picks(make_picks(name, x[keep], y[keep], scores[keep])), config)


def cut_picks(model: PickerModel, candidates: pd.DataFrame, config: PickConfig = PickConfig()) -> pd.DataFrame:
    """What ``pick`` keeps of sorted candidates: those at or above the threshold (all with ``keep_all``),
    then the best ``top_n``."""
    if not config.keep_all:
        candidates = candidates[candidates["score"] >= effective_threshold(model, config)].reset_index(drop=True)
    return top_n(candidates, postprocess_config(model, config).top_n)


def candidates_config(model: PickerModel, config: PickConfig = PickConfig()) -> PickConfig:
    """``config`` keeping every candidate: no threshold, no top-N cut (for ranking and evaluation)."""
    return replace(config, keep_all=True, post=replace(postprocess_config(model, config), top_n=None))


@dataclass
class BatchResult:
    """What a batch did: picks per written micrograph, those skipped as already done, those that failed."""

    counts: dict[str, int] = field(default_factory=dict)  # stem → number of picks written
    skipped: list[str] = field(default_factory=list)  # outputs already present (resumed run)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, one-line reason)
    seconds: float = 0.0
    coordinate_list: Path | None = None  # RELION's list of the STAR files (None for other formats)
    coordinate_list_problem: str | None = None  # why no list was written, for the summary

    def summary(self, out_dir: Path, threshold: float, keep_all: bool) -> str:
        n = sum(self.counts.values())
        cut = "all candidates kept (--keep-all)" if keep_all else f"threshold {threshold:.3g}"
        m = len(self.counts)
        parts = [f"picked {n} particle{'' if n == 1 else 's'} in {m} micrograph{'' if m == 1 else 's'} ({cut}) "
                 f"in {self.seconds:.1f} s"]
        if self.skipped:
            parts.append(f"{len(self.skipped)} already done")
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        text = "; ".join(parts) + f"; output in {out_dir}"
        if self.coordinate_list is not None:
            text += f" (RELION's Particle extraction reads {self.coordinate_list.name} there)"
        if self.coordinate_list_problem is not None:
            text += f"; {self.coordinate_list_problem}"
        return text


def output_path(out_dir: str | os.PathLike, micrograph: str | os.PathLike, fmt: str) -> Path:
    """Coordinate file written for a micrograph: ``OUT/<stem><suffix>``."""
    return Path(out_dir) / f"{micrograph_stem(micrograph)}{FORMAT_SUFFIX[fmt]}"


def pick_micrographs(model: PickerModel, paths: Iterable[str | os.PathLike], out_dir: str | os.PathLike,
                     fmt: str = "star", config: PickConfig = PickConfig(), overwrite: bool = False,
                     progress: bool = False, candidates: list | None = None,
                     replace_others: bool = False) -> BatchResult:
    """Pick many micrographs, one coordinate file each in ``out_dir``, written atomically.

    A micrograph whose output already exists is skipped unless ``overwrite`` (an interrupted run resumes);
    with ``replace_others`` the outputs another model or other settings wrote are picked again instead of
    refused (autopick's resumed run: its folder, its model).
    A micrograph that cannot be used is recorded in ``failed`` and the batch goes on. If ``candidates`` is
    a list, every candidate of each micrograph picked (sub-threshold ones too) is appended to it as a table.

    Raises
    ------
    ConfigError
        Without ``overwrite`` or ``replace_others``, if ``out_dir`` holds outputs for these micrographs
        that another model or other pick settings wrote (:func:`claim_outputs`): skipping them would mix
        two pickers' files.
    """
    if fmt not in FORMAT_SUFFIX:
        raise ConfigError(f"unknown output format '{fmt}'; use one of {', '.join(FORMAT_SUFFIX)}")
    paths = [Path(p) for p in paths]
    redo = claim_outputs(model, config, [output_path(out_dir, p, fmt) for p in paths], overwrite, replace_others)
    result = BatchResult()
    start = time.perf_counter()
    iterator = paths
    if progress:
        from tqdm import tqdm

        iterator = tqdm(paths, desc="picking", unit="micrograph")
    pick_config = config if candidates is None else candidates_config(model, config)
    for path in iterator:
        out = output_path(out_dir, path, fmt)
        stem = micrograph_stem(path)
        if out.exists() and not overwrite and out.name not in redo:
            result.skipped.append(stem)
            continue
        try:
            image = read_micrograph(path)
            picks = pick_micrograph(model, image, stem, pick_config, path=path)
        except DeepPickError as exc:
            result.failed.append((str(path), str(exc)))
            continue
        if candidates is not None:
            candidates.append(picks)
            picks = cut_picks(model, picks, config)
        write_picks(picks, out, fmt, box_px=model.box_px)
        result.counts[stem] = len(picks)
    if fmt == "star":
        done = {*result.counts, *result.skipped}  # picked now or before; failed micrographs are left out
        try:
            result.coordinate_list = update_coordinate_list(
                out_dir, [(p, output_path(out_dir, p, fmt)) for p in paths if micrograph_stem(p) in done])
        except CoordinateError as exc:  # the picks are written; only the list cannot be
            result.coordinate_list_problem = str(exc)
    result.seconds = time.perf_counter() - start
    return result


def update_coordinate_list(out_dir: str | os.PathLike, picked: list[tuple[Path, Path]]) -> Path | None:
    """Add ``(micrograph, coordinate file)`` pairs to ``out_dir``'s RELION list of coordinate files
    (:data:`~deeppick.io.COORDINATE_LIST`), keeping the entries of earlier batches whose files still exist,
    so that picking a dataset in parts (several cluster jobs, a resumed run) lists all of it.

    Paths are written as RELION names them (:func:`~deeppick.io.relion_path`): run ``pick`` from the RELION
    project folder, with the micrographs as RELION's micrograph STAR names them. Returns the list's path,
    or None when a micrograph's own STAR file would take its name. A path with white space raises
    :class:`~deeppick.errors.CoordinateError` and leaves the list as it was: RELION splits a STAR data
    line at white space, so such an entry would not read back.
    """
    out_dir = Path(out_dir)
    path = out_dir / COORDINATE_LIST
    if path.exists() and not is_coordinate_list(path):
        return None  # the picks of a micrograph named like the list keep the name
    new = {relion_path(mic): relion_path(out) for mic, out in picked if out.is_file()}
    spaced = [name for pair in new.items() for name in pair if any(c.isspace() for c in name)]
    if spaced:
        raise CoordinateError(f"no {COORDINATE_LIST} written: RELION reads its columns split at spaces and "
                              f"{len(spaced)} path(s) hold one (the first: '{spaced[0]}'); rename the folders "
                              "or files to use it (the per-micrograph coordinate files are written)")
    with folder_lock(out_dir):  # several batches finishing at once each add their part
        entries = {}
        if is_coordinate_list(path):
            try:
                entries = read_coordinate_list(path)
            except CoordinateError:
                pass  # a damaged list is rebuilt from this batch
        # one entry per micrograph (its file here is named by its stem), whichever folder a batch ran from
        stems = {micrograph_stem(mic) for mic in new}
        entries = {mic: coords for mic, coords in entries.items()
                   if micrograph_stem(mic) not in stems and listed_file(coords, path).is_file()}
        entries.update(new)
        write_coordinate_list(path, entries)
    return path


def model_fingerprint(model: PickerModel) -> str:
    """A short hash of what makes a model pick as it does: weights, box, preprocessing, threshold, and the
    post-processing it stores. Equal for a model in memory and the same model saved and loaded again."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"arch": model.arch, "box_px": float(model.box_px),
                              "preprocess": model.preprocess.identity(), "threshold": model.threshold,
                              "postprocess": model.info.get("postprocess")}, sort_keys=True, default=float).encode())
    for name, tensor in sorted(model.net.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def pick_settings(model: PickerModel, config: PickConfig) -> dict:
    """The settings that decide what ``pick`` writes (tiling only changes the speed, so it is left out)."""
    settings = {"step_px": config.scan.step_px, "rotations": config.scan.rotations,
                "snap_step": config.scan.snap_step, "post": asdict(postprocess_config(model, config)),
                "keep_all": config.keep_all,
                "threshold": None if config.keep_all else effective_threshold(model, config),
                "candidate_min_score": config.candidate_min_score if config.keep_all else None}
    return json.loads(json.dumps(settings, default=float))  # plain JSON values (numpy scalars → float)


def read_pick_record(out_dir: str | os.PathLike) -> dict:
    """The record of ``out_dir`` (:data:`PICK_RECORD`): ``runs`` (key → model and settings) and ``files``
    (output file name → key). Empty when there is none or it cannot be read (files it named count as of
    unknown origin, as files from before records were kept)."""
    try:
        record = json.loads((Path(out_dir) / PICK_RECORD).read_text())
    except (OSError, ValueError):
        return {"runs": {}, "files": {}}
    if not isinstance(record, dict) or not isinstance(record.get("runs"), dict) \
            or not isinstance(record.get("files"), dict):
        return {"runs": {}, "files": {}}
    return record


def claim_outputs(model: PickerModel, config: PickConfig, outputs: list[Path], overwrite: bool = False,
                  replace_others: bool = False) -> set[str]:
    """Check that ``outputs`` may be written or kept by this model and these settings, and record them.

    An existing output that the folder's record attributes to another model or other settings would be
    skipped by a resumed batch and so mix two pickers' results: unless ``overwrite`` or ``replace_others``
    that raises :class:`ConfigError` before anything is written. Outputs the record does not know (written
    before records were kept, or by hand) are kept as before. The record is updated atomically before
    picking, so an interrupted batch leaves every file it wrote attributed.

    Returns
    -------
    set of str
        Names of the existing outputs another model or other settings wrote: to be picked again.
    """
    if not outputs:
        return set()
    settings = pick_settings(model, config)
    fingerprint = model_fingerprint(model)
    key = hashlib.sha256(json.dumps([fingerprint, settings], sort_keys=True).encode()).hexdigest()[:16]
    out_dir = outputs[0].parent
    with folder_lock(out_dir):  # batches picking parts of a dataset into one folder at once keep every entry
        record = read_pick_record(out_dir)
        others = {out.name for out in outputs if out.exists() and record["files"].get(out.name, key) != key}
        if others and not (overwrite or replace_others):
            clash = sorted(others)
            raise ConfigError(f"{out_dir}: {len(clash)} pick file(s) there, e.g. {clash[0]}, were written by "
                              "another model or other pick settings; pass --overwrite to replace them, or pick "
                              "into another folder")
        files = {**record["files"], **{out.name: key for out in outputs}}
        used = set(files.values())
        runs = {k: v for k, v in record["runs"].items() if k in used}
        runs[key] = {"model": fingerprint, "model_name": model.info.get("name"), "box_px": float(model.box_px),
                     "settings": settings}
        atomic_write_text(out_dir / PICK_RECORD, json.dumps({"format": "deeppick-picks-record", "version": 1,
                                                             "runs": runs, "files": files}, indent=1,
                                                            sort_keys=True))
    return others


def pick_paths(model: PickerModel, paths: Iterable[str | os.PathLike], config: PickConfig = PickConfig()) -> pd.DataFrame:
    """Pick micrographs in memory and return one picks table (errors propagate)."""
    tables = []
    for path in paths:
        path = Path(path)
        tables.append(pick_micrograph(model, read_micrograph(path), micrograph_stem(path), config, path=path))
    return concat_picks(tables) if tables else empty_picks()


def evaluate_model(model: PickerModel, paths: list[Path], references: pd.DataFrame,
                   config: PickConfig = PickConfig(), match_fraction: float = MATCH_FRACTION,
                   match_px: float | None = None, beta: float = BETA) -> tuple[Evaluation, pd.DataFrame]:
    """Pick ``paths`` keeping every candidate and evaluate at the model's threshold.

    Returns the evaluation and the candidate picks table.
    """
    candidates = pick_paths(model, paths, replace(config, keep_all=True))
    threshold = effective_threshold(model, config)
    evaluation = evaluate_picks(candidates, references, model.box_px, match_fraction=match_fraction,
                                match_px=match_px, threshold=threshold, beta=beta,
                                micrographs=[micrograph_stem(p) for p in paths])
    return evaluation, candidates


def select_threshold(model: PickerModel, paths: list[Path], references: pd.DataFrame,
                     config: PickConfig = PickConfig(), beta: float = BETA,
                     match_fraction: float = MATCH_FRACTION, match_px: float | None = None) -> PickerModel:
    """Choose the F-beta-optimal score threshold on labelled micrographs and store it in ``model``.

    ``paths`` are held-out micrographs (never trained on) and ``references`` their labelled centres.
    The model's ``threshold`` is set and ``info['threshold']`` records how it was chosen. If no candidate
    matches a reference the threshold stays unset and a :class:`ConfigError` explains why.
    """
    _require_held_out(paths)
    evaluation, _ = evaluate_model(model, paths, references, replace(config, threshold=None), match_fraction,
                                   match_px, beta)
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


# Boxes tried by fit_dataset, × particle diameter. Context around the particle helps where particles are
# sparse (ribosome80s-10028 valid AP 0.80 at 1.3× vs 0.72 at 1.0×), hurts where they touch (cryoppp-10059:
# 0.14 vs 0.24), so the held-out micrographs decide.
BOX_FACTORS = (1.0, 1.3)
# Low-pass σ (model px) tried at the chosen box. The default σ = 1 barely filters a small particle's
# upsampled pixels; 2.5 helped the noisy cryoppp-10059 (valid AP 0.24 → 0.30) but not the ribosome
# (0.80 → 0.78), so the held-out micrographs decide here too.
LOWPASS_SIGMAS_MODEL_PX = (1.0, 2.5)


def fit_dataset(dataset, box_px: float | None = None, train_config=None, patch_config=None,
                pick_config: PickConfig = PickConfig(), max_micrographs: int | None = None,
                progress: bool = False, box_factors=BOX_FACTORS,
                lowpass_sigmas_model_px=LOWPASS_SIGMAS_MODEL_PX, try_without_off_centre: bool = True,
                preprocess: PreprocessConfig = PreprocessConfig()) -> PickerModel:
    """Semi-automated training on a labelled dataset: train, choose the box, choose the F2 threshold.

    Trains on the ``train`` split (at most ``max_micrographs`` of it) and stores in the model the
    threshold that maximises F-beta on the held-out micrographs of :func:`split_for_threshold`. Choices,
    each by the best AP on the held-out micrographs (matched at 0.2 × diameter throughout, so boxes are
    compared fairly), in this order:

    1. with ``try_without_off_centre`` and off-centre views in ``patch_config``: whether to keep them
       (a model with and one without, at the first box and low-pass);
    2. without ``box_px``: the box, one model per ``factor × diameter_px`` in ``box_factors``;
    3. at that box: the low-pass, one model per other σ in ``lowpass_sigmas_model_px``.

    Every model prepares micrographs with ``preprocess``, its low-pass replaced by the σ being tried.
    Ties keep the earlier choice. Each model is compared at its best post-processing (cleaning and peak
    window, :func:`choose_postprocess`), which the kept model stores. ``info`` records the micrographs used
    for training and threshold, and the AP of every choice tried.
    """
    from .patches import PatchConfig

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
    patch_config = patch_config or PatchConfig()
    recipes = [patch_config]
    if try_without_off_centre and patch_config.off_centre_ratio:
        recipes.append(replace(patch_config, off_centre_ratio=0.0))

    def fit(box: float, sigma: float, recipe) -> PickerModel:
        prepared = replace(preprocess, lowpass_sigma_model_px=sigma)
        model = _train_for_box(dataset, train_paths, box, prepared, train_config, recipe, progress)
        return choose_postprocess(model, valid_paths, dataset.picks, pick_config, match_px=match_px)

    def ap(model: PickerModel) -> float:
        return model.info["threshold"]["ap"]

    best, tried_off_centre = None, {}
    for recipe in recipes:
        model = fit(boxes[0], sigmas[0], recipe)
        tried_off_centre[f"{recipe.off_centre_ratio:g}"] = ap(model)
        if best is None or ap(model) > ap(best):
            best, kept = model, recipe
    tried_box = {boxes[0]: ap(best)}
    for box in boxes[1:]:
        model = fit(box, sigmas[0], kept)
        tried_box[box] = ap(model)
        if tried_box[box] > ap(best):
            best = model
    tried_sigma = {sigmas[0]: ap(best)}
    for sigma in sigmas[1:]:
        model = fit(best.box_px, sigma, kept)
        tried_sigma[sigma] = ap(model)
        if tried_sigma[sigma] > ap(best):
            best = model
    best.info["dataset"] = {"name": dataset.name, "train": [micrograph_stem(p) for p in train_paths],
                            "threshold": [micrograph_stem(p) for p in valid_paths],
                            "off_centre_ratio_tried": tried_off_centre,
                            "box_px_tried": {f"{b:g}": a for b, a in tried_box.items()},
                            "lowpass_sigma_tried": {f"{g:g}": a for g, a in tried_sigma.items()}}
    return best


def postprocess_summary(model: PickerModel) -> str:
    """'peak window W box, cleaning on|off': the post-processing choices stored in ``model``."""
    post = model.info.get("postprocess", {})
    window = post.get("peak_window_box")
    cleaning = "off" if post.get("max_area_factor") == float("inf") else "on"
    return f"peak window {'default' if window is None else format(window, 'g') + ' box'}, cleaning {cleaning}"


def recipe_summary(model: PickerModel) -> str:
    """What :func:`fit_dataset` chose, on one line: box, low-pass, off-centre views, post-processing, edge
    margin (``deeppick fit`` and the semi-automated example print it)."""
    views = model.info.get("trained_on", {}).get("patch_config", {}).get("off_centre_ratio", 0)
    margin = model.info.get("postprocess", {}).get("edge_margin_box")
    background = model.preprocess.highpass_sigma_model_px
    return (f"box {model.box_px:g} px, low-pass σ {model.preprocess.lowpass_sigma_model_px:g} model px, "
            + (f"background subtracted at σ {background:g} model px, " if background else "")
            + f"off-centre views {f'{views:g} per particle' if views else 'none'}, {postprocess_summary(model)}"
            + ("" if margin is None else f", edge margin {margin:.2f} box"))


def _train_for_box(dataset, train_paths, box_px, preprocess, train_config, patch_config, progress) -> PickerModel:
    from .patches import PatchConfig, extract_patches
    from .train import TrainConfig, train_model

    train_config = train_config or TrainConfig()
    patches = extract_patches(train_paths, dataset.picks, box_px, patch_config or PatchConfig(), preprocess,
                              seed=train_config.seed, dataset=dataset.name, progress=progress)
    return adopt_label_edge_margin(train_model(patches, train_config, box_px=box_px, progress=progress), patches)


def adopt_label_edge_margin(model: PickerModel, patch_set) -> PickerModel:
    """Store in ``model`` the edge margin its training labels keep (:func:`~deeppick.postprocess.learn_edge_margin`).

    The positives' distances to their micrograph's edge, in boxes, come from the patch set's centres and
    per-micrograph shapes. ``pick`` then drops candidates nearer the edge than the annotator picked
    (``info['postprocess']['edge_margin_box']``; ``info['edge_margin']`` says where it came from).
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
    post = replace(postprocess_config(model), edge_margin_box=margin)
    model.info["postprocess"] = post.to_dict()
    model.info["edge_margin"] = {"box": margin, "from_labels": len(distances),
                                 "rule": "1st percentile of the labels' edge distance − 0.05 box"}
    return model


# Peak windows (× box) tried on the held-out micrographs. DeepPicker's 0.8 (picks ≥ 0.4 box apart) suits
# particles that keep their distance; where they crowd, neighbours sit closer and the window hides them
# (cryoppp-10059: a quarter of the labels have a neighbour within 20 px = 0.56 box; window 0.8 leaves
# candidates near only 61 % of the test labels, 0.4 near 85 %).
PEAK_WINDOWS_BOX = (0.8, 0.6, 0.4)


def choose_postprocess(model: PickerModel, paths: list[Path], references: pd.DataFrame,
                       pick_config: PickConfig = PickConfig(), match_px: float | None = None,
                       windows_box=PEAK_WINDOWS_BOX, beta: float = BETA) -> PickerModel:
    """Choose the cleaning rule and the peak window on held-out labelled micrographs; store them and the
    F-beta threshold in ``model``.

    Every combination of DeepPicker's large-region cleaning (on, off) and peak window (``windows_box``)
    picks the held-out ``paths``, scanned once each, and the best AP wins; ties keep the earlier setting
    (cleaning on, the widest window: the paper's). In crowded micrographs touching particles merge into
    regions several particles large, which the cleaning removes as if they were ice (cryoppp-10059 valid
    AP 0.27 with it, 0.34 without), and close neighbours need a narrower window. The choice is stored in
    ``info['postprocess']`` (``pick`` follows it), the AP of each in ``info['postprocess_tried']``, and the
    threshold as :func:`select_threshold` does.
    """
    _require_held_out(paths)
    base = postprocess_config(model, pick_config)
    settings = []
    cleaning_on = base.max_area_factor if np.isfinite(base.max_area_factor) else PostprocessConfig().max_area_factor
    for cleaning in (cleaning_on, float("inf")):  # a model tuned before is tried both ways again
        for window in dict.fromkeys([float(w) for w in windows_box] or [base.peak_window_box]):
            settings.append(replace(base, max_area_factor=cleaning, peak_window_box=window))
    # One micrograph in memory at a time: its score map serves every setting, only the picks are kept.
    tables: list[list[pd.DataFrame]] = [[] for _ in settings]
    for path in map(Path, paths):
        image = read_micrograph(path)
        score_map = score_micrograph(model, image, pick_config, path)
        for table, post in zip(tables, settings):
            table.append(picks_from_score_map(model, image, micrograph_stem(path), score_map,
                                              replace(pick_config, post=post, keep_all=True)))
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
    model.info["postprocess"] = post.to_dict()
    model.info["postprocess_tried"] = tried
    return _store_threshold(model, evaluation, [Path(p) for p in paths], beta, pick_config.candidate_min_score)
