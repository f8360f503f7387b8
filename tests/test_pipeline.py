"""Picking end to end on simulated micrographs: picks land on particles, batches resume and survive bad
files, the threshold is chosen on held-out micrographs and travels in the model file."""

from __future__ import annotations


from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from deeppick.cli import cli
from deeppick.datasets import load_dataset
from deeppick.errors import ConfigError
from pathlib import Path

import pandas as pd

from deeppick.io import (COORDINATE_LIST, folder_lock, is_coordinate_list, make_picks, read_coordinate_list,
                         read_micrograph, read_picks, write_picks)
from deeppick.metrics import evaluate_picks
from deeppick.model import load_model, save_model
from deeppick.patches import extract_dataset_patches
from deeppick.pipeline import (PICK_RECORD, PickConfig, adopt_label_edge_margin, choose_postprocess,
                               effective_threshold, model_fingerprint, pick_micrograph, pick_micrographs, pick_paths,
                               select_threshold, update_coordinate_list)
from deeppick.postprocess import PostprocessConfig
from deeppick.preprocess import PreprocessConfig, prepare_micrograph
from deeppick.scan import model_step_px, score_positions
from deeppick.simulate import SimConfig, simulate_dataset
from deeppick.train import TrainConfig, train_model

DIAMETER_PX = 40


@pytest.fixture(scope="module")
def sim_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim") / "globular"
    config = SimConfig(molecule="globular", size_px=320, diameter_px=DIAMETER_PX, n_particles=14, snr=1.0,
                       contaminants=())
    return load_dataset(simulate_dataset(root, config, n_micrographs=6, seed=3, split_fractions=(0.5, 0.17, 0.33)))


@pytest.fixture(scope="module")
def trained(sim_dataset, tmp_path_factory):
    patches = extract_dataset_patches(sim_dataset, "train", box_px=DIAMETER_PX, seed=0)
    model = train_model(patches, TrainConfig(epochs=12, seed=0, optimizer="adam", patience=12), progress=False)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(model, path)
    return path


def test_picks_land_on_held_out_particles(sim_dataset, trained):
    model = load_model(trained)
    test = sim_dataset.paths("test")
    picks = pick_paths(model, test, PickConfig(keep_all=True))
    ev = evaluate_picks(picks, sim_dataset.picks, box_px=DIAMETER_PX, threshold=0.5,
                        micrographs=[p.stem for p in test])
    assert ev.ap > 0.8, ev.to_dict()
    assert ev.centre_error_box < 0.1  # sub-pixel peaks land near the true centres


def test_reported_scores_equal_the_naive_per_patch_scores(sim_dataset, trained):
    model = load_model(trained)
    path = sim_dataset.paths("test")[0]
    image = read_micrograph(path)
    picks = pick_micrograph(model, image, path.stem, PickConfig(keep_all=True))
    assert len(picks) > 3
    prepared = prepare_micrograph(image, model.box_px, model.preprocess)
    step = model_step_px(PickConfig().scan.step_px, prepared)
    # Each pick's score is that of its grid cell (the refined centre lies within half a cell of it).
    mx, my = prepared.to_model(picks["x"], picks["y"])
    cx, cy = np.rint(mx / step).astype(int) * step, np.rint(my / step).astype(int) * step
    naive = score_positions(model, prepared, cx, cy, rotations=True)
    np.testing.assert_allclose(picks["score"], naive, atol=1e-5)


def test_threshold_filters_the_candidates_and_top_n(sim_dataset, trained):
    model = load_model(trained)
    path = sim_dataset.paths("test")[0]
    image = read_micrograph(path)
    all_picks = pick_micrograph(model, image, path.stem, PickConfig(keep_all=True))
    cut = pick_micrograph(model, image, path.stem, PickConfig(threshold=0.7))
    assert list(cut["score"]) == list(all_picks["score"][all_picks["score"] >= 0.7])
    assert np.all(np.diff(all_picks["score"]) <= 0)  # sorted by score
    top = pick_micrograph(model, image, path.stem, PickConfig(keep_all=True, post=PostprocessConfig(top_n=3)))
    assert list(top["score"]) == list(all_picks["score"][:3])


