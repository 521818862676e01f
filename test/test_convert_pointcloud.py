"""PointCloud2 <-> numpy: layouts from the wild, round trips through real serialization,
and a clear error for every malformed cloud."""

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import PointCloud2, PointField

from dynfusion_ros.ros.convert import (
    ConversionError,
    array_to_pointcloud2,
    columns_to_pointcloud2,
    pointcloud2_to_array,
    pointcloud2_to_lidar_scan,
    pointcloud2_to_radar_scan,
    scan_to_pointcloud2,
)

# datatype -> (struct code, numpy type): the independent oracle the packer below uses.
STRUCT = {
    PointField.INT8: ("b", np.int8),
    PointField.UINT8: ("B", np.uint8),
    PointField.INT16: ("h", np.int16),
    PointField.UINT16: ("H", np.uint16),
    PointField.INT32: ("i", np.int32),
    PointField.UINT32: ("I", np.uint32),
    PointField.FLOAT32: ("f", np.float32),
    PointField.FLOAT64: ("d", np.float64),
}


def pack_cloud(layout, values, height, width, point_step, row_pad, bigendian):
    """Build a PointCloud2 byte by byte with struct, independently of the code under test."""
    order = ">" if bigendian else "<"
    row_step = width * point_step + row_pad
    data = bytearray(row_step * height)
    for index in range(height * width):
        row, col = divmod(index, width)
        base = row * row_step + col * point_step
        for (_, datatype, offset), column in zip(layout, values, strict=True):
            code = STRUCT[datatype][0]
            struct.pack_into(order + code, data, base + offset, column[index].item())
    fields = [PointField(name=n, offset=o, datatype=d, count=1) for n, d, o in layout]
    return PointCloud2(
        height=height,
        width=width,
        fields=fields,
        is_bigendian=bigendian,
        point_step=point_step,
        row_step=row_step,
        data=bytes(data),
        is_dense=True,
    )


@st.composite
def cloud_layouts(draw):
    extra_names = draw(
        st.lists(
            st.sampled_from(["intensity", "ring", "t", "doppler", "rcs", "ambient"]),
            unique=True,
            max_size=4,
        )
    )
    names = draw(st.permutations(["x", "y", "z", *extra_names]))
    layout, offset = [], 0
    for name in names:
        if name in "xyz":
            datatype = draw(st.sampled_from([PointField.FLOAT32, PointField.FLOAT64]))
        else:
            datatype = draw(st.sampled_from(sorted(STRUCT)))
        offset += draw(st.integers(0, 3))  # padding between fields, aligned or not
        layout.append((name, datatype, offset))
        offset += np.dtype(STRUCT[datatype][1]).itemsize
    point_step = offset + draw(st.integers(0, 8))  # trailing padding
    height = draw(st.integers(1, 3))
    width = draw(st.integers(0, 6))
    row_pad = draw(st.sampled_from([0, 0, 3, 16]))
    bigendian = draw(st.booleans())
    n = height * width
    values = []
    for _, datatype, _ in layout:
        dtype = np.dtype(STRUCT[datatype][1])
        if dtype.kind == "f":
            column = draw(st.lists(st.floats(-1e3, 1e3, width=32), min_size=n, max_size=n))
        else:
            info = np.iinfo(dtype)
            column = draw(st.lists(st.integers(info.min, info.max), min_size=n, max_size=n))
        values.append(np.array(column, dtype=dtype))
    return layout, values, height, width, point_step, row_pad, bigendian


@settings(max_examples=150, deadline=None)
@given(cloud_layouts())
def test_any_field_layout_reads_back_exactly(case):
    layout, values, *shape = case
    msg = pack_cloud(layout, values, *shape)
    points = pointcloud2_to_array(msg)
    assert len(points) == len(values[0])
    for (name, _, _), expected in zip(layout, values, strict=True):
        np.testing.assert_array_equal(points[name], expected)
    scan = pointcloud2_to_lidar_scan(msg)
    xyz = np.stack(
        [values[[entry[0] for entry in layout].index(name)] for name in "xyz"], axis=1
    ).astype(np.float32)
    returned = np.isfinite(xyz).all(axis=1) & xyz.any(axis=1)  # (0, 0, 0) is no return
    np.testing.assert_array_equal(scan.xyz, xyz[returned])
    assert scan.dropped_invalid == len(xyz) - returned.sum()


@settings(max_examples=60, deadline=None)
@given(cloud_layouts())
def test_any_layout_survives_rclpy_serialization_and_rewrite(case):
    layout, values, *shape = case
    msg = pack_cloud(layout, values, *shape)
    received = deserialize_message(serialize_message(msg), PointCloud2)
    points = pointcloud2_to_array(received)
    rewritten = pointcloud2_to_array(array_to_pointcloud2(points, 5, "lidar"))
    for name, _, _ in layout:
        np.testing.assert_array_equal(rewritten[name], points[name])


