"""Image and CameraInfo conversions: encodings, padding, byte order, bad input."""

import re

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, Image

from dynfusion_ros.core.types import CameraModel
from dynfusion_ros.ros.convert import (
    ConversionError,
    array_to_image,
    camera_info_to_model,
    compressed_to_camera_image,
    image_to_array,
    image_to_camera_image,
    model_to_camera_info,
)

RNG = np.random.default_rng(7)

CASES = {
    "rgb8": RNG.integers(0, 255, (4, 5, 3), dtype=np.uint8),
    "bgr8": RNG.integers(0, 255, (4, 5, 3), dtype=np.uint8),
    "rgba8": RNG.integers(0, 255, (4, 5, 4), dtype=np.uint8),
    "mono8": RNG.integers(0, 255, (4, 5), dtype=np.uint8),
    "mono16": RNG.integers(0, 65535, (4, 5), dtype=np.uint16),
    "16UC1": RNG.integers(0, 65535, (4, 5), dtype=np.uint16),
    "32FC1": RNG.normal(size=(4, 5)).astype(np.float32),
}


def reserialized(msg):
    return deserialize_message(serialize_message(msg), type(msg))


@pytest.mark.parametrize("encoding", sorted(CASES))
def test_every_encoding_round_trips_through_rclpy(encoding):
    pixels = CASES[encoding]
    msg = reserialized(array_to_image(pixels, encoding, 123, "camera"))
    assert (msg.encoding, msg.height, msg.width, msg.header.frame_id) == (encoding, 4, 5, "camera")
    np.testing.assert_array_equal(image_to_array(msg), pixels)


def test_padded_rows_and_big_endian_depth_are_read_without_garbage():
    depth = np.array([[1, 2, 3], [400, 500, 600]], dtype=">u2")
    padded = np.zeros((2, 8), dtype=np.uint8)  # 6 bytes of pixels + 2 of padding per row
    padded[:, :6] = depth.view(np.uint8).reshape(2, 6)
    msg = Image(
        height=2, width=3, encoding="16UC1", is_bigendian=True, step=8, data=padded.tobytes()
    )
    assert image_to_array(msg).tolist() == [[1, 2, 3], [400, 500, 600]]


