"""fusion: runs the detector as the context estimator configured it, publishes the result.

Assembles the same frames as the context estimator and pairs each with the
BranchSelection of the same stamp. A frame waits up to ``selection_wait_s`` for its
selection; when none comes (the estimator is down, slow, or keyed the frame
differently), the **fallback** is to choose here with the same gate, under the budget and
policy of the last selection received (before any: this node's own ``energy_budget_j``
and ``policy``). Every fallback is counted with its reason on /diagnostics.

Publishes vision_msgs/Detection3DArray on /dynfusion/detections (base_link, the frame's
stamp), vision_msgs/LabelInfo on /dynfusion/label_info (transient local) and
dynfusion_msgs/EnergyReport on /dynfusion/energy, one of each per frame; and the
odometry: the IMU filter, corrected as the selection says, as nav_msgs/Odometry on
/dynfusion/odometry (odom -> base_link) and as the odom -> base_link transform on /tf.
The transform goes out as tf2_msgs/TFMessage with the QoS tf2_ros's broadcaster uses,
so it needs no tf2_ros (absent from the PyPI wheels) and any TF listener takes it.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from dynfusion_msgs.msg import BranchSelection, EnergyReport
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import Detection3DArray, LabelInfo

from dynfusion_ros.core.detector.runner import INFERENCE_THREADS, DetectorRunner
from dynfusion_ros.core.energy import METERS, EnergyProfile, make_meter
from dynfusion_ros.core.fusion import METHODS
from dynfusion_ros.core.odometry.estimator import (
    DIVERGED,
    FILTER,
    REJECTED,
    OdometryEstimator,
)
from dynfusion_ros.core.pipeline import DynamicFusionPipeline
from dynfusion_ros.core.types import NS_PER_S, ObjectClass, Selection, SensorFrame
from dynfusion_ros.resources import default_model_path
from dynfusion_ros.ros.assembly import POLL_PERIOD_S
from dynfusion_ros.ros.context_estimator_node import SELECTION_QOS, SELECTION_TOPIC
from dynfusion_ros.ros.convert import (
    ConversionError,
    detections_to_array,
    energy_record_to_msg,
    estimate_to_odometry,
    estimate_to_transform,
    label_info,
    msg_to_selection,
)
from dynfusion_ros.ros.diagnostics import (
    FrameFailures,
    publish_diagnostics,
    status,
    status_prefix,
)
from dynfusion_ros.ros.gate_params import (
    GATE_PARAMS,
    apply_choice_change,
    choice_options,
    file_or_empty,
    make_gate,
)
from dynfusion_ros.ros.parameters import Param, declare
from dynfusion_ros.ros.sensor_input import SensorInput
from dynfusion_ros.ros.sensor_params import SENSOR_PARAMS
from dynfusion_ros.ros.sync import SyncedFrame
from dynfusion_ros.ros.timers import steady_timer
from dynfusion_ros.ros.work_queue import FrameQueue

SELECTIONS_KEPT = 100  # selections waiting for their frame
LATENCIES_KEPT = 200  # frames in the latency percentiles on /diagnostics


def _device(value: object) -> str:
    if value == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "cuda requested but torch sees no CUDA device"
    return ""


def _profile_mismatch(profile: EnergyProfile, values: Mapping) -> str:
    """Why the profile's prices may not be this node's, or "": measured on another
    device or at another thread count, every frame's energy is misjudged."""
    measured = profile.measured
    device = measured.get("device", values["device"])
    threads = measured.get("torch_threads", values["detector_threads"])
    if device != values["device"]:
        return f"{profile.source} was measured on {device}, the detector runs on {values['device']}"
    if values["device"] == "cpu" and threads != values["detector_threads"]:
        return (
            f"{profile.source} was measured with {threads} torch threads, the detector runs "
            f"with {values['detector_threads']}: its energy figures are off (re-run "
            f"`dynfusion profile --threads {values['detector_threads']}`)"
        )
    return ""


