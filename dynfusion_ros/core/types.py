"""Plain data that flows through the pipeline: sensor frames, detections, odometry.

Numpy arrays and dataclasses only, so the core can be driven by ROS nodes, by the bag
evaluator and by tests alike. Conventions (REP-103 / REP-105):

- Times are integer nanoseconds (``stamp_ns``): frames are keyed by stamp, and integer
  keys compare exactly where float seconds would not.
- Points are in their sensor's frame as published; ``T_base_sensor`` (4x4, metres) maps
  them into ``base_link`` (x forward, y left, z up).
- Quaternions are ``(x, y, z, w)``, as in geometry_msgs.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from dynfusion_ros.core import lens
from dynfusion_ros.core.rotations import matrix_quaternion, quaternion_matrix

NS_PER_S = 1_000_000_000


def stamp_to_s(stamp_ns: int) -> float:
    return stamp_ns / NS_PER_S


class Modality(enum.Enum):
    """A sensor kind; also the name of its detector stem."""

    CAMERA = "camera"
    LIDAR = "lidar"
    RADAR = "radar"
    IMU = "imu"


class ObjectClass(enum.IntEnum):
    """Detected object classes. The integer is the vision_msgs class id (as a string)."""

    CAR = 0
    PEDESTRIAN = 1
    CYCLIST = 2

    @property
    def label(self) -> str:
        return self.name.lower()


def _identity4() -> np.ndarray:
    return np.eye(4)


def _as_vector(value: np.ndarray | tuple[float, ...], size: int, name: str) -> np.ndarray:
    vector = np.asarray(value, dtype=np.float64).reshape(-1)
    if vector.shape != (size,):
        raise ValueError(f"{name}: expected {size} values, got shape {np.shape(value)}")
    return vector


def _as_matrix(value: np.ndarray, shape: tuple[int, int], name: str) -> np.ndarray:
    matrix = np.asarray(value, dtype=np.float64)
    if matrix.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {matrix.shape}")
    return matrix


# CameraInfo's distortion models and the coefficient counts OpenCV takes for each (an
# empty D: no distortion); any other count makes OpenCV raise mid-frame
DISTORTION_COEFFICIENTS = {
    "plumb_bob": (4, 5, 8, 12, 14),
    "rational_polynomial": (4, 5, 8, 12, 14),
    "equidistant": (4,),
}
MAX_DISTORTION_COEFFICIENT = 1e4  # real lenses: |k| below 10, rational terms below 1e3


def distortion_problem(model: str, D: np.ndarray) -> str:
    """Why OpenCV could not use this lens model and these coefficients ("" if it can)."""
    counts = DISTORTION_COEFFICIENTS.get(model)
    if counts is None:
        return f"distortion model {model!r} unknown (use {', '.join(DISTORTION_COEFFICIENTS)})"
    if len(D) and len(D) not in counts:
        allowed = " or ".join(map(str, counts))
        return f"{model} takes {allowed} coefficients, got {len(D)}"
    if not np.isfinite(D).all() or np.abs(D).max(initial=0.0) > MAX_DISTORTION_COEFFICIENT:
        return f"distortion coefficients non-finite or absurd: {D.tolist()}"
    return ""


@dataclass(frozen=True)
class CameraModel:
    """Pinhole camera with optional lens distortion, as sensor_msgs/CameraInfo describes it.

    ``K`` maps camera-frame rays (z forward, optical frame) to pixels; ``D`` and
    ``distortion_model`` follow CameraInfo ("plumb_bob" / "rational_polynomial" /
    "equidistant"); an empty ``D`` means an undistorted image.
    """

    width: int
    height: int
    K: np.ndarray
    D: np.ndarray = field(default_factory=lambda: np.zeros(0))
    distortion_model: str = "plumb_bob"
    frame_id: str = "camera_optical"

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera size must be positive, got {self.width}x{self.height}")
        K = _as_matrix(self.K, (3, 3), "K")
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(f"focal lengths must be positive, got fx={K[0, 0]}, fy={K[1, 1]}")
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "D", np.asarray(self.D, dtype=np.float64).reshape(-1))
        problem = distortion_problem(self.distortion_model, self.D)
        if problem:
            raise ValueError(problem)

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    def project(self, points_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) optical-frame points to pixels through the lens (``D``, see ``lens``).

        Returns pixel coordinates (N, 2) and a mask of points in front of the camera
        and inside the image.
        """
        points = np.asarray(points_cam, dtype=np.float64).reshape(-1, 3)
        z = points[:, 2]
        in_front = z > 1e-6
        safe_z = np.where(in_front, z, 1.0)
        normalised = points[:, :2] / safe_z[:, None]
        if lens.distorts(self.D):
            pixels = lens.distorted_pixels(normalised, self.K, self.D, self.distortion_model)
            reach = lens.fold_radius(self.K, self.D, self.distortion_model)
            in_front &= np.hypot(normalised[:, 0], normalised[:, 1]) < reach
        else:
            pixels = normalised * [self.fx, self.fy] + [self.cx, self.cy]
        u, v = pixels[:, 0], pixels[:, 1]
        inside = in_front & (u >= 0) & (u < self.width) & (v >= 0) & (v < self.height)
        return pixels, inside


