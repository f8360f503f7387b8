"""Micrograph and coordinate I/O: every format round-trips; bad input gives one clear error."""

from __future__ import annotations

import mrcfile
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from deeppick.errors import CoordinateError, MicrographError
from deeppick.io import (check_micrograph, coordinate_stem, is_coordinate_list, make_picks,
                         match_picks_to_micrographs, micrograph_pixel_size, picks_away_from, read_coordinate_list,
                         read_micrograph, read_picks, relion_path, write_coordinate_list, write_micrograph,
                         write_picks, write_picks_per_micrograph)

# --- micrographs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, mode", [(np.int8, 0), (np.int16, 1), (np.float32, 2), (np.uint16, 6),
                                         (np.float16, 12)])
def test_mrc_modes_read_back_equal(tmp_path, rng, dtype, mode):
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    low, high = (info.min, info.max) if info else (-100, 100)
    data = rng.uniform(low, high, size=(37, 53)).astype(dtype)
    path = tmp_path / "m.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 1.5
    with mrcfile.open(path) as mrc:
        assert mrc.header.mode == mode
    image = read_micrograph(path)
    assert image.dtype == np.float32 and image.shape == (37, 53)
    np.testing.assert_array_equal(image, data.astype(np.float32))
    assert micrograph_pixel_size(path) == pytest.approx(1.5)


def test_one_section_volume_is_2d_and_stack_is_rejected(tmp_path, rng):
    one = rng.normal(size=(1, 20, 30)).astype(np.float32)
    with mrcfile.new(tmp_path / "one.mrc") as mrc:
        mrc.set_data(one)
    assert read_micrograph(tmp_path / "one.mrc").shape == (20, 30)
    with mrcfile.new(tmp_path / "stack.mrcs") as mrc:
        mrc.set_data(rng.normal(size=(3, 20, 30)).astype(np.float32))
    with pytest.raises(MicrographError, match=r"stack\.mrcs.*3 sections"):
        read_micrograph(tmp_path / "stack.mrcs")


def test_write_micrograph_round_trip_with_pixel_size(tmp_path, rng):
    data = rng.normal(size=(40, 24)).astype(np.float32)
    write_micrograph(tmp_path / "w.mrc", data, pixel_size_a=2.2)
    np.testing.assert_array_equal(read_micrograph(tmp_path / "w.mrc"), data)
    assert micrograph_pixel_size(tmp_path / "w.mrc") == pytest.approx(2.2)
    assert not list(tmp_path.glob("*.part")), "no temporary file is left behind"


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_8_and_16_bit(tmp_path, rng, dtype):
    data = rng.integers(0, np.iinfo(dtype).max, size=(30, 40)).astype(dtype)
    Image.fromarray(data).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_micrograph(tmp_path / "g.png"), data.astype(np.float32))


def test_grey_stored_as_rgb_collapses_to_one_channel(tmp_path, rng):
    grey = rng.integers(0, 255, size=(30, 40)).astype(np.uint8)
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_micrograph(tmp_path / "rgb.png"), grey.astype(np.float32))


def test_tiff_and_jpeg(tmp_path, rng):
    import tifffile

    data = rng.normal(size=(30, 40)).astype(np.float32)
    tifffile.imwrite(tmp_path / "a.tif", data)
    np.testing.assert_array_equal(read_micrograph(tmp_path / "a.tif"), data)
    Image.fromarray(rng.integers(0, 255, size=(30, 40)).astype(np.uint8)).save(tmp_path / "a.jpg")
    assert read_micrograph(tmp_path / "a.jpg").shape == (30, 40)


def test_truncated_mrc_names_the_file(tmp_path, rng):
    write_micrograph(tmp_path / "t.mrc", rng.normal(size=(64, 64)))
    raw = (tmp_path / "t.mrc").read_bytes()
    (tmp_path / "t.mrc").write_bytes(raw[: len(raw) - 1000])
    with pytest.raises(MicrographError, match=r"t\.mrc.*truncated or corrupt"):
        read_micrograph(tmp_path / "t.mrc")


