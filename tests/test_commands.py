"""The command line: one clear line and exit 2 for bad input; batches go on past a bad micrograph."""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
from click.testing import CliRunner

from deeppick.cli import cli
from deeppick.io import make_picks, read_picks, write_micrograph, write_picks


def test_bad_micrograph_gives_one_line_and_exit_2(tmp_path):
    (tmp_path / "broken.mrc").write_bytes(b"not an mrc file at all" * 3)
    # A real process, so that what the user sees (stderr, exit status) is what is tested.
    proc = subprocess.run([sys.executable, "-m", "deeppick.cli", "info", str(tmp_path / "broken.mrc")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("deeppick: error:") and "broken.mrc" in lines[1]


def test_batch_goes_on_past_a_bad_micrograph_and_lists_it(tmp_path):
    rng = np.random.default_rng(0)
    write_micrograph(tmp_path / "good1.mrc", rng.normal(size=(40, 50)), pixel_size_a=1.1)
    (tmp_path / "bad.mrc").write_bytes(b"\0" * 100)
    write_micrograph(tmp_path / "good2.mrc", rng.normal(size=(40, 50)))
    result = CliRunner().invoke(cli, ["info", str(tmp_path)])
    assert result.exit_code == 2
    assert "good1.mrc\t50x40 px\t1.100 Å/px" in result.stdout and "good2.mrc" in result.stdout
    assert "1 micrograph(s) could not be used" in result.stderr and "bad.mrc" in result.stderr


def test_missing_coordinates_exit_2_with_one_line():
    result = CliRunner().invoke(cli, ["convert", "/no/such/dir", "/tmp/out", "--to", "star"])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "no such coordinate file" in result.stderr


def test_convert_star_folder_to_box_with_scale(tmp_path):
    write_picks(make_picks("m1", [100, 200], [50, 60], [0.9, 0.1]), tmp_path / "in" / "m1.star")
    write_picks(make_picks("m2", [10], [20], [0.5]), tmp_path / "in" / "m2.star")
    result = CliRunner().invoke(cli, ["convert", str(tmp_path / "in"), str(tmp_path / "out"), "--to", "box",
                                      "--box-px", "40", "--scale", "0.5"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m1.box", "m2.box"]
    first = (tmp_path / "out" / "m1.box").read_text().split()
    assert [float(v) for v in first[:4]] == [40.0, 15.0, 20.0, 20.0]  # (100·0.5 − 20/2, 50·0.5 − 10), box 20
    back = read_picks(tmp_path / "out" / "m1.box")
    np.testing.assert_allclose(back["x"], [50, 100])


def test_convert_to_single_topaz_table(tmp_path):
    write_picks(make_picks(["a", "b"], [1, 2], [3, 4], [0.5, 0.6]), tmp_path / "all.star")
    result = CliRunner().invoke(cli, ["convert", str(tmp_path / "all.star"), str(tmp_path / "t.txt"), "--to", "coord"])
    assert result.exit_code == 0, result.output
    assert set(read_picks(tmp_path / "t.txt", "coord")["micrograph"]) == {"a", "b"}


def test_importing_deeppick_makes_idle_openmp_threads_sleep_unless_the_user_chose():
    import os

    code = "import os, deeppick; print(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ACTIVE"


def _help_default(command: str, option: str) -> str:
    """The default ``--help`` shows for an option: what follows '[default: ' in its help text."""
    text = CliRunner().invoke(cli, [command, "--help"], terminal_width=1000).output
    line = next(line for line in text.splitlines() if line.lstrip().startswith(option))
    return line.split("[default: ")[1].split("]")[0]


def test_command_line_defaults_are_the_librarys():
    # the commands read their defaults from the library's configs instead of keeping copies: --help shows
    # the library's value, and an option left out is None, so the config's own default applies
    from deeppick.autopick import AutopickConfig, autopick
    from deeppick.pretrain import PRETRAIN_TRAINING, PretrainConfig, pretrain
    from deeppick.scan import ScanConfig
    from deeppick.train import TrainConfig

    assert _help_default("train", "--epochs") == _help_default("fit", "--epochs") == str(TrainConfig().epochs)
    assert _help_default("train", "--patience") == str(TrainConfig().patience)
    assert _help_default("pretrain", "--epochs") == _help_default("autopick",
                                                                  "--epochs") == str(PRETRAIN_TRAINING.epochs)
    assert _help_default("pretrain", "--positives") == str(PretrainConfig().total_positives)
    assert _help_default("autopick", "--off-centre") == f"{AutopickConfig().off_centre_ratio:g}"
    assert _help_default("pick", "--step-px") == f"{ScanConfig().step_px:g}"
    for command, option in (("train", "epochs"), ("autopick", "iterations"), ("pick", "step_px")):
        assert next(p.default for p in cli.commands[command].params if p.name == option) is None
    # pretraining and self-training keep their own (shorter) measured recipe, also when called from Python
    for function in (pretrain, autopick):
        assert inspect.signature(function).parameters["train_config"].default is PRETRAIN_TRAINING
    assert PRETRAIN_TRAINING != TrainConfig()


def test_coordinate_format_choices_on_the_command_line_are_the_readers():
    import deeppick.commands._shared as shared
    from deeppick.io import FORMAT_SUFFIX, PICK_FORMATS

    assert shared.PICK_FORMATS == PICK_FORMATS and set(PICK_FORMATS) == set(FORMAT_SUFFIX)
    for command, option in [("convert", "fmt"), ("convert", "from_fmt"), ("pick", "fmt"),
                            ("evaluate", "picks_fmt"), ("autopick", "fmt")]:
        param = next(p for p in cli.commands[command].params if p.name == option)
        assert tuple(param.type.choices) == PICK_FORMATS


def test_an_output_path_that_cannot_be_written_fails_at_once_in_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    missing = str(tmp_path / "no-such-dataset")  # checked after the output: the output error comes first
    runner = CliRunner()
    for args in (["fit", "--dataset", missing, "-o", str(blocker / "m.pt")],
                 ["train", "--dataset", missing, "-o", str(blocker / "sub" / "m.pt")],
                 ["extract", "--dataset", missing, "-o", str(blocker / "p.npz")],
                 ["pretrain", "--dataset", missing, "-o", str(blocker / "g.pt")],
                 ["autopick", "--micrographs", missing, "--box-px", "56", "-o", str(blocker / "picks")]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.output
        assert f"{blocker} is a file, not a folder" in result.stderr, result.stderr
    result = runner.invoke(cli, ["fit", "--dataset", missing, "-o", str(tmp_path)])
    assert result.exit_code == 2 and "is a folder; give a file name for the model" in result.stderr
    # a system error while writing (here: the output folder is a file) is one line too
    write_picks(make_picks("m1", [100], [50], [0.9]), tmp_path / "in" / "m1.star")
    result = runner.invoke(cli, ["convert", str(tmp_path / "in"), str(blocker / "out"), "--to", "box", "--box-px",
                                 "40"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.stderr.startswith("deeppick: error: ") and result.stderr.strip().count("\n") == 0
    assert "check the path, its permissions and the free space" in result.stderr


def test_evaluate_a_folder_with_two_formats_needs_picks_format(tmp_path):
    picks = make_picks("m1", [100, 200], [50, 60], [0.9, 0.8])
    write_picks(picks, tmp_path / "picks" / "m1.star")
    write_picks(picks, tmp_path / "picks" / "m1.box", box_px=40)
    write_picks(make_picks("m1", [101, 300], [50, 300], None), tmp_path / "refs" / "m1.star")
    args = ["evaluate", "--picks", str(tmp_path / "picks"), "--references", str(tmp_path / "refs"), "--box-px", "40"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "several formats" in result.stderr and "--picks-format" in result.stderr
    result = CliRunner().invoke(cli, [*args, "--picks-format", "star"])
    assert result.exit_code == 0, result.output
    assert "precision 0.500" in result.output and "recall 0.500" in result.output, result.output


def test_info_names_each_micrograph_with_its_folder(tmp_path):
    rng = np.random.default_rng(0)
    for folder in ("a", "b"):
        write_micrograph(tmp_path / folder / "m.mrc", rng.normal(size=(40, 50)))
    result = CliRunner().invoke(cli, ["info", str(tmp_path / "a"), str(tmp_path / "b")])
    assert result.exit_code == 0
    assert f"{tmp_path / 'a' / 'm.mrc'}\t" in result.stdout and f"{tmp_path / 'b' / 'm.mrc'}\t" in result.stdout


def test_convert_refuses_a_one_micrograph_file_for_several_and_counts_picks_off_the_image(tmp_path):
    picks = make_picks(["a", "a", "b"], [10, -5, 300], [20, 30, 40], [0.9, 0.8, 0.7])
    write_picks(picks, tmp_path / "in.star")
    runner = CliRunner()
    result = runner.invoke(cli, ["convert", str(tmp_path / "in.star"), str(tmp_path / "coords.csv"), "--to", "csv"])
    assert result.exit_code == 2 and "holds one micrograph" in result.stderr and "coords" in result.stderr
    assert not (tmp_path / "coords.csv").exists()
    result = runner.invoke(cli, ["convert", str(tmp_path / "in.star"), str(tmp_path / "coords"), "--to", "csv"])
    assert result.exit_code == 0 and sorted(p.name for p in (tmp_path / "coords").iterdir()) == ["a.csv", "b.csv"]
    assert "1 pick(s) lie at negative coordinates" in result.stderr
    write_micrograph(tmp_path / "mics" / "a.mrc", np.ones((64, 64)) + np.eye(64))
    write_micrograph(tmp_path / "mics" / "b.mrc", np.ones((64, 256)) + np.eye(64, 256))
    result = runner.invoke(cli, ["convert", str(tmp_path / "in.star"), str(tmp_path / "c2"), "--to", "box",
                                 "--box-px", "20", "--micrographs", str(tmp_path / "mics")])
    assert result.exit_code == 0 and "2 pick(s) lie outside their micrograph" in result.stderr


def test_a_damaged_model_is_one_line_about_the_model(trained, tmp_path):
    import json

    import torch

    from deeppick.model import load_model, save_model

    model = load_model(trained)
    runner = CliRunner()
    mics = str(tmp_path / "mics")
    write_micrograph(tmp_path / "mics" / "m.mrc", np.random.default_rng(0).normal(size=(200, 200)))
    for key, value, said in (("box_px", -5.0, "box size is -5.0"),
                             ("arch", "hydra-9", "unknown architecture 'hydra-9'"),
                             ("threshold", 7.0, "threshold is 7.0")):
        save_model(model, tmp_path / "m.pt")
        archive = torch.load(tmp_path / "m.pt", weights_only=True)
        meta = json.loads(archive["metadata_json"])
        meta[key] = value
        archive["metadata_json"] = json.dumps(meta)
        torch.save(archive, tmp_path / "m.pt")
        result = runner.invoke(cli, ["pick", "--model", str(tmp_path / "m.pt"), "--micrographs", mics,
                                     "-o", str(tmp_path / "out")])
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
        assert str(tmp_path / "m.pt") in result.stderr and said in result.stderr, result.stderr
    # a model from another version loads, with a word
    save_model(model, tmp_path / "old.pt")
    archive = torch.load(tmp_path / "old.pt", weights_only=True)
    archive["metadata_json"] = json.dumps({**json.loads(archive["metadata_json"]), "deeppick_version": "0.0.9"})
    torch.save(archive, tmp_path / "old.pt")
    result = runner.invoke(cli, ["pick", "--model", str(tmp_path / "old.pt"), "--micrographs", mics,
                                 "-o", str(tmp_path / "out2"), "--quiet"])
    assert result.exit_code == 0 and "written by deeppick 0.0.9" in result.stderr
    # a torch error is shortened at a word, never cut inside one
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04" + b"\0" * 200)
    result = runner.invoke(cli, ["pick", "--model", str(tmp_path / "junk.pt"), "--micrographs", mics,
                                 "-o", str(tmp_path / "out3")])
    message = result.stderr.split("(", 1)[1].split(");", 1)[0]
    assert result.exit_code == 2 and (message.endswith(" …") or len(message) <= 160)


def test_pick_into_a_file_says_it_is_a_file(trained, tmp_path):
    (tmp_path / "afile").write_text("")
    write_micrograph(tmp_path / "mics" / "m.mrc", np.random.default_rng(0).normal(size=(200, 200)))
    result = CliRunner().invoke(cli, ["pick", "--model", str(trained), "--micrographs", str(tmp_path / "mics"),
                                      "-o", str(tmp_path / "afile")])
    assert result.exit_code == 2 and "is a file, not a folder" in result.stderr and "free space" not in result.stderr


def _full_disk(monkeypatch, rescue):
    """torch.save fails as it does on a full disk, except into ``rescue``."""
    import torch

    import deeppick.model

    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if not str(f).startswith(str(rescue)) and ".ckpt" not in str(f):  # the model, not the checkpoints
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(deeppick.model.torch, "save", save)
    rescue.mkdir()
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(rescue))


def test_a_full_disk_after_training_keeps_a_copy_and_says_where(sim_dataset, tmp_path, monkeypatch):
    from deeppick.model import load_model

    _full_disk(monkeypatch, tmp_path / "rescue")
    out = tmp_path / "out" / "model.pt"
    result = CliRunner().invoke(cli, ["train", "--dataset", str(sim_dataset.root), "-o", str(out), "--epochs", "1",
                                      "--quiet"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.stderr.count("\n") == 1 and f"{out}: the model could not be written" in result.stderr
    kept = list((tmp_path / "rescue").glob("deeppick-model-*.pt"))
    assert len(kept) == 1 and f"a copy is kept in {kept[0]}" in result.stderr
    assert load_model(kept[0]).info["epochs_run"] == 1
    assert not out.exists() and not list(out.parent.glob("*.part"))


def test_too_little_free_space_stops_before_the_work(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 5 * 2**20, 5 * 2**20))
    result = CliRunner().invoke(cli, ["fit", "--dataset", str(tmp_path / "none"), "-o", str(tmp_path / "m.pt")])
    assert result.exit_code == 2 and "only 5 MB free" in result.stderr


def test_evaluate_says_which_names_match_and_refuses_when_none_do(tmp_path):
    write_picks(make_picks("m1", [100, 200], [50, 60], [0.9, 0.4]), tmp_path / "picks" / "m1.star")
    write_picks(make_picks("m2", [10], [10], [0.5]), tmp_path / "picks" / "m2.star")
    write_picks(make_picks("m1", [], [], None), tmp_path / "picks" / "m3.star")  # picked, nothing found
    write_picks(make_picks("m1", [101, 300], [50, 300], None), tmp_path / "refs" / "m1.star")
    write_picks(make_picks("m3", [40], [40], None), tmp_path / "refs" / "m3.star")
    write_picks(make_picks("m4", [40], [40], None), tmp_path / "refs" / "m4.star")
    runner = CliRunner()
    args = ["evaluate", "--picks", str(tmp_path / "picks"), "--box-px", "40"]
    result = runner.invoke(cli, [*args, "--references", str(tmp_path / "refs")])
    assert result.exit_code == 0, result.output
    assert ("2 micrograph(s) with both picks and references; left out, picked but without references: m2; "
            "left out, with references but not picked: m4") in result.stdout
    assert "3 references" in result.stdout and "recall 0.333" in result.stdout  # m3's reference was missed
    # one reference file named for another micrograph: no name matches, one line, exit 2
    write_picks(make_picks("x", [1], [1], None), tmp_path / "refs.star")
    result = runner.invoke(cli, [*args, "--references", str(tmp_path / "refs.star")])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "no micrograph name is in both" in result.stderr and "m1" in result.stderr and "(refs)" in result.stderr


def test_keep_all_output_says_so_and_evaluate_says_when_picks_were_cut(trained, sim_dataset, tmp_path, monkeypatch):
    from deeppick.io import COORDINATE_LIST
    from deeppick.model import load_model

    monkeypatch.chdir(tmp_path)
    threshold = load_model(trained).threshold or 0.5
    mics = [str(p) for p in sim_dataset.paths("test")]
    runner = CliRunner()
    args = ["pick", "--model", str(trained), *sum((["--micrographs", m] for m in mics), []), "--quiet"]
    result = runner.invoke(cli, [*args, "-o", "all", "--keep-all"])
    assert result.exit_code == 0 and "every candidate kept" in result.stdout
    for name in (f"{sim_dataset.stems('test')[0]}.star", COORDINATE_LIST):
        header = (tmp_path / "all" / name).read_text().split("data_")[0]
        assert f"every candidate (--keep-all), not cut at the model's threshold {threshold:.4g}" in header
    result = runner.invoke(cli, [*args, "-o", "cut"])
    assert result.exit_code == 0 and "not cut at" not in (tmp_path / "cut" / COORDINATE_LIST).read_text()
    evaluate = ["evaluate", "--dataset", str(sim_dataset.root), "--split", "test", "--model", str(trained)]
    said = runner.invoke(cli, [*evaluate, "--picks", "cut"]).stdout
    assert f"these picks were cut at a score of {threshold:.3g} when picked" in said
    assert "cut" not in runner.invoke(cli, [*evaluate, "--picks", "all"]).stdout.split("note")[-1]
    # picks of another picker, all above the threshold in use: said, without claiming how they were made
    write_picks(make_picks("m1", [10, 20], [10, 20], [0.9, 0.8]), tmp_path / "other" / "m1.star")
    write_picks(make_picks("m1", [10], [10], None), tmp_path / "ref" / "m1.star")
    said = runner.invoke(cli, ["evaluate", "--picks", "other", "--references", "ref", "--box-px", "40",
                               "--threshold", "0.5"]).stdout
    assert "no pick scores below 0.5; if the picks were cut there" in said


def test_a_full_disk_while_training_keeps_the_last_checkpoint_and_says_resume(sim_dataset, tmp_path, monkeypatch):
    import torch

    import deeppick.train

    real_save, calls = torch.save, []

    def fills_up(obj, f, *args, **kwargs):  # the first checkpoint fits, the second does not
        calls.append(f)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(deeppick.train.torch, "save", fills_up)
    out = tmp_path / "model.pt"
    result = CliRunner().invoke(cli, ["train", "--dataset", str(sim_dataset.root), "-o", str(out), "--epochs", "3",
                                      "--quiet"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "model.pt.ckpt: the training checkpoint could not be written (No space left on device)" in result.stderr
    assert "the checkpoint of epoch 1 is kept" in result.stderr and "--resume" in result.stderr
    assert (tmp_path / "model.pt.ckpt").is_file() and not out.exists()
