"""The benchmarks as library functions and commands: the KLH reader and protocol (on synthetic data), the SNR
sweep, the speed figures, and the JSON every benchmark writes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from deeppick.benchmark import require_realdata, write_figures
from deeppick.benchmark.klh import find_klh_data, klh_split
from deeppick.benchmark.realdata import LeaveOneOutRecipe
from deeppick.benchmark.snr import snr_sweep, snr_table
from deeppick.cli import cli
from deeppick.errors import DatasetError
from deeppick.io import make_picks, write_micrograph, write_picks
from deeppick.simulate import SimConfig
from deeppick.train import TrainConfig


def _klh_folder(root):
    """Three defocus pairs as NRAMM names them; picks as EMAN boxes named after the exposure or the pair."""
    image = np.zeros((64, 64), np.float32)
    for name in ("a", "b", "c"):
        for exposure in ("001", "002"):
            write_micrograph(root / "mrc" / f"{name}.{exposure}.mrc", image)
    write_picks(make_picks("a.002", [20.0, 40.0], [22.0, 30.0]), root / "picks" / "a.002.box", "box", box_px=16)
    write_picks(make_picks("b", [30.0], [31.0]), root / "picks" / "b.box", "box", box_px=16)  # the pair's name
    write_picks(make_picks("z.002", [5.0], [5.0]), root / "picks" / "z.002.box", "box", box_px=16)  # no image
    (root / "picks" / "README.txt").write_text("picked by hand in 2004\n")
    return root


def test_klh_reader_keeps_far_from_focus_matches_pair_names_and_says_what_is_missing(tmp_path):
    data = find_klh_data(_klh_folder(tmp_path))
    assert [p.name for p in data.micrographs] == ["a.002.mrc", "b.002.mrc"]
    assert data.near_to_focus_left_out == 3 and data.without_picks == ["c.002"]
    assert data.picks_without_micrograph == ["z.002"] and data.unreadable == ["README.txt"]
    a = data.picks[data.picks["micrograph"] == "a.002"]
    np.testing.assert_allclose(a[["x", "y"]].to_numpy(), [[20, 22], [40, 30]])  # EMAN corners → centres
    assert set(data.picks["micrograph"]) == {"a.002", "b.002"}
    summary = data.summary()
    assert "2 micrographs with 3 manual picks" in summary and "near-to-focus" in summary and "c.002" in summary


def test_klh_reader_says_what_to_do_when_data_or_picks_are_missing(tmp_path):
    with pytest.raises(DatasetError, match="fetch klh-dataset-1"):
        find_klh_data(tmp_path)
    (tmp_path / "exposure2.mrc.tar.gz").write_bytes(b"")
    with pytest.raises(DatasetError, match="unpack exposure2.mrc.tar.gz"):
        find_klh_data(tmp_path)
    write_micrograph(tmp_path / "a.002.mrc", np.zeros((32, 32), np.float32))
    write_picks(make_picks("q", [5.0], [5.0]), tmp_path / "q.box", "box", box_px=8)
    with pytest.raises(DatasetError, match="no manual picks naming any of them.*naming e.g. q"):
        find_klh_data(tmp_path)


def test_klh_split_is_deepems_first_50_then_32_with_a_held_out_part_of_the_training_set(tmp_path):
    paths = [tmp_path / f"m{i:02d}.002.mrc" for i in range(82)][::-1]  # any order in, sorted by name out
    fit, held, test = klh_split(paths)
    assert len(fit) + len(held) == 50 and len(test) == 32 and len(held) == round(0.15 * 50)
    assert test[0].name == "m50.002.mrc" and fit[0].name == "m00.002.mrc"
    fit, held, test = klh_split(paths[:10])
    assert (len(fit), len(held), len(test)) == (5, 1, 4)  # the 50 : 32 proportion
    with pytest.raises(DatasetError):
        klh_split(paths[:2])


def test_synthetic_klh_protocol_end_to_end_says_it_is_synthetic(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["benchmark", "klh", "--synthetic", "--micrographs", "6", "--size", "1024",
                                      "--epochs", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads((out / "klh-synthetic.json").read_text())
    assert figures["synthetic"] is True and figures["box_px"] == 272
    assert figures["micrographs"] == {"train": 3, "held_out": 1, "test": 2}
    assert 0 <= figures["ap"] <= 1 and figures["particles"]["test_references"] > 0
    assert figures["measured_on"]["deeppick"] and figures["measured_on"]["cpus"] >= 1
    figure_lines = [line for line in result.output.splitlines() if line.startswith(("AP", "precision", "F2", "as "))]
    assert not figure_lines  # every line of figures carries the synthetic tag
    assert sum("SYNTHETIC" in line for line in result.output.splitlines()) >= 5
    assert "SYNTHETIC" in (out / "report.html").read_text()
    assert len(list((out / "test-picks").glob("*.star"))) == 2 and (out / "klh-model.pt").is_file()
    # the data as written goes through the reader real data goes through: EMAN boxes, *.002 names
    assert sorted(p.suffix for p in (out / "synthetic-klh" / "picks").iterdir()) == [".box"] * 6


def test_klh_command_needs_data_or_synthetic_and_keeps_outputs_out_of_the_data(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["benchmark", "klh", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--synthetic" in result.stderr
    result = runner.invoke(cli, ["benchmark", "klh", "--data", str(tmp_path), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "inside the data folder" in result.stderr


def test_snr_sweep_trains_and_tests_at_each_snr_and_reuses_its_data(tmp_path):
    sim = SimConfig(molecule="globular", size_px=384, n_particles=12, diameter_px=36, contaminants=())
    figures = snr_sweep(tmp_path, snrs=(1.0, 0.001), sim=sim, n_micrographs=5,
                        train_config=TrainConfig(epochs=3))
    assert [row["snr"] for row in figures["rows"]] == [1.0, 0.001]
    assert all(0 <= row["ap"] <= 1 and row["references"] > 0 for row in figures["rows"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snr-0.001", "snr-1"]
    before = (tmp_path / "snr-1" / "dataset.json").stat().st_mtime_ns
    snr_sweep(tmp_path, snrs=(1.0,), sim=sim, n_micrographs=5, train_config=TrainConfig(epochs=1))
    assert (tmp_path / "snr-1" / "dataset.json").stat().st_mtime_ns == before
    table = snr_table(figures)
    assert "SNR" in table and ("falls below" in table or "stays at or above" in table)


def test_snr_table_names_the_first_snr_where_ap_breaks():
    rows = [{"snr": s, "ap": a, "precision": 0, "recall": 0, "f2": 0, "threshold": None, "seconds": 1}
            for s, a in ((0.1, 0.9), (0.01, 0.4), (0.001, 0.1))]
    figures = {"molecule": "m", "n_micrographs": 3, "size_px": [64, 64], "split": [0.6, 0.2, 0.2], "rows": rows,
               "broken_below_ap": 0.5, "first_snr_below": 0.01}
    assert snr_table(figures).splitlines()[-1] == "AP first falls below 0.5 at SNR 0.01"


def test_figures_json_is_strict_json_with_where_it_was_measured(tmp_path):
    path = write_figures(tmp_path, "x", {"nan": math.nan, "inf": math.inf, "n": np.int64(3), "f": np.float32(0.5),
                                         "nested": [{"a": np.float64(math.nan)}], "path": tmp_path})
    data = json.loads(path.read_text())  # strict: NaN would not parse as JSON elsewhere
    assert data["nan"] is None and data["inf"] is None and data["n"] == 3 and data["f"] == 0.5
    assert data["nested"] == [{"a": None}] and data["path"] == str(tmp_path) and data["benchmark"] == "x"
    assert {"date", "deeppick", "torch", "cpus"} <= set(data["measured_on"])


def test_speed_benchmark_runs_and_its_dense_scan_equals_the_naive_one(tmp_path):
    result = CliRunner().invoke(cli, ["benchmark", "speed", "--quick", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "speed.json").read_text())
    scan = figures["scan"]
    assert scan["max_abs_diff"] <= 1e-5 and scan["speedup"] > 1 and scan["fraction_of_peak"] > 0
    assert figures["train"]["rows"][0]["epochs"] == 1 and len(figures["simulate"]["rows"]) == 4
    assert "dense / naive speed-up" in result.output


def test_realdata_benchmark_without_the_packs_is_one_line(tmp_path):
    with pytest.raises(DatasetError, match="real annotated packs are not here"):
        require_realdata(tmp_path)
    result = CliRunner().invoke(cli, ["benchmark", "realdata", "--root", str(tmp_path), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--root" in result.stderr
    quick = LeaveOneOutRecipe.reduced(max_test=2)
    assert (quick.positives, quick.max_test, quick.rotations) == (4000, 2, False)
    assert quick.settings() != LeaveOneOutRecipe().settings()
    # the cache key spells the defaults out: a recipe naming the default value makes the same model
    from deeppick.simulate import ZOO_ICE_GRADIENT

    assert quick.settings()["zoo_ice_gradient"] == ZOO_ICE_GRADIENT
    assert LeaveOneOutRecipe.reduced(max_test=2, zoo_ice_gradient=ZOO_ICE_GRADIENT).settings() == quick.settings()
    assert LeaveOneOutRecipe.reduced(max_test=2, zoo_ice_gradient=ZOO_ICE_GRADIENT + 1).settings() != quick.settings()


def test_the_leave_one_out_table_says_where_the_fine_tuned_box_was_raised():
    from deeppick.benchmark.realdata import leave_one_out_table

    def cell(given, box, ap):
        return {"box_px": box, "given_box_px": given, "ap_general": 0.5, "general_box_px": 70.0,
                "ap_general_pass": 0.6, "ap_self_trained": ap}

    row = {"pack": "ribosome", "diameter_px": 56.0, "estimate_px": 65.0, "ap_relion_log": None,
           "ap_disc_filter": 0.4, "topaz_ap": 0.74, "min_box": 1.0, "per_box": {
               "0.9×": cell(50, 65.0, 0.85), "1.1×": cell(62, 65.0, 0.86), "1.3×": cell(73, 73.0, 0.80),
               "auto": cell(None, 74.0, 0.84)},
           "particle_free": {"general_picks_per_micrograph": 9.0, "final_picks_per_micrograph": 9.0,
                             "rolled_back": True, "below_threshold": 0.9, "candidates": 300}}
    table = leave_one_out_table([row], LeaveOneOutRecipe())
    assert "fine-tuned box ≥ 1 estimated diameter" in table
    raised = ("ribosome: the fine-tuned model's box raised to hold the particle at 0.9× (50 → 65 px), "
              "1.1× (62 → 65 px)")
    assert raised in table and "1.3×" not in table.split("raised")[1].splitlines()[0]
    assert " 0.060 " in table  # the spread of the fixed boxes, the estimate's left out
    table = leave_one_out_table([{**row, "min_box": None, "per_box": {"1.3×": cell(73, 73.0, 0.8)}}],
                                LeaveOneOutRecipe())
    assert "fine-tuned box as given" in table and "raised" not in table


def test_junk_check_counts_picks_near_the_simulated_carbon_and_ice(general, tmp_path):
    from dataclasses import replace

    from deeppick.benchmark.junk import JUNK_SIM, junk_check

    from .conftest import FAST_PICK, FAST_TRAIN

    sim = replace(JUNK_SIM, size_px=512, n_particles=8)
    figures = junk_check(general, tmp_path, n_micrographs=2, sim=sim, train_config=FAST_TRAIN, pick_config=FAST_PICK)
    assert 0 < figures["area_near_junk"] < 1  # carbon crosses every micrograph (contamination 4)
    for stage in ("general", "self_trained"):
        assert 0 <= figures[stage]["near_junk"] <= 1 and 0 <= figures[stage]["recall"] <= 1
    assert figures["box_px"] == sim.diameter_px and len(list((tmp_path / "junk-check").glob("*.mrc"))) == 2


def test_particle_free_check_reports_contaminated_and_noise_only_micrographs_apart(general, tmp_path):
    import json

    from deeppick.benchmark.realdata import einstein_from_noise

    figures = einstein_from_noise(general, tmp_path, n=1, box_px=40.0)

    def contaminants(folder):
        return sum(sum(m["contaminants"].values())
                   for m in json.loads((tmp_path / folder / "dataset.json").read_text())["micrographs"])

    assert contaminants("particle-free") > 0 and contaminants("noise-only") == 0
    for part in (figures, figures["noise_only"]):
        assert part["n_candidates"] > 0 and 0 <= part["below"] <= 1
        above = round((1 - part["below"]) * part["n_candidates"])
        assert part["picks_per_micrograph"] == above  # n = 1: every candidate at or above the threshold is a pick
        assert 0 <= part["picks_on_broken_per_micrograph"] <= part["picks_per_micrograph"]
    assert figures["noise_only"]["picks_on_broken_per_micrograph"] == 0


def test_broken_figures_tell_picks_on_broken_particles_from_the_rest(tmp_path):
    from deeppick.benchmark.realdata import broken_figures
    from deeppick.io import make_picks, write_picks

    write_picks(make_picks("m", [100.0, 300.0], [100.0, 300.0]), tmp_path / "broken" / "m.star", "star")
    candidates = make_picks("m", [104.0, 300.0, 600.0, 700.0, 800.0], [100.0, 330.0, 600.0, 700.0, 800.0],
                            [0.9, 0.8, 0.7, 0.2, 0.1])
    figures = broken_figures(candidates, tmp_path, threshold=0.5, box_px=40.0, n=1)
    # 104,100 lies within half a box (20 px) of a broken particle; 300,330 does not (30 px away).
    assert figures["picks_on_broken_per_micrograph"] == 1
    assert figures["below_threshold_off_broken"] == pytest.approx(2 / 4)
    (tmp_path / "broken" / "m.star").unlink()
    assert broken_figures(candidates, tmp_path, 0.5, 40.0, 1)["picks_on_broken_per_micrograph"] == 0
