"""Our detection metrics against nuscenes-devkit itself, on files in the nuScenes results
format that we export: the devkit must find the same mAP, AP per class and threshold,
and TP errors, to 1e-9."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from dynfusion_ros.core.grid import BevGrid
from dynfusion_ros.core.types import Box3D, Detection, ObjectClass
from dynfusion_ros.eval.detection_metrics import ScoredFrame, evaluate_detections
from dynfusion_ros.eval.nuscenes_format import NUSCENES_NAME, results_meta, write_nuscenes

CAR, PED, CYC = ObjectClass.CAR, ObjectClass.PEDESTRIAN, ObjectClass.CYCLIST
STAMP0 = 1_700_000_000_000_000_000


def box(
    cls: ObjectClass, x: float, y: float, score: float = 1.0, size=(4.5, 1.9, 1.6), yaw=0.0
) -> Detection:
    return Detection(cls, score, Box3D(x, y, 0.8, *size, yaw))


def hand_frames() -> list[ScoredFrame]:
    """Ties within and across frames, a match exactly at a threshold, boxes off the grid
    and beyond their class range, a frame without output, a frame without truth, a class
    without truth (cyclist) and one whose precision falls under 10 % (pedestrian)."""
    pedestrian = (0.6, 0.7, 1.7)
    frames = [
        (
            [
                box(CAR, 10.3, 0.2, 0.5, (4.2, 1.8, 1.5), 0.1),
                box(CAR, 20.5, 5.0, 0.5, yaw=-3.0),  # 0.5 m off: no match at 0.5 m
                box(CAR, 33.0, -8.0, 0.9, yaw=2.9),
                box(CAR, 80.0, 0.0, 0.95),  # off the grid
                box(CAR, 50.6, 0.0, 0.6),  # beyond 50 m
                *[box(PED, 5.0 + i, 20.0, 0.8, pedestrian) for i in range(12)],
                box(PED, 12.0, -3.0, 0.3, pedestrian),
            ],
            [
                box(CAR, 10.0, 0.0),
                box(CAR, 20.0, 5.0, yaw=3.1),
                box(CAR, 32.0, -8.5, yaw=-3.0),
                box(CAR, 50.6, 0.0),
                box(PED, 12.1, -3.2, size=pedestrian),
                box(PED, 41.0, 0.0, size=pedestrian),  # beyond 40 m
            ],
        ),
        ([], [box(CAR, 15.0, 2.0), box(PED, 8.0, 1.0, size=pedestrian)]),  # no output
        ([box(CAR, 25.0, 0.0, 0.5), box(PED, 6.0, 6.0, 0.5, pedestrian)], []),  # no truth
        (
            [box(CAR, 15.2, -4.1, 0.5, (4.8, 2.0, 1.7), 1.5), box(CAR, 44.0, 10.0, 0.7)],
            [box(CAR, 15.0, -4.0, yaw=1.6), box(CAR, 44.5, 10.5, yaw=0.2)],
        ),
    ]
    return [ScoredFrame(p, t, "hand", STAMP0 + i * 100_000_000) for i, (p, t) in enumerate(frames)]


def random_frames(seed: int, count: int = 60) -> list[ScoredFrame]:
    """Noisy detections of random scenes, scores rounded to 0.1 so that ties abound."""
    rng = np.random.default_rng(seed)
    frames = []
    for index in range(count):
        truth, found = [], []
        for _ in range(rng.integers(0, 9)):
            cls = ObjectClass(int(rng.integers(0, 3)))
            x, y = rng.uniform(-5, 60), rng.uniform(-30, 30)
            size = (rng.uniform(0.5, 5), rng.uniform(0.5, 2), rng.uniform(1, 2))
            truth.append(box(cls, x, y, size=size, yaw=rng.uniform(-4, 4)))
            for _ in range(rng.integers(0, 3)):
                noisy = (x + rng.normal(0, 1.0), y + rng.normal(0, 1.0))
                score = float(np.round(rng.uniform(0.2, 1.0), 1))
                scale = rng.uniform(0.7, 1.3, 3)
                found.append(box(cls, *noisy, score, tuple(scale * size), rng.uniform(-4, 4)))
        for _ in range(rng.integers(0, 5)):
            cls = ObjectClass(int(rng.integers(0, 3)))
            score = float(np.round(rng.uniform(0, 0.6), 1))
            found.append(box(cls, rng.uniform(0, 55), rng.uniform(-26, 26), score))
        frames.append(ScoredFrame(found, truth, "random", STAMP0 + index * 100_000_000))
    return frames


def export(frames: list[ScoredFrame], folder: Path, modalities=("lidar",)) -> tuple[Path, Path]:
    results, truth = folder / "results.json", folder / "truth.json"
    write_nuscenes(
        frames,
        grid=BevGrid(),
        meta=results_meta(modalities, "static:" + "_".join(modalities)),
        detections_path=results,
        truth_path=truth,
    )
    return results, truth


def scored_both_ways(frames: list[ScoredFrame], folder: Path, devkit_score) -> tuple[object, dict]:
    return evaluate_detections(frames), devkit_score.devkit_scores(*export(frames, folder))


def assert_same(ours, theirs: dict) -> None:
    assert theirs["removed_by_range_filter"] == 0  # we export only the boxes that count
    assert {NUSCENES_NAME[c]: ours.truth_count[c.label] for c in ObjectClass} == theirs[
        "truth_count"
    ]
    for object_class in ObjectClass:
        label, name = object_class.label, NUSCENES_NAME[object_class]
        if ours.truth_count[label] == 0:
            assert name not in theirs["ap"]
            assert all(math.isnan(v) for v in ours.ap[label].values())
            continue
        for threshold, value in ours.ap[label].items():
            assert value == pytest.approx(theirs["ap"][name][threshold], abs=1e-9, rel=0)
        for error, value in ours.tp_errors[label].items():
            assert value == pytest.approx(theirs["tp_errors"][name][error], abs=1e-9, rel=0)
    assert ours.map == pytest.approx(theirs["map"], abs=1e-9, rel=0)
    assert ours.mean_tp_errors == pytest.approx(theirs["mean_tp_errors"], abs=1e-9, rel=0)
    assert ours.nds3 == pytest.approx(theirs["nds3"], abs=1e-9, rel=0)


def test_hand_fixture_scores_as_the_devkit_scores_it(tmp_path, devkit_score):
    ours, theirs = scored_both_ways(hand_frames(), tmp_path, devkit_score)
    assert_same(ours, theirs)
    # the fixture exercises what it claims: clipped precision, a partial match, no cyclist
    assert ours.ap_per_class["pedestrian"] == 0.0  # precision 1/14 at its only hit
    assert 0.0 < ours.ap["car"][0.5] < ours.ap["car"][1.0]
    assert ours.classes_without_truth == ["cyclist"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_scenes_with_ties_score_as_the_devkit_scores_them(tmp_path, seed, devkit_score):
    ours, theirs = scored_both_ways(random_frames(seed), tmp_path, devkit_score)
    assert_same(ours, theirs)
    assert 0.05 < ours.map < 0.95  # neither trivial end


def test_exported_files_are_the_nuscenes_results_format(tmp_path):
    from nuscenes.eval.detection.data_classes import DetectionBox

    frames = [*hand_frames(), ScoredFrame([box(CYC, 9.0, 1.0, 0.7, (1.8, 0.6, 1.7))], [])]
    frames[-1].stamp_ns = STAMP0 + 9 * 100_000_000
    results, truth = (json.loads(path.read_text()) for path in export(frames, tmp_path))
    assert {k: results["meta"][k] for k in ("use_camera", "use_lidar", "use_radar")} == {
        "use_camera": False,
        "use_lidar": True,
        "use_radar": False,
    }
    assert not results["meta"]["use_map"] and not results["meta"]["use_external"]
    tokens = [str(f.stamp_ns) for f in frames]
    assert list(results["results"]) == tokens == list(truth["results"])
    assert results["results"][tokens[1]] == []  # the frame without output is there
    assert truth["results"][tokens[2]] == []
    first = results["results"][tokens[0]][0]
    assert set(first) == set(DetectionBox().serialize())
    assert first["size"] == [1.8, 4.2, 1.5]  # width, length, height
    assert first["rotation"] == pytest.approx([math.cos(0.05), 0, 0, math.sin(0.05)])
    assert first["ego_translation"] == first["translation"] == [10.3, 0.2, 0.8]
    assert results["results"][tokens[-1]][0]["detection_name"] == "bicycle"
    assert {b["detection_score"] for boxes in truth["results"].values() for b in boxes} == {-1.0}
    exported = sum(len(boxes) for boxes in results["results"].values())
    assert exported == sum(len(f.predictions) for f in frames) - 2  # off grid, beyond range


def test_frames_that_cannot_be_named_are_refused(tmp_path):
    frames = hand_frames()[:2]
    frames[1].stamp_ns = frames[0].stamp_ns
    with pytest.raises(ValueError, match="are both"):
        write_nuscenes(frames, grid=BevGrid(), meta={}, detections_path=tmp_path / "r.json")
    frames[1].stamp_ns = None
    with pytest.raises(ValueError, match="has no stamp"):
        write_nuscenes(frames, grid=BevGrid(), meta={}, truth_path=tmp_path / "g.json")
    assert not (tmp_path / "r.json").exists()


def test_devkit_score_command_prints_the_figures(tmp_path, capsys, devkit_score):
    frames = hand_frames()
    results, truth = export(frames, tmp_path)
    assert devkit_score.main([str(results), str(truth), "--json", str(tmp_path / "s.json")]) == 0
    printed = capsys.readouterr().out
    assert f"mAP {100 * evaluate_detections(frames).map:.4f}" in printed
    assert json.loads((tmp_path / "s.json").read_text())["samples"] == len(frames)
    assert devkit_score.main([str(tmp_path / "missing.json"), str(truth)]) == 2


def test_frames_of_several_drives_are_named_by_drive_and_stamp(tmp_path, devkit_score):
    first, second = hand_frames(), random_frames(0, count=4)  # one clock: same stamps
    for frame in first:
        frame.drive = "drives/a"
    for frame in second:
        frame.drive = "drives/b"
    frames = first + second
    results, _ = export(frames, tmp_path)
    tokens = list(json.loads(results.read_text())["results"])
    assert tokens[0] == f"drives/a/{STAMP0}" and tokens[len(first)] == f"drives/b/{STAMP0}"
    assert len(set(tokens)) == len(frames)
    ours, theirs = scored_both_ways(frames, tmp_path, devkit_score)
    assert_same(ours, theirs)