@dataclass
class CameraImage:
    """One camera image. ``pixels`` is (H, W, 3) RGB uint8, (H, W) mono, or (H, W) depth."""

    stamp_ns: int
    pixels: np.ndarray
    encoding: str
    model: CameraModel | None = None
    T_base_sensor: np.ndarray = field(default_factory=_identity4)


@dataclass
class PointScan:
    """A lidar sweep or a radar scan: points in the sensor frame plus per-point fields.

    ``xyz`` is (N, 3) float32. ``fields`` holds the other per-point channels by their
    canonical names (``intensity``, ``ring``, ``time`` for lidar; ``doppler`` in m/s,
    positive moving away, and ``rcs`` in dBsm for radar). ``dropped_invalid`` counts
    points removed on conversion because a coordinate was NaN or infinite.
    """

    stamp_ns: int
    xyz: np.ndarray
    fields: dict[str, np.ndarray] = field(default_factory=dict)
    frame_id: str = ""
    T_base_sensor: np.ndarray = field(default_factory=_identity4)
    dropped_invalid: int = 0

    def __post_init__(self) -> None:
        if self.xyz.ndim != 2 or self.xyz.shape[1] != 3:
            raise ValueError(f"xyz must be (N, 3), got {self.xyz.shape}")
        for name, values in self.fields.items():
            if len(values) != len(self.xyz):
                raise ValueError(
                    f"field {name!r} has {len(values)} values for {len(self.xyz)} points"
                )

    def __len__(self) -> int:
        return len(self.xyz)

    def thinned(self, max_points: int) -> PointScan:
        """At most ``max_points``, by taking every k-th point: a cloud far larger than a
        sensor makes (a driver bug, a merged map) is used in part rather than stalling
        the frame."""
        if max_points < 1:
            raise ValueError(f"max_points must be at least 1, got {max_points}")
        if len(self) <= max_points:
            return self
        step = -(-len(self) // max_points)
        return replace(
            self,
            xyz=self.xyz[::step],
            fields={name: values[::step] for name, values in self.fields.items()},
        )

    def in_base(self) -> np.ndarray:
        """Points transformed to base_link, (N, 3) float32."""
        rotation = self.T_base_sensor[:3, :3].astype(np.float32)
        translation = self.T_base_sensor[:3, 3].astype(np.float32)
        return self.xyz @ rotation.T + translation


@dataclass(frozen=True)
class ImuSample:
    """One IMU reading in the IMU frame.

    ``angular_velocity`` in rad/s, ``linear_acceleration`` in m/s^2 (specific force:
    gravity included, as sensor_msgs/Imu specifies). ``orientation`` is ``None`` when
    the IMU gives none. Covariances are 3x3; ``None`` means unknown.
    """

    stamp_ns: int
    angular_velocity: np.ndarray
    linear_acceleration: np.ndarray
    orientation: np.ndarray | None = None
    angular_velocity_covariance: np.ndarray | None = None
    linear_acceleration_covariance: np.ndarray | None = None
    orientation_covariance: np.ndarray | None = None
    frame_id: str = "imu_link"

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "angular_velocity", _as_vector(self.angular_velocity, 3, "angular_velocity")
        )
        object.__setattr__(
            self,
            "linear_acceleration",
            _as_vector(self.linear_acceleration, 3, "linear_acceleration"),
        )
        if self.orientation is not None:
            object.__setattr__(self, "orientation", _as_vector(self.orientation, 4, "orientation"))


