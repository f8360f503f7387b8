"""Picking a folder of micrographs: one coordinate file each, a record of who wrote them, RELION's list.

:func:`pick_micrographs` runs :func:`~deeppick.pipeline.pick_micrograph` over many files, writing one
coordinate file per micrograph atomically, skipping those already written (an interrupted run resumes)
and going on past micrographs that cannot be read. A record in the output folder (:data:`PICK_RECORD`)
says which model and settings wrote each file, so a rerun with another model or other settings is refused
instead of leaving a folder that mixes two pickers' files; beside STAR files, RELION's list of them
(:data:`~deeppick.io.COORDINATE_LIST`) is the input coordinates of its Particle extraction. Both are
updated under a lock on the folder, so several batches can pick parts of one dataset into it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Iterable

import pandas as pd

from .errors import ConfigError, CoordinateError
from .io import (COMBINED_PICKS, COORDINATE_LIST, CUT_NOTE, FORMAT_SUFFIX, KEEP_ALL_NOTE, atomic_path,
                 atomic_write_text, concat_picks, empty_picks, file_stem, folder_lock, is_combined_picks,
                 is_coordinate_list, is_text, listed_file, micrograph_stem, read_coordinate_list,
                 read_picks, relion_path, text_name, write_coordinate_list, write_picks)
from .model import PickerModel
from .pipeline import PickConfig, candidates_config, cut_picks, effective_threshold, postprocess_config

PICK_RECORD = ".deeppick-picks.json"  # in an output folder: which model and settings wrote which file


@dataclass
class BatchResult:
    """What a batch did: picks per written micrograph, those skipped as already done, those that failed."""

    counts: dict[str, int] = field(default_factory=dict)  # stem → number of picks written
    skipped: list[str] = field(default_factory=list)  # outputs already present (resumed run)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, one-line reason)
    seconds: float = 0.0
    coordinate_list: Path | None = None  # RELION's list of the STAR files (None for other formats)
    coordinate_list_problem: str | None = None  # why no list was written, for the summary
    # with ``keep_candidates``: every candidate of the micrographs picked now, sub-threshold ones too
    candidates: pd.DataFrame | None = None
    combined: Path | None = None  # one STAR file of every pick in the folder (STAR output)

    def summary(self, out_dir: Path, threshold: float, keep_all: bool) -> str:
        n = sum(self.counts.values())
        cut = (f"every candidate kept (--keep-all): cut at a figure of merit ≥ {threshold:.3g}, the model's "
               "threshold, to extract particles" if keep_all else f"threshold {threshold:.3g}")
        m = len(self.counts)
        parts = [f"picked {n} particle{'' if n == 1 else 's'} in {m} micrograph{'' if m == 1 else 's'} ({cut}) "
                 f"in {self.seconds:.1f} s"]
        if self.skipped:
            parts.append(f"{len(self.skipped)} already done")
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        text = "; ".join(parts) + f"; output in {out_dir}"
        if self.coordinate_list is not None:
            text += (f" (RELION's Particle extraction: input coordinates {self.coordinate_list}; RELION 3.1: "
                     f"--coord_dir {self.coordinate_list.parent}/ --coord_suffix .star)")
        if self.coordinate_list_problem is not None:
            text += f"; {self.coordinate_list_problem}"
        return text


def output_path(out_dir: str | os.PathLike, micrograph: str | os.PathLike, fmt: str) -> Path:
    """Coordinate file written for a micrograph: ``OUT/<stem><suffix>``, the stem's bytes as the
    micrograph's (:func:`~deeppick.io.file_stem`)."""
    return Path(out_dir) / f"{file_stem(micrograph)}{FORMAT_SUFFIX[fmt]}"


