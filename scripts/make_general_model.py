"""Rebuild the general model shipped in ``deeppick/pretrained/general.pt``.

    python scripts/make_general_model.py [--realdata ../shared/realdata] [--work /tmp/deeppick-general]

Recipe: :func:`deeppick.pretrain.pretrain` on a balanced mix of the train splits of the three annotated
real packs (ribosome80s-10028, betagal-10017, cryoppp-10059; all their train micrographs unless
``--max-train`` says fewer) and the six simulated molecules of :func:`deeppick.simulate.simulate_zoo`
(written under ``--work``, never into the repository, with enough micrographs for each molecule's share
of ``--positives``); the F2 threshold is chosen on the pooled held-out micrographs of all nine
sources. The recipe, the sources and their counts are stored in the model's ``info`` and in
``deeppick/pretrained/general.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT.parent / "shared" / "realdata"
PACKS = ("ribosome80s-10028", "betagal-10017", "cryoppp-10059")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--realdata", type=Path, default=REALDATA, help="folder of the annotated real packs")
    parser.add_argument("--work", type=Path, default=Path("/tmp/deeppick-general"), help="simulated zoo goes here")
    parser.add_argument("--out", type=Path, default=ROOT / "deeppick" / "pretrained" / "general.pt")
    parser.add_argument("--positives", type=int, default=10_000, help="particles in the mix (DeepPicker: 10,000)")
    parser.add_argument("--epochs", type=int, default=None, help="most epochs [default: PRETRAIN_TRAINING's, 30]")
    parser.add_argument("--max-train", type=int, default=None,
                        help="train micrographs per source [default: all; each source's quota spreads over them]")
    parser.add_argument("--max-valid", type=int, default=1, help="threshold micrographs per source")
    parser.add_argument("--zoo-micrographs", type=int, default=None,
                        help="micrographs per simulated molecule [default: enough for each molecule's quota]")
    parser.add_argument("--fast", action="store_true", help="choose the threshold scanning without rotations")
    parser.add_argument("--zoo-density", type=float, default=None,
                        help="area fraction the zoo's particles cover [default: deeppick.simulate.ZOO_DENSITY]")
    parser.add_argument("--arch", default="deeppicker", choices=["deeppicker", "deepem", "wide"],
                        help="the network [deeppicker]")
    parser.add_argument("--source-heads", action="store_true", help="HydraPicker: a head per source while training")
    parser.add_argument("--box-factors", nargs="+", type=float, default=None,
                        help="pretraining boxes × each source's diameter [default: PretrainConfig's]")
    parser.add_argument("--junk-share", type=float, default=None, help="PretrainConfig.junk_share")
    parser.add_argument("--empty-share", type=float, default=None,
                        help="PretrainConfig.empty_share: background from particle-free simulated micrographs")
    parser.add_argument("--zoo-ice-gradient", type=float, default=None,
                        help="SimConfig.ice_gradient of the zoo [default: deeppick.simulate.ZOO_ICE_GRADIENT]")
    parser.add_argument("--zoo-detector-blur", type=float, default=None,
                        help="SimConfig.detector_blur_px of the zoo [default: deeppick.simulate.ZOO_DETECTOR_BLUR_PX]")
    parser.add_argument("--zoo-defocus-spread", type=float, default=None,
                        help="SimConfig.defocus_spread_um of the zoo "
                             "[default: deeppick.simulate.ZOO_DEFOCUS_SPREAD_UM]")
    args = parser.parse_args(argv)

    from deeppick.io import atomic_write_text
    from deeppick.model import save_model
    from deeppick.pipeline import PickConfig
    from deeppick.pretrain import PRETRAIN_TRAINING, PretrainConfig, positives_per_source, pretrain
    from deeppick.simulate import (ZOO_DEFOCUS_SPREAD_UM, ZOO_DENSITY, ZOO_DETECTOR_BLUR_PX, ZOO_DIAMETERS_PX,
                                   ZOO_ICE_GRADIENT, ZOO_SNR, simulate_empty_zoo, simulate_zoo, simulate_zoo_for_quota)
    from deeppick.scan import ScanConfig

    missing = [p for p in PACKS if not (args.realdata / p / "dataset.json").is_file()]
    if missing:
        print(f"needs the real packs {', '.join(missing)} in {args.realdata}")
        return 1
    start = time.perf_counter()
    density = ZOO_DENSITY if args.zoo_density is None else args.zoo_density
    ice = ZOO_ICE_GRADIENT if args.zoo_ice_gradient is None else args.zoo_ice_gradient
    blur = ZOO_DETECTOR_BLUR_PX if args.zoo_detector_blur is None else args.zoo_detector_blur
    spread = ZOO_DEFOCUS_SPREAD_UM if args.zoo_defocus_spread is None else args.zoo_defocus_spread
    looks = {"density": density, "ice_gradient": ice, "detector_blur_px": blur, "defocus_spread_um": spread}
    if args.zoo_micrographs:
        zoo = simulate_zoo(args.work / "zoo", n_micrographs=args.zoo_micrographs, **looks)
    else:
        quota = positives_per_source(args.positives, len(PACKS) + len(ZOO_DIAMETERS_PX))
        zoo = simulate_zoo_for_quota(args.work, quota, **looks)
    config = PretrainConfig(total_positives=args.positives, max_train_micrographs=args.max_train,
                            max_valid_micrographs=args.max_valid)
    config = replace(config, **{k: v for k, v in (("box_factors", tuple(args.box_factors or ()) or None),
                                                  ("junk_share", args.junk_share),
                                                  ("empty_share", args.empty_share)) if v is not None})
    background = [simulate_empty_zoo(args.work / "empty", n_micrographs=8)] if config.empty_share else []
    train_config = replace(PRETRAIN_TRAINING, arch=args.arch, source_heads=args.source_heads,
                           **({} if args.epochs is None else {"epochs": args.epochs}))
    pick_config = PickConfig(scan=ScanConfig(rotations=False)) if args.fast else PickConfig()
    model = pretrain([*(args.realdata / p for p in PACKS), *zoo], config=config, train_config=train_config,
                     pick_config=pick_config, background=background,
                     progress=sys.stderr.isatty())
    model.info["name"] = "deeppick general model"
    model.info["recipe"] = {
        "script": "scripts/make_general_model.py",
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                      if k not in ("realdata", "work", "out")},
        "real_packs": {p: "train split" + (f", first {args.max_train} micrographs" if args.max_train else "")
                       for p in PACKS},
        "pretrain_config": config.to_dict(),
        "simulated_zoo": f"deeppick.simulate.simulate_zoo: 6 molecules, 1024 px, SNR {ZOO_SNR:g}, "
                         f"density {density:g}, ice gradient {ice:g}, detector blur {blur:g} px, defocus spread "
                         f"{spread:g} µm, diameters "
                         "deeppick.simulate.ZOO_DIAMETERS_PX; micrographs per molecule"
                         + ("" if args.zoo_micrographs else " (enough for its quota)") + ": "
                         + ", ".join(f"{p.name} {len(list((p / 'micrographs').iterdir()))}" for p in zoo),
        "threshold_scan": "no rotations" if args.fast else "default",
    }
    model.info.pop("history", None)  # keep the shipped file small and its metadata readable
    save_model(model, args.out)
    summary = {"file": args.out.name, "size_bytes": args.out.stat().st_size, "threshold": model.threshold,
               "box_px": model.box_px, "val_accuracy": model.info.get("val_accuracy"),
               "recipe": model.info["recipe"],
               "sources": [{k: s[k] for k in ("dataset", "boxes_px", "n_positive", "n_negative", "n_junk", "simulated")
                            if k in s} | {"particle_free": s.get("particle_free", False)}
                           for s in model.info["pretrain"]["sources"]],
               "threshold_sources": model.info["threshold"]["sources"]}
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
