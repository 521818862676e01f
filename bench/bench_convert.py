"""Message conversion speed: PointCloud2 <-> numpy and Image -> numpy.

Targets (issue 2): a 100k-point PointCloud2 to a numpy view in under 0.1 ms, numpy to a
PointCloud2 message in under 2 ms. Messages are deserialised by rclpy first, so they
are what a subscriber receives. Prints medians and 90th percentiles; asserts nothing.

    .venv/bin/python bench/bench_convert.py [--points 100000] [--repeats 200]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import numpy as np
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image, PointCloud2

from dynfusion_ros.ros.convert import (
    array_to_image,
    array_to_pointcloud2,
    image_to_array,
    pointcloud2_to_array,
    pointcloud2_to_lidar_scan,
)

LIDAR_POINT = np.dtype(
    {
        "names": ["x", "y", "z", "intensity", "ring", "time"],
        "formats": [np.float32, np.float32, np.float32, np.float32, np.uint16, np.float32],
        "offsets": [0, 4, 8, 16, 20, 24],  # padded like a Velodyne driver: 32-byte points
        "itemsize": 32,
    }
)


def timed(function: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median and 90th percentile wall time of ``function`` in milliseconds."""
    function()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append((time.perf_counter() - start) * 1e3)
    return float(np.median(samples)), float(np.percentile(samples, 90))


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    points = np.zeros(args.points, dtype=LIDAR_POINT)
    for name in ("x", "y", "z", "intensity", "time"):
        points[name] = rng.normal(size=args.points).astype(np.float32)
    points["ring"] = rng.integers(0, 32, args.points)
    cloud = deserialize_message(
        serialize_message(array_to_pointcloud2(points, 0, "lidar")), PointCloud2
    )
    pixels = rng.integers(0, 255, (384, 640, 3), dtype=np.uint8)
    image = deserialize_message(
        serialize_message(array_to_image(pixels, "rgb8", 0, "camera")), Image
    )

    rows = [
        (
            f"PointCloud2 ({args.points} pts, 32 B) -> numpy view",
            0.1,
            timed(lambda: pointcloud2_to_array(cloud), args.repeats),
        ),
        (
            "numpy -> PointCloud2 message",
            2.0,
            timed(lambda: array_to_pointcloud2(points, 0, "lidar"), args.repeats),
        ),
        (
            "PointCloud2 -> lidar scan (xyz + fields, copied)",
            None,
            timed(lambda: pointcloud2_to_lidar_scan(cloud), args.repeats),
        ),
        (
            "Image 640x384 rgb8 -> numpy view",
            None,
            timed(lambda: image_to_array(image), args.repeats),
        ),
        (
            "numpy -> Image 640x384 rgb8 message",
            None,
            timed(lambda: array_to_image(pixels, "rgb8", 0, "camera"), args.repeats),
        ),
    ]
    print(
        f"machine: {cpu_name()}, {platform.machine()}, Python {platform.python_version()}, "
        f"numpy {np.__version__}; {args.repeats} repeats"
    )
    print(f"{'conversion':<52} {'p50 ms':>9} {'p90 ms':>9} {'target':>8}")
    for name, target, (p50, p90) in rows:
        verdict = "" if target is None else (f"<{target:g} " + ("ok" if p50 < target else "MISSED"))
        print(f"{name:<52} {p50:>9.4f} {p90:>9.4f} {verdict:>8}")


if __name__ == "__main__":
    main()
