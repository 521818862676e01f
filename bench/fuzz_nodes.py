"""Malformed input into both nodes, each in a process of its own, while a simulated drive
plays: every message type they take (clouds, images, IMU samples, CameraInfo, /tf and
/tf_static, the selections between them) and every parameter service, malformed in the
ways the field and an attacker produce them, at stamps stale, early and ahead.

Reported: crashes (a node process that died), NaN or infinity published where the
message does not allow it, parameter requests never answered, and per kind of malformed
message how many were sent and how many each node counted on /diagnostics. Seeded: a
run repeats. The suite runs a short one (test/test_fuzz_nodes.py).

    .venv/bin/python bench/fuzz_nodes.py --messages 20000 [--seed 1] [--drive DRIVE]
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NODES = ("context_estimator", "fusion")
START_TIMEOUT_S = 120.0
ANSWER_TIMEOUT_S = 10.0
DRAIN_S = 3.0  # after the replay: the last frames and a /diagnostics round come out
STAMP_SPREAD_NS = 1_000_000  # fuzz stamps lie this far apart, so none repeats a real one


# --- what is sent ---------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One kind of malformed (or merely odd) message. ``counted`` is the /diagnostics
    status (after the node's prefix) and key whose value must grow by one for each sent;
    None for a message that is to be used, or used in part, without harm."""

    topic: str
    name: str
    make: Callable[[np.random.Generator, int], object]  # (rng, stamp_ns) -> message
    counted: tuple[str, str] | None
    counted_by: tuple[str, ...] = NODES


def _cloud(stamp_ns: int, frame: str, points: int = 64, with_time: bool = True):
    from dynfusion_ros.ros.convert import columns_to_pointcloud2

    rng = np.random.default_rng(points)
    columns = {axis: rng.uniform(-20, 20, points).astype(np.float32) for axis in "xyz"}
    if with_time:
        columns["time"] = np.linspace(0, 0.1, points, dtype=np.float32)
    return columns_to_pointcloud2(columns, stamp_ns, frame)


def _with(msg, **fields):
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


def _point_field(name: str, offset: int, datatype: int = 7, count: int = 1):
    from sensor_msgs.msg import PointField

    return PointField(name=name, offset=offset, datatype=datatype, count=count)


def _cloud_cases(topic: str, frame: str, status: str) -> list[Case]:
    def dropped(kind: str) -> tuple[str, str]:
        return status, f"dropped: {kind}"

    def random_fields(rng, stamp):
        msg = _cloud(stamp, frame)
        names = ["".join(rng.choice(list("abcdefgh"), 6)) for _ in range(3)]
        msg.fields = [_point_field(name, 4 * i) for i, name in enumerate(names)]
        return msg

    def sweep(times: str):
        """A sweep KISS-ICP registers (2000 points on walls around the sensor), with
        per-point times absent, NaN or all equal: each once aborted the fusion node."""

        def make(rng, stamp):
            from dynfusion_ros.ros.convert import columns_to_pointcloud2

            angle = rng.uniform(0, 2 * np.pi, 2000)
            reach = rng.uniform(5, 30, 2000)
            columns = {
                "x": (reach * np.cos(angle)).astype(np.float32),
                "y": (reach * np.sin(angle)).astype(np.float32),
                "z": rng.uniform(0.2, 3.0, 2000).astype(np.float32),
            }
            if times != "absent":
                columns["time"] = np.full(2000, np.nan if times == "NaN" else 0.05, np.float32)
            return columns_to_pointcloud2(columns, stamp, frame)

        return make

    return [
        Case(
            topic,
            "point_step 2^31",
            lambda rng, s: _with(_cloud(s, frame), point_step=2**31),
            dropped("malformed point_step"),
        ),
        Case(
            topic,
            "row_step below width*point_step",
            lambda rng, s: _with(_cloud(s, frame), row_step=3),
            dropped("malformed row_step"),
        ),
        Case(
            topic,
            "width 2^31 (data short)",
            lambda rng, s: _with(_cloud(s, frame), width=2**31 - 1, row_step=2**31 - 1),
            dropped("malformed row_step"),
        ),
        Case(
            topic,
            "data truncated",
            lambda rng, s: _with(_cloud(s, frame), data=bytes(40)),
            dropped("malformed data"),
        ),
        Case(
            topic,
            "unknown datatype",
            lambda rng, s: _with(_cloud(s, frame), fields=[_point_field("x", 0, 99)]),
            dropped("malformed fields[...].datatype"),
        ),
        Case(topic, "random field names", random_fields, dropped("malformed fields")),
        Case(
            topic,
            "field count 2^31",
            lambda rng, s: _with(_cloud(s, frame), fields=[_point_field("x", 0, 7, 2**31)]),
            dropped("malformed fields[...]"),
        ),
        Case(topic, "sweep without point times", sweep("absent"), None),
        Case(topic, "sweep with NaN point times", sweep("NaN"), None),
        Case(topic, "sweep with equal point times", sweep("equal"), None),
    ]


