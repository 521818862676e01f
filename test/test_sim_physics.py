"""The simulator's physics, checked against what the models claim to do.

One drive (clear, fixed seed) is built once; each sensor model is then run on the same
instant under different conditions, so differences come from the conditions alone.
"""

import numpy as np
import pytest

from dynfusion_ros.sim.drive import GROUND_TRUTH_RANGE_M, Simulation
from dynfusion_ros.sim.imu import NOISELESS, ImuModel
from dynfusion_ros.sim.preview import box_corners
from dynfusion_ros.sim.scenario import CONTEXTS, ActiveContext, Fault, preset

SEED = 3
T_FRAME = 8.0  # s into the drive: moving, with traffic around


@pytest.fixture(scope="module")
def sim():
    return Simulation(preset("clear"), 20.0, SEED)


def context(name, *faults):
    return ActiveContext(name, CONTEXTS[name], tuple(faults))


def lidar_sweep(sim, ctx, seed=0):
    ego = sim.ego.at(T_FRAME)
    _, scene = sim.scene(T_FRAME, ego.xy[0])
    start = T_FRAME - 0.5 * sim.lidar.period
    return sim.lidar.sweep(
        start, sim.ego, scene, sim.ground, context=ctx, rng=np.random.default_rng(seed)
    )


def ranges(points):
    return np.sqrt(points["x"] ** 2 + points["y"] ** 2 + points["z"] ** 2)


@pytest.mark.parametrize("weather", ["fog", "snow"])
def test_fog_and_snow_cut_lidar_range_and_add_near_points(sim, weather):
    clear = ranges(lidar_sweep(sim, context("clear")).points)
    degraded = ranges(lidar_sweep(sim, context(weather)).points)
    assert (clear > 30).sum() > 500
    assert (degraded > 30).sum() < 0.5 * (clear > 30).sum()
    # nothing in this scene is nearer than the lowest beam's ground return (~4.5 m)
    assert (clear < 3.5).sum() < 20
    assert (degraded < 3.5).sum() > 300


def test_denser_fog_shortens_range_further(sim):
    from dataclasses import replace

    light = ActiveContext("fog", replace(CONTEXTS["fog"], fog_extinction_per_m=0.02), ())
    dense = ActiveContext("fog", replace(CONTEXTS["fog"], fog_extinction_per_m=0.12), ())
    far_light = (ranges(lidar_sweep(sim, light).points) > 20).sum()
    far_dense = (ranges(lidar_sweep(sim, dense).points) > 20).sum()
    assert far_dense < 0.5 * far_light


def render(sim, ctx, frames=8, seed=0):
    """Render the same instant a few times so auto-exposure settles; return the last two."""
    rng = np.random.default_rng(seed)
    ego = sim.ego.at(T_FRAME)
    _, scene = sim.scene(T_FRAME, ego.xy[0])
    sim.camera.previous = None
    out = [
        sim.camera.render(T_FRAME, sim.ego, scene.boxes, sim.ground, context=ctx, rng=rng)
        for _ in range(frames)
    ]
    return out[-2], out[-1]


def test_night_is_darker_and_noisier(sim):
    day_a, day_b = render(sim, context("clear"))
    night_a, night_b = render(sim, context("night"))
    assert night_a.image.mean() < 0.75 * day_a.image.mean()
    assert night_a.gain * night_a.exposure_s > 4 * day_a.gain * day_a.exposure_s

    def noise(a, b):  # two exposures of a static scene differ only by sensor noise
        sky = slice(0, 60)  # rows of sky: flat, no edges to blur
        diff = a.image[sky].astype(np.float64) - b.image[sky].astype(np.float64)
        return diff.std() / np.sqrt(2)

    assert noise(night_a, night_b) > 1.5 * noise(day_a, day_b)


def test_fog_lowers_contrast_more_with_distance(sim):
    clear, _ = render(sim, context("clear"), frames=3)
    fog, _ = render(sim, context("fog"), frames=3)
    depth = clear.depth
    grey_clear, grey_fog = clear.image.mean(axis=2), fog.image.mean(axis=2)
    near, far = (depth > 5) & (depth < 15), (depth > 40) & (depth < 200)

    def spread(grey, mask):
        return np.percentile(grey[mask], 95) - np.percentile(grey[mask], 5)

    assert spread(grey_fog, far) < 0.5 * spread(grey_clear, far)
    assert spread(grey_fog, far) / spread(grey_clear, far) < spread(grey_fog, near) / spread(
        grey_clear, near
    )


