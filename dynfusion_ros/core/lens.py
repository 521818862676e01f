"""Lens distortion of CameraInfo's models, applied where 3D points are projected.

A real lens bends straight lines (k1 = -0.28 is a common wide-angle plumb_bob): a point
the pinhole model puts at the image edge is imaged well inside it. The camera branch
looks up image features at the pixel each BEV cell projects to, so the projection must
follow the lens. OpenCV does the distortion itself (plumb_bob and rational_polynomial
are its standard model, equidistant its fisheye one). A polynomial lens model folds
back beyond some field angle, where it would bring far-outside points into the image:
points beyond the fold are never visible.
"""

from __future__ import annotations

import numpy as np

FOLD_SEARCH = np.linspace(0.0, 4.0, 801)  # normalised radii (tan of the field angle)


def distorts(D: np.ndarray) -> bool:
    return bool(np.asarray(D).size and np.any(D))


def distorted_pixels(
    normalised: np.ndarray, K: np.ndarray, D: np.ndarray, distortion_model: str
) -> np.ndarray:
    """(N, 2) pixels of (N, 2) normalised image coordinates (x/z, y/z) through the lens."""
    import cv2

    points = np.concatenate([normalised, np.ones((len(normalised), 1))], axis=1).reshape(-1, 1, 3)
    zero = np.zeros(3)
    if distortion_model == "equidistant":
        pixels, _ = cv2.fisheye.projectPoints(points, zero, zero, K, np.asarray(D[:4], float))
    else:
        pixels, _ = cv2.projectPoints(points, zero, zero, K, np.asarray(D, float))
    return pixels.reshape(-1, 2)


def fold_radius(K: np.ndarray, D: np.ndarray, distortion_model: str) -> float:
    """The normalised radius beyond which the lens model stops imaging farther out."""
    along_x = np.stack([FOLD_SEARCH, np.zeros_like(FOLD_SEARCH)], axis=1)
    reach = distorted_pixels(along_x, K, D, distortion_model)[:, 0]
    turning = np.flatnonzero(np.diff(reach) <= 0)
    return float(FOLD_SEARCH[turning[0]]) if len(turning) else float("inf")
