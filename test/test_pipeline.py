"""DynamicFusionPipeline end to end on a short simulated drive with the shipped detector;
the recorded replay the benchmark uses; `dynfusion evaluate` and its errors."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
from test_energy import profile

from dynfusion_ros.cli import main
from dynfusion_ros.core.context import FEATURE_NAMES
from dynfusion_ros.core.detector.levels import (
    FULL_CONFIGURATION,
    TRACKS_CONFIGURATION,
    Configuration,
)
from dynfusion_ros.core.detector.runner import DetectorRunner
from dynfusion_ros.core.gate import MAX_HELD_FRAMES, SINGLE_STEMS, Gate, GateModel
from dynfusion_ros.core.odometry.estimator import OdometryEstimator
from dynfusion_ros.core.pipeline import DynamicFusionPipeline
from dynfusion_ros.core.quality import frame_quality
from dynfusion_ros.core.tracking import ObjectTracks
from dynfusion_ros.eval.evaluation import evaluate_bags, recorded_pipeline, replay_record
from dynfusion_ros.eval.records import DetectionRecord, RecordedRunner, record_configurations
from dynfusion_ros.resources import default_model_path
from dynfusion_ros.ros.bag_frames import read_frames

PROFILE = profile(
    odometry_j={"radar": 0.01, "camera": 0.06, "lidar": 0.12}, overhead_j={"imu_filter": 0.01}
)


@pytest.fixture(scope="module")
def runner():
    return DetectorRunner.load(default_model_path("detector.json"))


@pytest.fixture(scope="module")
def record(runner, clear_bag, tmp_path_factory):
    path = tmp_path_factory.mktemp("record") / "record.npz"
    record_configurations(runner, [clear_bag], progress=False).save(path)
    return DetectionRecord.load(path)


C = Configuration.parse
FULL_J = PROFILE.run_energy_j([FULL_CONFIGURATION])


def pipeline(runner, **options) -> DynamicFusionPipeline:
    return DynamicFusionPipeline(runner, Gate(PROFILE, hysteresis_frames=1), **options)


def test_dynamic_stays_within_budget_and_reports_what_ran(runner, clear_frames):
    """Within every frame's budget (window 1: no price makes tracks of lidar+radar, at
    0.96 of its worth, pay)."""
    budget = PROFILE.run_energy_j([C("lidar+radar")]) + 1e-9
    gate = Gate(PROFILE, hysteresis_frames=1, budget_window_frames=1)
    flow = DynamicFusionPipeline(runner, gate, policy="dynamic", budget_j=budget)
    for labelled in clear_frames[:4]:
        result = flow.process(labelled.frame)
        chosen = result.selection.chosen_branches
        assert chosen == result.decision.options == ("lidar", "radar")
        assert set(result.configuration_detections) == {"lidar+radar"}
        assert result.energy.total_energy_j <= budget and not result.energy.over_budget
        assert set(result.energy.component_energy_j) == {
            "option/lidar",
            "option/radar",
            "head/fused",
            "overhead",
        }
        assert result.selection.budget_j == budget
        assert result.detections  # the clear drive has cars in view


def test_reuse_warps_the_last_full_features_by_the_filter_s_motion(runner, clear_frames):
    """With the odometry running, the gate's cheap frame after a full one reuses the
    camera; without a pose, the runner refuses reuse and says why on the result."""
    budget = PROFILE.run_energy_j([C("camera_reuse+lidar+radar")]) + 1e-9
    flow = pipeline(runner, policy="dynamic", odometry=OdometryEstimator())
    flow.process(clear_frames[0].frame)  # the filter starts on the first IMU samples
    first = flow.process(clear_frames[1].frame)
    assert first.decision.chosen == (FULL_CONFIGURATION,) and first.odometry.estimate
    flow.budget_j = budget
    reused = flow.process(clear_frames[2].frame)
    chosen = reused.decision.chosen[0]
    assert "camera_reuse" in chosen.names or "lidar_reuse" in chosen.names, chosen.text
    assert not reused.skipped and reused.configuration_detections == {
        chosen.text: reused.detections
    }
    blind = pipeline(runner, policy="dynamic")  # no odometry: no ego pose
    blind.process(clear_frames[0].frame)
    blind.budget_j = budget
    refused = blind.process(clear_frames[1].frame)
    assert any("no ego pose" in why for why in refused.skipped.values()), refused.skipped


def test_the_late_baseline_runs_each_stem_alone_and_fuses(runner, clear_frames):
    result = pipeline(runner, policy="late").process(clear_frames[2].frame)
    assert result.decision.chosen == SINGLE_STEMS
    assert set(result.configuration_detections) == {"camera", "lidar", "radar"}
    assert result.energy.total_energy_j == pytest.approx(PROFILE.run_energy_j(SINGLE_STEMS))
    assert result.detections


def test_a_new_budget_starts_a_new_account():
    """What was saved under one budget is not spent under the next: lowered at run time,
    a budget holds from the next frame."""
    flow = DynamicFusionPipeline(None, Gate(PROFILE), budget_j=0.4)
    flow.gate.account.charge(0.4, 0.1)
    flow.budget_j = 0.4  # the fusion node follows every selection's budget: no change
    assert flow.gate.account.savings_j == pytest.approx(0.3)
    flow.budget_j = 0.2
    assert flow.gate.account.savings_j == 0.0 and flow.gate.available_j(0.2) == 0.2


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "1", True])
def test_budget_is_validated(runner, bad):
    flow = pipeline(runner)
    with pytest.raises(ValueError, match="energy budget must be"):
        flow.budget_j = bad
    flow.budget_j = None
    assert flow.budget_j is None


def test_budget_below_the_cheapest_runs_the_cheapest_as_a_violation(runner, clear_frames):
    result = pipeline(runner, budget_j=1e-6).process(clear_frames[2].frame)
    assert result.decision.chosen == (C("radar"),)
    assert result.energy.over_budget


def test_oracle_picks_the_truly_best_configuration(runner, clear_frames):
    flow = pipeline(runner, policy="oracle")
    with pytest.raises(ValueError, match="ground truth"):
        flow.process(clear_frames[2].frame)
    labelled = clear_frames[2]
    result = flow.process(labelled.frame, labelled.truth)
    every, _ = runner.run_every(labelled.frame, flow.gate.configurations, None)
    qualities = flow.score_configurations(labelled.frame, every, labelled.truth)
    assert result.decision.utility == pytest.approx(qualities.max())
    assert result.detections == every[result.decision.chosen[0].text]


def test_a_choice_made_in_another_pipeline_gives_the_same_frame(runner, clear_frames):
    """The nodes split the flow: the context estimator chooses, the fusion node adopts the
    selection (after a round trip through its message) and executes it."""
    from dynfusion_ros.ros.convert import msg_to_selection, selection_to_msg

    budget = 0.5 * FULL_J
    estimator = pipeline(runner, budget_j=budget)
    fusion = pipeline(runner)  # no budget of its own: the selection carries it
    whole = pipeline(runner, budget_j=budget)
    for labelled in clear_frames[:3]:
        choice = estimator.choose(labelled.frame)
        received = msg_to_selection(selection_to_msg(choice.selection))
        split = fusion.execute(labelled.frame, fusion.adopt(received))
        together = whole.process(labelled.frame)
        assert split.decision.chosen == together.decision.chosen
        assert split.detections == together.detections
        assert split.energy.component_energy_j == together.energy.component_energy_j
        assert split.energy.budget_j == pytest.approx(budget)
        assert split.energy.allowed_j == pytest.approx(together.energy.allowed_j)
    # the fallback's savings follow what ran (its price follows its own choices only)
    assert fusion.gate.account.savings_j == pytest.approx(whole.gate.account.savings_j)
    stranger = dataclasses.replace(
        choice.selection, branch_names=("sonar",), chosen=(True,), predicted_utility=(0.5,)
    )
    with pytest.raises(ValueError, match="unknown detector options \\['sonar'\\]"):
        fusion.adopt(stranger)


def test_the_fusion_side_reports_and_keeps_the_chooser_s_account_when_frames_are_lost(
    runner, clear_frames
):
    """A frame the fusion node drops (its queue full) is still charged to the estimator's
    account; the fusion side takes the frame's allowance from each selection, so what it
    reports on /dynfusion/energy, and what its fallback may spend, are the chooser's."""
    from dynfusion_ros.ros.convert import msg_to_selection, selection_to_msg

    estimator = pipeline(runner, budget_j=0.3 * FULL_J)
    fusion = pipeline(runner)
    for index, labelled in enumerate(clear_frames[:5]):
        choice = estimator.choose(labelled.frame)
        if index in (1, 2):  # lost on the way to the fusion node
            continue
        received = msg_to_selection(selection_to_msg(choice.selection))
        result = fusion.execute(labelled.frame, fusion.adopt(received))
        assert result.energy.allowed_j == pytest.approx(choice.selection.allowed_j)
        assert result.energy.over_budget == choice.decision.over_budget
    assert estimator.gate.account.savings_j > 0
    assert fusion.gate.account.savings_j == pytest.approx(estimator.gate.account.savings_j)


