"""context_estimator: per frame, context features and the gate's detector configuration.

Subscribes to the sensors, assembles frames (``sync.py``), and publishes one
dynfusion_msgs/BranchSelection per frame on /dynfusion/selection, stamped with the
frame's stamp. Runs no detector: the choice is made before any stem. ``energy_budget_j``
and ``policy`` can be set while it runs (``ros2 param set``); refused values say why.
"""

from __future__ import annotations

from collections import Counter

from diagnostic_msgs.msg import DiagnosticStatus
from dynfusion_msgs.msg import BranchSelection
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from dynfusion_ros.core.pipeline import DynamicFusionPipeline
from dynfusion_ros.core.types import SensorFrame
from dynfusion_ros.ros.convert import selection_to_msg
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
    make_gate,
)
from dynfusion_ros.ros.parameters import declare
from dynfusion_ros.ros.sensor_input import SensorInput
from dynfusion_ros.ros.sensor_params import SENSOR_PARAMS
from dynfusion_ros.ros.sync import SyncedFrame

SELECTION_TOPIC = "dynfusion/selection"  # relative: each namespace has its own pair
SELECTION_QOS = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)


class ContextEstimatorNode(Node):
    def __init__(self, **node_options) -> None:
        super().__init__("context_estimator", **node_options)
        self.prefix = status_prefix(self)
        values = declare(self, (*SENSOR_PARAMS, *GATE_PARAMS), self._on_change)
        self.pipeline = DynamicFusionPipeline(None, make_gate(values), **choice_options(values))
        self.publisher = self.create_publisher(BranchSelection, SELECTION_TOPIC, SELECTION_QOS)
        self.input = SensorInput(self, values, self._on_frame, on_time_jump=self.pipeline.reset)
        self.frames = 0
        self.fallbacks: Counter[str] = Counter()
        self.unaffordable = 0  # frames where nothing available fitted the budget
        self.last_choice = ""
        self.failures = FrameFailures(self)
        publish_diagnostics(self, self._statuses)

    def _on_change(self, name: str, value: object) -> None:
        apply_choice_change(self.pipeline, name, value)
        self.get_logger().info(f"{name} set to {value}")

    def _on_frame(self, _: SyncedFrame, frame: SensorFrame) -> None:
        self.failures.guard(frame.stamp_ns, self._select, frame)

    def _select(self, frame: SensorFrame) -> None:
        choice = self.pipeline.choose(frame)
        self.publisher.publish(selection_to_msg(choice.selection))
        decision = choice.decision
        self.frames += 1
        self.fallbacks[decision.fallback] += bool(decision.fallback)
        self.unaffordable += decision.over_budget
        corrections = "+".join(choice.selection.odometry_corrections) or "IMU only"
        detector = " | ".join(c.text for c in decision.chosen) or "nothing"
        self.last_choice = f"{detector}, odometry {corrections}"

    def _statuses(self) -> list[DiagnosticStatus]:
        pipeline = self.pipeline
        level, message = DiagnosticStatus.OK, f"running {self.last_choice or 'nothing yet'}"
        if self.failures:
            level, message = DiagnosticStatus.ERROR, self.failures.summary()
        elif self.unaffordable:
            level = DiagnosticStatus.WARN
            message = f"{self.unaffordable} frames had nothing within the budget"
        values = {
            "policy": pipeline.policy.text,
            "energy_budget_j": pipeline.budget_j,
            "budget_window_frames": pipeline.gate.budget_window_frames,
            "budget_savings_j": f"{pipeline.gate.account.savings_j:.4f}",
            "energy_price": f"{pipeline.gate.account.price:.4g}",
            "odometry_corrections": pipeline.odometry_policy.text,
            "odometry_budget_share": pipeline.correction_limits.max_budget_share,
            "cheapest_selection_j": f"{pipeline.gate.cheapest_energy_j:.4f}",
            "frames": self.frames,
            "frames_over_budget": self.unaffordable,
            "fallback_frames": sum(self.fallbacks.values()),
            **{f"fallback: {reason}": n for reason, n in self.fallbacks.items() if n},
            **self.failures.values(),
        }
        return [
            *self.input.statuses(self.prefix),
            status(f"{self.prefix}: gate", level, message, values),
        ]
