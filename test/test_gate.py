"""The gate: policies, exact budgeted choice over configurations, availability, reuse after
a full run only, hysteresis, fallbacks, files."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
from test_energy import HEAD_J, OPTIONS_J

from dynfusion_ros.core.context import FEATURE_NAMES, ContextFeatures
from dynfusion_ros.core.detector.levels import (
    FULL_CONFIGURATION,
    TRACKS_CONFIGURATION,
    Configuration,
    all_configurations,
    choices,
)
from dynfusion_ros.core.energy import EnergyProfile
from dynfusion_ros.core.gate import (
    MAX_HELD_FRAMES,
    EnergyAccount,
    Gate,
    GateModel,
    GateModelError,
    Policy,
    prior_quality,
    static_configurations,
)

PROFILE = EnergyProfile(OPTIONS_J, HEAD_J)
CONFIGURATIONS = all_configurations()
BRIGHTNESS = FEATURE_NAMES.index("camera_brightness")
C = Configuration.parse


def features(*, camera=True, lidar=True, radar=True, brightness=0.5) -> ContextFeatures:
    values = np.zeros(len(FEATURE_NAMES))
    values[BRIGHTNESS] = brightness
    for name, on in (("camera", camera), ("lidar", lidar), ("radar", radar), ("imu", True)):
        values[FEATURE_NAMES.index(f"{name}_available")] = float(on)
    return ContextFeatures(0, values)


def model(
    quality: dict[str, float],
    camera_gain: float = 0.0,
    configurations: tuple[Configuration, ...] = CONFIGURATIONS,
) -> GateModel:
    """One linear layer: fixed quality per configuration, plus ``camera_gain`` x
    brightness (in logits) for the camera alone."""
    logit = lambda q: np.log(q / (1 - q))  # noqa: E731
    contexts = ("clear", "night")
    bias = np.array([logit(quality.get(c.text, 0.1)) for c in configurations] + [0.0, 0.0])
    weight = np.zeros((len(configurations) + 2, len(FEATURE_NAMES)))
    weight[configurations.index(C("camera")), BRIGHTNESS] = camera_gain
    weight[len(configurations), BRIGHTNESS] = 5.0  # bright -> "clear"
    sets = frozenset({"camera+lidar+radar", "camera+radar", "lidar+radar"})
    return GateModel(
        configurations,
        contexts,
        np.zeros(len(FEATURE_NAMES)),
        np.ones(len(FEATURE_NAMES)),
        [(weight, bias)],
        sets,
    )


QUALITY = {
    "lidar": 0.6,
    "lidar+radar": 0.7,
    "camera+lidar": 0.8,
    "camera+radar": 0.5,
    "camera_reuse+lidar": 0.79,
}


def test_static_configurations_never_reuse():
    statics = static_configurations()
    assert len(statics) == 3 * 3 * 2 - 1
    assert all(o.runs_stem for c in statics for o in c.options)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dynamic", Policy("dynamic")),
        ("full", Policy("full")),
        ("late", Policy("late")),
        ("oracle", Policy("oracle")),
        ("static:radar+camera_half", Policy("static", C("camera_half+radar"))),
    ],
)
def test_policies_parse(text, expected):
    assert Policy.parse(text) == expected
    assert Policy.parse(expected.text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("greedy", "unknown policy 'greedy'"),
        ("static:sonar", "unknown option 'sonar'"),
        ("static:lidar+lidar_early", "two levels"),
        ("static:camera_reuse+lidar", "cannot reuse"),
        ("static:tracks", "cannot reuse"),
        ("static:tracks+lidar", "cannot go with 'lidar'"),
        ("all", "unknown policy"),
        ("full:3", "unknown policy"),
    ],
)
def test_bad_policies_say_why(text, problem):
    with pytest.raises(ValueError, match=problem):
        Policy.parse(text)


def test_dynamic_takes_the_best_configuration_that_fits():
    gate = Gate(PROFILE, model(QUALITY), hysteresis_frames=1)
    unlimited = gate.decide(features(), Policy("dynamic"), None)
    assert unlimited.chosen == (C("camera+lidar"),)
    assert unlimited.utility == pytest.approx(0.8)
    assert unlimited.context_label == "clear"
    assert unlimited.options == ("camera", "lidar")
    gate.reset()
    budget = PROFILE.run_energy_j([C("lidar+radar")])  # camera+lidar costs more
    fitted = gate.decide(features(), Policy("dynamic"), budget)
    assert fitted.chosen == (C("lidar+radar"),) and not fitted.over_budget
    assert fitted.energy_j <= budget


def test_reuse_is_offered_only_after_the_stem_ran_at_full():
    gate = Gate(PROFILE, model(QUALITY), hysteresis_frames=1)
    budget = PROFILE.run_energy_j([C("camera_reuse+lidar")])  # below camera+lidar
    first = gate.decide(features(), Policy("dynamic"), budget)
    assert first.chosen == (C("lidar"),)  # no camera features to reuse yet
    gate.decide(features(), Policy("dynamic"), None)  # camera+lidar: the camera ran in full
    assert gate.decide(features(), Policy("dynamic"), budget).chosen == (C("camera_reuse+lidar"),)
    # the reuse frame ran no camera: the next one cannot reuse again
    assert gate.decide(features(), Policy("dynamic"), budget).chosen == (C("lidar"),)


def test_tracks_follow_a_detector_run_for_a_few_frames_at_most():
    """Below every detector configuration (each frame within its budget): the first
    frame has nothing to track and runs the cheapest configuration over budget; then
    tracks, until the detections they predict are MAX_HELD_FRAMES old."""
    gate = Gate(PROFILE, hysteresis_frames=1, budget_window_frames=1)
    budget = PROFILE.run_energy_j([TRACKS_CONFIGURATION])
    frames = 2 * MAX_HELD_FRAMES + 3
    chosen = [gate.decide(features(), Policy("dynamic"), budget) for _ in range(frames)]
    held = [TRACKS_CONFIGURATION] * MAX_HELD_FRAMES
    assert [d.chosen[0] for d in chosen] == [C("radar"), *held, C("radar"), *held, C("radar")]
    assert [d.over_budget for d in chosen] == [not d.chosen[0].tracks for d in chosen]
    assert gate.decide(features(), Policy("full"), None).chosen == (FULL_CONFIGURATION,)


def test_tracks_are_worth_a_share_of_what_they_predict_less_the_hold_penalty():
    """Tracks of the full configuration keep 0.95 of its worth (0.76 of 0.8): right after
    a full frame they beat the lidar (0.7) within the lidar's budget, a frame later (less
    the 0.1 penalty) they do not, and tracks of the lidar's own detections (0.95 x 0.7)
    never do. Without the penalty they hold on. The oracle knows the truth instead."""
    quality = {"camera+lidar+radar": 0.8, "lidar": 0.7, "tracks": 0.76}
    budget = PROFILE.run_energy_j([C("lidar")])
    chosen = {}
    for penalty in (0.1, 0.0):
        gate_model = model(quality, configurations=choices())
        gate_model.hold_penalty = penalty
        gate = Gate(PROFILE, gate_model, hysteresis_frames=1, budget_window_frames=1)
        frames = [gate.decide(features(), Policy("dynamic"), None)]  # no budget: full
        frames += [gate.decide(features(), Policy("dynamic"), budget) for _ in range(3)]
        chosen[penalty] = [d.chosen[0].text for d in frames]
    full = FULL_CONFIGURATION.text
    assert chosen[0.1] == [full, "tracks", "lidar", "lidar"]
    assert chosen[0.0] == [full, "tracks", "tracks", "tracks"]
    gate = Gate(PROFILE, model(quality, configurations=choices()), budget_window_frames=1)
    truth = np.array([quality.get(c.text, 0.0) for c in choices()])
    oracle = [gate.decide(features(), Policy("oracle"), budget, truth) for _ in range(3)]
    assert [d.chosen[0].text for d in oracle] == ["lidar", "tracks", "tracks"]


def test_a_run_is_valued_with_the_tracks_that_follow_it_under_a_tight_mean_budget():
    """At 15 % of the full configuration's energy only a rich run now and then, held as
    tracks for the frames after, scores well. Valued one frame at a time, such a run
    looked dear, and the gate spent the budget on the lidar and its reuse instead."""
    quality = {
        "camera+lidar+radar": 0.85,
        "camera_half+lidar+radar": 0.83,
        "lidar": 0.7,
        "lidar+radar": 0.72,
        "lidar_reuse": 0.6,
        "lidar_reuse+radar": 0.64,
        "radar": 0.2,
        "tracks": 0.8,
    }
    gate_model = model(quality, configurations=choices())
    gate_model.hold_penalty = 0.04
    gate = Gate(PROFILE, gate_model, hysteresis_frames=1)
    budget = 0.15 * gate.full_energy_j()
    settled = _drive(gate, budget, 300)[50:]
    chosen = [d.chosen[0] for d in settled]
    assert not any("reuse" in c.text for c in chosen), Counter(c.text for c in chosen)
    assert sum(c.tracks for c in chosen) >= 0.7 * len(chosen)
    assert np.mean([d.utility for d in settled]) > 0.7
    assert all(d.energy_j <= d.allowed_j * (1 + 1e-9) for d in settled)


def _drive(gate: Gate, budget: float, frames: int = 200) -> list:
    return [gate.decide(features(), Policy("dynamic"), budget) for _ in range(frames)]


def test_the_budget_is_a_mean_frames_save_for_a_dearer_one_and_reuse_after_it():
    """Between lidar+radar and camera+lidar: within every frame's own budget (window 1)
    the camera never runs; as a mean over 10 frames it runs at full on some frames and
    is reused on the next, the mean energy stays within the budget and the mean
    predicted quality beats the per-frame cap's."""
    low, high = (PROFILE.run_energy_j([C(t)]) for t in ("lidar+radar", "camera+lidar"))
    budget = (low + high) / 2
    capped = _drive(Gate(PROFILE, model(QUALITY), budget_window_frames=1), budget)
    assert all(d.energy_j <= budget * (1 + 1e-9) for d in capped)
    assert {d.chosen[0].text for d in capped} == {"lidar+radar"}
    mean = _drive(Gate(PROFILE, model(QUALITY), budget_window_frames=10), budget)
    energies = np.array([d.energy_j for d in mean])
    assert energies.sum() <= len(mean) * budget + 9 * budget  # at most the window's savings
    assert energies.max() > budget and not any(d.over_budget for d in mean)
    assert all(d.energy_j <= d.allowed_j * (1 + 1e-9) for d in mean)
    texts = [d.chosen[0].text for d in mean]
    after_full = [b for a, b in itertools.pairwise(texts) if a == "camera+lidar"]
    assert after_full and set(after_full) <= {"camera_reuse+lidar", "camera+lidar"}
    assert "camera_reuse+lidar" in after_full
    assert np.mean([d.utility for d in mean]) > np.mean([d.utility for d in capped]) + 0.02