def test_unpadded_cloud_is_a_zero_copy_view():
    xyz = np.arange(30, dtype=np.float32).reshape(10, 3)
    msg = columns_to_pointcloud2({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}, 0, "lidar")
    points = pointcloud2_to_array(msg)
    assert np.shares_memory(points, np.frombuffer(msg.data, np.uint8))


def test_lidar_scan_maps_driver_field_names_and_integer_times():
    n = 5
    msg = columns_to_pointcloud2(
        {
            "x": np.ones(n, np.float32),
            "y": np.zeros(n, np.float32),
            "z": np.zeros(n, np.float32),
            "reflectivity": np.arange(n, dtype=np.uint16),
            "t": np.arange(n, dtype=np.uint32) * 1_000_000,  # Ouster: ns
            "ring": np.arange(n, dtype=np.uint8),
        },
        stamp_ns=1_500_000_000,
        frame_id="os_sensor",
    )
    scan = pointcloud2_to_lidar_scan(msg)
    assert scan.stamp_ns == 1_500_000_000 and scan.frame_id == "os_sensor"
    assert scan.fields["intensity"].tolist() == [0, 1, 2, 3, 4]
    assert scan.fields["time"] == pytest.approx([0.0, 0.001, 0.002, 0.003, 0.004])
    assert scan.fields["ring"].tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("velocity_name", ["doppler", "range_rate", "velocity", "radial_velocity"])
def test_radar_scan_accepts_common_velocity_names(velocity_name):
    msg = columns_to_pointcloud2(
        {
            "x": np.array([10.0, 20.0], np.float32),
            "y": np.zeros(2, np.float32),
            "z": np.zeros(2, np.float32),
            velocity_name: np.array([-3.0, 1.5], np.float32),
            "rcs": np.array([10.0, -5.0], np.float32),
        },
        0,
        "radar",
    )
    scan = pointcloud2_to_radar_scan(msg)
    assert scan.fields["doppler"].tolist() == [-3.0, 1.5]
    assert scan.fields["rcs"].tolist() == [10.0, -5.0]


def test_radar_without_velocity_is_an_error_naming_the_candidates():
    msg = columns_to_pointcloud2({k: np.zeros(2, np.float32) for k in "xyz"}, 0, "radar")
    with pytest.raises(
        ConversionError, match=r"no radial velocity field.*range_rate.*radar_doppler_fields"
    ):
        pointcloud2_to_radar_scan(msg)


def test_non_finite_points_are_dropped_and_counted_whatever_is_dense_says():
    x = np.array([1.0, np.nan, 3.0, np.inf], np.float32)
    msg = columns_to_pointcloud2(
        {
            "x": x,
            "y": np.zeros(4, np.float32),
            "z": np.zeros(4, np.float32),
            "intensity": np.array([1, 2, 3, 4], np.float32),
        },
        0,
        "lidar",
    )
    assert msg.is_dense is False
    msg.is_dense = True  # a driver that lies
    scan = pointcloud2_to_lidar_scan(msg)
    assert scan.xyz[:, 0].tolist() == [1.0, 3.0]
    assert scan.fields["intensity"].tolist() == [1.0, 3.0]
    assert scan.dropped_invalid == 2


def test_scan_round_trip_through_pointcloud2():
    msg = columns_to_pointcloud2(
        {
            "x": np.array([1.0, 2.0], np.float32),
            "y": np.array([3.0, 4.0], np.float32),
            "z": np.array([5.0, 6.0], np.float32),
            "intensity": np.array([7.0, 8.0], np.float32),
        },
        42,
        "lidar",
    )
    scan = pointcloud2_to_lidar_scan(msg)
    again = pointcloud2_to_lidar_scan(
        deserialize_message(serialize_message(scan_to_pointcloud2(scan)), PointCloud2)
    )
    np.testing.assert_array_equal(again.xyz, scan.xyz)
    np.testing.assert_array_equal(again.fields["intensity"], scan.fields["intensity"])
    assert again.stamp_ns == 42


def test_multi_count_fields_read_as_subarrays():
    msg = PointCloud2(
        height=1,
        width=2,
        point_step=16,
        row_step=32,
        is_bigendian=False,
        fields=[
            PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
            PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
            PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
            PointField(name="rgba", offset=12, datatype=PointField.UINT8, count=4),
        ],
        data=np.arange(32, dtype=np.uint8).tobytes(),
    )
    assert pointcloud2_to_array(msg)["rgba"].tolist() == [[12, 13, 14, 15], [28, 29, 30, 31]]


