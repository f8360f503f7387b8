"""Picking a folder: batches resume and survive bad files, never mix two models' files, keep RELION's list
of coordinate files, and several batches share one folder."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from deeppick.batch import PICK_RECORD, model_fingerprint, pick_micrographs, update_coordinate_list
from deeppick.cli import cli
from deeppick.errors import ConfigError
from deeppick.io import (COORDINATE_LIST, folder_lock, is_coordinate_list, make_picks, read_coordinate_list,
                         read_micrograph, read_picks, write_picks)
from deeppick.model import load_model
from deeppick.pipeline import PickConfig
from deeppick.postprocess import PostprocessConfig
from deeppick.preprocess import PreprocessConfig

from .conftest import SIM_DIAMETER_PX


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
    # Picks folders record the fingerprint of the model that wrote them and the key of its pick settings;
    # a new version that changed either for the same model would refuse to resume every folder written
    # before. The values below are what deeppick computed for these models at commit 7784eab, when the
    # post-processing lived in the model's info with a peak floor that picking never read.
    import hashlib
    import json
    from dataclasses import replace

    from deeppick.batch import pick_settings
    from deeppick.model import PickerModel, build_net

    net = build_net("deeppicker")
    with torch.no_grad():
        for i, p in enumerate(net.parameters()):
            p.copy_(torch.linspace(-1, 1, p.numel()).reshape(p.shape) * (i + 1) / 10)
    post = replace(PostprocessConfig(), peak_window_box=0.4, edge_margin_box=0.8, max_area_factor=float("inf"))

    def key(model):
        settings = pick_settings(model, PickConfig())
        return hashlib.sha256(json.dumps([model_fingerprint(model), settings],
                                         sort_keys=True).encode()).hexdigest()[:16]

    tuned = PickerModel(net=net, arch="deeppicker", box_px=56.0,
                        preprocess=PreprocessConfig(lowpass_sigma_model_px=2.5),
                        threshold=0.625, postprocess=post)
    plain = PickerModel(net=net, arch="deeppicker", box_px=56.0, threshold=0.625)
    assert (model_fingerprint(tuned), key(tuned)) == ("22ac39f17d92bf52", "27b617cd1c3cc484")
    assert (model_fingerprint(plain), key(plain)) == ("8fb85b3d2275cdd1", "2ae3cb52d4fe11a1")
    flat = replace(tuned, preprocess=PreprocessConfig(lowpass_sigma_model_px=2.5, highpass_sigma_model_px=64))
    assert model_fingerprint(flat) != model_fingerprint(tuned)


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
    assert len(margin_picks) and (edge >= 1.5 * SIM_DIAMETER_PX).all()
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
        assert apart.min() >= SIM_DIAMETER_PX - 1  # Chebyshev distance ≥ half of 2 boxes, less sub-pixel shifts
    result = runner.invoke(cli, ["pick", "--model", str(trained), "--micrographs", str(mics),
                                 "--peak-window", "-1", "-o", str(tmp_path / "bad_window")])
    assert result.exit_code == 2 and "--peak-window" in result.stderr
    assert "Traceback" not in result.output


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


def test_a_micrograph_named_in_bytes_that_are_not_utf8_is_picked_and_the_batch_goes_on(sim_dataset, trained,
                                                                                       tmp_path, monkeypatch):
    # file names on shared file systems are bytes; one that is not UTF-8 must not stop the batch
    monkeypatch.chdir(tmp_path)
    mics = Path("mics")
    mics.mkdir()
    sources = sim_dataset.paths("test")[:2]
    odd = os.fsdecode(b"mic_\xff.mrc")
    shutil.copy(sources[0], mics / odd)
    shutil.copy(sources[1], mics / "plain.mrc")
    result = CliRunner().invoke(cli, ["pick", "--model", str(trained), "--micrographs", "mics", "-o", "out",
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(b"out")) == sorted([b".deeppick-picks.json", b".deeppick.lock", b"mic_\xff.star",
                                                 b"plain.star", b"mics"])  # mics/: where RELION 3.1 looks
    assert sorted(os.listdir(b"out/mics")) == [b"mic_\xff.star", b"plain.star"]
    assert "STAR files are UTF-8 text" in result.output and "mic_\\xff" in result.output  # why no list, and which
    picks = read_picks("out")
    assert set(picks["micrograph"]) == {"mic_\\xff", "plain"} and len(picks)
    # a rerun resumes past it, and evaluating against the same files matches the name
    again = CliRunner().invoke(cli, ["pick", "--model", str(trained), "--micrographs", "mics", "-o", "out",
                                     "--quiet"])
    assert again.exit_code == 0 and "already done" in again.output
    evaluated = CliRunner().invoke(cli, ["evaluate", "--picks", "out", "--references", "out", "--box-px", "40"])
    assert evaluated.exit_code == 0 and "2 micrograph(s) with both" in evaluated.output


def test_outputs_follow_the_umask(sim_dataset, trained, tmp_path):
    from deeppick.io import atomic_write_text
    from deeppick.model import save_model

    model = load_model(trained)
    for umask, mode in ((0o022, 0o644), (0o002, 0o664)):
        previous = os.umask(umask)
        try:
            import deeppick.io

            deeppick.io._umask.cache_clear()
            out = tmp_path / f"u{umask:o}"
            pick_micrographs(model, sim_dataset.paths("test")[:1], out)
            save_model(model, out / "m.pt")
            atomic_write_text(out / "t.txt", "x")
            files = [f for f in out.iterdir() if f.is_file() and f.name != ".deeppick.lock"]
            assert len(files) >= 5
            assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {mode}, [oct(f.stat().st_mode) for f in files]
        finally:
            os.umask(previous)
            deeppick.io._umask.cache_clear()