def _image_cases() -> list[Case]:
    from sensor_msgs.msg import Image

    from dynfusion_ros.ros.convert import header_msg

    def image(stamp: int, **fields):
        msg = Image(header=header_msg(stamp, "camera_optical"), height=4, width=4, step=12)
        msg.encoding, msg.data = "rgb8", bytes(48)
        return _with(msg, **fields)

    status = "camera"
    return [
        Case(
            "/camera/image_raw",
            "unknown encoding",
            lambda rng, s: image(s, encoding="yuv422_yuy2"),
            (status, "dropped: malformed encoding"),
        ),
        Case(
            "/camera/image_raw",
            "step 2^31",
            lambda rng, s: image(s, step=2**31),
            (status, "dropped: malformed data"),
        ),
        Case(
            "/camera/image_raw",
            "data truncated",
            lambda rng, s: image(s, data=bytes(5)),
            (status, "dropped: malformed data"),
        ),
        Case(
            "/camera/image_raw",
            "size differs from CameraInfo",
            lambda rng, s: image(s),
            (status, "dropped: malformed width/height"),
        ),
        Case(
            "/camera/image_raw",
            "depth image",
            lambda rng, s: image(s, encoding="32FC1", step=16, data=bytes(64)),
            (status, "dropped: malformed encoding"),
        ),
    ]


def _camera_info_cases() -> list[Case]:
    from sensor_msgs.msg import CameraInfo

    from dynfusion_ros.ros.convert import header_msg

    def info(stamp: int, model: str = "plumb_bob", d=(), k=None):
        msg = CameraInfo(header=header_msg(stamp, "camera_optical"), width=640, height=384)
        msg.k = list(k) if k is not None else [400.0, 0, 320, 0, 400, 192, 0, 0, 1]
        msg.distortion_model, msg.d = model, list(d)
        return msg

    counted = ("calibration", "/camera/camera_info: refused")
    topic = "/camera/camera_info"
    return [
        Case(topic, "K all zero", lambda rng, s: info(s, k=[0.0] * 9), counted),
        Case(topic, "K NaN", lambda rng, s: info(s, k=[math.nan] * 9), counted),
        Case(topic, "3 coefficients", lambda rng, s: info(s, d=[0.1, 0.2, 0.3]), counted),
        Case(topic, "100 coefficients", lambda rng, s: info(s, d=[0.0] * 100), counted),
        Case(topic, "NaN coefficient", lambda rng, s: info(s, d=[math.nan] * 5), counted),
        Case(topic, "unknown model", lambda rng, s: info(s, "kb4", [0.1] * 4), counted),
        Case(topic, "equidistant, 1", lambda rng, s: info(s, "equidistant", [0.1]), counted),
    ]


