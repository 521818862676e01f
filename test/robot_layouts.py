"""A simulated drive rewritten as real drivers publish it: same geometry, same timing.

Each layout is a function ``(topic, msg, log_ns) -> [(topic, msg, log_ns), ...]`` over
rclpy messages; ``rewrite_bag`` runs one over every message of a bag. What each writes is
what the named driver publishes (field names, types, time bases, frames, tf chains), so
reading the result must give back the simulator's frames.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from geometry_msgs.msg import TransformStamped
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import get_types_from_msg
from sensor_msgs.msg import CompressedImage, PointCloud2
from tf2_msgs.msg import TFMessage

from dynfusion_ros.core.rotations import matrix_quaternion, quaternion_matrix
from dynfusion_ros.ros.convert import (
    columns_to_pointcloud2,
    header_msg,
    image_to_array,
    pointcloud2_to_array,
    stamp_ns,
)
from dynfusion_ros.ros.convert.geometry import quaternion_msg, vector3_msg
from dynfusion_ros.ros.replay import message_class
from dynfusion_ros.ros.typestore import bag_typestore
from dynfusion_ros.sim.rig import SensorRig

Layout = Callable[[str, object, int], list[tuple[str, object, int]]]
SIM_LIDAR_FRAME = "lidar_link"
# radar_msgs/RadarScan as its package defines it (not on PyPI: written here to make bags)
RADAR_SCAN = (
    "std_msgs/Header header\nradar_msgs/RadarReturn[] returns\n" + "=" * 80 + "\n"
    "MSG: radar_msgs/RadarReturn\nfloat32 range\nfloat32 azimuth\nfloat32 elevation\n"
    "float32 doppler_velocity\nfloat32 amplitude\n"
)


@dataclass
class Serialized:
    """A message of a type rclpy lacks here, already serialised by rosbags."""

    msgtype: str
    data: bytes


@cache
def _writer_store():
    """Our bags' types and radar_msgs, apart from the readers' store (which must learn
    radar_msgs from the bag itself)."""
    store = bag_typestore.__wrapped__()
    store.register(get_types_from_msg(RADAR_SCAN, "radar_msgs/msg/RadarScan"))
    return store


def rewrite_bag(source: Path, out: Path, layout: Layout) -> Path:
    """``source`` through ``layout`` into a new mcap bag at ``out``."""
    store = _writer_store()
    written = []
    with Reader(source) as reader:
        for connection, log_ns, raw in reader.messages():
            msg = deserialize_message(bytes(raw), message_class(connection.msgtype))
            written += layout(connection.topic, msg, log_ns)
    written.sort(key=lambda item: item[2])
    with Writer(out, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {}
        for topic, msg, log_ns in written:
            if isinstance(msg, Serialized):
                msgtype, data = msg.msgtype, msg.data
            else:
                msgtype = type(msg).__module__.split(".")[0] + "/msg/" + type(msg).__name__
                data = serialize_message(msg)
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(connections[topic], log_ns, data)
    return out


def _matrix(msg: TransformStamped) -> np.ndarray:
    t, r = msg.transform.translation, msg.transform.rotation
    matrix = np.eye(4)
    matrix[:3, :3] = quaternion_matrix(np.array([r.x, r.y, r.z, r.w]))
    matrix[:3, 3] = [t.x, t.y, t.z]
    return matrix


def _transform(parent: str, child: str, matrix: np.ndarray, stamp: int) -> TransformStamped:
    out = TransformStamped(header=header_msg(stamp, parent), child_frame_id=child)
    out.transform.translation = vector3_msg(matrix[:3, 3])
    out.transform.rotation = quaternion_msg(matrix_quaternion(matrix[:3, :3]))
    return out


def _rotation(axis: str, angle: float) -> np.ndarray:
    matrix = np.eye(4)
    c, s = np.cos(angle), np.sin(angle)
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
    return matrix


def _shift(x: float, y: float, z: float) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = (x, y, z)
    return matrix


def _points(msg: PointCloud2) -> np.ndarray:
    return pointcloud2_to_array(msg).copy()


def chained_mount(sensor_frame: str, chain: list[tuple[str, np.ndarray]]):
    """The mount of ``sensor_frame`` split into ``chain`` ((child, T_parent_child) below
    base_link, in order; the last child is the new sensor frame). Returns (the /tf_static
    rewrite, which also keeps the edges in ``edges``; the mover of points from the old
    sensor frame into the new one; the new frame's name)."""
    state: dict = {"edges": []}

    def tf(topic: str, msg, log_ns: int):
        if topic != "/tf_static":
            return None
        kept = []
        for transform in msg.transforms:
            if transform.child_frame_id != sensor_frame:
                kept.append(transform)
                continue
            parent, T_base_child = "/base_link", np.eye(4)  # a ROS 1 name, on purpose
            for child, T_parent_child in chain:
                state["edges"].append((parent, child, T_parent_child))
                T_base_child = T_base_child @ T_parent_child
                parent = child
            state["T_new_sensor"] = np.linalg.inv(T_base_child) @ _matrix(transform)
        msg.transforms = kept + [
            _transform(parent, child, T, stamp_ns(msg.transforms[0].header))
            for parent, child, T in state["edges"]
        ]
        return [(topic, msg, log_ns)]

    def move(xyz: np.ndarray) -> np.ndarray:
        T = state["T_new_sensor"]
        return xyz @ T[:3, :3].T + T[:3, 3]

    return tf, move, chain[-1][0], state


def _sim_xyz(points: np.ndarray) -> np.ndarray:
    return np.stack([points["x"], points["y"], points["z"]], axis=1).astype(np.float64)


def _columns(xyz: np.ndarray, **others) -> dict:
    return {
        "x": xyz[:, 0].astype(np.float32),
        "y": xyz[:, 1].astype(np.float32),
        "z": xyz[:, 2].astype(np.float32),
        **others,
    }


def lidar_layout(driver: str) -> Layout:
    """Velodyne (chained tf, header at sweep end), Ouster (os_sensor -> os_lidar turned
    180 deg, organised with zeros, photon intensity, uint32 ns time), Hesai (absolute s,
    zero points) or Livox (absolute ns)."""
    if driver == "velodyne":
        chain = [("velodyne_base_link", _shift(1.2, 0, 1.85)), ("velodyne", _shift(0, 0, 0.05))]
    elif driver == "ouster":
        chain = [
            ("os_sensor", _shift(1.2, 0, 1.86)),
            ("os_lidar", _shift(0, 0, 0.036) @ _rotation("z", np.pi)),
        ]
    else:
        chain = [(f"{driver}_lidar", _shift(1.2, 0, 1.9))]
    tf, move, frame, _ = chained_mount(SIM_LIDAR_FRAME, chain)

    def layout(topic: str, msg, log_ns: int):
        handled = tf(topic, msg, log_ns)
        if handled is not None:
            return handled
        if topic != "/lidar/points":
            return [(topic, msg, log_ns)]
        points = _points(msg)
        xyz, header = move(_sim_xyz(points)), stamp_ns(msg.header)
        time = points["time"].astype(np.float64)
        if driver == "velodyne":  # the driver stamps the last packet: times are negative
            end = float(time.max())
            cloud = columns_to_pointcloud2(
                _columns(
                    xyz,
                    intensity=points["intensity"],
                    ring=points["ring"],
                    time=(time - end).astype(np.float32),
                ),
                header + round(end * 1e9),
                frame,
            )
        elif driver == "ouster":
            cloud = _ouster(points, xyz, time, header, frame)
        elif driver == "hesai":
            stamps = header / 1e9 + time
            xyz = np.concatenate([xyz, np.zeros((50, 3))])  # no-return points
            cloud = columns_to_pointcloud2(
                _columns(
                    xyz,
                    intensity=np.concatenate([points["intensity"], np.zeros(50)])
                    .round()
                    .astype(np.uint8),
                    ring=np.concatenate([points["ring"], np.zeros(50, np.uint16)]),
                    timestamp=np.concatenate([stamps, np.full(50, stamps[0])]),
                ),
                header,
                frame,
            )
        else:  # livox: float64 nanoseconds since the epoch
            cloud = columns_to_pointcloud2(
                _columns(
                    xyz,
                    intensity=points["intensity"],
                    tag=np.zeros(len(xyz), np.uint8),
                    line=points["ring"].astype(np.uint8),
                    timestamp=header + time * 1e9,
                ),
                header,
                frame,
            )
        return [(topic, cloud, log_ns)]

    return layout


def _ouster(points, xyz, time, header: int, frame: str) -> PointCloud2:
    """An organised beams x columns cloud: no return is (0, 0, 0), intensity in photons."""
    columns = np.unique(time)
    beams = int(points["ring"].max()) + 1
    width = len(columns)
    grid = np.zeros(
        (beams, width),
        dtype=[
            ("x", np.float32),
            ("y", np.float32),
            ("z", np.float32),
            ("pad", np.float32),
            ("intensity", np.float32),
            ("t", np.uint32),
            ("reflectivity", np.uint16),
            ("ring", np.uint16),
            ("ambient", np.uint16),
            ("range", np.uint32),
        ],
    )
    column = np.searchsorted(columns, time)
    row = points["ring"].astype(int)
    grid["t"] = np.round(columns * 1e9).astype(np.uint32)[None, :]
    grid["ring"] = np.arange(beams)[:, None]
    for axis, name in enumerate("xyz"):
        grid[name][row, column] = xyz[:, axis]
    grid["reflectivity"][row, column] = np.round(points["intensity"]).astype(np.uint16)
    grid["intensity"][row, column] = points["intensity"] * 37.0 + 150.0  # photons
    grid["range"][row, column] = np.round(np.linalg.norm(xyz, axis=1) * 1000).astype(np.uint32)
    flat = columns_to_pointcloud2({n: grid[n].reshape(-1) for n in grid.dtype.names}, header, frame)
    flat.height, flat.width = beams, width
    flat.row_step = flat.point_step * width
    flat.is_dense = False
    return flat


def radar_layout(variant: str) -> Layout:
    """The radial velocity under another name (vr, radial_speed, doppler_velocity), as
    ARS408 vrel_long / vrel_lat components, or the whole scan in polar form."""

    def layout(topic: str, msg, log_ns: int):
        if topic != "/radar/points":
            return [(topic, msg, log_ns)]
        points = _points(msg)
        xyz, doppler = _sim_xyz(points), points["doppler"]
        frame, stamp = msg.header.frame_id, stamp_ns(msg.header)
        if variant == "ars408":
            reach = np.maximum(np.hypot(xyz[:, 0], xyz[:, 1]), 1e-6)
            columns = _columns(
                xyz,
                vrel_long=(doppler * xyz[:, 0] / reach).astype(np.float32),
                vrel_lat=(doppler * xyz[:, 1] / reach).astype(np.float32),
                rcs=points["rcs"],
            )
        elif variant == "no_rcs":
            columns = _columns(xyz, doppler=doppler)
        elif variant == "radar_scan":
            return [(topic, _radar_scan(xyz, doppler, points["rcs"], msg.header), log_ns)]
        elif variant == "polar":
            distance = np.linalg.norm(xyz, axis=1)
            columns = {
                "range": distance.astype(np.float32),
                "azimuth": np.arctan2(xyz[:, 1], xyz[:, 0]).astype(np.float32),
                "elevation": np.arcsin(xyz[:, 2] / np.maximum(distance, 1e-6)).astype(np.float32),
                "doppler": doppler,
                "rcs": points["rcs"],
            }
        else:
            columns = _columns(xyz, **{variant: doppler, "rcs": points["rcs"]})
        return [(topic, columns_to_pointcloud2(columns, stamp, frame), log_ns)]

    return layout


def _radar_scan(xyz: np.ndarray, doppler, rcs, header) -> Serialized:
    store = _writer_store()
    Scan, Return = (store.types[f"radar_msgs/msg/{n}"] for n in ("RadarScan", "RadarReturn"))
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    distance = np.linalg.norm(xyz, axis=1)
    returns = [
        Return(
            range=float(d),
            azimuth=float(np.arctan2(p[1], p[0])),
            elevation=float(np.arcsin(p[2] / max(d, 1e-6))),
            doppler_velocity=float(v),
            amplitude=float(a),
        )
        for p, d, v, a in zip(xyz, distance, doppler, rcs, strict=True)
    ]
    stamp = Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec)
    scan = Scan(header=Header(stamp=stamp, frame_id=header.frame_id), returns=returns)
    data = store.serialize_cdr(scan, "radar_msgs/msg/RadarScan")
    return Serialized("radar_msgs/msg/RadarScan", bytes(data))


