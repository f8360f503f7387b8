"""Tests of deeppick.model: the networks and the model file."""

from __future__ import annotations

import pickle

import pytest
import torch

from deeppick.errors import ModelFileError
from deeppick.model import (MODEL_FORMAT, PickerModel, build_net, default_device, load_model, save_model)
from deeppick.preprocess import PreprocessConfig


@pytest.mark.parametrize("arch", ["deeppicker", "deepem", "wide"])
def test_networks_give_one_logit_per_patch(arch):
    torch.manual_seed(0)
    net = build_net(arch).eval()
    patches = torch.randn(5, 1, 64, 64)
    out = net(patches)
    assert out.shape == (5,)
    # each patch is scored on its own: scoring one alone gives the same logit
    torch.testing.assert_close(net(patches[2:3]), out[2:3])
    with pytest.raises(ValueError, match="64"):
        net(torch.randn(1, 1, 80, 80))


def test_two_way_softmax_logit_is_the_difference():
    net = build_net("deeppicker").eval()
    x = torch.randn(3, 1, 64, 64)
    pair = net.body(x)[:, :, 0, 0]
    torch.testing.assert_close(torch.sigmoid(net(x)), torch.softmax(pair, dim=1)[:, 1])


def test_unknown_architecture_is_a_user_error():
    with pytest.raises(ModelFileError, match="unknown architecture"):
        build_net("resnet")


@pytest.fixture
def model():
    torch.manual_seed(3)
    return PickerModel(net=build_net("deeppicker"), arch="deeppicker", box_px=56.0,
                       preprocess=PreprocessConfig(lowpass_sigma_model_px=0.5), threshold=0.42,
                       info={"trained_on": {"datasets": ["ribosome80s-10028"]}, "val_accuracy": 0.97})


@pytest.mark.parametrize("arch", ["deeppicker", "deepem", "wide"])
def test_save_load_gives_identical_outputs_and_metadata(tmp_path, arch):
    torch.manual_seed(1)
    original = PickerModel(net=build_net(arch), arch=arch, box_px=36.0, threshold=0.5, info={"x": [1, 2]})
    original.net.train()
    original.net(torch.randn(16, 1, 64, 64))  # batch norm's running statistics move off their defaults
    save_model(original, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    x = torch.randn(7, 1, 64, 64)
    torch.testing.assert_close(loaded.score_patches(x), original.score_patches(x), rtol=0, atol=0)
    assert (loaded.arch, loaded.box_px, loaded.threshold, loaded.info) == (arch, 36.0, 0.5, {"x": [1, 2]})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_metadata_round_trip(tmp_path, model):
    save_model(model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.preprocess == model.preprocess
    assert loaded.metadata() == model.metadata()
    assert loaded.metadata()["model_px"] == 64 and loaded.metadata()["deeppick_version"]


def test_corrupt_and_truncated_files_give_a_clear_error(tmp_path, model):
    save_model(model, tmp_path / "m.pt")
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="trunc.pt.*corrupt"):
        load_model(tmp_path / "trunc.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelFileError, match="junk.pt.*corrupt"):
        load_model(tmp_path / "junk.pt")
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "missing.pt")
    with pytest.raises(ModelFileError, match="is a folder; give the model file"):
        load_model(tmp_path)


def test_incompatible_or_foreign_files_are_refused(tmp_path, model):
    save_model(model, tmp_path / "m.pt")
    archive = torch.load(tmp_path / "m.pt", weights_only=True)
    torch.save({**archive, "format_version": 999}, tmp_path / "future.pt")
    with pytest.raises(ModelFileError, match="format 999 is not supported"):
        load_model(tmp_path / "future.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(ModelFileError, match="not a deeppick model"):
        load_model(tmp_path / "foreign.pt")
    bad_weights = {k: torch.zeros(1) for k in archive["state_dict"]}
    torch.save({**archive, "state_dict": bad_weights}, tmp_path / "damaged.pt")
    with pytest.raises(ModelFileError, match="damaged or inconsistent"):
        load_model(tmp_path / "damaged.pt")
    assert archive["format"] == MODEL_FORMAT


class _Exploit:
    def __reduce__(self):
        return (print, ("loading this file ran code",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # torch on the plain pickle: expected
def test_loading_never_runs_code_from_the_file(tmp_path, capsys):
    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump({"format": MODEL_FORMAT, "payload": _Exploit()}, fh)
    torch.save({"format": MODEL_FORMAT, "format_version": 1, "payload": _Exploit()}, tmp_path / "evil2.pt")
    for name in ("evil.pt", "evil2.pt"):
        with pytest.raises(ModelFileError):
            load_model(tmp_path / name)
    assert "ran code" not in capsys.readouterr().out


def test_default_device_follows_cuda():
    assert default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_the_wide_network_is_small_enough_to_ship(tmp_path):
    wide = PickerModel(net=build_net("wide"), arch="wide", box_px=56.0)
    save_model(wide, tmp_path / "wide.pt")
    assert (tmp_path / "wide.pt").stat().st_size < 5e6
    assert sum(p.numel() for p in wide.net.parameters()) > 2 * sum(p.numel() for p in build_net().parameters())