def test_corrupt_png_names_the_file(tmp_path):
    (tmp_path / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(MicrographError, match=r"c\.png.*truncated or corrupt"):
        read_micrograph(tmp_path / "c.png")


def test_unsupported_mrc_mode(tmp_path):
    with mrcfile.new(tmp_path / "cx.mrc") as mrc:
        mrc.set_data(np.ones((8, 8), dtype=np.complex64))
    with pytest.raises(MicrographError, match=r"cx\.mrc.*mode 4 is not supported"):
        read_micrograph(tmp_path / "cx.mrc")


def test_non_finite_constant_and_too_small(tmp_path, rng):
    data = rng.normal(size=(32, 32)).astype(np.float32)
    data[3, 4] = np.nan
    with pytest.warns(RuntimeWarning, match="NaN"):  # mrcfile warns on writing NaN: expected here
        write_micrograph(tmp_path / "nan.mrc", data)
    with pytest.raises(MicrographError, match=r"nan\.mrc: 1 pixels are NaN"):
        read_micrograph(tmp_path / "nan.mrc")
    write_micrograph(tmp_path / "flat.mrc", np.full((32, 32), 7.0))
    with pytest.raises(MicrographError, match=r"flat\.mrc.*constant"):
        read_micrograph(tmp_path / "flat.mrc")
    with pytest.raises(MicrographError, match=r"small\.mrc.*smaller than the box of 64 px"):
        check_micrograph(rng.normal(size=(32, 100)), "small.mrc", box_px=64)


def test_unknown_suffix_and_missing_file(tmp_path):
    (tmp_path / "x.dat").write_bytes(b"123")
    with pytest.raises(MicrographError, match="unsupported micrograph format .dat"):
        read_micrograph(tmp_path / "x.dat")
    with pytest.raises(MicrographError, match="no such micrograph file"):
        read_micrograph(tmp_path / "missing.mrc")


# --- coordinates ------------------------------------------------------------------------------------

coordinate = st.floats(min_value=0, max_value=8000, allow_nan=False).map(lambda v: round(v, 2))
# float32, as the scanner's scores are: they must read back exactly
score = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_subnormal=False, width=32)
picks_strategy = st.lists(st.tuples(coordinate, coordinate, score), min_size=0, max_size=30)


def _table(rows, name="mic_001"):
    x, y, s = (list(c) for c in zip(*rows)) if rows else ([], [], [])
    return make_picks(name, x, y, s)


def _assert_same(a: pd.DataFrame, b: pd.DataFrame, with_score=True, xy_tol=0.0051):
    assert len(a) == len(b)
    np.testing.assert_allclose(b["x"], a["x"], atol=xy_tol)
    np.testing.assert_allclose(b["y"], a["y"], atol=xy_tol)
    if with_score:
        np.testing.assert_array_equal(b["score"].to_numpy(np.float32), a["score"].to_numpy(np.float32))
    assert (b["micrograph"] == a["micrograph"]).all()


@settings(max_examples=25, deadline=None)
@given(rows=picks_strategy, fmt=st.sampled_from(["star", "coord", "csv", "cbox"]))
def test_picks_round_trip_through_each_format(tmp_path_factory, rows, fmt):
    folder = tmp_path_factory.mktemp(fmt)
    picks = _table(rows)
    path = folder / f"mic_001.{ {'coord': 'txt'}.get(fmt, fmt) }"
    write_picks(picks, path, fmt, box_px=100)
    back = read_picks(path, fmt)
    _assert_same(picks, back, with_score=len(rows) > 0)


@pytest.mark.parametrize("fmt", ["star", "coord", "csv", "cbox"])
def test_confident_scores_keep_their_order_through_a_file(tmp_path, fmt):
    # Confident picks score within a few float32 steps of 1; six digits would write them all as "1".
    scores = np.float32(1) - np.arange(5, dtype=np.float32) * np.finfo(np.float32).epsneg
    picks = make_picks("mic_001", np.arange(5.0) * 10, np.arange(5.0) * 10, scores)
    path = tmp_path / f"mic_001.{ {'coord': 'txt'}.get(fmt, fmt) }"
    write_picks(picks, path, fmt, box_px=100)
    back = read_picks(path, fmt)["score"].to_numpy()
    assert len(np.unique(back)) == 5 and (np.diff(back) < 0).all()