def imu_in_base(sample: ImuSample, R_base_imu: np.ndarray, base_frame: str) -> ImuSample:
    """The sample seen from base_link's axes (a mount rotated on the vehicle): vectors and
    covariances rotated, the orientation (of the IMU in its world) made base_link's. The
    lever arm is left out: for a ground vehicle it adds little (see the filter)."""
    R = np.asarray(R_base_imu, dtype=np.float64)

    def rotated(covariance: np.ndarray | None) -> np.ndarray | None:
        return None if covariance is None else R @ covariance @ R.T

    orientation = sample.orientation
    if orientation is not None:
        orientation = matrix_quaternion(quaternion_matrix(orientation) @ R.T)
    return replace(
        sample,
        angular_velocity=R @ sample.angular_velocity,
        linear_acceleration=R @ sample.linear_acceleration,
        orientation=orientation,
        angular_velocity_covariance=rotated(sample.angular_velocity_covariance),
        linear_acceleration_covariance=rotated(sample.linear_acceleration_covariance),
        frame_id=base_frame,
    )


@dataclass
class SensorFrame:
    """Everything the pipeline sees at one reference stamp.

    A modality whose data is ``None`` was unavailable for this frame (dead, stale or
    malformed sensor); the gate plans without it. ``imu`` holds the samples since the
    previous frame, oldest first. ``sensor_stamps_ns`` gives, per modality that
    delivered, the stamp of the message used (for staleness).
    """

    stamp_ns: int
    camera: CameraImage | None = None
    lidar: PointScan | None = None
    radar: PointScan | None = None
    imu: tuple[ImuSample, ...] = ()
    sensor_stamps_ns: dict[Modality, int] = field(default_factory=dict)

    def available(self, modality: Modality) -> bool:
        if modality is Modality.IMU:
            return len(self.imu) > 0
        return getattr(self, modality.value) is not None

    @property
    def availability(self) -> dict[Modality, bool]:
        return {modality: self.available(modality) for modality in Modality}

    def staleness_s(self, modality: Modality) -> float:
        """Frame stamp minus the modality's message stamp (s); NaN when it did not deliver."""
        stamp = self.sensor_stamps_ns.get(modality)
        if stamp is None:
            return float("nan")
        return stamp_to_s(self.stamp_ns - stamp)


@dataclass(frozen=True)
class Box3D:
    """An upright box in base_link: centre (m), size length/width/height (m), yaw (rad).

    Length is along the box's heading (yaw, about +z, counter-clockwise from +x).
    """

    x: float
    y: float
    z: float
    length: float
    width: float
    height: float
    yaw: float

    def __post_init__(self) -> None:
        values = (self.x, self.y, self.z, self.length, self.width, self.height, self.yaw)
        if not all(np.isfinite(values)):
            raise ValueError(f"box values must be finite, got {values}")
        if min(self.length, self.width, self.height) <= 0:
            raise ValueError(
                f"box size must be positive, got {self.length}x{self.width}x{self.height}"
            )

    def as_array(self) -> np.ndarray:
        return np.array(
            [self.x, self.y, self.z, self.length, self.width, self.height, self.yaw],
            dtype=np.float64,
        )


@dataclass(frozen=True)
class Detection:
    """One detected object. ``velocity`` is (vx, vy) in base_link (m/s) when estimated."""

    object_class: ObjectClass
    score: float
    box: Box3D
    velocity: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score must be in [0, 1], got {self.score}")


