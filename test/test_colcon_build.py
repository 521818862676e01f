"""A user with a full ROS 2 install builds this repository with colcon, as the README says:
`colcon build --base-paths <repo> <repo>/interfaces`. Our vision_msgs stays out of it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOT_SOURCES = shutil.ignore_patterns(
    ".venv",
    "build",
    "install",
    "log",
    ".git",
    "__pycache__",
    "*.egg-info",
    ".*_cache",
    ".hypothesis",
)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_colcon_builds_package_and_interfaces(tmp_path):
    source = tmp_path / "src" / "dynfusion_ros"
    shutil.copytree(REPO, source, ignore=NOT_SOURCES, symlinks=True)
    prefix = Path(sys.prefix)
    env = dict(
        os.environ,
        AMENT_PREFIX_PATH=str(prefix),
        CMAKE_PREFIX_PATH=str(prefix),
        PATH=f"{prefix / 'bin'}{os.pathsep}{os.environ['PATH']}",
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "colcon",
            "build",
            "--base-paths",
            str(source),
            str(source / "interfaces"),
            "--cmake-args",
            "-DBUILD_TESTING=OFF",
            f"-DPython3_EXECUTABLE={sys.executable}",
            "--event-handlers",
            "console_cohesion-",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    install = tmp_path / "install"
    assert sorted(p.name for p in install.iterdir() if p.is_dir()) == [
        "dynfusion_msgs",
        "dynfusion_ros",
    ], "vision_msgs must be skipped (COLCON_IGNORE)"
    share = install / "dynfusion_ros" / "share"
    assert (share / "ament_index" / "resource_index" / "packages" / "dynfusion_ros").exists()
    assert (share / "dynfusion_ros" / "package.xml").exists()
    executable = install / "dynfusion_ros" / "lib" / "dynfusion_ros" / "dynfusion"
    assert executable.exists(), "console script must land where `ros2 run` looks"

    check = subprocess.run(
        [
            "bash",
            "-c",
            f"source {install / 'setup.bash'} && {executable} --version && "
            f"{sys.executable} -c 'import dynfusion_msgs.msg, dynfusion_ros; "
            "print(dynfusion_ros.__file__)'",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "dynfusion_ros 0.1.0" in check.stdout
    assert str(install) in check.stdout, "the installed package, not the checkout, is imported"