@settings(max_examples=25, deadline=None)
@given(rows=picks_strategy, box_px=st.integers(min_value=8, max_value=400))
def test_box_files_store_corners_and_read_back_centres(tmp_path_factory, rows, box_px):
    folder = tmp_path_factory.mktemp("box")
    picks = _table(rows)
    write_picks(picks, folder / "mic_001.box", "box", box_px=box_px)
    text = (folder / "mic_001.box").read_text().split()
    if rows:
        assert float(text[0]) == pytest.approx(rows[0][0] - box_px / 2, abs=0.006)  # corner, not centre
        assert float(text[2]) == box_px
    _assert_same(picks, read_picks(folder / "mic_001.box"), with_score=False)


def test_multi_micrograph_star_and_topaz_table(tmp_path):
    picks = make_picks(["a", "a", "b"], [1, 2, 3], [4, 5, 6], [0.9, 0.8, 0.7])
    write_picks(picks, tmp_path / "all.star")
    _assert_same(picks, read_picks(tmp_path / "all.star"))
    write_picks(picks, tmp_path / "all.txt", "coord")
    _assert_same(picks, read_picks(tmp_path / "all.txt", "coord"))
    with pytest.raises(CoordinateError, match="one micrograph"):
        write_picks(picks, tmp_path / "x.box", "box", box_px=10)


def test_relion_31_star_with_optics_block(tmp_path):
    (tmp_path / "mic7_autopick.star").write_text(
        "data_optics\nloop_\n_rlnOpticsGroup #1\n_rlnImagePixelSize #2\n1 1.06\n\n"
        "data_particles\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n_rlnAutopickFigureOfMerit #3\n"
        "_rlnMicrographName #4\n10.5 20.25 0.7 MotionCorr/job002/mic7.mrc\n30 40 0.2 MotionCorr/job002/mic7.mrc\n")
    picks = read_picks(tmp_path / "mic7_autopick.star")
    assert list(picks["micrograph"]) == ["mic7", "mic7"]
    np.testing.assert_allclose(picks["x"], [10.5, 30])
    np.testing.assert_allclose(picks["score"], [0.7, 0.2])


def test_relion_30_star_without_score_names_micrograph_by_file_stem(tmp_path):
    (tmp_path / "m1.star").write_text("data_\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n1 2\n3 4\n")
    picks = read_picks(tmp_path / "m1.star")
    assert list(picks["micrograph"]) == ["m1", "m1"] and picks["score"].isna().all()


def test_csv_without_header(tmp_path):
    (tmp_path / "m2.csv").write_text("1.5,2.5\n3,4\n")
    picks = read_picks(tmp_path / "m2.csv")
    np.testing.assert_allclose(picks[["x", "y"]].to_numpy(), [[1.5, 2.5], [3, 4]])


def test_star_written_for_relion_has_coordinates_and_figure_of_merit(tmp_path):
    write_picks(make_picks("m", [1.0], [2.0], [0.5]), tmp_path / "m.star")
    text = (tmp_path / "m.star").read_text()
    for label in ("_rlnCoordinateX", "_rlnCoordinateY", "_rlnAutopickFigureOfMerit"):
        assert label in text
    import starfile

    table = starfile.read(tmp_path / "m.star")  # the reference STAR parser agrees
    assert float(table["rlnCoordinateX"].iloc[0]) == 1.0


def test_bad_coordinate_files_give_clear_errors(tmp_path):
    (tmp_path / "bad.box").write_text("1 2 three 4\n")
    with pytest.raises(CoordinateError, match=r"bad\.box:1: not a row of numbers"):
        read_picks(tmp_path / "bad.box")
    (tmp_path / "nocoord.star").write_text("data_\nloop_\n_rlnDefocusU #1\n1\n")
    with pytest.raises(CoordinateError, match=r"nocoord\.star: no data block with rlnCoordinateX"):
        read_picks(tmp_path / "nocoord.star")
    with pytest.raises(CoordinateError, match="give the box size"):
        write_picks(make_picks("m", [1], [1]), tmp_path / "m.box", "box")
    (tmp_path / "m.xyz").write_text("1 2\n")
    with pytest.raises(CoordinateError, match="cannot tell the coordinate format"):
        read_picks(tmp_path / "m.xyz")