def pick_micrographs(model: PickerModel, paths: Iterable[str | os.PathLike], out_dir: str | os.PathLike, *,
                     fmt: str = "star", config: PickConfig = PickConfig(), overwrite: bool = False,
                     progress: bool = False, keep_candidates: bool = False, replace_others: bool = False,
                     workers: int = 1, scheduler=None) -> BatchResult:
    """Pick many micrographs, one coordinate file each in ``out_dir``, written atomically.

    A micrograph whose output already exists is skipped unless ``overwrite`` (an interrupted run resumes);
    with ``replace_others`` the outputs another model or other settings wrote are picked again instead of
    refused (autopick's resumed run: its folder, its model).
    A micrograph that cannot be used is recorded in ``failed`` and the batch goes on. With
    ``keep_candidates`` the result also holds every candidate of the micrographs picked (sub-threshold
    ones too), for evaluation. ``workers`` and ``scheduler`` say where the picking runs
    (:func:`~deeppick.workers.pick_many`); this process writes every file. At the end, STAR output gets
    RELION's list of the files (:func:`update_coordinate_list`) and one STAR of every pick in the folder
    (:func:`update_combined_picks`), both updated under the folder's lock so that batches picking parts of
    a dataset into one folder list all of it. ``box`` and ``cbox`` files carry :func:`extraction_box_px`.

    Raises
    ------
    ConfigError
        Without ``overwrite`` or ``replace_others``, if ``out_dir`` holds outputs for these micrographs
        that another model or other pick settings wrote (:func:`claim_outputs`): skipping them would mix
        two pickers' files.
    """
    from .workers import pick_many

    if fmt not in FORMAT_SUFFIX:
        raise ConfigError(f"unknown output format '{fmt}'; use one of {', '.join(FORMAT_SUFFIX)}")
    paths = [Path(p) for p in paths]
    redo = claim_outputs(model, config, [output_path(out_dir, p, fmt) for p in paths], overwrite=overwrite,
                         replace_others=replace_others)
    result = BatchResult()
    start = time.perf_counter()
    todo = []
    for path in paths:
        out = output_path(out_dir, path, fmt)
        if out.exists() and not overwrite and out.name not in redo:
            result.skipped.append(micrograph_stem(path))
            if fmt == "star":
                link_for_relion3(out, relion3_path(out_dir, path))
        else:
            todo.append(path)
    bar = _progress_bar(len(todo)) if progress and todo else None
    pick_config = candidates_config(model, config) if keep_candidates else config
    note = header_note(model, config)
    candidates = []
    for outcome in pick_many(model, todo, config=pick_config, workers=workers, scheduler=scheduler):
        if outcome.error is not None:
            result.failed.append((str(outcome.path), outcome.error))
        else:
            picks = outcome.picks
            if keep_candidates:
                candidates.append(picks)
                picks = cut_picks(model, picks, config)
            out = output_path(out_dir, outcome.path, fmt)
            write_picks(picks, out, fmt, box_px=extraction_box_px(model), note=note)
            result.counts[micrograph_stem(outcome.path)] = len(picks)
            if fmt == "star":
                link_for_relion3(out, relion3_path(out_dir, outcome.path))
        if bar is not None:
            bar.set_postfix_str(f"{len(result.failed)} failed", refresh=False)
            bar.update(1)
    if bar is not None:
        bar.close()
    result.failed.sort(key=lambda failure: [str(p) for p in paths].index(failure[0]))  # in the order given
    done = {*result.counts, *result.skipped}  # picked now or before; failed micrographs are left out
    picked = [p for p in paths if micrograph_stem(p) in done]
    if fmt == "star":
        try:
            result.coordinate_list = update_coordinate_list(
                out_dir, [(p, output_path(out_dir, p, fmt)) for p in picked], note=note)
        except CoordinateError as exc:  # the picks are written; only the list cannot be
            result.coordinate_list_problem = str(exc)
        result.combined = update_combined_picks(out_dir, [(p, output_path(out_dir, p, fmt)) for p in picked],
                                                note=note)
    if keep_candidates:
        result.candidates = concat_picks(candidates) if candidates else empty_picks()
    record_failures(out_dir, result.failed, [str(p) for p in picked])
    result.seconds = time.perf_counter() - start
    return result


def watch_and_pick(model: PickerModel, folder: str | os.PathLike, out_dir: str | os.PathLike, *, fmt: str = "star",
                   config: PickConfig = PickConfig(), overwrite: bool = False, workers: int = 1, scheduler=None,
                   timeout_s: float | None = None, poll_s: float = 2.0, progress=None) -> BatchResult:
    """Pick micrographs as they appear in ``folder`` (during collection), until ``timeout_s`` seconds pass
    without a new one, or Ctrl-C.

    A micrograph is picked once its file has stopped growing (the same size at two looks ``poll_s`` apart)
    and, for MRC, holds all the data its header announces. Each group found ready is picked as
    :func:`pick_micrographs` picks (resumable: a rerun skips what is done), and RELION's list and the
    combined STAR are brought up to date at the end, also after Ctrl-C. ``progress(result)`` is called
    after each group. Returns the account of every group.
    """
    from .io import MICROGRAPH_SUFFIXES

    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder to watch; check the path")
    total, sizes, done = BatchResult(), {}, []
    start = quiet_since = time.monotonic()
    try:
        while True:
            ready = []
            for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in MICROGRAPH_SUFFIXES):
                if path in done or not path.is_file():
                    continue
                size = path.stat().st_size
                if sizes.get(path) == size and _complete(path):
                    ready.append(path)
                sizes[path] = size
            if ready:
                batch = pick_micrographs(model, ready, out_dir, fmt=fmt, config=config, overwrite=overwrite,
                                         workers=workers, scheduler=scheduler)
                _add(total, batch)
                done += ready
                quiet_since = time.monotonic()
                if progress is not None:
                    progress(total)
            elif timeout_s is not None and time.monotonic() - quiet_since >= timeout_s:
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        pass
    finished = [p for p in done if output_path(out_dir, p, fmt).exists()]
    if finished:  # every output there: nothing is picked again, the list and the combined STAR are completed
        final = pick_micrographs(model, finished, out_dir, fmt=fmt, config=config)
        total.coordinate_list, total.coordinate_list_problem = final.coordinate_list, final.coordinate_list_problem
        total.combined = final.combined
    total.seconds = time.monotonic() - start
    return total


