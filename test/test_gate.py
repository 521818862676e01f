"""The gate: policies, exact budgeted choice, availability, hysteresis, fallbacks, files."""

from __future__ import annotations

import numpy as np
import pytest
from test_energy import HEADS, STEMS

from dynfusion_ros.core.branches.registry import BRANCHES
from dynfusion_ros.core.context import FEATURE_NAMES, ContextFeatures
from dynfusion_ros.core.energy import EnergyProfile
from dynfusion_ros.core.gate import (
    Gate,
    GateModel,
    GateModelError,
    Policy,
    all_selections,
)

PROFILE = EnergyProfile(STEMS, HEADS)
SELECTIONS = all_selections(tuple(BRANCHES))
BRIGHTNESS = FEATURE_NAMES.index("camera_brightness")


def features(*, camera=True, lidar=True, radar=True, brightness=0.5) -> ContextFeatures:
    values = np.zeros(len(FEATURE_NAMES))
    values[BRIGHTNESS] = brightness
    for name, on in (("camera", camera), ("lidar", lidar), ("radar", radar), ("imu", True)):
        values[FEATURE_NAMES.index(f"{name}_available")] = float(on)
    return ContextFeatures(0, values)


def model(quality: dict[tuple[str, ...], float], camera_gain: float = 0.0) -> GateModel:
    """One linear layer: fixed quality per selection, plus ``camera_gain`` x brightness
    (in logits) for the camera branch alone."""
    logit = lambda q: np.log(q / (1 - q))  # noqa: E731
    contexts = ("clear", "night")
    bias = np.array([logit(quality.get(s, 0.1)) for s in SELECTIONS] + [0.0, 0.0])
    weight = np.zeros((len(SELECTIONS) + 2, len(FEATURE_NAMES)))
    weight[SELECTIONS.index(("camera",)), BRIGHTNESS] = camera_gain
    weight[len(SELECTIONS), BRIGHTNESS] = 5.0  # bright -> "clear"
    sets = frozenset({"camera+lidar+radar", "camera+radar", "lidar+radar"})
    return GateModel(
        SELECTIONS,
        contexts,
        np.zeros(len(FEATURE_NAMES)),
        np.ones(len(FEATURE_NAMES)),
        [(weight, bias)],
        sets,
    )


QUALITY = {("lidar",): 0.6, ("lidar_radar",): 0.7, ("camera_lidar",): 0.8, ("camera_radar",): 0.5}


def test_selections_are_every_non_empty_subset():
    assert len(SELECTIONS) == 63 and len(set(SELECTIONS)) == 63
    assert SELECTIONS[0] == ("camera",) and SELECTIONS[-1] == tuple(BRANCHES)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dynamic", Policy("dynamic")),
        ("all", Policy("all")),
        ("oracle", Policy("oracle")),
        ("topk:2", Policy("topk", k=2)),
        ("static:radar+camera", Policy("static", ("camera", "radar"))),
    ],
)
def test_policies_parse(text, expected):
    assert Policy.parse(text) == expected
    assert Policy.parse(expected.text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("greedy", "unknown policy 'greedy'"),
        ("static:sonar", "unknown branch 'sonar'"),
        ("static:lidar+lidar", "names a branch twice"),
        ("topk:0", "between 1 and 6"),
        ("topk:two", "whole number"),
        ("all:3", "unknown policy"),
    ],
)
def test_bad_policies_say_why(text, problem):
    with pytest.raises(ValueError, match=problem):
        Policy.parse(text)


def test_dynamic_takes_the_best_selection_that_fits():
    gate = Gate(PROFILE, model(QUALITY), hysteresis_frames=1)
    unlimited = gate.decide(features(), Policy("dynamic"), None)
    assert unlimited.chosen == ("camera_lidar",)
    assert unlimited.utility == pytest.approx(0.8)
    assert unlimited.context_label == "clear"
    budget = PROFILE.selection_energy_j(["lidar_radar"])  # camera_lidar costs more
    fitted = gate.decide(features(), Policy("dynamic"), budget)
    assert fitted.chosen == ("lidar_radar",) and not fitted.over_budget
    assert fitted.energy_j <= budget


def test_budget_below_the_cheapest_runs_the_cheapest_and_says_so():
    gate = Gate(PROFILE, model(QUALITY))
    decision = gate.decide(features(), Policy("dynamic"), 1e-6)
    assert decision.over_budget
    assert decision.energy_j == pytest.approx(gate.cheapest_energy_j)
    assert decision.chosen == ("radar",)