def test_the_account_caps_its_savings_and_steers_its_price():
    account = EnergyAccount(window_frames=3)
    for _ in range(10):
        account.charge(1.0, 0.0)  # nothing spent: saved, up to two budgets
    assert account.savings_j == pytest.approx(2.0)
    assert account.available_j(1.0) == pytest.approx(3.0)
    account.charge(1.0, 3.0)
    assert account.savings_j == 0.0
    assert account.price == 0.0  # a new stream: chosen as under a per-frame cap
    account.steer(1.0, 2.0)  # wants twice the budget: dearer energy
    account.steer(1.0, 2.0)
    price = account.price
    assert price > 0.0
    account.steer(1.0, 0.5)  # wants half: cheaper
    assert 0.0 < account.price < price
    for _ in range(10):
        account.steer(1.0, 0.5)
    assert account.price == 0.0  # never below nothing
    with pytest.raises(ValueError, match="at least 1 frame"):
        EnergyAccount(window_frames=0)


def test_what_the_frame_spends_besides_the_detector_comes_from_the_same_account():
    """The odometry's energy (``other_j``) is charged with the detector's and leaves the
    detector what the budget and the savings do not cover of it."""
    gate = Gate(PROFILE, model(QUALITY))
    radar_j = PROFILE.run_energy_j([C("radar")])
    budget = 4 * radar_j
    gate.note_run((C("radar"),), budget, other_j=radar_j)
    assert gate.account.savings_j == pytest.approx(2 * radar_j)
    decision = gate.decide(features(), Policy("dynamic"), budget, other_j=3 * radar_j)
    assert decision.allowed_j == pytest.approx(3 * radar_j)  # 4 + 2 saved - 3 for odometry
    assert decision.energy_j <= decision.allowed_j
    assert gate.account.savings_j == pytest.approx(3 * radar_j - decision.energy_j)


