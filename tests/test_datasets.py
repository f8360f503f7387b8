"""Dataset folders: the real packs load, coordinates lie inside their images, errors name the problem."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from deeppick.datasets import load_dataset
from deeppick.errors import DatasetError
from deeppick.io import make_picks, write_micrograph, write_picks

from .conftest import ANNOTATED_PACKS


@pytest.mark.parametrize("pack", ANNOTATED_PACKS)
def test_real_packs_load_and_coordinates_lie_inside_images(realdata, pack):
    ds = load_dataset(realdata / pack)
    meta = json.loads((realdata / pack / "dataset.json").read_text())
    assert len(ds.micrographs) == len(meta["micrographs"])
    assert ds.diameter_px == meta["diameter_px"]
    assert len(ds.picks) == sum(m["particles"] for m in meta["micrographs"])
    assert set(ds.split.values()) <= {"train", "valid", "test"} and ds.paths("train") and ds.paths("test")
    for path in ds.micrographs:
        with Image.open(path) as im:  # header only: the size without decoding 4096² pixels
            width, height = im.size
        picks = ds.picks_for(path.stem)
        assert len(picks) > 0
        assert (picks["x"] >= 0).all() and (picks["x"] <= width - 1).all()
        assert (picks["y"] >= 0).all() and (picks["y"] <= height - 1).all()


def _make_dataset(root, names=("a", "b"), splits=("train", "test")):
    (root / "micrographs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in names:
        write_micrograph(root / "micrographs" / f"{name}.mrc", rng.normal(size=(64, 64)))
        write_picks(make_picks(name, [10, 20], [30, 40]), root / "coords" / f"{name}.star")
    entries = [{"micrograph": f"{n}.mrc", "split": s} for n, s in zip(names, splits)]
    (root / "dataset.json").write_text(json.dumps({"diameter_px": 12, "micrographs": entries}))


def test_synthetic_dataset_split_and_picks(tmp_path):
    _make_dataset(tmp_path)
    ds = load_dataset(tmp_path)
    assert ds.stems("train") == ["a"] and ds.stems("test") == ["b"] and ds.stems("validation") == []
    assert len(ds.picks_for("a")) == 2 and ds.default_box_px() == 12


def test_missing_parts_are_named(tmp_path):
    with pytest.raises(DatasetError, match="no dataset.json"):
        load_dataset(tmp_path)
    _make_dataset(tmp_path)
    write_picks(make_picks("zzz", [1], [1]), tmp_path / "coords" / "zzz.star")
    with pytest.raises(DatasetError, match=r"match no micrograph: zzz\.star"):
        load_dataset(tmp_path)
    (tmp_path / "coords" / "zzz.star").unlink()
    (tmp_path / "micrographs" / "b.mrc").unlink()
    with pytest.raises(DatasetError, match=r"lists b\.mrc, which is not in"):
        load_dataset(tmp_path)