def test_replaying_the_record_gives_the_pipeline_s_own_numbers(runner, record, clear_bag):
    assert len(record) == 15 and record.quality.shape == (15, 48)
    assert record.ran[1:, record.configurations.index(C("camera_reuse+lidar"))].all()
    for policy in ("static:camera_half+lidar", "dynamic", "late"):
        live = evaluate_bags(pipeline(runner, policy=policy), [clear_bag], progress=False)
        gate = Gate(PROFILE, hysteresis_frames=1)
        replayed = replay_record(recorded_pipeline(record, gate, policy=policy), record)
        assert replayed.map == pytest.approx(live.map, abs=1e-9)
        assert replayed.option_usage == live.option_usage
        assert replayed.energy_j_per_frame == pytest.approx(live.energy_j_per_frame)


def test_recorded_tracks_are_the_full_detections_a_frame_on_and_replays_track_the_policy(record):
    tracks = record.configurations.index(TRACKS_CONFIGURATION)
    assert record.held_quality.shape == (15, MAX_HELD_FRAMES)
    assert (record.held_quality[0] == 0.0).all()  # nothing earlier to predict from
    np.testing.assert_allclose(record.held_quality[1:, 0], record.quality[1:, tracks])
    assert record.ran[1:, tracks].all() and not record.ran[0, tracks]
    # a replay predicts from what the replayed policy ran, at the recorded true poses
    replay = RecordedRunner(record)
    first, second = replay.frames()[3:5]
    lidar = replay.run(first, C("lidar")).detections
    assert lidar
    replay.follow(first, lidar)
    expected = ObjectTracks()
    expected.update(lidar, record.poses[3], int(record.stamps[3]))
    predicted = replay.run(second, TRACKS_CONFIGURATION).detections
    assert predicted == expected.predict(record.poses[4], int(record.stamps[4]))
    assert predicted != record.frame_detections(4)["tracks"]  # those follow the full one
    truth = record.frame_truth(4)
    live = replay.quality(second, {"tracks": predicted}, truth)
    assert live[tracks] == pytest.approx(frame_quality(predicted, truth))


