"""Replay a bag into dynfusion_ros: both nodes on the bag's clock, and `ros2 bag play`.

ros2 launch dynfusion_ros replay.launch.py bag:=PATH [rate:=1.0]
    [params_file:=FILE] [energy_budget_j:=0.065] (the budget overrides the file's when given)
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

PACKAGE = "dynfusion_ros"


def generate_launch_description() -> LaunchDescription:
    share = Path(get_package_share_directory(PACKAGE))
    return LaunchDescription(
        [
            DeclareLaunchArgument("bag", description="rosbag2 folder to replay"),
            DeclareLaunchArgument("rate", default_value="1.0", description="playback speed"),
            DeclareLaunchArgument(
                "params_file",
                default_value=str(share / "config" / "dynfusion.yaml"),
                description="ROS 2 parameters file for both nodes",
            ),
            DeclareLaunchArgument(
                "energy_budget_j",
                default_value="",
                description="energy budget (J/frame) over the parameters file's, when given",
            ),
            DeclareLaunchArgument(
                "use_sim_time", default_value="true", description="nodes run on the bag's /clock"
            ),
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(str(share / "launch" / "dynfusion.launch.py")),
                launch_arguments={
                    "params_file": LaunchConfiguration("params_file"),
                    "energy_budget_j": LaunchConfiguration("energy_budget_j"),
                    "use_sim_time": LaunchConfiguration("use_sim_time"),
                }.items(),
            ),
            ExecuteProcess(
                cmd=[
                    "ros2",
                    "bag",
                    "play",
                    LaunchConfiguration("bag"),
                    "--clock",
                    "--rate",
                    LaunchConfiguration("rate"),
                ],
                output="screen",
            ),
        ]
    )