FOLLOWED = ("energy_budget_j", "policy")  # every selection brings its own
CHOICE_PARAMS = tuple(
    replace(
        param,
        runtime=False,
        description=param.description.split(" Settable")[0]
        + " On /fusion, read-only: the fallback for frames without a selection. The"
        " fusion node follows the context estimator's selections (their budget and"
        " policy); set it on /context_estimator.",
    )
    if param.name in FOLLOWED
    else param
    for param in GATE_PARAMS
)
"""The choice parameters as the fusion node declares them."""

FUSION_PARAMS = (
    Param(
        "detector_model",
        "",
        "The fused detector (JSON beside its .safetensors); empty: the shipped "
        "models/detector.json.",
        check=file_or_empty,
    ),
    Param("device", "cpu", "Where the detector runs.", choices=("cpu", "cuda"), check=_device),
    Param(
        "detector_threads",
        INFERENCE_THREADS,
        "torch CPU threads for the detector (process-wide). One by default: at batch 1 a"
        " second thread mostly spins, doubling the CPU time (energy) for about the same"
        " latency. The energy profile holds the count it was measured with; /diagnostics"
        " warns when they differ (re-run `dynfusion profile --threads N`).",
        1,
        64,
    ),
    Param(
        "score_threshold",
        0.05,
        "Detections scoring below this are not published (0-1).",
        0.0,
        1.0,
        runtime=True,
    ),
    Param(
        "fusion_method",
        "wbf",
        "How the late policy merges the stems' separate detections.",
        choices=METHODS,
        runtime=True,
    ),
    Param(
        "selection_wait_s",
        0.05,
        "Longest a frame waits for its selection once assembled and next in line (s);"
        " then the fallback chooses here.",
        0.0,
        2.0,
    ),
    Param(
        "max_queued_frames",
        2,
        "Frames that may wait for the detector while it runs on an earlier one; beyond"
        " this the oldest waiting frame is dropped (counted on /diagnostics; its IMU samples"
        " go to the next frame), so output stays current when the input outruns the detector.",
        1,
        100,
    ),
    Param(
        "energy_meter",
        "model",
        "What measures the energy reported beside the profile's figure: model (process"
        " CPU time x watts), rapl, nvml, jetson, or auto (the first available).",
        choices=("auto", *METERS),
    ),
    Param(
        "publish_tf",
        True,
        "Broadcast the odometry as the odom -> base_link transform on /tf. Off when "
        "another node (robot_localization, the vehicle) owns that transform.",
    ),
    Param(
        "model_meter_watts",
        10.0,
        "Power of one busy CPU core for the model meter (W).",
        0.1,
        1000.0,
    ),
)


@dataclass
class _Waiting:
    synced: SyncedFrame
    frame: SensorFrame
    deadline_ns: int