def test_truth_frames_no_frame_was_assembled_for_count_as_frames_without_output(
    runner, simulate_bag
):
    bag = simulate_bag("silent_camera", 2.0, 4)
    lost = []
    frames = list(read_frames(bag, on_lost=lost.append))
    evaluation = evaluate_bags(pipeline(runner, policy="full"), [bag], progress=False)
    assert lost and evaluation.frames_without_output == len(lost)
    assert evaluation.frames == len(frames) + len(lost) == 20
    assert "frames without output" in evaluation.table()


def test_evaluate_command_writes_every_key(clear_bag, tmp_path, capsys, devkit_score):
    PROFILE.save(tmp_path / "energy.yaml")
    out = tmp_path / "eval.json"
    code = main(
        [
            "evaluate",
            "--bag",
            str(clear_bag),
            "--policy",
            "dynamic",
            "--budget-share",
            "0.5",
            "--profile",
            str(tmp_path / "energy.yaml"),
            "--json",
            str(out),
            "--detections",
            str(tmp_path / "nuscenes" / "results.json"),
            "--ground-truth",
            str(tmp_path / "nuscenes" / "truth.json"),
            "--quiet",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "mAP (nuScenes" in printed and "budget violations" in printed
    figures = json.loads(out.read_text())
    for key in (
        "frames",
        "policy",
        "budget_j",
        "map",
        "map_per_context",
        "ap_per_class",
        "mate_m",
        "mase",
        "maoe_rad",
        "nds3",
        "tp_errors_per_class",
        "classes_without_truth",
        "map_all_points",
        "energy_j_per_frame",
        "energy_j_per_frame_p95",
        "latency_ms_p50",
        "latency_ms_p99",
        "option_usage",
        "budget_violations",
        "measured_energy_j_per_frame",
        "ate_rmse_m",
        "ate_pct",
        "rpe_trans_pct",
        "odometry_usage",
    ):
        assert key in figures, key
    assert figures["frames"] == 15 and figures["policy"] == "dynamic"
    assert figures["budget_violations"] == 0
    assert figures["budget_j"] == pytest.approx(0.5 * FULL_J)
    assert figures["energy_j_per_frame"] <= figures["budget_j"]
    assert 0.0 < figures["map"] <= 1.0 and "clear" in figures["map_per_context"]
    assert np.isfinite(figures["measured_energy_j_per_frame"])
    assert "odometry ATE RMSE" in printed
    # 1.5 s pulling away from rest: centimetres driven, the estimate within a few of them
    assert 0 < figures["ate_rmse_m"] < 0.05 and figures["path_length_m"] > 0
    assert figures["odometry_usage"]["radar"] > 0.8  # every frame but the filter's first
    # the exported detections, scored by nuscenes-devkit alone, give the printed figures
    devkit = devkit_score.devkit_scores(
        tmp_path / "nuscenes" / "results.json", tmp_path / "nuscenes" / "truth.json"
    )
    assert devkit["samples"] == 15 and devkit["removed_by_range_filter"] == 0
    found = devkit_score.differences(devkit, figures)
    assert "AP car (points)" in found and "mase car" in found
    assert max(found.values()) < 1e-9, found


def _chatter_bag(path):
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    message = store.types["std_msgs/msg/String"](data="hello")
    with Writer(path, version=9) as writer:
        connection = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=store)
        writer.write(connection, 1, store.serialize_cdr(message, "std_msgs/msg/String"))
    return path


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        (["--policy", "fastest"], "unknown policy 'fastest'"),
        (["--budget", "0"], "--budget must be a positive number of joules"),
        (["--budget", "1", "--budget-share", "0.5"], "not both"),
        (["--profile", "absent.yaml"], "absent.yaml: energy profile not found"),
        (["--gate", "absent.json"], "absent.json: gate model not found"),
    ],
)
def test_evaluate_rejects_bad_arguments(clear_bag, arguments, problem, capsys):
    assert main(["evaluate", "--bag", str(clear_bag), "--quiet", *arguments]) == 2
    assert problem in capsys.readouterr().err


