import os
import subprocess
import sys

import pytest
from upstream_hashes import UPSTREAM_HASHES

from dynfusion_ros.cli import main


def test_info_reports_interfaces_and_upstream_hash(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "rmw_fastrtps_cpp" in out
    (line,) = [line for line in out.splitlines() if "vision_msgs/Detection3DArray" in line]
    assert line.split()[-1] == UPSTREAM_HASHES["vision_msgs/msg/Detection3DArray"]
    assert "dynfusion_msgs/BranchSelection" in out and "MISSING" not in out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert "dynfusion_ros 0.1.0" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("environment", "kept"), [({}, "True"), ({"MALLOC_MMAP_THRESHOLD_": "131072"}, "False")]
)
def test_freed_memory_is_kept_unless_the_environment_tunes_malloc(environment, kept):
    """glibc takes the setting (mallopt says so) in a fresh process, as the commands and
    nodes apply it; a user's own MALLOC_* tuning wins."""
    code = "from dynfusion_ros.ros.realtime import keep_freed_memory; print(keep_freed_memory())"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, **environment},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == kept
