"""Radar PointCloud2 -> PointScan, for the layouts radar drivers publish.

Points come as x, y, z or as polar range / azimuth (rad) / elevation. The radial velocity
has as many names as there are drivers (``doppler``, ``range_rate``, ``v_r``, ``vr``,
``radial_speed``, ``doppler_velocity``, ...: ``RadarLayout.doppler_fields``, the node
parameter ``radar_doppler_fields``); a Continental ARS408 gives the relative velocity as
``vrel_long`` / ``vrel_lat`` components instead, and its radial part is their projection
on the line of sight. RCS is optional: a scan without it is used without it, and said so
once. radar_msgs/RadarScan (range, azimuth, elevation, doppler_velocity and amplitude per
return) is read too; its amplitude is a power in dB, not a cross-section, so it is not
taken as RCS. The core wants doppler in m/s, positive moving away, and RCS in dBsm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dynfusion_ros.core.types import PointScan
from dynfusion_ros.ros.convert.errors import ConversionError
from dynfusion_ros.ros.convert.pointcloud import pointcloud2_to_array, scalar_column, xyz_of
from dynfusion_ros.ros.convert.stamps import stamp_ns

DOPPLER_FIELDS = (
    "doppler",
    "range_rate",
    "velocity",
    "radial_velocity",
    "v_r",
    "vr",
    "vrel",
    "radial_speed",
    "doppler_velocity",
)
RCS_FIELDS = ("rcs", "RCS", "rcs_dbsm")
VELOCITY_COMPONENTS = ("vrel_long", "vrel_lat")  # Continental ARS408 clusters
POLAR_FIELDS = {
    "range": ("range", "r"),
    "azimuth": ("azimuth", "azimuth_angle", "az"),
    "elevation": ("elevation", "elevation_angle", "el"),
}


@dataclass(frozen=True)
class RadarLayout:
    doppler_fields: tuple[str, ...] = DOPPLER_FIELDS
    rcs_fields: tuple[str, ...] = RCS_FIELDS


def _first(names: tuple[str, ...], candidates: tuple[str, ...]) -> str | None:
    return next((name for name in candidates if name in names), None)


class RadarReader:
    """Reads one radar topic's scans; ``note`` hears, once each, how a layout was read
    and what it lacked."""

    def __init__(self, layout: RadarLayout, note: Callable[[str], None] = lambda _: None) -> None:
        self.layout, self.note = layout, note

    def _xyz(self, points: np.ndarray) -> np.ndarray:
        names = points.dtype.names or ()
        if {"x", "y", "z"} <= set(names):
            return xyz_of(points)
        found = {key: _first(names, options) for key, options in POLAR_FIELDS.items()}
        if found["range"] is None or found["azimuth"] is None:
            raise ConversionError(
                "fields", f"no x/y/z nor range/azimuth fields (has {list(names)})"
            )
        distance = scalar_column(points, found["range"]).astype(np.float64)
        azimuth = scalar_column(points, found["azimuth"]).astype(np.float64)
        elevation = (
            scalar_column(points, found["elevation"]).astype(np.float64)
            if found["elevation"]
            else np.zeros_like(distance)
        )
        if len(azimuth) and np.nanmax(np.abs(azimuth)) > 2 * np.pi:
            raise ConversionError(
                f"fields[{found['azimuth']!r}]", "beyond 2 pi: azimuth must be in radians"
            )
        self.note(f"polar layout: x, y, z from {', '.join(filter(None, found.values()))}")
        flat = distance * np.cos(elevation)
        return np.stack(
            [flat * np.cos(azimuth), flat * np.sin(azimuth), distance * np.sin(elevation)], axis=1
        ).astype(np.float32)

    def _doppler(self, points: np.ndarray, xyz: np.ndarray) -> np.ndarray:
        names = points.dtype.names
        name = _first(names, self.layout.doppler_fields)
        if name is not None:
            return scalar_column(points, name).astype(np.float32)
        if set(VELOCITY_COMPONENTS) <= set(names):
            self.note("radial velocity projected from vrel_long, vrel_lat (ARS408 layout)")
            along, across = (
                scalar_column(points, n).astype(np.float64) for n in VELOCITY_COMPONENTS
            )
            reach = np.maximum(np.hypot(xyz[:, 0], xyz[:, 1]), 1e-6)
            return ((along * xyz[:, 0] + across * xyz[:, 1]) / reach).astype(np.float32)
        raise ConversionError(
            "fields",
            f"no radial velocity field (looked for {', '.join(self.layout.doppler_fields)}"
            f" and {'/'.join(VELOCITY_COMPONENTS)}; has {list(names)}): set"
            " radar_doppler_fields",
        )

    def read(self, msg) -> PointScan:
        """A PointCloud2, or a radar_msgs/RadarScan (it has ``returns``)."""
        if hasattr(msg, "returns"):
            return self._read_returns(msg)
        points = pointcloud2_to_array(msg)
        xyz = self._xyz(points)
        fields = {"doppler": self._doppler(points, xyz)}
        rcs = _first(points.dtype.names, self.layout.rcs_fields)
        if rcs is None:
            self.note(
                f"no RCS field (looked for {', '.join(self.layout.rcs_fields)}): scans used"
                " without RCS; set radar_rcs_fields"
            )
        else:
            fields["rcs"] = scalar_column(points, rcs).astype(np.float32)
        return _scan(msg, xyz, fields)

    def _read_returns(self, msg) -> PointScan:
        polar = np.array(
            [(r.range, r.azimuth, r.elevation, r.doppler_velocity) for r in msg.returns],
            dtype=np.float64,
        ).reshape(-1, 4)
        self.note("radar_msgs/RadarScan: used without RCS (its amplitude is a power, not RCS)")
        points = np.zeros(len(polar), dtype=[(n, np.float64) for n in POLAR_FIELDS])
        for index, name in enumerate(POLAR_FIELDS):
            points[name] = polar[:, index]
        return _scan(msg, self._xyz(points), {"doppler": polar[:, 3].astype(np.float32)})


def _scan(msg, xyz: np.ndarray, fields: dict[str, np.ndarray]) -> PointScan:
    """The scan, points with a non-finite coordinate or doppler dropped and counted."""
    usable = np.isfinite(xyz).all(axis=1) & np.isfinite(fields["doppler"])
    dropped = int(len(xyz) - np.count_nonzero(usable))
    if dropped:
        xyz = xyz[usable]
        fields = {name: values[usable] for name, values in fields.items()}
    return PointScan(
        stamp_ns=stamp_ns(msg.header),
        xyz=xyz,
        fields=fields,
        frame_id=msg.header.frame_id,
        dropped_invalid=dropped,
    )


def pointcloud2_to_radar_scan(msg, layout: RadarLayout | None = None) -> PointScan:
    """One scan read on its own (a topic's stream goes through one ``RadarReader``)."""
    return RadarReader(layout or RadarLayout()).read(msg)
