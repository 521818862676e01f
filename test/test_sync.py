"""Frame sync: keys, windows, timeouts, dead sensors, bad stamps, time jumps."""

from __future__ import annotations

import itertools

import pytest

from dynfusion_ros.core.types import NS_PER_S, Modality
from dynfusion_ros.ros.sync import (
    AHEAD,
    DROP_KINDS_KEPT,
    DUPLICATE,
    OUT_OF_ORDER,
    STALE,
    FrameSync,
    SyncSettings,
)

CAMERA, LIDAR, RADAR, IMU = Modality.CAMERA, Modality.LIDAR, Modality.RADAR, Modality.IMU
MS = NS_PER_S // 1000
T0 = 100 * NS_PER_S  # the clock is well past zero, as a real one is


def drive(seconds: float, *, dead: frozenset[Modality] = frozenset(), lidar_late_ms: int = 0):
    """(arrival, sensor, stamp) of a rig like the simulator's, in arrival order: camera at
    the frame time, +10 ms; lidar stamped at its sweep start 50 ms earlier, arriving
    105 ms after that; radar at 20 Hz, +20 ms; IMU at 200 Hz, +2 ms."""
    events = []
    for k in range(round(seconds * 10)):
        t = T0 + k * 100 * MS
        events.append((t + 10 * MS, CAMERA, t))
        events.append((t + 55 * MS + lidar_late_ms * MS, LIDAR, t - 50 * MS))
        events += [(t + r * MS + 20 * MS, RADAR, t + r * MS) for r in (0, 50)]
        events += [(t + i * 5 * MS + 2 * MS, IMU, t + i * 5 * MS) for i in range(20)]
    return sorted(e for e in events if e[1] not in dead)


def run(sync: FrameSync, events, poll_every_ms: int = 10):
    """Feed the events, polling on a timer as a node does; frames with their emit time."""
    out, next_poll = [], events[0][0]
    for arrival, sensor, stamp in events:
        while next_poll < arrival:
            out += [(next_poll, f) for f in sync.poll(next_poll)]
            next_poll += poll_every_ms * MS
        sync.watch_clock(arrival)  # as a node reads its clock before each message
        out += [(arrival, f) for f in sync.add(sensor, stamp, f"{sensor.value}@{stamp}", arrival)]
    end = events[-1][0] + NS_PER_S
    while next_poll < end:
        out += [(next_poll, f) for f in sync.poll(next_poll)]
        next_poll += poll_every_ms * MS
    return out


def test_every_sensor_on_time_gives_one_full_frame_per_camera_stamp():
    frames = run(FrameSync(), drive(2.0))
    assert [f.stamp_ns for _, f in frames] == [T0 + k * 100 * MS for k in range(20)]
    for emitted, frame in frames[1:]:
        assert frame.missing == ()
        assert frame.reference is CAMERA
        assert frame.messages[LIDAR][0] == frame.stamp_ns - 50 * MS
        assert frame.messages[RADAR][0] == frame.stamp_ns
        # IMU samples since the previous frame, up to and including the frame stamp
        since_previous = [frame.stamp_ns - 95 * MS + i * 5 * MS for i in range(20)]
        assert [s for s, _ in frame.imu] == since_previous
        # out as soon as the lidar sweep arrives, not at the timeout
        assert emitted - frame.stamp_ns == 55 * MS


def test_a_late_sensor_delays_a_frame_at_most_the_timeout():
    sync = FrameSync(SyncSettings(timeout_s=0.1))
    frames = run(sync, drive(1.0, lidar_late_ms=200))
    for emitted, frame in frames:
        assert emitted - (frame.stamp_ns + 10 * MS) <= 110 * MS  # arrival + timeout + one poll
        assert LIDAR in frame.missing or frame.messages[LIDAR][0] >= frame.stamp_ns - 120 * MS
    assert sync.health[LIDAR].missing_frames > 0


