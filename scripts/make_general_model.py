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
from pathlib import Path

from deeppick.benchmark import PACKS, add_general_recipe_arguments, default_realdata

ROOT = Path(__file__).resolve().parents[1]
REALDATA = default_realdata()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--realdata", type=Path, default=REALDATA, help="folder of the annotated real packs")
    parser.add_argument("--work", type=Path, default=Path("/tmp/deeppick-general"), help="simulated zoo goes here")
    parser.add_argument("--out", type=Path, default=ROOT / "deeppick" / "pretrained" / "general.pt")
    parser.add_argument("--fast", action="store_true", help="choose the threshold scanning without rotations")
    recipe_changes = add_general_recipe_arguments(parser)
    args = parser.parse_args(argv)

    from deeppick.io import atomic_write_text
    from deeppick.model import save_model
    from deeppick.pretrain import GeneralRecipe, pretrain_general
    from deeppick.simulate import ZOO_SNR

    missing = [p for p in PACKS if not (args.realdata / p / "dataset.json").is_file()]
    if missing:
        print(f"needs the real packs {', '.join(missing)} in {args.realdata}")
        return 1
    start = time.perf_counter()
    recipe = GeneralRecipe(**recipe_changes(args), **({"rotations": False} if args.fast else {}))
    model, zoo = pretrain_general([args.realdata / p for p in PACKS], args.work, recipe,
                                  progress=sys.stderr.isatty())
    config, looks = recipe.pretrain_config(), recipe.zoo_settings()
    model.info["name"] = "deeppick general model"
    model.info["recipe"] = {
        "script": "scripts/make_general_model.py",
        "general_recipe": recipe.resolved(),
        "real_packs": {p: "train split" + (f", first {recipe.max_train} micrographs" if recipe.max_train else "")
                       for p in PACKS},
        "pretrain_config": config.to_dict(),
        "simulated_zoo": f"deeppick.simulate.simulate_zoo: {len(zoo)} molecules, 1024 px, SNR {ZOO_SNR:g}, "
                         f"density {looks['density']:g}, ice gradient {looks['ice_gradient']:g}, detector blur "
                         f"{looks['detector_blur_px']:g} px, defocus spread {looks['defocus_spread_um']:g} µm, "
                         "diameters " + ", ".join(f"{m} {d:g} px" for m, d in looks["diameters_px"].items())
                         + "; micrographs per molecule"
                         + ("" if recipe.zoo_micrographs else " (enough for its quota)") + ": "
                         + ", ".join(f"{p.name} {len(list((p / 'micrographs').iterdir()))}" for p in zoo),
        "threshold_scan": "default" if recipe.rotations else "no rotations",
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