def test_camera_faults(sim):
    black, _ = render(sim, context("clear", Fault("camera_blackout", 0.0, 1.0)), frames=3)
    assert black.image.mean() < 8
    first, frozen = render(sim, context("clear", Fault("camera_frozen", 0.0, 1.0)), frames=2)
    assert frozen.image is first.image


def test_lidar_faults(sim):
    assert len(lidar_sweep(sim, context("clear", Fault("lidar_dropout", 0.0, 1.0))).points) == 0
    partial = lidar_sweep(
        sim, context("clear", Fault("lidar_partial", 0.0, 1.0, {"sector_deg": 90.0}))
    ).points
    azimuth = np.degrees(np.arctan2(partial["y"], partial["x"]))
    assert len(partial) > 5000 and np.abs(azimuth).min() > 44.0


def test_radar_doppler_is_the_relative_radial_velocity(sim):
    rng = np.random.default_rng(1)
    checked = 0
    for t in np.arange(3.0, 15.0, 0.5):
        ego = sim.ego.at(t)
        states, scene = sim.scene(t, ego.xy[0])
        scan = sim.radar.scan(ego, states, scene.boxes, context("clear"), rng)
        yaw = float(ego.yaw[0])
        rot = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
        lever = rot @ sim.rig.T_base_radar[:2, 3]
        sensor_velocity = ego.velocity[0] + float(ego.yaw_rate[0]) * np.array([-lever[1], lever[0]])
        for point, source in zip(scan.points, scan.source, strict=True):
            if source == -2:
                continue  # clutter and ghosts
            if source >= 0 and states.object_class[source] != 0:
                continue  # people and bikes have micro-doppler
            direction = rot @ np.array([point["x"], point["y"]])
            direction /= np.linalg.norm(direction)
            target_velocity = states.velocity[source] if source >= 0 else np.zeros(2)
            expected = (target_velocity - sensor_velocity) @ direction
            assert point["doppler"] == pytest.approx(expected, abs=0.6)
            checked += 1
    assert checked > 100


def test_radar_sees_cars_further_than_people_and_a_storm_adds_clutter(sim):
    rng = np.random.default_rng(2)
    ego = sim.ego.at(T_FRAME)
    states, scene = sim.scene(T_FRAME, ego.xy[0])
    boxes = scene.boxes
    calm = sim.radar.scan(ego, states, boxes, context("clear"), rng)
    storm = sim.radar.scan(
        ego,
        states,
        boxes,
        context("clear", Fault("radar_clutter_storm", 0, 1, {"points": 300})),
        rng,
    )
    assert len(storm.points) > len(calm.points) + 200
    assert {"x", "y", "z", "doppler", "rcs"} <= set(calm.points.dtype.names)


def integrate_imu(force, rate, dt, xy0, yaw0, velocity0):
    """Planar strapdown integration (trapezoidal), the IMU mounted level on base_link."""
    xy, yaw, velocity = xy0.copy(), yaw0, velocity0.copy()
    track = [xy.copy()]
    for i in range(len(force) - 1):
        yaw_next = yaw + 0.5 * (rate[i, 2] + rate[i + 1, 2]) * dt

        def world(f, psi):
            return np.array(
                [np.cos(psi) * f[0] - np.sin(psi) * f[1], np.sin(psi) * f[0] + np.cos(psi) * f[1]]
            )

        accel = 0.5 * (world(force[i], yaw) + world(force[i + 1], yaw_next))
        xy = xy + velocity * dt + 0.5 * accel * dt**2
        velocity = velocity + accel * dt
        yaw = yaw_next
        track.append(xy.copy())
    return np.array(track), yaw


@pytest.mark.parametrize(("errors", "tolerance_m"), [(NOISELESS, 0.05), (None, 1.5)])
def test_integrating_the_imu_reproduces_the_trajectory(sim, errors, tolerance_m):
    from dynfusion_ros.sim.imu import ImuErrors

    imu = ImuModel(200.0, errors or ImuErrors(), np.random.default_rng(5))
    times = np.arange(5.0, 10.0 + 1e-9, 0.005)
    truth = sim.ego.at(times)
    force, rate = imu.measure(truth, np.random.default_rng(6), None)
    assert np.mean(force[:, 2]) == pytest.approx(9.80665, abs=0.05)
    track, yaw = integrate_imu(
        force, rate, 0.005, truth.xy[0], float(truth.yaw[0]), truth.velocity[0]
    )
    error = np.linalg.norm(track - truth.xy, axis=1)
    assert np.linalg.norm(truth.xy[-1] - truth.xy[0]) > 30.0, "the ego must actually move"
    assert error.max() < tolerance_m
    assert abs(yaw - truth.yaw[-1]) < (1e-4 if errors is NOISELESS else 0.02)


