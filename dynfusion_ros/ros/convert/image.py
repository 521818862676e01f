"""sensor_msgs/Image and CameraInfo to and from numpy and the core camera model.

``image_to_array`` is a zero-copy view of ``msg.data`` shaped (H, W) or (H, W, C), row
padding (``step`` beyond the pixels) skipped by striding, byte order per
``is_bigendian``. Readers only touch message attributes, so rosbags messages work too.
"""

from __future__ import annotations

import sys

import numpy as np
from sensor_msgs.msg import CameraInfo, Image

from dynfusion_ros.core.types import CameraImage, CameraModel, distortion_problem
from dynfusion_ros.ros.convert.errors import ConversionError, core_errors_as
from dynfusion_ros.ros.convert.stamps import header_msg, stamp_ns

# encoding -> (element type, channels), from sensor_msgs/image_encodings.
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "8UC3": (np.dtype(np.uint8), 3),
    "16UC1": (np.dtype(np.uint16), 1),
    "16SC1": (np.dtype(np.int16), 1),
    "32SC1": (np.dtype(np.int32), 1),
    "32FC1": (np.dtype(np.float32), 1),
    "64FC1": (np.dtype(np.float64), 1),
    "bayer_rggb8": (np.dtype(np.uint8), 1),
    "bayer_bggr8": (np.dtype(np.uint8), 1),
    "bayer_gbrg8": (np.dtype(np.uint8), 1),
    "bayer_grbg8": (np.dtype(np.uint8), 1),
}

