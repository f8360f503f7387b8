"""Fully automated picking (deeppick.autopick): no labels read, self-training on the general model's top
picks, early stop of the general pass, resumed runs, bad micrographs."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy.spatial import cKDTree

from deeppick.autopick import (NO_LABEL_THRESHOLD_RULE, AutopickConfig, autopick, drifted, general_pass_target,
                               select_self_training, stand_out, too_few_to_self_train)
from deeppick.batch import PICK_RECORD, extraction_box_px, model_fingerprint
from deeppick.cli import cli
from deeppick.commands.picking import step_line
from deeppick.datasets import load_dataset
from deeppick.errors import ConfigError
from deeppick.io import COMBINED_PICKS, COORDINATE_LIST, read_coordinate_list, read_micrograph, read_picks, relion_path
from deeppick.model import load_model
from deeppick.pipeline import pick_micrograph
from deeppick.pretrain import with_box

from .conftest import FAST_PICK, FAST_TRAIN


def _forbid_label_reading(monkeypatch, labels: Path):
    """Reading any coordinate file under ``labels`` (or a dataset) fails the test; autopick's own outputs may
    be read back."""
    import deeppick.batch
    import deeppick.datasets
    import deeppick.io

    def guarded(real):
        def read(path, *args, **kwargs):
            if Path(path).resolve().is_relative_to(labels.resolve()):
                raise AssertionError(f"autopick read labels: {path}")
            return real(path, *args, **kwargs)
        return read

    for module, name in ((deeppick.io, "read_picks"), (deeppick.io, "_read_star"), (deeppick.batch, "read_picks")):
        monkeypatch.setattr(module, name, guarded(getattr(module, name)))
    monkeypatch.setattr(deeppick.datasets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("autopick loaded a dataset")))


@pytest.fixture
def self_training_patches(monkeypatch):
    """The patch sets autopick fine-tunes on, recorded as it trains."""
    import deeppick.autopick as autopick_module

    seen = []
    real_train = autopick_module.train_model

    def recording_train(patches, *args, **kwargs):
        seen.append(patches)
        return real_train(patches, *args, **kwargs)

    monkeypatch.setattr(autopick_module, "train_model", recording_train)
    return seen


def test_self_training_selection_rule():
    cands = pd.DataFrame({"micrograph": ["a"] * 6 + ["b"] * 4, "x": np.arange(10.0), "y": np.zeros(10),
                          "score": [0.9, 0.8, 0.7, 0.6, 0.3, 0.1, 0.95, 0.65, 0.2, 0.1]})
    cfg = AutopickConfig(top_fraction=0.5, min_top=1)
    top = select_self_training(cands, 0.5, cfg)  # 6 picks ≥ 0.5 → the best 3 over both micrographs
    assert top["score"].tolist() == [0.95, 0.9, 0.8]
    assert len(select_self_training(cands, 0.5, replace(cfg, top=7))) == 7  # forced: below the threshold too
    assert len(select_self_training(cands, 0.5, replace(cfg, max_top=2))) == 2
    # never made up with candidates below the threshold: too few means no self-training
    few = select_self_training(cands, 0.5, replace(cfg, min_top=5))
    assert few["score"].tolist() == [0.95, 0.9, 0.8]
    assert "only 6 pick(s) above the threshold 0.5" in too_few_to_self_train(few, cands, 0.5, replace(cfg, min_top=5))
    assert too_few_to_self_train(few, cands, 0.5, replace(cfg, min_top=3)) is None
    assert too_few_to_self_train(few, cands, 0.5, replace(cfg, min_top=5, top=3)) is None  # the user's count


def test_autopick_reads_no_labels_and_writes_like_pick(general, target, tmp_path, monkeypatch):
    ds = load_dataset(target)
    mics = tmp_path / "mics"
    mics.mkdir()
    for p in ds.paths():  # coordinate files right beside the micrographs, and reading them fails
        shutil.copy(p, mics / p.name)
        shutil.copy(target / "coords" / f"{p.stem}.star", mics / f"{p.stem}.star")
    _forbid_label_reading(monkeypatch, mics)
    result = autopick(general, mics, box_px=56, out_dir=tmp_path / "out", config=AutopickConfig(min_top=5),
                      train_config=FAST_TRAIN, pick_config=FAST_PICK)
    monkeypatch.undo()

    assert len(result.candidates) == 2 and result.n_top[0] >= 5
    out = tmp_path / "out"
    expected = [f"{p.stem}.star" for p in ds.paths()] + [COORDINATE_LIST, COMBINED_PICKS]
    assert sorted(p.name for p in out.glob("*.star")) == sorted(expected)
    assert sorted(read_coordinate_list(out / COORDINATE_LIST)) == sorted(relion_path(mics / p.name) for p in ds.paths())
    assert result.batch.coordinate_list == out / COORDINATE_LIST  # so the summary names it, as pick's does
    written = read_picks(out)
    assert len(written) == sum(result.batch.counts.values())
    assert (written["score"] >= result.model.threshold).all()
    model = load_model(out / "autopick_model.pt")
    assert model.box_px == 56.0
    assert model.info["autopick"]["n_top"] == result.n_top[0]
    # the rule without labels: the fine-tuned model keeps the general model's pooled threshold
    assert model.threshold == pytest.approx(general.threshold)
    assert model.info["threshold"]["rule"] == NO_LABEL_THRESHOLD_RULE
    # fine-tuning changed the network, so the candidates of round 1 differ from round 0
    assert not result.candidates[0]["score"].equals(result.candidates[1]["score"])


def test_autopick_with_too_few_picks_keeps_the_general_models_and_resumes(general, target, tmp_path,
                                                                           self_training_patches):
    config = AutopickConfig(min_top=10**6)  # more particles than the general model finds
    out = tmp_path / "out"
    result = autopick(general, target / "micrographs", box_px=56, out_dir=out, config=config, train_config=FAST_TRAIN,
                      pick_config=FAST_PICK)
    assert self_training_patches == [] and result.n_top == []
    assert result.skipped.startswith("only ") and "kept the general model's picks" in result.skipped
    above = result.candidates[0][result.candidates[0]["score"] >= general.threshold]
    written = read_picks(out)
    assert len(above) > 0 and len(written) == len(above)
    assert np.allclose(np.sort(written["score"]), np.sort(above["score"]))
    kept = load_model(out / "autopick_model.pt")  # the general model at the box it picked at, not the target's
    assert result.general_box_px == result.box_estimate.box_px and kept.box_px == result.general_box_px
    # with the post-processing it picked with (the peak window of the estimated size, the disc ranking)
    assert kept.info["autopick"]["skipped"] == result.skipped and model_fingerprint(kept) == model_fingerprint(
        replace(with_box(general, result.general_box_px), postprocess=result.pick_config.post))
    assert kept.info["autopick"]["box_px"] == 56 and kept.info["autopick"]["general_box_px"] == result.general_box_px
    again = autopick(general, target / "micrographs", box_px=56, out_dir=out, config=config, train_config=FAST_TRAIN,
                     pick_config=FAST_PICK, resume=True)
    assert again.resumed and again.skipped == result.skipped and again.batch.counts == {}


def test_autopick_general_pass_stops_once_its_top_picks_are_complete(general, target, tmp_path):
    stems = sorted(p.stem for p in load_dataset(target).paths())
    config = AutopickConfig(max_top=2, min_top=1, peak_window_diameters=None)  # 4 picks above the threshold: 2 top
    assert general_pass_target(config) == 4 and general_pass_target(replace(config, top=3)) == 6
    result = autopick(general, target / "micrographs", box_px=56, out_dir=tmp_path / "out", config=config,
                      train_config=FAST_TRAIN, pick_config=FAST_PICK)
    first = result.candidates[0]
    assert first["micrograph"].nunique() == 1 and (first["score"] >= general.threshold).sum() >= 4
    assert result.n_top == [2]
    assert sorted(result.batch.counts) == stems  # the fine-tuned model picks every micrograph
    assert sorted(read_picks(tmp_path / "out")["micrograph"].unique()) == stems
    # without an output folder, its last round does too; the seed chooses where the general pass starts
    starts = set()
    for seed in range(8):
        again = autopick(general, target / "micrographs", box_px=56, out_dir=None, config=replace(config, seed=seed),
                         train_config=FAST_TRAIN, pick_config=FAST_PICK)
        assert sorted(again.candidates[-1]["micrograph"].unique()) == stems
        if again.candidates[0]["micrograph"].nunique() == 1:
            starts.add(again.candidates[0]["micrograph"].iloc[0])
        if starts == set(stems):
            break
    assert starts == set(stems)
    # a dataset whose picks do not reach the target is picked in full by the general model
    whole = autopick(general, target / "micrographs", box_px=56, out_dir=None, config=AutopickConfig(min_top=1),
                     train_config=FAST_TRAIN, pick_config=FAST_PICK)
    assert sorted(whole.candidates[0]["micrograph"].unique()) == stems


def test_a_later_round_with_too_few_picks_still_picks_every_micrograph(general, target, monkeypatch):
    import deeppick.autopick as autopick_module

    stems = sorted(p.stem for p in load_dataset(target).paths())
    real = autopick_module.too_few_to_self_train
    calls = []

    def too_few_after_the_first_round(*args, **kwargs):  # round 1's own picks are declared too few
        calls.append(1)
        return "only 1 pick(s) above the threshold" if len(calls) > 1 else real(*args, **kwargs)

    monkeypatch.setattr(autopick_module, "too_few_to_self_train", too_few_after_the_first_round)
    config = AutopickConfig(max_top=2, min_top=1, iterations=2)  # the general pass stops after one micrograph
    result = autopick(general, target / "micrographs", box_px=56, out_dir=None, config=config, train_config=FAST_TRAIN,
                      pick_config=FAST_PICK)
    assert result.candidates[0]["micrograph"].nunique() == 1 and result.n_top == [2]
    assert "round 1's" in result.skipped
    final = result.candidates[-1]
    assert list(dict.fromkeys(final["micrograph"])) == stems  # every micrograph, in path order
    # the micrographs round 1 had picked keep their candidates; the others are the same model's
    picked = set(result.candidates[0]["micrograph"])
    again = pick_micrograph(result.model, read_micrograph(next(p for p in load_dataset(target).paths()
                                                                  if p.stem not in picked)),
                            name="x", config=replace(result.pick_config, keep_all=True, threshold=None))
    other = final[final["micrograph"] == next(s for s in stems if s not in picked)]
    np.testing.assert_allclose(np.sort(other["score"].to_numpy()), np.sort(again["score"].to_numpy()))


def test_autopick_keeps_candidates_and_self_training_background_inside_the_edge_margin(general, target,
                                                                                      self_training_patches):
    import deeppick.autopick as autopick_module

    margin_box = 0.8
    post = replace(autopick_module.postprocess_config(general), edge_margin_box=margin_box)
    result = autopick(general, target / "micrographs", box_px=56, out_dir=None, config=AutopickConfig(min_top=5),
                      train_config=FAST_TRAIN, pick_config=replace(FAST_PICK, post=post))
    rows, cols = 256, 256  # the simulated target's micrographs

    def inside(x, y, box_px):  # the margin of the box each pass picked at
        margin = margin_box * box_px
        return (x >= margin) & (y >= margin) & (x <= cols - 1 - margin) & (y <= rows - 1 - margin)

    for candidates, box_px in zip(result.candidates, (result.general_box_px, 56)):
        assert len(candidates) and inside(candidates["x"], candidates["y"], box_px).all()
    (patches,) = self_training_patches
    background = patches.labels == 0
    assert background.sum() >= 5 and inside(patches.x[background], patches.y[background], result.general_box_px).all()


def test_autopick_self_trains_on_off_centre_views_only_when_asked(general, target, self_training_patches):
    for ratio in (0.0, 2.0):
        config = AutopickConfig(min_top=5, off_centre_ratio=ratio)
        result = autopick(general, target / "micrographs", box_px=56, config=config, train_config=FAST_TRAIN,
                          pick_config=FAST_PICK)
        patches = self_training_patches[-1]
        n_top = result.n_top[0]
        assert (patches.labels == 1).sum() == n_top
        if ratio == 0:
            assert patches.targets is None or np.array_equal(patches.targets, patches.labels)
            continue
        soft = (patches.targets > 0) & (patches.labels == 0)  # off-centre views: label 0, soft target
        assert soft.sum() >= n_top  # ~2 per particle (a few fall off the micrograph or score ~0)
        assert patches.targets.max() <= 1 and patches.targets[soft].min() > 0
        # each view's target is exp(-d²/2s²), d its distance to the nearest top pick, s = 0.1 box
        top = select_self_training(result.candidates[0], general.threshold, AutopickConfig(min_top=5))
        stems = [src["micrograph"] for src in patches.metadata["sources"]]
        d = np.empty(int(soft.sum()))
        for i, (x, y, src) in enumerate(zip(patches.x[soft], patches.y[soft], patches.source[soft])):
            same = top[top["micrograph"] == stems[src]]
            d[i] = np.hypot(same["x"] - x, same["y"] - y).min()
        np.testing.assert_allclose(patches.targets[soft], np.exp(-d ** 2 / (2 * (0.1 * 56) ** 2)), atol=0.02)
    with pytest.raises(ConfigError, match="--off-centre"):
        AutopickConfig(off_centre_ratio=-1)


def test_autopick_goes_on_past_a_bad_micrograph_and_a_rerun_resumes(general, target, tmp_path, monkeypatch):
    import deeppick.autopick as autopick_module

    mics = tmp_path / "mics"
    mics.mkdir()
    good = load_dataset(target).paths()
    for p in good:
        shutil.copy(p, mics / p.name)
    (mics / "broken.mrc").write_bytes(b"\0" * 64)
    out = tmp_path / "out"
    first = autopick(general, mics, box_px=56, out_dir=out, config=AutopickConfig(min_top=5), train_config=FAST_TRAIN,
                     pick_config=FAST_PICK, resume=True)
    assert [Path(f).name for f, _ in first.batch.failed] == ["broken.mrc"]
    assert sorted(first.batch.counts) == sorted(p.stem for p in good) and not first.resumed
    for candidates in first.candidates:
        assert set(candidates["micrograph"]) == {p.stem for p in good}
    expected = [*(f"{p.stem}.star" for p in good), "autopick_model.pt", PICK_RECORD, COORDINATE_LIST, COMBINED_PICKS,
                ".deeppick.lock"]
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    written = (out / f"{good[0].stem}.star").read_bytes()

    trained = []
    real_train = autopick_module.train_model
    monkeypatch.setattr(autopick_module, "train_model", lambda *a, **k: trained.append(1) or real_train(*a, **k))
    # interrupted after fine-tuning, one output missing: the rerun reuses the model and picks only that one
    (out / f"{good[0].stem}.star").unlink()
    again = autopick(general, mics, box_px=56, out_dir=out, config=AutopickConfig(min_top=5), train_config=FAST_TRAIN,
                     pick_config=FAST_PICK, resume=True)
    assert again.resumed and trained == []
    assert list(again.batch.counts) == [good[0].stem] and again.batch.skipped == [good[1].stem]
    assert (out / f"{good[0].stem}.star").read_bytes() == written
    assert [Path(f).name for f, _ in again.batch.failed] == ["broken.mrc"]
    # another peak window gives other candidates, so other pseudo-labels: fine-tuned again, not reused
    wider = replace(FAST_PICK, post=replace(autopick_module.postprocess_config(general), peak_window_box=1.0))
    assert not autopick(general, mics, box_px=56, out_dir=out, config=AutopickConfig(min_top=5),
                        train_config=FAST_TRAIN, pick_config=wider, resume=True).resumed
    assert trained == [1]
    # a retrained general model under the same name is another model too
    retrained = load_model(out / "autopick_model.pt")  # any other weights will do
    retrained.info, retrained.postprocess = dict(general.info), general.postprocess
    assert not autopick(retrained, mics, box_px=56, out_dir=out, config=AutopickConfig(min_top=5),
                        train_config=FAST_TRAIN, pick_config=FAST_PICK, resume=True).resumed
    assert trained == [1, 1]
    trained.clear()
    # another box is another model: fine-tuned again, every micrograph picked again without resume
    other = autopick(general, mics, box_px=60, out_dir=out, config=AutopickConfig(min_top=5), train_config=FAST_TRAIN,
                     pick_config=FAST_PICK, resume=True)
    assert not other.resumed and trained == [1] and load_model(out / "autopick_model.pt").box_px == 60
    fresh = autopick(general, mics, box_px=60, out_dir=out, config=AutopickConfig(min_top=5), train_config=FAST_TRAIN,
                     pick_config=FAST_PICK)
    assert trained == [1, 1] and sorted(fresh.batch.counts) == sorted(p.stem for p in good)
    # the command line lists the bad micrograph after the summary and exits 2
    res = CliRunner().invoke(cli, ["autopick", "--micrographs", str(mics), "--box-px", "56", "-o", str(out),
                                   "--step-px", "8", "--no-rotations", "--epochs", "1", "--quiet"])
    assert res.exit_code == 2 and "broken.mrc" in res.stderr
    assert "in 2 micrographs" in res.stdout  # the box-60 picks there were replaced, not kept
    assert "Traceback" not in res.output
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    (nothing / "broken.mrc").write_bytes(b"\0" * 64)
    with pytest.raises(ConfigError, match="none of the 1 micrograph"):
        autopick(general, nothing, box_px=56, out_dir=None, config=AutopickConfig(min_top=5), train_config=FAST_TRAIN,
                 pick_config=FAST_PICK)


def test_autopick_threshold_override_and_zero_iterations(general, target, tmp_path):
    zero = AutopickConfig(iterations=0)
    result = autopick(general, target / "micrographs", box_px=56, out_dir=tmp_path / "out", config=zero,
                      train_config=FAST_TRAIN, pick_config=replace(FAST_PICK, threshold=0.99))
    assert len(result.candidates) == 1 and result.n_top == []
    assert (read_picks(tmp_path / "out")["score"] >= 0.99).all()
    again = autopick(general, target / "micrographs", box_px=56, out_dir=tmp_path / "out", config=zero,
                     train_config=FAST_TRAIN, pick_config=replace(FAST_PICK, threshold=0.99), resume=True)
    assert again.resumed and again.batch.counts == {} and len(again.batch.skipped) == 2
    # another threshold does not change the model: reused, and every file picked again at the new cut
    lower = autopick(general, target / "micrographs", box_px=56, out_dir=tmp_path / "out", config=zero,
                     train_config=FAST_TRAIN, pick_config=replace(FAST_PICK, threshold=0.5), resume=True)
    assert lower.resumed and len(lower.batch.counts) == 2 and lower.batch.skipped == []
    picks = read_picks(tmp_path / "out")
    assert (picks["score"] >= 0.5).all() and (picks["score"] < 0.99).any()


def test_autopick_cli_bad_model_is_one_line(target, tmp_path):
    res = CliRunner().invoke(cli, ["autopick", "--micrographs", str(target / "micrographs"), "--box-px", "56",
                                   "-o", str(tmp_path / "o"), "--model", str(tmp_path / "missing.pt")])
    assert res.exit_code == 2
    assert "missing.pt: no such model file" in res.output and len(res.output.strip().splitlines()) == 1


def test_autopick_cli_general_box_says_where_the_general_model_picked(general, target, tmp_path):
    from deeppick.model import save_model

    model_path = tmp_path / "general.pt"
    save_model(general, model_path)
    records = {}
    for general_box in ("estimate", "given"):
        out = tmp_path / general_box
        res = CliRunner().invoke(cli, ["autopick", "--micrographs", str(target / "micrographs"), "--box-px", "56",
                                       "--model", str(model_path), "-o", str(out), "--iterations", "0",
                                       "--general-box", general_box, "--quiet"])
        assert res.exit_code == 0, res.output
        record = records[general_box] = load_model(out / "autopick_model.pt").info["autopick"]
        moved = record["general_box_px"] != 56
        assert ("the general model picked at box" in res.stderr) == moved
        assert ("its picks are written" in res.stderr) == moved
    assert records["given"]["general_box_px"] == 56
    assert records["estimate"]["general_box_px"] == records["estimate"]["box_estimate"]["box_px"]
    # the summary says how the picks are ranked, and `pick` with the saved model says the same
    assert "ranked by the network's score and a dark disc of" in res.stdout
    res = CliRunner().invoke(cli, ["pick", "--model", str(tmp_path / "given" / "autopick_model.pt"), "--micrographs",
                                   str(target / "micrographs"), "-o", str(tmp_path / "again"), "--quiet"])
    assert res.exit_code == 0 and "and a dark disc of" in res.stdout
    res = CliRunner().invoke(cli, ["autopick", "--micrographs", str(target / "micrographs"), "--box-px", "56",
                                   "--model", str(model_path), "-o", str(tmp_path / "off"), "--iterations", "0",
                                   "--disc-rank", "off", "--quiet"])
    assert res.exit_code == 0 and "dark disc" not in res.stdout
    assert load_model(tmp_path / "off" / "autopick_model.pt").postprocess.disc_rank_diameter_box is None
    res = CliRunner().invoke(cli, ["autopick", "--micrographs", str(target / "micrographs"), "--box-px", "56",
                                   "-o", str(tmp_path / "bad"), "--general-box", "largest"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    from deeppick.autopick import GENERAL_BOXES
    from deeppick.commands.automatic import autopick as command

    assert tuple(next(p for p in command.params if p.name == "general_box").type.choices) == GENERAL_BOXES
    from deeppick.autopick import DISC_RANKS

    assert tuple(next(p for p in command.params if p.name == "disc_rank").type.choices) == DISC_RANKS


def test_autopick_picks_a_micrograph_whose_name_is_not_utf8(general, target, tmp_path):
    mics = tmp_path / "mics"
    mics.mkdir()
    paths = load_dataset(target).paths()
    shutil.copy(paths[0], mics / os.fsdecode(b"m\xe9.mrc"))  # latin-1 é: not UTF-8
    shutil.copy(paths[1], mics / "plain.mrc")
    result = autopick(general, mics, box_px=56, out_dir=tmp_path / "out", config=AutopickConfig(min_top=5),
                      train_config=FAST_TRAIN, pick_config=FAST_PICK)
    assert sorted(result.batch.counts) == ["m\\xe9", "plain"] and result.batch.failed == []
    assert os.fsdecode(b"m\xe9.star") in os.listdir(tmp_path / "out")
    assert "not" in result.batch.coordinate_list_problem and result.batch.coordinate_list is None


def test_a_full_disk_while_autopick_saves_its_model_is_one_line(target, tmp_path, monkeypatch):
    import torch

    import deeppick.model

    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):  # what torch says when the disk fills under it
        if "rescue" not in str(f):
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(deeppick.model.torch, "save", full_disk)
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path / "rescue"))
    (tmp_path / "rescue").mkdir()
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["autopick", "--micrographs", str(target / "micrographs"), "--box-px", "56",
                                      "--min-box-diameters", "0", "-o", str(out), "--step-px", "8", "--no-rotations",
                                      "--epochs", "1", "--quiet"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.stderr.count("\n") == 1 and "autopick_model.pt: the model could not be written" in result.stderr
    kept = list((tmp_path / "rescue").glob("deeppick-autopick_model-*.pt"))
    assert len(kept) == 1 and str(kept[0]) in result.stderr
    assert load_model(kept[0]).box_px == 56.0 and not (out / "autopick_model.pt").exists()


def test_the_drift_guard_rolls_back_a_model_that_picks_far_more_than_the_general_model(general, tmp_path,
                                                                                        monkeypatch):
    import deeppick.autopick as autopick_module
    from deeppick.simulate import simulate_empty_zoo

    empty = simulate_empty_zoo(tmp_path / "empty", n_micrographs=3, size_px=256, snr=0.5)
    forced = AutopickConfig(top=8, max_growth=None)  # self-trained on noise, whatever its scores
    free = autopick(general, empty / "micrographs", box_px=56, config=forced, train_config=FAST_TRAIN,
                    pick_config=FAST_PICK)
    (drift,) = free.drift  # measured on the micrographs the general pass opened (it stops once it has enough)
    assert 1 <= drift["micrographs"] <= 3 and drift["before"] > 0
    assert drift["growth"] == pytest.approx(drift["tuned"] / drift["before"])
    assert all(-1 <= drift[key] <= 1 for key in ("stand_out_before", "stand_out_tuned"))
    assert 0 <= drift["new"] <= drift["tuned"] and (drift["stand_out_new"] is None) == (drift["new"] == 0)
    assert free.skipped is None and free.model is not general
    # a fine-tuned model that picks three times what the general model picked is rolled back
    monkeypatch.setattr(autopick_module, "_drift", lambda *args: {"micrographs": 2, "before": 10, "tuned": 30,
                                                                 "growth": 3.0})
    out = tmp_path / "out"
    guarded = autopick(general, empty / "micrographs", box_px=56, out_dir=out, config=replace(forced, max_growth=1.5),
                       train_config=FAST_TRAIN, pick_config=FAST_PICK)
    assert ("made 30 picks above the threshold where the general model made 10 (3.0×, more than 1.5×)"
            in guarded.skipped)
    # the general model as it picked (its box, the post-processing it picked with)
    rolled_back = replace(with_box(general, guarded.general_box_px), postprocess=guarded.pick_config.post)
    assert guarded.n_top == [] and model_fingerprint(guarded.model) == model_fingerprint(rolled_back)
    kept = load_model(out / "autopick_model.pt")
    assert kept.info["autopick"]["drift"]["growth"] == 3.0 and model_fingerprint(kept) == model_fingerprint(rolled_back)
    # picked at the general model's box, extracted at the user's
    assert extraction_box_px(kept) == 56 and extraction_box_px(general) == general.box_px
    final, first = guarded.candidates[-1], guarded.candidates[0]  # what is written: the general model's picks
    assert len(read_picks(out)) == (final["score"] >= general.threshold).sum()
    opened = first["micrograph"].iloc[0]
    np.testing.assert_allclose(np.sort(final["score"][final["micrograph"] == opened].to_numpy()),
                               np.sort(first["score"][first["micrograph"] == opened].to_numpy()))
    # ... and so is one that grew as much and whose picks hardly stand out from the ice
    monkeypatch.setattr(autopick_module, "_drift", lambda *args: {"micrographs": 2, "before": 10, "tuned": 30,
                                                                 "growth": 3.0, "stand_out_before": 0.9,
                                                                 "stand_out_tuned": 0.2, "stand_out_new": 0.6})
    dull = autopick(general, empty / "micrographs", box_px=56,
                    config=replace(forced, max_growth=1.5, min_stand_out=0.4), train_config=FAST_TRAIN,
                    pick_config=FAST_PICK)
    assert "(3.0×, more than 1.5×) and its picks stand out from the ice 0.20 (less than 0.4)" in dull.skipped
    assert model_fingerprint(dull.model) == model_fingerprint(
        replace(with_box(general, dull.general_box_px), postprocess=dull.pick_config.post))
    with pytest.raises(ConfigError, match="max_growth"):
        AutopickConfig(max_growth=0.5)
    with pytest.raises(ConfigError, match="min_stand_out"):
        AutopickConfig(min_stand_out=1.0)


def test_the_drift_guard_can_keep_a_grown_model_whose_picks_stand_out_from_the_ice():
    looking = AutopickConfig(min_stand_out=0.4)
    grown = {"growth": 3.0, "stand_out_before": 0.8, "stand_out_tuned": 0.7, "stand_out_new": 0.7}
    assert drifted(grown)  # by default the count alone decides
    assert not drifted(grown, looking)  # more picks, dark discs: particles the general model had missed
    assert not drifted({**grown, "stand_out_before": 0.2}, looking)  # however little the general model's stood out
    assert drifted({**grown, "stand_out_tuned": 0.2}, looking)  # more picks, places like any other
    assert not drifted({**grown, "stand_out_new": 0.2}, looking)  # the new picks alone are recorded, not used
    assert drifted({**grown, "stand_out_tuned": None}, looking) and drifted({"growth": 3.0}, looking)
    assert drifted(grown, AutopickConfig(min_stand_out=0.75))
    assert not drifted({**grown, "growth": 1.4}) and not drifted({**grown, "stand_out_tuned": 0.0, "growth": 1.4})
    assert not drifted({**grown, "stand_out_tuned": 0.0}, AutopickConfig(max_growth=None, min_stand_out=0.4))


def test_stand_out_tells_dark_discs_from_places_like_any_other(tmp_path):
    from deeppick.io import make_picks, write_micrograph

    rng = np.random.default_rng(0)
    box = 48
    centres = np.array([(x, y) for x in range(60, 440, 80) for y in range(60, 440, 80)], dtype=float)
    yy, xx = np.mgrid[0:500, 0:500]
    image = rng.normal(size=(500, 500))
    for x, y in centres:
        image[np.hypot(xx - x, yy - y) < box / 3] -= 1.0  # particles: dark discs of about the box's size
    path = tmp_path / "mic.mrc"
    write_micrograph(path, image.astype(np.float32))
    between = centres[:-6] + 40  # midway between discs: ice
    tables = [make_picks("mic", centres[:, 0], centres[:, 1], np.ones(len(centres))),
              make_picks("mic", between[:, 0], between[:, 1], np.ones(len(between))),
              make_picks("other", centres[:, 0], centres[:, 1], np.ones(len(centres)))]
    on_discs, on_ice, elsewhere = stand_out([path], tables, box, margin_px=box / 2, seed=0)
    assert on_discs > 0.9
    assert on_ice < 0.2
    assert elsewhere is None  # no pick on these micrographs


def test_estimate_box_takes_the_middle_of_the_strongest_boxes_and_the_pretraining_boxes(general, target,
                                                                                         monkeypatch):
    import deeppick.autopick as autopick_module
    from deeppick.autopick import estimate_box
    from deeppick.io import make_picks

    # a stand-in network whose picks are strongest at 48–60 px boxes: the rule, not the network, is tested
    def picks_at(model, image, **kwargs):
        strength = 0.9 if 48 <= model.box_px <= 60 else 0.2
        n = 200
        return make_picks("m", np.zeros(n), np.zeros(n), np.full(n, strength))

    monkeypatch.setattr(autopick_module, "pick_micrograph", picks_at)
    boxes = (24.0, 36.0, 48.0, 60.0, 80.0, 120.0)
    estimate = estimate_box(general, target / "micrographs", boxes=boxes)
    assert estimate.box_px == round(np.sqrt(48 * 60)) and estimate.diameter_px == estimate.box_px
    assert set(estimate.curve) == {f"{b:g}" for b in boxes} and "48–60 px" in estimate.why
    spanning = replace(general, info={**general.info, "pretrain": {"config": {"box_factors": [0.8, 1.0, 1.25]}}})
    assert estimate_box(spanning, target / "micrographs", boxes=boxes).diameter_px == pytest.approx(
        estimate.box_px / np.sqrt(0.8 * 1.25))
    with pytest.raises(ConfigError, match="too small"):
        estimate_box(general, target / "micrographs", boxes=(4000.0,))


def test_autopick_without_a_box_estimates_it_says_so_and_records_it(general, target, tmp_path):
    out = tmp_path / "auto"
    model_path = tmp_path / "general.pt"
    from deeppick.model import save_model

    save_model(general, model_path)
    result = CliRunner().invoke(cli, ["autopick", "--micrographs", str(target / "micrographs"), "--model",
                                      str(model_path), "-o", str(out), "--iterations", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "estimated" in result.stderr and "a particle of about" in result.stderr
    record = load_model(out / "autopick_model.pt").info["autopick"]["box_estimate"]
    assert record["box_px"] > 0 and record["why"] and record["used"] == record["box_px"]


def test_autopick_with_a_given_estimate_and_no_box_picks_at_the_estimated_box(general, target):
    from deeppick.autopick import BoxEstimate

    estimate = BoxEstimate(box_px=60.0, diameter_px=50.0, curve={"60": 1.0}, why="given")
    result = autopick(general, target / "micrographs", estimate=estimate, config=AutopickConfig(iterations=0),
                      train_config=FAST_TRAIN, pick_config=FAST_PICK)
    assert result.box_px == 60.0 and result.model.box_px == 60.0
    assert result.pick_config.post.peak_window_box == pytest.approx(
        np.clip(AutopickConfig().peak_window_diameters * 50.0 / 60.0, 0.4, 0.8))


def test_the_general_model_picks_at_the_estimated_box_and_the_fine_tuned_model_at_the_given_one(
        general, target, self_training_patches):
    from deeppick.autopick import BoxEstimate

    estimate = BoxEstimate(box_px=60.0, diameter_px=50.0, curve={"60": 1.0}, why="given")
    paths = {p.stem: p for p in load_dataset(target).paths()}
    # one peak window, no guard, the fine-tuned model at the given box
    config = AutopickConfig(min_top=5, peak_window_diameters=None, max_growth=None, min_box_diameters=None)
    for general_box, frame_px in (("estimate", 60.0), ("given", 48.0)):
        result = autopick(general, target / "micrographs", box_px=48, estimate=estimate,
                          config=replace(config, general_box=general_box), train_config=FAST_TRAIN,
                          pick_config=FAST_PICK)
        assert result.general_box_px == frame_px and result.box_px == 48.0 and result.model.box_px == 48.0
        assert result.skipped is None and result.model.info["autopick"]["general_box_px"] == frame_px
        # the pseudo-labels are the picks of the general model at its own box
        first = result.candidates[0]
        stem = first["micrograph"].iloc[0]
        again = pick_micrograph(with_box(general, frame_px), read_micrograph(paths[stem]), name=stem,
                                config=replace(FAST_PICK, keep_all=True, threshold=None))
        np.testing.assert_allclose(np.sort(first.loc[first["micrograph"] == stem, "score"].to_numpy()),
                                   np.sort(again["score"].to_numpy()))
        # background lies 0.6 × that box from every candidate, the fine-tuned model's patches cut at 48 px
        patches = self_training_patches[-1]
        assert patches.box_px == 48.0
        stems = [src["micrograph"] for src in patches.metadata["sources"]]
        background = np.flatnonzero(patches.labels == 0)
        nearest = [np.hypot(*(first.loc[first["micrograph"] == stems[patches.source[i]], ["x", "y"]].to_numpy()
                              - [patches.x[i], patches.y[i]]).T).min() for i in background]
        assert len(background) >= 5 and min(nearest) >= AutopickConfig().min_negative_distance_box * frame_px - 1e-6
    with pytest.raises(ConfigError, match="general_box"):
        AutopickConfig(general_box="largest")


def test_a_given_box_smaller_than_the_particle_is_raised_for_the_fine_tuned_model_only(general, target, tmp_path):
    from deeppick.autopick import BoxEstimate

    estimate = BoxEstimate(box_px=60.0, diameter_px=50.0, curve={"60": 1.0}, why="given")
    config = AutopickConfig(min_top=5, max_growth=None)
    for given_px, least, frame_px in ((40, 1.0, 50.0), (40, 1.2, 60.0), (56, 1.0, 56.0), (40, None, 40.0)):
        out = tmp_path / f"{given_px}-{least}"
        result = autopick(general, target / "micrographs", box_px=given_px, estimate=estimate, out_dir=out,
                          fmt="box", config=replace(config, min_box_diameters=least), train_config=FAST_TRAIN,
                          pick_config=FAST_PICK)
        assert result.skipped is None and result.given_box_px == given_px
        assert result.box_px == frame_px and result.model.box_px == frame_px, (given_px, least)
        assert result.model.info["box_estimate"]["used"] == frame_px
        assert result.model.info["box_estimate"]["given"] == given_px
        assert result.general_box_px == 60.0  # the general model's pass is the estimate's whatever the box
        # the files carry the box the user extracts at, whatever frame the model picked in, and so do those
        # that pick writes with the saved model
        rows = [line.split() for f in sorted(out.glob("*.box")) for line in f.read_text().splitlines()]
        assert rows and {(float(r[2]), float(r[3])) for r in rows} == {(given_px, given_px)}
        saved = load_model(out / "autopick_model.pt")
        assert saved.box_px == frame_px and extraction_box_px(saved) == given_px
    with pytest.raises(ConfigError, match="min_box_diameters"):
        AutopickConfig(min_box_diameters=0)


def test_the_disc_ranking_deals_the_written_picks_scores_out_again_and_the_saved_model_picks_alike(
        general, target, tmp_path, monkeypatch):
    import deeppick.autopick as autopick_module

    saved_to = []
    real_save = autopick_module.save_model
    monkeypatch.setattr(autopick_module, "save_model", lambda model, path: (saved_to.append(Path(path)),
                                                                            real_save(model, path)))
    config = AutopickConfig(min_top=5, max_growth=None)
    runs = {mode: autopick(general, target / "micrographs", box_px=56, out_dir=tmp_path / mode,
                           config=replace(config, disc_rank=mode), train_config=FAST_TRAIN, pick_config=FAST_PICK)
            for mode in ("off", "picks", "all")}
    off, picks = runs["off"], runs["picks"]
    # "picks" leaves the pseudo-labels and the drift guard alone: the same general pass, the same fine-tuned
    # network, the same picks on the guard's micrographs
    pd.testing.assert_frame_equal(off.candidates[0], picks.candidates[0])
    assert off.drift == picks.drift
    assert model_fingerprint(replace(off.model, postprocess=None)) == model_fingerprint(
        replace(picks.model, postprocess=None))
    # the written candidates are the same places with the same scores, dealt out in another order
    final = {mode: run.candidates[-1].sort_values(["micrograph", "x", "y"]).reset_index(drop=True)
             for mode, run in runs.items()}
    np.testing.assert_allclose(final["off"][["x", "y"]], final["picks"][["x", "y"]])
    for stem, rows in final["off"].groupby("micrograph"):
        np.testing.assert_array_equal(np.sort(rows["score"]),
                                      np.sort(final["picks"].loc[final["picks"]["micrograph"] == stem, "score"]))
    assert not np.array_equal(final["off"]["score"], final["picks"]["score"])
    # "all" ranks the general pass so too, whose best candidates become the pseudo-labels (each micrograph's
    # candidates are listed best first: the same places in another order)
    assert not np.array_equal(off.candidates[0][["x", "y"]], runs["all"].candidates[0][["x", "y"]])
    # the saved model carries the settings it picked with: `pick --model` with its file picks as autopick did;
    # it is saved once a fine-tuning round, already carrying them
    assert saved_to.count(tmp_path / "picks" / "autopick_model.pt") == len(picks.n_top) >= 1
    saved = load_model(tmp_path / "picks" / "autopick_model.pt")
    assert saved.postprocess.disc_rank_diameter_box == pytest.approx(
        picks.box_estimate.box_px / 56) and saved.postprocess == picks.pick_config.post
    stem = final["picks"]["micrograph"].iloc[0]
    again = pick_micrograph(saved, read_micrograph(target / "micrographs" / f"{stem}.mrc"), name=stem,
                            config=replace(FAST_PICK, keep_all=True))
    mine = picks.candidates[-1][picks.candidates[-1]["micrograph"] == stem]
    np.testing.assert_allclose(again[["x", "y", "score"]].to_numpy(), mine[["x", "y", "score"]].to_numpy())
    assert "moved onto" not in step_line(picks.model, picks.pick_config)  # centring is an option, off
    # centred on the disc (the option): the same network's candidates, each moved no further than the radius
    centred = autopick(general, target / "micrographs", box_px=56, out_dir=tmp_path / "centred",
                       config=replace(config, disc_centre_diameters=0.2), train_config=FAST_TRAIN,
                       pick_config=FAST_PICK)
    radius_px = 0.2 * centred.box_estimate.diameter_px
    assert centred.pick_config.post.disc_centre_radius_box == pytest.approx(radius_px / 56)
    assert load_model(tmp_path / "centred" / "autopick_model.pt").postprocess == centred.pick_config.post
    moved = centred.candidates[-1]
    distances = []
    for stem, rows in moved.groupby("micrograph"):
        network = final["off"][final["off"]["micrograph"] == stem][["x", "y"]].to_numpy()
        distances.append(cKDTree(network).query(rows[["x", "y"]].to_numpy())[0])
    distances = np.concatenate(distances)
    assert distances.max() <= radius_px + 1e-6 and (distances > 0).mean() > 0.2
    assert len(moved) <= len(final["off"])
    assert f"moved onto the darkest disc within {radius_px:.0f} px" in step_line(centred.model, centred.pick_config)
    with pytest.raises(ConfigError, match="disc_rank"):
        AutopickConfig(disc_rank="everywhere")
    with pytest.raises(ConfigError, match="disc_centre"):
        AutopickConfig(disc_centre_diameters=-1)


def test_autopick_cli_notes_a_box_smaller_than_the_particle(general, target, tmp_path, monkeypatch):
    import deeppick.autopick as autopick_module
    from deeppick.autopick import BoxEstimate
    from deeppick.model import save_model

    model_path = tmp_path / "general.pt"
    save_model(general, model_path)
    monkeypatch.setattr(autopick_module, "estimate_box", lambda *a, **k: BoxEstimate(
        box_px=70.0, diameter_px=60.0, curve={"70": 1.0}, why="fixed"))
    for box, noted in (("44", True), ("52", False)):  # 0.8 × 60 = 48 px
        res = CliRunner().invoke(cli, ["autopick", "--micrographs", str(target / "micrographs"), "--box-px", box,
                                       "--model", str(model_path), "-o", str(tmp_path / box), "--iterations", "0",
                                       "--quiet"])
        assert res.exit_code == 0, res.output
        assert ("is smaller than the particle these micrographs show (about 60 px)" in res.stderr) == noted
    # self-trained, the fine-tuned model works at a box that holds the particle, unless told to keep the given one
    for least, frame_px in (None, 60.0), ("0", 44.0):
        out = tmp_path / f"tuned-{least}"
        res = CliRunner().invoke(cli, ["autopick", "--micrographs", str(target / "micrographs"), "--box-px", "44",
                                       "--model", str(model_path), "-o", str(out), "--epochs", "1", "--step-px", "8",
                                       "--no-rotations", "--quiet"] + (["--min-box-diameters", least] if least else []))
        assert res.exit_code == 0, res.output
        model = load_model(out / "autopick_model.pt")
        # at 44 px the drift guard may roll the fine-tuning back: then the general model's picks are written
        assert (model.info["autopick"]["n_top"] > 0 and model.box_px == frame_px) or least is not None
        record = model.info["autopick"]["box_estimate"]
        assert record["given"] == 44.0 and record["used"] == frame_px
        assert ("the fine-tuned model works at box 60 px: the given 44 px crops" in res.stderr) == (least is None)
        assert ("is smaller than the particle these micrographs show" in res.stderr) == (least is not None)
