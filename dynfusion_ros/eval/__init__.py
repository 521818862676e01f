"""Offline evaluation: metrics, reports and plots."""
