"""Bring-up without launch: both nodes in one process, each on its own thread
(`dynfusion run`), and the per-node executables launch files start
(`context_estimator`, `fusion`).

The parameters file is the one the launch files use (config/dynfusion.yaml): a ``/**``
section both nodes read, and a section per node.
"""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from dynfusion_ros.resources import package_file
from dynfusion_ros.ros.realtime import (
    freeze_start_up_objects,
    keep_freed_memory,
    limit_allocator_arenas,
)

PARAMS_FILE = Path("config/dynfusion.yaml")
NODE_NAMES = ("context_estimator", "fusion")
START_ERRORS = (ValueError, RuntimeError, OSError)  # parameters, model files, meters
STOP_POLL_S = 0.1  # how soon the executors notice a stop (s)
EXECUTORS = ("events", "single")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--params",
        type=Path,
        default=None,
        help="ROS 2 parameters file (default: the shipped config/dynfusion.yaml)",
    )
    parser.add_argument(
        "--node",
        choices=("both", *NODE_NAMES),
        default="both",
        help="run both nodes in this process (default) or one of them, one process per node"
        " as the launch files do",
    )
    parser.add_argument(
        "--executor",
        choices=EXECUTORS,
        default=EXECUTORS[0],
        help="rclpy executor per node: events (rclpy's EventsExecutor, in C++; default) or"
        " single (SingleThreadedExecutor, pure Python: three times the latency here)",
    )
    parser.add_argument(
        "--namespace",
        default="",
        help="run the nodes in this namespace (their topics, but /tf, /tf_static and"
        " /diagnostics, are relative): two robots or two instances on one graph",
    )
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME:=VALUE",
        help="set a parameter on both nodes, e.g. -p energy_budget_j:=0.3 (repeatable)",
    )


def ros_arguments(params: Path | None, overrides: Sequence[str], namespace: str = "") -> list[str]:
    """rclpy's command line for a parameters file, NAME:=VALUE overrides and a namespace.

    The overrides go into a second parameters file, under each node's name in any
    namespace: rcl ranks a plain ``-p`` (a wildcard) below a node's own section of the
    first file, so ``-p score_threshold:=0`` would not reach the fusion node."""
    params = params or package_file(PARAMS_FILE)
    if not params.is_file():
        raise ValueError(f"no parameters file {params}")
    values = {}
    for override in overrides:
        name, separator, value = override.partition(":=")
        if not (separator and name and value):
            raise ValueError(f"-p {override!r}: expected NAME:=VALUE")
        values[name] = yaml.safe_load(value)  # typed as ROS types them: 0.3, true, [a, b]
    arguments = ["--ros-args", "--params-file", str(params)]
    if namespace:
        from rclpy.exceptions import InvalidNamespaceException
        from rclpy.validate_namespace import validate_namespace

        namespace = "/" + namespace.strip("/")
        try:
            validate_namespace(namespace)
        except InvalidNamespaceException as error:
            raise ValueError(f"--namespace: {str(error).splitlines()[0]}") from None
        arguments += ["-r", f"__ns:={namespace}"]
    if values:
        sections = {f"/**/{node}": {"ros__parameters": dict(values)} for node in NODE_NAMES}
        handle, path = tempfile.mkstemp(prefix="dynfusion-overrides-", suffix=".yaml")
        with os.fdopen(handle, "w") as file:
            yaml.safe_dump(sections, file)
        atexit.register(os.remove, path)
        arguments += ["--params-file", path]
    return arguments