def xyz_cloud(**overrides):
    fields = [
        PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
        for i, n in enumerate("xyz")
    ]
    values = {
        "height": 1,
        "width": 4,
        "fields": fields,
        "point_step": 12,
        "row_step": 48,
        "is_bigendian": False,
        "data": bytes(48),
    }
    values.update(overrides)
    return PointCloud2(**values)


@pytest.mark.parametrize(
    ("overrides", "reader", "message"),
    [
        (
            {"fields": [PointField(name="x", offset=0, datatype=7, count=1)]},
            pointcloud2_to_lidar_scan,
            r"fields: no y/z field",
        ),
        (
            {"data": bytes(40)},
            pointcloud2_to_array,
            r"data: 40 bytes, shorter than row_step\*height",
        ),
        (
            {"point_step": 8, "row_step": 32},
            pointcloud2_to_array,
            r"fields\['z'\]: ends at byte 12, beyond point_step 8",
        ),
        (
            {"fields": [PointField(name="x", offset=0, datatype=9, count=1)]},
            pointcloud2_to_array,
            r"fields\['x'\]\.datatype: unknown datatype 9",
        ),
        ({"row_step": 40}, pointcloud2_to_array, r"row_step: 40 is less than width\*point_step"),
        ({"point_step": 0, "row_step": 0}, pointcloud2_to_array, r"point_step: must be in 1\.\."),
        (
            {
                "fields": [
                    PointField(name="x", offset=0, datatype=7, count=1),
                    PointField(name="y", offset=2, datatype=7, count=1),
                ]
            },
            pointcloud2_to_array,
            r"fields\['y'\]: overlaps field 'x'",
        ),
        (
            {
                "fields": [
                    PointField(name="x", offset=0, datatype=7, count=1),
                    PointField(name="x", offset=4, datatype=7, count=1),
                ]
            },
            pointcloud2_to_array,
            r"fields\['x'\]: appears more than once",
        ),
    ],
    ids=[
        "no-yz",
        "short-data",
        "point-step-too-small",
        "unknown-datatype",
        "row-step-too-small",
        "zero-point-step",
        "overlapping-fields",
        "duplicate-field",
    ],
)
def test_malformed_clouds_raise_naming_field_and_problem(overrides, reader, message):
    with pytest.raises(ConversionError, match=message):
        reader(xyz_cloud(**overrides))


def test_writer_rejects_plain_arrays_and_converts_foreign_byte_order():
    with pytest.raises(ConversionError, match="structured"):
        array_to_pointcloud2(np.zeros((3, 3), np.float32), 0, "lidar")
    with pytest.raises(ConversionError, match="has no PointField type"):
        array_to_pointcloud2(np.zeros(2, dtype=[("x", np.complex64)]), 0, "lidar")
    swapped = np.array([1.5, -2.0], dtype=[("x", ">f4" if np.little_endian else "<f4")])
    msg = array_to_pointcloud2(swapped, 0, "lidar")
    assert pointcloud2_to_array(msg)["x"].tolist() == [1.5, -2.0]
    with pytest.raises(ConversionError, match="lengths differ"):
        columns_to_pointcloud2({"x": np.zeros(2), "y": np.zeros(3)}, 0, "lidar")


@pytest.mark.parametrize(("point_step", "row_step"), [(2**31, 120), (0, 120), (70_000, 700_000)])
def test_an_absurd_point_step_is_a_conversion_error_not_a_crash(point_step, row_step):
    msg = columns_to_pointcloud2({k: np.zeros(10, np.float32) for k in "xyz"}, 0, "lidar")
    msg.point_step, msg.row_step = point_step, row_step
    with pytest.raises(ConversionError, match="point_step"):
        pointcloud2_to_lidar_scan(msg)


def test_non_finite_or_absurd_point_times_are_taken_as_zero_and_said():
    from dynfusion_ros.ros.convert import LidarLayout, LidarReader

    times = np.array([0.0, np.nan, 0.05, 1e30], np.float32)
    xyz = {k: np.ones(4, np.float32) for k in "xyz"}
    msg = columns_to_pointcloud2({**xyz, "time": times}, 7, "lidar")
    notes = []
    scan = LidarReader(LidarLayout(time_encoding="relative_s"), notes.append).read(msg)
    assert scan.fields["time"].tolist() == [0.0, 0.0, pytest.approx(0.05), 0.0]
    assert np.isfinite(scan.fields["time"]).all()
    assert any("non-finite or absurd times taken as 0" in note for note in notes)


def test_a_cloud_without_point_times_is_read_and_said_once():
    from dynfusion_ros.ros.convert import LidarLayout, LidarReader

    msg = columns_to_pointcloud2({k: np.ones(4, np.float32) for k in "xyz"}, 7, "lidar")
    notes = []
    reader = LidarReader(LidarLayout(), notes.append)
    for _ in range(3):
        assert "time" not in reader.read(msg).fields
    assert notes == ["no per-point time field: sweeps are registered without deskewing"]
