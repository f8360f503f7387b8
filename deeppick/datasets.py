"""Dataset folders: micrographs, their reference coordinates and a per-micrograph split.

Layout (the one of ``../shared/realdata/*`` and of ``deeppick simulate`` output)::

    DIR/dataset.json          {"diameter_px": ..., "micrographs": [{"micrograph": NAME, "split": ...}, ...]}
    DIR/micrographs/NAME      MRC, TIFF, PNG or JPEG
    DIR/coords/<stem>.star    particle centres (any format :func:`deeppick.io.read_picks` reads)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .errors import DatasetError
from .io import (FORMAT_SUFFIX, MICROGRAPH_SUFFIXES, concat_picks, coordinate_stem, micrograph_stem,
                 picks_of, read_picks)

SPLITS = ("train", "valid", "test")
_SPLIT_ALIASES = {"train": "train", "training": "train", "valid": "valid", "val": "valid",
                  "validation": "valid", "test": "test", "testing": "test"}


@dataclass
class Dataset:
    """A loaded dataset folder."""

    root: Path
    name: str
    diameter_px: float | None
    micrographs: list[Path]  # every micrograph, in dataset.json order
    split: dict[str, str]  # stem → "train" | "valid" | "test"
    picks: pd.DataFrame  # reference centres of all micrographs (the one picks table)
    meta: dict = field(default_factory=dict)  # dataset.json as read
    junk: pd.DataFrame | None = None  # centres on contaminants (junk/ of simulated datasets), or None

    def stems(self, split: str | None = None) -> list[str]:
        """Micrograph stems, optionally of one split."""
        return [micrograph_stem(p) for p in self.paths(split)]

    def paths(self, split: str | None = None) -> list[Path]:
        """Micrograph paths, optionally of one split (``train``, ``valid`` or ``test``)."""
        if split is None:
            return list(self.micrographs)
        split = normalise_split(split)
        return [p for p in self.micrographs if self.split[micrograph_stem(p)] == split]

    def picks_for(self, stem: str) -> pd.DataFrame:
        """Reference picks of one micrograph."""
        return picks_of(self.picks, stem)

    def default_box_px(self) -> int:
        """Box side for this dataset: the particle diameter (DeepPicker boxes the particle itself)."""
        if not self.diameter_px:
            raise DatasetError(f"{self.root}/dataset.json: no diameter_px; give the box size with --box-px")
        return int(round(self.diameter_px))


def dataset_from(micrographs, picks: pd.DataFrame, *, name: str = "labelled micrographs",
                 diameter_px: float | None = None, holdout_fraction: float = 0.15) -> Dataset:
    """A dataset of micrographs and their labelled particles without a dataset folder (``fit --micrographs
    --coords``): the labelled micrographs split into ``train`` and ``valid``, the last ``holdout_fraction``
    of them (at least one) held out to choose the threshold on; micrographs without labels are left out.

    Raises
    ------
    DatasetError
        With fewer than two labelled micrographs: one is needed to train and one to hold out.
    """
    from .io import list_micrographs

    paths = [p for p in list_micrographs(micrographs) if micrograph_stem(p) in set(picks["micrograph"])]
    if len(paths) < 2:
        raise DatasetError(f"{len(paths)} of the micrographs given have labelled particles; fit needs two or more "
                           "(one to train on, one to choose the threshold on): label another, or use 'deeppick "
                           "train'")
    n_hold = max(1, int(round(holdout_fraction * len(paths))))
    split = {micrograph_stem(p): "train" for p in paths[:-n_hold]}
    split.update({micrograph_stem(p): "valid" for p in paths[-n_hold:]})
    root = paths[0].parent
    return Dataset(root=root, name=name, diameter_px=diameter_px, micrographs=paths, split=split,
                   picks=picks[picks["micrograph"].isin(split)].reset_index(drop=True),
                   meta={"name": name, "diameter_px": diameter_px, "source": "micrographs and coordinates"})


def normalise_split(split: str) -> str:
    try:
        return _SPLIT_ALIASES[split.lower()]
    except KeyError:
        raise DatasetError(f"unknown split '{split}'; use train, valid or test") from None


def load_dataset(path: str | os.PathLike) -> Dataset:
    """Load a dataset folder: its micrograph paths, reference coordinates and split.

    Micrographs listed in ``dataset.json`` must exist; a micrograph with no coordinate file has no
    particles. A ``dataset.json`` without a micrograph list takes every file in ``micrographs/`` as
    ``train``. Coordinate files that match no micrograph are an error that names them.

    Example
    -------
    >>> ds = load_dataset("../shared/realdata/ribosome80s-10028")  # doctest: +SKIP
    >>> len(ds.paths("test")), ds.diameter_px  # doctest: +SKIP
    (5, 56)
    """
    root = Path(path)
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise DatasetError(f"{root}: not a dataset folder (no dataset.json); see the README for the layout")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{meta_path}: not valid JSON ({exc})") from None
    mic_dir = root / "micrographs"
    if not mic_dir.is_dir():
        raise DatasetError(f"{root}: no micrographs/ folder")
    entries = meta.get("micrographs")
    if entries:
        micrographs, split = [], {}
        for entry in entries:
            name = entry["micrograph"] if isinstance(entry, dict) else str(entry)
            mic = mic_dir / name
            if not mic.is_file():
                raise DatasetError(f"{meta_path}: lists {name}, which is not in {mic_dir}")
            micrographs.append(mic)
            given = entry.get("split", "train") if isinstance(entry, dict) else "train"
            split[micrograph_stem(name)] = normalise_split(given)
    else:
        micrographs = sorted(p for p in mic_dir.iterdir() if p.suffix.lower() in MICROGRAPH_SUFFIXES)
        split = {micrograph_stem(p): "train" for p in micrographs}
    if not micrographs:
        raise DatasetError(f"{mic_dir}: no micrographs")

    coord_dir = root / "coords"
    tables = []
    if coord_dir.is_dir():
        known = {*FORMAT_SUFFIX.values(), ".coord"}
        files = sorted(p for p in coord_dir.iterdir() if p.suffix.lower() in known)
        orphans = [p.name for p in files if coordinate_stem(p) not in split]
        if orphans:
            raise DatasetError(f"{coord_dir}: coordinate files match no micrograph: {', '.join(orphans)}")
        tables = [read_picks(p) for p in files]
    picks = concat_picks(tables)
    junk_dir = root / "junk"
    junk = concat_picks(read_picks(p) for p in sorted(junk_dir.glob("*.star"))) if junk_dir.is_dir() else None
    diameter = meta.get("diameter_px")
    return Dataset(root=root, name=meta.get("name", root.name), diameter_px=float(diameter) if diameter else None,
                   micrographs=micrographs, split=split, picks=picks, meta=meta, junk=junk)
