"""The package's commands as child processes, for `dynfusion demo` and the node benchmark:
start one with its output in a log, wait until the nodes and a recorder are listening,
stop it as Ctrl-C would; and the whole round of a drive replayed through the nodes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
DRAIN_S = 2.0  # after the last message, for the last frames to come out


def start(arguments: list[str], log: Path) -> subprocess.Popen:
    """`dynfusion ARGUMENTS...` in a child process, stdout and stderr into ``log``."""
    handle = log.open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "dynfusion_ros.cli", *arguments], stdout=handle, stderr=handle
    )


def stop(process: subprocess.Popen) -> bool:
    """Ctrl-C, then a kill if it does not end; True when it ended cleanly."""
    process.send_signal(signal.SIGINT)
    try:
        code = process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False
    return code in (0, -signal.SIGINT)


def wait_until_listening(
    node, needs: dict[str, int], processes: dict[str, subprocess.Popen], logs: Path
) -> None:
    """Until every topic in ``needs`` has that many subscribers; RuntimeError naming the
    log when a process exits first or it takes longer than READY_TIMEOUT_S."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        for name, process in processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited at start-up; see {logs / name}.log")
        if all(node.count_subscribers(t) >= n for t, n in needs.items()):
            return
        time.sleep(0.2)
    raise RuntimeError(f"nothing was listening after {READY_TIMEOUT_S:.0f} s; see {logs}")


def replay_through_nodes(
    node,
    drive: Path,
    out: Path,
    *,
    overrides: list[str],
    topics: list[str],
    rate: float = 1.0,
    log_sim_time: bool = True,
    progress: bool = False,
    separate: bool = False,
) -> tuple[int, int]:
    """`dynfusion run` (on the replay's clock, with NAME:=VALUE ``overrides``; with
    ``separate``, one process per node) and a recorder of ``topics`` into
    ``out/recording``, ``drive`` replayed into them at ``rate`` from ``node``, then all
    stopped; logs in ``out``. Returns the bag's start and the system time the replay
    began (ns), to put recorded times on the bag's."""
    from rosbags.rosbag2 import Reader
    from tqdm import tqdm

    from dynfusion_ros.ros.bringup import NODE_NAMES
    from dynfusion_ros.ros.realtime import freeze_start_up_objects
    from dynfusion_ros.ros.replay import Player

    parameters = [arg for o in ["use_sim_time:=true", *overrides] for arg in ("-p", o)]
    if separate:
        processes = {
            name: start(["run", "--node", name, *parameters], out / f"{name}.log")
            for name in NODE_NAMES
        }
    else:
        processes = {"nodes": start(["run", *parameters], out / "nodes.log")}
    record = ["record", "--out", str(out / "recording"), *topics]
    if log_sim_time:
        record.insert(1, "--use-sim-time")
    processes["recorder"] = start(record, out / "recorder.log")
    # ready: both nodes take the camera, the recorder every topic it records
    camera = next(
        (o.split(":=", 1)[1] for o in overrides if o.startswith("camera_topic:=")),
        "/camera/image_raw",
    )
    needs = {camera: 2, **{topic: 1 for topic in topics}}
    try:
        with Reader(drive) as reader:
            player = Player(node, reader, None, clock=True)
            wait_until_listening(node, needs, processes, out)
            freeze_start_up_objects()  # no full collection may hold a message back
            total = sum(c.msgcount for c in player.connections)
            messages = player.play(reader, rate)
            for _ in tqdm(messages, total=total, desc="replay", unit="msg", disable=not progress):
                pass
            started = (reader.start_time, player.started_wall_ns)
        time.sleep(DRAIN_S)
    finally:
        for name in ("recorder", *(n for n in processes if n != "recorder")):
            if not stop(processes[name]):
                print(
                    f"warning: {name} did not stop cleanly; see {out / name}.log", file=sys.stderr
                )
    return started
