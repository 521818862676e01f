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
FUZZ_MARK_NS = 777  # in every stamp sent: the listener tells our selections from the nodes'


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
                target.__setitem__(*value)
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
            "unknown option",
            lambda rng, s: selection(s, branch_names=["sonar"]),
            None,  # refused when its frame comes (most never do): no count to hold it to
            ("fusion",),
        ),
    ]


def _sweep_cases(real) -> list[Case]:
    """A real sweep (so the gate finds it usable and the lidar registration runs on it)
    with its per-point times absent, NaN or all equal: each once aborted the fusion node
    inside KISS-ICP."""
    from dynfusion_ros.ros.convert import columns_to_pointcloud2, pointcloud2_to_array

    points = pointcloud2_to_array(real)
    columns = {name: np.array(points[name]) for name in points.dtype.names}
    frame = real.header.frame_id

    def sweep(times: str):
        def make(rng, stamp):
            changed = dict(columns)
            if times == "absent":
                del changed["time"]
            else:
                fill = np.nan if times == "NaN" else 0.05
                changed["time"] = np.full_like(columns["time"], fill)
            return columns_to_pointcloud2(changed, stamp, frame)

        return make

    return [
        Case("/lidar/points", f"real sweep, point times {times}", sweep(times), None)
        for times in ("absent", "NaN", "equal")
    ]


def all_cases(real_sweep=None) -> list[Case]:
    """Every case; those made from ``real_sweep`` (a lidar PointCloud2 with a time
    field) when it is given."""
    cases = _cloud_cases("/lidar/points", "lidar_link", "lidar")
    cases += _cloud_cases("/radar/points", "radar_link", "radar")
    cases += _image_cases() + _camera_info_cases() + _imu_cases() + _transform_cases()
    cases += _selection_cases()
    return cases + (_sweep_cases(real_sweep) if real_sweep is not None else [])


def first_sweep(drive: Path):
    """The drive's first lidar sweep, as the nodes receive it."""
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader

    from dynfusion_ros.ros.replay import message_class

    with Reader(drive) as reader:
        lidar = [c for c in reader.connections if c.topic == "/lidar/points"]
        for connection, _, raw in reader.messages(connections=lidar):
            return deserialize_message(bytes(raw), message_class(connection.msgtype))
    raise ValueError(f"{drive}: no /lidar/points")


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


def _is_message(value) -> bool:
    return hasattr(value, "get_fields_and_field_types")


