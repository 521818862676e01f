"""dynfusion_ros: dynamic, energy-budgeted multi-sensor fusion for ROS 2.

`dynfusion_ros.core` computes (no ROS imports); `dynfusion_ros.ros` adapts it to rclpy.
"""

__version__ = "0.1.0"