@dataclass(frozen=True)
class OdometryEstimate:
    """Pose of base_link in odom, and its twist in base_link, with 6x6 covariances.

    Covariance order is (x, y, z, roll, pitch, yaw), as in nav_msgs/Odometry.
    """

    stamp_ns: int
    position: np.ndarray
    orientation: np.ndarray
    linear_velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))
    angular_velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))
    pose_covariance: np.ndarray = field(default_factory=lambda: np.zeros((6, 6)))
    twist_covariance: np.ndarray = field(default_factory=lambda: np.zeros((6, 6)))
    frame_id: str = "odom"
    child_frame_id: str = "base_link"

    def __post_init__(self) -> None:
        object.__setattr__(self, "position", _as_vector(self.position, 3, "position"))
        orientation = _as_vector(self.orientation, 4, "orientation")
        norm = np.linalg.norm(orientation)
        if not np.isfinite(norm) or norm < 1e-9:
            raise ValueError(f"orientation must be a non-zero quaternion, got {orientation}")
        object.__setattr__(self, "orientation", orientation / norm)
        for name in ("linear_velocity", "angular_velocity"):
            object.__setattr__(self, name, _as_vector(getattr(self, name), 3, name))
        for name in ("pose_covariance", "twist_covariance"):
            object.__setattr__(self, name, _as_matrix(getattr(self, name), (6, 6), name))


@dataclass(frozen=True)
class Selection:
    """Which detector options run on one frame, and what the gate expected of them.

    Parallel tuples over ``branch_names``: every option (a stem at a level,
    ``detector/levels.py``), named so after the message field, which keeps its name so
    that recordings and tools made before the fused detector still read. Energies in
    joules per frame.
    """

    stamp_ns: int
    policy: str
    branch_names: tuple[str, ...]
    chosen: tuple[bool, ...]
    predicted_utility: tuple[float, ...]
    selection_utility: float
    predicted_energy_j: float
    budget_j: float
    context_label: str = ""
    context_scores: Mapping[str, float] = field(default_factory=dict)
    sensor_available: Mapping[Modality, bool] = field(default_factory=dict)
    sensor_age_s: Mapping[Modality, float] = field(default_factory=dict)
    odometry_corrections: tuple[str, ...] = ()  # run on this frame, within predicted energy
    allowed_j: float = 0.0  # the most the frame could spend: budget and savings (0: no budget)

    def __post_init__(self) -> None:
        n = len(self.branch_names)
        if len(self.chosen) != n or len(self.predicted_utility) != n:
            raise ValueError(
                f"chosen ({len(self.chosen)}) and predicted_utility "
                f"({len(self.predicted_utility)}) must match branch_names ({n})"
            )

    @property
    def chosen_branches(self) -> tuple[str, ...]:
        return tuple(name for name, on in zip(self.branch_names, self.chosen, strict=True) if on)


@dataclass(frozen=True)
class EnergyRecord:
    """Energy of one frame (J). Per component and per option as the energy profile prices
    what ran (what the budget is held to); ``measured_energy_j`` is what ``meter`` saw
    for the whole frame (NaN when nothing measured it). ``budget_j`` is the mean budget
    per frame (0: none); ``allowed_j`` what this frame could spend, its budget and what
    earlier frames saved (None: the budget)."""

    stamp_ns: int
    component_energy_j: Mapping[str, float]
    branch_energy_j: Mapping[str, float]
    budget_j: float
    meter: str
    measured_energy_j: float = float("nan")
    allowed_j: float | None = None

    @property
    def total_energy_j(self) -> float:
        return float(sum(self.component_energy_j.values()))

    @property
    def over_budget(self) -> bool:
        # relative slack: the same prices summed in another order differ in the last bits
        allowed = self.budget_j if self.allowed_j is None else self.allowed_j
        return self.budget_j > 0 and self.total_energy_j > allowed * (1 + 1e-9)
