"""What a wheeled ground vehicle cannot do, as a measurement that costs nothing.

A car neither takes off nor slides sideways (much): in base_link, its vertical velocity
is near zero and its lateral velocity small. Without this, no correction observes the
vertical (radar doppler is planar) and the IMU's vertical error grows with the square of
time; robot_localization's ``two_d_mode`` makes the same assumption, harder.
"""

from __future__ import annotations

import numpy as np

from dynfusion_ros.core.odometry.filter import ImuFilter, Update

NAME = "ground_vehicle"


def ground_vehicle_update(
    filter_: ImuFilter, *, lateral_sigma_mps: float = 0.2, vertical_sigma_mps: float = 0.05
) -> Update:
    """Pull base_link's lateral and vertical velocity towards zero."""
    if not (lateral_sigma_mps > 0 and vertical_sigma_mps > 0):
        raise ValueError("the ground-vehicle constraint's sigmas must be positive")
    noise = np.diag([lateral_sigma_mps**2, vertical_sigma_mps**2])
    H = filter_.body_velocity_jacobian()
    return filter_.update(NAME, -filter_.body_velocity[1:], H[1:], noise)