class FusionNode(Node):
    def __init__(self, **node_options) -> None:
        super().__init__("fusion", **node_options)
        self.prefix = status_prefix(self)
        values = declare(self, (*SENSOR_PARAMS, *CHOICE_PARAMS, *FUSION_PARAMS), self._on_change)
        detector = values["detector_model"] or default_model_path("detector.json")
        runner = DetectorRunner.load(
            detector, device=values["device"], threads=values["detector_threads"]
        )
        runner.warm_up()
        self.pipeline = DynamicFusionPipeline(
            runner,
            make_gate(values),
            fusion_method=values["fusion_method"],
            meter=make_meter(values["energy_meter"], watts=values["model_meter_watts"]),
            odometry=OdometryEstimator(),
            **choice_options(values),
        )
        self.pipeline.odometry.warm_up()
        self.detector_threads = values["detector_threads"]
        self.profile_mismatch = _profile_mismatch(self.pipeline.gate.profile, values)
        if self.profile_mismatch:
            self.get_logger().warning(self.profile_mismatch)
        self.publish_tf = values["publish_tf"]
        self.score_threshold = values["score_threshold"]
        self.wait_ns = round(values["selection_wait_s"] * NS_PER_S)
        self.selections: OrderedDict[int, Selection] = OrderedDict()
        # selections for frames this node never assembled (it was stopped, or its sensor
        # messages were lost): counted from its first frame on
        self.unmatched_selections = 0
        self._first_frame_ns: int | None = None
        self.waiting: deque[_Waiting] = deque()
        self.frames = 0
        self.fallbacks: Counter[str] = Counter()
        # chosen options the detector could not use (nothing to reuse, no pose): the frame
        # ran on the rest; (option, reason) -> frames
        self.skipped_options: Counter[tuple[str, str]] = Counter()
        self.over_budget = 0
        self.selections_received = 0
        self.bad_selections = 0
        self.latency_ms: deque[float] = deque(maxlen=LATENCIES_KEPT)
        self.compute_ms: deque[float] = deque(maxlen=LATENCIES_KEPT)
        self.queue = FrameQueue(values["max_queued_frames"])
        # the pipeline is the worker's; the executor thread (parameter changes, resets,
        # diagnostics) takes this lock before it touches it
        self.pipeline_lock = threading.Lock()
        self.failures = FrameFailures(self)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self.detections_pub = self.create_publisher(
            Detection3DArray, "dynfusion/detections", reliable
        )
        self.energy_pub = self.create_publisher(EnergyReport, "dynfusion/energy", reliable)
        self.labels_pub = self.create_publisher(LabelInfo, "dynfusion/label_info", latched)
        self.odometry_pub = self.create_publisher(Odometry, "dynfusion/odometry", reliable)
        tf_qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.tf_pub = self.create_publisher(TFMessage, "/tf", tf_qos) if self.publish_tf else None
        self.odometry_frames = 0
        self._publish_labels()
        self.selection_topic = self.resolve_topic_name(SELECTION_TOPIC)
        self.create_subscription(
            BranchSelection, self.selection_topic, self._on_selection, SELECTION_QOS
        )
        self.input = SensorInput(self, values, self._on_frame, on_time_jump=self._reset)
        steady_timer(self, POLL_PERIOD_S, self._drain)
        publish_diagnostics(self, self._statuses)
        self.worker = threading.Thread(target=self._work, name="fusion-branches", daemon=True)
        self.worker.start()

    def _publish_labels(self) -> None:
        now = self.get_clock().now().nanoseconds
        self.labels_pub.publish(label_info(list(ObjectClass), self.score_threshold, now))

    def _on_change(self, name: str, value: object) -> None:
        with self.pipeline_lock:  # never while the worker is inside a frame
            apply_choice_change(self.pipeline, name, value)
            if name == "fusion_method":
                self.pipeline.fusion_method = value
        if name == "score_threshold":
            self.score_threshold = value
            self._publish_labels()
        self.get_logger().info(f"{name} set to {value}")

    def _reset(self) -> None:
        with self.pipeline_lock:
            self.pipeline.reset()
        self.selections.clear()
        self._first_frame_ns = None
        self.waiting.clear()
        self.queue.clear()

    def _on_selection(self, msg) -> None:
        self.selections_received += 1
        try:
            selection = msg_to_selection(msg)
        except ConversionError as error:
            self.bad_selections += 1
            self.input.report(self.selection_topic, str(error), error.kind)
            return
        self.selections[selection.stamp_ns] = selection
        while len(self.selections) > SELECTIONS_KEPT:
            self.selections.popitem(last=False)
            self.unmatched_selections += 1
        self._drain()

    def _on_frame(self, synced: SyncedFrame, frame: SensorFrame) -> None:
        now = self.get_clock().now().nanoseconds
        self.waiting.append(_Waiting(synced, frame, now + self.wait_ns))
        self._drain()

    def _drain(self) -> None:
        """Hand waiting frames to the detector worker in stamp order: each once its
        selection is here or its wait is over (``FrameQueue`` drops the oldest when
        the worker falls behind, keeping its IMU samples). The wait counts from when
        the frame is next in line: the estimator chooses in stamp order too, so after a
        burst (frames held for a late tf tree come out together) the last frame's
        selection comes only after all the others'."""
        now = self.get_clock().now().nanoseconds
        while self.waiting:
            head = self.waiting[0]
            selection = self.selections.pop(head.frame.stamp_ns, None)
            if selection is None and now < head.deadline_ns:
                return
            self.waiting.popleft()
            if self.waiting:
                following = self.waiting[0]
                following.deadline_ns = max(following.deadline_ns, now + self.wait_ns)
            self._forget_selections_before(head.frame.stamp_ns)
            self.queue.put(head.frame, selection)

    def _forget_selections_before(self, stamp_ns: int) -> None:
        if self._first_frame_ns is None:
            self._first_frame_ns = stamp_ns
        while self.selections and next(iter(self.selections)) < stamp_ns:
            older, _ = self.selections.popitem(last=False)
            self.unmatched_selections += older > self._first_frame_ns

    def _work(self) -> None:
        """The detector runs here, so the executor keeps taking sensor messages meanwhile
        (their best-effort queues would overflow while a frame is being fused)."""
        while (item := self.queue.take()) is not None:
            frame, selection = item
            with self.pipeline_lock:
                self.failures.guard(frame.stamp_ns, self._run, frame, selection)

    def destroy_node(self) -> None:
        self.queue.close()
        self.worker.join()  # at most one frame: it must not publish on a destroyed node
        super().destroy_node()

    def _run(self, frame: SensorFrame, selection: Selection | None) -> None:
        pipeline = self.pipeline
        choice = None
        if selection is not None:
            try:
                self._follow(selection)  # first: a new budget restarts the savings
                choice = pipeline.adopt(selection)
            except ValueError as error:
                self.bad_selections += 1
                self.input.report(self.selection_topic, str(error), "unusable selection")
        if choice is None:
            reason = "no selection for the frame" if selection is None else "unusable selection"
            self.fallbacks[reason] += 1
            choice = pipeline.choose(frame)
        result = pipeline.execute(frame, choice)
        for option, reason in result.skipped.items():
            self.skipped_options[option, reason] += 1
        kept = [d for d in result.detections if d.score >= self.score_threshold]
        self.detections_pub.publish(detections_to_array(kept, frame.stamp_ns))
        self.energy_pub.publish(energy_record_to_msg(result.energy))
        estimate = result.odometry.estimate if result.odometry else None
        if estimate is not None:
            self.odometry_pub.publish(estimate_to_odometry(estimate))
            if self.tf_pub is not None:
                self.tf_pub.publish(TFMessage(transforms=[estimate_to_transform(estimate)]))
            self.odometry_frames += 1
        self.frames += 1
        self.over_budget += result.energy.over_budget
        now = self.get_clock().now().nanoseconds
        self.latency_ms.append((now - frame.stamp_ns) / 1e6)
        self.compute_ms.append(result.latency_ms)

    def _follow(self, selection: Selection) -> None:
        """Keep the fallback's budget and policy those of the estimator's last choice."""
        if selection.budget_j > 0:
            self.pipeline.budget_j = selection.budget_j
        if selection.policy not in (self.pipeline.policy.text, "oracle"):
            self.pipeline.policy = selection.policy

    def _statuses(self) -> list[DiagnosticStatus]:
        with self.pipeline_lock:
            return self._statuses_unlocked()

    def _statuses_unlocked(self) -> list[DiagnosticStatus]:
        pipeline = self.pipeline
        fallbacks = sum(self.fallbacks.values())
        level, message = DiagnosticStatus.OK, f"{self.frames} frames"
        if self.failures:
            level, message = DiagnosticStatus.ERROR, self.failures.summary()
        elif self.profile_mismatch:
            level, message = DiagnosticStatus.WARN, self.profile_mismatch
        elif (
            self.over_budget
            or fallbacks
            or self.bad_selections
            or self.queue.dropped
            or self.unmatched_selections
            or self.skipped_options
        ):
            level = DiagnosticStatus.WARN
            message = (
                f"{self.over_budget} over budget, {fallbacks} fallbacks, "
                f"{sum(self.skipped_options.values())} chosen detector options left out, "
                f"{self.bad_selections} unusable selections, "
                f"{self.queue.dropped} dropped while busy, "
                f"{self.unmatched_selections} frames never assembled here"
            )
        latency = np.array(self.latency_ms or [np.nan])
        compute = np.array(self.compute_ms or [np.nan])
        values = {
            "frames": self.frames,
            "frames_over_budget": self.over_budget,
            "fallback_frames": fallbacks,
            **{f"fallback: {reason}": n for reason, n in self.fallbacks.items()},
            "selections_received": self.selections_received,
            "unusable_selections": self.bad_selections,
            "energy_budget_j (fallback)": pipeline.budget_j,
            "policy (fallback)": pipeline.policy.text,
            "latency_ms_p50": f"{np.percentile(latency, 50):.1f}",
            "latency_ms_p99": f"{np.percentile(latency, 99):.1f}",
            "detector_ms_p50": f"{np.percentile(compute, 50):.1f}",
            "detector_ms_p99": f"{np.percentile(compute, 99):.1f}",
            **{f"left out: {o}: {why}": n for (o, why), n in self.skipped_options.items()},
            "frames_waiting": len(self.waiting),
            "frames_dropped_busy": self.queue.dropped,
            "frames_selected_but_never_assembled": self.unmatched_selections,
            "detector_threads": self.detector_threads,
            "energy_profile_threads": pipeline.gate.profile.measured.get("torch_threads", "?"),
            **self.failures.values(),
        }
        return [
            *self.input.statuses(self.prefix),
            status(f"{self.prefix}: output", level, message, values),
            self._odometry_status(),
        ]

    def _odometry_status(self) -> DiagnosticStatus:
        """Per correction, how often it was accepted, refused by the gate, or could not
        use its data (and why), as robot_localization reports its rejections."""
        outcomes = dict(self.pipeline.odometry.outcomes)
        runs = Counter()
        for (name, _), n in outcomes.items():
            runs[name] += n
        rejected = {name: n for (name, outcome), n in outcomes.items() if outcome == REJECTED}
        filter_ = self.pipeline.odometry.filter
        skipped = filter_.skipped
        failures = self.pipeline.odometry.failures
        level, message = DiagnosticStatus.OK, f"{self.odometry_frames} estimates published"
        if not self.odometry_frames and self.frames:
            reasons = "; ".join(reason for reason, _ in skipped.most_common(2))
            level = DiagnosticStatus.WARN
            message = f"no estimate yet: no usable IMU sample{f' ({reasons})' if reasons else ''}"
        elif outcomes.get((FILTER, DIVERGED)):
            level = DiagnosticStatus.WARN
            message = f"re-initialised {outcomes[FILTER, DIVERGED]} times (non-finite state)"
        elif any(n > runs[name] / 2 for name, n in rejected.items()):
            level = DiagnosticStatus.WARN
            message = (
                "most corrections of "
                + ", ".join(name for name, n in rejected.items() if n > runs[name] / 2)
                + " rejected as inconsistent"
            )
        values = {
            "estimates_published": self.odometry_frames,
            "odometry_corrections (fallback)": self.pipeline.odometry_policy.text,
            **{f"{name}: {outcome}": n for (name, outcome), n in sorted(outcomes.items())},
            **{f"imu samples skipped: {reason}": n for reason, n in sorted(skipped.items())},
            **{f"{name}: last failure": error for name, error in failures.items()},
            **({"filter: last warning": filter_.warnings[-1]} if filter_.warnings else {}),
        }
        return status(f"{self.prefix}: odometry", level, message, values)
