"""The package's commands as child processes, for `dynfusion demo` and the node benchmark:
start one with its output in a log, wait until the nodes and a recorder are listening,
stop it as Ctrl-C would."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0


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