def test_evaluate_rejects_a_bag_without_sensor_topics(tmp_path, capsys):
    bag = _chatter_bag(tmp_path / "chatter")
    assert main(["evaluate", "--bag", str(bag), "--quiet"]) == 2
    assert "none of the sensor topics" in capsys.readouterr().err


def test_benchmark_on_the_tiny_suite(tmp_path, capsys):
    PROFILE.save(tmp_path / "energy.yaml")
    arguments = [
        "benchmark",
        "--suite",
        "tiny",
        "--data",
        str(tmp_path / "sim"),
        "--out",
        str(tmp_path / "bench"),
        "--shares",
        "0.5",
        "1.0",
        "--profile",
        str(tmp_path / "energy.yaml"),
        "--processes",
        "2",
        "--quiet",
    ]
    assert main(arguments) == 0
    rows = json.loads((tmp_path / "bench" / "benchmark.json").read_text())
    policies = [row["policy"] for row in rows]
    assert {"full", "late", "dynamic", "oracle", "static:lidar_early+radar"} <= set(policies)
    assert len(rows) == 2 + 2 * 2 + 1 + 17 + 3 * 3
    everything = FULL_J
    budgets = set()
    for row in rows:
        if row["policy"] in ("dynamic", "oracle"):
            assert row["budget_violations"] == 0
            assert row["energy_j_per_frame"] <= row["budget_j"] + 1e-12
            budgets.add(round(row["budget_j"] / everything, 6))
    late_singles = PROFILE.run_energy_j(SINGLE_STEMS) / everything
    assert {0.5, 1.0, round(late_singles, 6)} <= budgets
    assert (tmp_path / "bench" / "accuracy_energy.png").stat().st_size > 10_000
    report = (tmp_path / "bench" / "benchmark.md").read_text()
    for sensor in ("camera", "lidar", "radar"):
        assert re.search(rf"{sensor} failed throughout: .* `dynamic @ 100%` loses -?\d", report)
    table = (tmp_path / "bench" / "benchmark.md").read_text()
    assert "| dynamic @ 50% |" in table
    # every configuration straight from the record: the full one scores as its replay
    lines = (tmp_path / "bench" / "configurations.md").read_text().splitlines()
    configurations = [line for line in lines if line.startswith("| ") and "+" in line]
    assert len([line for line in lines if line.startswith("| ")]) == 1 + 48 + 1  # and tracks
    full_row = next(line for line in configurations if line.startswith("| camera+lidar+radar |"))
    static_full = next(r for r in rows if r["policy"] == "static:camera+lidar+radar")
    assert full_row.split("|")[-3].strip() == f"{100 * static_full['map']:.1f}"
    odometry = json.loads((tmp_path / "bench" / "odometry.json").read_text())
    assert len(odometry) == 2 * 10  # drives x odometry policies
    by_label = {}
    for run in odometry:
        assert np.isfinite(run["ate_pct"]) and np.isfinite(run["velocity_nees"]), run
        by_label.setdefault(run["label"], []).append(run)
    assert all(run["usage"]["lidar"] == 0 for run in by_label["radar"])
    camera = {run["drive"]: run["usage"]["camera"] for run in by_label["camera"]}
    assert camera["clear_s7"] > 0.5 > camera["fog_s8"], camera  # fog blurs it out
    assert all(run["usage"]["radar"] == 0 for run in by_label["IMU only"])
    for name in ("odometry_trajectories.png", "odometry_ate_energy.png"):
        assert (tmp_path / "bench" / name).stat().st_size > 10_000
    assert "lidar failing half-way: ATE at most" in (tmp_path / "bench" / "odometry.md").read_text()
    capsys.readouterr()
    assert main([*arguments, "--only", "detection"]) == 0
    assert "using the recorded detector outputs" in capsys.readouterr().out