def _imu_cases() -> list[Case]:
    from sensor_msgs.msg import Imu

    from dynfusion_ros.ros.convert import header_msg

    def imu(stamp: int, **change):
        msg = Imu(header=header_msg(stamp, "imu_link"))
        msg.linear_acceleration.z = 9.81
        for path, value in change.items():
            holder, name = path.split("__")
            target = getattr(msg, holder)
            if isinstance(value, tuple):
                getattr(target, "__setitem__")(*value)
            else:
                setattr(target, name, value)
        return msg

    topic, status = "/imu/data", "imu"
    return [
        Case(
            topic,
            "NaN gyro",
            lambda rng, s: imu(s, angular_velocity__x=math.nan),
            (status, "dropped: malformed angular_velocity"),
        ),
        Case(
            topic,
            "infinite acceleration",
            lambda rng, s: imu(s, linear_acceleration__y=math.inf),
            (status, "dropped: malformed linear_acceleration"),
        ),
        Case(
            topic,
            "1e6 m/s^2",
            lambda rng, s: imu(s, linear_acceleration__x=1e6),
            (status, "dropped: malformed linear_acceleration"),
        ),
        Case(
            topic,
            "3000 deg/s",
            lambda rng, s: imu(s, angular_velocity__z=52.4),
            (status, "dropped: malformed angular_velocity"),
        ),
        Case(
            topic,
            "non-unit quaternion",
            lambda rng, s: imu(s, orientation__w=3.0),
            (status, "dropped: malformed orientation"),
        ),
        Case(
            topic,
            "stale by 2 s",
            lambda rng, s: imu(s - 2_000_000_000),
            (status, "dropped: out of order (stamp behind the sensor's newest)"),
        ),
        Case(
            topic,
            "60 s in the past",
            lambda rng, s: imu(s - 60_000_000_000),
            (status, "dropped: stamp too far behind the clock"),
        ),
        Case(
            topic,
            "3 s ahead of the clock",
            lambda rng, s: imu(s + 3_000_000_000),
            (status, "dropped: stamp too far ahead of the clock"),
        ),
    ]


def _transform_cases() -> list[Case]:
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    def transforms(child: str, **change):
        transform = TransformStamped(child_frame_id=child)
        transform.header.frame_id = "base_link"
        transform.transform.rotation.w = 1.0
        for name, value in change.items():
            part, axis = name.split("__")
            setattr(getattr(transform.transform, part), axis, value)
        return TFMessage(transforms=[transform])

    cases = []
    for topic in ("/tf_static", "/tf"):
        counted = ("calibration", f"{topic}: refused")
        cases += [
            Case(
                topic,
                "zero quaternion",
                lambda rng, s: transforms("lidar_link", rotation__w=0.0),
                counted,
            ),
            Case(
                topic,
                "NaN translation",
                lambda rng, s: transforms("radar_link", translation__x=math.nan),
                counted,
            ),
        ]
    return cases


def _selection_cases() -> list[Case]:
    from dynfusion_msgs.msg import BranchSelection

    from dynfusion_ros.ros.convert import header_msg

    def selection(stamp: int, **fields):
        msg = BranchSelection(header=header_msg(stamp, "base_link"), policy="dynamic")
        msg.branch_names, msg.chosen, msg.predicted_utility = ["radar"], [True], [0.5]
        msg.budget_j, msg.predicted_energy_j = 0.3, 0.1
        return _with(msg, **fields)

    counted = ("output", "unusable_selections")
    topic = "/dynfusion/selection"
    return [
        Case(topic, "ragged arrays", lambda rng, s: selection(s, chosen=[]), counted, ("fusion",)),
        Case(
            topic,
            "NaN budget",
            lambda rng, s: selection(s, budget_j=math.nan),
            counted,
            ("fusion",),
        ),
        Case(
            topic,
            "unknown branch",
            lambda rng, s: selection(s, branch_names=["sonar"]),
            None,  # refused when its frame comes (most never do): no count to hold it to
            ("fusion",),
        ),
    ]


def all_cases() -> list[Case]:
    cases = _cloud_cases("/lidar/points", "lidar_link", "lidar")
    cases += _cloud_cases("/radar/points", "radar_link", "radar")
    cases += _image_cases() + _camera_info_cases() + _imu_cases() + _transform_cases()
    cases += _selection_cases()
    return [case for case in cases if not _no_time_twin(case)]


