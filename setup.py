"""ament_python package dynfusion_ros; also installable with pip (`pip install -e .`)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "dynfusion_ros"


def _data_files() -> list[tuple[str, list[str]]]:
    """ament index marker, manifest, and the launch/config/model folders under share/."""
    files = [
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ]
    for folder, patterns in {
        "launch": ["*.launch.py"],
        "config": ["*.yaml", "*.xml"],
        "models": ["*.safetensors", "*.json", "*.md"],
    }.items():
        matched = sorted(path for pattern in patterns for path in glob(f"{folder}/{pattern}"))
        if matched:
            files.append((f"share/{PACKAGE}/{folder}", matched))
    return files


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=_data_files(),
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="dynfusion_ros developers",
    maintainer_email="dev@dynfusion.invalid",
    description="Dynamic, energy-budgeted camera/lidar/radar/IMU fusion for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "dynfusion = dynfusion_ros.cli:main",
            "context_estimator = dynfusion_ros.ros.bringup:context_estimator_main",
            "fusion = dynfusion_ros.ros.bringup:fusion_main",
        ],
    },
)
