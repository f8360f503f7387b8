"""Semi-automated picking, end to end: train on labelled micrographs, pick new ones, evaluate.

    python examples/semi_automated.py [--pack ribosome80s-10028] [--out demo-output]

1. Train the particle CNN on the pack's ``train`` split and choose the F2-optimal score threshold on
   its ``valid`` split (never trained on).
2. Pick the ``test`` split: ``picks/`` holds the picks at the model's threshold, one RELION STAR file per
   micrograph with RELION's list of them (what extraction takes), and ``candidates/`` every candidate
   with its score, for the curves (and to re-threshold later without picking again).
3. Evaluate every candidate against the test split's reference coordinates at 0.25 × particle diameter,
   at the model's threshold, write the precision-recall and F2-vs-threshold plots, and the HTML report
   (``report.html``: the picks drawn on the micrographs, true and false positives and misses).

It uses the real annotated packs in ``../shared/realdata`` when they are there. Without them (a fresh
clone) it simulates a small data set first, says so, and runs from the project alone, downloading nothing.
"""

from __future__ import annotations

import json
import sys
import time

from example_data import example_parser, find_dataset

from deeppick.cli import user_errors


def main(argv=None) -> int:
    parser = example_parser(__doc__)
    parser.add_argument("--epochs", type=int, default=None, help="most training epochs [default: TrainConfig's]")
    parser.add_argument("--max-micrographs", type=int, default=None, help="train on at most N micrographs")
    args = parser.parse_args(argv)

    from deeppick.batch import pick_micrographs
    from deeppick.datasets import load_dataset
    from deeppick.io import read_picks
    from deeppick.metrics import evaluate_picks
    from deeppick.model import load_model, save_model
    from deeppick.pipeline import PickConfig
    from deeppick.report import build_report, write_html_report, write_report
    from deeppick.train import TrainConfig
    from deeppick.tuning import fit_dataset, recipe_summary

    dataset = load_dataset(find_dataset(args.pack, args.out))
    out = args.out / dataset.name
    model_path = out / "model.pt"
    start = time.perf_counter()
    retrained = not model_path.is_file()  # picks written by an earlier model are then stale
    if not retrained:
        print(f"1. reusing the model trained before: {model_path} (delete it to retrain)")
        model = load_model(model_path)
    else:
        print(f"1. training on the train split of {dataset.name} (particle diameter {dataset.default_box_px()} px; "
              "boxes of 1.0× and 1.3× it are tried)")
        train_config = TrainConfig() if args.epochs is None else TrainConfig(epochs=args.epochs)
        model = fit_dataset(dataset, train_config=train_config, max_micrographs=args.max_micrographs,
                            progress=sys.stderr.isatty())
        save_model(model, model_path)
        info = model.info
        print(f"   kept {recipe_summary(model)}")
        tried = info["dataset"]
        print("   held-out AP per box " + ", ".join(f"{b} px {ap:.3f}" for b, ap in tried["box_px_tried"].items())
              + "; per low-pass σ " + ", ".join(f"{s} {ap:.3f}" for s, ap in tried["lowpass_sigma_tried"].items())
              + "; per number of off-centre views " + ", ".join(f"{n} {ap:.3f}" for n, ap
                                                                  in tried["off_centre_ratio_tried"].items()))
        print(f"   held-out patch accuracy {info['val_accuracy']:.3f}; F2-optimal threshold {model.threshold:.3f} "
              f"chosen on {', '.join(info['threshold']['micrographs'])}; {time.perf_counter() - start:.0f} s")

    test = dataset.paths("test")
    print(f"2. picking the {len(test)} test micrographs")
    # The folders are the example's own: files an earlier model wrote there are picked again
    # (replace_others), files of this model are kept, so an interrupted run resumes.
    picked = pick_micrographs(model, test, out / "picks", overwrite=retrained, replace_others=True)
    print("   " + picked.summary(out / "picks", model.threshold, keep_all=False))
    pick_micrographs(model, test, out / "candidates", config=PickConfig(keep_all=True), overwrite=retrained,
                     replace_others=True)
    print(f"   and every candidate, with its score, for the curves: {out / 'candidates'}")

    print("3. evaluating every candidate against the test split's references")
    ev = evaluate_picks(read_picks(out / "candidates"), dataset.picks, model.box_px,
                        match_px=0.25 * dataset.diameter_px,
                        threshold=model.threshold, micrographs=[p.stem for p in test])
    written = write_report(ev, out / "report")
    print(f"   at the model's threshold {model.threshold:.3f}: precision {ev.precision:.3f}, recall {ev.recall:.3f}, "
          f"F2 {ev.f2:.3f}; AP {ev.ap:.3f}; centre error {ev.centre_error_box:.3f} box")
    print("   plots and figures: " + ", ".join(str(p) for p in written))
    report = build_report(out / "candidates", test, references=dataset.picks[dataset.picks["micrograph"].isin(
        [p.stem for p in test])], model=model, match_px=0.25 * dataset.diameter_px,
                          title=f"deeppick on the test split of {dataset.name}")
    print(f"   the report, picks drawn on the micrographs: {write_html_report(report, out / 'report.html')}")
    summary = {"dataset": dataset.name, "simulated": dataset.meta.get("source") == "deeppick simulate",
               "model": str(model_path), **ev.to_dict()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"done in {time.perf_counter() - start:.0f} s. For RELION's extraction: {out / 'picks'} "
          f"(input coordinates {out / 'picks' / 'coordinate_files.star'})")
    return 0


if __name__ == "__main__":
    sys.exit(user_errors(main)())  # deeppick's user errors: one line and exit 2, as the commands do
