"""Tests of deeppick.patches: the cropping convention, training patch sets and their files."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from deeppick.cli import cli
from deeppick.errors import ConfigError, DeepPickError
from pathlib import Path

from deeppick.io import make_picks, read_picks, write_coordinate_list, write_picks
from deeppick.patches import (PatchConfig, PatchSet, PatchSetError, concat_patch_sets, crop_patches,
                              extract_dataset_patches, extract_patches, load_patch_set, model_centres,
                              sample_near_negative_centres, sample_negative_centres, save_patch_set)
from deeppick.preprocess import PreprocessConfig, prepare_micrograph


def synthetic_micrograph(rng, size=256, box_px=32, n=12, contrast=3.0):
    """Gaussian noise with ``n`` bright discs (diameter 0.8 box) that do not overlap; returns image, (n, 2) x, y."""
    yy, xx = np.mgrid[:size, :size]
    image = rng.normal(size=(size, size)).astype(np.float32)
    centres = []
    for _ in range(10_000):
        if len(centres) == n:
            break
        c = rng.uniform(box_px / 2, size - box_px / 2, 2)
        if all(np.hypot(*(c - q)) > 1.1 * box_px for q in centres):
            centres.append(c)
    for x, y in centres:
        image[(xx - x) ** 2 + (yy - y) ** 2 < (0.4 * box_px) ** 2] += contrast
    return image, np.array(centres)


def write_dataset(root, rng, splits=("train", "train", "valid"), box_px=32, size=256, n=12):
    """A tiny dataset folder: PNG micrographs, STAR coordinates, dataset.json with a split per micrograph."""
    (root / "micrographs").mkdir(parents=True)
    (root / "coords").mkdir()
    entries = []
    for i, split in enumerate(splits):
        image, xy = synthetic_micrograph(rng, size, box_px, n)
        scaled = np.clip((image - image.min()) / (image.max() - image.min()) * 255, 0, 255).astype(np.uint8)
        name = f"mic{i:02d}.png"
        Image.fromarray(scaled).save(root / "micrographs" / name)
        write_picks(make_picks(f"mic{i:02d}", xy[:, 0], xy[:, 1]), root / "coords" / f"mic{i:02d}.star")
        entries.append({"micrograph": name, "split": split})
    (root / "dataset.json").write_text(json.dumps({"name": "tiny", "diameter_px": box_px, "micrographs": entries}))
    return root


@pytest.mark.parametrize("config", [PreprocessConfig(), PreprocessConfig(highpass_sigma_model_px=64)])
def test_training_patches_are_the_pixels_the_scanner_sees(rng, config):
    image, xy = synthetic_micrograph(rng, size=300, box_px=40)
    ps = extract_patches(image, xy, box_px=40, preprocess=config, seed=1)
    prepared = prepare_micrograph(image, 40, config)
    cx, cy = model_centres(prepared, ps.x, ps.y)
    expected = crop_patches(prepared.image, cx, cy, config.model_px)
    np.testing.assert_array_equal(ps.patches, expected)
    # positives sit exactly on the labelled centres, in the given order
    pos = ps.labels == 1
    np.testing.assert_allclose(np.column_stack([ps.x[pos], ps.y[pos]]), xy, atol=1e-3)
    # the particle is bright in the centre of its positive patch, not in the background ones
    centre = ps.patches[:, 28:36, 28:36].mean(axis=(1, 2))
    assert centre[pos].min() > centre[ps.hard & ~pos].max()


def test_negatives_keep_06_box_from_every_particle_and_match_positives_in_number(rng):
    image, xy = synthetic_micrograph(rng, size=320, box_px=32, n=20)
    ps = extract_patches(image, xy, box_px=32, seed=3)
    neg = ps.hard & (ps.labels == 0)
    assert neg.sum() == ps.n_positive == ps.n_negative == 20
    negatives = np.column_stack([ps.x[neg], ps.y[neg]])
    dist = np.hypot(negatives[:, None, 0] - xy[None, :, 0], negatives[:, None, 1] - xy[None, :, 1]).min(axis=1)
    assert dist.min() >= 0.6 * 32
    assert np.all((negatives >= 0) & (negatives <= 319))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n_particles=st.integers(0, 30), min_box=st.floats(0.1, 1.5))
def test_sampled_negatives_respect_the_distance_rule(seed, n_particles, min_box):
    rng = np.random.default_rng(seed)
    particles = rng.uniform(0, 200, (n_particles, 2))
    got = sample_negative_centres((200, 200), particles, 25, min_distance_px=min_box * 30, rng=rng)
    assert len(got) <= 25
    if n_particles:
        d = np.hypot(got[:, None, 0] - particles[None, :, 0], got[:, None, 1] - particles[None, :, 1])
        assert d.size == 0 or d.min() >= min_box * 30
    else:
        assert len(got) == 25


def test_sampled_negatives_keep_the_edge_margin(rng):
    got = sample_negative_centres((120, 200), np.zeros((0, 2)), 400, min_distance_px=10, rng=rng, edge_margin_px=25)
    assert len(got) == 400
    assert got[:, 0].min() >= 25 and got[:, 0].max() <= 199 - 25
    assert got[:, 1].min() >= 25 and got[:, 1].max() <= 119 - 25
    assert got[:, 1].min() < 30 and got[:, 0].max() > 170  # the whole inner area, up to the margin


def test_crowded_micrograph_gives_fewer_negatives_not_a_hang(rng):
    grid = np.stack(np.meshgrid(np.arange(0, 200, 10.0), np.arange(0, 200, 10.0)), -1).reshape(-1, 2)
    assert len(sample_negative_centres((200, 200), grid, 50, min_distance_px=30, rng=rng, max_tries=5)) == 0


def test_near_miss_negatives_lie_beside_particles_and_off_every_centre(rng):
    image, xy = synthetic_micrograph(rng, size=300, box_px=32, n=15)
    config = PatchConfig(near_negative_ratio=1.0, near_negative_min_box=0.3, off_centre_ratio=0.0)
    ps = extract_patches(image, xy, 32, config=config, seed=0)
    src = ps.metadata["sources"][0]
    assert src["n_near_negative"] == src["n_positive"] == 15 and src["n_random_negative"] == 15
    neg = np.column_stack([ps.x, ps.y])[ps.labels == 0]
    dist = np.hypot(*(neg[:, None] - xy[None]).transpose(2, 0, 1)).min(axis=1)
    near = dist < 0.6 * 32
    assert near.sum() == 15  # exactly the near-miss ones lie closer than DeepPicker's 0.6 box
    assert (dist[near] >= 0.3 * 32).all()
    # the default keeps DeepPicker's rule alone, and bad settings are refused
    assert extract_patches(image, xy, 32, seed=0).metadata["sources"][0]["n_near_negative"] == 0
    with pytest.raises(ConfigError, match="near_negative_min_box"):
        PatchConfig(near_negative_ratio=1.0, near_negative_min_box=0.7)
    lonely = sample_near_negative_centres((300, 300), np.zeros((0, 2)), 10, min_distance_px=5, max_distance_px=10,
                                          rng=rng)
    assert lonely.shape == (0, 2)


def test_off_centre_views_carry_soft_targets_of_the_nearest_particle(rng, tmp_path):
    image, xy = synthetic_micrograph(rng, size=300, box_px=32, n=15)
    config = PatchConfig(off_centre_ratio=2.0, off_centre_max_box=0.5, off_centre_sigma_box=0.1)
    ps = extract_patches(image, xy, 32, config=config, seed=0)
    off = ~ps.hard
    assert off.sum() == ps.n_off_centre == ps.metadata["sources"][0]["n_off_centre"] == 30
    assert (ps.labels[off] == 0).all() and ps.n_positive == ps.n_negative == 15
    centres = np.column_stack([ps.x[off], ps.y[off]])
    dist = np.hypot(*(centres[:, None] - xy[None]).transpose(2, 0, 1)).min(axis=1)
    assert dist.max() <= 0.5 * 32 + 1e-3
    assert dist.min() < 3.2 and dist.max() > 9.6  # they cover the peak and its flank
    np.testing.assert_allclose(ps.targets[off], np.exp(-0.5 * (dist / 3.2) ** 2), atol=1e-4)
    np.testing.assert_array_equal(ps.targets[ps.hard], ps.labels[ps.hard])
    # files keep the targets; patch sets without off-centre views have none, old (format 1) files too
    save_patch_set(ps, tmp_path / "p.npz")
    back = load_patch_set(tmp_path / "p.npz")
    np.testing.assert_array_equal(back.targets, ps.targets)
    assert "30 off-centre" in back.summary() and "15 particles" in back.summary()
    assert back.summary().endswith("from 1 micrograph, box 32 px")  # one source, said in the singular
    plain = extract_patches(image, xy, 32, config=PatchConfig(off_centre_ratio=0.0), seed=0)
    assert plain.targets is None and plain.hard.all()
    with open(tmp_path / "v1.npz", "wb") as fh:
        np.savez(fh, patches=plain.patches, labels=plain.labels, source=plain.source, x=plain.x, y=plain.y,
                 metadata_json=np.array(json.dumps({**plain.metadata, "format_version": 1})))
    assert load_patch_set(tmp_path / "v1.npz").targets is None
    joined = concat_patch_sets([plain, ps])
    np.testing.assert_array_equal(joined.training_targets, np.r_[plain.labels, ps.targets].astype(np.float32))
    assert len(ps.subset(np.flatnonzero(off)[:3]).targets) == 3
    with pytest.raises(ConfigError, match="off-centre"):
        PatchConfig(off_centre_ratio=-1.0)


def test_explicit_negatives_ratio_and_subsampling(rng):
    image, xy = synthetic_micrograph(rng, size=300, box_px=32, n=15)
    explicit = np.array([[20.0, 20.0], [280.0, 40.0], [999.0, 5.0]])  # the last lies off the image
    ps = extract_patches(image, xy, 32, config=PatchConfig(negative_ratio=0.0, max_positives_per_micrograph=5,
                                                    off_centre_ratio=0.0), negatives=explicit, seed=0)
    assert ps.n_positive == 5 and ps.n_negative == 2
    np.testing.assert_allclose(np.column_stack([ps.x, ps.y])[ps.labels == 0], explicit[:2])
    src = ps.metadata["sources"][0]
    assert (src["n_positive"], src["n_random_negative"], src["n_explicit_negative"]) == (5, 0, 2)
    ps2 = extract_patches(image, xy, 32, config=PatchConfig(negative_ratio=2.0), seed=0)
    assert ps2.n_negative == 30


def test_positives_mostly_off_the_image_are_dropped(rng):
    image, _ = synthetic_micrograph(rng, size=200, box_px=32, n=0)
    xy = np.array([[1.0, 1.0], [100.0, 100.0], [250.0, 50.0]])  # a corner (28 % inside), inside, off
    ps = extract_patches(image, xy, 32, seed=0)
    assert ps.n_positive == 1 and ps.x[ps.labels == 1][0] == 100.0


def test_extraction_is_deterministic_for_a_seed(rng):
    image, xy = synthetic_micrograph(rng)
    a, b = (extract_patches(image, xy, 32, seed=5) for _ in range(2))
    c = extract_patches(image, xy, 32, seed=6)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)


def test_several_micrographs_by_stem_and_picks_table(rng):
    (im0, xy0), (im1, xy1) = synthetic_micrograph(rng, n=5), synthetic_micrograph(rng, n=7)
    table = make_picks(["a"] * 5 + ["b"] * 7, np.r_[xy0[:, 0], xy1[:, 0]], np.r_[xy0[:, 1], xy1[:, 1]])
    ps = extract_patches({"a": im0, "b": im1}, table, 32, seed=0)
    assert ps.n_positive == 12
    assert [s["micrograph"] for s in ps.metadata["sources"]] == ["a", "b"]
    assert np.bincount(ps.source[ps.labels == 1]).tolist() == [5, 7]


def test_patch_set_file_round_trip_and_metadata(tmp_path, rng):
    image, xy = synthetic_micrograph(rng, n=6)
    ps = extract_patches(image, xy, 32, seed=0, dataset="tiny")
    save_patch_set(ps, tmp_path / "p.npz")
    back = load_patch_set(tmp_path / "p.npz")
    for name in ("patches", "labels", "source", "x", "y"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ps, name))
    assert back.box_px == 32 and back.metadata["preprocess"] == PreprocessConfig().to_dict()
    assert back.metadata["sources"][0]["dataset"] == "tiny"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.npz"]  # no temporary left behind


@settings(max_examples=15, deadline=None)
@given(n=st.integers(0, 6), box=st.floats(8, 500, allow_nan=False), name=st.text(min_size=1, max_size=12))
def test_patch_set_round_trip_property(tmp_path_factory, n, box, name):
    rng = np.random.default_rng(n)
    ps = PatchSet(rng.normal(size=(n, 1, 64, 64)), rng.integers(0, 2, n), np.zeros(n), rng.uniform(0, 99, n),
                  rng.uniform(0, 99, n), {"box_px": box, "sources": [{"micrograph": name, "box_px": box}]})
    path = tmp_path_factory.mktemp("ps") / "p.npz"
    save_patch_set(ps, path)
    back = load_patch_set(path)
    assert back.patches.shape == (n, 64, 64)
    np.testing.assert_array_equal(back.patches, ps.patches)
    np.testing.assert_array_equal(back.labels, ps.labels)
    assert back.box_px == box and back.metadata["sources"][0]["micrograph"] == name


def test_corrupt_or_foreign_patch_set_files_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(PatchSetError, match="bad.npz.*corrupt"):
        load_patch_set(bad)
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    with pytest.raises(PatchSetError, match="not a deeppick patch set"):
        load_patch_set(other)
    with pytest.raises(PatchSetError, match="no such patch set"):
        load_patch_set(tmp_path / "missing.npz")
    ps = PatchSet(np.zeros((1, 64, 64)), [1], [0], [0], [0], {"box_px": 10})
    save_patch_set(ps, tmp_path / "v.npz")
    with np.load(tmp_path / "v.npz") as data:
        arrays = dict(data)
    meta = json.loads(str(arrays["metadata_json"]))
    meta["format_version"] = 99
    arrays["metadata_json"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "v99.npz", **arrays)
    with pytest.raises(PatchSetError, match="version 99"):
        load_patch_set(tmp_path / "v99.npz")


def test_concat_mixes_boxes_and_renumbers_sources(rng):
    (im0, xy0), (im1, xy1) = synthetic_micrograph(rng, n=4), synthetic_micrograph(rng, n=3)
    a = extract_patches({"a0": im0, "a1": im1}, {"a0": xy0, "a1": xy1}, 32, seed=0, dataset="A")
    b = extract_patches(im0, xy0, 40, seed=0, dataset="B")
    joined = concat_patch_sets([a, b])
    assert len(joined) == len(a) + len(b)
    assert joined.box_px is None
    assert [s["box_px"] for s in joined.metadata["sources"]] == [32, 32, 40]
    assert joined.source[len(a):].tolist() == [2] * len(b)
    np.testing.assert_array_equal(joined.patches[len(a):], b.patches)
    assert concat_patch_sets([a, a]).box_px == 32
    c = extract_patches(im0, xy0, 32, preprocess=PreprocessConfig(lowpass_sigma_model_px=0.0), seed=0)
    with pytest.raises(PatchSetError, match="different preprocessing"):
        concat_patch_sets([a, c])
    flat = extract_patches(im0, xy0, 32, preprocess=PreprocessConfig(highpass_sigma_model_px=64), seed=0)
    with pytest.raises(PatchSetError, match="different preprocessing"):
        concat_patch_sets([a, flat])
    # a patch set written before background subtraction existed joins one written since, without it
    old = replace(b, metadata={**b.metadata, "preprocess": {k: v for k, v in b.metadata["preprocess"].items()
                                                            if k != "highpass_sigma_model_px"}})
    assert len(concat_patch_sets([a, old])) == len(a) + len(b)


def test_dataset_patches_use_only_the_split(tmp_path, rng):
    root = write_dataset(tmp_path / "ds", rng)
    train = extract_dataset_patches(root, "train", seed=0)
    valid = extract_dataset_patches(root, "valid", seed=0)
    assert [s["micrograph"] for s in train.metadata["sources"]] == ["mic00", "mic01"]
    assert [s["micrograph"] for s in valid.metadata["sources"]] == ["mic02"]
    assert train.n_positive == 24 and train.box_px == 32
    assert train.metadata["dataset"]["split"] == "train"


def test_extract_command_writes_a_patch_set(tmp_path, rng):
    root = write_dataset(tmp_path / "ds", rng)
    out = tmp_path / "p.npz"
    result = CliRunner().invoke(cli, ["extract", "--dataset", str(root), "--max-per-micrograph", "5", "-o", str(out)])
    assert result.exit_code == 0, result.output
    ps = load_patch_set(out)
    assert ps.n_positive == 10 and ps.n_negative == 10
    out2 = tmp_path / "q.npz"
    result = CliRunner().invoke(cli, ["extract", "--micrographs", str(root / "micrographs" / "mic02.png"),
                                      "--coords", str(root / "coords"), "--box-px", "32", "-o", str(out2)])
    assert result.exit_code == 0, result.output
    assert load_patch_set(out2).n_positive == 12
    out3 = tmp_path / "near.npz"
    result = CliRunner().invoke(cli, ["extract", "--dataset", str(root), "--max-per-micrograph", "5",
                                      "--near-negatives", "1", "-o", str(out3)])
    assert result.exit_code == 0, result.output
    near = load_patch_set(out3)
    assert near.n_positive == 10 and near.n_negative == 20
    assert sum(s["n_near_negative"] for s in near.metadata["sources"]) == 10
    assert near.metadata["patch_config"]["near_negative_ratio"] == 1.0
    assert near.n_off_centre == 40  # the default: 4 off-centre views per particle
    out4 = tmp_path / "plain.npz"
    result = CliRunner().invoke(cli, ["extract", "--dataset", str(root), "--max-per-micrograph", "5",
                                      "--off-centre", "0", "-o", str(out4)])
    assert result.exit_code == 0, result.output
    assert load_patch_set(out4).targets is None and "off-centre" not in result.output
    result = CliRunner().invoke(cli, ["extract", "--dataset", str(root), "--off-centre", "-1", "-o", str(out4)])
    assert result.exit_code == 2 and "--off-centre" in result.output
    # background subtraction: cut from micrographs prepared with it, and stored with the patches
    flat = tmp_path / "flat.npz"
    result = CliRunner().invoke(cli, ["extract", "--dataset", str(root), "--max-per-micrograph", "5",
                                      "--off-centre", "0", "--highpass", "32", "-o", str(flat)])
    assert result.exit_code == 0, result.output
    flat_set, plain_set = load_patch_set(flat), load_patch_set(out4)
    assert flat_set.metadata["preprocess"]["highpass_sigma_model_px"] == 32
    assert plain_set.metadata["preprocess"]["highpass_sigma_model_px"] == 0
    assert not np.allclose(flat_set.patches, plain_set.patches, atol=1e-3)
    result = CliRunner().invoke(cli, ["extract", "--dataset", str(root), "--highpass", "4", "-o", str(flat)])
    assert result.exit_code == 2 and "at least 16 model px" in result.output and "Traceback" not in result.output
    # a patch set is prepared already: train refuses to pretend otherwise
    result = CliRunner().invoke(cli, ["train", "--patches", str(flat), "--highpass", "64", "-o",
                                      str(tmp_path / "m.pt")])
    assert result.exit_code == 2 and "give it to 'deeppick extract'" in result.output


def test_extract_command_reads_relion_lists_and_chooses_a_format(tmp_path, rng, monkeypatch):
    root = write_dataset(tmp_path / "ds", rng)
    monkeypatch.chdir(root)
    coords = sorted(Path("coords").glob("*.star"))
    # A ManualPick job's list of coordinate files, paths relative to the project folder (here: the dataset).
    write_coordinate_list("manualpick.star", {f"micrographs/{c.stem}.png": c.as_posix() for c in coords[:2]})
    result = CliRunner().invoke(cli, ["extract", "--micrographs", "micrographs", "--coords", "manualpick.star",
                                      "--box-px", "32", "--off-centre", "0", "-o", "listed.npz"])
    assert result.exit_code == 0, result.output
    listed = load_patch_set("listed.npz")
    used = [s["micrograph"] for s in listed.metadata["sources"] if s["n_positive"]]
    assert used == [c.stem for c in coords[:2]] and listed.n_positive == sum(len(read_picks(c)) for c in coords[:2])
    # A folder with the same particles as STAR and as BOX: refused without a format, read once with one.
    both = Path("both")
    for c in coords:
        picks = read_picks(c)
        write_picks(picks, both / f"{c.stem}.star")
        write_picks(picks, both / f"{c.stem}.box", box_px=32)
    args = ["extract", "--micrographs", "micrographs", "--coords", "both", "--box-px", "32", "-o", "both.npz"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "several formats" in result.stderr and "Traceback" not in result.output
    result = CliRunner().invoke(cli, [*args, "--coords-format", "box"])
    assert result.exit_code == 0, result.output
    assert load_patch_set("both.npz").n_positive == sum(len(read_picks(c)) for c in coords)


def test_extract_command_reports_missing_inputs(tmp_path):
    result = CliRunner().invoke(cli, ["extract", "--micrographs", str(tmp_path), "-o", str(tmp_path / "p.npz")])
    assert result.exit_code == 2
    assert "--coords" in result.output and "Traceback" not in result.output


def test_real_pack_patches(realdata):
    ps = extract_dataset_patches(realdata / "ribosome80s-10028", "train", max_micrographs=1, seed=0)
    assert ps.n_positive > 50 and ps.n_negative == ps.n_positive
    assert ps.patches.shape[1:] == (64, 64) and np.isfinite(ps.patches).all()


def test_a_stack_of_boxed_particles_matches_the_micrograph_crops_at_another_box(tmp_path):
    # the same particles boxed at twice their box (as RELION extracts them), then brought into the model frame
    from deeppick.patches import patches_from_stacks
    from deeppick.preprocess import PreprocessConfig
    import mrcfile

    rng = np.random.default_rng(3)
    image, xy = synthetic_micrograph(rng, size=512, box_px=40, n=12, contrast=2.5)
    micrograph_patches = extract_patches(image, xy, 40, config=PatchConfig(negative_ratio=0, off_centre_ratio=0),
                                         seed=0)
    side = 80  # the stack's box: twice the particle's
    padded = np.pad(image, side)
    stack = np.stack([padded[int(round(y)) + side - side // 2:int(round(y)) + side + side // 2,
                             int(round(x)) + side - side // 2:int(round(x)) + side + side // 2] for x, y in xy])
    background = rng.normal(size=(12, side, side)).astype(np.float32)
    for name, data in (("good.mrcs", stack), ("bad.mrcs", background)):
        with mrcfile.new(tmp_path / name) as mrc:
            mrc.set_data(data.astype(np.float32))
    ps = patches_from_stacks(tmp_path / "good.mrcs", tmp_path / "bad.mrcs", 40, preprocess=PreprocessConfig())
    assert ps.patches.shape == (24, 64, 64) and ps.labels.tolist() == [1] * 12 + [0] * 12 and ps.box_px == 40
    for from_stack, from_micrograph in zip(ps.patches[:12], micrograph_patches.patches):
        r = np.corrcoef(from_stack.ravel(), from_micrograph.ravel())[0, 1]
        assert r > 0.9, r  # the same pixels up to the resampling's edge and the normalisation
    with pytest.raises(DeepPickError, match="no such particle stack"):
        patches_from_stacks(tmp_path / "missing.mrcs", tmp_path / "bad.mrcs", 40)
