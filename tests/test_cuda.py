"""CUDA end to end: the same scores, training and picks as on the CPU, within float tolerance. Every test here
is marked ``cuda`` and skips, saying so, without a GPU (``benchmarks/gpu_check.sh`` runs them on one)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from deeppick.autopick import AutopickConfig, autopick
from deeppick.model import load_model
from deeppick.patches import extract_dataset_patches
from deeppick.pipeline import PickConfig, pick_paths
from deeppick.preprocess import prepare_micrograph
from deeppick.io import read_micrograph
from deeppick.scan import ScanConfig, scan_micrograph
from deeppick.train import TrainConfig, train_model

from .conftest import FAST_PICK, FAST_TRAIN, SIM_DIAMETER_PX

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh)")]


def test_the_score_map_on_the_gpu_is_the_cpus(trained, sim_dataset):
    model = load_model(trained)
    prepared = prepare_micrograph(read_micrograph(sim_dataset.paths()[0]), model.box_px, model.preprocess)
    on_cpu = scan_micrograph(model, prepared, ScanConfig()).scores
    model.net.to("cuda")
    on_gpu = scan_micrograph(model, prepared, ScanConfig()).scores
    np.testing.assert_allclose(on_gpu, on_cpu, atol=1e-4)


def test_training_on_the_gpu_follows_the_cpu(sim_dataset):
    patches = extract_dataset_patches(sim_dataset, "train", box_px=SIM_DIAMETER_PX, seed=0)
    config = TrainConfig(epochs=2, seed=0, optimizer="adam")
    on_cpu = train_model(patches, config, progress=False)
    on_gpu = train_model(patches, TrainConfig(**{**config.to_dict(), "device": "cuda"}), progress=False)
    for a, b in zip(on_cpu.net.parameters(), on_gpu.net.parameters()):
        np.testing.assert_allclose(b.detach().cpu().numpy(), a.detach().numpy(), atol=2e-3, rtol=1e-2)


def test_picking_and_autopick_on_the_gpu(trained, sim_dataset, general, target):
    model = load_model(trained)
    on_cpu = pick_paths(model, sim_dataset.paths("test"), config=PickConfig(keep_all=True))
    gpu_model = copy.deepcopy(model)
    gpu_model.net.to("cuda")
    on_gpu = pick_paths(gpu_model, sim_dataset.paths("test"), config=PickConfig(keep_all=True))
    assert len(on_gpu) == len(on_cpu)
    np.testing.assert_allclose(on_gpu[["x", "y", "score"]].to_numpy(), on_cpu[["x", "y", "score"]].to_numpy(),
                               atol=1e-3)
    gpu_general = copy.deepcopy(general)
    gpu_general.net.to("cuda")
    result = autopick(gpu_general, target / "micrographs", box_px=56, config=AutopickConfig(min_top=5),
                      train_config=TrainConfig(**{**FAST_TRAIN.to_dict(), "device": "cuda"}), pick_config=FAST_PICK)
    assert next(result.model.net.parameters()).is_cuda and len(result.candidates[-1]) > 0
