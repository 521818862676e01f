"""Both nodes, each in a process of its own, fuzzed while a drive plays: malformed
messages of every type they take (and stale, early and ahead stamps, clouds without
usable point times, CameraInfo OpenCV cannot use) and malformed parameter requests.
Both must live, keep publishing, publish no NaN, answer every request, and count every
malformed message on /diagnostics by topic and kind (bench/fuzz_nodes.py, longer)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from fuzz_nodes import all_cases, first_sweep, run_fuzz

pytestmark = pytest.mark.slow

MESSAGES = 1500  # over 8 s of drive at half speed: about 90 a second
DOMAIN_ID = (int(os.environ["ROS_DOMAIN_ID"]) + 60) % 100


@pytest.fixture(scope="module")
def drive(simulate_bag):
    return simulate_bag("clear", 8.0, 5)


def test_fuzzed_nodes_live_count_every_malformed_message_and_publish_no_nan(drive, tmp_path):
    report = run_fuzz(
        drive,
        MESSAGES,
        seed=3,
        rate=0.5,
        domain_id=DOMAIN_ID,
        logs=tmp_path,
        parameters=["odometry_corrections:=radar+lidar", "odometry_lidar_interval_s:=0.0"],
    )
    table = report.table()
    assert not report.problems(), "\n".join(report.problems()) + "\n" + table
    assert sum(report.sent.values()) == MESSAGES
    cases = all_cases(first_sweep(drive))
    assert {topic for topic, _ in report.sent} == {case.topic for case in cases}
    sweeps = [name for topic, name in report.sent if name.startswith("real sweep")]
    assert len(sweeps) == 3  # and the lidar registration met them:
    assert int(report.odometry.get("lidar: accepted", 0)) >= 20, report.odometry
    assert report.outputs["/dynfusion/detections"] >= 40, report.outputs  # of 80 frames
    assert report.outputs["/dynfusion/odometry"] >= 40, report.outputs
    assert report.requests_sent >= 20 and not report.requests_unanswered
    # one stale IMU sample is out of order, never a time jump that resets odometry
    assert report.time_jumps == dict.fromkeys(report.time_jumps, 0)
    # warnings are rate-limited per topic and kind: not a line per malformed message
    assert all(lines < MESSAGES / 5 for lines in report.log_lines.values()), report.log_lines
