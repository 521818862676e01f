"""IMU: specific force and angular rate of the true motion, with MEMS errors.

The ego moves on a flat road, so the IMU (mounted level, above base_link) measures
forward acceleration, centripetal acceleration ``v * yaw_rate`` and gravity's reaction
(+9.81 m/s^2 up), and the yaw rate. Errors follow the usual continuous-time model: white
noise (densities per sqrt(Hz)), biases that random-walk, and road vibration that grows
with speed. ``noiseless`` gives the exact signal, for checking the model itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dynfusion_ros.sim.ego import EgoState

GRAVITY = 9.80665


@dataclass(frozen=True)
class ImuErrors:
    accel_noise_density: float = 0.002  # m/s^2/sqrt(Hz)
    gyro_noise_density: float = 0.0003  # rad/s/sqrt(Hz)
    accel_bias_walk: float = 0.0003  # m/s^3/sqrt(Hz)
    gyro_bias_walk: float = 0.00002  # rad/s^2/sqrt(Hz)
    accel_bias_initial: float = 0.03  # m/s^2, 1 sigma
    gyro_bias_initial: float = 0.001  # rad/s, 1 sigma
    vibration_per_mps: float = 0.006  # m/s^2 of vibration per m/s of speed


NOISELESS = ImuErrors(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


class ImuModel:
    def __init__(self, rate_hz: float, errors: ImuErrors, rng: np.random.Generator) -> None:
        self.period = 1.0 / rate_hz
        self.errors = errors
        self.accel_bias = rng.normal(0.0, errors.accel_bias_initial, 3)
        self.gyro_bias = rng.normal(0.0, errors.gyro_bias_initial, 3)
        self.bias_jumped = False

    @property
    def accel_sigma(self) -> float:
        """Discrete white-noise sigma per sample (m/s^2)."""
        return self.errors.accel_noise_density / np.sqrt(self.period)

    @property
    def gyro_sigma(self) -> float:
        return self.errors.gyro_noise_density / np.sqrt(self.period)

    def true_signal(self, state: EgoState) -> tuple[np.ndarray, np.ndarray]:
        """(specific force (N, 3), angular rate (N, 3)) in the IMU frame."""
        n = len(state.t)
        force = np.stack([state.accel, state.lateral_accel, np.full(n, GRAVITY)], axis=-1)
        rate = np.stack([np.zeros(n), np.zeros(n), state.yaw_rate], axis=-1)
        return force, rate

    def measure(
        self, state: EgoState, rng: np.random.Generator, bias_jump: tuple[float, float] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Measured (specific force, angular rate) for consecutive samples."""
        force, rate = self.true_signal(state)
        n = len(state.t)
        e = self.errors
        if bias_jump is not None and not self.bias_jumped:
            self.accel_bias = self.accel_bias + np.array([bias_jump[0], 0.0, 0.0])
            self.gyro_bias = self.gyro_bias + np.array([0.0, 0.0, bias_jump[1]])
            self.bias_jumped = True
        root_dt = np.sqrt(self.period)
        accel_walk = np.cumsum(rng.normal(0.0, e.accel_bias_walk * root_dt, (n, 3)), axis=0)
        gyro_walk = np.cumsum(rng.normal(0.0, e.gyro_bias_walk * root_dt, (n, 3)), axis=0)
        accel_bias = self.accel_bias + accel_walk
        gyro_bias = self.gyro_bias + gyro_walk
        self.accel_bias, self.gyro_bias = accel_bias[-1], gyro_bias[-1]
        vibration = rng.normal(0.0, 1.0, (n, 3)) * (e.vibration_per_mps * state.speed)[:, None]
        vibration[:, :2] *= 0.3  # mostly vertical
        force = force + accel_bias + vibration + rng.normal(0.0, self.accel_sigma, (n, 3))
        rate = rate + gyro_bias + rng.normal(0.0, self.gyro_sigma, (n, 3))
        return force, rate