def camera_layout(variant: str) -> Layout:
    """A RealSense-like chained optical frame, its upper links on /tf (as
    robot_state_publisher sends them) and the images as jpeg or png on .../compressed
    (``compressed_jpeg``/``compressed_png``); or a barrel lens (``distorted``: k1 = -0.28,
    the image warped through it)."""
    optical = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]], float)
    chain = [
        ("camera_link", _shift(1.6, 0, 1.4)),
        ("camera_color_frame", _shift(0, 0, 0)),
        ("camera_color_optical_frame", optical),
    ]
    tf, _, frame, mount = chained_mount(SensorRig().frame_ids["camera"], chain)
    K, D = SensorRig().camera.K, np.array([-0.28, 0.07, 0.0, 0.0, 0.0])
    lens_map = _lens_map(K, D, SensorRig().image_width, SensorRig().image_height)

    def compressed(topic: str, msg, log_ns: int):
        import cv2

        if topic == "/tf_static":
            tf(topic, msg, log_ns)
            on_tf = msg.transforms[-3:-1]  # camera_link and camera_color_frame
            msg.transforms = msg.transforms[:-3] + msg.transforms[-1:]
            mount["on_tf"] = on_tf
            return [(topic, msg, log_ns)]
        if topic == "/camera/camera_info":
            msg.header.frame_id = frame
            tf_msg = TFMessage(transforms=mount["on_tf"])
            return [(topic, msg, log_ns), ("/tf", tf_msg, log_ns)]
        if topic != "/camera/image_raw":
            return [(topic, msg, log_ns)]
        extension = ".jpg" if variant.endswith("jpeg") else ".png"
        options = [cv2.IMWRITE_JPEG_QUALITY, 95] if extension == ".jpg" else []
        bgr = np.ascontiguousarray(image_to_array(msg)[..., ::-1])
        _, data = cv2.imencode(extension, bgr, options)
        out = CompressedImage(header=msg.header, format=extension[1:], data=data.tobytes())
        out.header.frame_id = frame
        return [("/camera/image_raw/compressed", out, log_ns)]

    def distorted(topic: str, msg, log_ns: int):
        import cv2

        if topic == "/camera/camera_info":
            msg.d = D.tolist()
        elif topic == "/camera/image_raw":
            pixels = np.ascontiguousarray(image_to_array(msg))
            msg.data = cv2.remap(pixels, lens_map, None, cv2.INTER_LINEAR).tobytes()
        return [(topic, msg, log_ns)]

    return compressed if variant.startswith("compressed") else distorted


