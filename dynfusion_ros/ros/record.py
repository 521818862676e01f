"""`dynfusion record --out BAG TOPIC...`: write what arrives on topics into a rosbag2 (mcap),
as `ros2 bag record` does.

A topic is subscribed once it has a publisher (its type is learnt from the graph), with
a QoS that matches its publishers: best effort if any publisher is, transient local if
all are (so a latched LabelInfo published before recording began is still caught).
Messages are stored as they arrive, serialised, with the node clock's time as log time
(``--use-sim-time`` for a replay's /clock). Ctrl-C, SIGTERM or ``--duration`` ends it; the
bag is closed properly in every case.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from rosbags.rosbag2 import Writer
from rosbags.rosbag2.writer import StoragePlugin

from dynfusion_ros.ros.realtime import freeze_start_up_objects
from dynfusion_ros.ros.typestore import bag_typestore

DISCOVERY_PERIOD_S = 0.1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topics", nargs="+", help="topics to record")
    parser.add_argument("--out", type=Path, required=True, help="new rosbag2 folder")
    parser.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    parser.add_argument(
        "--use-sim-time", action="store_true", help="log times from /clock (a replay's time)"
    )


def matching_qos(publishers):
    """A subscription QoS compatible with every publisher in ``publishers``."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    offered = [info.qos_profile for info in publishers]
    best_effort = any(q.reliability == ReliabilityPolicy.BEST_EFFORT for q in offered)
    latched = bool(offered) and all(
        q.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in offered
    )
    return QoSProfile(
        depth=100,
        reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


class Recorder:
    def __init__(self, node, writer: Writer, topics: list[str]) -> None:
        self.node, self.writer = node, writer
        self.waiting = list(dict.fromkeys(topics))
        self.counts: dict[str, int] = {}
        self.subscriptions = []

    def discover(self) -> None:
        """Subscribe to every awaited topic that now has a publisher."""
        from dynfusion_ros.ros.replay import message_class

        types = dict(self.node.get_topic_names_and_types())
        for topic in [t for t in self.waiting if t in types]:
            publishers = self.node.get_publishers_info_by_topic(topic)
            if not publishers:
                continue
            msgtype = types[topic][0]
            connection = self.writer.add_connection(topic, msgtype, typestore=bag_typestore())
            self.subscriptions.append(
                self.node.create_subscription(
                    message_class(msgtype),
                    topic,
                    lambda raw, c=connection: self._store(c, raw),
                    matching_qos(publishers),
                    raw=True,
                )
            )
            self.waiting.remove(topic)
            self.counts[topic] = 0

    def _store(self, connection, raw: bytes) -> None:
        self.writer.write(connection, self.node.get_clock().now().nanoseconds, raw)
        self.counts[connection.topic] += 1


def _stop_on_sigterm() -> None:
    def handler(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def run(args: argparse.Namespace) -> int:
    from dynfusion_ros.ros.dds import use_package_transports

    use_package_transports()
    import rclpy
    from rclpy.parameter import Parameter

    if args.out.exists():
        print(f"dynfusion record: error: {args.out} exists; choose a new folder", file=sys.stderr)
        return 2
    _stop_on_sigterm()
    rclpy.init()
    node = rclpy.create_node(
        "dynfusion_record",
        parameter_overrides=[Parameter("use_sim_time", value=bool(args.use_sim_time))],
    )
    writer = Writer(args.out, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    recorder = Recorder(node, writer, args.topics)
    freeze_start_up_objects()  # a full collection would delay what is recorded, and when
    end = time.monotonic() + args.duration if args.duration else float("inf")
    try:
        while time.monotonic() < end:
            if recorder.waiting:
                recorder.discover()
            rclpy.spin_once(node, timeout_sec=DISCOVERY_PERIOD_S)
    except KeyboardInterrupt:
        pass
    finally:
        for stop in (signal.SIGINT, signal.SIGTERM):  # a second signal must not cut the close
            signal.signal(stop, signal.SIG_IGN)
        writer.close()
        node.destroy_node()
        rclpy.try_shutdown()
    summary = ", ".join(f"{t} {n}" for t, n in recorder.counts.items()) or "nothing"
    missing = f"; never published: {', '.join(recorder.waiting)}" if recorder.waiting else ""
    print(f"recorded into {args.out}: {summary}{missing}")
    return 0
