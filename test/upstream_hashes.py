"""Type hashes of the upstream vision_msgs 4.1.1 messages (ros-perception/vision_msgs).

Our interfaces/vision_msgs must reproduce them exactly to interoperate with real ROS
installs and their bags.
"""

UPSTREAM_HASHES = {
    "vision_msgs/msg/Detection3DArray": (
        "RIHS01_793f5eab9595ac1c0da07873cc859db42eae51f0ee76056db8562515d830e018"
    ),
    "vision_msgs/msg/LabelInfo": (
        "RIHS01_3d37df4015cdf660cc851c51897f2acd957e1ca6205ba0a99aebffb9406b0783"
    ),
}