def test_view_is_zero_copy():
    msg = array_to_image(CASES["rgb8"], "rgb8", 0, "camera")
    assert np.shares_memory(image_to_array(msg), np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize("encoding", ["bgr8", "rgba8", "mono8", "rgb8"])
def test_camera_image_is_rgb(encoding):
    pixels = CASES[encoding]
    image = image_to_camera_image(array_to_image(pixels, encoding, 9, "camera"), None)
    assert image.encoding == "rgb8" and image.pixels.shape == (4, 5, 3) and image.stamp_ns == 9
    expected = {
        "bgr8": pixels[..., ::-1],
        "rgba8": pixels[..., :3],
        "mono8": np.repeat(pixels[..., None], 3, axis=2),
        "rgb8": pixels,
    }[encoding]
    np.testing.assert_array_equal(image.pixels, expected)


@pytest.mark.parametrize("encoding", ["32FC1", "16UC1"])
def test_depth_image_is_refused_for_the_camera_branch(encoding):
    msg = array_to_image(CASES[encoding], encoding, 0, "depth")
    with pytest.raises(ConversionError, match="not one the camera branch can read"):
        image_to_camera_image(msg, None)


def test_mono16_becomes_its_high_byte():
    image = image_to_camera_image(array_to_image(CASES["mono16"], "mono16", 0, "camera"), None)
    np.testing.assert_array_equal(image.pixels[..., 1], CASES["mono16"] >> 8)


def _smooth_rgb(height: int = 32, width: int = 48) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([4 * cols, 6 * rows, 255 - 3 * cols - 2 * rows], axis=2).astype(np.uint8)


def test_bayer_rggb_is_debayered_to_the_scene_it_sampled():
    rgb = _smooth_rgb()
    mosaic = np.empty(rgb.shape[:2], np.uint8)  # first row R G R G ..., second G B G B ...
    mosaic[0::2, 0::2] = rgb[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = rgb[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = rgb[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = rgb[1::2, 1::2, 2]
    msg = Image(height=32, width=48, encoding="bayer_rggb8", step=48, data=mosaic.tobytes())
    image = image_to_camera_image(msg, None)
    inner = (slice(2, -2), slice(2, -2))
    error = np.abs(image.pixels[inner].astype(int) - rgb[inner].astype(int))
    assert error.max() <= 8  # a swapped pattern would put blue where red is: errors of 100+


@pytest.mark.parametrize("extension", [".png", ".jpg"])
def test_compressed_image_decodes_to_rgb(extension):
    import cv2
    from sensor_msgs.msg import CompressedImage

    rgb = _smooth_rgb()
    ok, encoded = cv2.imencode(extension, rgb[..., ::-1])  # OpenCV writes BGR
    assert ok
    msg = CompressedImage(format=extension[1:], data=encoded.tobytes())
    msg.header.stamp.sec = 3
    model = CameraModel(48, 32, np.array([[40.0, 0, 24], [0, 40.0, 16], [0, 0, 1]]))
    image = compressed_to_camera_image(msg, model)
    assert image.encoding == "rgb8" and image.stamp_ns == 3_000_000_000
    tolerance = 0 if extension == ".png" else 12
    assert np.abs(image.pixels.astype(int) - rgb.astype(int)).max() <= tolerance


def test_compressed_garbage_and_depth_are_refused():
    from sensor_msgs.msg import CompressedImage

    with pytest.raises(ConversionError, match="do not decode"):
        compressed_to_camera_image(CompressedImage(format="jpeg", data=b"not a jpeg"), None)
    depth = CompressedImage(format="16UC1; compressedDepth png", data=b"\x00" * 16)
    with pytest.raises(ConversionError, match="depth image"):
        compressed_to_camera_image(depth, None)


def test_projection_follows_the_lens_and_stops_at_its_fold():
    K = np.array([[300.0, 0, 320], [0, 300.0, 192], [0, 0, 1]])
    lens = CameraModel(640, 384, K, D=np.array([-0.28, 0.07, 0, 0, 0]))
    pinhole = CameraModel(640, 384, K)
    points = np.array([[0.8, 0.0, 1.0], [0.0, 0.0, 1.0]])
    bent, visible = lens.project(points)
    straight, _ = pinhole.project(points)
    x = 0.8
    expected = 320 + 300 * x * (1 - 0.28 * x**2 + 0.07 * x**4)  # plumb_bob, radial only
    assert bent[0, 0] == pytest.approx(expected, abs=1e-6)
    assert bent[0, 0] < straight[0, 0] - 30  # barrel: pulled towards the centre
    assert bent[1].tolist() == [320, 192] and visible.all()
    # k1 alone turns back at x = 1.09: x = 1.5 would land at u = 486, inside the image
    folding = CameraModel(640, 384, K, D=np.array([-0.28, 0, 0, 0, 0]))
    pixels, visible = folding.project(np.array([[1.5, 0.0, 1.0], [1.0, 0.0, 1.0]]))
    assert 0 < pixels[0, 0] < 640 and visible.tolist() == [False, True]


@pytest.mark.parametrize(
    ("msg", "message"),
    [
        (
            Image(height=2, width=2, encoding="yuv422", step=4, data=bytes(8)),
            r"encoding: unsupported 'yuv422'",
        ),
        (
            Image(height=2, width=2, encoding="rgb8", step=5, data=bytes(10)),
            r"step: 5 does not match rgb8 at width 2",
        ),
        (
            Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(11)),
            r"data: 11 bytes, shorter than step\*height",
        ),
        (
            Image(height=2, width=2, encoding="16UC1", step=5, data=bytes(10)),
            r"step: 5 is not a multiple of the 2-byte",
        ),
    ],
    ids=["encoding", "step-mismatch", "short-data", "odd-step"],
)
def test_malformed_images_raise_naming_field_and_problem(msg, message):
    with pytest.raises(ConversionError, match=message):
        image_to_array(msg)


def test_writer_rejects_pixels_that_do_not_fit_the_encoding():
    with pytest.raises(ConversionError, match="does not fit rgb8"):
        array_to_image(np.zeros((4, 5), np.uint8), "rgb8", 0, "camera")
    with pytest.raises(ConversionError, match="does not fit 16UC1"):
        array_to_image(np.zeros((4, 5), np.float32), "16UC1", 0, "camera")


def test_camera_info_round_trip_and_size_check():
    model = CameraModel(
        width=640,
        height=384,
        K=[[400, 0, 320], [0, 410, 192], [0, 0, 1]],
        D=[0.1, -0.05, 0, 0, 0],
        frame_id="camera_optical",
    )
    info = reserialized(model_to_camera_info(model, 5))
    back = camera_info_to_model(info)
    np.testing.assert_array_equal(back.K, model.K)
    np.testing.assert_array_equal(back.D, model.D)
    assert (back.width, back.height, back.frame_id) == (640, 384, "camera_optical")
    wrong_size = array_to_image(np.zeros((10, 10, 3), np.uint8), "rgb8", 0, "camera")
    with pytest.raises(ConversionError, match="image is 10x10 but its CameraInfo says 640x384"):
        image_to_camera_image(wrong_size, back)


def test_uncalibrated_camera_info_is_an_error():
    with pytest.raises(ConversionError, match="k: focal lengths must be positive"):
        camera_info_to_model(CameraInfo(width=640, height=384))
    nan_info = CameraInfo(width=640, height=384, k=[float("nan")] * 9)
    with pytest.raises(ConversionError, match="k: contains NaN"):
        camera_info_to_model(nan_info)


@pytest.mark.parametrize(
    ("model", "d", "why"),
    [
        ("plumb_bob", [0.1, 0.2, 0.0], "plumb_bob takes 4 or 5 or 8 or 12 or 14 coefficients"),
        ("plumb_bob", [0.0] * 100, "got 100"),
        ("plumb_bob", [0.1, float("nan"), 0, 0, 0], "non-finite or absurd"),
        ("rational_polynomial", [1e9, 0, 0, 0, 0, 0, 0, 0], "non-finite or absurd"),
        ("equidistant", [0.1], "equidistant takes 4 coefficients, got 1"),
        ("kannala_brandt", [0.1] * 4, "distortion model 'kannala_brandt' unknown"),
    ],
)
def test_distortion_opencv_cannot_use_is_refused_with_the_field(model, d, why):
    """Accepted, each of these made OpenCV raise inside the camera branch and correction."""
    info = CameraInfo(width=640, height=384, k=[400, 0, 320, 0, 400, 192, 0, 0, 1])
    info.distortion_model, info.d = model, d
    with pytest.raises(ConversionError, match=f"^d: .*{re.escape(why)}"):
        camera_info_to_model(info)


def test_every_distortion_opencv_takes_projects_and_undistorts():
    from dynfusion_ros.core.odometry.camera_geometry import CameraGeometry
    from dynfusion_ros.core.types import DISTORTION_COEFFICIENTS

    points = np.array([[0.5, -0.2, 5.0], [-1.0, 0.3, 8.0]])
    for model, counts in DISTORTION_COEFFICIENTS.items():
        for count in (0, *counts):
            info = CameraInfo(width=640, height=384, k=[400, 0, 320, 0, 400, 192, 0, 0, 1])
            info.distortion_model, info.d = model, [0.01] * count
            camera = camera_info_to_model(info)
            pixels, visible = camera.project(points)
            assert visible.all() and np.isfinite(pixels).all()
            back = CameraGeometry(camera, np.eye(4)).normalised(pixels)
            np.testing.assert_allclose(back, points[:, :2] / points[:, 2:], atol=1e-4)
