"""Lidar PointCloud2 -> PointScan, whatever driver published it.

Drivers agree on x, y, z and on little else:

- Velodyne (velodyne_pointcloud): ``time`` float32 s since the header, negative when
  the header is stamped at sweep end; ``intensity`` 0-255; no return is left out.
- Ouster (ouster-ros): ``t`` uint32 ns since the header; ``intensity`` is a photon
  count (thousands), ``reflectivity`` the 0-255 figure; no return is (0, 0, 0).
- Hesai (HesaiLidar_ROS_2.0): ``timestamp`` float64 absolute s; ``intensity`` uint8;
  no return is (0, 0, 0).
- Livox (livox_ros_driver2): ``timestamp`` float64 absolute ns; ``intensity`` 0-255.

``LidarLayout`` says which field to read and how (the node parameters ``lidar_*``);
``auto`` concludes from the first sweep of a topic and keeps that conclusion, so a
sweep never reads differently from the one before. The core wants time as seconds since
the scan's stamp, and the stamp where the sweep begins: that is what the frame sync pairs
with the other sensors, so a sweep whose points come before its header stamp (stamped at
sweep end, the Velodyne driver's default) is re-stamped at its first point.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dynfusion_ros.core.types import NS_PER_S, PointScan
from dynfusion_ros.ros.convert.errors import ConversionError
from dynfusion_ros.ros.convert.pointcloud import (
    pointcloud2_to_array,
    scalar_column,
    xyz_of,
)
from dynfusion_ros.ros.convert.stamps import stamp_ns

TIME_ENCODINGS = ("auto", "relative_s", "relative_ns", "absolute_s", "absolute_ns")
TIME_FIELDS = ("time", "t", "timestamp", "offset_time")
INTENSITY_FIELDS = ("intensity", "i")
RING_FIELDS = ("ring", "channel", "laser_id")
MAX_SWEEP_S = 1.0  # every point of a sweep lies within this of its header stamp (s)


@dataclass(frozen=True)
class LidarLayout:
    time_field: str = "auto"  # a field name, "none" or "auto"
    time_encoding: str = "auto"  # one of TIME_ENCODINGS
    intensity_field: str = "auto"
    intensity_scale: float = 0.0  # to 0-255; 0: auto

    def __post_init__(self) -> None:
        if self.time_encoding not in TIME_ENCODINGS:
            raise ValueError(f"time_encoding must be one of {', '.join(TIME_ENCODINGS)}")
        if not self.intensity_scale >= 0:
            raise ValueError(f"intensity_scale must be >= 0, got {self.intensity_scale}")


def time_encoding_of(column: np.ndarray, header_ns: int) -> str | None:
    """What a time column holds: the first reading (integers are nanoseconds) that puts
    every point within a sweep of its header stamp; None when none does (the times are
    then not used). Trying the relative readings first keeps a simulator whose clock
    starts at zero from looking absolute."""
    finite = column[np.isfinite(column)] if column.dtype.kind == "f" else column
    if not len(finite):
        return None
    ends = np.array([finite.min(), finite.max()], dtype=finite.dtype)
    readings = (
        ("relative_ns", "absolute_ns")
        if column.dtype.kind in "iu"
        else ("relative_s", "absolute_s", "absolute_ns", "relative_ns")
    )
    for encoding in readings:
        if np.abs(seconds_since_header(ends, encoding, header_ns)).max() <= MAX_SWEEP_S:
            return encoding
    return None


def seconds_since_header(column: np.ndarray, encoding: str, header_ns: int) -> np.ndarray:
    """Per-point time (s) since the header stamp, float64."""
    if encoding == "relative_s":
        return column.astype(np.float64)
    if encoding == "relative_ns":
        return column.astype(np.float64) * 1e-9
    if encoding == "absolute_s":
        sec, nanosec = divmod(header_ns, NS_PER_S)
        return (column.astype(np.float64) - sec) - nanosec * 1e-9
    if column.dtype.kind in "iu":
        return (column.astype(np.int64) - header_ns).astype(np.float64) * 1e-9
    return (column.astype(np.float64) - float(header_ns)) * 1e-9


class LidarReader:
    """Reads one lidar topic's clouds; ``note`` hears, once each, what it concluded about
    the layout and what it could not use."""

    def __init__(self, layout: LidarLayout, note: Callable[[str], None] = lambda _: None) -> None:
        self.layout, self.note = layout, note
        self._concluded: dict[tuple, tuple] = {}  # field names -> what _conclude found

    def _conclude(self, points: np.ndarray, header_ns: int) -> tuple:
        """((time field, its encoding), intensity field, intensity scale) for a cloud of
        these fields: the parameters where given, else judged from this first sweep."""
        names = points.dtype.names
        layout = self.layout
        time_field = _chosen(layout.time_field, TIME_FIELDS, names, "lidar_time_field")
        encoding = None
        if time_field is None:
            self.note("no per-point time field: sweeps are registered without deskewing")
        else:
            column = scalar_column(points, time_field)
            encoding = layout.time_encoding
            if encoding == "auto":
                encoding = time_encoding_of(column, header_ns)
                if encoding is None:
                    self.note(
                        f"time field {time_field!r} fits no time base (relative or absolute,"
                        " s or ns): per-point times not used; set lidar_time_encoding"
                    )
                    time_field = None
                else:
                    self.note(f"time field {time_field!r} read as {encoding} (auto)")
        preferred = (
            ("reflectivity", *INTENSITY_FIELDS)
            if {"reflectivity", "intensity"} <= set(names)
            else (*INTENSITY_FIELDS, "reflectivity")
        )
        intensity = _chosen(layout.intensity_field, preferred, names, "lidar_intensity_field")
        scale = layout.intensity_scale
        if intensity is not None and scale == 0.0:
            column = scalar_column(points, intensity)
            finite = column[np.isfinite(column)] if column.dtype.kind == "f" else column
            fraction = column.dtype.kind == "f" and len(finite) and finite.max() <= 1.0
            scale = 255.0 if fraction else 1.0
            self.note(f"intensity from {intensity!r}, scaled by {scale:g} to 0-255 (auto)")
        return (time_field, encoding), intensity, scale

    def read(self, msg) -> PointScan:
        points = pointcloud2_to_array(msg)
        header_ns = stamp_ns(msg.header)
        xyz = xyz_of(points)
        key = points.dtype.names
        if key not in self._concluded:
            self._concluded[key] = self._conclude(points, header_ns)
        (time_field, encoding), intensity, scale = self._concluded[key]
        fields: dict[str, np.ndarray] = {}
        if intensity is not None:
            values = scalar_column(points, intensity).astype(np.float32) * np.float32(scale)
            if values.size and values.max() > 255.0 * 1.5:
                self.note(
                    f"intensity {intensity!r} goes far beyond 0-255 after scaling by {scale:g}"
                    " (photon counts?): clipped; set lidar_intensity_field or _scale"
                )
            fields["intensity"] = np.clip(values, 0.0, 255.0)
        ring = next((name for name in RING_FIELDS if name in key), None)
        if ring is not None:
            fields["ring"] = scalar_column(points, ring).astype(np.float32)
        stamp = header_ns
        if time_field is not None:
            times = seconds_since_header(scalar_column(points, time_field), encoding, header_ns)
            finite = np.isfinite(times) & (np.abs(times) <= MAX_SWEEP_S)
            if not finite.all():  # NaN or absurd: deskewing on them would abort KISS-ICP
                self.note(f"time field {time_field!r}: non-finite or absurd times taken as 0")
            start = min(float(times[finite].min()), 0.0) if finite.any() else 0.0
            stamp = header_ns + round(start * NS_PER_S)  # stamped at its end: at its start
            fields["time"] = np.where(finite, times - start, 0.0)
        usable = np.isfinite(xyz).all(axis=1) & xyz.any(axis=1)  # (0, 0, 0): no return
        dropped = int(len(xyz) - np.count_nonzero(usable))
        if dropped:
            xyz = xyz[usable]
            fields = {name: values[usable] for name, values in fields.items()}
        return PointScan(
            stamp_ns=stamp,
            xyz=xyz,
            fields=fields,
            frame_id=msg.header.frame_id,
            dropped_invalid=dropped,
        )


def _chosen(setting: str, candidates: tuple[str, ...], names: tuple[str, ...], param: str):
    """The field a setting names: None for "none", the first candidate present for
    "auto", else the named field, which must exist."""
    if setting == "none":
        return None
    if setting == "auto":
        return next((name for name in candidates if name in names), None)
    if setting not in names:
        raise ConversionError("fields", f"no {setting!r} field ({param}; has {list(names)})")
    return setting


def pointcloud2_to_lidar_scan(msg, layout: LidarLayout | None = None) -> PointScan:
    """One sweep read on its own (a topic's stream goes through one ``LidarReader``)."""
    return LidarReader(layout or LidarLayout()).read(msg)
