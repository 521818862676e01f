"""A simulated drive rewritten as real drivers publish it scores as the simulator's own.

Each layout (``robot_layouts``) keeps the geometry and timing and changes only how it is
written: field names and types, time bases, frames, tf chains, transports, the lens. Read
back with the matching sensor parameters, the same pipeline (every stem at full level)
must score the same mAP (within 0.5 points; 2 for the lens, which resamples the image) and
ATE (within 10 %) as on the original bag, and say what it concluded.
"""

from __future__ import annotations

import json

import pytest
import robot_layouts as layouts
import yaml

from dynfusion_ros.core.energy import ModelMeter
from dynfusion_ros.core.gate import Policy
from dynfusion_ros.core.odometry.estimator import OdometryEstimator
from dynfusion_ros.core.pipeline import DynamicFusionPipeline
from dynfusion_ros.eval.evaluation import evaluate_bags
from dynfusion_ros.resources import default_energy_profile, default_model_path
from dynfusion_ros.ros.gate_params import GATE_DEFAULTS
from dynfusion_ros.ros.sensor_params import SENSOR_DEFAULTS, load_params_file

LAYOUTS = {
    "velodyne_end_stamped": (layouts.lidar_layout("velodyne"), {}),
    "ouster": (layouts.lidar_layout("ouster"), {}),
    "hesai": (layouts.lidar_layout("hesai"), {}),
    "livox": (layouts.lidar_layout("livox"), {}),
    "radar_vr": (layouts.radar_layout("vr"), {}),
    "radar_doppler_velocity": (layouts.radar_layout("doppler_velocity"), {}),
    "radar_ars408": (layouts.radar_layout("ars408"), {}),
    "radar_polar": (layouts.radar_layout("polar"), {}),
    "radar_msgs_radar_scan": (layouts.radar_layout("radar_scan"), {"radar_message": "radar_scan"}),
    "camera_chain_on_tf_png": (
        layouts.camera_layout("compressed_png"),
        {"camera_topic": "/camera/image_raw/compressed"},
    ),
    "camera_chain_on_tf_jpeg": (
        layouts.camera_layout("compressed_jpeg"),
        {"camera_topic": "/camera/image_raw/compressed"},
    ),
    "camera_distorted": (layouts.camera_layout("distorted"), {}),
    "imu_upside_down_late_tf": (layouts.imu_layout(0.4), {}),
}


@pytest.fixture(scope="module")
def drive(simulate_bag):
    """3 s of a clear drive with cars and cyclists close by."""
    return simulate_bag("clear", 3.0, 11)


def _pipeline(policy: str = "full") -> DynamicFusionPipeline:
    """``full`` by default: every stem reads its sensor, so a misread one shows."""
    return DynamicFusionPipeline.from_files(
        default_model_path("detector.json"),
        default_energy_profile(),
        default_model_path("gate.json"),
        policy=Policy.parse(policy),
        odometry_policy="dynamic",  # as `dynfusion evaluate` and the nodes
        meter=ModelMeter(),
        odometry=OdometryEstimator(),
    )


def _score(bag, values=None):
    evaluation = evaluate_bags(_pipeline(), [bag], values=values, progress=False)
    return evaluation.map, evaluation.ate_rmse_m


@pytest.fixture(scope="module")
def reference(drive):
    return _score(drive)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_layout_scores_as_the_simulator_layout(name, drive, reference, tmp_path, capsys):
    layout, params = LAYOUTS[name]
    bag = layouts.rewrite_bag(drive, tmp_path / name, layout)
    mean_ap, ate = _score(bag, {**SENSOR_DEFAULTS, **params})
    if name == "radar_msgs_radar_scan":  # no RCS in a RadarScan: as a cloud without it
        no_rcs = layouts.radar_layout("no_rcs")
        reference = _score(layouts.rewrite_bag(drive, tmp_path / "no_rcs", no_rcs))
    # A barrel lens images a border object smaller: the camera stem sees it at another
    # scale than it trained on, so the distorted image may score a little differently.
    tolerance = 0.02 if name == "camera_distorted" else 0.005
    assert abs(mean_ap - reference[0]) <= tolerance, (name, mean_ap, reference)
    assert abs(ate - reference[1]) <= 0.1 * reference[1] + 0.005, (name, ate, reference)
    said = capsys.readouterr().err
    assert "message dropped" not in said, said  # nothing lost on the way
    if name in ("ouster", "hesai", "livox"):
        encoding = {"ouster": "relative_ns", "hesai": "absolute_s", "livox": "absolute_ns"}
        assert f"read as {encoding[name]} (auto)" in said
    if name == "ouster":
        assert "intensity from 'reflectivity'" in said
    if name == "radar_msgs_radar_scan":
        assert "radar_msgs/RadarScan: used without RCS" in said


