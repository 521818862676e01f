"""vision_msgs/Detection3DArray and LabelInfo to and from core detections.

Each Detection3D carries one hypothesis: ``class_id`` is the class's integer id as a
string (the vision_msgs convention, resolved to a name through LabelInfo), ``score`` its
confidence, and the box is upright (yaw only) in the array's frame (base_link). Readers
also accept class names ("car") so bags from other detectors can be scored; the
highest-scoring hypothesis wins. vision_msgs has no velocity field: a detection's
velocity is not carried.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from vision_msgs.msg import (
    Detection3D,
    Detection3DArray,
    LabelInfo,
    ObjectHypothesisWithPose,
    VisionClass,
)

from dynfusion_ros.core.rotations import quaternion_yaw
from dynfusion_ros.core.types import Box3D, Detection, ObjectClass
from dynfusion_ros.ros.convert.errors import ConversionError, core_errors_as
from dynfusion_ros.ros.convert.geometry import finite_xyz, finite_xyzw
from dynfusion_ros.ros.convert.stamps import header_msg


def _object_class(class_id: str, field: str) -> ObjectClass:
    text = class_id.strip()
    try:
        return ObjectClass(int(text)) if text.lstrip("-").isdigit() else ObjectClass[text.upper()]
    except (KeyError, ValueError):
        known = ", ".join(f"{c.value}={c.label}" for c in ObjectClass)
        raise ConversionError(field, f"unknown class {class_id!r} (known: {known})") from None


def _detection(msg, index: int) -> Detection:
    field = f"detections[{index}]"
    if not msg.results:
        raise ConversionError(f"{field}.results", "empty: no class hypothesis")
    best = max(msg.results, key=lambda result: result.hypothesis.score)
    centre = finite_xyz(msg.bbox.center.position, f"{field}.bbox.center.position")
    size = finite_xyz(msg.bbox.size, f"{field}.bbox.size")
    yaw = quaternion_yaw(
        finite_xyzw(msg.bbox.center.orientation, f"{field}.bbox.center.orientation")
    )
    with core_errors_as(field):
        return Detection(
            object_class=_object_class(best.hypothesis.class_id, f"{field}.results.class_id"),
            score=float(best.hypothesis.score),
            box=Box3D(*centre, *size, yaw),
        )


def detection_array_to_detections(msg) -> list[Detection]:
    """All detections of the array; a malformed one raises, naming its index."""
    return [_detection(detection, index) for index, detection in enumerate(msg.detections)]


def detections_to_array(
    detections: Iterable[Detection], stamp_ns: int, frame_id: str = "base_link"
) -> Detection3DArray:
    """Fills the default sub-messages in place: building each Pose, Quaternion and box
    anew made this a third of the branches' own time for a hundred detections."""
    header = header_msg(stamp_ns, frame_id)
    messages = []
    for detection in detections:
        box = detection.box
        message = Detection3D(header=header)
        centre = message.bbox.center
        position, orientation, size = centre.position, centre.orientation, message.bbox.size
        position.x, position.y, position.z = float(box.x), float(box.y), float(box.z)
        orientation.z, orientation.w = math.sin(box.yaw / 2.0), math.cos(box.yaw / 2.0)
        size.x, size.y, size.z = float(box.length), float(box.width), float(box.height)
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = str(int(detection.object_class))
        hypothesis.hypothesis.score = float(detection.score)
        hypothesis.pose.pose = centre
        message.results.append(hypothesis)
        messages.append(message)
    return Detection3DArray(header=header, detections=messages)


def label_info(
    classes: Sequence[ObjectClass], threshold: float, stamp_ns: int, frame_id: str = "base_link"
) -> LabelInfo:
    """The LabelInfo that maps our class ids to names, for /dynfusion/label_info."""
    return LabelInfo(
        header=header_msg(stamp_ns, frame_id),
        class_map=[VisionClass(class_id=int(c), class_name=c.label) for c in classes],
        threshold=float(threshold),
    )


def label_info_to_names(msg) -> dict[int, str]:
    names: dict[int, str] = {}
    for index, entry in enumerate(msg.class_map):
        if entry.class_id in names:
            raise ConversionError(f"class_map[{index}]", f"class id {entry.class_id} repeated")
        names[int(entry.class_id)] = entry.class_name
    return names