def test_coordinate_files_match_micrographs_by_stem(tmp_path):
    picks = make_picks(["mic1", "mic1", "mic9"], [1, 2, 3], [1, 2, 3])
    matched, orphans, unpicked = match_picks_to_micrographs(picks, ["/d/mic1.mrc", "/d/mic2.mrc"])
    assert len(matched["mic1"]) == 2 and len(matched["mic2"]) == 0
    assert orphans == ["mic9"] and unpicked == ["mic2"]
    assert coordinate_stem("mic1_autopick.star") == "mic1"
    assert coordinate_stem("x_manualpick.box") == "x"


def test_per_micrograph_writing_includes_empty_micrographs(tmp_path):
    picks = make_picks(["a", "b"], [1, 2], [3, 4], [0.1, 0.2])
    files = write_picks_per_micrograph(picks, tmp_path, "star", micrographs=["a", "b", "c"])
    assert sorted(f.name for f in files) == ["a.star", "b.star", "c.star"]
    assert len(read_picks(tmp_path / "c.star")) == 0
    assert len(read_picks(tmp_path)) == 2


def test_written_micrographs_are_byte_reproducible(tmp_path, rng):
    data = rng.normal(size=(16, 16))
    write_micrograph(tmp_path / "a.mrc", data, pixel_size_a=1.0)
    import time

    time.sleep(1.1)  # mrcfile would stamp a different creation time
    write_micrograph(tmp_path / "b.mrc", data, pixel_size_a=1.0)
    assert (tmp_path / "a.mrc").read_bytes() == (tmp_path / "b.mrc").read_bytes()


def test_a_folder_with_one_micrograph_in_two_formats_is_not_read_twice(tmp_path):
    picks = make_picks("m1", [100, 200], [50, 60], [0.9, 0.8])
    write_picks(picks, tmp_path / "m1.star")
    write_picks(picks, tmp_path / "m1.box", box_px=40)
    write_picks(make_picks("m2", [10], [20], [0.5]), tmp_path / "m2.star")
    with pytest.raises(CoordinateError, match="1 micrograph.*several formats.*m1.box, m1.star"):
        read_picks(tmp_path)
    star = read_picks(tmp_path, "star")
    assert sorted(star["micrograph"]) == ["m1", "m1", "m2"]
    box = read_picks(tmp_path, "box")
    assert sorted(box["micrograph"]) == ["m1", "m1"] and np.allclose(sorted(box["x"]), [100, 200])
    with pytest.raises(CoordinateError, match="no csv coordinate files"):
        read_picks(tmp_path, "csv")


def test_a_relion_list_of_coordinate_files_reads_the_files_it_lists(tmp_path, monkeypatch):
    # A RELION project: paths in the list are relative to the project folder, RELION runs from there.
    monkeypatch.chdir(tmp_path)
    job = tmp_path / "AutoPick" / "job006"
    (job / "Movies").mkdir(parents=True)
    for stem, rows in [("mic1", "10 20 0.9\n30 40 0.8\n"), ("mic2", "50 60 0.7\n")]:
        (job / "Movies" / f"{stem}_autopick.star").write_text(
            "data_\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n_rlnAutopickFigureOfMerit #3\n" + rows)
    (job / "autopick.star").write_text(
        "# version 30001\ndata_coordinate_files\nloop_\n_rlnMicrographName #1\n_rlnMicrographCoordinates #2\n"
        "MotionCorr/job002/Movies/mic1.mrc AutoPick/job006/Movies/mic1_autopick.star\n"
        "MotionCorr/job002/Movies/mic2.mrc AutoPick/job006/Movies/mic2_autopick.star\n")
    assert is_coordinate_list(job / "autopick.star") and not is_coordinate_list(job / "Movies" / "mic1_autopick.star")
    picks = read_picks("AutoPick/job006/autopick.star")
    assert list(picks["micrograph"]) == ["mic1", "mic1", "mic2"]
    np.testing.assert_allclose(picks[["x", "y", "score"]], [[10, 20, 0.9], [30, 40, 0.8], [50, 60, 0.7]])
    # The micrograph is named by the list, whatever the coordinate file is called.
    listing = (job / "autopick.star").read_text()
    (job / "autopick.star").write_text(listing.replace("Movies/mic2.mrc", "Movies/other.mrc"))
    assert set(read_picks(job / "autopick.star")["micrograph"]) == {"mic1", "other"}
    # A listed file that is not there is one clear error naming it.
    (job / "Movies" / "mic1_autopick.star").unlink()
    with pytest.raises(CoordinateError, match="mic1_autopick.star, which does not exist"):
        read_picks(job / "autopick.star")
    with pytest.raises(CoordinateError, match="no table with rlnMicrographName"):
        read_coordinate_list(job / "Movies" / "mic2_autopick.star")