def _no_time_twin(case: Case) -> bool:
    """Radar scans have no per-point times: the lidar's time cases are the lidar's."""
    return case.topic == "/radar/points" and "time" in case.name


def parameter_requests() -> list[tuple[str, str, object]]:
    """(service suffix, what it is, request) of malformed parameter requests."""
    from rcl_interfaces.msg import Parameter, ParameterValue
    from rcl_interfaces.srv import (
        DescribeParameters,
        GetParameters,
        ListParameters,
        SetParameters,
        SetParametersAtomically,
    )

    def value(**fields) -> ParameterValue:
        return ParameterValue(**fields)

    def set_one(name: str, parameter_value: ParameterValue) -> SetParameters.Request:
        return SetParameters.Request(parameters=[Parameter(name=name, value=parameter_value)])

    requests = [
        ("set_parameters", "type code 255", set_one("energy_budget_j", value(type=255))),
        ("set_parameters", "int for a double", set_one("energy_budget_j", value(type=2))),
        (
            "set_parameters",
            "NaN budget",
            set_one("energy_budget_j", value(type=3, double_value=math.nan)),
        ),
        (
            "set_parameters",
            "1e308 budget",
            set_one("energy_budget_j", value(type=3, double_value=1e308)),
        ),
        (
            "set_parameters",
            "string for a double",
            set_one("energy_budget_j", value(type=4, string_value="lots")),
        ),
        ("set_parameters", "unknown name", set_one("warp_drive", value(type=1, bool_value=True))),
        ("set_parameters", "empty name", set_one("", value(type=3, double_value=1.0))),
        ("set_parameters", "name of 10k characters", set_one("x" * 10_000, value(type=1))),
        (
            "set_parameters",
            "unknown policy",
            set_one("policy", value(type=4, string_value="static:sonar")),
        ),
        (
            "set_parameters",
            "read-only topic",
            set_one("lidar_topic", value(type=4, string_value="/elsewhere")),
        ),
        (
            "set_parameters_atomically",
            "type code 255",
            SetParametersAtomically.Request(
                parameters=[Parameter(name="energy_budget_j", value=value(type=255))]
            ),
        ),
        ("get_parameters", "unknown names", GetParameters.Request(names=["a", "", "x" * 5000])),
        ("describe_parameters", "unknown names", DescribeParameters.Request(names=["?", ""])),
        (
            "list_parameters",
            "huge depth",
            ListParameters.Request(prefixes=["", "?" * 100], depth=2**64 - 1),
        ),
    ]
    return requests


# --- what is listened to --------------------------------------------------------------


def non_finite(msg, allowed: frozenset[str] = frozenset(), path: str = "") -> list[str]:
    """Paths of float fields holding NaN or infinity, but those ``allowed`` (the field
    names a message documents as NaN when unknown)."""
    found = []
    for name in msg.get_fields_and_field_types():
        value = getattr(msg, name)
        where = f"{path}.{name}" if path else name
        if name in allowed:
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                found.append(where)
        elif hasattr(value, "get_fields_and_field_types"):
            found += non_finite(value, allowed, where)
        elif (
            isinstance(value, (list, tuple))
            and value
            and hasattr(value[0], "get_fields_and_field_types")
        ):
            for index, item in enumerate(value):
                found += non_finite(item, allowed, f"{where}[{index}]")
        elif isinstance(value, np.ndarray) and value.dtype.kind == "f":
            if not np.isfinite(value).all():
                found.append(where)
        elif hasattr(value, "typecode") and value.typecode in "fd":  # array.array
            if not all(map(math.isfinite, value)):
                found.append(where)
    return found


# NaN where the message says it means "unknown" (see the interfaces' comments)
ALLOWED_NAN = {
    "/dynfusion/energy": frozenset({"measured_energy_j"}),
    "/dynfusion/selection": frozenset({"sensor_age_s", "predicted_utility", "selection_utility"}),
}


