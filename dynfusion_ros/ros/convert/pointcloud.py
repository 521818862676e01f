"""sensor_msgs/PointCloud2 to and from numpy.

Reading builds a numpy structured dtype from the message's own field table (names,
offsets, datatypes, counts, ``point_step``, endianness) and views the byte buffer through
it: no copy unless rows are padded (``row_step > width * point_step``). That handles any
field order, padding between fields and at the end of a point, float32/float64 and
integer fields, and big-endian clouds. The readers only touch message attributes, so they
work on rclpy messages and on messages deserialised by ``rosbags`` alike.

Writing packs the columns into one structured array and hands its bytes to the message
(never a numpy array: rclpy copies those element by element).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from itertools import pairwise

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField

from dynfusion_ros.core.types import PointScan
from dynfusion_ros.ros.convert.errors import ConversionError
from dynfusion_ros.ros.convert.stamps import header_msg

# PointField datatype constant -> numpy type (native layout; endianness applied later).
_DATATYPES: dict[int, np.dtype] = {
    PointField.INT8: np.dtype(np.int8),
    PointField.UINT8: np.dtype(np.uint8),
    PointField.INT16: np.dtype(np.int16),
    PointField.UINT16: np.dtype(np.uint16),
    PointField.INT32: np.dtype(np.int32),
    PointField.UINT32: np.dtype(np.uint32),
    PointField.FLOAT32: np.dtype(np.float32),
    PointField.FLOAT64: np.dtype(np.float64),
}
_DATATYPE_OF: dict[np.dtype, int] = {dtype: code for code, dtype in _DATATYPES.items()}
MAX_POINT_STEP = 65_536  # bytes; drivers use 16-100: more is a corrupt header


def pointcloud2_dtype(fields: Sequence, point_step: int, is_bigendian: bool) -> np.dtype:
    """The structured dtype of one point, validated against ``point_step``."""
    if not 0 < point_step <= MAX_POINT_STEP:
        raise ConversionError("point_step", f"must be in 1..{MAX_POINT_STEP}, got {point_step}")
    byteorder = ">" if is_bigendian else "<"
    names, formats, offsets, spans = [], [], [], []
    for field in fields:
        base = _DATATYPES.get(field.datatype)
        if base is None:
            raise ConversionError(
                f"fields[{field.name!r}].datatype",
                f"unknown datatype {field.datatype} (PointField defines 1..8)",
            )
        if field.name in names:
            raise ConversionError(f"fields[{field.name!r}]", "appears more than once")
        # count 0 is invalid per the spec but common in the wild; it means one element.
        count = max(int(field.count), 1)
        end = field.offset + base.itemsize * count
        if end > point_step:
            raise ConversionError(
                f"fields[{field.name!r}]",
                f"ends at byte {end}, beyond point_step {point_step} "
                "(point_step smaller than its fields)",
            )
        element = base.newbyteorder(byteorder)
        names.append(field.name)
        formats.append(element if count == 1 else np.dtype((element, (count,))))
        offsets.append(field.offset)
        spans.append((field.offset, end, field.name))
    spans.sort()
    for (_, end_a, name_a), (start_b, _, name_b) in pairwise(spans):
        if start_b < end_a:
            raise ConversionError(f"fields[{name_b!r}]", f"overlaps field {name_a!r}")
    return np.dtype(
        {"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step}
    )


def pointcloud2_to_array(msg) -> np.ndarray:
    """All points as a flat structured array, (height * width,), a view of ``msg.data``.

    Organised clouds are flattened row by row. The view is copied only when rows carry
    padding beyond ``width * point_step``.
    """
    dtype = pointcloud2_dtype(msg.fields, msg.point_step, msg.is_bigendian)
    height, width, row_step = int(msg.height), int(msg.width), int(msg.row_step)
    packed_row = width * msg.point_step
    if row_step < packed_row:
        raise ConversionError(
            "row_step", f"{row_step} is less than width*point_step = {width}*{msg.point_step}"
        )
    data = np.frombuffer(msg.data, dtype=np.uint8)
    needed = row_step * height
    if data.size < needed:
        raise ConversionError(
            "data",
            f"{data.size} bytes, shorter than row_step*height = {row_step}*{height} = {needed}",
        )
    if height == 0 or width == 0:
        return np.empty(0, dtype=dtype)
    if row_step == packed_row:
        return np.frombuffer(data, dtype=dtype, count=height * width)
    rows = data[:needed].reshape(height, row_step)[:, :packed_row]
    return np.ascontiguousarray(rows).view(dtype).reshape(-1)


def scalar_column(points: np.ndarray, name: str) -> np.ndarray:
    """One field of a structured cloud, which must hold one value per point."""
    column = points[name]
    if column.ndim != 1:
        raise ConversionError(f"fields[{name!r}]", f"has count {column.shape[1]}, expected 1")
    return column


def xyz_of(points: np.ndarray) -> np.ndarray:
    """(N, 3) float32 of the x, y, z fields; ConversionError naming what is missing."""
    names = points.dtype.names or ()
    missing = [axis for axis in ("x", "y", "z") if axis not in names]
    if missing:
        raise ConversionError("fields", f"no {'/'.join(missing)} field (has {list(names)})")
    xyz = np.empty((len(points), 3), dtype=np.float32)
    for axis, name in enumerate("xyz"):
        xyz[:, axis] = scalar_column(points, name)
    return xyz


def array_to_pointcloud2(points: np.ndarray, stamp_ns: int, frame_id: str) -> PointCloud2:
    """A PointCloud2 (height 1) from a structured array whose fields map to PointField types."""
    if points.dtype.names is None:
        raise ConversionError("points", "expected a structured array with named fields")
    native = points.dtype.newbyteorder("=")
    if native != points.dtype:  # e.g. a view of a big-endian cloud
        points = points.astype(native)
    fields = []
    for name in points.dtype.names:
        field_dtype, offset = points.dtype.fields[name][:2]
        base, shape = field_dtype.base, field_dtype.shape
        code = _DATATYPE_OF.get(base)
        if code is None:
            raise ConversionError(f"points[{name!r}]", f"dtype {base} has no PointField type")
        count = int(np.prod(shape)) if shape else 1
        fields.append(PointField(name=name, offset=offset, datatype=code, count=count))
    contiguous = np.ascontiguousarray(points).reshape(-1)
    xyz_names = [n for n in ("x", "y", "z") if n in points.dtype.names]
    is_dense = bool(all(np.isfinite(contiguous[n]).all() for n in xyz_names))
    return PointCloud2(
        header=header_msg(stamp_ns, frame_id),
        height=1,
        width=len(contiguous),
        fields=fields,
        is_bigendian=sys.byteorder == "big",
        point_step=points.dtype.itemsize,
        row_step=points.dtype.itemsize * len(contiguous),
        data=contiguous.tobytes(),
        is_dense=is_dense,
    )


def columns_to_pointcloud2(
    columns: Mapping[str, np.ndarray], stamp_ns: int, frame_id: str
) -> PointCloud2:
    """A PointCloud2 from named 1-D columns of equal length, packed in the given order."""
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ConversionError("columns", f"lengths differ: {lengths}")
    arrays = {name: np.asarray(values) for name, values in columns.items()}
    dtype = np.dtype([(name, values.dtype) for name, values in arrays.items()])
    packed = np.empty(next(iter(lengths.values()), 0), dtype=dtype)
    for name, values in arrays.items():
        packed[name] = values
    return array_to_pointcloud2(packed, stamp_ns, frame_id)


def scan_to_pointcloud2(scan: PointScan) -> PointCloud2:
    """x, y, z (float32) followed by the scan's channels (float32)."""
    columns: dict[str, np.ndarray] = {
        axis: scan.xyz[:, index].astype(np.float32) for index, axis in enumerate("xyz")
    }
    for name, values in scan.fields.items():
        columns[name] = values.astype(np.float32)
    return columns_to_pointcloud2(columns, scan.stamp_ns, scan.frame_id)