def spin(
    factories: Sequence[Callable[[], object]],
    arguments: list[str],
    executor_kind: str = EXECUTORS[0],
) -> int:
    """Create the nodes and spin them until Ctrl-C or SIGTERM, each on its own thread
    with its own executor; a start-up error is one line, exit 2.

    The executor is rclpy's EventsExecutor unless ``executor_kind`` is "single" or this rclpy
    lacks it. It runs the ready callbacks from C++; the Python executors rebuild their
    wait set in Python for every callback, which with 200 IMU messages a second per node
    made the node threads' own overhead saturate a 2-core machine. Replaying the demo
    drive with the six-branch model's policy `all` (2-core EPYC): detections 120 ms after
    their stamp (p50), no frame dropped, against 355 ms and 28 % dropped with one
    SingleThreadedExecutor per node, and worse again with one MultiThreadedExecutor for
    both.

    The stop is ordered by hand. rclpy's own signal handler shuts the context down at
    once, under the fusion worker's feet, and ``Executor.shutdown`` destroys its guard
    condition without waiting for a spin that is still waiting on it: either crashed the
    process at exit now and then (SIGSEGV). Here a signal only sets ``stop``; each
    executor leaves its loop within ``STOP_POLL_S``, and only then are the executors,
    the nodes (the fusion worker first) and the context torn down."""
    from dynfusion_ros.ros.dds import use_package_transports

    limit_allocator_arenas()  # before rclpy starts the DDS threads
    keep_freed_memory()
    use_package_transports()
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=arguments, signal_handler_options=SignalHandlerOptions.NO)
    nodes = []
    try:
        for factory in factories:
            nodes.append(factory())
    except (*START_ERRORS, KeyboardInterrupt) as error:
        print(f"dynfusion: cannot start: {error or 'interrupted'}", file=sys.stderr)
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()
        return 2
    freeze_start_up_objects()
    stop = threading.Event()
    failed: list[str] = []
    signalled: list[int] = []  # a handler that took a lock could deadlock the main thread
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda number, _: signalled.append(number))
    make_executor = _executor_class(executor_kind)
    executors = [make_executor() for _ in nodes]
    threads = []
    for executor, node in zip(executors, nodes, strict=True):
        executor.add_node(node)
        thread = threading.Thread(
            target=_spin_until, args=(executor, stop, failed), name=node.get_name()
        )
        thread.start()
        threads.append(thread)
    while not (signalled or stop.is_set()):
        time.sleep(STOP_POLL_S)
    stop.set()
    for thread in threads:
        thread.join()
    for executor in executors:
        executor.shutdown(timeout_sec=0)
    for node in nodes:
        node.destroy_node()
    rclpy.try_shutdown()
    print("dynfusion: nodes stopped", file=sys.stderr, flush=True)
    return 1 if failed else 0


def _executor_class(name: str):
    from rclpy.executors import SingleThreadedExecutor

    if name == "events":
        try:
            from rclpy.experimental import EventsExecutor
        except ImportError:
            print("dynfusion: this rclpy has no EventsExecutor; using single", file=sys.stderr)
        else:
            return EventsExecutor
    return SingleThreadedExecutor


def _spin_until(executor, stop: threading.Event, failed: list[str]) -> None:
    """Spin until ``stop``; an exception that escapes a callback stops every node (the
    process then exits 1) rather than leaving this one deaf while the others run."""
    try:
        while not stop.is_set():
            executor.spin_once(timeout_sec=STOP_POLL_S)
    except Exception:
        failed.append(threading.current_thread().name)
        traceback.print_exc()
        print(f"dynfusion: {failed[-1]} failed; stopping", file=sys.stderr, flush=True)
        stop.set()


def run(args: argparse.Namespace) -> int:
    from dynfusion_ros.ros.context_estimator_node import ContextEstimatorNode
    from dynfusion_ros.ros.fusion_node import FusionNode

    try:
        arguments = ros_arguments(args.params, args.param, args.namespace)
    except ValueError as error:
        print(f"dynfusion run: error: {error}", file=sys.stderr)
        return 2
    nodes = {"context_estimator": ContextEstimatorNode, "fusion": FusionNode}
    chosen = tuple(nodes.values()) if args.node == "both" else (nodes[args.node],)
    return spin(chosen, arguments, args.executor)


def context_estimator_main() -> None:
    """Entry point of the `context_estimator` executable (ROS arguments from argv)."""
    from dynfusion_ros.ros.context_estimator_node import ContextEstimatorNode

    sys.exit(spin((ContextEstimatorNode,), sys.argv))


def fusion_main() -> None:
    """Entry point of the `fusion` executable (ROS arguments from argv)."""
    from dynfusion_ros.ros.fusion_node import FusionNode

    sys.exit(spin((FusionNode,), sys.argv))
