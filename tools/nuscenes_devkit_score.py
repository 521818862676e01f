"""Score exported results with nuscenes-devkit alone: the independent check of our metrics.

    python tools/nuscenes_devkit_score.py RESULTS.json GROUND_TRUTH.json [--json OUT]
        [--against EVALUATION.json]

Both files come from ``dynfusion evaluate --detections ... --ground-truth ...``;
``--against`` takes that run's ``--json`` and prints how far our figures are from the
devkit's. This
uses the devkit's loaders, its detection config (``detection_cvpr_2019``), its range
filter rule and ``accumulate`` / ``calc_ap`` / ``calc_tp``, for the classes present in
our exports. What it cannot use: the devkit's ``DetectionEval``, which needs a nuScenes
database for its sample list and bike-rack filter; the steps it runs are DetectionEval's
own, in its order. Means are over the classes with ground truth (as ours are); the
devkit's own mean would count the seven nuScenes classes we do not detect as AP 0.

nuscenes-devkit is a test-time dependency (``make env`` installs it); the package itself
never imports it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

OUR_CLASSES = ("car", "pedestrian", "bicycle")
OUR_LABEL = {"car": "car", "pedestrian": "pedestrian", "bicycle": "cyclist"}
TP_NAMES = {"trans_err": "mate_m", "scale_err": "mase", "orient_err": "maoe_rad"}


def _range_filter(boxes, class_range: dict[str, float]) -> int:
    """The devkit's distance filter (filter_eval_boxes without its database steps);
    returns how many boxes it removed."""
    removed = 0
    for token in boxes.sample_tokens:
        kept = [b for b in boxes[token] if b.ego_dist < class_range[b.detection_name]]
        removed += len(boxes[token]) - len(kept)
        boxes.boxes[token] = kept
    return removed


def devkit_scores(results_path: Path, truth_path: Path) -> dict:
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.common.loaders import load_prediction
    from nuscenes.eval.detection.algo import accumulate, calc_ap, calc_tp
    from nuscenes.eval.detection.data_classes import DetectionBox

    config = config_factory("detection_cvpr_2019")
    predictions, _ = load_prediction(str(results_path), config.max_boxes_per_sample, DetectionBox)
    truth, _ = load_prediction(str(truth_path), 10**9, DetectionBox)
    if set(predictions.sample_tokens) != set(truth.sample_tokens):
        raise ValueError("the two files name different samples (the devkit requires the same)")
    removed = _range_filter(predictions, config.class_range) + _range_filter(
        truth, config.class_range
    )
    ap, tp_errors, counts = {}, {}, {}
    for name in OUR_CLASSES:
        counts[name] = sum(b.detection_name == name for b in truth.all)
        if counts[name] == 0:
            continue
        ap[name] = {}
        for threshold in config.dist_ths:
            curve = accumulate(truth, predictions, name, config.dist_fcn_callable, threshold)
            ap[name][threshold] = calc_ap(curve, config.min_recall, config.min_precision)
        curve = accumulate(truth, predictions, name, config.dist_fcn_callable, config.dist_th_tp)
        tp_errors[name] = {
            ours: calc_tp(curve, config.min_recall, theirs) for theirs, ours in TP_NAMES.items()
        }
    mean_tp = {
        ours: float(np.mean([errors[ours] for errors in tp_errors.values()]))
        for ours in TP_NAMES.values()
    }
    mean_ap = float(np.mean([np.mean(list(by_threshold.values())) for by_threshold in ap.values()]))
    scores = [max(0.0, 1.0 - error) for error in mean_tp.values()]
    weight = config.mean_ap_weight
    return {
        "map": mean_ap,
        "ap": ap,
        "tp_errors": tp_errors,
        "mean_tp_errors": mean_tp,
        "nds3": (weight * mean_ap + sum(scores)) / (weight + len(scores)),
        "truth_count": counts,
        "samples": len(truth.sample_tokens),
        "removed_by_range_filter": removed,
    }


def differences(scores: dict, evaluation: dict) -> dict[str, float]:
    """|ours - devkit's| per figure of a ``dynfusion evaluate --json`` file (mAP and AP
    in points, errors in their units)."""
    found = {"map (points)": 100 * abs(evaluation["map"] - scores["map"])}
    for name, by_threshold in scores["ap"].items():
        label = OUR_LABEL[name]
        devkit_ap = float(np.mean(list(by_threshold.values())))
        found[f"AP {label} (points)"] = 100 * abs(evaluation["ap_per_class"][label] - devkit_ap)
        for error, value in scores["tp_errors"][name].items():
            found[f"{error} {label}"] = abs(evaluation["tp_errors_per_class"][label][error] - value)
    for error, value in scores["mean_tp_errors"].items():
        found[error] = abs(evaluation[error] - value)
    found["nds3 (points)"] = 100 * abs(evaluation["nds3"] - scores["nds3"])
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="detections, nuScenes results format")
    parser.add_argument("ground_truth", type=Path, help="ground truth in the same format")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--against", type=Path, help="a `dynfusion evaluate --json` file to compare with"
    )
    args = parser.parse_args(argv)
    try:
        scores = devkit_scores(args.results, args.ground_truth)
        found = differences(scores, json.loads(args.against.read_text())) if args.against else {}
    except (OSError, ValueError, KeyError, AssertionError) as error:
        print(f"nuscenes_devkit_score: error: {error}", file=sys.stderr)
        return 2
    print(
        f"samples {scores['samples']}, boxes removed by the range filter: "
        f"{scores['removed_by_range_filter']}"
    )
    print(f"mAP {100 * scores['map']:.4f}   NDS-3 {100 * scores['nds3']:.4f}")
    for name, by_threshold in scores["ap"].items():
        aps = "  ".join(f"@{t:g} m {100 * v:.4f}" for t, v in by_threshold.items())
        errors = "  ".join(f"{k} {v:.6f}" for k, v in scores["tp_errors"][name].items())
        print(
            f"  {name:<10} AP {100 * np.mean(list(by_threshold.values())):.4f}  ({aps})  {errors}"
        )
    print(
        "  mean TP errors: "
        + "  ".join(f"{k} {v:.6f}" for k, v in scores["mean_tp_errors"].items())
    )
    if found:
        worst = max(found, key=found.get)
        print(f"against {args.against}: largest difference {found[worst]:.2e} ({worst})")
    if args.json is not None:
        args.json.write_text(json.dumps(scores, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