def _lens_map(K: np.ndarray, D: np.ndarray, width: int, height: int) -> np.ndarray:
    """For each pixel of the distorted image, where the pinhole image saw its ray."""
    import cv2

    grid = np.stack(np.meshgrid(np.arange(width), np.arange(height)), -1).astype(float)
    rays = cv2.undistortPoints(grid.reshape(-1, 1, 2), K, D).reshape(-1, 2)
    return (rays @ K[:2, :2].T + K[:2, 2]).reshape(height, width, 2).astype(np.float32)


def imu_layout(late_s: float) -> Layout:
    """The IMU mounted upside down (z down, 180 deg about x) and every /tf_static sent
    ``late_s`` after the data starts, as a robot_state_publisher that starts last."""
    flip = _rotation("x", np.pi)

    def layout(topic: str, msg, log_ns: int):
        if topic == "/tf_static":
            for transform in msg.transforms:
                if transform.child_frame_id == "imu_link":
                    turned = _matrix(transform) @ flip
                    transform.transform.rotation = quaternion_msg(matrix_quaternion(turned[:3, :3]))
            return [(topic, msg, log_ns + round(late_s * 1e9))]
        if topic == "/imu/data":
            R = flip[:3, :3].T
            for name in ("angular_velocity", "linear_acceleration"):
                vector = getattr(msg, name)
                x, y, z = R @ np.array([vector.x, vector.y, vector.z])
                vector.x, vector.y, vector.z = float(x), float(y), float(z)
        return [(topic, msg, log_ns)]

    return layout


