"""Frame assembly for the nodes: sensor messages in, one frame per reference stamp out.

A frame is keyed by the stamp of a *reference* sensor message (the first sensor of
``reference_order`` that is alive, so a dead camera hands the frame clock to the lidar
rather than stopping it). Every other sensor contributes its newest message stamped in
``[stamp - max_age, stamp + tolerance]``; IMU samples stamped since the previous frame
ride along. A frame waits until every sensor has caught up with its stamp, at most
``timeout_s`` of clock time after its reference message arrived, then goes on with what
it has: a late sensor never stalls the output, and one silent for ``silent_after_s`` is
not waited for at all (nor does it key frames) until it speaks again.

Plain Python, no rclpy: the node passes each message with its header stamp and the
node clock's ``now`` (ROS time, so ``use_sim_time`` replays work), and calls ``poll``
from a timer. What it passes with each stamp is opaque here and comes back in frames.

What the sync refuses, and counts per sensor by kind (the figures go to ``on_refusal``):
- a stamp equal to the sensor's newest (duplicate) or older (out of order), however far
  behind: one stale message is dropped, it never resets anything;
- a stamp further than ``max_delay_s`` behind the node clock, or ``max_future_s`` ahead.

A stamp ahead of the clock by less than ``max_future_s`` but more than the sensor's
tolerance is held until the clock reaches it. Taken at once, one mis-stamped message
would make all of its sensor's messages out of order until their stamps passed it; held,
it costs at most those the sensor has in flight when the clock gets there (its latency),
and a sim clock that lags its messages a little under load costs latency, never data.
Once released, a held message is like any other (a reference sensor's keys a frame).

Time jumps back only when the node clock does (a looping bag, a restarted simulator):
by more than ``jump_back_s``, everything buffered is forgotten, ``on_time_jump`` hears
why, and frames start again from the new time.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from dynfusion_ros.core.types import NS_PER_S, Modality

FRAME_SENSORS = (Modality.CAMERA, Modality.LIDAR, Modality.RADAR)
RATE_WINDOW = 20  # arrivals kept per sensor for the rate estimate
PERIOD_WINDOW = 5  # stamp gaps kept per sensor for its period
BUFFER_LENGTH = 512  # messages kept per sensor while no frame takes them (2.5 s of 200 Hz IMU)
NEXT_SHARE = 0.9  # a sensor's next message is expected no sooner than this share of its period
DROP_KINDS_KEPT = 24  # distinct drop reasons counted per sensor; later ones count as OTHER

# what the sync refuses: the keys of the per-sensor drop counts on /diagnostics
DUPLICATE = "duplicate stamp"
OUT_OF_ORDER = "out of order (stamp behind the sensor's newest)"
AHEAD = "stamp too far ahead of the clock"
STALE = "stamp too far behind the clock"
HOLD_FULL = "held for the clock, and too many held"
OTHER = "other reasons"


def _per_sensor(camera: float, lidar: float, radar: float) -> dict[Modality, float]:
    return {Modality.CAMERA: camera, Modality.LIDAR: lidar, Modality.RADAR: radar}


@dataclass(frozen=True)
class SyncSettings:
    """How frames are assembled. Times in seconds."""

    reference_order: tuple[Modality, ...] = FRAME_SENSORS
    # a reference stamp closer than half a period to the last frame keys none
    frame_period_s: float = 0.1
    tolerance_s: dict[Modality, float] = field(
        default_factory=lambda: _per_sensor(0.03, 0.03, 0.03)
    )
    max_age_s: dict[Modality, float] = field(default_factory=lambda: _per_sensor(0.12, 0.12, 0.1))
    timeout_s: float = 0.15  # how long a frame waits for its other sensors
    silent_after_s: float = 0.3  # a sensor not heard this long is silent: not waited for
    jump_back_s: float = 1.0
    max_future_s: float = 0.5
    max_delay_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.reference_order or Modality.IMU in self.reference_order:
            raise ValueError("reference_order needs camera, lidar or radar (not imu)")
        for name in ("frame_period_s", "timeout_s", "silent_after_s", "jump_back_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass
class SensorHealth:
    """What one sensor's stream looked like, for /diagnostics."""

    received: int = 0
    used: int = 0  # messages that went into a frame
    missing_frames: int = 0  # frames that went on without this sensor
    dropped: Counter[str] = field(default_factory=Counter)  # reason -> count
    last_stamp_ns: int | None = None
    gaps: deque[int] = field(default_factory=lambda: deque(maxlen=PERIOD_WINDOW))  # stamps

    @property
    def period_ns(self) -> int | None:
        """The shortest of its last stamp gaps: one message lost on the way doubles a
        gap, and a period taken from it would make the sync stop waiting for the next
        message one period too soon (the frame then goes without the sensor)."""
        return min(self.gaps) if self.gaps else None

    last_arrival_ns: int | None = None
    arrivals: deque[int] = field(default_factory=lambda: deque(maxlen=RATE_WINDOW))

    def rate_hz(self) -> float:
        if len(self.arrivals) < 2 or self.arrivals[-1] <= self.arrivals[0]:
            return 0.0
        return (len(self.arrivals) - 1) * NS_PER_S / (self.arrivals[-1] - self.arrivals[0])

    def silent_s(self, now_ns: int) -> float:
        """Clock time since the last message; infinite when none came."""
        if self.last_arrival_ns is None:
            return float("inf")
        return (now_ns - self.last_arrival_ns) / NS_PER_S


