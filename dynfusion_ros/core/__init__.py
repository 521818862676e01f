"""Functional core: everything that computes. Never imports rclpy or message types."""
