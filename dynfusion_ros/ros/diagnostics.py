"""/diagnostics for the nodes (diagnostic_msgs/DiagnosticArray), without diagnostic_updater.

diagnostic_updater is not on PyPI; what it would add here is a timer and a hardware id,
so a node hands ``publish_diagnostics`` a function returning its statuses.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

from dynfusion_ros.ros.timers import steady_timer

DIAGNOSTICS_PERIOD_S = 1.0


def status(name: str, level: bytes, message: str, values: dict[str, object]) -> DiagnosticStatus:
    return DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id="dynfusion",
        values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
    )


def status_prefix(node: Node) -> str:
    """What a node's status names start with: its name, and its namespace when it has
    one (/diagnostics is one topic for the whole graph: two vehicles' fusion nodes must
    not read alike there)."""
    return node.get_fully_qualified_name().lstrip("/")


def publish_diagnostics(node: Node, statuses: Callable[[], list[DiagnosticStatus]]) -> None:
    """Publish ``statuses()`` on /diagnostics (absolute: the aggregator's) once a second."""
    publisher = node.create_publisher(DiagnosticArray, "/diagnostics", 10)

    def tick() -> None:
        array = DiagnosticArray(status=statuses())
        array.header.stamp = node.get_clock().now().to_msg()
        publisher.publish(array)

    steady_timer(node, DIAGNOSTICS_PERIOD_S, tick)


class FrameFailures:
    """Frames a node's pipeline raised on. A bug or an input no check foresaw must cost
    that frame only: the error is logged with the frame's stamp, counted by type, and
    the node's status turns ERROR on /diagnostics."""

    def __init__(self, node: Node) -> None:
        self.logger = node.get_logger()
        self.counts: Counter[str] = Counter()

    def guard(self, stamp_ns: int, work: Callable[..., None], *arguments: object) -> None:
        """``work(*arguments)`` for the frame of ``stamp_ns``, whatever it raises."""
        try:
            work(*arguments)
        except Exception as error:  # any error: skip the frame, keep running
            self.counts[type(error).__name__] += 1
            self.logger.error(f"frame {stamp_ns} skipped: {type(error).__name__}: {error}")

    def __bool__(self) -> bool:
        return bool(self.counts)

    def summary(self) -> str:
        return f"{sum(self.counts.values())} frames failed; see the node's log"

    def values(self) -> dict[str, int]:
        return {f"failed: {name}": n for name, n in self.counts.items()}