def test_failure_augmentation_maps_each_configuration_to_what_still_runs(record):
    from dynfusion_ros.train.gate import with_failures

    frames = np.arange(len(record))
    features, quality, situations = with_failures(record, frames)
    assert features.shape[0] == quality.shape[0] == len(situations) == 4 * len(record)
    column = {c.text: i for i, c in enumerate(record.configurations)}
    lidar_failed = slice(2 * len(record), 3 * len(record))  # camera, lidar, radar blocks
    both = quality[lidar_failed, column["camera_half+lidar_reuse"]]
    np.testing.assert_allclose(both, record.quality[:, column["camera_half"]])
    assert (quality[lidar_failed, column["lidar_early"]] == 0.0).all()  # cars everywhere
    # tracks of what runs without the lidar: at most what tracks of everything do
    assert (quality[lidar_failed, column["tracks"]] <= record.quality[:, column["tracks"]]).all()
    available = features[lidar_failed, FEATURE_NAMES.index("lidar_available")]
    assert (available == 0).all()


def test_train_gate_command_writes_a_loadable_gate(record, clear_bag, tmp_path, capsys):
    PROFILE.save(tmp_path / "energy.yaml")
    cache = tmp_path / "record.npz"
    record.save(cache)
    arguments = [
        "train",
        "gate",
        "--data",
        str(clear_bag),
        "--record",
        str(cache),
        "--profile",
        str(tmp_path / "energy.yaml"),
        "--out",
        str(tmp_path / "models"),
        "--steps",
        "50",
        "--quiet",
    ]
    assert main(arguments) == 0
    printed = capsys.readouterr().out
    assert "regret" in printed and "context accuracy" in printed
    model = GateModel.load(tmp_path / "models" / "gate.json")
    assert model.configurations == record.configurations
    quality, _ = model.predict(record.features[3])
    assert quality.shape == (48,) and ((quality > 0) & (quality < 1)).all()
    # the blend was chosen by replaying the dynamic policy on the validation frames
    assert model.dataset_quality.shape == (48, len(model.contexts))
    # each frame more of tracks loses what the record's tracks lost, frame for frame
    assert 0.0 <= model.hold_penalty <= 1.0 and "tracks lose" in printed
    assert ((model.dataset_quality >= 0) & (model.dataset_quality <= 1)).all()
    # strict JSON: where nothing static fits a budget share, null, not NaN
    strict = {"parse_constant": lambda name: pytest.fail(f"{name} written: no JSON")}
    report = json.loads((tmp_path / "models" / "gate_training.json").read_text(), **strict)
    json.loads((tmp_path / "models" / "gate.json").read_text(), **strict)
    assert report["hold_penalty"] == model.hold_penalty
    chosen = f"{model.blend:g}/{model.tie_margin:g}/{report['shrink_frames']}"
    assert (report["blend"], report["tie_margin"]) == (model.blend, model.tie_margin)
    # blend 0 reads no dataset mAP, so it is tried without shrinkage only
    assert chosen in report["blend_map"] and len(report["blend_map"]) == 3 + 4 * 3 * 3
    assert all(set(row) == set(report["best_static_map"]) for row in report["blend_map"].values())
    full = model.configurations.index(FULL_CONFIGURATION)
    assert model.dataset_quality[full].max() > 0.3  # the full configuration finds cars here
    assert "chosen: blend" in printed
    assert main(arguments) == 0
    assert "using the recorded detector outputs" in capsys.readouterr().out


