"""Speed: the dense scanner against the naive one and against the machine's matmul peak, training, simulation.

All figures of one call are measured in the same run, so their ratios are fairer than absolute times on
a shared machine. :func:`scan_figures` picks one 4096² micrograph (box 160 px, step 4 px, four rotations)
and compares the dense scan with the naive per-patch scan on the same positions;
:func:`train_figures` trains on 800 + 800 patches for 10 epochs; :func:`simulate_figures` times
2048² micrographs of 100 particles.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

SCAN_TARGETS = {"pick_s": 5.0, "rss_gb": 2.0, "fraction_of_peak": 0.40, "speedup": 100.0}  # issue 5
TRAIN_TARGET_S = 120.0  # issue 4: 800 + 800 patches, 10 epochs, ≤ 2 minutes on 2 cores
SIMULATE_TARGET_S = 2.0  # issue 3: ≤ 2 s per 2048² micrograph with 100 particles on 2 cores


def matmul_peak_gflops(n: int = 2048, repeats: int = 5, device: str = "cpu") -> float:
    """Best-of-``repeats`` float32 n×n matrix multiply rate in GFLOP/s on ``device``."""
    import torch

    if device != "cpu":
        n = 8192
        torch.backends.cuda.matmul.allow_tf32 = False  # the float32 peak, as the scan computes in float32
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def _sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def flops_per_position(model, step: int) -> float:
    """FLOPs the dense method needs per scan position (per rotation), halos excluded.

    A conv before the last pool runs on the grid left by the strided pools before it, i.e.
    ``(step / 2^strided)²`` times per position; conv layers after the last pool (the FC layers) once.
    """
    from ..scan import _plan

    plan = _plan(model, step)
    pools_before, total = 0, 0.0
    n_pools = plan.n_strided_pools + plan.n_phase_pools
    for kind, module in plan.layers:
        if kind in ("maxpool", "avgpool"):
            pools_before += 1
        elif kind == "conv":
            flops = 2.0 * module.weight.numel()
            if pools_before < n_pools:
                flops *= (step / 2 ** min(pools_before, plan.n_strided_pools)) ** 2
            total += flops
    return total


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def scan_figures(*, arch: str = "deeppicker", size_px: int = 4096, box_px: float = 160.0, step_px: float = 4.0,
                 repeats: int = 3, naive_px: int = 96, device: str = "cpu",
                 micrograph: str | os.PathLike | None = None) -> dict:
    """Time one whole pick and the scan alone, memory, fraction of the matmul peak, dense vs naive.

    ``micrograph`` (a real 4096² one) is used for the whole pick, noise otherwise; the timed scans use
    noise of ``size_px``² (the median of ``repeats``).
    """
    import torch

    from ..io import read_micrograph
    from ..model import PickerModel, build_net
    from ..pipeline import PickConfig, pick_micrograph
    from ..preprocess import PreparedMicrograph, prepare_micrograph
    from ..pretrain import load_general_model, with_box
    from ..scan import ScanConfig, naive_scan, scan_micrograph

    torch.manual_seed(0)
    if arch == "deeppicker":  # trained weights, so the full pick post-processes a realistic map
        model = with_box(load_general_model(), box_px)
    else:
        model = PickerModel(net=build_net(arch).eval(), arch=arch, box_px=box_px)
    model.net.to(device)
    config = ScanConfig(step_px=step_px, rotations=True)
    rss_start = peak_rss_gb()

    image = np.random.default_rng(0).normal(size=(size_px, size_px)).astype(np.float32)
    scan_micrograph(model, prepare_micrograph(image[:1024, :1024], box_px, model.preprocess), config)  # set-up
    runs = []  # (prepare s, scan s, CPU s) per repeat; the median repeat is reported
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        prepared = prepare_micrograph(image, box_px, model.preprocess)
        prep_s = time.perf_counter() - start
        score_map = scan_micrograph(model, prepared, config)
        runs.append((prep_s, time.perf_counter() - start - prep_s, time.process_time() - cpu_start))
    runs.sort(key=lambda run: run[0] + run[1])
    prep_s, scan_s, cpu_s = runs[len(runs) // 2]
    rss_gb = peak_rss_gb()
    step = score_map.model_step_px
    positions = score_map.scores.size * 4

    start = time.perf_counter()
    whole = read_micrograph(micrograph) if micrograph else image
    picks = pick_micrograph(model, whole, name="benchmark", config=PickConfig(scan=config))
    pick_s = time.perf_counter() - start

    peak = matmul_peak_gflops(device=device)
    flops = flops_per_position(model, step)
    gflops = positions * flops / scan_s / 1e9

    small_image = np.random.default_rng(1).normal(size=(naive_px, naive_px)).astype(np.float32)
    small = PreparedMicrograph(small_image, prepared.scale_x, prepared.scale_y, (naive_px, naive_px))
    scan_micrograph(model, small, config)
    start = time.perf_counter()
    fast = scan_micrograph(model, small, config)
    fast_s = time.perf_counter() - start
    start = time.perf_counter()
    naive = naive_scan(model, small, config)
    naive_s = time.perf_counter() - start
    return {"arch": arch, "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
            "size_px": size_px, "box_px": box_px, "step_px": step_px, "model_image_px": list(prepared.image.shape),
            "model_step_px": step, "positions_m": positions / 1e6, "repeats_s": [p + c for p, c, _ in runs],
            "prepare_s": prep_s, "scan_s": scan_s, "prepare_scan_s": prep_s + scan_s, "cpu_s": cpu_s,
            "whole_pick_s": pick_s, "whole_pick_source": Path(micrograph).name if micrograph else "noise",
            "whole_pick_picks": len(picks), "rss_gb": rss_gb, "rss_start_gb": rss_start,
            "flops_per_position_k": flops / 1e3, "scan_gflops": gflops, "matmul_peak_gflops": peak,
            "fraction_of_peak": gflops / peak, "naive_positions": int(naive.scores.size), "naive_s": naive_s,
            "dense_s": fast_s, "speedup": naive_s / fast_s,
            "max_abs_diff": float(np.abs(fast.scores - naive.scores).max()),
            "micrographs_per_s": 1 / pick_s, "targets": SCAN_TARGETS}


def scan_table(f: dict) -> str:
    t = f["targets"]
    rows = [("prepare_micrograph (s)", f"{f['prepare_s']:.2f}", ""),
            ("scan_micrograph (s)", f"{f['scan_s']:.2f}", ""),
            ("pick one micrograph: prepare + scan (s)", f"{f['prepare_scan_s']:.2f}", f"≤ {t['pick_s']:g}"),
            ("  CPU time, prepare + scan, all threads (s)", f"{f['cpu_s']:.2f}", "(/ threads = wall on idle cores)"),
            ("whole pick incl. reading, post-processing (s)", f"{f['whole_pick_s']:.2f}",
             f"≤ {t['pick_s']:g}  ({f['whole_pick_source']}: {f['whole_pick_picks']} picks)"),
            ("peak resident memory (GB)", f"{f['rss_gb']:.2f}",
             f"≤ {t['rss_gb']:g}  (at start: {f['rss_start_gb']:.2f})"),
            ("dense FLOPs per position per rotation (k)", f"{f['flops_per_position_k']:.1f}", ""),
            ("scan GFLOP/s", f"{f['scan_gflops']:.1f}", ""),
            ("float32 matmul peak GFLOP/s (this run)", f"{f['matmul_peak_gflops']:.1f}", ""),
            ("scan / matmul peak", f"{f['fraction_of_peak']:.1%}", f"≥ {t['fraction_of_peak']:.0%}"),
            (f"naive: {f['naive_positions']} positions × 4 rotations (s)", f"{f['naive_s']:.2f}", ""),
            ("dense: same positions (s)", f"{f['dense_s']:.3f}", ""),
            ("dense / naive speed-up", f"{f['speedup']:.0f}×", f"≥ {t['speedup']:g}×"),
            ("max |dense − naive|", f"{f['max_abs_diff']:.1e}", "≤ 1e-5"),
            ("micrographs per second (whole pick)", f"{f['micrographs_per_s']:.2f}", "(GPU: ≥ 20)")]
    head = (f"scan: arch={f['arch']}, {f['device']}, micrograph {f['size_px']}² px, box {f['box_px']:g} px → model "
            f"image {f['model_image_px'][0]}×{f['model_image_px'][1]}, step {f['step_px']:g} px → "
            f"{f['model_step_px']} model px, 4 rotations: {f['positions_m']:.2f} M patch scores; median of "
            f"{len(f['repeats_s'])} repeats ({', '.join(f'{s:.2f}' for s in f['repeats_s'])} s)")
    return "\n".join([head, f"{'figure':<48}{'value':>12}  target"]
                     + [f"{name:<48}{value:>12}  {target}" for name, value, target in rows])


def train_figures(*, archs=("deeppicker", "deepem"), epochs: int = 10, n_positive: int = 800,
                  realdata: str | os.PathLike | None = None) -> dict:
    """Train on ``n_positive`` particle + as many background patches for ``epochs`` epochs, per network.

    Patches come from cryoppp-10059's train split under ``realdata`` when it is there, from noise
    otherwise. Early stopping is off so every run does all its epochs.
    """
    from ..model import default_device
    from ..patches import PatchConfig, concat_patch_sets, extract_dataset_patches, extract_patches
    from ..train import TrainConfig, train_model

    start = time.perf_counter()
    pack = Path(realdata) / "cryoppp-10059" if realdata else None
    if pack is not None and pack.is_dir():
        config = PatchConfig(max_positives_per_micrograph=n_positive // 4 + 1, off_centre_ratio=0.0)
        patches, source = extract_dataset_patches(pack, "train", config=config, seed=0), "cryoppp-10059 train"
    else:
        rng = np.random.default_rng(0)
        sets = []
        for i in range(4):
            image = rng.normal(size=(1024, 1024)).astype(np.float32)
            xy = rng.uniform(40, 984, size=(n_positive // 4 + 1, 2))
            config = PatchConfig(min_negative_distance_box=0.1, off_centre_ratio=0.0)
            sets.append(extract_patches({f"m{i}": image}, {f"m{i}": xy}, 36, config=config, seed=i))
        patches, source = concat_patch_sets(sets), "noise"
    positive = np.flatnonzero(patches.labels == 1)[:n_positive]
    negative = np.flatnonzero(patches.labels == 0)[:n_positive]
    patches = patches.subset(np.sort(np.r_[positive, negative]))
    extract_s = time.perf_counter() - start
    rows = []
    for arch in archs:
        start = time.perf_counter()
        model = train_model(patches, TrainConfig(arch=arch, epochs=epochs, patience=10**6, seed=0), progress=False)
        seconds = time.perf_counter() - start
        n_train = model.info["training"]["n_train"]
        rows.append({"arch": arch, "epochs": epochs, "train_s": seconds, "s_per_epoch": seconds / epochs,
                     "patches_per_s": n_train * epochs / seconds, "ratio_to_target": seconds / TRAIN_TARGET_S,
                     "val_accuracy": model.info["val_accuracy"]})
    return {"patches": patches.summary(), "source": source, "extract_s": extract_s, "device": str(default_device()),
            "rows": rows, "target_s": TRAIN_TARGET_S}


def train_table(f: dict) -> str:
    lines = [f"training: {f['patches']} ({f['source']}); extraction {f['extract_s']:.1f} s; device {f['device']}",
             f"{'network':<11} {'epochs':>6} {'train s':>8} {'s/epoch':>8} {'patches/s':>10} "
             f"{'vs ' + format(f['target_s'], 'g') + ' s':>9} {'val acc':>8}"]
    for r in f["rows"]:
        lines.append(f"{r['arch']:<11} {r['epochs']:>6} {r['train_s']:>8.1f} {r['s_per_epoch']:>8.2f} "
                     f"{r['patches_per_s']:>10.0f} {r['ratio_to_target']:>9.2f} {r['val_accuracy']:>8.3f}")
    return "\n".join(lines)


def simulate_figures(*, repeats: int = 3, size_px: int = 2048, n_particles: int = 100) -> dict:
    """Seconds per ``size_px``² micrograph with ``n_particles`` particles (median of ``repeats``) for four
    molecules; the first call per molecule also builds its cached 3-D model, timed apart."""
    from ..simulate import SimConfig, simulate_micrograph

    cases = {
        # KLH at its real size (182 px at 2.2 Å/px): 100 do not fit side by side, so they may overlap by half
        "klh-like 182 px": SimConfig(molecule="klh-like", size_px=size_px, n_particles=n_particles,
                                     min_distance_px=91, snr=0.05),
        "globular 73 px": SimConfig(molecule="globular", size_px=size_px, n_particles=n_particles, snr=0.05),
        "apoferritin-like 55 px, no contaminants": SimConfig(
            molecule="apoferritin-like", size_px=size_px, n_particles=n_particles, snr=0.05, contaminants=()),
        "bell 109 px, side views": SimConfig(molecule="bell", size_px=size_px, n_particles=n_particles,
                                             views="side", snr=0.05),
    }
    rows = []
    for name, config in cases.items():
        start = time.perf_counter()
        simulate_micrograph(replace(config, size_px=256, n_particles=1), rng=0)  # builds the cached model
        first = time.perf_counter() - start
        times = []
        for seed in range(repeats):
            start = time.perf_counter()
            simulate_micrograph(config, rng=seed)
            times.append(time.perf_counter() - start)
        median = float(np.median(times))
        rows.append({"case": name, "first_s": first, "median_s": median,
                     "ratio_to_target": median / SIMULATE_TARGET_S})
    return {"size_px": size_px, "n_particles": n_particles, "rows": rows, "target_s": SIMULATE_TARGET_S}


def simulate_table(f: dict) -> str:
    lines = [f"simulation: {f['size_px']}² px micrographs, {f['n_particles']} particles each",
             f"{'case':<56} {'first s':>8} {'median s':>9} {'ratio to ' + format(f['target_s'], 'g') + ' s':>13}"]
    for r in f["rows"]:
        lines.append(f"{r['case']:<56} {r['first_s']:8.2f} {r['median_s']:9.2f} {r['ratio_to_target']:13.2f}")
    return "\n".join(lines)
