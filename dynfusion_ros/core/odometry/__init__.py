"""Selective odometry: an IMU-driven error-state filter, corrected by whichever of the
radar-doppler, lidar and visual corrections the frame's selection chose, and by the
ground-vehicle constraint, which costs nothing."""
