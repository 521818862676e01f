"""rclpy adapters: message conversion and nodes. Thin by design; the core computes."""