def test_coordinate_list_round_trip_and_folders_pass_it_over(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "picks"
    write_picks(make_picks("a", [1, 2], [3, 4], [0.9, 0.8]), folder / "a.star")
    write_picks(make_picks("b", [5], [6], [0.7]), folder / "b.star")
    entries = {relion_path("Movies/a.mrc"): relion_path(folder / "a.star"),
               "/data/b.mrc": relion_path(folder / "b.star")}
    assert entries == {"Movies/a.mrc": "picks/a.star", "/data/b.mrc": "picks/b.star"}
    assert relion_path(tmp_path.parent / "elsewhere.mrc") == (tmp_path.parent / "elsewhere.mrc").as_posix()
    write_coordinate_list(folder / "coordinate_files.star", entries)
    assert read_coordinate_list(folder / "coordinate_files.star") == entries
    # Reading the folder reads each picks file once; the list is not a coordinate file of its own.
    from_folder = read_picks(folder)
    assert sorted(from_folder["micrograph"]) == ["a", "a", "b"]
    from_list = read_picks(folder / "coordinate_files.star")
    pd.testing.assert_frame_equal(from_list.sort_values(["micrograph", "x"]).reset_index(drop=True),
                                  from_folder.sort_values(["micrograph", "x"]).reset_index(drop=True))
    # The picks folder moved elsewhere as a whole: listed files are found beside the list.
    moved = tmp_path / "archive" / "picks"
    moved.parent.mkdir()
    folder.rename(moved)
    assert len(read_picks(moved / "coordinate_files.star")) == 3


# --- particle sets from 2-D classification: RELION particles STAR (3.0 and 3.1+), cryoSPARC .cs ----------


def _particles_star(path, rows, optics: bool):
    """A RELION particles STAR: 3.1+ with its optics table, 3.0 without."""
    lines = [""]
    if optics:
        lines += ["# version 30001", "", "data_optics", "", "loop_", "_rlnOpticsGroupName #1", "_rlnOpticsGroup #2",
                  "_rlnImagePixelSize #3", "opticsGroup1 1 1.2", "", "# version 30001", ""]
    lines += ["data_particles" if optics else "data_", "", "loop_", "_rlnMicrographName #1", "_rlnCoordinateX #2",
              "_rlnCoordinateY #3", "_rlnClassNumber #4", "_rlnImageName #5"]
    lines += [f"MotionCorr/job002/Movies/{m}.mrc\t{x:.2f}\t{y:.2f}\t{c}\t{i:06d}@Extract/job007/{m}.mrcs"
              for i, (m, x, y, c) in enumerate(rows, 1)]
    path.write_text("\n".join(lines) + "\n\n")


@settings(max_examples=20, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(["m1", "m2", "m3"]), coordinate, coordinate, st.integers(1, 9)),
                     min_size=1, max_size=30),
       optics=st.booleans(), wanted=st.sets(st.integers(1, 9), min_size=1, max_size=4))
