"""Tuning on held-out labelled micrographs: the threshold, the cleaning and peak window, and ``fit``'s
choice of box, low-pass and patch recipe, stored in the model file."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from deeppick.cli import cli
from deeppick.errors import ConfigError
from deeppick.metrics import evaluate_picks
from deeppick.model import load_model, save_model
from deeppick.io import write_picks
from deeppick.pipeline import PickConfig, effective_threshold, pick_paths
from deeppick.postprocess import PostprocessConfig
from deeppick.preprocess import PreprocessConfig
from deeppick.train import TrainConfig
from deeppick.tuning import (choose_postprocess, complete_labels, fit_dataset, recipe_summary, select_threshold,
                             train_on_partial_labels)

from .conftest import SIM_DIAMETER_PX


def test_threshold_is_chosen_on_validation_and_saved(sim_dataset, trained, tmp_path):
    model = load_model(trained)
    assert model.threshold is None and effective_threshold(model, PickConfig()) == 0.5
    model = select_threshold(model, sim_dataset.paths("valid"), sim_dataset.picks)
    assert 0.05 <= model.threshold <= 1
    assert model.info["threshold"]["micrographs"] == sim_dataset.stems("valid")
    save_model(model, tmp_path / "m.pt")
    again = load_model(tmp_path / "m.pt")
    assert again.threshold == pytest.approx(model.threshold)
    assert effective_threshold(again, PickConfig()) == pytest.approx(model.threshold)
    assert effective_threshold(again, PickConfig(threshold=0.9)) == 0.9


def test_threshold_command_chooses_postprocessing_unless_told_not_to(sim_dataset, trained, tmp_path):
    runner = CliRunner()
    model = load_model(trained)
    model.postprocess = replace(PostprocessConfig(), peak_window_box=1.5)
    save_model(model, tmp_path / "wide.pt")
    args = ["threshold", "--model", str(tmp_path / "wide.pt"), "--dataset", str(sim_dataset.root)]
    result = runner.invoke(cli, [*args, "--threshold-only", "-o", str(tmp_path / "kept.pt")])
    assert result.exit_code == 0, result.output
    kept = load_model(tmp_path / "kept.pt")
    assert kept.postprocess.peak_window_box == 1.5 and "postprocess_tried" not in kept.info
    assert "peak window 1.5 box" in result.stdout
    result = runner.invoke(cli, [*args, "-o", str(tmp_path / "chosen.pt")])
    assert result.exit_code == 0, result.output
    chosen = load_model(tmp_path / "chosen.pt")
    tried = chosen.info["postprocess_tried"]
    assert len(tried) == 6 and chosen.info["threshold"]["ap"] == max(tried.values())
    assert chosen.postprocess.peak_window_box in (0.8, 0.6, 0.4)
    assert chosen.info["threshold"]["micrographs"] == sim_dataset.stems("valid")
    assert load_model(tmp_path / "wide.pt").threshold is None  # -o leaves the input model alone
    result = runner.invoke(cli, ["threshold", "--model", str(trained)])
    assert result.exit_code == 2 and "exactly one of --dataset" in result.stderr


def test_narrow_peak_window_is_chosen_where_references_crowd(sim_dataset, trained):
    # References closer than DeepPicker's 0.4 box: every local maximum of the score map in a 0.25-box
    # window, background ones included (no score floor). The 0.8 window must hide some of them, so the
    # held-out choice has to take a narrower one.
    model = load_model(trained)
    valid = sim_dataset.paths("valid")
    every_peak = PickConfig(candidate_min_score=0.0)
    narrow = replace(PostprocessConfig(), peak_window_box=0.25, max_area_factor=float("inf"))
    crowd = pick_paths(model, valid, config=replace(every_peak, post=narrow, keep_all=True))
    close = 0
    for _, one in crowd.groupby("micrograph"):
        xy = one[["x", "y"]].to_numpy()
        nearest = np.sort(np.hypot(*(xy[:, None] - xy[None]).transpose(2, 0, 1)), axis=1)[:, 1]
        close += int((nearest < 0.4 * SIM_DIAMETER_PX).sum())
    assert close >= 2  # the test means something only if some references are closer than 0.4 box
    chosen = choose_postprocess(model, valid, crowd, pick_config=every_peak, windows_box=(0.8, 0.25))
    tried = chosen.info["postprocess_tried"]
    assert set(tried) == {f"cleaning {c}, window {w}" for c in ("on", "off") for w in ("0.8", "0.25")}
    assert tried["cleaning off, window 0.25"] > tried["cleaning off, window 0.8"]
    assert chosen.postprocess.peak_window_box == 0.25
    assert chosen.info["threshold"]["ap"] == max(tried.values())
    # choosing again on a tuned model that stores the cleaning off tries it both ways again
    stored = chosen.postprocess
    chosen.postprocess = replace(stored, max_area_factor=float("inf"))
    again = choose_postprocess(chosen, valid, crowd, pick_config=every_peak, windows_box=(0.8, 0.25))
    assert again.info["postprocess_tried"] == tried and again.postprocess == stored
    for choose in (choose_postprocess, select_threshold):  # nothing held out: a clear error, not a crash
        with pytest.raises(ConfigError, match="no held-out labelled micrographs"):
            choose(model, [], crowd)
    # pick follows the stored choice: it finds the crowded references again, at the stored AP
    picks = pick_paths(chosen, valid, config=replace(every_peak, keep_all=True))
    ev = evaluate_picks(picks, crowd, box_px=SIM_DIAMETER_PX, micrographs=[p.stem for p in valid])
    assert ev.ap == pytest.approx(chosen.info["threshold"]["ap"])


def test_fit_dataset_prepares_micrographs_as_told(sim_dataset):
    base = PreprocessConfig(highpass_sigma_model_px=64, clip_sd=3.5)
    model = fit_dataset(sim_dataset, box_px=40, train_config=TrainConfig(epochs=4, seed=0, optimizer="adam"),
                        lowpass_sigmas_model_px=(2.0,), try_without_off_centre=False, preprocess=base)
    assert model.preprocess == PreprocessConfig(highpass_sigma_model_px=64, clip_sd=3.5, lowpass_sigma_model_px=2.0)
    assert "low-pass σ 2 model px, background subtracted at σ 64 model px," in recipe_summary(model)
    model.preprocess = PreprocessConfig()
    assert "background" not in recipe_summary(model)


def test_fit_dataset_keeps_the_box_with_the_best_held_out_ap(sim_dataset):
    model = fit_dataset(sim_dataset, train_config=TrainConfig(epochs=4, seed=0, optimizer="adam"),
                        box_factors=(1.0, 1.5), lowpass_sigmas_model_px=(1.0, 3.0))
    tried = model.info["dataset"]["box_px_tried"]
    assert set(tried) == {"40", "60"}
    sigmas = model.info["dataset"]["lowpass_sigma_tried"]
    assert set(sigmas) == {"1", "3"}
    best_sigma = max(sigmas, key=sigmas.get)
    assert model.preprocess.lowpass_sigma_model_px == float(best_sigma)
    # the box was chosen at the first σ; the kept model is the best of everything tried
    assert max(tried.values()) == sigmas["1"] and model.info["threshold"]["ap"] >= max(tried.values()) - 1e-12
    if best_sigma == "1":
        assert tried[f"{model.box_px:g}"] == max(tried.values())
    # off-centre views were tried with and without, first, at the first box and σ; the boxes then
    # used the better recipe, which the kept model was trained with
    off = model.info["dataset"]["off_centre_ratio_tried"]
    assert set(off) == {"4", "0"} and tried["40"] == max(off.values())
    kept = max(off, key=lambda k: (off[k], k == "4"))  # ties keep the off-centre views
    assert model.info["trained_on"]["patch_config"]["off_centre_ratio"] == float(kept)
    assert model.info["dataset"]["threshold"] == sim_dataset.stems("valid")
    assert not set(model.info["dataset"]["train"]) & set(sim_dataset.stems("valid"))
    assert model.threshold is not None
    # cleaning and peak window were tried on the held-out micrographs and the best is stored
    tried = model.info["postprocess_tried"]
    assert len(tried) == 6
    stored = model.postprocess
    key = f"cleaning {'off' if stored.max_area_factor == float('inf') else 'on'}, window {stored.peak_window_box:g}"
    assert tried[key] == max(tried.values()) == pytest.approx(model.info["threshold"]["ap"])
    # the edge margin the train labels keep is stored with the chosen post-processing
    assert model.postprocess.edge_margin_box == pytest.approx(model.info["edge_margin"]["box"])
    assert model.info["edge_margin"]["from_labels"] > 0


def test_fit_command_writes_a_tuned_model(sim_dataset, tmp_path):
    result = CliRunner().invoke(cli, ["fit", "--dataset", str(sim_dataset.root), "-o", str(tmp_path / "fit.pt"),
                                      "--epochs", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    model = load_model(tmp_path / "fit.pt")
    assert model.threshold is not None and "box_px_tried" in model.info["dataset"]
    assert f"box {model.box_px:g} px" in result.output
    assert f"edge margin {model.postprocess.edge_margin_box:.2f} box" in result.output
    assert f"peak window {model.postprocess.peak_window_box:g} box" in result.output


def test_fit_command_passes_background_subtraction_on(sim_dataset, tmp_path, monkeypatch):
    import deeppick.tuning

    seen = {}

    def fit_dataset(dataset, **kwargs):  # stands in for the training: only what fit is told matters here
        seen.update(kwargs)
        raise ConfigError("stopped before training")

    monkeypatch.setattr(deeppick.tuning, "fit_dataset", fit_dataset)
    args = ["fit", "--dataset", str(sim_dataset.root), "-o", str(tmp_path / "fit.pt"), "--quiet"]
    result = CliRunner().invoke(cli, [*args, "--highpass", "64"])
    assert result.exit_code == 2 and "stopped before training" in result.output
    assert seen["preprocess"].highpass_sigma_model_px == 64
    seen.clear()
    result = CliRunner().invoke(cli, [*args, "--highpass", "8"])
    assert result.exit_code == 2 and "at least 16 model px" in result.output and not seen


def test_fit_and_train_take_a_particles_star_with_classes_and_refine_takes_verified_picks(sim_dataset, trained,
                                                                                           tmp_path):
    # a RELION 2-D classification's particles: the labels in class 1, a second copy shifted onto background
    # in class 2 (junk), on micrographs named as RELION names them
    rows = []
    for _, pick in sim_dataset.picks.iterrows():
        rows.append(f"Movies/{pick['micrograph']}.mrc\t{pick['x']:.2f}\t{pick['y']:.2f}\t1")
        rows.append(f"Movies/{pick['micrograph']}.mrc\t{(pick['x'] + 150) % 320:.2f}\t{pick['y']:.2f}\t2")
    star = tmp_path / "run_it025_data.star"
    star.write_text("\n".join(["", "data_particles", "", "loop_", "_rlnMicrographName #1", "_rlnCoordinateX #2",
                               "_rlnCoordinateY #3", "_rlnClassNumber #4", *rows]) + "\n\n")
    runner = CliRunner()
    mics = str(sim_dataset.root / "micrographs")
    result = runner.invoke(cli, ["fit", "--micrographs", mics, "--coords", str(star), "--classes", "1",
                                 "--diameter-px", "40", "-o", str(tmp_path / "fit.pt"), "--epochs", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    n = len(sim_dataset.picks)
    assert f"--coords: {n:,} particles of {star}; {n:,} left out as not in classes 1" in result.stderr
    model = load_model(tmp_path / "fit.pt")
    assert model.threshold is not None and set(model.info["dataset"]["threshold"]) <= set(sim_dataset.stems())
    result = runner.invoke(cli, ["train", "--micrographs", mics, "--coords", str(star), "--classes", "1",
                                 "--negatives", str(star), "--negative-classes", "2", "--box-px", "40",
                                 "-o", str(tmp_path / "t.pt"), "--epochs", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    trained_on = load_model(tmp_path / "t.pt").info["trained_on"]
    assert trained_on["n_positive"] > 0 and "--negatives:" in result.stderr
    # refine: the verified picks of two micrographs, with the threshold chosen again on a held-out dataset
    test = sim_dataset.paths("test")
    accepted = sim_dataset.picks[sim_dataset.picks["micrograph"].isin([p.stem for p in test])]
    write_picks(accepted, tmp_path / "accepted.star")
    write_picks(accepted.assign(x=(accepted["x"] + 150) % 320), tmp_path / "rejected.star")
    (tmp_path / "mics").mkdir()
    for p in test:
        (tmp_path / "mics" / p.name).symlink_to(p)
    result = runner.invoke(cli, ["refine", "--model", str(trained), "--micrographs", str(tmp_path / "mics"),
                                 "--accepted", str(tmp_path / "accepted.star"), "--rejected",
                                 str(tmp_path / "rejected.star"), "--validation", str(sim_dataset.root),
                                 "-o", str(tmp_path / "refined.pt"), "--epochs", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    refined = load_model(tmp_path / "refined.pt")
    assert refined.info["refined"]["accepted"] == len(accepted) == refined.info["trained_on"]["n_positive"]
    assert refined.info["trained_on"]["n_negative"] >= len(accepted)  # the rejected and random background
    assert refined.threshold is not None and refined.info["training"]["init"] is not None


def test_partial_labels_are_completed_with_the_models_picks_away_from_every_label(sim_dataset, trained):
    model = select_threshold(load_model(trained), sim_dataset.paths("valid"), sim_dataset.picks)
    paths = sim_dataset.paths("train")
    labelled = sim_dataset.picks[sim_dataset.picks["micrograph"].isin(sim_dataset.stems("train"))]
    kept = labelled.groupby("micrograph").head(5).reset_index(drop=True)  # 5 of 14 per micrograph labelled
    completed, added = complete_labels(model, paths, kept)
    assert added == len(completed) - len(kept) and added > 0
    assert completed.iloc[:len(kept)][["x", "y"]].to_numpy() == pytest.approx(kept[["x", "y"]].to_numpy())
    new = completed.iloc[len(kept):]
    for stem, rows in new.groupby("micrograph"):  # no added pick doubles a kept label
        own = kept.loc[kept["micrograph"] == stem, ["x", "y"]].to_numpy()
        gaps = np.hypot(*(rows[["x", "y"]].to_numpy()[:, None, :] - own[None, :, :]).transpose(2, 0, 1))
        assert gaps.min() > 0.5 * model.box_px
    # the added picks are mostly the unlabelled particles: completing moves recall on the train split up
    before = evaluate_picks(kept.assign(score=1.0), labelled, model.box_px)
    after = evaluate_picks(completed.assign(score=1.0), labelled, model.box_px)
    assert after.recall > before.recall + 0.3 and after.precision > 0.8


def test_completing_labels_needs_a_threshold(sim_dataset, trained):
    with pytest.raises(ConfigError, match="threshold"):
        complete_labels(load_model(trained), sim_dataset.paths("train"), sim_dataset.picks)


def test_training_on_partial_labels_adds_a_first_models_picks_and_records_them(sim_dataset):
    train = sim_dataset.paths("train")
    labelled = sim_dataset.picks[sim_dataset.picks["micrograph"].isin(sim_dataset.stems("train"))]
    kept = labelled.groupby("micrograph").head(5).reset_index(drop=True)  # 5 of 14 per micrograph labelled
    config = TrainConfig(epochs=6, optimizer="adam", seed=0)
    held_out = (sim_dataset.paths("valid"), sim_dataset.picks)
    model = train_on_partial_labels(train, kept, SIM_DIAMETER_PX, held_out=held_out, train_config=config)
    partial = model.info["partial_labels"]
    assert partial["labels"] == len(kept) and partial["added"] > 0 and partial["completion_beta"] is None
    assert model.info["trained_on"]["n_positive"] == len(kept) + partial["added"] and model.threshold is not None
    # a stricter completion threshold (F0.5 rather than F2) adds no more picks than the F2 one
    strict = train_on_partial_labels(train, kept, SIM_DIAMETER_PX, held_out=held_out, train_config=config,
                                     completion_beta=0.5)
    assert strict.info["partial_labels"]["completion_beta"] == 0.5
    assert 0 < strict.info["partial_labels"]["added"] <= partial["added"]
