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


M_ARENA_MAX = -8  # glibc's malloc.h
ARENAS = 2


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