def test_edge_margin_is_learned_from_the_labels_and_honoured_by_pick(sim_dataset, trained):
    model = load_model(trained)
    path = sim_dataset.paths("test")[0]
    image = read_micrograph(path)
    rows, cols = image.shape

    def edge_box(picks):
        return np.minimum.reduce([picks["x"], picks["y"], cols - 1 - picks["x"], rows - 1 - picks["y"]]) / model.box_px

    # Every local maximum is a candidate (score floor 0), so some lie near the edge.
    everything = pick_micrograph(model, image, path.stem, PickConfig(keep_all=True, candidate_min_score=0,
                                                                     post=PostprocessConfig(edge_margin_box=0)))
    assert (edge_box(everything) < 0.5).any()  # candidates near the edge exist, so the cut below is tested
    for margin in (0.5, 1.0):
        picks = pick_micrograph(model, image, path.stem, PickConfig(keep_all=True, candidate_min_score=0,
                                                                    post=PostprocessConfig(edge_margin_box=margin)))
        assert (edge_box(picks) >= margin).all()
        assert len(picks) == int((edge_box(everything) >= margin).sum())  # nothing else changes

    # Labels that keep ≥ 1.5 boxes from the edge: the model learns that margin and pick applies it.
    patches = extract_dataset_patches(sim_dataset, "train", box_px=DIAMETER_PX, seed=0)
    centre_edge = []
    for i in np.flatnonzero(patches.labels == 1):
        r, c = patches.metadata["sources"][patches.source[i]]["shape"]
        centre_edge.append(min(patches.x[i], patches.y[i], c - 1 - patches.x[i], r - 1 - patches.y[i]))
    keep = np.ones(len(patches), bool)
    keep[np.flatnonzero(patches.labels == 1)[np.array(centre_edge) < 1.5 * DIAMETER_PX]] = False
    far = patches.subset(np.flatnonzero(keep))
    adopted = adopt_label_edge_margin(load_model(trained), far)
    learned = adopted.info["postprocess"]["edge_margin_box"]
    assert 1.45 <= learned < 2.5 and adopted.info["edge_margin"]["from_labels"] == far.n_positive
    picks = pick_micrograph(adopted, image, path.stem, PickConfig(keep_all=True, candidate_min_score=0))
    assert (edge_box(picks) >= learned).all() and len(picks) == int((edge_box(everything) >= learned).sum())


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
    model.info["postprocess"] = replace(PostprocessConfig(), peak_window_box=1.5).to_dict()
    save_model(model, tmp_path / "wide.pt")
    args = ["threshold", "--model", str(tmp_path / "wide.pt"), "--dataset", str(sim_dataset.root)]
    result = runner.invoke(cli, [*args, "--threshold-only", "-o", str(tmp_path / "kept.pt")])
    assert result.exit_code == 0, result.output
    kept = load_model(tmp_path / "kept.pt")
    assert kept.info["postprocess"]["peak_window_box"] == 1.5 and "postprocess_tried" not in kept.info
    assert "peak window 1.5 box" in result.stdout
    result = runner.invoke(cli, [*args, "-o", str(tmp_path / "chosen.pt")])
    assert result.exit_code == 0, result.output
    chosen = load_model(tmp_path / "chosen.pt")
    tried = chosen.info["postprocess_tried"]
    assert len(tried) == 6 and chosen.info["threshold"]["ap"] == max(tried.values())
    assert chosen.info["postprocess"]["peak_window_box"] in (0.8, 0.6, 0.4)
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
    crowd = pick_paths(model, valid, replace(every_peak, post=narrow, keep_all=True))
    close = 0
    for _, one in crowd.groupby("micrograph"):
        xy = one[["x", "y"]].to_numpy()
        nearest = np.sort(np.hypot(*(xy[:, None] - xy[None]).transpose(2, 0, 1)), axis=1)[:, 1]
        close += int((nearest < 0.4 * DIAMETER_PX).sum())
    assert close >= 2  # the test means something only if some references are closer than 0.4 box
    chosen = choose_postprocess(model, valid, crowd, every_peak, windows_box=(0.8, 0.25))
    tried = chosen.info["postprocess_tried"]
    assert set(tried) == {f"cleaning {c}, window {w}" for c in ("on", "off") for w in ("0.8", "0.25")}
    assert tried["cleaning off, window 0.25"] > tried["cleaning off, window 0.8"]
    assert chosen.info["postprocess"]["peak_window_box"] == 0.25
    assert chosen.info["threshold"]["ap"] == max(tried.values())
    # choosing again on a tuned model that stores the cleaning off tries it both ways again
    stored = dict(chosen.info["postprocess"])
    chosen.info["postprocess"] = {**stored, "max_area_factor": float("inf")}
    again = choose_postprocess(chosen, valid, crowd, every_peak, windows_box=(0.8, 0.25))
    assert again.info["postprocess_tried"] == tried and again.info["postprocess"] == stored
    for choose in (choose_postprocess, select_threshold):  # nothing held out: a clear error, not a crash
        with pytest.raises(ConfigError, match="no held-out labelled micrographs"):
            choose(model, [], crowd)
    # pick follows the stored choice: it finds the crowded references again, at the stored AP
    picks = pick_paths(chosen, valid, replace(every_peak, keep_all=True))
    ev = evaluate_picks(picks, crowd, box_px=DIAMETER_PX, micrographs=[p.stem for p in valid])
    assert ev.ap == pytest.approx(chosen.info["threshold"]["ap"])