@dataclass
class Outputs:
    counts: Counter = field(default_factory=Counter)  # topic -> messages
    non_finite: list[str] = field(default_factory=list)
    last_stamp_s: dict[str, float] = field(default_factory=dict)
    statuses: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> key -> value
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, topic: str, msg) -> None:
        with self.lock:
            self.counts[topic] += 1
            if topic == "/diagnostics":
                for status in msg.status:
                    self.statuses[status.name] = {kv.key: kv.value for kv in status.values}
                return
            bad = non_finite(msg, ALLOWED_NAN.get(topic, frozenset()))
            if bad:
                self.non_finite.append(f"{topic}: {', '.join(bad)}")
            if hasattr(msg, "header"):
                stamp = msg.header.stamp
                self.last_stamp_s[topic] = stamp.sec + stamp.nanosec * 1e-9


def _listen(node, outputs: Outputs) -> None:
    from diagnostic_msgs.msg import DiagnosticArray
    from dynfusion_msgs.msg import BranchSelection, EnergyReport
    from nav_msgs.msg import Odometry
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from vision_msgs.msg import Detection3DArray

    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    for topic, kind in (
        ("/dynfusion/selection", BranchSelection),
        ("/dynfusion/detections", Detection3DArray),
        ("/dynfusion/energy", EnergyReport),
        ("/dynfusion/odometry", Odometry),
        ("/diagnostics", DiagnosticArray),
    ):
        node.create_subscription(kind, topic, lambda msg, t=topic: outputs.take(t, msg), reliable)


# --- the run --------------------------------------------------------------------------


@dataclass
class FuzzReport:
    crashed: dict[str, str]  # node -> its last output lines
    non_finite: list[str]
    sent: Counter  # (topic, case name) -> messages sent
    counted: dict[tuple[str, str], dict[str, int]]  # (status, key) -> node -> count
    expected: Counter  # (status, key, node) -> messages sent that it must count
    requests_sent: int
    requests_unanswered: list[str]
    requests_accepted: list[str]  # malformed requests a node took: must be none
    outputs: Counter
    resumed: bool  # detections stamped after the last malformed message
    good_set_after: bool  # a well-formed parameter set still works afterwards
    failures: dict[str, str]  # the fusion node's failed-frame counters

    def problems(self) -> list[str]:
        out = [f"{node} died: {tail}" for node, tail in self.crashed.items()]
        out += [f"NaN or infinity published: {where}" for where in self.non_finite[:10]]
        out += [f"parameter request unanswered: {r}" for r in self.requests_unanswered]
        out += [f"malformed parameter request accepted: {r}" for r in self.requests_accepted]
        for (status, key, node), sent in self.expected.items():
            counted = self.counted.get((status, key), {}).get(node, 0)
            if counted < sent:
                out.append(f"{node}: {status}/{key}: {counted} counted of {sent} sent")
        if not self.resumed:
            out.append("no detections after the last malformed message")
        if not self.good_set_after:
            out.append("a well-formed parameter set failed after the fuzz")
        out += [f"fusion frames failed: {key} = {n}" for key, n in self.failures.items()]
        return out

    def table(self) -> str:
        lines = [f"{'topic':22} {'malformed as':34} {'sent':>6}"]
        for (topic, name), n in sorted(self.sent.items()):
            lines.append(f"{topic:22} {name:34} {n:6d}")
        lines.append("")
        lines.append(
            f"{'counted on /diagnostics as':70} {'sent':>6} "
            + " ".join(f"{node:>17}" for node in NODES)
        )
        keys = sorted({(status, key) for status, key, _ in self.expected})
        for status, key in keys:
            sent = max(self.expected[status, key, node] for node in NODES)
            counts = self.counted.get((status, key), {})
            cells = " ".join(
                f"{counts.get(node, 0):17d}"
                if (status, key, node) in self.expected
                else f"{'-':>17}"
                for node in NODES
            )
            lines.append(f"{status + ': ' + key:70.70} {sent:6d} {cells}")
        return "\n".join(lines)


