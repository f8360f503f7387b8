"""Cross-molecule pretraining (deeppick.pretrain): a balanced mix, each source at its own box, a pooled
threshold; the shipped general model."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from deeppick.cli import cli
from deeppick.datasets import load_dataset
from deeppick.errors import ConfigError, DeepPickError
from deeppick.metrics import evaluate_picks
from deeppick.model import load_model
from deeppick.pipeline import PickConfig, pick_micrograph
from deeppick.preprocess import PreprocessConfig
from deeppick.pretrain import (PretrainConfig, load_general_model, pretrain, pretrain_patches, shipped_model_path,
                               with_box)
from deeppick.scan import ScanConfig
from deeppick.simulate import SimConfig, simulate_micrograph

from .conftest import FAST_PICK, FAST_TRAIN


def test_mix_is_balanced_and_each_source_keeps_its_box(sources):
    ps = pretrain_patches(sources, config=PretrainConfig(total_positives=20, box_factors=(1.0,), seed=1))
    per = ps.metadata["pretrain"]["sources"]
    assert [s["n_positive"] for s in per] == [10, 10]
    assert [s["box_px"] for s in per] == [48.0, 64.0]
    assert ps.n_positive == 20 and ps.n_negative == 20
    assert ps.box_px is None  # mixed boxes
    datasets = np.array([ps.metadata["sources"][i]["dataset"] for i in ps.source])
    for name in ("ring", "bell"):
        assert ps.labels[datasets == name].sum() == 10
    boxes = {ps.metadata["sources"][i]["box_px"] for i in ps.source[datasets == "bell"]}
    assert boxes == {64.0}
    assert ps.patches.shape[1:] == (64, 64)


def test_mix_uses_train_micrographs_only_and_small_sources_give_all(sources):
    ps = pretrain_patches(sources, config=PretrainConfig(total_positives=10_000))
    per = ps.metadata["pretrain"]["sources"]
    for src, entry in zip(sources, per):
        ds = load_dataset(src)
        train = ds.stems("train")
        assert entry["train"] == train and entry["threshold"] == ds.stems("valid")
        # a small source gives every particle it has, once at each box
        assert entry["n_positive"] <= len(PretrainConfig().box_factors) * sum(len(ds.picks_for(s)) for s in train)
        assert entry["n_positive"] > 0
    used = {s["micrograph"] for s in ps.metadata["sources"]}
    assert not used & {s for src in sources for s in load_dataset(src).stems("valid")}


def test_pretrain_chooses_a_pooled_threshold_and_records_the_recipe(general, sources):
    assert general.threshold is not None and 0 < general.threshold <= 1
    info = general.info
    assert [s["dataset"] for s in info["threshold"]["sources"]] == ["ring", "bell"]
    assert [s["box_px"] for s in info["threshold"]["sources"]] == [48.0, 64.0]
    assert info["pretrain"]["config"]["total_positives"] == 24
    assert general.box_px == 56.0  # median of the sources' boxes


def test_pretrain_prepares_every_source_as_told_and_the_model_keeps_it(sources):
    prep = PreprocessConfig(highpass_sigma_model_px=64)
    mix = PretrainConfig(total_positives=12)
    model = pretrain(sources, config=mix, train_config=FAST_TRAIN, pick_config=FAST_PICK, preprocess=prep)
    assert model.preprocess == prep  # autopick prepares the new molecule the same way
    flat, plain = pretrain_patches(sources, config=mix, preprocess=prep), pretrain_patches(sources, config=mix)
    assert flat.metadata["preprocess"] == prep.to_dict()
    assert np.array_equal(flat.labels, plain.labels) and not np.allclose(flat.patches, plain.patches, atol=1e-3)


def test_pretrain_rejects_no_sources_and_duplicates(sources):
    with pytest.raises(ConfigError):
        pretrain_patches([])
    with pytest.raises(DeepPickError, match="share a name"):
        pretrain_patches([sources[0], sources[0]])


def test_with_box_replaces_the_box_and_leaves_the_model(general):
    other = with_box(general, 80)
    assert other.box_px == 80.0 and general.box_px == 56.0
    assert other.net is general.net and other.threshold == general.threshold
    with pytest.raises(ConfigError):
        with_box(general, 0)


def test_pretrain_cli_writes_a_general_model(sources, tmp_path):
    out = tmp_path / "general.pt"
    args = ["pretrain", "--dataset", str(sources[0]), "--dataset", str(sources[1]), "-o", str(out),
            "--positives", "16", "--epochs", "1", "--max-valid", "1", "--quiet"]
    res = CliRunner().invoke(cli, [*args, "--box-factors", "1"])
    assert res.exit_code == 0, res.output
    model = load_model(out)
    assert [s["n_positive"] for s in model.info["pretrain"]["sources"]] == [8, 8]
    assert model.threshold is not None and model.preprocess.highpass_sigma_model_px == 0
    res = CliRunner().invoke(cli, [*args, "--highpass", "64"])
    assert res.exit_code == 0, res.output
    assert load_model(out).preprocess.highpass_sigma_model_px == 64


def test_shipped_model_loads_and_picks_a_simulated_micrograph():
    path = shipped_model_path()
    if not path.is_file():
        pytest.skip(f"{path} not built yet (scripts/make_general_model.py)")
    assert path.stat().st_size < 5 * 2**20
    model = load_general_model()
    assert model.threshold is not None
    assert model.info["pretrain"]["sources"], "the recipe must name its training data"
    config = SimConfig(molecule="globular", size_px=384, diameter_px=64, n_particles=12, snr=0.5, contamination=0.0)
    sim = simulate_micrograph(config, 5)
    picks = pick_micrograph(with_box(model, 64), sim.image, name="sim",
                            config=PickConfig(scan=ScanConfig(rotations=False)))
    ev = evaluate_picks(picks, sim.picks("sim"), 64)
    assert ev.recall >= 0.5 and ev.precision >= 0.5


def test_pretrain_cli_spans_boxes_and_learns_from_particle_free_micrographs(sources, tmp_path):
    from deeppick.simulate import simulate_empty_zoo

    empty = simulate_empty_zoo(tmp_path / "empty", n_micrographs=2, size_px=256)
    out = tmp_path / "general.pt"
    args = ["pretrain", "--dataset", str(sources[0]), "--dataset", str(sources[1]), "-o", str(out),
            "--positives", "16", "--epochs", "1", "--max-valid", "1", "--quiet"]
    res = CliRunner().invoke(cli, [*args, "--box-factors", "0.8,1.6", "--background", str(empty),
                                   "--empty-share", "0.25"])
    assert res.exit_code == 0, res.output
    info = load_model(out).info["pretrain"]
    assert info["config"]["box_factors"] == [0.8, 1.6] and info["config"]["empty_share"] == 0.25
    assert [s["boxes_px"] for s in info["sources"][:2]] == [[38.0, 77.0], [51.0, 102.0]]
    assert info["sources"][2]["particle_free"] and info["sources"][2]["n_negative"] > 0
    assert "ring" in res.output and "boxes 38, 77" in res.output
    for bad in ("0.8;1.6", "0,1"):
        res = CliRunner().invoke(cli, [*args, "--box-factors", bad])
        assert res.exit_code == 2 and bad in res.output and "Traceback" not in res.output


def test_the_mix_can_span_boxes_and_teach_junk_and_empty_micrographs_as_background(sources, tmp_path):
    from deeppick.simulate import SimConfig, simulate_dataset, simulate_empty_zoo

    empty = simulate_empty_zoo(tmp_path / "empty", n_micrographs=2, size_px=256)
    assert load_dataset(empty).junk is not None and len(load_dataset(empty).junk) > 0
    dirty = simulate_dataset(tmp_path / "dirty", SimConfig(molecule="bell", size_px=384, diameter_px=48, n_particles=8,
                                                           snr=0.5, contamination=3.0),
                             n_micrographs=2, seed=4, split_fractions=(0.5, 0.5, 0.0))
    config = PretrainConfig(total_positives=24, box_factors=(0.8, 1.6), junk_share=0.5, empty_share=0.25, seed=1)
    ps = pretrain_patches([sources[0], dirty], config=config, background=[empty])
    described = ps.metadata["pretrain"]["sources"]
    ring = next(s for s in described if s["dataset"] == "ring")
    assert ring["boxes_px"] == [38.0, 77.0]  # 0.8 and 1.6 × its 48-px diameter
    boxes = {src["box_px"] for src in ps.metadata["sources"] if src.get("dataset") == "ring"}
    assert boxes == {38.0, 77.0}
    assert sum(s.get("n_junk", 0) for s in described) > 0  # background on the contaminants the simulator marks
    particle_free = next(s for s in described if s.get("particle_free"))
    background = ps.n_negative
    assert particle_free["n_negative"] == pytest.approx(0.25 * background, abs=3)
    with pytest.raises(ConfigError, match="box factors"):
        PretrainConfig(box_factors=())


def test_general_recipe_from_the_scripts_options_makes_the_model_pretrain_would(sources, tmp_path):
    import argparse
    from dataclasses import replace

    import torch

    from deeppick.benchmark import add_general_recipe_arguments
    from deeppick.pretrain import PRETRAIN_TRAINING, GeneralRecipe, pretrain_general
    from deeppick.simulate import ZOO_DETECTOR_BLUR_PX, ZOO_DIAMETERS_PX

    parser = argparse.ArgumentParser()
    changes = add_general_recipe_arguments(parser)
    args = parser.parse_args(["--positives", "24", "--epochs", "2", "--no-zoo", "--box-factors", "1", "1.3",
                              "--junk-share", "0", "--empty-share", "0", "--zoo-defocus-spread", "0.05",
                              "--procedural", "2", "--seed", "4"])
    recipe = replace(GeneralRecipe(**changes(args)), rotations=False)
    assert (recipe.box_factors, recipe.zoo, recipe.arch, recipe.max_valid) == ((1.0, 1.3), False, "deeppicker", 1)
    looks = recipe.zoo_settings()
    assert looks["defocus_spread_um"] == 0.05 and looks["detector_blur_px"] == ZOO_DETECTOR_BLUR_PX
    assert len(looks["molecules"]) == len(ZOO_DIAMETERS_PX) + 2 and set(ZOO_DIAMETERS_PX) < set(looks["diameters_px"])
    config = recipe.pretrain_config()
    assert (config.total_positives, config.box_factors, config.junk_share, config.seed) == (24, (1.0, 1.3), 0.0, 4)

    model, zoo = pretrain_general(sources, tmp_path, recipe)
    direct = pretrain(sources, config=config, train_config=replace(PRETRAIN_TRAINING, epochs=2, seed=4),
                      pick_config=PickConfig(scan=ScanConfig(rotations=False)))
    assert zoo == [] and model.threshold == direct.threshold
    assert all(torch.equal(a, b) for a, b in zip(model.net.state_dict().values(), direct.net.state_dict().values()))


def test_the_zoo_seed_draws_the_particle_free_micrographs_anew(sources, tmp_path):
    import argparse
    import json

    from deeppick.benchmark import add_general_recipe_arguments
    from deeppick.pretrain import GeneralRecipe, pretrain_general

    parser = argparse.ArgumentParser()
    changes = add_general_recipe_arguments(parser)
    recipe = GeneralRecipe(**changes(parser.parse_args(["--zoo-seed", "3", "--no-zoo", "--positives", "24", "--epochs",
                                                        "1", "--box-factors", "1", "--empty-share", "0.25"])),
                           rotations=False)
    assert (recipe.zoo_seed, recipe.seed) == (3, 0) and recipe.resolved()["zoo_seed"] == 3
    assert GeneralRecipe().resolved() != GeneralRecipe(zoo_seed=3).resolved()  # not a cached model of another zoo
    model, _ = pretrain_general(sources, tmp_path, recipe)
    simulated = json.loads((tmp_path / "empty" / "dataset.json").read_text())["parameters"]
    assert simulated["seed"][0] == 3
    assert any(s.get("particle_free") for s in model.info["pretrain"]["sources"])
