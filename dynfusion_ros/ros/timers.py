"""Timers on the steady clock, for the nodes' housekeeping (frame deadlines, /diagnostics).

A timer on the node's clock follows /clock under ``use_sim_time``: it stops when a replay
pauses, and under rclpy's EventsExecutor it fired in bursts and skipped ticks when /clock
advanced in 10 ms steps. Housekeeping wants to run at a steady pace whatever the sim
clock does; the callbacks read the node's clock themselves for the time that counts.
"""

from __future__ import annotations

from collections.abc import Callable

from rclpy.clock import Clock, ClockType
from rclpy.node import Node


def steady_timer(node: Node, period_s: float, callback: Callable[[], None]) -> None:
    node.create_timer(period_s, callback, clock=Clock(clock_type=ClockType.STEADY_TIME))
