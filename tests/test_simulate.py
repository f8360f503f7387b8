"""Tests of deeppick.simulate: labels on their particles, SNR, contaminants unlabelled, determinism, layout."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from deeppick.cli import cli
from deeppick.datasets import load_dataset
from deeppick.errors import ConfigError
from deeppick.io import micrograph_pixel_size, read_micrograph
from deeppick.simulate import (CONTAMINANTS, ZOO_DENSITY, SimConfig, ctf_2d, molecule_names, random_rotations,
                               simulate_dataset, simulate_datasets, simulate_micrograph, simulate_zoo,
                               simulate_zoo_for_quota, split_assignment)

# Small and quick: 384 px, particles 40 px across, far apart, nothing else in the scene.
CLEAN = SimConfig(size_px=384, diameter_px=40, n_particles=5, min_distance_px=110, contaminants=(), snr=1.0)


def _centroid(image, x, y, radius_px):
    rows, cols = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    inside = (cols - x) ** 2 + (rows - y) ** 2 <= radius_px ** 2
    w = image[inside].astype(np.float64)
    return (w * cols[inside]).sum() / w.sum(), (w * rows[inside]).sum() / w.sum()


def _discs(shape, centres_xy, radius_px):
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    mask = np.zeros(shape, dtype=bool)
    for x, y in centres_xy:
        mask |= (cols - x) ** 2 + (rows - y) ** 2 <= radius_px ** 2
    return mask


def test_at_least_six_molecules():
    assert {"klh-like", "ring", "apoferritin-like", "bell", "elongated", "globular"} <= set(molecule_names())


@pytest.mark.parametrize("molecule", molecule_names())
def test_each_label_sits_on_its_particle(molecule):
    sim = simulate_micrograph(replace(CLEAN, molecule=molecule), rng=7, keep_layers=True)
    assert sim.centres_xy.shape == (5, 2)
    for x, y in sim.centres_xy:
        # The whole particle (≤ 1.35 × its radius, plus blur) is inside 50 px; neighbours are ≥ 110 px away.
        cx, cy = _centroid(sim.projection, x, y, 50)
        assert np.hypot(cx - x, cy - y) < 1.0
        assert sim.projection[int(round(y)), int(round(x))] > 0 or molecule in ("ring", "klh-like")


def test_side_views_are_long_and_top_views_are_rings():
    base = replace(CLEAN, molecule="klh-like", diameter_px=60, n_particles=3, min_distance_px=150, size_px=512)
    side = simulate_micrograph(replace(base, views="side"), rng=2, keep_layers=True)
    top = simulate_micrograph(replace(base, views="top"), rng=2, keep_layers=True)
    for (x, y), rotation in zip(side.centres_xy, side.rotations):
        assert abs(rotation[2, 2]) < 1e-9  # the cylinder axis lies in the image plane
        # The 60 px long axis is seen whole: density reaches ±0.45 diameter along it.
        ax, ay = rotation[0, 2], rotation[1, 2]
        assert side.projection[int(round(y + 27 * ay)), int(round(x + 27 * ax))] > 0
    for x, y in top.centres_xy:
        hole = top.projection[int(round(y)), int(round(x))]
        wall = top.projection[int(round(y)), int(round(x + 0.73 * 30))]
        assert hole < 0.5 * wall  # a ring: the centre is (nearly) empty, the wall dense


@pytest.mark.parametrize("snr", [0.02, 0.1, 1.0])
def test_reported_snr_is_within_ten_percent_of_requested_and_measured(snr):
    config = SimConfig(molecule="ring", size_px=384, diameter_px=50, n_particles=12, snr=snr)
    sim = simulate_micrograph(config, rng=11, keep_layers=True)
    noise = sim.image.astype(np.float64) - sim.signal - sim.contaminant_signal
    discs = _discs(sim.image.shape, sim.centres_xy, sim.diameter_px / 2)
    measured = sim.signal[discs].var(dtype=np.float64) / noise.var()
    assert sim.snr == pytest.approx(snr, rel=0.1)
    assert measured == pytest.approx(snr, rel=0.1)


def test_noise_level_k_scales_the_snr_as_one_over_k_squared():
    base = SimConfig(size_px=256, diameter_px=40, n_particles=6, snr=None, noise_level=0.5, contaminants=())
    one = simulate_micrograph(replace(base, noise_level=1.0), rng=5)
    two = simulate_micrograph(replace(base, noise_level=2.0), rng=5)
    assert one.snr == pytest.approx(0.05, rel=0.1)  # k = 1 is Baxter et al.'s SNR 0.05
    assert two.snr == pytest.approx(one.snr / 4, rel=0.01)


def test_contaminants_carry_no_label():
    config = SimConfig(size_px=512, diameter_px=40, n_particles=10, contamination=8.0, snr=0.5)
    for seed in range(3):
        sim = simulate_micrograph(config, rng=seed, keep_layers=True)
        assert len(sim.centres_xy) == 10
        assert sum(sim.contaminants.values()) > 0 and sim.contaminant_mask.any()
        near_labels = _discs(sim.image.shape, sim.centres_xy, sim.diameter_px / 2 + 2)
        assert not (sim.contaminant_mask & near_labels).any()
        # Contaminant density is real signal in the image, far from every label.
        assert np.abs(sim.contaminant_signal).max() > 0.1 * np.abs(sim.signal).max()


def test_broken_particles_are_marked_where_their_remaining_density_lies(tmp_path):
    import scipy.ndimage

    from deeppick.io import read_picks
    from deeppick.simulate import simulate_dataset

    config = SimConfig(size_px=512, diameter_px=40, n_particles=40, contamination=3.0, snr=0.5,
                       contaminants=("broken",))
    sim = simulate_micrograph(config, rng=0, keep_layers=True)
    assert len(sim.broken_xy) == sim.contaminants["broken"] > 3
    pieces, _ = scipy.ndimage.label(sim.contaminant_mask)
    for x, y in sim.broken_xy:  # each sits on its own piece, at that piece's middle, not the lost particle's
        piece = pieces[int(round(y)), int(round(x))]
        assert piece > 0
        row, col = scipy.ndimage.center_of_mass(pieces == piece)
        assert np.hypot(col - x, row - y) < 0.1 * sim.diameter_px
    seen = []
    simulate_dataset(tmp_path / "ds", config, n_micrographs=1, split_fractions=(1, 0, 0), seed=0,
                     progress=lambda i, stem, s: seen.append(s.broken_xy))
    marked = read_picks(next((tmp_path / "ds" / "broken").glob("*.star")))
    assert len(seen[0]) > 3
    np.testing.assert_allclose(marked[["x", "y"]].to_numpy(float), seen[0], atol=0.01)


def test_empty_micrograph_is_the_same_scene_without_particles():
    config = SimConfig(size_px=384, diameter_px=40, n_particles=8, contamination=4.0, snr=0.2)
    full = simulate_micrograph(config, rng=3, keep_layers=True)
    empty = simulate_micrograph(replace(config, empty=True), rng=3)
    assert len(empty.centres_xy) == 0
    assert empty.contaminants == full.contaminants
    assert np.allclose(empty.image, full.image - full.signal, atol=1e-4 * float(np.abs(full.image).max()))
    assert empty.image.std() > 0


def test_same_seed_same_micrograph_other_seed_other():
    a = simulate_micrograph(CLEAN, rng=42)
    b = simulate_micrograph(CLEAN, rng=42)
    c = simulate_micrograph(CLEAN, rng=43)
    assert a.image.tobytes() == b.image.tobytes()
    assert np.array_equal(a.centres_xy, b.centres_xy)
    assert not np.array_equal(a.centres_xy, c.centres_xy)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_dataset_is_byte_identical_from_the_same_seed(tmp_path):
    config = replace(CLEAN, contaminants=CONTAMINANTS, contamination=3.0)
    first = simulate_dataset(tmp_path / "a" / "sim", config, n_micrographs=3, seed=9)
    second = simulate_dataset(tmp_path / "b" / "sim", config, n_micrographs=3, seed=9)
    other = simulate_dataset(tmp_path / "c" / "sim", config, n_micrographs=3, seed=10)
    assert _files(first) == _files(second)
    assert _files(first)["micrographs/globular_0000.mrc"] != _files(other)["micrographs/globular_0000.mrc"]


def test_dataset_folder_loads_with_labels_split_and_pixel_size(tmp_path):
    config = replace(CLEAN, molecule="bell", pixel_size_a=3.0)
    out = simulate_dataset(tmp_path / "bell", config, n_micrographs=4, seed=1, split_fractions=(0.5, 0.25, 0.25))
    ds = load_dataset(out)
    meta = json.loads((out / "dataset.json").read_text())
    assert ds.diameter_px == pytest.approx(40)
    assert meta["molecule"] == "bell" and meta["snr"] == 1.0 and meta["pixel_size_a"] == 3.0
    assert meta["parameters"]["min_distance_px"] == 110 and meta["parameters"]["seed"] == 1
    assert sorted(ds.split.values()) == ["test", "train", "train", "valid"]
    assert [e["particles"] for e in meta["micrographs"]] == [5] * 4
    path = ds.paths()[0]
    assert read_micrograph(path).dtype == np.float32
    assert micrograph_pixel_size(path) == pytest.approx(3.0)
    # The written labels are the simulator's centres for that micrograph (2-decimal STAR).
    seeds = np.random.SeedSequence(1).spawn(5)
    sim = simulate_micrograph(config, np.random.default_rng(seeds[0]))
    picks = ds.picks_for(path.stem)
    assert np.allclose(picks[["x", "y"]].to_numpy(), sim.centres_xy, atol=0.006)
    assert np.array_equal(read_micrograph(path), sim.image)


def test_existing_dataset_is_kept_unless_overwrite(tmp_path):
    simulate_dataset(tmp_path / "d", CLEAN, n_micrographs=3, seed=1)
    with pytest.raises(ConfigError, match="--overwrite"):
        simulate_dataset(tmp_path / "d", CLEAN, n_micrographs=2, seed=1)
    simulate_dataset(tmp_path / "d", CLEAN, n_micrographs=2, seed=1, overwrite=True)
    ds = load_dataset(tmp_path / "d")  # stale micrograph and coordinates of the first run are gone
    assert len(ds.micrographs) == 2 and len(list((tmp_path / "d" / "micrographs").iterdir())) == 2


def test_empty_dataset_has_no_labels(tmp_path):
    out = simulate_dataset(tmp_path / "e", replace(CLEAN, empty=True, contamination=3.0,
                                                   contaminants=CONTAMINANTS), n_micrographs=2)
    ds = load_dataset(out)
    assert len(ds.picks) == 0 and len(ds.micrographs) == 2


def test_several_molecules_go_to_separate_folders(tmp_path):
    paths = simulate_datasets(tmp_path, ["ring", "globular"], replace(CLEAN, diameter_px=None), n_micrographs=1,
                              diameters_px={"ring": 36})
    assert [p.name for p in paths] == ["ring", "globular"]
    assert load_dataset(paths[0]).diameter_px == pytest.approx(36)
    assert load_dataset(paths[1]).diameter_px == pytest.approx(160 / 2.2, abs=0.01)
    alone = simulate_datasets(tmp_path / "alone", ["globular"], replace(CLEAN, diameter_px=None), n_micrographs=1)
    assert _files(alone[0])["micrographs/globular_0000.mrc"] == _files(paths[1])["micrographs/globular_0000.mrc"]


@pytest.mark.parametrize("changes, option", [
    ({"molecule": "spaceship"}, "molecule"),
    ({"snr": -1.0}, "--snr"),
    ({"snr": 0.1, "noise_level": 1.0}, "--noise-level"),
    ({"defocus_um": (3.0, 1.0)}, "--defocus-um"),
    ({"contaminants": ("ice", "dust")}, "--contaminants"),
    ({"diameter_px": 300}, "--diameter-px"),
])
def test_bad_parameters_raise_config_error_naming_the_option(changes, option):
    with pytest.raises(ConfigError, match=option):
        SimConfig(**changes)


def test_too_many_particles_is_a_config_error():
    with pytest.raises(ConfigError, match="could place only"):
        simulate_micrograph(SimConfig(size_px=128, diameter_px=40, n_particles=30, contaminants=()), rng=0)


def test_split_assignment_counts_and_validation():
    splits = split_assignment(20, (0.7, 0.15, 0.15), np.random.default_rng(0))
    assert sorted(splits).count("train") == 14 and splits.count("valid") == 3 and splits.count("test") == 3
    with pytest.raises(ConfigError, match="split"):
        split_assignment(5, (0.5, 0.5, 0.5), np.random.default_rng(0))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), views=st.sampled_from(["random", "side", "top", "side-top"]))
def test_rotations_are_proper_and_respect_the_views(seed, views):
    r = random_rotations(8, np.random.default_rng(seed), views)
    assert np.allclose(r @ np.swapaxes(r, 1, 2), np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(r), 1.0)
    if views == "side":
        assert np.allclose(r[:, 2, 2], 0, atol=1e-9)
    if views == "top":
        assert np.allclose(np.abs(r[:, 2, 2]), 1)
    if views == "side-top":  # each particle one or the other
        assert np.all(np.isclose(r[:, 2, 2], 0, atol=1e-9) | np.isclose(np.abs(r[:, 2, 2]), 1))


def test_side_and_top_views_mix_and_the_command_offers_every_view():
    from deeppick.commands.simulate import simulate
    from deeppick.simulate import VIEWS

    z = random_rotations(400, np.random.default_rng(0), "side-top")[:, 2, 2]
    side = np.isclose(z, 0, atol=1e-9)
    assert 0.4 < side.mean() < 0.6 and np.allclose(np.abs(z[~side]), 1)
    views = next(p for p in simulate.params if p.name == "views")
    assert tuple(views.type.choices) == VIEWS


def test_ctf_is_minus_amplitude_contrast_at_zero_and_damped_by_b_factor():
    ctf = ctf_2d((64, 64), 2.0, 1.5, amplitude_contrast=0.07)
    damped = ctf_2d((64, 64), 2.0, 1.5, amplitude_contrast=0.07, bfactor_a2=200)
    assert ctf[0, 0] == pytest.approx(-0.07)
    assert np.abs(ctf).max() <= 1 + 1e-6
    assert (np.abs(damped[1:, 1:]) <= np.abs(ctf[1:, 1:]) + 1e-7).all()
    outer = np.abs(damped[24:40]).sum() / np.abs(ctf[24:40]).sum()  # near Nyquist (0.25 Å⁻¹)
    assert outer < np.exp(-200 / 4 * 0.2 ** 2)


def test_cli_simulate_writes_a_loadable_dataset(tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(cli, ["simulate", "--molecule", "ring", "-n", "2", "--size", "256", "--snr", "0.5",
                                 "--seed", "3", "--particles", "6", "--diameter-px", "40", "--defocus-spread-um", "0.1",
                                 "-o", str(out)])
    assert result.exit_code == 0, result.output
    ds = load_dataset(out)
    assert len(ds.micrographs) == 2 and len(ds.picks) == 12 and ds.diameter_px == pytest.approx(40)
    assert json.loads((out / "dataset.json").read_text())["parameters"]["defocus_spread_um"] == 0.1
    again = runner.invoke(cli, ["simulate", "--molecule", "ring", "-n", "2", "--size", "256", "-o", str(out)])
    assert again.exit_code == 2 and "deeppick: error:" in again.output and "--overwrite" in again.output


def test_cli_simulate_mix_and_bad_molecule(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["simulate", "--molecule", "ring,apoferritin-like", "-n", "1", "--size", "256",
                                 "--particles", "4", "--diameter-px", "ring=40", "--diameter-px", "30",
                                 "--overlap", "0.2", "--empty", "-o", str(tmp_path / "mix")])
    assert result.exit_code == 0, result.output
    assert load_dataset(tmp_path / "mix" / "ring").diameter_px == pytest.approx(40)
    assert load_dataset(tmp_path / "mix" / "apoferritin-like").diameter_px == pytest.approx(30)
    bad = runner.invoke(cli, ["simulate", "--molecule", "unicorn", "-o", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "unknown molecule 'unicorn'" in bad.output


def test_zoo_for_quota_simulates_enough_micrographs_for_large_molecules(tmp_path):
    quota = 40
    # 384 px holds too few 104-px particles at the zoo's default crowding: a sparser zoo
    zoo = simulate_zoo_for_quota(tmp_path, quota, molecules=["klh-like", "globular"], size_px=384, density=0.15)
    assert [p.name for p in zoo] == ["klh-like", "globular"]
    counts = {}
    for folder in zoo:
        ds = load_dataset(folder)
        counts[folder.name] = (len(ds.paths()), int(ds.picks["micrograph"].isin(ds.stems("train")).sum()))
    # the small molecule fills its quota from the 8-micrograph pilot; the large one needed more micrographs
    assert counts["globular"][0] == 8 and counts["globular"][1] >= quota
    assert counts["klh-like"][0] > 8 and counts["klh-like"][1] >= quota


def test_zoo_reuses_a_folder_only_if_simulated_with_the_same_settings(tmp_path):
    def simulate(**kwargs):
        folder = simulate_zoo(tmp_path, ["globular"], n_micrographs=2, size_px=256, **kwargs)[0]
        meta = json.loads((folder / "dataset.json").read_text())
        stat = (folder / "dataset.json").stat()
        return meta["parameters"], (stat.st_ino, stat.st_mtime_ns)  # written atomically: a new file each time

    first, written = simulate(density=0.2)
    assert first["density"] == 0.2 and first["n_micrographs"] == 2
    again, rewritten = simulate(density=0.2)
    assert rewritten == written  # the same settings: reused, not simulated again
    denser, _ = simulate(density=ZOO_DENSITY)  # a cached zoo of another density must not be reused
    assert denser["density"] == ZOO_DENSITY != first["density"]
    noisier, _ = simulate(density=ZOO_DENSITY, snr=0.5)
    assert noisier["snr"] == 0.5
    (tmp_path / "globular" / "dataset.json").write_text("{not json")  # damaged: simulated again
    repaired, _ = simulate(density=ZOO_DENSITY, snr=0.5)
    assert repaired == noisier


def test_uneven_ice_and_detector_blur_change_the_image_not_the_particles():
    config = SimConfig(size_px=256, n_particles=5, snr=0.1, contaminants=())
    plain = simulate_micrograph(config, rng=3)
    ramped = simulate_micrograph(replace(config, ice_gradient=3.0), rng=3)
    blurred = simulate_micrograph(replace(config, detector_blur_px=2.0), rng=3)
    np.testing.assert_array_equal(plain.centres_xy, ramped.centres_xy)
    np.testing.assert_array_equal(plain.centres_xy, blurred.centres_xy)
    # uneven ice adds a plane: the difference is fitted exactly by a tilted plane
    yy, xx = np.mgrid[0:256, 0:256]
    design = np.column_stack([np.ones(xx.size), xx.ravel(), yy.ravel()])
    difference = (ramped.image - plain.image).ravel().astype(np.float64)
    coef, *_ = np.linalg.lstsq(design, difference, rcond=None)
    assert np.abs(difference - design @ coef).max() < 1e-3 * np.abs(difference).max()
    assert np.hypot(*coef[1:]) * 256 > 0.1 * plain.image.std()
    # blur: less power at high frequencies, relative to the whole
    def high(img):
        power = np.abs(np.fft.rfft2(img - img.mean())) ** 2
        return power[64:128, 64:].sum() / power.sum()
    assert high(blurred.image) < 0.5 * high(plain.image)
    with pytest.raises(ConfigError, match="ice_gradient"):
        SimConfig(ice_gradient=-1)


def test_each_particle_is_imaged_at_its_own_height_in_the_ice():
    config = SimConfig(size_px=256, n_particles=4, snr=0.1, contaminants=(), defocus_um=(2.0, 2.0))
    flat = simulate_micrograph(config, rng=5, keep_layers=True)
    thick = simulate_micrograph(replace(config, defocus_spread_um=1.0), rng=5, keep_layers=True)
    np.testing.assert_array_equal(flat.centres_xy, thick.centres_xy)
    np.testing.assert_array_equal(flat.particle_defocus_um, np.full(4, 2.0))
    assert np.all(np.abs(thick.particle_defocus_um - 2.0) <= 0.5) and len(set(thick.particle_defocus_um)) > 1
    np.testing.assert_allclose(thick.projection, flat.projection, atol=1e-4 * np.abs(flat.projection).max())
    # near each particle the image is the one a micrograph at that particle's defocus would show
    r = int(flat.diameter_px)
    for (x, y), defocus in zip(thick.centres_xy.astype(int), thick.particle_defocus_um):
        own = simulate_micrograph(replace(config, defocus_um=(defocus, defocus)), rng=5, keep_layers=True)
        window = np.s_[max(0, y - r):y + r, max(0, x - r):x + r]
        if defocus != 2.0:
            assert (np.abs(thick.signal[window] - own.signal[window]).mean()
                    < 0.5 * np.abs(thick.signal[window] - flat.signal[window]).mean())
    with pytest.raises(ConfigError, match="defocus_spread_um"):
        SimConfig(defocus_spread_um=-0.1)


def test_procedural_molecules_are_reproducible_varied_and_usable_by_name():
    from deeppick.simulate import procedural_molecule, procedural_zoo

    a, again, b = procedural_molecule(5), procedural_molecule(5), procedural_molecule(6)
    assert a.description == again.description and a.name == "proc-5"
    grid = np.linspace(-1.1, 1.1, 24, dtype=np.float32)
    z, y, x = np.meshgrid(grid, grid, grid, indexing="ij")
    da, db = a.density(x, y, z), b.density(x, y, z)
    assert da.any() and db.any() and not np.array_equal(da > 0, db > 0)
    reach = np.sqrt(x ** 2 + y ** 2 + z ** 2)[da > 0].max()
    assert 0.85 < reach <= 1.1  # scaled like every molecule: its farthest density near radius 1
    sim = simulate_micrograph(SimConfig(molecule="proc-5", size_px=256, diameter_px=40, n_particles=4), rng=0)
    assert len(sim.centres_xy) == 4 and sim.image.std() > 0
    zoo = procedural_zoo(6, seed=1)
    assert len(zoo) == 6 and all(30 <= d <= 160 for d in zoo.values()) and zoo == procedural_zoo(6, seed=1)
    with pytest.raises(ConfigError, match="proc-N"):
        SimConfig(molecule="proc-x")