def test_relion_particles_star_reads_per_micrograph_and_class(tmp_path_factory, rows, optics, wanted):
    path = tmp_path_factory.mktemp("star") / "particles.star"
    _particles_star(path, rows, optics)
    picks = read_picks(path)
    assert list(picks["micrograph"]) == [m for m, _, _, _ in rows]
    np.testing.assert_allclose(picks[["x", "y"]].to_numpy(), [[x, y] for _, x, y, _ in rows], atol=0.006)
    good = read_picks(path, classes=sorted(wanted))
    assert len(good) == sum(c in wanted for *_, c in rows)
    assert good.attrs["left_out_by_class"] == len(rows) - len(good)


def test_cryosparc_particles_are_read_in_pixels_without_the_uid_prefix(tmp_path):
    dtype = [("uid", "<u8"), ("location/micrograph_path", "S64"), ("location/center_x_frac", "<f4"),
             ("location/center_y_frac", "<f4"), ("location/micrograph_shape", "<u4", (2,)),
             ("alignments2D/class", "<u4")]
    array = np.array([(1, b"J3/imported/012345678901234567_mic_001.mrc", 0.25, 0.5, (1000, 2000), 3),
                      (2, b"J3/imported/012345678901234567_mic_001.mrc", 0.75, 0.1, (1000, 2000), 5),
                      (3, b"J9/motioncorrected/mic_002_patch_aligned.mrc", 0.5, 0.5, (4096, 4096), 3)], dtype=dtype)
    with open(tmp_path / "P12_J20_passthrough_particles.cs", "wb") as handle:
        np.save(handle, array)
    picks = read_picks(tmp_path / "P12_J20_passthrough_particles.cs")
    assert list(picks["micrograph"]) == ["mic_001", "mic_001", "mic_002_patch_aligned"]
    np.testing.assert_allclose(picks[["x", "y"]].to_numpy(), [[500, 500], [1500, 100], [2048, 2048]], atol=1e-3)
    assert len(read_picks(tmp_path / "P12_J20_passthrough_particles.cs", classes=[3])) == 2
    bad = np.array([(1, 0.5)], dtype=[("uid", "<u8"), ("location/center_x_frac", "<f4")])
    with open(tmp_path / "bad.cs", "wb") as handle:
        np.save(handle, bad)
    with pytest.raises(CoordinateError, match="bad.cs: a cryoSPARC particle file needs the fields"):
        read_picks(tmp_path / "bad.cs")
    with pytest.raises(CoordinateError, match="no 2-D class column"):
        write_picks(make_picks("m", [1], [2]), tmp_path / "plain.star")  # no score: no class column
        read_picks(tmp_path / "plain.star", classes=[1])


def test_labels_on_the_micrographs_given_count_what_is_left_out(tmp_path):
    from deeppick.io import labels_on

    picks = make_picks(["a", "a", "b", "c"], [1, 2, 3, 4], [1, 2, 3, 4])
    picks.attrs["left_out_by_class"] = 7
    used, use = labels_on(picks, ["x/a.mrc", "x/b.mrc"], source="particles.star")
    assert list(used["micrograph"]) == ["a", "a", "b"] and use.not_given == {"c": 1}
    use.classes = [1, 4]
    assert use.summary() == ("3 particles of particles.star; 1 left out on 1 micrograph(s) not given (e.g. c); 7 left "
                             "out as not in classes 1,4")
    with pytest.raises(CoordinateError, match="particles.star: its particles name micrographs a, b, c, none of those"):
        labels_on(picks, ["z.mrc"], source="particles.star")


def test_picks_away_from_keeps_those_with_no_reference_pick_nearby():
    before = make_picks("a", [100.0, 300.0], [100.0, 100.0], [0.9, 0.8])
    after = pd.concat([make_picks("a", [104.0, 200.0, 300.0, 329.0], [97.0, 100.0, 131.0, 100.0], [0.9] * 4),
                       make_picks("b", [100.0], [100.0], [0.9])], ignore_index=True)
    new = picks_away_from(after, before, radius_px=30)
    # within 30 px of a reference pick of the same micrograph: left out; on another micrograph: kept
    assert list(zip(new["micrograph"], new["x"])) == [("a", 200.0), ("a", 300.0), ("b", 100.0)]
    assert len(picks_away_from(after, after, radius_px=1)) == 0
    assert len(picks_away_from(after, before.iloc[:0], radius_px=30)) == len(after)