def test_budget_below_the_cheapest_runs_the_cheapest_and_says_so():
    gate = Gate(PROFILE, model(QUALITY))
    cheapest = gate.cheapest_usable_j(features())
    decision = gate.decide(features(), Policy("dynamic"), 1e-6)
    assert decision.over_budget
    assert decision.energy_j == pytest.approx(cheapest)
    assert decision.chosen == (C("radar"),)


def test_unavailable_sensors_are_planned_around():
    gate = Gate(PROFILE, model(QUALITY), hysteresis_frames=1)
    decision = gate.decide(features(lidar=False), Policy("dynamic"), None)
    assert decision.chosen == (C("camera+radar"),)
    full = gate.decide(features(lidar=False), Policy("full"), None)
    assert full.chosen == (C("camera+radar"),)
    late = gate.decide(features(lidar=False), Policy("late"), None)
    assert late.chosen == (C("camera"), C("radar")) and np.isnan(late.utility)
    assert late.energy_j == pytest.approx(PROFILE.run_energy_j([C("camera"), C("radar")]))
    static = gate.decide(features(lidar=False), Policy.parse("static:lidar_early+radar"), None)
    assert static.chosen == (C("radar"),)
    blind = features(camera=False, lidar=False, radar=False)
    # the radar ran in full on the last frame: its features carry one frame over the loss
    assert gate.decide(blind, Policy("dynamic"), 1.0).chosen == (C("radar_reuse"),)
    assert gate.decide(blind, Policy("dynamic"), 1.0).chosen == ()