def test_batch_resumes_and_goes_on_past_a_bad_micrograph(sim_dataset, trained, tmp_path):
    model = load_model(trained)
    good = sim_dataset.paths("test")
    bad = tmp_path / "broken.mrc"
    bad.write_bytes(b"\0" * 64)
    out = tmp_path / "picks"
    first = pick_micrographs(model, [good[0], bad, *good[1:]], out)
    assert sorted(first.counts) == sorted(p.stem for p in good)
    assert [f for f, _ in first.failed] == [str(bad)] and "broken.mrc" in first.failed[0][1]
    assert not list(out.glob("*.part")) and not (out / "broken.star").exists()
    written = (out / f"{good[0].stem}.star").read_bytes()
    # A rerun picks nothing again: the outputs are there.
    second = pick_micrographs(model, good, out)
    assert second.counts == {} and sorted(second.skipped) == sorted(p.stem for p in good)
    assert (out / f"{good[0].stem}.star").read_bytes() == written
    # Removing one output re-picks exactly that micrograph.
    (out / f"{good[0].stem}.star").unlink()
    third = pick_micrographs(model, good, out)
    assert list(third.counts) == [good[0].stem]


def test_a_model_keeps_its_fingerprint_across_versions():
    # Picks folders record the fingerprint of the model that wrote them; a new version that changed it
    # for the same model would refuse to resume every folder written before. The value below is what
    # deeppick computed for this model before background subtraction existed (commit 1790e33).
    from deeppick.model import PickerModel, build_net

    net = build_net("deeppicker")
    with torch.no_grad():
        for i, p in enumerate(net.parameters()):
            p.copy_(torch.linspace(-1, 1, p.numel()).reshape(p.shape) * (i + 1) / 10)

    def model(preprocess):
        return PickerModel(net=net, arch="deeppicker", box_px=56.0, preprocess=preprocess, threshold=0.625,
                           info={"postprocess": {"peak_window_box": 0.4}})

    assert model_fingerprint(model(PreprocessConfig(lowpass_sigma_model_px=2.5))) == "2509ce02a6c41be5"
    flat = model(PreprocessConfig(lowpass_sigma_model_px=2.5, highpass_sigma_model_px=64))
    assert model_fingerprint(flat) != "2509ce02a6c41be5"