def test_sweeps_lost_on_the_way_cost_their_frames_the_lidar_and_no_more():
    # the gap of 300 ms after two lost sweeps is not the lidar's period: frame 800 still
    # waits for the sweep stamped 750 (taken as the period, it would go out without it)
    lost = {T0 + 450 * MS, T0 + 550 * MS}
    events = [e for e in drive(1.5) if not (e[1] is LIDAR and e[2] in lost)]
    frames = run(FrameSync(), events)
    without = [f.stamp_ns for _, f in frames if LIDAR in f.missing]
    assert without == [T0 + 500 * MS, T0 + 600 * MS]
    assert len(frames) == 15


def test_a_dead_sensor_is_not_waited_for_and_is_reported_missing():
    sync = FrameSync()
    frames = run(sync, drive(2.0, dead=frozenset({LIDAR})))
    assert len(frames) == 20
    assert all(f.missing == (LIDAR,) for _, f in frames)
    # waited for (arrival + timeout + one poll) until it has been silent for silent_after_s,
    # then not at all: frames go out with the radar
    assert all(emitted - f.stamp_ns <= 170 * MS for emitted, f in frames)
    assert all(emitted - f.stamp_ns <= 30 * MS for emitted, f in frames[4:])
    assert sync.health[LIDAR].missing_frames == 20
    assert sync.health[LIDAR].rate_hz() == 0.0
    assert sync.health[CAMERA].rate_hz() == pytest.approx(10.0, rel=0.01)


def test_a_dead_reference_hands_the_frame_clock_to_the_next_sensor():
    events = drive(3.0)
    cutoff = T0 + 1 * NS_PER_S
    events = [e for e in events if not (e[1] is CAMERA and e[2] >= cutoff)]
    sync = FrameSync()
    frames = [f for _, f in run(sync, events)]
    after = [f for f in frames if f.stamp_ns > cutoff]
    assert after and all(f.reference is LIDAR and CAMERA in f.missing for f in after)
    gaps = [b.stamp_ns - a.stamp_ns for a, b in itertools.pairwise(frames)]
    assert max(gaps) <= 500 * MS  # the hand-over takes about silent_after_s
    assert min(gaps) >= 50 * MS  # no frame twice


def test_duplicate_and_out_of_order_stamps_are_dropped_and_counted():
    events = drive(1.0)
    extra = [
        (events[30][0] + 1, CAMERA, T0 + 200 * MS),  # duplicate of a camera stamp
        (events[60][0] + 1, RADAR, T0 + 100 * MS),  # older than radar's newest
    ]
    refused = []
    sync = FrameSync(on_refusal=lambda sensor, kind, detail: refused.append((sensor, detail)))
    frames = run(sync, sorted(events + extra))
    assert len(frames) == 10
    assert sync.health[CAMERA].dropped == {DUPLICATE: 1}
    assert sync.health[RADAR].dropped == {OUT_OF_ORDER: 1}
    assert (RADAR, f"{OUT_OF_ORDER}: 0.100 s behind") in refused  # the figures go here


def test_stamps_far_from_the_clock_are_dropped_by_kind_with_the_figures_beside():
    refused = []
    sync = FrameSync(on_refusal=lambda sensor, kind, detail: refused.append(detail))
    assert sync.add(CAMERA, T0 + 3 * NS_PER_S, "future", T0) == []
    assert sync.add(LIDAR, T0 - 60 * NS_PER_S, "stale", T0) == []
    assert sync.health[CAMERA].dropped == {AHEAD: 1}
    assert sync.health[LIDAR].dropped == {STALE: 1}
    assert "3.00 s" in refused[0] and "60.00 s" in refused[1]
    # a sim clock before its first /clock message reads zero: stamps are not judged
    unclocked = FrameSync()
    unclocked.add(CAMERA, T0, "x", 0)
    assert not unclocked.health[CAMERA].dropped


def test_a_thousand_distinct_bad_stamps_keep_the_diagnostics_keys_few():
    sync = FrameSync()
    for k in range(1000):
        sync.add(IMU, T0 - (6 * NS_PER_S + k * MS), "stale", T0)  # each "k.kkk s behind"
        sync.add(IMU, T0 + (NS_PER_S + k * MS), "future", T0)
    for k in range(100):
        sync.drop(IMU, f"made-up reason {k}")  # a caller's own reasons are bounded too
    dropped = sync.health[IMU].dropped
    assert len(dropped) <= DROP_KINDS_KEPT and sum(dropped.values()) == 2100
    assert dropped[STALE] == dropped[AHEAD] == 1000


