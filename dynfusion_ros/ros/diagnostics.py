"""/diagnostics for the nodes (diagnostic_msgs/DiagnosticArray), without diagnostic_updater.

diagnostic_updater is not on PyPI; what it would add here is a timer and a hardware id,
so a node hands ``publish_diagnostics`` a function returning its statuses.
"""

from __future__ import annotations

from collections.abc import Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

DIAGNOSTICS_PERIOD_S = 1.0


def status(name: str, level: bytes, message: str, values: dict[str, object]) -> DiagnosticStatus:
    return DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id="dynfusion",
        values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
    )


def publish_diagnostics(node: Node, statuses: Callable[[], list[DiagnosticStatus]]) -> None:
    """Publish ``statuses()`` on /diagnostics once a second."""
    publisher = node.create_publisher(DiagnosticArray, "/diagnostics", 10)

    def tick() -> None:
        array = DiagnosticArray(status=statuses())
        array.header.stamp = node.get_clock().now().to_msg()
        publisher.publish(array)

    node.create_timer(DIAGNOSTICS_PERIOD_S, tick)
