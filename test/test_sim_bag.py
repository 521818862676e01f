"""`dynfusion simulate` end to end: real rosbag2 files, readable by rosbags and rclpy,
reproducible from the seed, and refusing bad arguments without leaving anything behind."""

import importlib
from pathlib import Path

import numpy as np
import pytest
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader

from dynfusion_ros.cli import main
from dynfusion_ros.ros.convert import pointcloud2_to_lidar_scan, pointcloud2_to_radar_scan
from dynfusion_ros.ros.convert.detections import detection_array_to_detections
from dynfusion_ros.sim.bag import TOPICS, write_drive
from dynfusion_ros.sim.drive import START_NS, Simulation
from dynfusion_ros.sim.scenario import Fault, Phase, Scenario, preset


def rclpy_type(msgtype: str):
    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def read_all(path: Path) -> dict[str, list]:
    """topic -> [(log time, rclpy message, raw bytes)]"""
    out: dict[str, list] = {}
    with Reader(path) as reader:
        for connection, timestamp, raw in reader.messages():
            msg = deserialize_message(bytes(raw), rclpy_type(connection.msgtype))
            out.setdefault(connection.topic, []).append((timestamp, msg, bytes(raw)))
    return out


@pytest.fixture(scope="module")
def mixed_bag(tmp_path_factory):
    scenario = Scenario(
        "test_mix",
        "fog then night with faults",
        (Phase(0.0, "fog"), Phase(0.5, "night")),
        (
            Fault("silent", 0.2, 0.4, {"topic": "/lidar/points"}),
            Fault("timestamp_jitter", 0.6, 1.0, {"sigma_s": 0.02}),
        ),
    )
    path = tmp_path_factory.mktemp("bags") / "drive"
    summary = write_drive(Simulation(scenario, 2.0, 11), path, progress=False)
    return path, summary, read_all(path)


def test_bag_has_every_topic_and_rclpy_reads_every_message(mixed_bag):
    path, summary, messages = mixed_bag
    assert set(messages) == set(TOPICS)
    counts = {topic: len(items) for topic, items in messages.items()}
    assert counts["/camera/image_raw"] == counts["/camera/camera_info"] == 20
    assert counts["/imu/data"] == 400 and counts["/radar/points"] == 40
    # ground truth at every sensor stamp: objects with each radar scan, the ego per IMU sample
    assert counts["/ground_truth/objects"] == 40 and counts["/ground_truth/odometry"] == 400
    assert counts["/lidar/points"] == 16  # silent for 0.4 s of the 2 s
    assert counts == summary.messages
    log_times = [t for items in messages.values() for t, _, _ in items]
    with Reader(path) as reader:
        assert [t for _, t, _ in reader.messages()] == sorted(log_times), "log-time order"
    image = messages["/camera/image_raw"][0][1]
    assert (image.width, image.height, image.encoding) == (640, 384, "rgb8")
    (tf,) = [msg for _, msg, _ in messages["/tf_static"]]
    assert {t.child_frame_id for t in tf.transforms} == {
        "camera_optical_frame",
        "lidar_link",
        "radar_link",
        "imu_link",
    }


def test_bag_contents_read_back_through_our_converters(mixed_bag):
    _, _, messages = mixed_bag
    lidar = pointcloud2_to_lidar_scan(messages["/lidar/points"][0][1])
    assert len(lidar) > 1000 and {"intensity", "ring", "time"} <= set(lidar.fields)
    assert lidar.fields["time"].min() >= 0.0 and lidar.fields["time"].max() < 0.1
    radar = pointcloud2_to_radar_scan(messages["/radar/points"][0][1])
    assert {"doppler", "rcs"} <= set(radar.fields)
    truth = messages["/ground_truth/objects"][10][1]
    assert truth.header.frame_id == "base_link" and len(truth.detections) > 0
    assert all(d.id for d in truth.detections)
    detection_array_to_detections(truth)
    odometry = messages["/ground_truth/odometry"][-1][1]
    assert (odometry.header.frame_id, odometry.child_frame_id) == ("odom", "base_link")
    contexts = [msg.context for _, msg, _ in messages["/scenario/context"]]
    assert contexts[:10] == ["fog"] * 10 and contexts[10:] == ["night"] * 10
    faults = [list(msg.faults) for _, msg, _ in messages["/scenario/context"]]
    assert faults[5] == ["silent:/lidar/points"] and faults[15] == ["timestamp_jitter"]


