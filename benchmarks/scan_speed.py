"""Scanner speed (issue 5), all figures measured in one run.

1. Pick one 4096 × 4096 micrograph, box 160 px, step 4 px, four rotations: ``prepare_micrograph`` +
   ``scan_micrograph`` wall time (median of ``--repeats``) and peak resident memory (targets ≤ 5 s on
   2 cores, ≤ 2 GB).
2. Achieved GFLOP/s of that scan against a float32 matrix-multiply peak measured here (target ≥ 40 %).
3. Dense vs naive (per-patch) scanner on the same positions (target ≥ 100×).

Usage: ``python benchmarks/scan_speed.py [--arch deeppicker] [--threads 2] [--naive-px 96] [--device cuda]``.
With ``--device cuda`` every figure is the GPU's (its matmul peak too) and micrographs per second are printed.
Timings on a shared machine are noisy; the ratios (2, 3) are taken in the same run, so they are fairer.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see deeppick/__init__.py

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from deeppick.io import read_micrograph  # noqa: E402
from deeppick.model import PickerModel, build_net  # noqa: E402
from deeppick.pipeline import PickConfig, pick_micrograph  # noqa: E402
from deeppick.pretrain import load_general_model, with_box  # noqa: E402
from deeppick.preprocess import PreparedMicrograph, prepare_micrograph  # noqa: E402
from deeppick.scan import ScanConfig, _plan, naive_scan, scan_micrograph  # noqa: E402


REAL_4096 = (Path(__file__).resolve().parents[2] / "shared" / "realdata" / "betagal-10017" / "micrographs"
             / "Falcon_2012_06_12-16_44_07_0.jpg")


def matmul_peak_gflops(n: int = 2048, repeats: int = 5, device: str = "cpu") -> float:
    """Best-of-``repeats`` float32 n×n matrix multiply rate in GFLOP/s on ``device``."""
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
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def flops_per_position(model: PickerModel, step: int) -> float:
    """FLOPs the dense method needs per scan position (per rotation), halos excluded.

    A conv before the last pool runs on the grid left by the strided pools before it, i.e.
    ``(step / 2^strided)²`` times per position; conv layers after the last pool (the FC layers) once.
    """
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="deeppicker", choices=["deeppicker", "deepem"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=4096, help="micrograph side, px")
    parser.add_argument("--box", type=float, default=160.0, help="box, micrograph px")
    parser.add_argument("--step", type=float, default=4.0, help="scan step, micrograph px")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of the 4096² pick (median reported)")
    parser.add_argument("--naive-px", type=int, default=96, help="model-frame image side for the naive comparison")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU")
    parser.add_argument("--micrograph", type=Path, default=REAL_4096 if REAL_4096.is_file() else None,
                        help="4096² micrograph for the full pick [default: a betagal-10017 test micrograph "
                             "when ../shared/realdata is there]")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.arch == "deeppicker":  # trained weights, so the full pick post-processes a realistic map
        model = with_box(load_general_model(), args.box)
    else:
        model = PickerModel(net=build_net(args.arch).eval(), arch=args.arch, box_px=args.box)
    model.net.to(args.device)
    config = ScanConfig(step_px=args.step, rotations=True)
    rss_start = peak_rss_gb()

    # 1. one micrograph, end to end (first: the process peak RSS is then this pick's)
    micrograph = np.random.default_rng(0).normal(size=(args.size, args.size)).astype(np.float32)
    warm = prepare_micrograph(micrograph[:1024, :1024], args.box, model.preprocess)
    scan_micrograph(model, warm, config)  # one-off kernel set-up, not per micrograph
    runs = []  # (prepare s, scan s, CPU s) per repeat; the median repeat is reported (shared machine)
    for _ in range(args.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        prepared = prepare_micrograph(micrograph, args.box, model.preprocess)
        prep_s = time.perf_counter() - start
        score_map = scan_micrograph(model, prepared, config)
        runs.append((prep_s, time.perf_counter() - start - prep_s, time.process_time() - cpu_start))
    runs.sort(key=lambda run: run[0] + run[1])
    prep_s, scan_s, cpu_s = runs[len(runs) // 2]  # CPU s = core-seconds: on a shared machine wall >> cpu / threads
    total_s = prep_s + scan_s
    rss_gb = peak_rss_gb()
    step = score_map.model_step_px
    positions = score_map.scores.size * 4

    # 1b. the whole pick: read, prepare, scan, clean, peaks, pixel filter (real micrograph when present)
    start = time.perf_counter()
    image = read_micrograph(args.micrograph) if args.micrograph else micrograph
    picks = pick_micrograph(model, image, name="benchmark", config=PickConfig(scan=config))
    pick_s = time.perf_counter() - start

    # 2. against the matmul ceiling
    peak = matmul_peak_gflops(device=args.device)
    gflops = positions * flops_per_position(model, step) / scan_s / 1e9

    # 3. dense vs naive on the same positions
    image = np.random.default_rng(1).normal(size=(args.naive_px, args.naive_px)).astype(np.float32)
    small = PreparedMicrograph(image, prepared.scale_x, prepared.scale_y, (args.naive_px, args.naive_px))
    scan_micrograph(model, small, config)
    start = time.perf_counter()
    fast = scan_micrograph(model, small, config)
    fast_s = time.perf_counter() - start
    start = time.perf_counter()
    naive = naive_scan(model, small, config)
    naive_s = time.perf_counter() - start
    max_diff = float(np.abs(fast.scores - naive.scores).max())

    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu, threads={args.threads}"
    print(f"deeppick scan benchmark: arch={args.arch}, {device}, torch {torch.__version__}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load average {os.getloadavg()[0]:.1f}")
    print(f"micrograph {args.size}² px, box {args.box:g} px → model image {prepared.image.shape[0]}×"
          f"{prepared.image.shape[1]}, step {args.step:g} px → {step} model px, grid {score_map.scores.shape}, "
          f"4 rotations: {positions / 1e6:.2f} M patch scores")
    print(f"timings: median of {args.repeats} repeats (all prepare + scan, s: "
          f"{', '.join(f'{p + c:.2f}' for p, c, _ in runs)})")
    print(f"{'figure':<44}{'value':>12}  target")
    print(f"{'prepare_micrograph (s)':<44}{prep_s:>12.2f}")
    print(f"{'scan_micrograph (s)':<44}{scan_s:>12.2f}")
    print(f"{'pick one micrograph: prepare + scan (s)':<44}{total_s:>12.2f}  ≤ 5")
    print(f"{'  CPU time, prepare + scan, all threads (s)':<44}{cpu_s:>12.2f}  (/ threads = wall on idle cores)")
    source = args.micrograph.name if args.micrograph else "noise"
    print(f"{'whole pick incl. reading, post-processing (s)':<44}{pick_s:>12.2f}  ≤ 5  "
          f"({source}: {len(picks)} picks)")
    print(f"{'peak resident memory (GB)':<44}{rss_gb:>12.2f}  ≤ 2  (process at start: {rss_start:.2f})")
    print(f"{'dense FLOPs per position per rotation (k)':<44}{flops_per_position(model, step) / 1e3:>12.1f}")
    print(f"{'scan GFLOP/s':<44}{gflops:>12.1f}")
    print(f"{'float32 matmul peak GFLOP/s (this run)':<44}{peak:>12.1f}")
    print(f"{'scan / matmul peak':<44}{gflops / peak:>12.1%}  ≥ 40 %")
    print(f"{'naive: {} positions × 4 rotations (s)'.format(naive.scores.size):<44}{naive_s:>12.2f}")
    print(f"{'dense: same positions (s)':<44}{fast_s:>12.3f}")
    print(f"{'dense / naive speed-up':<44}{naive_s / fast_s:>12.0f}×  ≥ 100×")
    print(f"{'max |dense − naive|':<44}{max_diff:>12.1e}  ≤ 1e-5")
    print(f"{'dense positions/s at 4096² (M)':<44}{positions / scan_s / 1e6:>12.2f}")
    print(f"{'micrographs per second (whole pick)':<44}{1 / pick_s:>12.2f}  (GPU: ≥ 20)")


if __name__ == "__main__":
    main()
