"""Imu, Odometry, Detection3DArray, LabelInfo and our own messages: round trips through real
rclpy serialization, and a clear error for malformed input."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from vision_msgs.msg import ObjectHypothesisWithPose

from dynfusion_ros.core.types import (
    Box3D,
    Detection,
    EnergyRecord,
    ImuSample,
    Modality,
    ObjectClass,
    OdometryEstimate,
    Selection,
)
from dynfusion_ros.ros.convert import (
    ConversionError,
    detection_array_to_detections,
    detections_to_array,
    energy_record_to_msg,
    estimate_to_odometry,
    imu_to_sample,
    label_info,
    label_info_to_names,
    msg_to_energy_record,
    msg_to_selection,
    odometry_to_estimate,
    sample_to_imu,
    selection_to_msg,
    stamp_ns,
)


def reserialized(msg):
    return deserialize_message(serialize_message(msg), type(msg))


def imu_sample(**overrides):
    values = {
        "stamp_ns": 2_000_000_123,
        "angular_velocity": [0.01, -0.02, 0.3],
        "linear_acceleration": [0.5, 0.1, 9.81],
        "angular_velocity_covariance": np.eye(3) * 1e-4,
        "linear_acceleration_covariance": np.eye(3) * 1e-2,
        "frame_id": "imu_link",
    }
    values.update(overrides)
    return ImuSample(**values)


def test_imu_round_trip_without_orientation():
    sample = imu_sample()
    msg = reserialized(sample_to_imu(sample))
    assert msg.orientation_covariance[0] == -1
    back = imu_to_sample(msg)
    assert back.stamp_ns == sample.stamp_ns and back.orientation is None
    np.testing.assert_allclose(back.angular_velocity, sample.angular_velocity)
    np.testing.assert_allclose(back.linear_acceleration, sample.linear_acceleration)
    np.testing.assert_allclose(back.angular_velocity_covariance, sample.angular_velocity_covariance)


def test_imu_round_trip_with_orientation():
    q = np.array([0.0, 0.0, math.sin(0.25), math.cos(0.25)])
    back = imu_to_sample(reserialized(sample_to_imu(imu_sample(orientation=q))))
    np.testing.assert_allclose(back.orientation, q)
    assert back.orientation_covariance is None  # all-zero: unknown


def test_imu_all_zero_covariance_means_unknown():
    msg = sample_to_imu(imu_sample(angular_velocity_covariance=None))
    assert imu_to_sample(msg).angular_velocity_covariance is None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda m: setattr(m.angular_velocity, "x", float("nan")),
            r"angular_velocity: contains NaN",
        ),
        (
            lambda m: setattr(m.linear_acceleration, "z", float("inf")),
            r"linear_acceleration: contains NaN or infinity",
        ),
        (
            lambda m: m.linear_acceleration_covariance.__setitem__(4, -0.5),
            r"linear_acceleration_covariance: negative variance",
        ),
        (
            lambda m: m.angular_velocity_covariance.__setitem__(0, -1.0),
            r"angular_velocity_covariance: marks the quantity as not provided",
        ),
        (
            lambda m: (
                setattr(m, "orientation_covariance", [0.0] * 9),
                setattr(m.orientation, "w", 3.0),
            ),
            r"orientation: not a unit quaternion \(norm 3",
        ),
        (
            lambda m: setattr(m.linear_acceleration, "x", 1e6),
            r"linear_acceleration: 1e\+06 m/s\^2 is beyond any IMU's range",
        ),
        (
            lambda m: setattr(m.angular_velocity, "z", 40.0),  # 2290 deg/s
            r"angular_velocity: 40 rad/s is beyond any IMU's range",
        ),
    ],
    ids=[
        "nan-gyro",
        "inf-accel",
        "negative-variance",
        "gyro-missing",
        "non-unit-quaternion",
        "absurd-accel",
        "absurd-gyro",
    ],
)
def test_malformed_imu_raises_naming_the_field(mutate, message):
    msg = sample_to_imu(imu_sample())
    mutate(msg)
    with pytest.raises(ConversionError, match=message):
        imu_to_sample(msg)


def test_out_of_range_nanoseconds_are_rejected():
    # rclpy refuses such a stamp; a bag read with rosbags can still carry one.
    header = SimpleNamespace(stamp=SimpleNamespace(sec=1, nanosec=2_000_000_000), frame_id="")
    with pytest.raises(ConversionError, match=r"header\.stamp\.nanosec: 2000000000 is not in"):
        stamp_ns(header)
    assert stamp_ns(SimpleNamespace(stamp=SimpleNamespace(sec=1, nanosec=999_999_999))) == (
        1_999_999_999
    )


def test_odometry_round_trip_keeps_pose_twist_and_covariances():
    pose_cov = np.diag([0.1, 0.2, 0.3, 0.01, 0.02, 0.03])
    estimate = OdometryEstimate(
        stamp_ns=7_000_000_001,
        position=[10.0, -2.0, 0.1],
        orientation=[0.0, 0.0, math.sin(0.4), math.cos(0.4)],
        linear_velocity=[5.0, 0.1, 0.0],
        angular_velocity=[0.0, 0.0, 0.2],
        pose_covariance=pose_cov,
        twist_covariance=pose_cov * 2,
    )
    msg = reserialized(estimate_to_odometry(estimate))
    assert (msg.header.frame_id, msg.child_frame_id) == ("odom", "base_link")
    back = odometry_to_estimate(msg)
    assert back.stamp_ns == estimate.stamp_ns
    for name in (
        "position",
        "orientation",
        "linear_velocity",
        "angular_velocity",
        "pose_covariance",
        "twist_covariance",
    ):
        np.testing.assert_allclose(getattr(back, name), getattr(estimate, name))


def test_odometry_with_nan_or_zero_quaternion_is_an_error():
    msg = estimate_to_odometry(OdometryEstimate(0, [0, 0, 0], [0, 0, 0, 1]))
    msg.pose.pose.position.y = float("nan")
    with pytest.raises(ConversionError, match=r"pose\.pose\.position: contains NaN"):
        odometry_to_estimate(msg)
    msg.pose.pose.position.y = 0.0
    msg.pose.pose.orientation.w = 0.0
    with pytest.raises(ConversionError, match=r"pose\.pose\.orientation: .*non-zero quaternion"):
        odometry_to_estimate(msg)


DETECTIONS = [
    Detection(ObjectClass.CAR, 0.9, Box3D(12.0, -3.0, 0.8, 4.5, 1.9, 1.6, 0.3)),
    Detection(ObjectClass.PEDESTRIAN, 0.55, Box3D(8.0, 4.0, 0.9, 0.6, 0.6, 1.8, -2.9)),
    Detection(ObjectClass.CYCLIST, 0.3, Box3D(20.0, 0.5, 0.8, 1.8, 0.6, 1.7, 3.1)),
]


def test_detections_round_trip_through_detection3darray():
    msg = reserialized(detections_to_array(DETECTIONS, 5_000_000_000))
    assert msg.header.frame_id == "base_link" and len(msg.detections) == 3
    assert msg.detections[0].results[0].hypothesis.class_id == "0"
    back = detection_array_to_detections(msg)
    for original, received in zip(DETECTIONS, back, strict=True):
        assert received.object_class is original.object_class
        assert received.score == pytest.approx(original.score)
        np.testing.assert_allclose(received.box.as_array(), original.box.as_array(), atol=1e-9)


def test_detection_reader_accepts_class_names_and_picks_best_hypothesis():
    msg = detections_to_array(DETECTIONS[:1], 0)
    second = ObjectHypothesisWithPose()
    second.hypothesis.class_id = "Cyclist"
    second.hypothesis.score = 0.95
    msg.detections[0].results.append(second)
    (detection,) = detection_array_to_detections(msg)
    assert detection.object_class is ObjectClass.CYCLIST and detection.score == 0.95


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.results.clear(), r"detections\[1\]\.results: empty"),
        (
            lambda d: setattr(d.results[0].hypothesis, "class_id", "truck"),
            r"detections\[1\]\.results\.class_id: unknown class 'truck'",
        ),
        (lambda d: setattr(d.bbox.size, "x", -1.0), r"detections\[1\]: box size must be positive"),
        (
            lambda d: setattr(d.bbox.center.position, "x", float("inf")),
            r"detections\[1\]\.bbox\.center\.position: contains NaN",
        ),
        (
            lambda d: setattr(d.results[0].hypothesis, "score", 4.0),
            r"detections\[1\]: score must be in \[0, 1\]",
        ),
    ],
    ids=["no-hypothesis", "unknown-class", "negative-size", "infinite-centre", "score-range"],
)
def test_malformed_detection_raises_naming_its_index(mutate, message):
    msg = detections_to_array(DETECTIONS, 0)
    mutate(msg.detections[1])
    with pytest.raises(ConversionError, match=message):
        detection_array_to_detections(msg)


def test_label_info_maps_ids_to_names():
    msg = reserialized(label_info(list(ObjectClass), 0.3, 0))
    assert label_info_to_names(msg) == {0: "car", 1: "pedestrian", 2: "cyclist"}
    assert msg.threshold == pytest.approx(0.3)
    msg.class_map.append(msg.class_map[0])
    with pytest.raises(ConversionError, match=r"class_map\[3\]: class id 0 repeated"):
        label_info_to_names(msg)


def make_selection():
    return Selection(
        stamp_ns=3_100_000_000,
        policy="dynamic",
        branch_names=("camera", "lidar", "radar", "camera_lidar"),
        chosen=(False, True, True, False),
        predicted_utility=(0.2, 0.7, 0.4, 0.75),
        selection_utility=0.74,
        predicted_energy_j=1.8,
        budget_j=2.0,
        allowed_j=2.5,
        context_label="night",
        context_scores={"clear_day": 0.1, "night": 0.85, "fog": 0.05},
        sensor_available={
            Modality.CAMERA: True,
            Modality.LIDAR: True,
            Modality.RADAR: True,
            Modality.IMU: False,
        },
        sensor_age_s={Modality.CAMERA: 0.01, Modality.LIDAR: 0.0, Modality.RADAR: 0.03},
    )


def test_branch_selection_round_trip():
    selection = make_selection()
    msg = reserialized(selection_to_msg(selection))
    back = msg_to_selection(msg)
    assert back.chosen_branches == ("lidar", "radar")
    assert back.context_label == "night" and back.policy == "dynamic"
    assert back.context_scores["night"] == pytest.approx(0.85)
    assert back.sensor_available[Modality.IMU] is False
    assert math.isnan(back.sensor_age_s[Modality.IMU])
    assert back.predicted_energy_j == pytest.approx(1.8) and back.budget_j == pytest.approx(2.0)
    assert back.allowed_j == pytest.approx(2.5)


def test_branch_selection_with_ragged_arrays_is_an_error():
    msg = selection_to_msg(make_selection())
    msg.chosen = [True]
    with pytest.raises(ConversionError, match="chosen: has 1 entries for 4 branch_names"):
        msg_to_selection(msg)
    msg = selection_to_msg(make_selection())
    msg.sensor_names[0] = "sonar"
    with pytest.raises(ConversionError, match=r"sensor_names\[0\]: unknown sensor 'sonar'"):
        msg_to_selection(msg)


@pytest.mark.parametrize("field", ["budget_j", "allowed_j", "predicted_energy_j"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0])
def test_a_selection_with_figures_the_fusion_node_would_publish_badly_is_refused(field, value):
    msg = selection_to_msg(make_selection())
    setattr(msg, field, value)
    with pytest.raises(ConversionError, match=f"{field}: .* not a finite, non-negative"):
        msg_to_selection(msg)
    msg = selection_to_msg(make_selection())
    msg.context_scores[0] = math.inf
    with pytest.raises(ConversionError, match="context_scores: contains NaN"):
        msg_to_selection(msg)


def test_energy_report_round_trip():
    record = EnergyRecord(
        stamp_ns=1,
        component_energy_j={"stem/lidar": 1.2, "head/lidar": 0.3, "overhead": 0.05},
        branch_energy_j={"lidar": 1.5},
        budget_j=1.0,
        meter="model",
    )
    msg = reserialized(energy_record_to_msg(record))
    assert msg.over_budget and msg.total_energy_j == pytest.approx(1.55)
    back = msg_to_energy_record(msg)
    assert back.component_energy_j == pytest.approx(record.component_energy_j)
    assert back.meter == "model"
