"""Launch files: every executable and file they name is installed; they generate a launch
description where launch_ros is importable (a full ROS install; not on PyPI)."""

from __future__ import annotations

import ast
import importlib.util
from importlib import metadata
from pathlib import Path

import pytest

from dynfusion_ros.resources import package_share

LAUNCH_FILES = sorted((Path(__file__).parents[1] / "launch").glob("*.launch.py"))


def _keyword_strings(path: Path, keyword: str) -> set[str]:
    """Every string constant passed as ``keyword=`` or iterated into it in ``path``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.keyword) and node.arg == keyword:
            if isinstance(node.value, ast.Constant):
                found.add(node.value.value)
            elif isinstance(node.value, ast.Name):  # executable=executable in a generator
                found |= _loop_values(path, node.value.id)
    return found


def _loop_values(path: Path, name: str) -> set[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.comprehension) and getattr(node.target, "id", "") == name:
            return {e.value for e in node.iter.elts}
    return set()


def _share_paths(path: Path) -> set[str]:
    """Relative paths built as share / "a" / "b" in ``path``."""
    paths = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            parts, current = [], node
            while isinstance(current, ast.BinOp) and isinstance(current.right, ast.Constant):
                parts.insert(0, current.right.value)
                current = current.left
            if isinstance(current, ast.Name) and current.id == "share":
                paths.add("/".join(parts))
    return {p for p in paths if not any(p != q and q.startswith(p) for q in paths)}


def test_launch_files_name_only_installed_executables_and_files():
    assert {p.name for p in LAUNCH_FILES} == {"dynfusion.launch.py", "replay.launch.py"}
    scripts = {
        e.name
        for e in metadata.entry_points(group="console_scripts")
        if e.dist.name == "dynfusion_ros"
    }
    share = package_share("dynfusion_ros")
    executables, files = set(), set()
    for path in LAUNCH_FILES:
        executables |= _keyword_strings(path, "executable")
        files |= _share_paths(path)
    assert executables == {"context_estimator", "fusion"}
    assert executables <= scripts
    assert files == {"config/dynfusion.yaml", "launch/dynfusion.launch.py"}
    for relative in files:
        assert (share / relative).is_file(), relative


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_generates_a_description(path):
    pytest.importorskip("launch_ros", reason="launch_ros is not on PyPI: full ROS installs only")
    from launch import LaunchDescription

    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert isinstance(description, LaunchDescription)
    arguments = {a.name for a in description.get_launch_arguments()}
    assert {"params_file", "energy_budget_j", "use_sim_time"} <= arguments


def test_launch_overrides_pass_on_only_what_the_user_gave_typed_as_declared():
    """A launch argument always has a value: passed whole after the parameters file, it
    would hide the file's energy_budget_j and use_sim_time for good."""
    from dynfusion_ros.ros.launch_args import NOT_GIVEN, OVERRIDES, given_overrides

    assert given_overrides(dict.fromkeys(OVERRIDES, NOT_GIVEN)) == {}
    assert given_overrides({"energy_budget_j": "1", "use_sim_time": NOT_GIVEN}) == {
        "energy_budget_j": 1.0  # a double, as declared: an int would not start the node
    }
    assert given_overrides({"use_sim_time": "true"}) == {"use_sim_time": True}
    with pytest.raises(ValueError, match="use_sim_time: expected true or false"):
        given_overrides({"use_sim_time": "yes please"})
    with pytest.raises(ValueError, match="energy_budget_j: expected float"):
        given_overrides({"energy_budget_j": "lots"})
    for path in LAUNCH_FILES:  # and the launch files leave the budget out unless given
        assert _argument_defaults(path)["energy_budget_j"] in ("", "NOT_GIVEN"), path


def _argument_defaults(path: Path) -> dict[str, str]:
    """Each DeclareLaunchArgument's default: the string, or the name of the constant."""
    defaults = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DeclareLaunchArgument":
            default = {k.arg: k.value for k in node.keywords}.get("default_value")
            defaults[node.args[0].value] = getattr(default, "value", getattr(default, "id", None))
    return defaults
