"""Scenario timing: phases, ramps between them, fault windows, presets."""

import pytest

from dynfusion_ros.sim.scenario import (
    CONTEXTS,
    FAULT_KINDS,
    PRESETS,
    Fault,
    Phase,
    Scenario,
    preset,
)


def test_phases_switch_at_their_fraction_and_ramp_in():
    scenario = Scenario("t", "", (Phase(0.0, "clear"), Phase(0.5, "fog")), ramp_s=4.0)
    assert scenario.at(10.0, 40.0).label == "clear"
    start = scenario.at(20.0, 40.0)
    assert start.label == "fog" and start.conditions.fog_extinction_per_m == 0.0
    halfway = scenario.at(22.0, 40.0).conditions.fog_extinction_per_m
    assert halfway == pytest.approx(CONTEXTS["fog"].fog_extinction_per_m / 2)
    assert scenario.at(30.0, 40.0).conditions == CONTEXTS["fog"]


def test_faults_hold_only_inside_their_window():
    scenario = Scenario(
        "t", "", (Phase(0.0, "clear"),), (Fault("silent", 0.4, 0.6, {"topic": "/x"}),)
    )
    assert not scenario.at(3.9, 10.0).silent("/x")
    assert (
        scenario.at(4.0, 10.0).silent("/x")
        and scenario.at(4.0, 10.0).faults[0].label == "silent:/x"
    )
    assert not scenario.at(6.0, 10.0).silent("/x")


def test_presets_cover_every_context_and_fault():
    contexts = {p.context for s in PRESETS.values() for p in s.phases}
    faults = {f.kind for s in PRESETS.values() for f in s.faults}
    assert contexts == set(CONTEXTS)
    assert faults == set(FAULT_KINDS)
    assert any(len(s.phases) > 2 for s in PRESETS.values()), "a mixed drive"


def test_bad_definitions_are_refused():
    with pytest.raises(ValueError, match="unknown scenario"):
        preset("sunny_mars")
    with pytest.raises(ValueError, match="unknown context"):
        Phase(0.0, "hail")
    with pytest.raises(ValueError, match="unknown fault"):
        Fault("gremlins", 0.0, 1.0)
    with pytest.raises(ValueError, match="start"):
        Fault("camera_blackout", 0.6, 0.2)