def _finite_floats(value) -> bool:
    """False for a float, or an array of floats, holding NaN or infinity."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return bool(np.isfinite(value).all())
    if getattr(value, "typecode", "") in ("f", "d"):  # array.array
        return all(map(math.isfinite, value))
    return True


def non_finite(msg, allowed: frozenset[str] = frozenset(), path: str = "") -> list[str]:
    """Paths of float fields holding NaN or infinity, but those ``allowed`` (the field
    names a message documents as NaN when unknown)."""
    found = []
    for name in msg.get_fields_and_field_types():
        if name in allowed:
            continue
        value, where = getattr(msg, name), f"{path}.{name}" if path else name
        if _is_message(value):
            found += non_finite(value, allowed, where)
        elif isinstance(value, list | tuple) and value and _is_message(value[0]):
            for index, item in enumerate(value):
                found += non_finite(item, allowed, f"{where}[{index}]")
        elif not _finite_floats(value):
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
            if getattr(msg, "header", None) and msg.header.stamp.nanosec % 1000 == FUZZ_MARK_NS:
                return  # one of ours (a malformed selection), not a node's output
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


# status (after the node's prefix) and key holding how many messages a topic delivered
RECEIVED = {
    "/lidar/points": ("lidar", "received"),
    "/radar/points": ("radar", "received"),
    "/camera/image_raw": ("camera", "received"),
    "/imu/data": ("imu", "received"),
    "/camera/camera_info": ("calibration", "/camera/camera_info: received"),
    "/tf_static": ("calibration", "/tf_static: received"),
    "/tf": ("calibration", "/tf: received"),
    "/dynfusion/selection": ("output", "selections_received"),  # the fusion node's
}


@dataclass
class FuzzReport:
    crashed: dict[str, str]  # node -> the end of its log
    non_finite: list[str]
    sent: Counter  # (topic, case name) -> malformed messages sent
    expected: Counter  # (status, key, node) -> malformed messages it must count
    counted: Counter  # (status, key, node) -> what the node's /diagnostics says
    lost: Counter  # (topic, node) -> messages DDS never delivered (best-effort topics)
    requests_sent: int
    requests_unanswered: list[str]
    requests_accepted: list[str]  # malformed requests a node took: must be none
    outputs: Counter
    resumed: bool  # detections stamped after the last malformed message
    good_set_after: bool  # a well-formed parameter set still works afterwards
    failed_frames: dict[str, int]  # the fusion node's failed-frame counters
    odometry: dict[str, str]  # the fusion node's odometry status: corrections' outcomes
    time_jumps: dict[str, int]  # node -> resets for a clock that went back: none here
    log_lines: dict[str, int]  # node -> lines it logged (warnings are rate-limited by kind)

    def problems(self) -> list[str]:
        out = [f"{node} died: {tail}" for node, tail in self.crashed.items()]
        out += [f"NaN or infinity published: {where}" for where in self.non_finite[:10]]
        out += [f"parameter request unanswered: {r}" for r in self.requests_unanswered]
        out += [f"malformed parameter request accepted: {r}" for r in self.requests_accepted]
        for (status, key, node), sent in self.expected.items():
            counted, lost = self.counted[status, key, node], self._lost(status, key, node)
            if counted < sent - lost:
                out.append(
                    f"{node}: {status}/{key}: {counted} counted of {sent} sent ({lost} lost)"
                )
        if not self.resumed:
            out.append("no detections after the last malformed message")
        if not self.good_set_after:
            out.append("a well-formed parameter set failed after the fuzz")
        out += [f"fusion frames failed: {key} = {n}" for key, n in self.failed_frames.items()]
        out += [
            f"{node}: {n} resets, the clock never went back"
            for node, n in self.time_jumps.items()
            if n
        ]
        return out

    def _lost(self, status: str, key: str, node: str) -> int:
        """Messages of the topics that count into this key that never reached the node."""
        topics = {topic for (topic, _), case in self._cases.items() if case == (status, key)}
        return sum(self.lost[topic, node] for topic in topics)

    _cases: dict = field(default_factory=dict)  # (topic, name) -> Case.counted

    def table(self) -> str:
        lines = [f"{'topic':22} {'malformed as':34} {'sent':>6}"]
        lines += [f"{t:22} {name:34} {n:6d}" for (t, name), n in sorted(self.sent.items())]
        heads = " ".join(f"{node:>17}" for node in NODES)
        lines += ["", f"{'counted on /diagnostics as':68} {'sent':>6} {heads}"]
        for status, key in sorted({(status, key) for status, key, _ in self.expected}):
            sent = max(self.expected[status, key, node] for node in NODES)
            cells = " ".join(
                f"{self.counted[status, key, node]:17d}"
                if (status, key, node) in self.expected
                else f"{'-':>17}"
                for node in NODES
            )
            lines.append(f"{status + ': ' + key:68.68} {sent:6d} {cells}")
        lines += ["", "not delivered by DDS (best-effort sensor topics, a busy node):"]
        lines += [
            f"  {topic} to {node}: {n}" for (topic, node), n in sorted(self.lost.items()) if n
        ]
        return "\n".join(lines)


def _start_nodes(domain_id: int, logs: Path, parameters: list[str]) -> dict[str, subprocess.Popen]:
    command = [sys.executable, "-m", "dynfusion_ros.cli", "run"]
    command += [arg for given in ["use_sim_time:=true", *parameters] for arg in ("-p", given)]
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain_id)}
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    processes = {}
    for name in NODES:
        log = (logs / f"{name}.log").open("w")
        processes[name] = subprocess.Popen(
            [*command, "--node", name], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    return processes


def _line_count(path: Path) -> int:
    try:
        return len(path.read_text(errors="replace").splitlines())
    except OSError:
        return 0


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


class FuzzRun:
    """Both nodes in processes of their own, and this process's node that plays the
    drive, sends the malformed messages and requests, and listens."""

    def __init__(self, domain_id: int, logs: Path, parameters: list[str]) -> None:
        import rclpy
        from rclpy.executors import MultiThreadedExecutor

        from dynfusion_ros.ros.dds import use_package_transports

        use_package_transports()
        self.logs = logs
        self.processes = _start_nodes(domain_id, logs, parameters)
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("fuzz_nodes", context=self.context)
        self.outputs = Outputs()
        _listen(self.node, self.outputs)
        self.executor = MultiThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()
        self.clients: dict = {}
        self.unanswered: list[str] = []
        self.accepted: list[str] = []

    def wait_for_nodes(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        node = self.node
        while (
            node.count_subscribers("/lidar/points") < len(NODES)
            or node.count_publishers("/dynfusion/detections") < 1
        ):
            if time.monotonic() > deadline or self.crashed():
                raise RuntimeError(f"the nodes did not start; logs in {self.logs}")
            time.sleep(0.2)
        time.sleep(1.0)  # discovery the other way

    def crashed(self) -> dict[str, str]:
        return {
            name: _tail(self.logs / f"{name}.log")
            for name, process in self.processes.items()
            if process.poll() is not None
        }

    def publishers(self, player, cases: list[Case]) -> dict:
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        publishers = dict(player.publishers)
        for case in cases:
            if case.topic not in publishers:
                static = case.topic == "/tf_static"
                qos = QoSProfile(
                    depth=100,
                    reliability=ReliabilityPolicy.RELIABLE,
                    durability=(
                        DurabilityPolicy.TRANSIENT_LOCAL if static else DurabilityPolicy.VOLATILE
                    ),
                )
                kind = type(case.make(np.random.default_rng(0), 0))
                publishers[case.topic] = self.node.create_publisher(kind, case.topic, qos)
        return publishers

    def request(self, target: str, service: str, what: str, request) -> None:
        if self.processes[target].poll() is not None:
            self.unanswered.append(f"{target}/{service}: {what} (the node had died)")
            return
        response = _call(self.node, self.clients, target, service, request)
        if response is None:
            self.unanswered.append(f"{target}/{service}: {what}")
        elif not _refused_everything(service, response):
            self.accepted.append(f"{target}/{service}: {what}")

    def close(self) -> None:
        import rclpy

        for process in self.processes.values():
            _stop(process)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def run_fuzz(
    drive: Path,
    messages: int,
    *,
    seed: int = 1,
    rate: float = 0.5,
    domain_id: int = 77,
    logs: Path | None = None,
    parameters: list[str] | None = None,
    progress: bool = False,
) -> FuzzReport:
    """Both nodes started (with NAME:=VALUE ``parameters``), ``drive`` played into them
    at ``rate`` with ``messages`` malformed messages spread through it (and every
    malformed parameter request, to each node, among them), then the nodes stopped;
    what they did."""
    from rosbags.rosbag2 import Reader

    from dynfusion_ros.ros.replay import Player

    logs = logs or Path(tempfile.mkdtemp(prefix="fuzz_nodes_"))
    logs.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cases = all_cases(first_sweep(drive))
    requests = [(target, *r) for target in NODES for r in parameter_requests()]
    request_every = max(messages // len(requests), 1)
    sent: Counter = Counter()
    run = FuzzRun(domain_id, logs, parameters or [])
    try:
        run.wait_for_nodes()
        with Reader(drive) as reader:
            player = Player(run.node, reader, None, clock=True)
            publishers = run.publishers(player, cases)
            bag_counts = Counter({c.topic: c.msgcount for c in player.connections})
            total = sum(bag_counts.values())
            share, fuzzed, last_fuzz_s = messages / total, 0, 0.0
            for played, (_, log_ns) in enumerate(player.play(reader, rate), start=1):
                while fuzzed < min(messages, round(played * share)):
                    case = cases[rng.integers(len(cases))]
                    stamp = log_ns + FUZZ_MARK_NS + STAMP_SPREAD_NS * int(rng.integers(1, 50))
                    publishers[case.topic].publish(case.make(rng, stamp))
                    sent[case.topic, case.name] += 1
                    fuzzed += 1
                    last_fuzz_s = log_ns / 1e9
                    if fuzzed % request_every == 0 and requests:
                        run.request(*requests.pop(0))
                if progress and played % 1000 == 0:
                    print(f"  {played}/{total} bag messages played, {fuzzed} malformed sent")
        for request in requests:  # a drive too short for them all
            run.request(*request)
        good = _good_parameter_set(run.node, run.clients)
        time.sleep(DRAIN_S)
        crashed = run.crashed()
    finally:
        run.close()
    return _report(
        cases, sent, bag_counts, run, crashed=crashed, last_fuzz_s=last_fuzz_s, good=good
    )


def _good_parameter_set(node, clients: dict) -> bool:
    from rcl_interfaces.msg import Parameter, ParameterValue
    from rcl_interfaces.srv import SetParameters

    budget = Parameter(name="energy_budget_j", value=ParameterValue(type=3, double_value=0.4))
    request = SetParameters.Request(parameters=[budget])
    response = _call(node, clients, "context_estimator", "set_parameters", request)
    return response is not None and response.results[0].successful


def _report(cases, sent, bag_counts, run: FuzzRun, *, crashed, last_fuzz_s, good) -> FuzzReport:
    outputs = run.outputs
    with outputs.lock:
        statuses = dict(outputs.statuses)

    def value(node: str, status: str, key: str) -> int:
        return int(statuses.get(f"{node}: {status}", {}).get(key, 0))

    by_name = {(case.topic, case.name): case for case in cases}
    expected: Counter = Counter()
    sent_on: Counter = Counter()
    for (topic, name), n in sent.items():
        sent_on[topic] += n
        case = by_name[topic, name]
        for node in case.counted_by if case.counted else ():
            expected[(*case.counted, node)] += n
    counted = Counter({key: value(key[2], key[0], key[1]) for key in expected})
    lost = Counter()
    published = Counter(bag_counts)
    published["/dynfusion/selection"] = outputs.counts["/dynfusion/selection"]  # the estimator's
    for topic, (status, key) in RECEIVED.items():
        for node in NODES:
            if topic == "/dynfusion/selection" and node != "fusion":
                continue
            delivered = published[topic] + sent_on[topic]
            lost[topic, node] = max(delivered - value(node, status, key), 0)
    fusion = statuses.get("fusion: output", {})
    report = FuzzReport(
        crashed=crashed,
        non_finite=outputs.non_finite,
        sent=sent,
        expected=expected,
        counted=counted,
        lost=lost,
        requests_sent=len(NODES) * len(parameter_requests()),
        requests_unanswered=run.unanswered,
        requests_accepted=run.accepted,
        outputs=outputs.counts,
        resumed=outputs.last_stamp_s.get("/dynfusion/detections", 0.0) > last_fuzz_s - 1.0,
        good_set_after=good,
        failed_frames={k: int(v) for k, v in fusion.items() if k.startswith("failed")},
        odometry=statuses.get("fusion: odometry", {}),
        time_jumps={node: value(node, "sync", "time_jumps") for node in NODES},
        log_lines={node: _line_count(run.logs / f"{node}.log") for node in NODES},
    )
    report._cases = {key: case.counted for key, case in by_name.items()}
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000, help="malformed messages to send")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--drive", type=Path, default=Path("data/demo/drive"))
    parser.add_argument("--rate", type=float, default=1.0, help="replay speed")
    parser.add_argument("--domain-id", type=int, default=77)
    parser.add_argument("--logs", type=Path, default=None, help="keep the nodes' logs here")
    parser.add_argument(
        "-p",
        dest="parameters",
        action="append",
        default=["odometry_corrections:=radar+lidar", "odometry_lidar_interval_s:=0.0"],
        metavar="NAME:=VALUE",
        help="a node parameter (default: the lidar registration on every frame, so that"
        " it meets the sweeps without usable point times)",
    )
    args = parser.parse_args()
    if args.drive == Path("data/demo/drive"):
        from dynfusion_ros.ros.demo import simulate_demo_drive

        simulate_demo_drive(args.drive)  # simulated once if missing
    elif not (args.drive / "metadata.yaml").is_file():
        parser.error(f"--drive {args.drive}: no rosbag2 there (see `dynfusion simulate`)")
    from dynfusion_ros.eval.profiling import machine_description

    print(f"machine: {machine_description()}")
    print(f"drive: {args.drive} at {args.rate:g}x; {args.messages} malformed, seed {args.seed}")
    started = time.monotonic()
    report = run_fuzz(
        args.drive,
        args.messages,
        seed=args.seed,
        rate=args.rate,
        domain_id=args.domain_id,
        logs=args.logs,
        parameters=args.parameters,
        progress=True,
    )
    print(report.table())
    print()
    print(f"crashes: {len(report.crashed)}; NaN or infinity published: {len(report.non_finite)}")
    print(
        f"parameter requests: {report.requests_sent} malformed sent, "
        f"{len(report.requests_unanswered)} unanswered, {len(report.requests_accepted)} accepted"
    )
    print(f"outputs received: {dict(report.outputs)}")
    print(f"fusion odometry: {report.odometry}")
    print(f"resets (clock went back): {report.time_jumps}; log lines: {report.log_lines}")
    print(f"took {time.monotonic() - started:.0f} s")
    problems = report.problems()
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("no problems" if not problems else f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
