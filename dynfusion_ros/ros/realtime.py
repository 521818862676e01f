"""What a long-running node process does once it has started, to keep its latency tail
short."""

from __future__ import annotations

import ctypes
import gc
import os


def freeze_start_up_objects() -> None:
    """Collect once, then move every object alive now out of the collector's reach.

    A process with rclpy, torch and the models loaded holds about 190,000 objects that
    live as long as it does. Python's full collection walks all of them, holding the GIL
    for 118 ms on a 2-core EPYC: every thread of the process (the executors, the fusion
    worker, a recorder's callback) stops meanwhile, and the frames in flight came out
    more than a frame period late. After ``gc.freeze`` a full collection walks only what
    was allocated since (well under a millisecond). Nothing is leaked: frozen objects
    are the ones that were going to live until exit anyway."""
    gc.collect()
    gc.freeze()


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's malloc.h
ARENAS = 2
KEPT_BLOCK_BYTES = 32 * 1024 * 1024  # glibc's largest mmap threshold on 64-bit


def limit_allocator_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas, before the node's threads start; False where the C
    library is not glibc (nothing to do there).

    glibc gives each thread that meets a locked arena one of its own, up to 8 per core,
    and an arena's freed pages are rarely returned. A node's threads (executor, DDS,
    the fusion worker, torch's pool) each grew their own: in a soak of the demo drive
    looped 10 times at 1x (2-core EPYC) the estimator's RSS kept rising by 1.0 MB/min
    after the first loop and the fusion node's by 0.6; with 2 arenas, 0.58 and 0.40.
    The environment's MALLOC_ARENA_MAX, if set, wins."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


def keep_freed_memory() -> bool:
    """Let glibc keep freed blocks for reuse instead of handing them back to the kernel;
    False where the C library is not glibc, or the environment already tunes it.

    Every frame the detector allocates and frees the same feature maps (0.1-3 MB each).
    By default glibc serves blocks that large with a fresh mmap and unmaps them on free,
    so each frame faults its maps' pages in again: on a 2-core EPYC at one thread that
    was a third of the camera stem's CPU time (6.7 ms of image convolutions, 4.2 ms
    without) and of the head's, which is energy the budget pays for. Below 32 MB blocks
    now come from the heap and freed ones stay there (the working set is a few
    allocations deep, so the process keeps its peak, not a growing amount). What
    real-time ROS 2 guides do with mlockall and ``M_MMAP_MAX = 0``, without pinning."""
    if any(os.environ.get(f"MALLOC_{name}_") for name in ("MMAP_THRESHOLD", "TRIM_THRESHOLD")):
        return False
    try:
        libc = ctypes.CDLL(None)
        mmap = libc.mallopt(M_MMAP_THRESHOLD, KEPT_BLOCK_BYTES)
        return bool(mmap and libc.mallopt(M_TRIM_THRESHOLD, 2 * KEPT_BLOCK_BYTES))
    except (OSError, AttributeError):
        return False
