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
