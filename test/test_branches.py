"""Stems, branches, weights and the inference API, on a short simulated drive."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from dynfusion_ros.core.branches import (
    BRANCHES,
    BranchRunner,
    DetectorConfig,
    WeightsError,
    branch,
    load_network,
    save_weights,
    stems_for,
)
from dynfusion_ros.core.branches.network import BranchNetwork
from dynfusion_ros.core.detector.boxes import decode, encode
from dynfusion_ros.core.detector.rasters import OUTSIDE, camera_lift, lidar_raster
from dynfusion_ros.core.types import Box3D, Detection, Modality, ObjectClass, PointScan
from dynfusion_ros.eval.detection_metrics import ScoredFrame, evaluate_detections
from dynfusion_ros.resources import default_model_path
from dynfusion_ros.ros.bag_frames import read_frames
from dynfusion_ros.sim.drive import START_NS
from dynfusion_ros.train.branches import TrainSettings, train
from dynfusion_ros.train.dataset import load_dataset

CONFIG = DetectorConfig()


def test_frames_carry_every_sensor_truth_and_context(clear_frames):
    assert len(clear_frames) == 15
    for labelled in clear_frames[1:]:
        frame = labelled.frame
        assert all(frame.available(m) for m in Modality)
        assert frame.sensor_stamps_ns[Modality.CAMERA] == frame.stamp_ns
        assert 0 < frame.staleness_s(Modality.LIDAR) <= 0.1
        assert len(frame.imu) == 20
        assert labelled.truth and labelled.context == "clear"
        assert frame.lidar.T_base_sensor[2, 3] == pytest.approx(1.9)


def test_silent_sensor_leaves_frames_without_it(simulate_bag):
    bag = simulate_bag("silent_lidar", 2.0, 3)
    frames = list(read_frames(bag))
    has_lidar = [f.frame.available(Modality.LIDAR) for f in frames]
    assert len(frames) == 20
    assert 2 <= has_lidar.count(False) <= 5
    assert all(f.frame.available(Modality.CAMERA) for f in frames)


def test_a_silent_camera_hands_the_frame_clock_to_the_lidar_as_in_the_nodes(simulate_bag):
    """The reader cuts frames as the nodes' sync does: while the camera is silent the
    lidar keys them (stamped at its sweep starts, half a period off the camera's), and
    the truth frames before the lidar takes over are lost, not silently dropped."""
    bag = simulate_bag("silent_camera", 2.0, 4)
    lost = []
    frames = list(read_frames(bag, on_lost=lost.append))
    keyed_by_lidar = [f for f in frames if not f.frame.available(Modality.CAMERA)]
    assert keyed_by_lidar and all(f.frame.available(Modality.LIDAR) for f in keyed_by_lidar)
    period = 100_000_000
    assert all((f.frame.stamp_ns - START_NS) % period == period // 2 for f in keyed_by_lidar)
    assert all(f.scored and f.truth for f in frames)  # one frame per period, each scored
    assert 1 <= len(lost) <= 3 and all(frame.truth for frame in lost)
    assert len(frames) + len(lost) == 20
    assert {frame.faults for frame in lost} == {("silent:/camera/image_raw",)}


@pytest.fixture(scope="module")
def unlabelled_bag(clear_bag, tmp_path_factory):
    """The radar topic of the clear drive alone: a valid bag without ground truth."""
    from rosbags.rosbag2 import Reader, Writer

    from dynfusion_ros.ros.typestore import bag_typestore

    out = tmp_path_factory.mktemp("unlabelled") / "bag"
    with Reader(clear_bag) as reader, Writer(out, version=8) as writer:
        kept = [c for c in reader.connections if c.topic == "/radar/points"]
        mapping = {
            c.id: writer.add_connection(c.topic, c.msgtype, typestore=bag_typestore()) for c in kept
        }
        for connection, stamp, raw in reader.messages(connections=kept):
            writer.write(mapping[connection.id], stamp, raw)
    return out


def test_bag_without_ground_truth_or_unreadable_is_refused(unlabelled_bag, clear_bag, tmp_path):
    with pytest.raises(ValueError, match="/ground_truth/objects"):
        list(read_frames(unlabelled_bag))
    hollow = tmp_path / "hollow"
    hollow.mkdir()
    (hollow / "metadata.yaml").write_text((clear_bag / "metadata.yaml").read_text())
    with pytest.raises(ValueError, match=r"hollow: cannot read the bag"):
        list(read_frames(hollow))


def test_registry_names_stems_once():
    assert set(BRANCHES) >= {
        "camera",
        "lidar",
        "radar",
        "camera_lidar",
        "camera_radar",
        "lidar_radar",
    }
    assert stems_for(["lidar_radar", "lidar", "camera_lidar"]) == (
        Modality.CAMERA,
        Modality.LIDAR,
        Modality.RADAR,
    )
    with pytest.raises(ValueError, match="unknown branch 'sonar'"):
        branch("sonar")


def test_box_encoding_round_trips():
    truth = [
        Detection(ObjectClass.CAR, 1.0, Box3D(12.3, -4.1, 0.8, 4.5, 1.9, 1.6, 0.4)),
        Detection(ObjectClass.PEDESTRIAN, 1.0, Box3D(30.05, 7.7, 0.9, 0.6, 0.6, 1.8, -2.0)),
        Detection(ObjectClass.CAR, 1.0, Box3D(70.0, 0.0, 0.8, 4.5, 1.9, 1.6, 0.0)),  # off grid
    ]
    targets = encode(truth, CONFIG)
    assert targets.mask.sum() == 2
    logits = torch.where(torch.from_numpy(targets.heatmap) >= 1.0, 10.0, -10.0)
    boxes = torch.zeros(8, *CONFIG.head_grid_shape).flatten(1)
    for slot in np.flatnonzero(targets.mask):
        boxes[:, targets.index[slot]] = torch.from_numpy(targets.regression[slot])
    found = decode(logits, boxes.reshape(8, *CONFIG.head_grid_shape), CONFIG)
    found.sort(key=lambda d: d.box.x)
    assert [d.object_class for d in found] == [ObjectClass.CAR, ObjectClass.PEDESTRIAN]
    for got, want in zip(found, truth, strict=False):
        np.testing.assert_allclose(got.box.as_array(), want.box.as_array(), atol=1e-5)


def test_lidar_raster_counts_heights_and_intensity():
    xyz = np.array([[10.1, 0.1, 0.1], [10.2, 0.2, 0.5], [10.3, 0.3, 1.5], [90.0, 0, 0]], np.float32)
    scan = PointScan(0, xyz, {"intensity": np.full(4, 255.0, np.float32)})
    raster = lidar_raster(scan, CONFIG)
    row, col = int(10.1 / 0.4), int((0.1 + 25.6) / 0.4)
    np.testing.assert_allclose(raster[:4, row, col], np.log1p([1, 1, 1, 0]), rtol=1e-6)
    assert raster[4, row, col] == pytest.approx(1.5 / 4)
    assert raster[5, row, col] == pytest.approx(1.0)
    assert np.count_nonzero(raster[0]) == 1  # the point 90 m ahead is off the grid


def test_camera_lift_is_the_pinhole_projection(clear_frames):
    image = clear_frames[3].frame.camera
    model, T = image.model, image.T_base_sensor
    lift = camera_lift(model, T, CONFIG)
    cell = CONFIG.head_cell_m
    row, col, level = 25, 36, 2  # x = 20.4 m, y = 3.6 m, z = 1.25 m
    x, y, z = (row + 0.5) * cell, -25.6 + (col + 0.5) * cell, CONFIG.lift_heights_m[level]
    camera_x, camera_z = T[0, 3], T[2, 3]
    u = model.fx * -y / (x - camera_x) + model.cx
    v = model.fy * -(z - camera_z) / (x - camera_x) + model.cy
    expected = [2 * (u + 0.5) / model.width - 1, 2 * (v + 0.5) / model.height - 1]
    np.testing.assert_allclose(lift[level, row, col], expected, atol=1e-4)
    assert (lift[:, 0, 0] == OUTSIDE).all()  # 0.4 m ahead, 25 m to the right: not in view


def test_runner_skips_branches_whose_sensor_is_missing(clear_frames):
    runner = BranchRunner(BranchNetwork(CONFIG))
    frame = dataclasses.replace(clear_frames[5].frame, lidar=None)  # the fixture stays whole
    outputs = runner.run(frame, list(BRANCHES))
    assert set(outputs.skipped) == {"lidar", "camera_lidar", "lidar_radar"}
    assert "no lidar data" in outputs.skipped["lidar"]
    assert set(outputs.detections) == {"camera", "radar", "camera_radar"}
    assert set(outputs.stem_ms) == {"camera", "radar"}  # each stem once
    assert set(outputs.head_ms) == set(outputs.detections)


def test_empty_and_thinned_clouds_run_without_error(clear_frames):
    runner = BranchRunner(BranchNetwork(CONFIG))
    frame = clear_frames[5].frame
    empty = dataclasses.replace(
        frame.lidar,
        xyz=frame.lidar.xyz[:0],
        fields={name: values[:0] for name, values in frame.lidar.fields.items()},
    )
    outputs = runner.run(dataclasses.replace(frame, lidar=empty), ["lidar", "lidar_radar"])
    assert not outputs.skipped and set(outputs.detections) == {"lidar", "lidar_radar"}
    thinned = frame.lidar.thinned(1000)
    assert 500 < len(thinned) <= 1000
    assert np.array_equal(thinned.xyz[1], frame.lidar.xyz[-(-len(frame.lidar) // 1000)])
    assert set(thinned.fields) == set(frame.lidar.fields)
    assert frame.lidar.thinned(10**9) is frame.lidar
    outputs = runner.run(dataclasses.replace(frame, lidar=thinned), ["lidar"])
    assert "lidar" in outputs.detections


def test_weights_round_trip_and_clear_errors(clear_frames, tmp_path):
    network = BranchNetwork(CONFIG)
    path = save_weights(network, tmp_path / "m" / "branches.json", {"note": "test"})
    loaded = load_network(path)
    frame = clear_frames[4].frame
    a = BranchRunner(network).run(frame, ["radar", "lidar"]).detections
    b = BranchRunner(loaded).run(frame, ["radar", "lidar"]).detections
    assert a == b

    with pytest.raises(WeightsError, match="no such file"):
        load_network(tmp_path / "none.json")
    truncated = tmp_path / "t"
    shutil.copytree(path.parent, truncated)
    weights = truncated / "branches.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(WeightsError, match=r"branches.safetensors.*truncated"):
        load_network(truncated / "branches.json")
    document = json.loads(path.read_text())
    document["branches"]["radar"]["head_width"] = 8
    (tmp_path / "m" / "edited.json").write_text(json.dumps(document))
    with pytest.raises(WeightsError, match=r"edited.json.*branches.radar.head_width"):
        load_network(tmp_path / "m" / "edited.json")
    document = json.loads(path.read_text())
    document["config"]["stem_channels"]["radar"] = 8
    (tmp_path / "m" / "narrow.json").write_text(json.dumps(document))
    with pytest.raises(WeightsError, match=r"shape .* in file"):
        load_network(tmp_path / "m" / "narrow.json")


def test_tiny_training_lowers_the_loss(clear_bag):
    torch.manual_seed(0)
    data = load_dataset([clear_bag], CONFIG, progress=False)
    assert data.available.all()
    log = train(
        BranchNetwork(CONFIG),
        data,
        TrainSettings(epochs=20, batch_size=4, learning_rate=3e-3, max_steps=24),
        progress=False,
    )
    assert len(log.losses) == 24
    assert np.mean(log.losses[-4:]) < 0.8 * np.mean(log.losses[:4])


def test_shipped_weights_find_the_cars(clear_frames):
    runner = BranchRunner.load(default_model_path("branches.json"))
    scored = []
    for labelled in clear_frames:
        found = runner.run(labelled.frame, ["lidar"]).detections["lidar"]
        scored.append(ScoredFrame(found, labelled.truth))
    assert evaluate_detections(scored).ap_per_class["car"] > 0.5


def test_warm_up_runs_every_stem_and_head_and_changes_no_result(clear_frames):
    runner = BranchRunner.load(default_model_path("branches.json"))
    frame = clear_frames[0].frame
    cold = runner.run(frame, runner.branch_names).detections
    runner.warm_up()
    warm = runner.run(frame, runner.branch_names).detections
    assert set(warm) == set(runner.branch_names)
    assert {name: [(d.score, d.box) for d in found] for name, found in warm.items()} == {
        name: [(d.score, d.box) for d in found] for name, found in cold.items()
    }


def test_train_and_score_commands_end_to_end(clear_bag, tmp_path, capsys):
    from dynfusion_ros.cli import main

    out = tmp_path / "models"
    args = ["train", "branches", "--data", str(clear_bag), "--out", str(out), "--epochs", "1"]
    assert main([*args, "--max-steps", "2", "--batch-size", "4", "--quiet"]) == 0
    for name in ("branches.json", "branches.safetensors", "branches_training.png"):
        assert (out / name).stat().st_size > 0
    printed = capsys.readouterr().out
    assert "validation mAP" in printed and "wrote" in printed
    score = ["score-branches", "--data", str(clear_bag), "--model", str(out / "branches.json")]
    assert main([*score, "--quiet", "--markdown", str(tmp_path / "table.md")]) == 0
    printed = capsys.readouterr().out
    assert "| lidar_radar |" in printed and "| *frames* | 15 | 15 |" in printed
    assert "best single-sensor branch per context" in printed


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["train", "branches", "--data", "/nonexistent"], "not a rosbag2 folder"),
        (["train", "branches", "--data", ".", "--epochs", "0"], "--epochs must be at least 1"),
        (["score-branches", "--data", ".", "--model", "/no/such.json"], "/no/such.json"),
        (["train", "branches", "--data", "UNLABELLED"], "not a labelled bag"),
        (["score-branches", "--data", "UNLABELLED"], "not a labelled bag"),
    ],
)
def test_commands_reject_bad_arguments_in_one_line(
    command, message, capsys, clear_bag, unlabelled_bag
):
    from dynfusion_ros.cli import main

    substitutes = {".": str(clear_bag), "UNLABELLED": str(unlabelled_bag)}
    command = [substitutes.get(part, part) for part in command]
    assert main(command) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def test_malformed_message_is_reported_and_its_frame_goes_on_without_it(clear_bag, tmp_path):
    from rosbags.rosbag2 import Reader, Writer

    from dynfusion_ros.ros.typestore import bag_typestore

    out = tmp_path / "damaged"
    broken_stamp = None
    with Reader(clear_bag) as reader, Writer(out, version=8) as writer:
        mapping = {
            c.id: writer.add_connection(c.topic, c.msgtype, typestore=bag_typestore())
            for c in reader.connections
        }
        for connection, stamp, raw in reader.messages():
            data = raw
            lidar = connection.topic == "/lidar/points"
            if lidar and broken_stamp is None and stamp > START_NS + 500_000_000:
                data, broken_stamp = raw[:40], stamp  # a truncated CDR message
            writer.write(mapping[connection.id], stamp, data)
    problems = []
    frames = list(read_frames(out, on_problem=problems.append))
    assert len(frames) == 15
    assert len(problems) == 1 and "/lidar/points: cannot deserialize" in problems[0]
    assert str(out) in problems[0]
    without = [f for f in frames if not f.frame.available(Modality.LIDAR)]
    assert len(without) == 1 and without[0].frame.available(Modality.CAMERA)