def test_unavailable_sensors_are_planned_around():
    gate = Gate(PROFILE, model(QUALITY), hysteresis_frames=1)
    decision = gate.decide(features(lidar=False), Policy("dynamic"), None)
    assert decision.chosen == ("camera_radar",)
    everything = gate.decide(features(lidar=False), Policy("all"), None)
    assert everything.chosen == ("camera", "radar", "camera_radar")
    static = gate.decide(features(lidar=False), Policy.parse("static:lidar+radar"), None)
    assert static.chosen == ("radar",)
    nothing = gate.decide(features(camera=False, lidar=False, radar=False), Policy("dynamic"), 1.0)
    assert nothing.chosen == ()


def test_topk_ranks_single_branches_without_a_budget():
    gate = Gate(PROFILE, model(QUALITY))
    decision = gate.decide(features(), Policy("topk", k=2), 1e-6)
    assert decision.chosen == ("camera_lidar", "lidar_radar")
    assert decision.over_budget  # topk ignores the budget; the violation is reported


def test_hysteresis_waits_for_a_lasting_improvement_but_leaves_an_infeasible_choice():
    quality = {("lidar_radar",): 0.7, ("camera",): 0.5}
    gate = Gate(PROFILE, model(quality, camera_gain=4.0), hysteresis_frames=3)
    dynamic = Policy("dynamic")
    assert gate.decide(features(brightness=0.0), dynamic, None).chosen == ("lidar_radar",)
    # the camera alone now predicts ~0.88: it must win three frames in a row
    picks = [gate.decide(features(brightness=0.5), dynamic, None).chosen for _ in range(3)]
    assert picks == [("lidar_radar",), ("lidar_radar",), ("camera",)]
    gate.reset()
    gate.decide(features(brightness=0.0), dynamic, None)
    # the lidar dies: switch at once
    assert gate.decide(features(lidar=False), dynamic, None).chosen != ("lidar_radar",)


def test_fallbacks_without_a_model_or_for_an_unseen_sensor_set():
    no_model = Gate(PROFILE).decide(features(), Policy("dynamic"), None)
    assert no_model.fallback == "no gate model loaded"
    assert no_model.chosen == ("lidar_radar",)  # the strongest branch by the prior
    unseen = Gate(PROFILE, model(QUALITY)).decide(features(radar=False), Policy("dynamic"), None)
    assert "camera+lidar not seen in training" in unseen.fallback
    assert unseen.chosen == ("camera_lidar",)


def test_oracle_needs_and_uses_the_true_quality():
    gate = Gate(PROFILE, model(QUALITY))
    with pytest.raises(ValueError, match="ground truth"):
        gate.decide(features(), Policy("oracle"), None)
    truth = np.zeros(len(SELECTIONS))
    truth[SELECTIONS.index(("radar",))] = 0.9
    assert gate.decide(features(), Policy("oracle"), None, truth).chosen == ("radar",)


def test_gate_model_round_trip_and_damage(tmp_path):
    original = model(QUALITY, camera_gain=2.0)
    path = original.save(tmp_path / "gate.json")
    loaded = GateModel.load(path)
    x = features(brightness=0.3).values
    np.testing.assert_allclose(loaded.predict(x)[0], original.predict(x)[0])
    assert loaded.seen_sensor_sets == original.seen_sensor_sets
    path.with_suffix(".safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(GateModelError, match="corrupt gate weights"):
        GateModel.load(path)
    with pytest.raises(GateModelError, match="gate model not found"):
        GateModel.load(tmp_path / "absent.json")
    path.write_text(path.read_text().replace("camera_brightness", "camera_mood"))
    with pytest.raises(GateModelError, match="other context features"):
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
        assert np.isfinite(list(decision.branch_utility.values())).all()
        assert np.isfinite(list(decision.context_scores.values())).all()


def test_gate_model_keeps_its_score_calibration(tmp_path):
    from dynfusion_ros.core.calibration import ScoreCalibration

    original = model(QUALITY)
    original.calibration = ScoreCalibration(
        tuple(BRANCHES), np.array([-1.0, -2.0, -3.0]), np.arange(54.0).reshape(3, 18) / 50
    )
    loaded = GateModel.load(original.save(tmp_path / "gate.json"))
    assert loaded.calibration.fingerprint == original.calibration.fingerprint
    assert loaded.calibration.branch_names == tuple(BRANCHES)