ROS1_TOPICS = {
    "/camera/image_raw": "/camera/color/image_raw",
    "/camera/camera_info": "/camera/color/camera_info",
    "/lidar/points": "/velodyne_points",
    "/radar/points": "/radar/detections",
    "/imu/data": "/imu/data_raw",
}


# the sensor parameters that read a ros1_names bag: topics by sensor, and the base frame
ROS1_PARAMS = {
    "camera_topic": ROS1_TOPICS["/camera/image_raw"],
    "camera_info_topic": ROS1_TOPICS["/camera/camera_info"],
    "lidar_topic": ROS1_TOPICS["/lidar/points"],
    "radar_topic": ROS1_TOPICS["/radar/points"],
    "imu_topic": ROS1_TOPICS["/imu/data"],
    "base_frame": "/base_link",
}


def ros1_names(topic: str, msg, log_ns: int):
    """A bag converted from ROS 1: other topic names, frame ids with a leading slash."""
    header = getattr(msg, "header", None)
    if header is not None and header.frame_id:
        header.frame_id = "/" + header.frame_id
    if topic == "/tf_static":
        for transform in msg.transforms:
            transform.header.frame_id = "/" + transform.header.frame_id
            transform.child_frame_id = "/" + transform.child_frame_id
    return [(ROS1_TOPICS.get(topic, topic), msg, log_ns)]


def combine(*layouts: Layout) -> Layout:
    """Layouts applied one after the other."""

    def layout(topic: str, msg, log_ns: int):
        items = [(topic, msg, log_ns)]
        for step in layouts:
            items = [out for item in items for out in step(*item)]
        return items

    return layout
