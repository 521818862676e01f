"""Bring up dynfusion_ros on a robot: the context estimator and the fusion node.

ros2 launch dynfusion_ros dynfusion.launch.py [params_file:=FILE]
    [energy_budget_j:=0.35] [use_sim_time:=false]
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "dynfusion_ros"


def generate_launch_description() -> LaunchDescription:
    share = Path(get_package_share_directory(PACKAGE))
    params = LaunchConfiguration("params_file")
    overrides = {
        "energy_budget_j": LaunchConfiguration("energy_budget_j"),
        "use_sim_time": LaunchConfiguration("use_sim_time"),
    }
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "params_file",
                default_value=str(share / "config" / "dynfusion.yaml"),
                description="ROS 2 parameters file for both nodes",
            ),
            DeclareLaunchArgument(
                "energy_budget_j",
                default_value="0.35",
                description="energy budget per frame (J); settable later with ros2 param set",
            ),
            DeclareLaunchArgument(
                "use_sim_time",
                default_value="false",
                description="take time from /clock (bag replay)",
            ),
            *(
                Node(
                    package=PACKAGE,
                    executable=executable,
                    name=executable,
                    parameters=[params, overrides],
                    output="screen",
                )
                for executable in ("context_estimator", "fusion")
            ),
        ]
    )
