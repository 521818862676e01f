"""Object tracks: velocities in odom from consecutive detections, predicted to a later
frame through the ego motion."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dynfusion_ros.core.tracking import ObjectTracks
from dynfusion_ros.core.types import Box3D, Detection, ObjectClass

PERIOD_NS = 100_000_000
CAR, PEDESTRIAN = ObjectClass.CAR, ObjectClass.PEDESTRIAN


def seen_from(pose: np.ndarray, x: float, y: float, yaw: float, cls=CAR) -> Detection:
    """The detection of an object at (x, y, yaw) in odom, in base_link at ``pose``."""
    cos, sin = math.cos(pose[2]), math.sin(pose[2])
    dx, dy = x - pose[0], y - pose[1]
    box = Box3D(cos * dx + sin * dy, -sin * dx + cos * dy, 0.8, 4.5, 1.9, 1.6, yaw - pose[2])
    return Detection(cls, 0.9, box)


def ego(step: int) -> np.ndarray:
    """The vehicle drives at 5 m/s and turns at 0.2 rad/s."""
    yaw = 0.02 * step
    return np.array([0.5 * step * math.cos(yaw / 2), 0.5 * step * math.sin(yaw / 2), yaw])


def test_a_moving_car_is_predicted_where_it_goes_while_the_vehicle_turns():
    tracks = ObjectTracks()
    for step in range(6):  # the car drives along odom y at 8 m/s from (20, -5)
        tracks.update(
            [seen_from(ego(step), 20.0, -5.0 + 0.8 * step, math.pi / 2)],
            ego(step),
            step * PERIOD_NS,
        )
    pose = ego(6)
    (predicted,) = tracks.predict(pose, 6 * PERIOD_NS)
    expected = seen_from(pose, 20.0, -5.0 + 0.8 * 6, math.pi / 2).box
    assert math.hypot(predicted.box.x - expected.x, predicted.box.y - expected.y) < 0.05
    assert predicted.box.yaw == pytest.approx(expected.yaw)
    speed = math.hypot(*predicted.velocity)
    assert speed == pytest.approx(8.0, abs=0.1)
    # in base_link the velocity points along the car's heading there
    assert math.atan2(predicted.velocity[1], predicted.velocity[0]) == pytest.approx(
        expected.yaw, abs=0.02
    )


def test_a_new_object_starts_at_rest_and_another_class_never_continues_a_track():
    tracks = ObjectTracks()
    pose = np.zeros(3)
    tracks.update([seen_from(pose, 10.0, 0.0, 0.0)], pose, 0)
    # a pedestrian where the car was, a frame later: a new track, not the car moving
    tracks.update([seen_from(pose, 10.3, 0.0, 0.0, PEDESTRIAN)], pose, PERIOD_NS)
    (walker,) = tracks.predict(pose, 2 * PERIOD_NS)
    assert walker.object_class is PEDESTRIAN and walker.velocity == (0.0, 0.0)
    assert walker.box.x == pytest.approx(10.3)


def test_nearest_pairs_first_and_an_impossible_speed_is_a_mix_up():
    tracks = ObjectTracks()
    pose = np.zeros(3)
    tracks.update([seen_from(pose, 10.0, 0.0, 0.0), seen_from(pose, 12.0, 0.0, 0.0)], pose, 0)
    # each car moved 0.5 m: each continues its own track, not the other's (1.5 m off)
    tracks.update(
        [seen_from(pose, 12.5, 0.0, 0.0), seen_from(pose, 10.5, 0.0, 0.0)], pose, PERIOD_NS
    )
    moved = tracks.predict(pose, 2 * PERIOD_NS)
    assert sorted(round(d.box.x, 3) for d in moved) == [11.0, 13.0]
    # a pedestrian "moving" 0.9 m in 0.1 s (9 m/s) is a new one, at rest
    walkers = ObjectTracks()
    walkers.update([seen_from(pose, 5.0, 0.0, 0.0, PEDESTRIAN)], pose, 0)
    walkers.update([seen_from(pose, 5.9, 0.0, 0.0, PEDESTRIAN)], pose, PERIOD_NS)
    assert walkers.predict(pose, 2 * PERIOD_NS)[0].velocity == (0.0, 0.0)


def test_tracks_end_when_missed_and_predictions_say_why_not():
    tracks = ObjectTracks(max_age_s=0.3)
    pose = np.zeros(3)
    assert tracks.predict(pose, 0) == "no earlier detections to track"
    tracks.update([seen_from(pose, 10.0, 0.0, 0.0)], pose, 0)
    assert "0.40 s old" in tracks.predict(pose, 4 * PERIOD_NS)
    assert "0.00 s old" in tracks.predict(pose, 0)
    tracks.update([], pose, PERIOD_NS)  # the detector found nothing: nothing to predict
    assert tracks.predict(pose, 2 * PERIOD_NS) == []
    with pytest.raises(ValueError, match="smoothing"):
        ObjectTracks(smoothing=0.0)


def test_a_prediction_s_score_decays_with_its_age():
    """An older prediction ranks below a fresher one, and both below the detection."""
    tracks = ObjectTracks(score_half_life_s=0.2)
    detection = seen_from(ego(0), 20.0, 3.0, 0.0)
    tracks.update([detection], ego(0), 0)
    one, two = (tracks.predict(ego(k), k * PERIOD_NS)[0].score for k in (1, 2))
    assert detection.score > one > two
    assert two == pytest.approx(detection.score / 2)
    with pytest.raises(ValueError, match="score_half_life_s must be positive"):
        ObjectTracks(score_half_life_s=0.0)