def test_a_fixed_policy_over_the_budget_runs_and_reports_it():
    gate = Gate(PROFILE, model(QUALITY))
    decision = gate.decide(features(), Policy("full"), 1e-3)
    assert decision.chosen == (C("camera+lidar+radar"),) and decision.over_budget


def test_hysteresis_waits_for_a_lasting_improvement_but_leaves_an_infeasible_choice():
    quality = {"lidar+radar": 0.7, "camera": 0.5}
    gate = Gate(PROFILE, model(quality, camera_gain=4.0), hysteresis_frames=3)
    dynamic = Policy("dynamic")
    assert gate.decide(features(brightness=0.0), dynamic, None).chosen == (C("lidar+radar"),)
    # the camera alone now predicts ~0.88: it must win three frames in a row
    picks = [gate.decide(features(brightness=0.5), dynamic, None).chosen for _ in range(3)]
    assert picks == [(C("lidar+radar"),), (C("lidar+radar"),), (C("camera"),)]
    gate.reset()
    gate.decide(features(brightness=0.0), dynamic, None)
    # the lidar dies: switch at once
    assert gate.decide(features(lidar=False), dynamic, None).chosen != (C("lidar+radar"),)


def test_fallbacks_without_a_model_or_for_an_unseen_sensor_set():
    no_model = Gate(PROFILE).decide(features(), Policy("dynamic"), None)
    assert no_model.fallback == "no gate model loaded"
    assert no_model.chosen == (C("camera+lidar+radar"),)  # the prior spends what it may
    budget = PROFILE.run_energy_j([C("lidar")])
    cheap = Gate(PROFILE).decide(features(), Policy("dynamic"), budget)
    # options combine as independent chances: lidar_early and radar 1 - 0.36 x 0.81 = 0.71,
    # just below the lidar alone (0.72), which fits
    assert cheap.chosen == (C("lidar"),)
    assert prior_quality(C("lidar_early+radar")) == pytest.approx(1 - 0.36 * 0.81)
    unseen = Gate(PROFILE, model(QUALITY)).decide(features(radar=False), Policy("dynamic"), None)
    assert "camera+lidar not seen in training" in unseen.fallback
    assert unseen.chosen == (C("camera+lidar"),)