@dataclass
class SyncedFrame:
    """The messages of one frame, as they were handed to ``add``."""

    stamp_ns: int
    reference: Modality
    messages: dict[Modality, tuple[int, object]]  # sensor -> (header stamp, message)
    imu: list[tuple[int, object]]
    missing: tuple[Modality, ...]  # frame sensors that had nothing in their window
    waited_s: float  # clock time between the reference message and the frame going out


@dataclass
class _Pending:
    stamp_ns: int
    reference: Modality
    message: object
    arrived_ns: int


class FrameSync:
    """Assembles frames; ``on_time_jump`` hears why state was reset (the clock went
    back), ``on_refusal(sensor, kind, detail)`` what was wrong with each message refused."""

    def __init__(
        self,
        settings: SyncSettings | None = None,
        on_time_jump: Callable[[str], None] | None = None,
        on_refusal: Callable[[Modality, str, str], None] | None = None,
    ) -> None:
        self.settings = settings or SyncSettings()
        self.on_time_jump = on_time_jump or (lambda _: None)
        self.on_refusal = on_refusal or (lambda modality, kind, detail: None)
        self.health = {m: SensorHealth() for m in (*FRAME_SENSORS, Modality.IMU)}
        self.frames_out = 0
        self.time_jumps = 0
        self._started_ns: int | None = None
        self._clock_ns: int | None = None  # the latest node clock reading seen
        self._arrivals = itertools.count()  # orders held messages of equal stamps
        self._forget()

    def _forget(self) -> None:
        self._buffers: dict[Modality, deque[tuple[int, object]]] = {
            m: deque(maxlen=BUFFER_LENGTH) for m in self.health
        }
        self._pending: deque[_Pending] = deque()
        self._held: list[tuple[int, int, Modality, object]] = []  # ahead of the clock
        self._last_frame_ns: int | None = None
        for health in self.health.values():
            health.last_stamp_ns = None
            health.gaps.clear()

    def reset(self) -> None:
        """Forget buffered messages and stamps (the counters stay)."""
        self._forget()

    def held(self) -> int:
        """Messages held until the clock reaches their stamp."""
        return len(self._held)

    def silent(self, modality: Modality, now_ns: int) -> bool:
        """Not heard for ``silent_after_s``; a sensor never heard counts from the first
        message of any sensor, so start-up does not run frames without it."""
        health, limit = self.health[modality], self.settings.silent_after_s
        if health.last_arrival_ns is None and self._started_ns is not None:
            return (now_ns - self._started_ns) / NS_PER_S > limit
        return health.silent_s(now_ns) > limit

    def reference(self, now_ns: int) -> Modality | None:
        """The sensor that keys frames now: the first of ``reference_order`` not silent."""
        for modality in self.settings.reference_order:
            if not self.silent(modality, now_ns):
                return modality
        return None

    def drop(self, modality: Modality, reason: str) -> None:
        """Count a received message as refused, by the kind of reason (a bounded set of
        keys: beyond ``DROP_KINDS_KEPT`` kinds, OTHER)."""
        dropped = self.health[modality].dropped
        if reason not in dropped and len(dropped) >= DROP_KINDS_KEPT - 1:
            reason = OTHER
        dropped[reason] += 1

    def refuse(self, modality: Modality, reason: str) -> None:
        """A message refused before it reached ``add`` (malformed, unusable yet)."""
        self.health[modality].received += 1
        self.drop(modality, reason)

    def add(
        self, modality: Modality, stamp_ns: int, message: object, now_ns: int
    ) -> list[SyncedFrame]:
        """Take one message; returns the frames it completed, oldest first."""
        self.health[modality].received += 1
        if self._started_ns is None:
            self._started_ns = now_ns
        refusal = self._clock_refusal(stamp_ns, now_ns)
        if refusal:
            self._refuse(modality, *refusal)
        elif now_ns > 0 and stamp_ns - now_ns > self._tolerance_ns(modality):
            if len(self._held) < BUFFER_LENGTH:
                heapq.heappush(self._held, (stamp_ns, next(self._arrivals), modality, message))
            else:
                self._refuse(modality, HOLD_FULL, f"{BUFFER_LENGTH} messages already held")
        else:
            self._take(modality, stamp_ns, message, now_ns)
        return self._due(now_ns)

    def _tolerance_ns(self, modality: Modality) -> float:
        tolerance = self.settings.tolerance_s
        return tolerance.get(modality, max(tolerance.values())) * NS_PER_S

    def _take(self, modality: Modality, stamp_ns: int, message: object, now_ns: int) -> None:
        health = self.health[modality]
        refusal = self._order_refusal(modality, stamp_ns)
        if refusal:
            self._refuse(modality, *refusal)
            return
        if health.last_stamp_ns is not None:
            health.gaps.append(stamp_ns - health.last_stamp_ns)
        health.last_stamp_ns = stamp_ns
        health.last_arrival_ns = now_ns
        health.arrivals.append(now_ns)
        self._buffers[modality].append((stamp_ns, message))
        if modality is self.reference(now_ns) and self._keys_frame(stamp_ns):
            self._pending.append(_Pending(stamp_ns, modality, message, now_ns))
            self._last_frame_ns = stamp_ns

    def _refuse(self, modality: Modality, kind: str, detail: str) -> None:
        self.drop(modality, kind)
        self.on_refusal(modality, kind, f"{kind}: {detail}")

    def watch_clock(self, now_ns: int) -> None:
        """Reset when the node clock went back by more than ``jump_back_s``. ``poll``
        reads the clock; a node also calls this before ``add``, whose ``now_ns`` is the
        message's arrival (a message held for its calibration arrived a while ago)."""
        latest = self._clock_ns
        self._clock_ns = now_ns if latest is None else max(latest, now_ns)
        if latest is None or now_ns >= latest - self.settings.jump_back_s * NS_PER_S:
            return
        self.time_jumps += 1
        self._clock_ns = now_ns
        self._forget()
        self.on_time_jump(
            f"the clock jumped back {(latest - now_ns) / NS_PER_S:.2f} s (a looping bag, a"
            " restarted simulator?): buffered messages forgotten"
        )

    def _clock_refusal(self, stamp_ns: int, now_ns: int) -> tuple[str, str] | None:
        if now_ns <= 0:  # a sim clock reads 0 until the first /clock message
            return None
        ahead = (stamp_ns - now_ns) / NS_PER_S
        if ahead > self.settings.max_future_s:
            return AHEAD, f"{ahead:.2f} s (max_stamp_lead_s {self.settings.max_future_s:g})"
        if -ahead > self.settings.max_delay_s:
            return STALE, f"{-ahead:.2f} s (max_stamp_delay_s {self.settings.max_delay_s:g})"
        return None

    def _order_refusal(self, modality: Modality, stamp_ns: int) -> tuple[str, str] | None:
        last = self.health[modality].last_stamp_ns
        if last is None or stamp_ns > last:
            return None
        if stamp_ns == last:
            return DUPLICATE, f"{stamp_ns} ns again"
        return OUT_OF_ORDER, f"{(last - stamp_ns) / NS_PER_S:.3f} s behind"

    def _keys_frame(self, stamp_ns: int) -> bool:
        if self._last_frame_ns is None:
            return True
        return stamp_ns - self._last_frame_ns >= self.settings.frame_period_s * NS_PER_S / 2

    def poll(self, now_ns: int) -> list[SyncedFrame]:
        """Frames that are complete or whose wait is over, oldest first (``now_ns``: the
        node clock now)."""
        self.watch_clock(now_ns)
        return self._due(now_ns)

    def _due(self, now_ns: int) -> list[SyncedFrame]:
        while self._held and self._held[0][0] - now_ns <= self._tolerance_ns(self._held[0][2]):
            stamp_ns, _, modality, message = heapq.heappop(self._held)
            self._take(modality, stamp_ns, message, now_ns)
        frames = []
        timeout_ns = self.settings.timeout_s * NS_PER_S
        while self._pending:
            pending = self._pending[0]
            timed_out = now_ns - pending.arrived_ns >= timeout_ns
            if not (timed_out or self._complete(pending, now_ns)):
                break
            self._pending.popleft()
            frames.append(self._assemble(pending, now_ns))
        return frames

    def _window(self, modality: Modality, stamp_ns: int) -> tuple[int, object] | None:
        settings = self.settings
        low = stamp_ns - settings.max_age_s[modality] * NS_PER_S
        high = stamp_ns + settings.tolerance_s[modality] * NS_PER_S
        inside = [item for item in self._buffers[modality] if low <= item[0] <= high]
        return inside[-1] if inside else None

    def _complete(self, pending: _Pending, now_ns: int) -> bool:
        """Every sensor still speaking has caught up with the frame: delivered a message
        stamped at or after the frame stamp, or one so recent that its next (a period
        later) falls after the frame's window. Its newest message in the window is then
        the one a frame built at its timeout would take too: a lidar sweep stamped with
        the image but sent a sweep later is waited for, not replaced by the sweep before
        it, 0.1 s staler. The period is the shortest recent gap (``SensorHealth``)."""
        window_end = pending.stamp_ns + max(self.settings.tolerance_s.values()) * NS_PER_S
        for modality in (*FRAME_SENSORS, Modality.IMU):
            if modality is pending.reference or self.silent(modality, now_ns):
                continue
            health = self.health[modality]
            last = health.last_stamp_ns
            if last is None:
                if modality is Modality.IMU:
                    continue
                return False
            if last >= pending.stamp_ns:
                continue
            if health.period_ns is None or last + NEXT_SHARE * health.period_ns <= window_end:
                return False
        return True

    def _assemble(self, pending: _Pending, now_ns: int) -> SyncedFrame:
        stamp = pending.stamp_ns
        messages, missing = {}, []
        for modality in FRAME_SENSORS:
            if modality is pending.reference:
                picked = (stamp, pending.message)
            else:
                picked = self._window(modality, stamp)
            if picked is None:
                missing.append(modality)
                self.health[modality].missing_frames += 1
            else:
                messages[modality] = picked
                self.health[modality].used += 1
        imu_buffer = self._buffers[Modality.IMU]
        imu = []
        while imu_buffer and imu_buffer[0][0] <= stamp:
            imu.append(imu_buffer.popleft())
        self.health[Modality.IMU].used += len(imu)
        self._prune(stamp)
        self.frames_out += 1
        waited = (now_ns - pending.arrived_ns) / NS_PER_S
        return SyncedFrame(stamp, pending.reference, messages, imu, tuple(missing), waited)

    def _prune(self, stamp_ns: int) -> None:
        """Forget what no later frame can use: older than its window would reach."""
        for modality in FRAME_SENSORS:
            oldest = stamp_ns - self.settings.max_age_s[modality] * NS_PER_S
            buffer = self._buffers[modality]
            while buffer and buffer[0][0] < oldest:
                buffer.popleft()
