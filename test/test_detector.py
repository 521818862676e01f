"""The fused detector: levels, temporal reuse, presence-normalised fusion, training over
random configurations, weights and the runner, on a short simulated drive."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dynfusion_ros.core.detector.config import DetectorConfig
from dynfusion_ros.core.detector.levels import (
    FULL_CONFIGURATION,
    OPTIONS,
    Configuration,
    all_configurations,
)
from dynfusion_ros.core.detector.network import LEVELS, OFF, FusedDetector
from dynfusion_ros.core.detector.rasters import blank_inputs
from dynfusion_ros.core.detector.reuse import FeatureMemory, relative_motion, warp
from dynfusion_ros.core.detector.runner import DetectorRunner
from dynfusion_ros.core.detector.weights import WeightsError, load_detector, save_detector
from dynfusion_ros.core.types import Box3D, Detection, Modality, ObjectClass
from dynfusion_ros.resources import default_model_path
from dynfusion_ros.train.dataset import load_dataset
from dynfusion_ros.train.detector import (
    DetectorTrainSettings,
    StemPlan,
    StemProbes,
    forward_plan,
    plan_batch,
    plan_features,
    probe_loss,
    train_detector,
)

CONFIG = DetectorConfig()


def test_every_configuration_is_at_most_one_level_per_stem():
    configurations = all_configurations()
    assert len(configurations) == 4 * 4 * 3 - 1  # off or a level, per stem; not all off
    assert len({c.text for c in configurations}) == len(configurations)
    assert all(Configuration.parse(c.text) == c for c in configurations)
    assert Configuration.parse("radar+camera_half").text == "camera_half+radar"
    assert FULL_CONFIGURATION.text == "camera+lidar+radar"
    with pytest.raises(ValueError, match="two levels"):
        Configuration.parse("lidar+lidar_early")
    with pytest.raises(ValueError, match="unknown option 'lidar_half'"):
        Configuration.parse("lidar_half")
    assert set(OPTIONS) == {
        "camera",
        "camera_half",
        "camera_reuse",
        "lidar",
        "lidar_early",
        "lidar_reuse",
        "radar",
        "radar_reuse",
    }


def _blob(row: int, col: int) -> torch.Tensor:
    features = torch.zeros(1, 1, *CONFIG.head_grid_shape)
    features[0, 0, row, col] = 1.0
    return features


def _peak(features: torch.Tensor) -> list[list[int]]:
    return np.argwhere(features[0, 0].numpy() > 0.5).tolist()


def test_reused_features_move_with_the_ego_motion():
    cell = CONFIG.head_cell_m  # 0.8 m; the blob is at x 20.4 m, y +4.4 m
    blob = _blob(25, 37)
    ahead = relative_motion(np.zeros(3), np.array([3 * cell, 0.0, 0.0]))
    assert _peak(warp(blob, torch.tensor(ahead[None]), CONFIG.grid)) == [[22, 37]]
    left_turn = relative_motion(np.zeros(3), np.array([0.0, 0.0, np.pi / 2]))
    assert _peak(warp(blob, torch.tensor(left_turn[None]), CONFIG.grid)) == [[5, 6]]
    past = relative_motion(np.zeros(3), np.array([25.0, 0.0, 0.0]))  # drove past it
    assert warp(blob, torch.tensor(past[None]), CONFIG.grid).abs().sum() == 0.0
    # the motion is relative: the same move from another pose in odom moves it the same
    start = np.array([100.0, -50.0, 1.0])
    moved = start + np.array([3 * cell * np.cos(1.0), 3 * cell * np.sin(1.0), 0.0])
    again = relative_motion(start, moved)
    assert _peak(warp(blob, torch.tensor(again[None]), CONFIG.grid)) == [[22, 37]]


def test_memory_reuses_only_recent_features_and_says_why_not():
    memory = FeatureMemory(CONFIG.grid, max_age_s=0.5)
    assert "no earlier lidar" in memory.recall("lidar", np.zeros(3), 10**9)
    memory.remember("lidar", _blob(25, 37), np.zeros(3), 10**9)
    warped, age = memory.recall("lidar", np.array([3 * CONFIG.head_cell_m, 0, 0]), 1_200_000_000)
    assert age == pytest.approx(0.2) and _peak(warped) == [[22, 37]]
    assert "0.60 s old" in memory.recall("lidar", np.zeros(3), 1_600_000_000)
    assert "-0.10 s old" in memory.recall("lidar", np.zeros(3), 900_000_000)
    with pytest.raises(ValueError, match="max_age_s"):
        FeatureMemory(CONFIG.grid, 0.0)


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return FusedDetector(CONFIG).eval()


@pytest.fixture(scope="module")
def blank():
    inputs = {k: torch.from_numpy(v)[None] for k, v in blank_inputs(CONFIG).items()}
    inputs["lidar"] = torch.rand_like(inputs["lidar"])
    inputs["radar"] = torch.rand_like(inputs["radar"])
    return inputs


@torch.inference_mode()
def test_fusion_ignores_absent_stems_and_frames_of_a_batch_do_not_mix(network, blank):
    lidar = network.stem("lidar", blank, "full")
    radar = network.stem("radar", blank, "full")
    alone = network.detect({"lidar": lidar}, {"lidar": torch.tensor([0])}, {})
    garbage = torch.randn_like(radar) * 100
    marked_off = network.detect(
        {"lidar": lidar, "radar": garbage},
        {"lidar": torch.tensor([0]), "radar": torch.tensor([OFF])},
        {},
    )
    assert torch.allclose(alone[0], marked_off[0], atol=1e-5)
    both = network.detect(
        {"lidar": lidar, "radar": radar},
        {"lidar": torch.tensor([0]), "radar": torch.tensor([0])},
        {},
    )
    assert not torch.allclose(alone[0], both[0])
    # a batch of two frames under different configurations gives what each gives alone
    batch = network.detect(
        {"lidar": lidar.repeat(2, 1, 1, 1), "radar": torch.cat([garbage, radar])},
        {"lidar": torch.tensor([0, 0]), "radar": torch.tensor([OFF, 0])},
        {"radar": torch.zeros(2)},
    )
    assert torch.allclose(batch[0][0], alone[0][0], atol=1e-5)
    assert torch.allclose(batch[0][1], both[0][0], atol=1e-5)


@torch.inference_mode()
def test_one_frame_fuses_as_it_would_in_a_batch_of_mixed_configurations(network):
    """A single frame skips the masks a mixed batch needs; both must give the same map
    for every configuration (levels, reuse ages, stems off)."""
    generator = torch.Generator().manual_seed(3)
    rows, cols = CONFIG.head_grid_shape
    configurations = all_configurations()
    features = {
        stem: torch.rand(len(configurations), channels, rows, cols, generator=generator)
        for stem, channels in CONFIG.stem_channels.items()
    }
    chosen = {stem: [c.level(Modality(stem)) for c in configurations] for stem in LEVELS}
    levels = {
        stem: torch.tensor([OFF if level is None else LEVELS[stem].index(level) for level in found])
        for stem, found in chosen.items()
    }
    ages = {stem: torch.rand(len(configurations), generator=generator) * 0.3 for stem in LEVELS}
    batch = network.fusion(features, levels, ages)
    for row in range(len(configurations)):
        present = [stem for stem in LEVELS if levels[stem][row] != OFF]
        alone = network.fusion(
            {stem: features[stem][row : row + 1] for stem in present},
            {stem: levels[stem][row : row + 1] for stem in present},
            {stem: ages[stem][row : row + 1] for stem in present},
        )
        assert torch.allclose(alone[0], batch[row], atol=1e-5), configurations[row].text


@torch.inference_mode()
def test_every_level_gives_features_on_the_head_grid_and_wrong_levels_are_refused(network, blank):
    shapes = {
        (stem, level): network.stem(stem, blank, level).shape
        for stem, level in (
            ("camera", "full"),
            ("camera", "half"),
            ("lidar", "full"),
            ("lidar", "early"),
            ("radar", "full"),
        )
    }
    assert {shape[-2:] for shape in shapes.values()} == {CONFIG.head_grid_shape}
    for stem, level in (("camera", "early"), ("lidar", "half"), ("radar", "reuse")):
        with pytest.raises(ValueError, match=f"the {stem} stem has no level"):
            network.stem(stem, blank, level)


@pytest.fixture(scope="module")
def clear_data(clear_bag):
    return load_dataset([clear_bag], CONFIG, progress=False)


def test_dataset_knows_each_frames_neighbours_and_true_pose(clear_data):
    assert len(clear_data) >= 14
    assert not np.isnan(clear_data.pose).any()
    assert clear_data.earlier(5, 0) == 5 and clear_data.earlier(5, 2) == 3
    assert clear_data.earlier(0, 1) is None
    moved = relative_motion(clear_data.pose[0], clear_data.pose[-1])
    assert 0.01 < moved[0] < 30.0 and abs(moved[1]) < 0.1  # forward, starting from rest
    subset = clear_data.subset(np.array([3, 5]))
    assert subset.earlier(1, 2) == 0 and subset.earlier(1, 1) is None


def test_training_plans_give_every_stem_every_state_and_lower_the_loss(clear_data):
    settings = DetectorTrainSettings(steps=24, batch_size=4, seed=1, validate_every=100)
    rng = np.random.default_rng(0)
    seen = {stem: set() for stem in ("camera", "lidar", "radar")}
    for _ in range(30):
        chosen = np.sort(rng.choice(len(clear_data), 4, replace=False))
        for stem, plan in plan_batch(clear_data, chosen, rng, settings).items():
            seen[stem] |= set(plan.level.tolist())
            reused = plan.level == LEVELS[stem].index("reuse")
            assert (plan.earlier[reused] >= 0).all() and (plan.age_s[reused] > 0).all()
    assert seen == {"camera": {OFF, 0, 1, 2}, "lidar": {OFF, 0, 1, 2}, "radar": {OFF, 0, 1}}
    torch.manual_seed(0)
    network = FusedDetector(CONFIG)
    log = train_detector(network, clear_data, settings, progress=False)
    assert len(log.losses) == 24 and np.mean(log.losses[-6:]) < np.mean(log.losses[:6])
    nothing = {stem: StemPlan.off(2) for stem in ("camera", "lidar", "radar")}
    outputs, contributed = forward_plan(network, clear_data, np.array([0, 1]), nothing)
    assert outputs is None and not contributed.any()


def test_probes_train_only_the_stems_that_ran(clear_data):
    network, probes = FusedDetector(CONFIG), StemProbes(CONFIG)
    chosen = np.array([3, 4])
    plans = {stem: StemPlan.off(2) for stem in ("camera", "lidar", "radar")}
    plans["camera"].level[:] = 0  # ran at full
    plans["lidar"].level[:] = LEVELS["lidar"].index("reuse")
    plans["lidar"].earlier[:], plans["lidar"].age_s[:] = chosen - 1, 0.1
    features, _, _ = plan_features(network, clear_data, chosen, plans)
    assert set(features) == {"camera", "lidar"}
    loss = probe_loss(probes, features, plans, clear_data, chosen, settings=DetectorTrainSettings())
    loss.backward()
    assert loss.item() > 0
    assert all(p.grad is not None for p in network.stems["camera"].parameters())
    assert all(p.grad is None for p in network.stems["lidar"].parameters())
    assert all(p.grad is None for p in probes.heads["lidar"].parameters())


def test_weights_round_trip_and_clear_errors(network, tmp_path):
    path = save_detector(network, tmp_path / "detector.json", {"note": "test"})
    loaded = load_detector(path)
    for key, value in network.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    with pytest.raises(WeightsError, match="no such file"):
        load_detector(tmp_path / "missing.json")
    path.with_suffix(".safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="cannot read safetensors"):
        load_detector(path)
    document = path.read_text().replace('"early"', '"earlier"')
    (tmp_path / "other.json").write_text(document)
    with pytest.raises(WeightsError, match=r"levels\.lidar"):
        load_detector(tmp_path / "other.json")


def test_loading_the_detector_sets_its_threads_and_refuses_none():
    before = torch.get_num_threads()
    try:
        DetectorRunner.load(default_model_path("detector.json"), threads=1)
        assert torch.get_num_threads() == 1
        with pytest.raises(ValueError, match="at least 1 thread"):
            DetectorRunner.load(default_model_path("detector.json"), threads=0)
    finally:
        torch.set_num_threads(before)


def test_runner_reuses_what_ran_and_says_what_could_not(network, clear_frames):
    runner = DetectorRunner(network)
    first, second = clear_frames[4].frame, clear_frames[5].frame
    pose = np.zeros(3)
    reuse = Configuration.parse("camera_half+lidar_reuse+radar")
    outputs = runner.run(first, reuse, pose)
    assert outputs.ran.text == "camera_half+radar"
    assert outputs.skipped == {"lidar_reuse": "no earlier lidar features to reuse"}
    runner.run(first, FULL_CONFIGURATION, pose)
    outputs = runner.run(second, reuse, pose + np.array([1.0, 0.0, 0.0]))
    assert outputs.ran == reuse and not outputs.skipped
    assert set(outputs.option_ms) == set(reuse.names) and outputs.head_ms > 0
    assert "no ego pose" in runner.run(second, reuse).skipped["lidar_reuse"]
    no_lidar = dataclasses.replace(second, lidar=None)
    outputs = runner.run(no_lidar, Configuration.parse("lidar_early"), pose)
    assert outputs.ran.text == "" and outputs.detections == []
    assert "no lidar data" in outputs.skipped["lidar_early"]
    third = dataclasses.replace(clear_frames[6].frame, lidar=None)
    every, skipped = runner.run_every(third, all_configurations(), pose)
    assert set(skipped) == {"lidar", "lidar_early"}
    runnable = [c for c in all_configurations() if not {"lidar", "lidar_early"} & set(c.names)]
    assert set(every) == {c.text for c in runnable}
    assert "camera_reuse+lidar_reuse+radar_reuse" in every  # remembered from earlier frames
    alone = DetectorRunner(network).run(third, Configuration.parse("camera+radar"), pose)
    batched = [d.score for d in every["camera+radar"]]  # scored in one batch with others
    assert batched == pytest.approx([d.score for d in alone.detections], abs=1e-5)


def test_tracks_predict_what_the_runner_was_told_was_found(network, clear_frames):
    runner = DetectorRunner(network)
    first, second = clear_frames[4].frame, clear_frames[5].frame
    tracks = Configuration.parse("tracks")
    said = runner.run(first, tracks, np.zeros(3)).skipped
    assert said == {"tracks": "no earlier detections to track"}
    found = [Detection(ObjectClass.CAR, 0.8, Box3D(12.0, -2.0, 0.8, 4.5, 1.9, 1.6, 0.1))]
    runner.follow(first, found, np.zeros(3))
    moved = np.array([1.0, 0.0, 0.0])  # the vehicle drove 1 m ahead: objects are 1 m nearer
    outputs = runner.run(second, tracks, moved)
    assert outputs.ran == tracks and outputs.head_ms == 0.0 and "tracks" in outputs.option_ms
    (car,) = outputs.detections
    assert (car.box.x, car.box.y) == pytest.approx((11.0, -2.0))
    assert 0.7 < car.score < 0.8  # a prediction is less sure than the detection it moves
    assert "no ego pose" in runner.run(second, tracks).skipped["tracks"]
    every, _ = runner.run_every(second, [tracks, FULL_CONFIGURATION], moved)
    assert set(every) == {"tracks", FULL_CONFIGURATION.text}
    runner.follow(second, every[FULL_CONFIGURATION.text], None)  # no pose: the tracks end
    assert "no earlier detections" in runner.run(second, tracks, moved).skipped["tracks"]
