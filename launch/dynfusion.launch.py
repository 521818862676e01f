"""Bring up dynfusion_ros on a robot: the context estimator and the fusion node.

ros2 launch dynfusion_ros dynfusion.launch.py [params_file:=FILE] [namespace:=NS]
    [energy_budget_j:=0.065] [use_sim_time:=true]

energy_budget_j and use_sim_time override the parameters file only when given; left out,
the file's values (or the nodes' defaults) hold.
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from dynfusion_ros.ros.launch_args import NOT_GIVEN, OVERRIDES, given_overrides

PACKAGE = "dynfusion_ros"


def _nodes(context) -> list[Node]:
    given = given_overrides(
        {name: LaunchConfiguration(name).perform(context) for name in OVERRIDES}
    )
    parameters = [LaunchConfiguration("params_file").perform(context)]
    return [
        Node(
            package=PACKAGE,
            executable=executable,
            name=executable,
            namespace=LaunchConfiguration("namespace"),
            parameters=[*parameters, given] if given else parameters,
            output="screen",
        )
        for executable in ("context_estimator", "fusion")
    ]


def generate_launch_description() -> LaunchDescription:
    share = Path(get_package_share_directory(PACKAGE))
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "params_file",
                default_value=str(share / "config" / "dynfusion.yaml"),
                description="ROS 2 parameters file for both nodes",
            ),
            DeclareLaunchArgument(
                "namespace",
                default_value="",
                description="namespace of both nodes and their topics (not /tf, /diagnostics)",
            ),
            DeclareLaunchArgument(
                "energy_budget_j",
                default_value=NOT_GIVEN,
                description="energy budget per frame (J) over the file's; ros2 param set later",
            ),
            DeclareLaunchArgument(
                "use_sim_time",
                default_value=NOT_GIVEN,
                description="true: take time from /clock (bag replay); over the file's",
            ),
            OpaqueFunction(function=_nodes),
        ]
    )