def _complete(path: Path) -> bool:
    """Whether a micrograph file holds all it announces: an MRC file as long as its header says (other
    formats: yes, their size has stopped changing)."""
    if path.suffix.lower() not in (".mrc", ".mrcs", ".map"):
        return True
    import mrcfile
    import numpy as np

    try:
        with mrcfile.open(path, header_only=True, permissive=True) as mrc:
            header = mrc.header
            itemsize = np.dtype(mrcfile.utils.dtype_from_mode(int(header.mode))).itemsize
            expected = 1024 + int(header.nsymbt) + int(header.nx) * int(header.ny) * int(header.nz) * itemsize
    except Exception:
        return False
    return path.stat().st_size >= expected


def _add(total: BatchResult, batch: BatchResult) -> None:
    total.counts.update(batch.counts)
    total.skipped += batch.skipped
    total.failed += batch.failed
    total.coordinate_list, total.coordinate_list_problem = batch.coordinate_list, batch.coordinate_list_problem
    total.combined = batch.combined


def _progress_bar(total: int):
    """Micrographs done of ``total``, micrographs per second, time left, and failures so far."""
    from tqdm import tqdm

    return tqdm(total=total, desc="picking", unit="micrograph", postfix="0 failed", dynamic_ncols=True)


def extraction_box_px(model: PickerModel) -> float:
    """The box a model's picks are extracted at, the one ``box`` and ``cbox`` files carry: the box the user
    gave ``autopick``, where the network works in another frame (a given box raised to hold the particle,
    ``AutopickConfig.min_box_diameters``, or the general model kept at its own box), else the model's."""
    given = model.info.get("autopick", {}).get("box_estimate", {}).get("given")
    return float(given) if given else float(model.box_px)


def header_note(model: PickerModel, config: PickConfig) -> str:
    """What a picks file says in its header: where its picks were cut (:data:`~deeppick.io.CUT_NOTE`), or
    that it holds every candidate and where to cut them."""
    threshold = effective_threshold(model, replace(config, keep_all=False))
    return (KEEP_ALL_NOTE if config.keep_all else CUT_NOTE).format(threshold=threshold)


def relion3_path(out_dir: str | os.PathLike, micrograph: str | os.PathLike) -> Path | None:
    """Where RELION 3.1's extraction looks for a micrograph's coordinates with ``--coord_dir OUT/
    --coord_suffix .star``: ``OUT/`` + the micrograph's name as RELION names it, from after its job folder
    (``MotionCorr/job002/Movies/m1.mrc`` → ``Movies/m1``), + ``.star``. None for a micrograph outside the
    folder deeppick runs in: RELION names a project's micrographs relative to the project.

    Example
    -------
    >>> relion3_path("picks", "MotionCorr/job002/Movies/m1.mrc").as_posix(), relion3_path("picks", "m1.mrc").as_posix()
    ('picks/Movies/m1.star', 'picks/m1.star')
    """
    name = relion_path(micrograph)
    if name.startswith("/"):
        return None
    job = re.match(r"^(.*?/)(job\d{3}[^/]*/)(.*)$", name)
    post = job.group(3) if job else name
    return Path(out_dir) / f"{str(PurePosixPath(post).with_suffix(''))}.star"


def link_for_relion3(coordinates: Path, target: Path | None) -> None:
    """Make ``target`` the same file as ``coordinates`` (a hard link, else a copy), so that RELION 3.1, which
    looks for each micrograph's coordinates under a copy of its folders, finds the file written beside
    RELION 4's list; nothing for no target."""
    if target is None or target == coordinates:
        return
    try:
        if target.exists() and os.path.samefile(target, coordinates):
            return
    except OSError:
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        tmp.unlink()
        try:
            os.link(coordinates, tmp)
        except OSError:  # a file system without hard links
            shutil.copyfile(coordinates, tmp)