def test_a_folder_of_picks_never_mixes_two_models_or_settings(sim_dataset, trained, tmp_path):
    model = load_model(trained)
    good = sim_dataset.paths("test")
    out = tmp_path / "picks"
    pick_micrographs(model, good, out)
    assert (out / PICK_RECORD).is_file() and not list(out.glob("*.part"))
    # The same model loaded again (another process, another day) resumes: same fingerprint, nothing re-picked.
    assert model_fingerprint(load_model(trained)) == model_fingerprint(model)
    assert pick_micrographs(load_model(trained), good, out).counts == {}
    # Another model (one weight nudged) or another threshold would skip these files: refused, nothing written.
    other = load_model(trained)
    with torch.no_grad():
        next(other.net.parameters()).view(-1)[0] += 1e-3
    assert model_fingerprint(other) != model_fingerprint(model)
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    for rival, config in [(other, PickConfig()), (model, PickConfig(threshold=0.9))]:
        with pytest.raises(ConfigError, match="another model or other pick settings.*--overwrite"):
            pick_micrographs(rival, good, out, config=config)
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    # --overwrite replaces them and the record follows: the original model is now the stranger.
    assert sorted(pick_micrographs(other, good, out, overwrite=True).counts) == sorted(p.stem for p in good)
    with pytest.raises(ConfigError):
        pick_micrographs(model, good, out)
    # Other micrographs in the same folder are this run's own; the files it does not touch keep their owner.
    (out / f"{good[0].stem}.star").unlink()
    assert list(pick_micrographs(model, good[:1], out).counts) == [good[0].stem]
    assert pick_micrographs(other, good[1:], out).counts == {}
    # Files from before records were kept (or a damaged record) are of unknown origin: kept, as before.
    (out / PICK_RECORD).write_text("{not json")
    assert pick_micrographs(model, good, out).counts == {}