def _start_nodes(domain_id: int, logs: Path) -> dict[str, subprocess.Popen]:
    command = [sys.executable, "-m", "dynfusion_ros.cli", "run", "-p", "use_sim_time:=true"]
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain_id)}
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    processes = {}
    for name in NODES:
        log = (logs / f"{name}.log").open("w")
        processes[name] = subprocess.Popen(
            [*command, "--node", name], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    return processes


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _call(node, clients: dict, target: str, service: str, request) -> object | None:
    """The response, or None when none came within ANSWER_TIMEOUT_S."""
    import importlib

    key = (target, service)
    if key not in clients:
        kind = "".join(part.title() for part in service.split("_"))
        module = importlib.import_module("rcl_interfaces.srv")
        clients[key] = node.create_client(getattr(module, kind), f"/{target}/{service}")
        clients[key].wait_for_service(timeout_sec=ANSWER_TIMEOUT_S)
    future = clients[key].call_async(request)
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    return future.result() if future.done() else None


def _refused_everything(service: str, response) -> bool:
    if service == "set_parameters":
        return not any(result.successful for result in response.results)
    if service == "set_parameters_atomically":
        return not response.result.successful
    return True  # reads: an answer is all they owe


def run_fuzz(
    drive: Path,
    messages: int,
    seed: int = 1,
    rate: float = 0.5,
    domain_id: int = 77,
    logs: Path | None = None,
    progress: bool = False,
) -> FuzzReport:
    """Both nodes started, ``drive`` played into them at ``rate`` with ``messages``
    malformed messages spread through it (and every malformed parameter request, to each
    node, through it too), then the nodes stopped; what they did."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rosbags.rosbag2 import Reader

    from dynfusion_ros.ros.dds import use_package_transports
    from dynfusion_ros.ros.replay import Player

    use_package_transports()
    logs = logs or Path(tempfile.mkdtemp(prefix="fuzz_nodes_"))
    logs.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cases = all_cases()
    requests = [(target, *r) for target in NODES for r in parameter_requests()]
    processes = _start_nodes(domain_id, logs)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    node = rclpy.create_node("fuzz_nodes", context=context)
    outputs = Outputs()
    _listen(node, outputs)
    executor = MultiThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    sent: Counter = Counter()
    unanswered, accepted = [], []
    clients: dict = {}
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while node.count_subscribers("/lidar/points") < len(NODES):
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes.values()):
                raise RuntimeError(f"the nodes did not start; logs in {logs}")
            time.sleep(0.2)
        while node.count_publishers("/dynfusion/detections") < 1:
            time.sleep(0.2)
        time.sleep(1.0)  # discovery the other way
        static = QoSProfile(
            depth=100,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        with Reader(drive) as reader:
            player = Player(node, reader, None, clock=True)
            publishers = dict(player.publishers)
            kinds = {case.topic: type(case.make(rng, 0)) for case in cases}
            for topic, kind in kinds.items():
                if topic not in publishers:
                    qos = static if topic == "/tf_static" else reliable
                    publishers[topic] = node.create_publisher(kind, topic, qos)
            total = sum(c.msgcount for c in player.connections)
            every = max(total / max(messages, 1), 1e-9)  # bag messages per malformed one
            due, played, last_fuzz_s = 0.0, 0, 0.0
            pending_requests = list(requests)
            request_every = max(messages // max(len(requests), 1), 1)
            fuzzed = 0
            for _, log_ns in player.play(reader, rate):
                played += 1
                due += 1.0 / every
                while due >= 1.0 and fuzzed < messages:
                    due -= 1.0
                    case = cases[rng.integers(len(cases))]
                    stamp = log_ns + STAMP_SPREAD_NS * int(rng.integers(1, 50))
                    publishers[case.topic].publish(case.make(rng, stamp))
                    sent[case.topic, case.name] += 1
                    fuzzed += 1
                    last_fuzz_s = log_ns / 1e9
                    if fuzzed % request_every == 0 and pending_requests:
                        target, service, what, request = pending_requests.pop(0)
                        response = _call(node, clients, target, service, request)
                        if response is None:
                            unanswered.append(f"{target}/{service}: {what}")
                        elif not _refused_everything(service, response):
                            accepted.append(f"{target}/{service}: {what}")
                if progress and played % 500 == 0:
                    print(f"  {played}/{total} bag messages, {fuzzed} malformed", flush=True)
            for target, service, what, request in pending_requests:  # a short drive
                response = _call(node, clients, target, service, request)
                if response is None:
                    unanswered.append(f"{target}/{service}: {what}")
                elif not _refused_everything(service, response):
                    accepted.append(f"{target}/{service}: {what}")
        good = _good_parameter_set(node, clients)
        time.sleep(DRAIN_S)
        crashed = {
            name: _tail(logs / f"{name}.log")
            for name, process in processes.items()
            if process.poll() is not None
        }
    finally:
        for process in processes.values():
            _stop(process)
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
    return _report(cases, sent, outputs, crashed, requests, unanswered, accepted, last_fuzz_s, good)


def _good_parameter_set(node, clients: dict) -> bool:
    from rcl_interfaces.msg import Parameter, ParameterValue
    from rcl_interfaces.srv import SetParameters

    request = SetParameters.Request(
        parameters=[
            Parameter(name="energy_budget_j", value=ParameterValue(type=3, double_value=0.4))
        ]
    )
    response = _call(node, clients, "context_estimator", "set_parameters", request)
    return response is not None and response.results[0].successful


def _report(cases, sent, outputs, crashed, requests, unanswered, accepted, last_fuzz_s, good):
    expected: Counter = Counter()
    by_name = {(case.topic, case.name): case for case in cases}
    for key, n in sent.items():
        case = by_name[key]
        if case.counted is not None:
            for node in case.counted_by:
                expected[(*case.counted, node)] += n
    counted: dict[tuple[str, str], dict[str, int]] = {}
    with outputs.lock:
        statuses = dict(outputs.statuses)
    for status, key, node in expected:
        values = statuses.get(f"{node}: {status}", {})
        counted.setdefault((status, key), {})[node] = int(values.get(key, 0))
    fusion = statuses.get("fusion: output", {})
    failures = {k: int(v) for k, v in fusion.items() if k.startswith("failed")}
    return FuzzReport(
        crashed=crashed,
        non_finite=outputs.non_finite,
        sent=sent,
        counted=counted,
        expected=expected,
        requests_sent=len(requests),
        requests_unanswered=unanswered,
        requests_accepted=accepted,
        outputs=outputs.counts,
        resumed=outputs.last_stamp_s.get("/dynfusion/detections", 0.0) > last_fuzz_s - 1.0,
        good_set_after=good,
        failures=failures,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000, help="malformed messages to send")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--drive", type=Path, default=Path("data/demo/drive"))
    parser.add_argument("--rate", type=float, default=1.0, help="replay speed")
    parser.add_argument("--domain-id", type=int, default=77)
    parser.add_argument("--logs", type=Path, default=None, help="keep the nodes' logs here")
    args = parser.parse_args()
    if args.drive == Path("data/demo/drive"):
        from dynfusion_ros.ros.demo import simulate_demo_drive

        simulate_demo_drive(args.drive)  # simulated once if missing
    elif not (args.drive / "metadata.yaml").is_file():
        parser.error(f"--drive {args.drive}: no rosbag2 there (see `dynfusion simulate`)")
    from dynfusion_ros.eval.profiling import machine_description

    print(f"machine: {machine_description()}")
    print(
        f"drive: {args.drive} at {args.rate:g}x, {args.messages} malformed messages, seed {args.seed}"
    )
    started = time.monotonic()
    report = run_fuzz(
        args.drive, args.messages, args.seed, args.rate, args.domain_id, args.logs, progress=True
    )
    print(report.table())
    print()
    print(f"crashes: {len(report.crashed)}; NaN or infinity published: {len(report.non_finite)}")
    print(
        f"parameter requests: {report.requests_sent} malformed sent, "
        f"{len(report.requests_unanswered)} unanswered, {len(report.requests_accepted)} accepted"
    )
    print(f"outputs received: {dict(report.outputs)}")
    print(f"took {time.monotonic() - started:.0f} s")
    problems = report.problems()
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("no problems" if not problems else f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