def test_one_stale_message_is_dropped_and_resets_nothing():
    """A sample 2 s behind its sensor's newest (inside max_delay_s) is out of order, not a
    time jump: the clock did not go back."""
    events = drive(2.0)
    stale = (events[300][0] + 1, IMU, events[300][2] - 2 * NS_PER_S + 7 * MS)
    jumps = []
    sync = FrameSync(on_time_jump=jumps.append)
    frames = run(sync, sorted([*events, stale]))
    assert not jumps and sync.time_jumps == 0
    assert sync.health[IMU].dropped == {OUT_OF_ORDER: 1}
    assert [f.stamp_ns for _, f in frames] == [T0 + k * 100 * MS for k in range(20)]


def test_a_message_ahead_of_the_clock_is_held_and_costs_the_others_nothing():
    """A lidar sweep stamped 0.4 s ahead (its clock off): taken at once, it would make
    the next four sweeps out of order; held until the clock is there, only the one sweep
    then in flight (stamped 105 ms before it arrives) is."""
    events = drive(2.0)
    ahead = (events[100][0] + 1, LIDAR, T0 + 820 * MS)  # the clock reads T0 + 0.417 s
    sync = FrameSync()
    frames = run(sync, sorted([*events, ahead]))
    stamps = [f.stamp_ns for _, f in frames]
    assert stamps == [T0 + k * 100 * MS for k in range(20)]  # in order, none lost
    assert sync.health[LIDAR].dropped == {OUT_OF_ORDER: 1}
    assert sync.health[LIDAR].missing_frames == 0


def test_a_backwards_time_jump_of_the_clock_resets_and_frames_start_again():
    first = drive(2.0)
    again = drive(2.0)  # the same stamps and the same clock again: a looping bag
    warnings = []
    sync = FrameSync(on_time_jump=warnings.append)
    frames = run(sync, first)
    frames += run(sync, again)
    assert sync.time_jumps == 1 and "the clock jumped back" in warnings[0]
    stamps = [f.stamp_ns for _, f in frames]
    assert stamps == [T0 + k * 100 * MS for k in range(20)] * 2
    assert not any(sync.health[m].dropped for m in sync.health)


def test_stamps_that_restart_while_the_clock_goes_on_are_out_of_order_not_a_jump():
    first = drive(2.0)
    again = drive(2.0)
    shift = first[-1][0] + 50 * MS - again[0][0]
    sync = FrameSync()
    run(sync, first)
    run(sync, [(a + shift, s, t) for a, s, t in again])  # stamps 2 s behind the clock
    assert sync.time_jumps == 0
    assert sync.health[CAMERA].dropped == {OUT_OF_ORDER: 19, DUPLICATE: 1}  # the last: equal


def test_settings_are_checked():
    with pytest.raises(ValueError, match="timeout_s"):
        SyncSettings(timeout_s=0)
    with pytest.raises(ValueError, match="reference_order"):
        SyncSettings(reference_order=(IMU,))


def test_a_frame_dropped_while_the_worker_is_busy_hands_on_its_imu_samples():
    from dynfusion_ros.core.types import SensorFrame
    from dynfusion_ros.ros.work_queue import FrameQueue

    queue = FrameQueue(2)
    frames = [SensorFrame(stamp_ns=k, imu=(f"imu{k}a", f"imu{k}b")) for k in range(4)]
    for frame in frames:
        queue.put(frame, None)
    assert queue.dropped == 2 and len(queue) == 2
    first, _ = queue.take()
    assert first.stamp_ns == 2  # the newest two are kept
    assert first.imu == ("imu0a", "imu0b", "imu1a", "imu1b", "imu2a", "imu2b")
    assert queue.take()[0].imu == ("imu3a", "imu3b")
    queue.close()
    assert queue.take() is None  # the worker stops
