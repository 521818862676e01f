"""Frames waiting for the fusion node's branch worker: bounded, newest kept.

When frames come faster than the branches run (a slow core, a burst of frames held for
a late tf tree), the oldest waiting frame is dropped so the output stays current. Its
IMU samples are not: they go to the frame after it, because the odometry filter
integrates every sample and a hole in them would be bridged as a gap (metres of drift).
Plain Python, shared between the executor thread (``put``) and the worker (``take``).
"""

from __future__ import annotations

import threading
from collections import deque

from dynfusion_ros.core.types import Selection, SensorFrame


class FrameQueue:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.dropped = 0
        self._items: deque[tuple[SensorFrame, Selection | None]] = deque()
        self._ready = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, frame: SensorFrame, selection: Selection | None) -> None:
        with self._ready:
            if len(self._items) >= self.capacity:
                dropped, _ = self._items.popleft()
                self.dropped += 1
                after = self._items[0][0] if self._items else frame
                after.imu = dropped.imu + after.imu
            self._items.append((frame, selection))
            self._ready.notify()

    def take(self) -> tuple[SensorFrame, Selection | None] | None:
        """The oldest frame, waiting for one; None once closed."""
        with self._ready:
            while not (self._items or self._closed):
                self._ready.wait()
            return None if self._closed else self._items.popleft()

    def clear(self) -> None:
        with self._ready:
            self._items.clear()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()