def test_oracle_needs_and_uses_the_true_quality():
    gate = Gate(PROFILE, model(QUALITY))
    with pytest.raises(ValueError, match="ground truth"):
        gate.decide(features(), Policy("oracle"), None)
    truth = np.zeros(len(CONFIGURATIONS))
    truth[CONFIGURATIONS.index(C("radar"))] = 0.9
    assert gate.decide(features(), Policy("oracle"), None, truth).chosen == (C("radar"),)


def test_the_blend_mixes_in_each_configuration_s_dataset_quality_in_the_likely_context():
    """Per frame, camera+lidar looks best; over the dataset (in the clear context, which a
    bright frame is), lidar+radar ranks better: the blend decides which wins."""
    gate_model = model(QUALITY)
    table = np.zeros((len(CONFIGURATIONS), 2))
    table[CONFIGURATIONS.index(C("lidar+radar")), 0] = 0.9  # clear
    table[CONFIGURATIONS.index(C("camera+lidar")), 1] = 0.9  # night
    budget = PROFILE.run_energy_j([C("camera+lidar")])
    chosen = {}
    for blend in (0.0, 0.5):
        gate_model.dataset_quality, gate_model.blend = table, blend
        gate = Gate(PROFILE, gate_model, hysteresis_frames=1)
        chosen[blend] = gate.decide(features(brightness=1.0), Policy("dynamic"), budget).chosen
    assert chosen == {0.0: (C("camera+lidar"),), 0.5: (C("lidar+radar"),)}
    utility, odds = gate_model.utility(features(brightness=1.0).values)
    quality, _ = gate_model.predict(features(brightness=1.0).values)
    np.testing.assert_allclose(utility, 0.5 * quality + 0.5 * table @ odds)
    with pytest.raises(ValueError, match="blend"):
        GateModel(
            *[getattr(gate_model, f) for f in ("configurations", "contexts")],
            gate_model.mean,
            gate_model.scale,
            gate_model.layers,
            blend=1.5,
        )


def test_a_near_tie_goes_to_the_dearer_configuration_for_the_dynamic_policy_only():
    """lidar+radar is 0.005 below camera+lidar yet dearer here (a radar stem priced
    high): within the fitted margin the gate spends the budget; outside it, or for the
    oracle, the better one wins. Every frame within its budget (window 1): no energy
    price tells them apart."""
    quality = {"camera+lidar": 0.805, "lidar+radar": 0.8}
    prices = {**OPTIONS_J, "radar": OPTIONS_J["camera"] + 0.01}
    profile = EnergyProfile(prices, HEAD_J)
    budget = profile.run_energy_j([C("lidar+radar")])
    truth = np.array([quality.get(c.text, 0.0) for c in CONFIGURATIONS])
    chosen = {}
    for margin in (0.0, 0.01):
        gate_model = model(quality)
        gate_model.tie_margin = margin
        gate = Gate(profile, gate_model, hysteresis_frames=1, budget_window_frames=1)
        for policy in ("dynamic", "oracle"):
            decision = gate.decide(features(), Policy(policy), budget, true_quality=truth)
            chosen[policy, margin] = decision.chosen[0].text
    assert chosen == {
        ("dynamic", 0.0): "camera+lidar",
        ("oracle", 0.0): "camera+lidar",
        ("dynamic", 0.01): "lidar+radar",
        ("oracle", 0.01): "camera+lidar",
    }