def test_imu_bias_jump_shifts_the_readings(sim):
    imu = ImuModel(200.0, NOISELESS, np.random.default_rng(0))
    state = sim.ego.at(np.arange(5.0, 6.0, 0.005))
    before, _ = imu.measure(state, np.random.default_rng(1), None)
    after, rate_after = imu.measure(state, np.random.default_rng(1), (0.3, 0.02))
    assert np.mean(after[:, 0] - before[:, 0]) == pytest.approx(0.3, abs=1e-9)
    assert np.mean(rate_after[:, 2] - state.yaw_rate) == pytest.approx(0.02, abs=1e-9)


def test_truth_boxes_cover_the_rendered_objects(sim):
    frame = None
    checked = 0
    for k in range(60, 120, 10):
        frame = sim.frame(k) if frame is None or frame.index < k else frame
        while frame.index < k:
            frame = sim.frame(frame.index + 1)
        T_camera_base = np.linalg.inv(sim.rig.T_base_camera)
        by_index = {o.index: o for o in frame.objects}
        owners, counts = np.unique(frame.camera.owner[frame.camera.owner >= 0], return_counts=True)
        distance = np.linalg.norm(sim.objects_at(frame.t_s).xy - frame.ego.xy[0], axis=1)
        for owner, count in zip(owners, counts, strict=True):
            if count < 30 or distance[owner] > GROUND_TRUTH_RANGE_M:
                continue
            assert owner in by_index, (
                f"object {owner} is rendered ({count} px) but not in ground truth"
            )
            corners = (
                box_corners(by_index[owner].box) @ T_camera_base[:3, :3].T + T_camera_base[:3, 3]
            )
            if (corners[:, 2] < 0.5).any():
                continue
            uv, _ = sim.rig.camera.project(corners)
            rows, cols = np.nonzero(frame.camera.owner == owner)
            inside = (
                (cols >= uv[:, 0].min() - 2) & (cols <= uv[:, 0].max() + 2)
                & (rows >= uv[:, 1].min() - 2) & (rows <= uv[:, 1].max() + 2)
            )  # fmt: skip
            assert inside.mean() > 0.98
            checked += 1
    assert checked >= 10


def test_truth_boxes_contain_their_lidar_returns(sim):
    """Each return, placed in the world at its firing time, lies in its object's box then."""
    checked = 0
    for t in (6.0, 9.0, 12.0):
        ego = sim.ego.at(t)
        states, scene = sim.scene(t, ego.xy[0])
        rng = np.random.default_rng(0)
        sweep = sim.lidar.sweep(
            t - 0.05, sim.ego, scene, sim.ground, context=context("clear"), rng=rng
        )
        on_objects = sweep.hit_owner >= 0
        points = sweep.points[on_objects]
        owner = sweep.hit_owner[on_objects]
        fired = sweep.stamp_s + points["time"].astype(np.float64)
        pose = sim.ego.at(fired)
        c, s = np.cos(pose.yaw), np.sin(pose.yaw)
        mount = sim.rig.T_base_lidar[:3, 3]
        px, py = points["x"] + mount[0], points["y"] + mount[1]
        world = np.c_[pose.xy[:, 0] + c * px - s * py, pose.xy[:, 1] + s * px + c * py]
        centre = states.xy[owner] + states.velocity[owner] * (fired - t)[:, None]
        rel = world - centre
        yaw = states.yaw[owner]
        along = np.cos(yaw) * rel[:, 0] + np.sin(yaw) * rel[:, 1]
        across = -np.sin(yaw) * rel[:, 0] + np.cos(yaw) * rel[:, 1]
        z = points["z"] + mount[2]
        size = states.size[owner]
        margin = 0.1
        inside = (
            (np.abs(along) <= size[:, 0] / 2 + margin)
            & (np.abs(across) <= size[:, 1] / 2 + margin)
            & (z >= -margin) & (z <= size[:, 2] + margin)
        )  # fmt: skip
        assert inside.mean() > 0.99
        checked += len(points)
    assert checked > 500