def test_header_stamps_are_sensor_times_and_jitter_only_when_faulted(mixed_bag):
    _, _, messages = mixed_bag

    def offsets(topic, period):
        stamps = np.array(
            [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m, _ in messages[topic]]
        )
        return (stamps - START_NS) / 1e9 - np.arange(len(stamps)) * period

    camera = offsets("/camera/image_raw", 0.1)
    assert np.abs(camera[:12]).max() < 1e-6
    assert np.abs(camera[12:]).max() > 0.005
    imu = offsets("/imu/data", 0.005)
    assert np.abs(imu[:240]).max() < 1e-6


def test_same_seed_same_bag_and_sqlite3_storage(tmp_path):
    scenario = preset("rain")
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_drive(Simulation(scenario, 0.5, 4), a, progress=False)
    write_drive(Simulation(scenario, 0.5, 4), b, storage="sqlite3", progress=False)
    write_drive(Simulation(scenario, 0.5, 5), c, progress=False)
    bytes_a, bytes_b, bytes_c = (
        [raw for items in read_all(p).values() for _, _, raw in items] for p in (a, b, c)
    )
    assert bytes_a == bytes_b
    assert bytes_a != bytes_c
    assert list(b.glob("*.db3"))


def test_cli_writes_bag_and_previews(tmp_path, capsys):
    out, previews = tmp_path / "bag", tmp_path / "previews"
    code = main(
        [
            "simulate",
            "--scenario",
            "clear",
            "--duration",
            "0.6",
            "--seed",
            "2",
            "--out",
            str(out),
            "--preview",
            str(previews),
            "--quiet",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "MB per minute" in text and "real time" in text
    assert (out / "metadata.yaml").exists()
    names = sorted(p.name for p in previews.glob("*.png"))
    assert "contexts.png" in names and any(n.endswith("_bev.png") for n in names)
    assert main(["simulate", "--duration", "0.3", "--out", str(out), "--overwrite", "--quiet"]) == 0


def test_cli_lists_presets(capsys):
    assert main(["simulate", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 15 and lines[0].split()[0] == "clear"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "mars"], "unknown scenario"),
        (["--duration", "-1"], "--duration"),
        (["--duration", "0"], "--duration"),
        ([], "exists"),
    ],
)
def test_cli_rejects_bad_arguments_with_one_line(tmp_path, capsys, args, message):
    out = tmp_path / "bag"
    out.mkdir()
    before = sorted(tmp_path.iterdir())
    assert main(["simulate", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert sorted(tmp_path.iterdir()) == before


def test_cli_rejects_unwritable_place(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["simulate", "--duration", "1", "--out", str(blocker / "bag")]) == 2
    assert "cannot write" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_failure_midway_leaves_nothing(tmp_path):
    def explode(frame):
        if frame.index == 2:
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_drive(
            Simulation(preset("clear"), 0.5, 1), tmp_path / "bag", progress=False, on_frame=explode
        )
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_a_suite_and_resumes_it(tmp_path, capsys):
    from dynfusion_ros.sim.suites import SUITES

    out = tmp_path / "suite"
    assert main(["simulate", "--suite", "tiny", "--out", str(out), "--quiet"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(drive.name for drive in SUITES["tiny"])
    capsys.readouterr()
    assert main(["simulate", "--suite", "tiny", "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.count("exists, kept") == len(names)
    assert main(["simulate", "--suite", "nope", "--out", str(out)]) == 2


def test_training_and_held_out_suites_share_no_seed():
    from dynfusion_ros.sim.suites import HELD_OUT_SEED_MIN, SUITES

    assert all(d.seed >= HELD_OUT_SEED_MIN for d in SUITES["heldout"])
    assert all(d.seed < HELD_OUT_SEED_MIN for d in SUITES["train"])
    trained = {d.preset for d in SUITES["train"]}
    assert {d.preset for d in SUITES["heldout"]} <= trained