def test_gate_model_round_trip_and_damage(tmp_path):
    original = model(QUALITY, camera_gain=2.0)
    original.dataset_quality = np.linspace(0, 1, 2 * len(CONFIGURATIONS)).reshape(-1, 2)
    original.blend, original.tie_margin = 0.25, 0.01
    path = original.save(tmp_path / "gate.json")
    loaded = GateModel.load(path)
    x = features(brightness=0.3).values
    np.testing.assert_allclose(loaded.utility(x)[0], original.utility(x)[0])
    assert (loaded.blend, loaded.tie_margin) == (0.25, 0.01)
    saved = path.read_text()
    path.write_text(saved.replace('"blend": 0.25', '"blend": 2.5'))
    with pytest.raises(GateModelError, match="bad dataset quality, blend"):
        GateModel.load(path)
    path.write_text(saved)
    assert loaded.seen_sensor_sets == original.seen_sensor_sets
    assert loaded.configurations == CONFIGURATIONS
    path.with_suffix(".safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(GateModelError, match="corrupt gate weights"):
        GateModel.load(path)
    with pytest.raises(GateModelError, match="gate model not found"):
        GateModel.load(tmp_path / "absent.json")
    text = path.read_text()
    path.write_text(text.replace('"camera_half+lidar"', '"camera_half+lidar+lidar"'))
    with pytest.raises(GateModelError, match="bad configuration table"):
        GateModel.load(path)
    path.write_text(text.replace("camera_brightness", "camera_mood"))
    with pytest.raises(GateModelError, match="other context features"):
        GateModel.load(path)
    path.write_text(text.replace('"format_version": 4', '"format_version": 2'))
    with pytest.raises(GateModelError, match="retrain"):
        GateModel.load(path)


def test_infinite_or_absurd_features_give_finite_scores_and_a_choice():
    """An infinite context feature (a sensor age) standardised without a bound made
    every score NaN, and the BranchSelection carried them."""
    gate_model = model(QUALITY, camera_gain=2.0)
    bounded = features(brightness=0.5).values
    for bad in (np.inf, -np.inf, 1e308, np.nan):
        values = bounded.copy()
        values[BRIGHTNESS] = bad
        values[FEATURE_NAMES.index("lidar_age")] = np.inf
        quality, contexts = gate_model.predict(values)
        assert np.isfinite(quality).all() and np.isfinite(contexts).all()
        gate = Gate(PROFILE, gate_model)
        decision = gate.decide(ContextFeatures(0, values), Policy("dynamic"), 1.0)
        assert decision.chosen and np.isfinite(decision.utility)
        assert np.isfinite(list(decision.option_utility.values())).all()
        assert np.isfinite(list(decision.context_scores.values())).all()


def test_a_context_seen_on_few_frames_is_drawn_towards_the_overall_figure():
    from dynfusion_ros.train.gate import ContextQuality

    quality = ContextQuality(
        by_context=np.array([[0.9, 0.5], [0.8, 0.7]]),  # 2 configurations x 2 contexts
        overall=np.array([0.6, 0.75]),
        frames=np.array([100, 900]),
    )
    np.testing.assert_allclose(quality.shrunk(0), quality.by_context)
    shrunk = quality.shrunk(100)  # the 100-frame context halfway, the 900-frame one a tenth
    np.testing.assert_allclose(shrunk[:, 0], [0.75, 0.775])
    np.testing.assert_allclose(shrunk[:, 1], [0.51, 0.7050])
    # the first configuration led the small context by noise; drawn in, the second leads
    assert shrunk[0, 0] < shrunk[1, 0] and quality.by_context[0, 0] > quality.by_context[1, 0]