def test_a_recording_pairs_each_truth_frame_with_the_frame_published_nearest_it():
    from dynfusion_ros.core.types import Box3D, Detection, ObjectClass
    from dynfusion_ros.eval.recording import Recording

    ms = 1_000_000
    published = {100 * ms: ([], 0), 201 * ms: ([], 0), 350 * ms: ([], 0)}  # 350: lidar-keyed
    published |= {t * ms: ([], 0) for t in (550, 650, 750)}  # the camera dead: lidar-keyed
    truth = {
        t * ms: [Detection(ObjectClass.CAR, 1.0, Box3D(t, 0, 0, 4, 2, 1.5, 0.0))]
        for t in range(100, 801, 50)
    }
    paired, missed = Recording(detections=published, truth=truth).paired()
    # each truth frame T takes the frame nearest it in [T - 50 ms, T + 50 ms) and scores
    # it on its own truth: a lidar sweep stamped at its start (350) covers 350-450
    assert [(p // ms, t[0].box.x) for p, t in paired] == [
        (100, 100),
        (201, 200),
        (350, 400),
        (550, 600),
        (650, 700),
        (750, 800),
    ]
    assert [m // ms for m, _ in missed] == [300, 500]  # nothing stamped in their windows
    # the offline reader pairs by the same rule
    from dynfusion_ros.ros.truth_frames import TruthFrames

    lost = []
    pairing = TruthFrames(100 * ms, lambda stamp, _: lost.append(stamp // ms))
    streamed = []
    for stamp, is_frame in sorted([(t, 0) for t in truth] + [(t, 1) for t in published]):
        if is_frame:
            pairing.add_frame(stamp, stamp // ms)
        else:
            pairing.add_truth(stamp, truth[stamp])
        streamed += [(item, t[0].box.x) for item, t in pairing.settled() if t]
    streamed += [(item, t[0].box.x) for item, t in pairing.settled(final=True) if t]
    assert streamed == [(p // ms, t[0].box.x) for p, t in paired] and lost == [300, 500]
    # a stream settled as final starts over: a bag's next loop, stamped earlier again
    pairing.add_truth(100 * ms, truth[100 * ms])
    pairing.add_frame(100 * ms, 100)
    assert [(item, t[0].box.x) for item, t in pairing.settled(final=True)] == [(100, 100)]


def test_a_cached_record_is_reused_only_for_the_sensor_parameters_it_was_read_with(
    record, clear_bag, tmp_path
):
    from dynfusion_ros.eval.records import cached_record
    from dynfusion_ros.ros.sensor_params import SENSOR_DEFAULTS

    path = tmp_path / "record.npz"
    record.save(path)
    assert cached_record(path, [clear_bag]) is not None
    assert cached_record(path, [clear_bag], dict(SENSOR_DEFAULTS)) is not None
    other = {**SENSOR_DEFAULTS, "lidar_intensity_field": "none"}
    assert cached_record(path, [clear_bag], other) is None  # read differently: record again
