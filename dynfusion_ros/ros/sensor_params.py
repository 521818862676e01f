"""What the sensors are and how their messages are read: one configuration for the nodes
and the offline tools.

``SENSOR_PARAMS`` are declared by both nodes (``ros2 param describe`` shows each meaning
and unit). The offline tools (`dynfusion evaluate`, `benchmark`, `train`) read the same
names from the same YAML file (``--params``) through ``load_params_file``, so a bag run
offline and through the nodes uses the same topics, field choices and frames.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from dynfusion_ros.core.types import Modality
from dynfusion_ros.ros.convert.lidar import TIME_ENCODINGS, LidarLayout
from dynfusion_ros.ros.convert.radar import RadarLayout
from dynfusion_ros.ros.parameters import Param
from dynfusion_ros.ros.sync import FRAME_SENSORS, SyncSettings

SYNC = SyncSettings()  # the sync's defaults are the parameters' defaults: one source
CAMERA, LIDAR, RADAR = FRAME_SENSORS


def _sensors(value: object) -> str:
    known = [m.value for m in FRAME_SENSORS]
    unknown = [v for v in value if v not in known]
    if unknown or not value:
        return f"needs sensors from {', '.join(known)}; got {list(value)}"
    return ""


def _topic(value: object) -> str:
    """A relative name (resolved in the node's namespace, as ROS drivers publish them)
    or an absolute one; private (~) and substituted ({node}) names are not taken: the
    offline tools read them from bags, where no node resolves them."""
    from rclpy.exceptions import InvalidTopicNameException
    from rclpy.validate_full_topic_name import validate_full_topic_name

    if not isinstance(value, str) or not value or "~" in value or "{" in value:
        return "must be a relative or absolute topic name (no ~ or {})"
    try:
        validate_full_topic_name(bag_topic(value))
    except InvalidTopicNameException as error:
        return str(error).splitlines()[0]
    return ""


def bag_topic(name: str) -> str:
    """The topic a relative name is in a bag recorded without a namespace."""
    return name if name.startswith("/") else f"/{name}"


def _frame(value: object) -> str:
    return "" if isinstance(value, str) and value.strip("/") else "must name a frame"


def _field(value: object) -> str:
    return "" if isinstance(value, str) and value else "must be auto, none or a field name"


def _radar_message(value: object) -> str:
    if value != "radar_scan":
        return ""
    try:
        import radar_msgs.msg  # noqa: F401  (a full ROS install has it; PyPI has not)
    except ImportError:
        return "radar_scan needs the radar_msgs package, which is not installed here"
    return ""


def _fields(value: object) -> str:
    return "" if value and all(isinstance(v, str) and v for v in value) else "needs field names"


SENSOR_PARAMS = (
    Param(
        "base_frame",
        "base_link",
        "The robot's body frame (REP-105): sensors are placed on it through the tf tree"
        " (/tf_static and /tf, chained), and detections are published in it.",
        check=_frame,
    ),
    Param(
        "camera_topic",
        "camera/image_raw",
        "Camera images: sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8, mono16, bayer_*)"
        " or, with camera_transport compressed, sensor_msgs/CompressedImage (jpeg, png).",
        check=_topic,
    ),
    Param(
        "camera_transport",
        "auto",
        "How images travel: raw (sensor_msgs/Image), compressed (CompressedImage), or auto:"
        " compressed when camera_topic ends in /compressed, as image_transport names it.",
        choices=("auto", "raw", "compressed"),
    ),
    Param(
        "camera_info_topic",
        "camera/camera_info",
        "Camera calibration (sensor_msgs/CameraInfo). A distorted lens (plumb_bob,"
        " rational_polynomial: 4, 5, 8, 12 or 14 coefficients; equidistant: 4) is followed"
        " wherever points are projected into the image; a CameraInfo OpenCV could not use"
        " is refused and counted, and the previous one stays.",
        check=_topic,
    ),
    Param(
        "lidar_topic",
        "lidar/points",
        "Lidar sweeps (sensor_msgs/PointCloud2 with x, y, z; intensity and per-point time"
        " optional). Points at exactly (0, 0, 0), as Ouster and Hesai drivers publish for"
        " no return, are dropped.",
        check=_topic,
    ),
    Param(
        "lidar_time_field",
        "auto",
        "Per-point time field: a field name, none, or auto (time, t, timestamp,"
        " offset_time, the first present).",
        check=_field,
    ),
    Param(
        "lidar_time_encoding",
        "auto",
        "What the time field holds: relative_s / relative_ns (since the header stamp; may be"
        " negative when the header is stamped at sweep end), absolute_s / absolute_ns, or"
        " auto (concluded from the first sweep against its header stamp, and logged)."
        " A sweep whose points precede its header stamp is keyed at its first point.",
        choices=TIME_ENCODINGS,
    ),
    Param(
        "lidar_intensity_field",
        "auto",
        "Intensity field: a field name, none, or auto (reflectivity when the cloud also has"
        " intensity, as Ouster's photon counts; else intensity, i).",
        check=_field,
    ),
    Param(
        "lidar_intensity_scale",
        0.0,
        "Factor taking the intensity field to 0-255 (Velodyne, Hesai, Livox, Ouster"
        " reflectivity: 1; a 0-1 float field: 255). 0: auto, 255 for a float field whose first"
        " sweep stays within 0-1, else 1.",
        0.0,
        1e6,
    ),
    Param(
        "radar_topic",
        "radar/points",
        "Radar detections (sensor_msgs/PointCloud2): x, y, z or range, azimuth (rad),"
        " elevation; a radial velocity (radar_doppler_fields, or vrel_long and vrel_lat);"
        " rcs when present.",
        check=_topic,
    ),
    Param(
        "radar_message",
        "pointcloud2",
        "What radar_topic carries: pointcloud2 (sensor_msgs/PointCloud2) or radar_scan"
        " (radar_msgs/RadarScan; the nodes need the radar_msgs package, the offline tools"
        " read it from the bag's own definition).",
        choices=("pointcloud2", "radar_scan"),
        check=_radar_message,
    ),
    Param(
        "radar_doppler_fields",
        list(RadarLayout().doppler_fields),
        "Names the radial velocity (m/s, positive moving away) may have; the first present"
        " is used.",
        check=_fields,
    ),
    Param(
        "radar_rcs_fields",
        list(RadarLayout().rcs_fields),
        "Names the radar cross-section (dBsm) may have; a scan with none is used without"
        " RCS, and that is reported once.",
        check=_fields,
    ),
    Param(
        "imu_topic",
        "imu/data",
        "IMU samples (sensor_msgs/Imu). Samples wait, up to calibration_hold_s, for the IMU"
        " frame's mount in the tf tree; the filter never uses one whose mount is unknown.",
        check=_topic,
    ),
    Param(
        "calibration_hold_s",
        1.0,
        "Longest a sensor message waits for what it cannot be used without (the first"
        " CameraInfo, its frame's link to base_frame in the tf tree) (s); it is then used in"
        " arrival order, and older ones are dropped and counted.",
        0.0,
        10.0,
    ),
    Param(
        "reference_sensors",
        [m.value for m in SYNC.reference_order],
        "Sensors whose stamps key frames, in order of preference: the first one not silent"
        " keys them.",
        check=_sensors,
    ),
    Param(
        "frame_period_s",
        SYNC.frame_period_s,
        "Nominal frame period (s); a reference message closer than half of it to the last"
        " frame keys none.",
        0.01,
        1.0,
    ),
    Param(
        "frame_timeout_s",
        SYNC.timeout_s,
        "Longest a frame waits for its other sensors after its reference message arrived "
        "(s); then it goes on without them.",
        0.0,
        2.0,
    ),
    Param(
        "silent_after_s",
        SYNC.silent_after_s,
        "A sensor not heard for this long (s) is silent: frames do not wait for it and it"
        " keys none.",
        0.01,
        10.0,
    ),
    Param(
        "stamp_tolerance_s",
        SYNC.tolerance_s[CAMERA],
        "How far after the frame stamp a message may be stamped and still belong to the frame (s).",
        0.0,
        0.5,
    ),
    Param(
        "camera_max_age_s",
        SYNC.max_age_s[CAMERA],
        "Oldest camera image a frame takes, before its stamp (s).",
        0.0,
        2.0,
    ),
    Param(
        "lidar_max_age_s",
        SYNC.max_age_s[LIDAR],
        "Oldest lidar sweep a frame takes, before its stamp (s).",
        0.0,
        2.0,
    ),
    Param(
        "radar_max_age_s",
        SYNC.max_age_s[RADAR],
        "Oldest radar scan a frame takes, before its stamp (s).",
        0.0,
        2.0,
    ),
    Param(
        "lidar_max_points",
        500_000,
        "Largest lidar cloud used whole; a larger one is thinned to this by taking every"
        " k-th point, and reported.",
        1000,
        100_000_000,
    ),
    Param(
        "radar_max_points",
        10_000,
        "Largest radar scan used whole; a larger one is thinned the same way.",
        10,
        10_000_000,
    ),
    Param(
        "max_stamp_delay_s",
        SYNC.max_delay_s,
        "Messages stamped further behind the node clock than this are dropped as stale (s).",
        0.1,
        1e6,
    ),
    Param(
        "max_stamp_lead_s",
        SYNC.max_future_s,
        "Messages stamped further ahead of the node clock than this are dropped (s).",
        0.0,
        60.0,
    ),
)

SENSOR_DEFAULTS = {param.name: param.default for param in SENSOR_PARAMS}


def fingerprint(values: dict | None) -> str:
    """The sensor parameters that differ from the defaults, as JSON ("" for none): what
    a cache of frames read from bags must match to be reused."""
    changed = {k: v for k, v in (values or {}).items() if SENSOR_DEFAULTS.get(k) != v}
    return json.dumps(changed, sort_keys=True) if changed else ""


def sync_settings(values: dict) -> SyncSettings:
    """The sync settings from the declared SENSOR_PARAMS values."""
    per_sensor = {m: values[f"{m.value}_max_age_s"] for m in FRAME_SENSORS}
    tolerance = values["stamp_tolerance_s"]
    return SyncSettings(
        reference_order=tuple(Modality(v) for v in values["reference_sensors"]),
        frame_period_s=values["frame_period_s"],
        tolerance_s={m: tolerance for m in FRAME_SENSORS},
        max_age_s=per_sensor,
        timeout_s=values["frame_timeout_s"],
        silent_after_s=values["silent_after_s"],
        max_future_s=values["max_stamp_lead_s"],
        max_delay_s=values["max_stamp_delay_s"],
    )


def lidar_layout(values: dict) -> LidarLayout:
    return LidarLayout(
        time_field=values["lidar_time_field"],
        time_encoding=values["lidar_time_encoding"],
        intensity_field=values["lidar_intensity_field"],
        intensity_scale=values["lidar_intensity_scale"],
    )


def radar_layout(values: dict) -> RadarLayout:
    return RadarLayout(
        doppler_fields=tuple(values["radar_doppler_fields"]),
        rcs_fields=tuple(values["radar_rcs_fields"]),
    )


def compressed_camera(values: dict) -> bool:
    """Whether the camera topic carries sensor_msgs/CompressedImage."""
    transport = values["camera_transport"]
    if transport == "auto":
        return values["camera_topic"].endswith("/compressed")
    return transport == "compressed"


def typed(param: Param, value: object) -> object:
    """``value`` as the parameter's type, as rclpy would take it from YAML."""
    kind = type(param.default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is list and isinstance(value, list):
        return value
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"parameter {param.name}: expected {kind.__name__}, got {value!r}")
    return value


def load_params_file(path: Path | None) -> dict:
    """The sensor parameters of a ROS 2 parameters file (``/**`` and node sections, as
    the launch files and `dynfusion run --params` take it) over the defaults. Other
    parameters (the gate's, the fusion node's) are the nodes' business and left alone.
    ValueError names the file and the parameter for a bad value, or for two sections
    that disagree (both nodes must key the same frames)."""
    values = dict(SENSOR_DEFAULTS)
    if path is None:
        return values
    try:
        document = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read the parameters file: {error}") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path}: not a ROS 2 parameters file (node: ros__parameters: ...)")
    by_name = {param.name: param for param in SENSOR_PARAMS}
    given: dict[str, tuple[str, object]] = {}
    for section, body in document.items():
        parameters = body.get("ros__parameters") if isinstance(body, dict) else None
        if not isinstance(parameters, dict):
            raise ValueError(f"{path}: section {section!r} has no ros__parameters mapping")
        for name, given_value in parameters.items():
            param = by_name.get(name)
            if param is None:
                continue
            try:
                value = typed(param, given_value)
            except ValueError as error:
                raise ValueError(f"{path}: {error}") from None
            reason = param.refusal(value)
            if reason:
                raise ValueError(f"{path}: parameter {name}: {reason}")
            if name in given and given[name][1] != value:
                raise ValueError(
                    f"{path}: {name} is {given[name][1]!r} in {given[name][0]!r} but "
                    f"{value!r} in {section!r}: both nodes must read the sensors alike"
                )
            given[name] = (section, value)
            values[name] = value
    return values
