"""Finish a ROS 2 Jazzy environment installed from PyPI wheels, so it can build messages.

Run by `make env` with the virtualenv's interpreter, after pip has installed the wheels.
The virtualenv is the ROS prefix (libraries in lib/, CMake configs and the ament index in
share/). Two things stand between it and `rosidl_generate_interfaces`:

1. The wheels' exported CMake targets name the Python and numpy include directories of
   the machine the wheels were built on; CMake refuses targets whose include directories
   do not exist. We point them at this interpreter's directories.
2. Our interface packages must be configured with AMENT_PREFIX_PATH set to the prefix.

`pip install -e .` does not install setup.py's data files, so the package is also
registered in the prefix's ament index by symlinks into this checkout (as
`colcon build --symlink-install` would): `get_package_share_directory("dynfusion_ros")`
then finds launch/, config/ and models/.

Each interface package is rebuilt only when its sources changed since the last build (a
digest is kept in the build folder), so a second `make env` does nothing. vision_msgs and
tf2_msgs (which PyPI lacks) are built only when the environment has none of its own.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy

REPO = Path(__file__).resolve().parent.parent
INTERFACES = REPO / "interfaces"
# Upstream interface packages that PyPI lacks; ours are built only where they are missing.
FALLBACK_PACKAGES = ("vision_msgs", "tf2_msgs")

_PYTHON_INCLUDE = re.compile(r"[^;\"]*/include/python3\.\d+")
_NUMPY_INCLUDE = re.compile(r"[^;\"]*/site-packages/numpy/(?:_core|core)/include")


def fix_exported_include_dirs(prefix: Path) -> int:
    """Rewrite foreign Python/numpy include paths in the prefix's exported CMake files.

    Returns the number of files changed (0 on a second run).
    """
    python_include = sysconfig.get_paths()["include"]
    numpy_include = numpy.get_include()
    if not Path(python_include, "Python.h").exists():
        raise SystemExit(
            f"Python.h not found in {python_include}: install this Python's development headers"
        )
    changed = 0
    for path in sorted(prefix.glob("share/*/cmake/*Export.cmake")):
        text = path.read_text()
        fixed = _PYTHON_INCLUDE.sub(python_include, text)
        fixed = _NUMPY_INCLUDE.sub(numpy_include, fixed)
        if fixed != text:
            path.write_text(fixed)
            changed += 1
    return changed


def _source_digest(package_dir: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(package_dir)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def build_interface_package(package_dir: Path, prefix: Path, build_root: Path) -> bool:
    """Configure, build and install one ament_cmake interface package into the prefix.

    Returns False when the installed build is already up to date.
    """
    build_dir = build_root / package_dir.name
    stamp = build_dir / "dynfusion-source.sha256"
    digest = _source_digest(package_dir)
    if stamp.exists() and stamp.read_text() == digest:
        return False
    env = dict(os.environ, AMENT_PREFIX_PATH=str(prefix))
    jobs = str(os.cpu_count() or 2)
    commands = [
        [
            "cmake",
            "-S",
            str(package_dir),
            "-B",
            str(build_dir),
            f"-DCMAKE_PREFIX_PATH={prefix}",
            f"-DCMAKE_INSTALL_PREFIX={prefix}",
            f"-DPython3_EXECUTABLE={sys.executable}",
            "-DBUILD_TESTING=OFF",
            "-DCMAKE_BUILD_TYPE=Release",
        ],
        ["cmake", "--build", str(build_dir), "-j", jobs],
        ["cmake", "--install", str(build_dir)],
    ]
    log = build_dir.parent / f"{package_dir.name}.log"
    build_dir.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        for command in commands:
            result = subprocess.run(
                command, check=False, env=env, stdout=out, stderr=subprocess.STDOUT
            )
            if result.returncode != 0:
                tail = "\n".join(log.read_text().splitlines()[-30:])
                raise SystemExit(
                    f"building {package_dir.name} failed ({' '.join(command[:2])}):\n"
                    f"{tail}\nfull log: {log}"
                )
    stamp.write_text(digest)
    return True


SHARED_FOLDERS = ("launch", "config", "models")


def register_package_share(prefix: Path, package: str = "dynfusion_ros") -> None:
    """Expose this checkout as the package's share directory in the prefix's ament index."""
    marker = prefix / "share" / "ament_index" / "resource_index" / "packages" / package
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    share = prefix / "share" / package
    share.mkdir(parents=True, exist_ok=True)
    for name in ("package.xml", *SHARED_FOLDERS):
        link = share / name
        target = REPO / name
        if link.is_symlink() and link.resolve() == target.resolve() and target.exists():
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        if target.exists():  # folders appear as later work adds files to them
            link.symlink_to(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--prefix",
        type=Path,
        default=Path(sys.prefix),
        help="ROS prefix to complete (default: this interpreter's virtualenv)",
    )
    parser.add_argument(
        "--build-dir",
        type=Path,
        default=REPO / "build" / "interfaces",
        help="where CMake build trees are kept between runs",
    )
    args = parser.parse_args()
    prefix = args.prefix.resolve()

    changed = fix_exported_include_dirs(prefix)
    print(f"[env] CMake exports: fixed include paths in {changed} file(s)")

    packages = []
    for name in FALLBACK_PACKAGES:
        ours = (args.build_dir / name / "dynfusion-source.sha256").exists()
        if ours or importlib.util.find_spec(name) is None:
            packages.append(name)
        else:
            print(f"[env] {name}: provided by the environment, not building ours")
    for name in [*packages, "dynfusion_msgs"]:
        built = build_interface_package(INTERFACES / name, prefix, args.build_dir.resolve())
        print(f"[env] {name}: {'built and installed' if built else 'up to date'}")

    register_package_share(prefix)
    print(f"[env] dynfusion_ros: share directory {prefix / 'share' / 'dynfusion_ros'}")


if __name__ == "__main__":
    main()
