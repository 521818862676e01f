"""Which ground truth a frame is scored against: one rule for the offline reader
(``bag_frames``) and for the evaluation of what the nodes published (``eval.recording``).

Truth frames are the ground-truth stamps thinned to one per frame period (a simulated
drive also has truth at every radar stamp). The truth frame at T takes the assembled
frame nearest it stamped in [T - period/2, T + period/2) and scores it against its own
truth: the frame is the nodes' view of that instant. A frame keyed on the lidar while the
camera is dead carries the sweep's stamp, its start, half a period before the instant
the sweep covers, and a jittered camera stamp is the instant give or take its noise; so
the instant, not the stamp, picks the truth. A frame no truth frame takes (a second
frame in one period) is run but not scored; a truth frame that takes no frame is a frame
lost: ``on_missed`` hears it, and the evaluators score it with no detections, as it
would be on the road.

Streaming: frames and truth come in stamp order, a truth frame is settled once a frame
stamped past its window has come (or at the end), so a long bag never sits in memory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from dynfusion_ros.core.types import Detection

MATCH_NS = 2_000_000  # truth stamps closer than this to a period's end still start a new one
PENDING_KEPT = 200  # frames waiting for truth: past this (20 s without truth), go unscored

Item = TypeVar("Item")


class TruthFrames(Generic[Item]):
    """Feed ``add_truth`` and ``add_frame`` in stamp order; ``settled`` yields each
    frame's item with the truth it is scored against (None: not scored), in order."""

    def __init__(self, period_ns: int, on_missed: Callable[[int, list[Detection]], None]) -> None:
        self.period_ns, self.half_ns, self.on_missed = period_ns, period_ns // 2, on_missed
        self.grid: deque[tuple[int, list[Detection]]] = deque()  # truth frames to settle
        self.frames: deque[tuple[int, Item]] = deque()
        self.claimed: dict[int, list[Detection]] = {}  # frame stamp -> its truth
        self._last_grid: int | None = None

    def add_truth(self, stamp_ns: int, truth: list[Detection]) -> None:
        last = self._last_grid
        if last is None or stamp_ns >= last + self.period_ns - MATCH_NS:
            self.grid.append((stamp_ns, truth))
            self._last_grid = stamp_ns

    def add_frame(self, stamp_ns: int, item: Item) -> None:
        self.frames.append((stamp_ns, item))

    def settled(self, final: bool = False) -> Iterator[tuple[Item, list[Detection] | None]]:
        """The frames whose truth is known; ``final``: the stream ended (the bag, or a
        loop of it), settle them all."""
        while self.grid and (final or self._past(self.grid[0][0])):
            self._settle(*self.grid.popleft())
            if self.grid:
                yield from self._release(self.grid[0][0] - self.half_ns)
        if final:
            yield from self._release(None)
            self._last_grid = None  # what comes next is a new stream (a bag that loops)
        elif len(self.frames) > PENDING_KEPT:
            yield from self._release(self.frames[-PENDING_KEPT][0])

    def _past(self, grid_ns: int) -> bool:
        """A frame stamped past the window of ``grid_ns`` has come: no later one can be in it."""
        return bool(self.frames) and self.frames[-1][0] >= grid_ns + self.half_ns

    def _settle(self, grid_ns: int, truth: list[Detection]) -> None:
        low, high = grid_ns - self.half_ns, grid_ns + self.half_ns
        near = [s for s, _ in self.frames if low <= s < high and s not in self.claimed]
        if near:
            self.claimed[min(near, key=lambda stamp: abs(stamp - grid_ns))] = truth
        else:
            self.on_missed(grid_ns, truth)

    def _release(self, before_ns: int | None) -> Iterator[tuple[Item, list[Detection] | None]]:
        """Frames stamped before ``before_ns`` (None: all): no truth frame still to
        settle can take them."""
        while self.frames and (before_ns is None or self.frames[0][0] < before_ns):
            stamp, item = self.frames.popleft()
            yield item, self.claimed.pop(stamp, None)