def test_star_picks_come_with_relion_list_of_their_files(sim_dataset, trained, tmp_path, monkeypatch):
    # Picking from a RELION project folder, micrographs named as RELION names them, in two batches.
    monkeypatch.chdir(tmp_path)
    movies = tmp_path / "MotionCorr" / "job002" / "Movies"
    movies.mkdir(parents=True)
    for p in sim_dataset.paths("test"):
        (movies / p.name).symlink_to(p)
    mics = sorted(Path("MotionCorr/job002/Movies").iterdir())
    bad = Path("MotionCorr/job002/Movies/broken.mrc")
    bad.write_bytes(b"\0" * 64)
    model = load_model(trained)
    first = pick_micrographs(model, [mics[0], bad], "picks")
    assert first.coordinate_list == Path("picks") / COORDINATE_LIST and first.failed
    assert read_coordinate_list(first.coordinate_list) == {mics[0].as_posix(): f"picks/{mics[0].stem}.star"}
    second = pick_micrographs(model, mics, "picks")
    listed = read_coordinate_list(second.coordinate_list)
    assert listed == {m.as_posix(): f"picks/{m.stem}.star" for m in mics}  # resumed and new, the bad one left out
    assert COORDINATE_LIST in second.summary(Path("picks"), 0.5, False)
    def ordered(picks):
        return picks.sort_values(["micrograph", "x"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(ordered(read_picks(second.coordinate_list)), ordered(read_picks("picks")))
    # An entry whose file is gone is dropped; other formats are not RELION's list.
    Path(f"picks/{mics[0].stem}.star").unlink()
    third = pick_micrographs(model, mics[1:], "picks")
    assert set(read_coordinate_list(third.coordinate_list)) == {m.as_posix() for m in mics[1:]}
    # A micrograph named like the list keeps its picks under that name; no list is written over them.
    (movies / f"{COORDINATE_LIST[:-5]}.mrc").symlink_to(sim_dataset.paths("test")[0])
    named = pick_micrographs(model, [Path("MotionCorr/job002/Movies", f"{COORDINATE_LIST[:-5]}.mrc")], "named")
    assert named.coordinate_list is None and not is_coordinate_list(Path("named", COORDINATE_LIST))
    # A path with a space would split RELION's columns: the picks are written, the list is left as it was
    # and the summary says why.
    spaced = Path("My Movies")
    spaced.mkdir()
    (spaced / "m 1.mrc").symlink_to(sim_dataset.paths("test")[0])
    before = Path("picks", COORDINATE_LIST).read_text()
    batch = pick_micrographs(model, [spaced / "m 1.mrc"], "picks")
    assert list(batch.counts) == ["m 1"] and Path("picks", "m 1.star").is_file()
    assert batch.coordinate_list is None and Path("picks", COORDINATE_LIST).read_text() == before
    assert "'My Movies/m 1.mrc'" in batch.coordinate_list_problem
    assert batch.coordinate_list_problem in batch.summary(Path("picks"), 0.5, False)
    assert pick_micrographs(model, mics[:1], "named").coordinate_list is None
    assert len(read_picks(Path("named", COORDINATE_LIST))) == named.counts[COORDINATE_LIST[:-5]]
    assert pick_micrographs(model, mics, "boxes", fmt="box").coordinate_list is None
    assert not Path("boxes", COORDINATE_LIST).exists()


def test_pick_command_refuses_a_folder_picked_by_another_model(sim_dataset, trained, tmp_path):
    runner = CliRunner()
    mics = [str(p) for p in sim_dataset.paths("test")]
    args = ["pick", "--model", str(trained), *sum((["--micrographs", m] for m in mics), []), "-o", str(tmp_path)]
    assert runner.invoke(cli, args).exit_code == 0
    result = runner.invoke(cli, [*args, "--threshold", "0.99"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.strip().count("\n") == 0 and "--overwrite" in result.stderr and str(tmp_path) in result.stderr
    result = runner.invoke(cli, [*args, "--threshold", "0.99", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert (read_picks(tmp_path)["score"] >= 0.99).all()


def test_pick_and_evaluate_commands(sim_dataset, trained, tmp_path):
    runner = CliRunner()
    mics = sim_dataset.root / "micrographs"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "zero.mrc").write_bytes(b"")
    result = runner.invoke(cli, ["pick", "--model", str(trained), "--micrographs", str(mics), "--micrographs",
                                 str(bad / "zero.mrc"), "-o", str(tmp_path / "out"), "--keep-all"])
    assert result.exit_code == 2, result.output
    assert "picked" in result.stdout and "zero.mrc" in result.stderr and "Traceback" not in result.output
    picks = read_picks(tmp_path / "out")
    assert set(picks["micrograph"]) == set(sim_dataset.stems())
    result = runner.invoke(cli, ["evaluate", "--picks", str(tmp_path / "out"), "--dataset", str(sim_dataset.root),
                                 "--split", "test", "--model", str(trained), "-o", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    assert "AP" in result.stdout and (tmp_path / "report" / "pr_curve.png").is_file()
    result = runner.invoke(cli, ["pick", "--model", str(tmp_path / "missing.pt"), "--micrographs", str(mics),
                                 "-o", str(tmp_path / "o2")])
    assert result.exit_code == 2 and "no such model file" in result.stderr
    result = runner.invoke(cli, ["pick", "--model", str(trained), "--micrographs", str(mics), "--keep-all",
                                 "--edge-margin", "1.5", "-o", str(tmp_path / "margin")])
    assert result.exit_code == 0, result.output
    margin_picks = read_picks(tmp_path / "margin")
    rows, cols = read_micrograph(sim_dataset.paths()[0]).shape
    edge = np.minimum.reduce([margin_picks["x"], margin_picks["y"], cols - 1 - margin_picks["x"],
                              rows - 1 - margin_picks["y"]])
    assert len(margin_picks) and (edge >= 1.5 * DIAMETER_PX).all()
    assert len(margin_picks) < len(picks)
    # --peak-window: a wider window leaves fewer candidates, each pair at least half a window apart
    result = runner.invoke(cli, ["pick", "--model", str(trained), "--micrographs", str(mics), "--keep-all",
                                 "--peak-window", "2", "-o", str(tmp_path / "wide")])
    assert result.exit_code == 0, result.output
    wide = read_picks(tmp_path / "wide")
    assert 0 < len(wide) < len(picks)
    for _, one in wide.groupby("micrograph"):
        xy = one[["x", "y"]].to_numpy()
        apart = np.abs(xy[:, None] - xy[None]).max(axis=2) + np.eye(len(xy)) * 1e9
        assert apart.min() >= DIAMETER_PX - 1  # Chebyshev distance ≥ half of 2 boxes, less sub-pixel shifts
    result = runner.invoke(cli, ["pick", "--model", str(trained), "--micrographs", str(mics),
                                 "--peak-window", "-1", "-o", str(tmp_path / "bad_window")])
    assert result.exit_code == 2 and "--peak-window" in result.stderr
    assert "Traceback" not in result.output


def test_fit_dataset_prepares_micrographs_as_told(sim_dataset):
    from deeppick.pipeline import fit_dataset, recipe_summary

    base = PreprocessConfig(highpass_sigma_model_px=64, clip_sd=3.5)
    model = fit_dataset(sim_dataset, box_px=40, train_config=TrainConfig(epochs=4, seed=0, optimizer="adam"),
                        lowpass_sigmas_model_px=(2.0,), try_without_off_centre=False, preprocess=base)
    assert model.preprocess == PreprocessConfig(highpass_sigma_model_px=64, clip_sd=3.5, lowpass_sigma_model_px=2.0)
    assert "low-pass σ 2 model px, background subtracted at σ 64 model px," in recipe_summary(model)
    model.preprocess = PreprocessConfig()
    assert "background" not in recipe_summary(model)


def test_fit_dataset_keeps_the_box_with_the_best_held_out_ap(sim_dataset):
    from deeppick.pipeline import fit_dataset

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
    stored = model.info["postprocess"]
    key = f"cleaning {'off' if stored['max_area_factor'] == float('inf') else 'on'}, window {stored['peak_window_box']:g}"
    assert tried[key] == max(tried.values()) == pytest.approx(model.info["threshold"]["ap"])
    # the edge margin the train labels keep is stored with the chosen post-processing
    assert model.info["postprocess"]["edge_margin_box"] == pytest.approx(model.info["edge_margin"]["box"])
    assert model.info["edge_margin"]["from_labels"] > 0


def test_fit_command_writes_a_tuned_model(sim_dataset, tmp_path):
    result = CliRunner().invoke(cli, ["fit", "--dataset", str(sim_dataset.root), "-o", str(tmp_path / "fit.pt"),
                                      "--epochs", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    model = load_model(tmp_path / "fit.pt")
    assert model.threshold is not None and "box_px_tried" in model.info["dataset"]
    assert f"box {model.box_px:g} px" in result.output
    assert f"edge margin {model.info['postprocess']['edge_margin_box']:.2f} box" in result.output
    assert f"peak window {model.info['postprocess']['peak_window_box']:g} box" in result.output


def test_fit_command_passes_background_subtraction_on(sim_dataset, tmp_path, monkeypatch):
    import deeppick.pipeline

    seen = {}

    def fit_dataset(dataset, **kwargs):  # stands in for the training: only what fit is told matters here
        seen.update(kwargs)
        raise ConfigError("stopped before training")

    monkeypatch.setattr(deeppick.pipeline, "fit_dataset", fit_dataset)
    args = ["fit", "--dataset", str(sim_dataset.root), "-o", str(tmp_path / "fit.pt"), "--quiet"]
    result = CliRunner().invoke(cli, [*args, "--highpass", "64"])
    assert result.exit_code == 2 and "stopped before training" in result.output
    assert seen["preprocess"].highpass_sigma_model_px == 64
    seen.clear()
    result = CliRunner().invoke(cli, [*args, "--highpass", "8"])
    assert result.exit_code == 2 and "at least 16 model px" in result.output and not seen


def _add_to_list(folder, stem, barrier=None):
    if barrier is not None:
        barrier.wait()
    update_coordinate_list(folder, [(Path(f"Movies/{stem}.mrc"), Path(folder) / f"{stem}.star")])


def test_batches_finishing_together_keep_every_entry_of_the_shared_list(tmp_path, monkeypatch):
    import multiprocessing

    monkeypatch.chdir(tmp_path)
    folder = Path("picks")
    stems = [f"m{i}" for i in range(8)]
    for stem in stems:
        write_picks(make_picks(stem, [10.0], [20.0], [0.9]), folder / f"{stem}.star")
    ctx = multiprocessing.get_context("fork")
    # While one process holds the folder, another's update waits for it.
    with folder_lock(folder):
        waiting = ctx.Process(target=_add_to_list, args=(folder, stems[0]))
        waiting.start()
        waiting.join(1.0)
        assert waiting.is_alive() and not (folder / COORDINATE_LIST).exists()
    waiting.join(30)
    assert waiting.exitcode == 0 and set(read_coordinate_list(folder / COORDINATE_LIST)) == {"Movies/m0.mrc"}
    # Seven batches finishing at the same moment: every one is listed.
    barrier = ctx.Barrier(len(stems) - 1)
    procs = [ctx.Process(target=_add_to_list, args=(folder, stem, barrier)) for stem in stems[1:]]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
    assert all(proc.exitcode == 0 for proc in procs)
    assert set(read_coordinate_list(folder / COORDINATE_LIST)) == {f"Movies/{stem}.mrc" for stem in stems}
