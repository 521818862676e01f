"""The camera correction: the vehicle's motion from corners tracked between two images,
placed in 3-D by the lidar (or, without one, by the road plane).

A monocular camera has no scale of its own. Here the previous frame's lidar sweep,
projected into the previous image, gives each FAST corner its depth; a corner whose
lidar neighbourhood holds several depths sits on the edge between two surfaces and is
left out. With no lidar, corners on the road get
their position from the ground plane instead: the camera's height and tilt come from
its calibrated mount. (The simulated road is untextured asphalt, so there the lane
dashes are all the road offers; real asphalt gives more.)

The corners are tracked into the current image with pyramidal Lucas-Kanade, each
started where the filter's predicted motion puts it, so a fast drive (1.5 m between
frames at 15 m/s) stays within the tracker's reach. ``planar_motion`` then finds the
x, y and yaw that reproject them best, and the filter takes that motion as an average
body velocity and yaw rate over the interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from dynfusion_ros.core.odometry.camera_geometry import CameraGeometry
from dynfusion_ros.core.odometry.filter import (
    GYRO_BIAS,
    STATE_SIZE,
    ImuFilter,
    Update,
    correlated_error_share,
)
from dynfusion_ros.core.odometry.planar_motion import (
    Mount,
    PlanarMotion,
    fit_planar_motion,
    planar_of,
    reproject,
)
from dynfusion_ros.core.types import NS_PER_S, CameraImage, PointScan, SensorFrame

NAME = "camera"
# Lucas-Kanade drops a window whose gradients fix no 2-D position (an edge of a lane line
# slides along itself); OpenCV's default (1e-4) keeps many of those
MIN_EIGENVALUE = 1e-3


@dataclass(frozen=True)
class VisualSettings:
    """What the tracker looks at and how far its tracks are trusted. The two error
    terms (scale_sigma, track_dependence) were set on training drives (seed 3, every
    context) so that the measured motion's errors come out near one sigma."""

    max_corners: int = 150
    fast_threshold: int = 8  # grey levels: FAST's corner contrast
    min_inliers: int = 20  # fewer tracks agreeing: night, fog, a featureless view
    depth_range_m: tuple[float, float] = (2.0, 60.0)  # nearer is the bonnet; farther barely moves
    depth_agreement: float = 0.05  # relative spread of lidar depths allowed around a corner
    road_reach_m: tuple[float, float] = (3.0, 25.0)  # road-plane corners, from the camera
    pixel_sigma: float = 0.7  # tracking error of one corner, px
    scale_sigma: float = 0.03  # error of scale shared by every track, a share of the motion
    track_dependence: float = 4.0  # the fit's variance understates the error this much
    error_correlation_s: float = 0.5  # images closer than this share their errors (same scene)
    max_interval_s: float = 0.3  # images further apart share too little of the view
    max_image_age_s: float = 0.02  # image stamp this far off the frame stamp: stale
    ground_below_base_m: float = 0.0  # base_link's height above the road (0: on it)

    def __post_init__(self) -> None:
        for name in ("max_corners", "fast_threshold", "min_inliers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("depth_range_m", "road_reach_m"):
            low, high = getattr(self, name)
            if not (0 < low < high < math.inf):
                raise ValueError(f"{name} must be (near, far) with 0 < near < far, got {low, high}")
        positive = ("depth_agreement", "pixel_sigma", "scale_sigma", "track_dependence")
        for name in (*positive, "error_correlation_s", "max_interval_s", "max_image_age_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if not (math.isfinite(self.ground_below_base_m) and self.ground_below_base_m >= 0):
            raise ValueError(f"ground_below_base_m must be >= 0, got {self.ground_below_base_m}")


@dataclass
class _Keyframe:
    """The previous frame, as the next camera correction needs it."""

    image: CameraImage
    grey: np.ndarray | str | None  # None until a correction needs it
    lidar: PointScan | None
    pose: np.ndarray  # the filter's base_link in odom at the image, 4x4
    velocity: np.ndarray  # base_link's, in base_link: carries the sweep to the image
    yaw_rate: float


def to_grey(image: CameraImage) -> np.ndarray | str:
    """The image as 8-bit grey, or why it cannot be tracked (a depth image)."""
    pixels = image.pixels
    if image.encoding.startswith(("16UC", "16SC", "32SC", "32FC", "64FC")):
        return f"a {image.encoding} image has no texture to track"
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    if pixels.ndim == 3:
        return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(pixels)


class VisualOdometry:
    """Keeps the previous frame; measures the vehicle's motion since."""

    def __init__(
        self, settings: VisualSettings | None = None, *, rng: np.random.Generator | None = None
    ) -> None:
        self.settings = settings or VisualSettings()
        self.rng = rng or np.random.default_rng(0)
        self.detector = cv2.FastFeatureDetector_create(self.settings.fast_threshold)
        self.previous: _Keyframe | None = None
        self._converted: tuple[CameraImage, np.ndarray | str] | None = None
        self._geometry: CameraGeometry | None = None
        self._geometry_key: tuple | None = None

    def restart(self) -> None:
        self.previous = self._converted = None

    def remember(self, frame: SensorFrame, filter_: ImuFilter) -> None:
        """Keep this frame for the next frame's correction (every frame, whether or not
        the correction ran on it: the next one may). Only references are kept, so the
        work (grey, depths) is the correction's, and only when it runs."""
        image, converted = frame.camera, self._converted
        self._converted = None
        if image is None or not filter_.started:
            self.previous = None
            return
        self.previous = _Keyframe(
            image,
            converted[1] if converted is not None and converted[0] is image else None,
            frame.lidar,
            filter_.pose,
            filter_.body_velocity,
            float(filter_.angular_velocity[2]),
        )

    def _grey(self, image: CameraImage) -> np.ndarray | str:
        """``to_grey``, once per image (the correction and ``remember`` share it)."""
        if self._converted is None or self._converted[0] is not image:
            self._converted = (image, to_grey(image))
        return self._converted[1]

    def correct(self, filter_: ImuFilter, image: CameraImage) -> Update | str:
        """Measure the motion since the previous image and correct the filter with it,
        or say why it could not."""
        grey = self._grey(image)
        if isinstance(grey, str):
            return grey
        reason = self._unusable(filter_, image, grey)
        if reason:
            return reason
        previous = self.previous
        if previous.grey is None:  # the correction did not run on the previous frame
            previous.grey = to_grey(previous.image)
        if isinstance(previous.grey, str):
            return f"previous image: {previous.grey}"
        predicted = planar_of(np.linalg.inv(previous.pose) @ filter_.pose)
        interval = (image.stamp_ns - previous.image.stamp_ns) / NS_PER_S
        H = _jacobian(filter_)
        spread = filter_.projected_covariance(H) * interval**2  # of the predicted motion
        motion = self.measure(grey, image, predicted, spread)
        if isinstance(motion, str):
            return motion
        residual = (motion.as_vector - predicted) / interval
        shared = correlated_error_share(interval, self.settings.error_correlation_s)
        return filter_.update(NAME, residual, H, motion.covariance * shared / interval**2)

    def _unusable(self, filter_: ImuFilter, image: CameraImage, grey: np.ndarray) -> str:
        settings, previous = self.settings, self.previous
        if image.model is None:
            return "the camera image has no calibration (CameraInfo)"
        if previous is None:
            return "no previous camera image to track from"
        if (
            not previous.image.pixels.shape[:2]
            == grey.shape
            == (image.model.height, image.model.width)
        ):
            return "the camera image changed size or does not match its CameraInfo"
        interval = (image.stamp_ns - previous.image.stamp_ns) / NS_PER_S
        if not 0 < interval <= settings.max_interval_s:
            usable = f"0 to {settings.max_interval_s} s usable"
            return f"{interval:.2f} s since the previous camera image ({usable})"
        age = (filter_.state.stamp_ns - image.stamp_ns) / NS_PER_S
        if abs(age) > settings.max_image_age_s:
            return f"camera image {age:.3f} s off the frame stamp"
        return ""

    def geometry(self, image: CameraImage) -> CameraGeometry:
        """This camera's geometry, built once per calibration and mount."""
        model = image.model
        key = (
            model.width,
            model.height,
            model.K.tobytes(),
            model.D.tobytes(),
            model.distortion_model,
            image.T_base_sensor.tobytes(),
        )
        if key != self._geometry_key:
            below = self.settings.ground_below_base_m
            self._geometry = CameraGeometry(model, image.T_base_sensor, below)
            self._geometry_key = key
        return self._geometry

    def measure(
        self,
        grey: np.ndarray,
        image: CameraImage,
        prior: np.ndarray,
        prior_covariance: np.ndarray,
    ) -> PlanarMotion | str:
        """The planar motion from the previous image to ``grey``, or why there is none.
        ``prior``: the filter's x, y, yaw of the new base_link in the old, with its 3x3
        covariance."""
        settings, previous = self.settings, self.previous
        geometry = self.geometry(image)
        corners, points, depth_sigma = self._corners_in_3d(geometry)
        if len(corners) < settings.min_inliers:
            source = "lidar" if previous.lidar is not None else "road plane"
            wanted = f"at least {settings.min_inliers}"
            return f"{len(corners)} corners placed in 3-D by the {source} ({wanted})"
        mount = Mount(geometry.rotation, geometry.origin, geometry.focal)
        # start each track where the predicted motion puts it (the lens's local shift kept)
        start = geometry.normalised(corners)
        lens_shift = corners - geometry.ideal_pixels(start)
        guess = geometry.ideal_pixels(reproject(mount, points, prior[None])[0]) + lens_shift
        tracked, status, _ = cv2.calcOpticalFlowPyrLK(
            previous.grey,
            grey,
            corners.astype(np.float32).reshape(-1, 1, 2),
            np.nan_to_num(guess, nan=-1.0).astype(np.float32).reshape(-1, 1, 2),
            winSize=(11, 11),
            maxLevel=2,
            flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
            minEigThreshold=MIN_EIGENVALUE,
        )
        tracked = tracked.reshape(-1, 2)
        height, width = grey.shape
        good = status.ravel().astype(bool) & np.isfinite(guess).all(axis=1)
        good &= (tracked[:, 0] >= 0) & (tracked[:, 0] < width)
        good &= (tracked[:, 1] >= 0) & (tracked[:, 1] < height)
        if good.sum() < settings.min_inliers:
            return f"{int(good.sum())} corners tracked (at least {settings.min_inliers})"
        # a depth error moves a track by its share of the flow the translation causes
        flow = np.linalg.norm(guess - corners, axis=1)
        sigma = np.hypot(settings.pixel_sigma, flow * depth_sigma)
        motion = fit_planar_motion(
            mount,
            points[good],
            geometry.normalised(tracked[good]),
            sigma[good],
            prior=prior,
            prior_covariance=prior_covariance,
            interval_s=(image.stamp_ns - previous.image.stamp_ns) / NS_PER_S,
            min_inliers=settings.min_inliers,
            rng=self.rng,
        )
        if isinstance(motion, str):
            return motion
        # The fit takes the tracks as independent. They are not: neighbouring corners
        # share texture, blur and lidar points, and every depth shares the sweep's
        # timing, so the errors are larger than the fit says (track_dependence), and an
        # error of scale common to all tracks stays, along the direction of travel.
        t = motion.translation
        scale = np.pad(settings.scale_sigma**2 * np.outer(t, t), (0, 1))
        return replace(motion, covariance=settings.track_dependence * motion.covariance + scale)

    def _corners_in_3d(self, geometry: CameraGeometry):
        """The previous image's corners (N, 2 px), where they were in 3-D (N, 3,
        base_link then) and their depths' relative sigma (N,)."""
        settings, previous = self.settings, self.previous
        scan = previous.lidar
        if scan is not None and len(scan):
            depth = geometry.lidar_depth(
                scan,
                previous.image.stamp_ns,
                previous.velocity,
                previous.yaw_rate,
                settings.depth_range_m,
            )
            # more corners than wanted: only some have one lidar depth around them
            corners = self._detect(previous.grey, None, 3 * settings.max_corners)
            normalised = geometry.normalised(corners)
            z = depth.at(geometry.ideal_pixels(normalised), settings.depth_agreement)
            placed = np.flatnonzero(np.isfinite(z))[: settings.max_corners]
            rays = np.column_stack([normalised[placed], np.ones(len(placed))])
            points = geometry.to_base(rays * z[placed, None])
            return corners[placed], points, np.full(len(placed), 0.5 * settings.depth_agreement)
        road = geometry.road_mask(settings.road_reach_m)
        corners = self._detect(previous.grey, road, settings.max_corners)
        points = geometry.on_road(geometry.normalised(corners), settings.road_reach_m)
        placed = np.isfinite(points).all(axis=1)
        corners, points = corners[placed], points[placed]
        reach = np.hypot(*(points[:, :2] - geometry.origin[:2]).T)
        # the road's range error for one pixel, as a share of the range
        relative = settings.pixel_sigma * (reach**2 + geometry.height**2)
        relative /= geometry.focal * geometry.height * reach
        return corners, points, relative

    def _detect(self, grey: np.ndarray, mask: np.ndarray | None, count: int) -> np.ndarray:
        """The ``count`` strongest FAST corners (inside ``mask``, uint8), (N, 2) px."""
        keypoints = self.detector.detect(grey, mask)
        keypoints = sorted(keypoints, key=lambda k: -k.response)[:count]
        return np.array([k.pt for k in keypoints], np.float64).reshape(-1, 2)


def _jacobian(filter_: ImuFilter) -> np.ndarray:
    """(3, 15): how base_link's planar velocity and yaw rate move with the error state.
    The camera measures their average over the interval; over a tenth of a second the
    velocity's error barely changes, so the current state stands for the interval."""
    H = np.zeros((3, STATE_SIZE))
    H[:2] = filter_.body_velocity_jacobian()[:2]
    H[2, GYRO_BIAS.start + 2] = -1.0  # the yaw rate is the gyro's, less its bias
    return H