def test_a_bag_with_ros1_names_runs_with_a_parameters_file(drive, reference, tmp_path):
    bag = layouts.rewrite_bag(drive, tmp_path / "ros1", layouts.ros1_names)
    params = tmp_path / "robot.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": layouts.ROS1_PARAMS}}))
    from dynfusion_ros.cli import main

    out = tmp_path / "ros1.json"
    command = ["evaluate", "--bag", str(bag), "--params", str(params), "--json", str(out)]
    assert main([*command, "--policy", "full", "--quiet"]) == 0  # as the reference

    figures = json.loads(out.read_text())
    assert abs(figures["map"] - reference[0]) <= 0.005
    assert main(["evaluate", "--bag", str(bag), "--quiet"]) == 2  # the defaults find nothing


def test_a_parameters_file_is_checked_before_any_bag_is_read(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"lidar_time_encoding": "us"}}}))
    with pytest.raises(ValueError, match=r"lidar_time_encoding.*'us' is not one of"):
        load_params_file(bad)
    split = tmp_path / "split.yaml"
    split.write_text(
        yaml.safe_dump(
            {
                "context_estimator": {"ros__parameters": {"lidar_topic": "/a"}},
                "fusion": {"ros__parameters": {"lidar_topic": "/b"}},
            }
        )
    )
    with pytest.raises(ValueError, match="both nodes must read the sensors alike"):
        load_params_file(split)


def _nodes_and_offline(bag, params: dict, out):
    """``bag`` through `evaluate` and through the nodes over DDS with the same sensor
    parameters: (nodes' evaluation, offline evaluation, the nodes' log)."""
    import rclpy

    from dynfusion_ros.eval.recording import TOPICS, evaluate_recording
    from dynfusion_ros.ros.processes import replay_through_nodes

    pipeline = _pipeline("dynamic")  # the nodes' default policy and budget
    pipeline.budget_j = GATE_DEFAULTS["energy_budget_j"]  # the nodes' default
    offline = evaluate_bags(pipeline, [bag], values={**SENSOR_DEFAULTS, **params}, progress=False)
    rclpy.init()
    node = rclpy.create_node("robot_layout_replay")
    try:
        # frames held for a late tf tree come out in a burst: queue them all, where a
        # robot's default (2) drops the oldest to keep the output current
        overrides = ["score_threshold:=0.0", "max_queued_frames:=10"]
        overrides += [f"{name}:={value}" for name, value in params.items()]
        topics = list(TOPICS.values())
        # at half speed: two cores run both nodes, the replay and the recorder
        replay_through_nodes(node, bag, out, overrides=overrides, topics=topics, rate=0.5)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    live = evaluate_recording(out / "recording", "dynamic")
    log = (out / "nodes.log").read_text()
    assert live.frames_without_output == 0, log[-3000:]
    return live, offline, log


def _assert_as_offline(live, offline) -> None:
    """The nodes score what `evaluate` scores. Where DDS lost or delayed a message, a frame
    planned without that sensor (its odometry usage differs) and the budget's account
    carries the difference on through the 30 frames: close, not equal."""
    same_inputs = live.odometry_usage == offline.odometry_usage
    tolerance = 0.005 if same_inputs else 0.03
    assert abs(live.map - offline.map) <= tolerance, (live.map, offline.map, live.odometry_usage)
    assert abs(live.ate_rmse_m - offline.ate_rmse_m) <= 0.1 * offline.ate_rmse_m + 0.005


def test_nodes_read_a_real_robot_as_offline(drive, tmp_path):
    """Ouster, a chained camera on /tf sending jpeg, an ARS408 and an upside-down IMU
    whose /tf_static comes late: through the nodes over DDS as through `evaluate`."""
    robot = layouts.combine(
        layouts.lidar_layout("ouster"),
        layouts.radar_layout("ars408"),
        layouts.camera_layout("compressed_jpeg"),
        layouts.imu_layout(0.4),
    )
    bag = layouts.rewrite_bag(drive, tmp_path / "robot", robot)
    params = {"camera_topic": "/camera/image_raw/compressed"}
    live, offline, log = _nodes_and_offline(bag, params, tmp_path)
    _assert_as_offline(live, offline)
    assert "read as relative_ns (auto)" in log and "intensity from 'reflectivity'" in log


def test_nodes_read_a_ros1_named_velodyne_robot_as_offline(drive, tmp_path):
    """A Velodyne stamped at sweep end on a chained mount, a polar radar and a barrel
    lens, every topic and frame named as a ROS 1 bag names them: the nodes, given the
    same parameters as `evaluate --params`, publish what it scores."""
    robot = layouts.combine(
        layouts.lidar_layout("velodyne"),
        layouts.radar_layout("polar"),
        layouts.camera_layout("distorted"),
        layouts.ros1_names,
    )
    bag = layouts.rewrite_bag(drive, tmp_path / "robot", robot)
    live, offline, log = _nodes_and_offline(bag, layouts.ROS1_PARAMS, tmp_path)
    _assert_as_offline(live, offline)
    assert "polar layout" in log