def update_combined_picks(out_dir: str | os.PathLike, picked: list[tuple[Path, Path]], *,
                          note: str | None = None) -> Path | None:
    """One STAR file of every pick in ``out_dir`` (:data:`~deeppick.io.COMBINED_PICKS`: ``rlnMicrographName``
    as RELION names the micrograph, coordinates, figure of merit), for tools that want one file: the
    ``(micrograph, coordinate file)`` pairs of this batch join those the folder's record holds from earlier
    batches, whose files still exist. None where a micrograph's own picks would take its name, or a name
    cannot go in a STAR file (white space, not UTF-8)."""
    out_dir = Path(out_dir)
    path = out_dir / COMBINED_PICKS
    if path.exists() and not is_combined_picks(path):
        return None
    new = {coords.name: relion_path(mic) for mic, coords in picked if coords.is_file()}
    if any(not is_text(name) or any(c.isspace() for c in name) for name in new.values()):
        return None
    with folder_lock(out_dir):
        record = read_pick_record(out_dir)
        named = {**record.get("micrographs", {}), **new}
        named = {file: mic for file, mic in named.items() if (out_dir / file).is_file()}
        tables = []
        for file, mic in sorted(named.items(), key=lambda item: item[1]):
            picks = read_picks(out_dir / file)
            tables.append(picks.assign(micrograph=mic))
        write_picks(concat_picks(tables), path, "star", note=f"every pick of this folder, one file\n{note or ''}",
                    names_as_given=True)
        if named != record.get("micrographs", {}):
            _write_record(out_dir, {**record, "micrographs": named})
    return path


def update_coordinate_list(out_dir: str | os.PathLike, picked: list[tuple[Path, Path]], *,
                           note: str | None = None) -> Path | None:
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
    undecodable = [text_name(name) for pair in new.items() for name in pair if not is_text(name)]
    if undecodable:
        raise CoordinateError(f"no {COORDINATE_LIST} written: STAR files are UTF-8 text and {len(undecodable)} "
                              f"path(s) are not (the first: '{undecodable[0]}'); rename the folders or files "
                              "to use it (the per-micrograph coordinate files are written)")
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
        write_coordinate_list(path, entries, note=note)
    return path


def model_fingerprint(model: PickerModel) -> str:
    """A short hash of what makes a model pick as it does: weights, box, preprocessing, threshold, and the
    post-processing it stores. Equal for a model in memory and the same model saved and loaded again."""
    digest = hashlib.sha256()
    post = None if model.postprocess is None else model.postprocess.identity()
    digest.update(json.dumps({"arch": model.arch, "box_px": float(model.box_px),
                              "preprocess": model.preprocess.identity(), "threshold": model.threshold,
                              "postprocess": post}, sort_keys=True, default=float).encode())
    for name, tensor in sorted(model.net.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def pick_settings(model: PickerModel, config: PickConfig) -> dict:
    """The settings that decide what ``pick`` writes (tiling only changes the speed, so it is left out)."""
    settings = {"step_px": config.scan.step_px, "rotations": config.scan.rotations,
                "snap_step": config.scan.snap_step, "post": postprocess_config(model, config).identity(),
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


def claim_outputs(model: PickerModel, config: PickConfig, outputs: list[Path], *, overwrite: bool = False,
                  replace_others: bool = False) -> set[str]:
    """Check that ``outputs`` may be written or kept by this model and these settings, and record them.

    An existing output that the folder's record attributes to another model or other settings would be
    skipped by a resumed batch and so mix two pickers' results: unless ``overwrite`` or ``replace_others``
    that raises :class:`ConfigError` before anything is written. Outputs the record does not know (written
    before records were kept, or by hand) are kept. The record is updated atomically before
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
        _write_record(out_dir, {**record, "runs": runs, "files": files})
    return others


def record_failures(out_dir: str | os.PathLike, failed: list[tuple[str, str]], picked: Iterable[str]) -> None:
    """Keep in the folder's record the micrographs a batch could not use, with their reasons (``failed``:
    path, reason), and drop earlier failures of micrographs picked now (``picked``: their paths): the
    report lists what is still missing."""
    out_dir = Path(out_dir)
    if not failed and not (out_dir / PICK_RECORD).is_file():
        return
    with folder_lock(out_dir):
        record = read_pick_record(out_dir)
        known = {path: reason for path, reason in record.get("failed", {}).items() if path not in set(picked)}
        known.update(dict(failed))
        if known != record.get("failed", {}):
            _write_record(out_dir, {**record, "failed": known})


def _write_record(out_dir: Path, record: dict) -> None:
    atomic_write_text(out_dir / PICK_RECORD, json.dumps({**record, "format": "deeppick-picks-record", "version": 1},
                                                        indent=1, sort_keys=True))


