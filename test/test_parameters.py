"""Node parameters: checks refuse bad values with a reason; the shipped parameters file,
the README table and the declarations agree."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dynfusion_ros.core.energy import EnergyProfile
from dynfusion_ros.ros.bringup import ros_arguments
from dynfusion_ros.ros.fusion_node import FUSION_PARAMS, _profile_mismatch
from dynfusion_ros.ros.gate_params import GATE_PARAMS
from dynfusion_ros.ros.sensor_params import SENSOR_PARAMS, sync_settings

ROOT = Path(__file__).parents[1]
BOTH = {p.name: p for p in (*SENSOR_PARAMS, *GATE_PARAMS)}
FUSION = {p.name: p for p in FUSION_PARAMS}


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("energy_budget_j", -1.0, "positive number of joules"),
        ("energy_budget_j", 0.0, "positive number of joules"),
        ("policy", "oracle", "offline evaluation only"),
        ("policy", "static:sonar", "unknown option 'sonar'"),
        ("hysteresis_frames", 0, "outside"),
        ("reference_sensors", ["camera", "imu"], "needs sensors from camera, lidar, radar"),
        ("camera_topic", "", "relative or absolute topic name"),
        ("camera_topic", "~/image", "relative or absolute topic name"),
        ("camera_topic", "camera image", "must not contain characters"),
        ("camera_topic", "9camera", "token that starts with a number"),
        ("camera_topic", "camera//image", "repeated"),
        ("gate_model", "/no/such/gate.json", "no file"),
        ("odometry_corrections", "sonar", "unknown odometry policy 'sonar'"),
        ("odometry_corrections", "radar+radar", "names a correction twice"),
        ("odometry_budget_share", 1.5, "outside"),
        ("odometry_lidar_interval_s", -0.1, "outside"),
    ],
)
def test_bad_values_are_refused_with_the_reason(name, value, reason):
    assert reason in BOTH[name].refusal(value)


def test_good_values_pass():
    assert BOTH["energy_budget_j"].refusal(0.2) == ""
    assert BOTH["policy"].refusal("static:camera_half+lidar_early") == ""
    assert BOTH["odometry_corrections"].refusal("lidar+radar") == ""
    assert FUSION["fusion_method"].refusal("nms") == ""
    assert "is not one of" in FUSION["device"].refusal("tpu")


def test_a_profile_measured_otherwise_than_the_detector_runs_is_named():
    measured = {"device": "cpu", "torch_threads": 2}
    profile = EnergyProfile({}, {}, measured=measured, source="energy_profile.yaml")
    node = {"device": "cpu", "detector_threads": 1}
    said = _profile_mismatch(profile, node)
    assert "energy_profile.yaml" in said and "2 torch threads" in said
    assert "dynfusion profile --threads 1" in said
    assert _profile_mismatch(profile, {**node, "detector_threads": 2}) == ""
    assert "measured on cpu" in _profile_mismatch(profile, {**node, "device": "cuda"})
    # an old profile that does not say how it was measured is taken as it is
    assert _profile_mismatch(EnergyProfile({}, {}), node) == ""


def test_shipped_parameters_file_matches_the_declarations():
    sections = yaml.safe_load((ROOT / "config" / "dynfusion.yaml").read_text())
    shared = sections["/**"]["ros__parameters"]
    fusion = sections["/**/fusion"]["ros__parameters"]  # in any namespace
    assert shared == {name: param.default for name, param in BOTH.items()}
    assert fusion == {name: param.default for name, param in FUSION.items()}
    settings = sync_settings(shared)  # the file's values make valid sync settings
    assert settings.timeout_s == shared["frame_timeout_s"]


def test_readme_documents_every_parameter():
    readme = (ROOT / "README.md").read_text()
    for name in (*BOTH, *FUSION):
        assert f"| `{name}` |" in readme, name


def test_run_arguments_are_checked(tmp_path):
    arguments = ros_arguments(None, ["energy_budget_j:=0.3", "use_sim_time:=true"])
    text = Path(arguments[-1]).read_text()
    assert "&" not in text  # rcl refuses YAML aliases
    overrides = yaml.safe_load(text)
    for node in ("context_estimator", "fusion"):  # each node's own section: they win
        given = overrides[f"/**/{node}"]["ros__parameters"]  # in any namespace
        assert given == {"energy_budget_j": 0.3, "use_sim_time": True}
    assert ros_arguments(None, [], "car1")[-2:] == ["-r", "__ns:=/car1"]
    with pytest.raises(ValueError, match=r"--namespace: .*must not contain characters"):
        ros_arguments(None, [], "car 1")
    with pytest.raises(ValueError, match="expected NAME:=VALUE"):
        ros_arguments(None, ["energy_budget_j=0.3"])
    with pytest.raises(ValueError, match="no parameters file"):
        ros_arguments(tmp_path / "missing.yaml", [])


@pytest.mark.parametrize(
    ("override", "said"),
    [
        ("energy_budget_j:=1", "energy_budget_j: expects a floating-point number (write 0.065"),
        ("frame_period_s:=5.0", "frame_period_s: Invalid parameter value (5.0)"),
        ("policy:=sometimes", "policy: "),
    ],
)
def test_a_bad_start_up_value_is_one_line_and_exit_2(override, said):
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "dynfusion_ros.cli", "run", "-p", override],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and said in lines[0] and "Traceback" not in run.stderr, run.stderr


def test_a_malformed_parameter_request_is_refused_and_the_node_lives():
    import rclpy
    from rcl_interfaces.msg import Parameter as ParameterMsg
    from rcl_interfaces.msg import ParameterValue
    from rcl_interfaces.srv import SetParameters, SetParametersAtomically

    from dynfusion_ros.ros.parameters import declare

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("test_bad_requests", context=context)
    try:
        declare(node, [BOTH["energy_budget_j"]], lambda *_: None)
        services = {s.srv_name.rsplit("/", 1)[-1]: s for s in node.services}
        bad = ParameterMsg(name="energy_budget_j", value=ParameterValue(type=255))
        response = services["set_parameters"].callback(
            SetParameters.Request(parameters=[bad]), SetParameters.Response()
        )
        assert not response.results[0].successful
        assert "malformed request" in response.results[0].reason
        response = services["set_parameters_atomically"].callback(
            SetParametersAtomically.Request(parameters=[bad]), SetParametersAtomically.Response()
        )
        assert not response.result.successful
        for odd in (
            ParameterMsg(name="", value=ParameterValue(type=3, double_value=1.0)),  # rclpy: ok
            ParameterMsg(name="energy_budget_j", value=ParameterValue(type=3, double_value=1e308)),
        ):
            response = services["set_parameters"].callback(
                SetParameters.Request(parameters=[odd]), SetParameters.Response()
            )
            assert not response.results[0].successful, odd
        assert not node.has_parameter("")
        good = ParameterMsg(name="energy_budget_j", value=ParameterValue(type=3, double_value=0.2))
        response = services["set_parameters"].callback(
            SetParameters.Request(parameters=[good]), SetParameters.Response()
        )
        assert response.results[0].successful  # and the node still takes good ones
        assert node.get_parameter("energy_budget_j").value == 0.2
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