# 8-bit encodings that become RGB in the core (8UC3 is taken as OpenCV's BGR).
RGB_CONVERTIBLE = frozenset({"rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "8UC3"})
# ROS names a Bayer mosaic by its first row, OpenCV by its second.
BAYER_TO_RGB = {
    "bayer_rggb8": "COLOR_BayerBG2RGB",
    "bayer_bggr8": "COLOR_BayerRG2RGB",
    "bayer_gbrg8": "COLOR_BayerGR2RGB",
    "bayer_grbg8": "COLOR_BayerGB2RGB",
}


def image_to_array(msg) -> np.ndarray:
    """The pixels as a view of ``msg.data`` (it aliases the message: copy before writing):
    (H, W) for one channel, (H, W, C) otherwise."""
    spec = ENCODINGS.get(msg.encoding)
    if spec is None:
        raise ConversionError(
            "encoding", f"unsupported {msg.encoding!r} (supported: {', '.join(ENCODINGS)})"
        )
    element, channels = spec
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * element.itemsize
    if step < row_bytes:
        raise ConversionError(
            "step",
            f"{step} does not match {msg.encoding} at width {width}: "
            f"a row needs at least {row_bytes} bytes",
        )
    if step % element.itemsize:
        raise ConversionError(
            "step", f"{step} is not a multiple of the {element.itemsize}-byte pixel element"
        )
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < step * height:
        raise ConversionError(
            "data", f"{data.size} bytes, shorter than step*height = {step}*{height}"
        )
    element = element.newbyteorder(">" if msg.is_bigendian else "<")
    rows = data[: step * height].view(element).reshape(height, step // element.itemsize)
    pixels = rows[:, : width * channels]
    return pixels if channels == 1 else pixels.reshape(height, width, channels)


def to_rgb8(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """Colour or mono 8-bit pixels as (H, W, 3) RGB; a view where the layout allows."""
    if encoding == "rgb8":
        return pixels
    if encoding in ("bgr8", "8UC3"):
        return pixels[..., ::-1]
    if encoding == "rgba8":
        return pixels[..., :3]
    if encoding == "bgra8":
        return pixels[..., 2::-1]
    if encoding in ("mono8", "8UC1"):
        return np.repeat(pixels[..., None], 3, axis=2)
    raise ConversionError("encoding", f"{encoding!r} is not an 8-bit colour or mono encoding")


def array_to_image(pixels: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> Image:
    """An Image whose layout (dtype, channels) must match ``encoding``; rows unpadded."""
    spec = ENCODINGS.get(encoding)
    if spec is None:
        raise ConversionError("encoding", f"unsupported {encoding!r}")
    element, channels = spec
    shape_ok = (
        pixels.ndim == 2 if channels == 1 else (pixels.ndim == 3 and pixels.shape[2] == channels)
    )
    if not shape_ok or pixels.dtype.newbyteorder("=") != element:
        raise ConversionError(
            "pixels",
            f"shape {pixels.shape} dtype {pixels.dtype} does not fit {encoding} "
            f"({channels} channel(s) of {element})",
        )
    contiguous = np.ascontiguousarray(pixels, dtype=element)
    height, width = contiguous.shape[:2]
    return Image(
        header=header_msg(stamp_ns, frame_id),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=sys.byteorder == "big",
        step=width * channels * element.itemsize,
        data=contiguous.tobytes(),
    )


def camera_info_to_model(msg) -> CameraModel:
    """The pinhole model of a CameraInfo. A zero K means an uncalibrated camera: an error."""
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.isfinite(K).all():
        raise ConversionError("k", "contains NaN or infinity")
    D = np.asarray(msg.d, dtype=np.float64)
    distortion_model = msg.distortion_model or "plumb_bob"
    problem = distortion_problem(distortion_model, D)
    if problem:
        raise ConversionError("d", problem)
    with core_errors_as("k"):
        return CameraModel(
            width=int(msg.width),
            height=int(msg.height),
            K=K,
            D=D,
            distortion_model=distortion_model,
            frame_id=msg.header.frame_id,
        )


def model_to_camera_info(model: CameraModel, stamp_ns: int) -> CameraInfo:
    """CameraInfo for an unrectified camera: P = [K | 0], R = identity."""
    projection = np.zeros((3, 4))
    projection[:, :3] = model.K
    return CameraInfo(
        header=header_msg(stamp_ns, model.frame_id),
        width=model.width,
        height=model.height,
        distortion_model=model.distortion_model,
        d=model.D.tolist(),
        k=model.K.reshape(-1).tolist(),
        r=np.eye(3).reshape(-1).tolist(),
        p=projection.reshape(-1).tolist(),
    )


def camera_pixels(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W, 3) RGB uint8 for the camera branch from any encoding a camera publishes:
    colour, mono8, mono16 (its high byte), Bayer mosaics (debayered). Depth and float
    images are not camera images: a ConversionError says so rather than the branch
    being charged for an image it cannot read."""
    if encoding in RGB_CONVERTIBLE:
        return to_rgb8(pixels, encoding)
    if encoding == "mono16":
        return to_rgb8((pixels >> 8).astype(np.uint8), "mono8")
    if encoding in BAYER_TO_RGB:
        import cv2

        return cv2.cvtColor(np.ascontiguousarray(pixels), getattr(cv2, BAYER_TO_RGB[encoding]))
    raise ConversionError(
        "encoding",
        f"{encoding!r} is a depth or measurement image, not one the camera branch can"
        " read (colour, mono8, mono16 or bayer_*)",
    )


def _checked_size(pixels: np.ndarray, model: CameraModel | None) -> None:
    if model is not None and (pixels.shape[1], pixels.shape[0]) != (model.width, model.height):
        raise ConversionError(
            "width/height",
            f"image is {pixels.shape[1]}x{pixels.shape[0]} but its CameraInfo says "
            f"{model.width}x{model.height}",
        )


def image_to_camera_image(msg, model: CameraModel | None) -> CameraImage:
    """A core CameraImage (RGB) from a sensor_msgs/Image."""
    pixels = camera_pixels(image_to_array(msg), msg.encoding)
    _checked_size(pixels, model)
    return CameraImage(stamp_ns=stamp_ns(msg.header), pixels=pixels, encoding="rgb8", model=model)


def compressed_to_camera_image(msg, model: CameraModel | None) -> CameraImage:
    """A core CameraImage (RGB) from a sensor_msgs/CompressedImage (jpeg or png, as
    image_transport's compressed plugin writes; its depth plugin is refused)."""
    import cv2

    if "compresseddepth" in msg.format.lower():
        raise ConversionError("format", f"{msg.format!r} is a depth image, not a camera image")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if decoded is None:
        raise ConversionError("data", f"{data.size} bytes that do not decode as {msg.format!r}")
    if decoded.ndim == 2:
        encoding = "mono16" if decoded.dtype == np.uint16 else "mono8"
    else:
        if decoded.dtype != np.uint8:
            raise ConversionError("data", f"decodes to {decoded.dtype} colour: not a camera image")
        encoding = "bgr8" if decoded.shape[2] == 3 else "bgra8"
    pixels = camera_pixels(decoded, encoding)
    _checked_size(pixels, model)
    return CameraImage(stamp_ns=stamp_ns(msg.header), pixels=pixels, encoding="rgb8", model=model)
