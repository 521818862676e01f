"""`dynfusion replay BAG`: publish a rosbag2's messages with their original timing, as
`ros2 bag play` does (rosbag2 itself is not on PyPI).

Messages go out as the bag stores them (serialised CDR, never re-encoded), paced by
their log times divided by ``--rate``. ``--clock`` publishes /clock with the bag's time,
so nodes with ``use_sim_time`` see the drive's own time; ``--loop`` starts over at the end
(the clock jumps back, and nodes reset). /tf_static goes out transient-local, as a
robot's static transforms do, so nodes that start later still get it. ``--namespace NS``
publishes every topic but /tf and /tf_static under /NS, for nodes run in that namespace.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from rosbags.rosbag2 import Reader, ReaderError

from dynfusion_ros.ros.realtime import freeze_start_up_objects

CLOCK_PERIOD_S = 0.01  # /clock every 10 ms of wall time, as `ros2 bag play --clock 100`
STATIC_TOPICS = ("/tf_static",)
GLOBAL_TOPICS = ("/tf", "/tf_static")  # one tree for the whole graph, as tf2 has it


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", type=Path, help="rosbag2 folder (mcap or sqlite3)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed (default 1)")
    parser.add_argument("--loop", action="store_true", help="start over at the end")
    parser.add_argument("--clock", action="store_true", help="publish /clock from the bag")
    parser.add_argument("--topics", nargs="+", default=None, help="only these topics")
    parser.add_argument(
        "--namespace", default="", help="publish the topics (but /tf, /tf_static) under /NS"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def message_class(msgtype: str):
    """The rclpy class of ``pkg/msg/Name``; ImportError naming it when not installed."""
    package, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError):
        raise ImportError(f"message type {msgtype} is not installed here") from None


class Player:
    """Publishes a bag's connections from one node; ``play`` paces them. A topic whose
    message type is not installed here is left out with a warning (in ``skipped``):
    the rest of the bag still plays, as ``ros2 bag play`` does."""

    def __init__(
        self,
        node,
        reader: Reader,
        topics: list[str] | None,
        clock: bool,
        namespace: str = "",
    ) -> None:
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock

        self.node = node
        chosen = [c for c in reader.connections if topics is None or c.topic in topics]
        self.skipped: dict[str, str] = {}  # topic -> why it is not played
        self.connections = []
        for connection in chosen:
            try:
                message_class(connection.msgtype)
            except ImportError as error:
                self.skipped[connection.topic] = str(error)
                continue
            self.connections.append(connection)
        self.publishers = {}
        for connection in self.connections:
            static = connection.topic in STATIC_TOPICS
            qos = QoSProfile(
                depth=100 if static else 20,
                reliability=ReliabilityPolicy.RELIABLE,
                durability=(
                    DurabilityPolicy.TRANSIENT_LOCAL if static else DurabilityPolicy.VOLATILE
                ),
            )
            kind = message_class(connection.msgtype)
            topic = connection.topic
            if namespace and topic not in GLOBAL_TOPICS:
                topic = f"/{namespace.strip('/')}{topic}"
            if connection.topic not in self.publishers:  # by the bag's name
                self.publishers[connection.topic] = node.create_publisher(kind, topic, qos)
        self.clock = node.create_publisher(Clock, "/clock", 10) if clock else None
        self.clock_class = Clock
        self.started_wall_ns = 0

    def publish_clock(self, bag_ns: int) -> None:
        if self.clock is not None:
            msg = self.clock_class()
            msg.clock.sec, msg.clock.nanosec = divmod(bag_ns, 1_000_000_000)
            self.clock.publish(msg)

    def play(
        self, reader: Reader, rate: float, skip: Callable[[str, int], bool] | None = None
    ) -> Iterator[tuple[str, int]]:
        """Publish every message at its time, but those ``skip(topic, log_ns)`` names;
        yields (topic, log time) of each as it goes out."""
        start_wall, start_bag = time.monotonic(), reader.start_time
        self.started_wall_ns = time.time_ns()  # the bag's start, on the system clock
        next_clock = 0.0
        for connection, log_ns, raw in reader.messages(connections=self.connections):
            if skip is not None and skip(connection.topic, log_ns):
                continue
            due = start_wall + (log_ns - start_bag) / 1e9 / rate
            while (now := time.monotonic()) < due:
                if self.clock is not None and now >= next_clock:
                    self.publish_clock(start_bag + round((now - start_wall) * rate * 1e9))
                    next_clock = now + CLOCK_PERIOD_S
                time.sleep(min(due - now, CLOCK_PERIOD_S))
            self.publish_clock(log_ns)
            self.publishers[connection.topic].publish(bytes(raw))
            yield connection.topic, log_ns


def run(args: argparse.Namespace) -> int:
    from dynfusion_ros.ros.dds import use_package_transports

    use_package_transports()
    import rclpy
    from tqdm import tqdm

    if not args.rate > 0:
        print(f"dynfusion replay: error: --rate must be positive, got {args.rate}", file=sys.stderr)
        return 2
    try:
        reader = Reader(args.bag)
        reader.open()
    except (ReaderError, FileNotFoundError) as error:
        print(f"dynfusion replay: error: {args.bag}: cannot read the bag: {error}", file=sys.stderr)
        return 2
    rclpy.init()
    node = rclpy.create_node("dynfusion_replay")
    try:
        player = Player(node, reader, args.topics, args.clock, args.namespace)
        for topic, reason in player.skipped.items():
            print(f"dynfusion replay: warning: {topic} not played: {reason}", file=sys.stderr)
        if not player.connections:
            print("dynfusion replay: error: no topic of the bag can be played", file=sys.stderr)
            return 2
        freeze_start_up_objects()  # a full collection would hold every message back
        while True:
            total = sum(c.msgcount for c in player.connections)
            for _ in tqdm(player.play(reader, args.rate), total=total, disable=args.quiet):
                pass
            if not args.loop:
                break
    except KeyboardInterrupt:
        pass
    finally:
        reader.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
