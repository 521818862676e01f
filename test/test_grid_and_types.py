import math

import numpy as np
import pytest

from dynfusion_ros.core.grid import BevGrid
from dynfusion_ros.core.types import (
    Box3D,
    CameraModel,
    Detection,
    EnergyRecord,
    ImuSample,
    Modality,
    ObjectClass,
    OdometryEstimate,
    PointScan,
    Selection,
    SensorFrame,
)


def test_default_grid_is_128_by_128_over_51_metres():
    grid = BevGrid()
    assert grid.shape == (128, 128)
    assert grid.cell_centres()[0, 0].tolist() == pytest.approx([0.2, -25.4])


def test_cell_indices_follow_x_forward_y_left():
    grid = BevGrid()
    cells, inside = grid.cell_indices(np.array([[0.1, -25.5], [51.1, 25.5], [10.0, 0.0]]))
    assert cells.tolist() == [[0, 0], [127, 127], [25, 64]]
    assert inside.all()


def test_points_outside_grid_are_masked():
    grid = BevGrid()
    points = np.array([[-0.01, 0.0], [51.2, 0.0], [10.0, 25.6], [10.0, -25.61], [5.0, 5.0]])
    assert grid.contains(points).tolist() == [False, False, False, False, True]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"resolution": 0.0}, "resolution must be positive"),
        ({"x_min": 10.0, "x_max": 5.0}, "increasing"),
        ({"resolution": 0.3}, "whole number"),
    ],
)
def test_invalid_grids_are_rejected(values, message):
    with pytest.raises(ValueError, match=message):
        BevGrid(**values)


def test_grid_from_mapping_names_unknown_keys():
    assert BevGrid.from_mapping({"resolution": 0.8}).shape == (64, 64)
    with pytest.raises(ValueError, match="resolutoin"):
        BevGrid.from_mapping({"resolutoin": 0.8})
    assert BevGrid.from_mapping(BevGrid().to_mapping()) == BevGrid()


def test_camera_projection_of_point_on_optical_axis_hits_principal_point():
    model = CameraModel(width=640, height=384, K=[[400, 0, 320], [0, 400, 192], [0, 0, 1]])
    uv, inside = model.project(np.array([[0.0, 0.0, 10.0], [1.0, 0.0, 10.0], [0.0, 0.0, -5.0]]))
    assert uv[0].tolist() == pytest.approx([320, 192])
    assert uv[1].tolist() == pytest.approx([360, 192])
    assert inside.tolist() == [True, True, False]


def test_camera_model_rejects_zero_focal_length():
    with pytest.raises(ValueError, match="focal"):
        CameraModel(width=10, height=10, K=np.zeros((3, 3)))


def test_frame_availability_and_staleness():
    scan = PointScan(stamp_ns=900_000_000, xyz=np.zeros((4, 3), np.float32))
    imu = ImuSample(
        stamp_ns=950_000_000, angular_velocity=[0, 0, 0], linear_acceleration=[0, 0, 9.8]
    )
    frame = SensorFrame(
        stamp_ns=1_000_000_000,
        lidar=scan,
        imu=(imu,),
        sensor_stamps_ns={Modality.LIDAR: 900_000_000},
    )
    assert frame.availability == {
        Modality.CAMERA: False,
        Modality.LIDAR: True,
        Modality.RADAR: False,
        Modality.IMU: True,
    }
    assert frame.staleness_s(Modality.LIDAR) == pytest.approx(0.1)
    assert math.isnan(frame.staleness_s(Modality.CAMERA))


def test_point_scan_rejects_mismatched_fields_and_transforms_to_base():
    with pytest.raises(ValueError, match="intensity"):
        PointScan(stamp_ns=0, xyz=np.zeros((3, 3), np.float32), fields={"intensity": np.zeros(2)})
    transform = np.eye(4)
    transform[:3, 3] = [1.0, 0.0, 2.0]
    scan = PointScan(stamp_ns=0, xyz=np.ones((2, 3), np.float32), T_base_sensor=transform)
    assert scan.in_base().tolist() == [[2.0, 1.0, 3.0]] * 2


def test_detection_and_box_validation():
    box = Box3D(10, 0, 0.8, 4.5, 1.9, 1.6, 0.3)
    assert box.as_array()[3] == 4.5
    with pytest.raises(ValueError, match="positive"):
        Box3D(0, 0, 0, -1, 1, 1, 0)
    with pytest.raises(ValueError, match="finite"):
        Box3D(float("nan"), 0, 0, 1, 1, 1, 0)
    with pytest.raises(ValueError, match="score"):
        Detection(ObjectClass.CAR, 1.5, box)


def test_odometry_estimate_normalises_and_rejects_zero_quaternion():
    estimate = OdometryEstimate(stamp_ns=0, position=[0, 0, 0], orientation=[0, 0, 0, 2])
    assert estimate.orientation.tolist() == [0, 0, 0, 1]
    with pytest.raises(ValueError, match="quaternion"):
        OdometryEstimate(stamp_ns=0, position=[0, 0, 0], orientation=[0, 0, 0, 0])


def test_selection_and_energy_record_derived_values():
    selection = Selection(
        stamp_ns=0,
        policy="dynamic",
        branch_names=("camera", "lidar"),
        chosen=(False, True),
        predicted_utility=(0.2, 0.7),
        selection_utility=0.7,
        predicted_energy_j=1.0,
        budget_j=2.0,
    )
    assert selection.chosen_branches == ("lidar",)
    with pytest.raises(ValueError, match="branch_names"):
        Selection(0, "all", ("camera",), (True, True), (0.1,), 0.1, 1.0, 2.0)
    record = EnergyRecord(0, {"stem/lidar": 1.5, "head/lidar": 0.7}, {"lidar": 2.2}, 2.0, "model")
    assert record.total_energy_j == pytest.approx(2.2)
    assert record.over_budget
