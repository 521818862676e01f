"""What the launch files hand the nodes: the parameters file, and over it only the
overrides the user gave (`ros2 launch ... energy_budget_j:=0.3`).

A launch argument always has a value, so one passed as an override dict after the
parameters file would always win: a budget set in the user's file could never take
effect. The launch arguments therefore default to "" (not given), and only those given
are passed on, typed as the nodes declare them (``1`` for a budget in joules is 1.0).
Plain Python, so that it is tested where launch_ros is not installed.
"""

from __future__ import annotations

from collections.abc import Mapping

import yaml

from dynfusion_ros.ros.gate_params import GATE_PARAMS
from dynfusion_ros.ros.sensor_params import typed

OVERRIDES = ("energy_budget_j", "use_sim_time")  # the launch files' own arguments
NOT_GIVEN = ""


def given_overrides(arguments: Mapping[str, str]) -> dict[str, object]:
    """The launch arguments given (not ""), as parameter values; ValueError naming one
    of the wrong type."""
    declared = {param.name: param for param in GATE_PARAMS}
    given: dict[str, object] = {}
    for name, text in arguments.items():
        if text == NOT_GIVEN:
            continue
        value = yaml.safe_load(text)
        if name == "use_sim_time":
            if not isinstance(value, bool):
                raise ValueError(f"use_sim_time: expected true or false, got {text!r}")
        elif name in declared:
            value = typed(declared[name], value)
        given[name] = value
    return given
