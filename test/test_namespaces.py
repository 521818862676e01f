"""Two instances side by side on one domain, in namespaces car1 and car2 (`dynfusion run
--namespace`), as two vehicles or two configurations on one graph: a drive replayed into
car1 comes out of car1 only; car2 hears nothing of it and says so on /diagnostics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

pytestmark = pytest.mark.slow

DRIVE_S = 4.0
RATE = 0.5
START_TIMEOUT_S = 120.0
DOMAIN_ID = (int(os.environ["ROS_DOMAIN_ID"]) + 70) % 100
WATCHED = [
    f"{namespace}/dynfusion/{output}"
    for namespace in ("/car1", "/car2", "")
    for output in ("detections", "selection")
]


@pytest.fixture(scope="module")
def drive(simulate_bag):
    return simulate_bag("clear", DRIVE_S, 31)


def _start(namespace: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "dynfusion_ros.cli", "run", "--namespace", namespace]
    return subprocess.Popen(
        [*command, "-p", "use_sim_time:=true"],
        env={**os.environ, "ROS_DOMAIN_ID": str(DOMAIN_ID)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _stop(process: subprocess.Popen) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        return process.communicate(timeout=30)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()[0]


def test_two_namespaced_instances_share_a_domain_without_crosstalk(drive):
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from dynfusion_msgs.msg import BranchSelection
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosbags.rosbag2 import Reader
    from vision_msgs.msg import Detection3DArray

    from dynfusion_ros.ros.replay import Player

    instances = {name: _start(name) for name in ("car1", "car2")}
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    node = rclpy.create_node("test_namespaces", context=context)
    received: dict[str, list] = {topic: [] for topic in (*WATCHED, "/diagnostics")}
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    for topic in WATCHED:
        kind = Detection3DArray if topic.endswith("detections") else BranchSelection
        node.create_subscription(kind, topic, received[topic].append, reliable)
    node.create_subscription(DiagnosticArray, "/diagnostics", received["/diagnostics"].append, 50)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(
            node.count_subscribers(f"/{name}/camera/image_raw") == 2
            and node.count_publishers(f"/{name}/dynfusion/detections") == 1
            for name in instances
        ):
            assert time.monotonic() < deadline, "the instances did not come up"
            assert all(p.poll() is None for p in instances.values()), "an instance died"
            time.sleep(0.2)
        time.sleep(1.0)
        with Reader(drive) as reader:
            player = Player(node, reader, None, clock=True, namespace="car1")
            for _ in player.play(reader, RATE):
                pass
        time.sleep(3.0)  # the last frames, and a round of /diagnostics
        died = [name for name, process in instances.items() if process.poll() is not None]
    finally:
        outputs = {name: _stop(process) for name, process in instances.items()}
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
    log = "\n".join(f"--- {name}:\n{text[-3000:]}" for name, text in outputs.items())
    assert not died, log
    assert all(process.returncode == 0 for process in instances.values()), log
    frames = round(DRIVE_S * 10)
    counts = {topic: len(messages) for topic, messages in received.items()}
    assert counts["/car1/dynfusion/detections"] >= 0.7 * frames, counts
    assert counts["/car1/dynfusion/selection"] >= 0.7 * frames, counts
    for quiet in ("/car2/dynfusion/detections", "/car2/dynfusion/selection"):
        assert counts[quiet] == 0, counts
    assert counts["/dynfusion/detections"] == counts["/dynfusion/selection"] == 0, counts
    statuses = {s.name: s for array in received["/diagnostics"] for s in array.status}
    assert {"car1/fusion: output", "car2/fusion: output", "car2/context_estimator: gate"} <= set(
        statuses
    )
    camera = statuses["car2/fusion: camera"]
    assert camera.message == "no message received", camera.message
    topic = {kv.key: kv.value for kv in statuses["car1/fusion: camera"].values}["topic"]
    assert topic == "/car1/camera/image_raw"
