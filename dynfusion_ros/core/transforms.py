"""The robot's transform tree: where each sensor sits on base_link, through any chain.

A URDF or a driver's description publishes mounts as chains (base_link ->
velodyne_base_link -> velodyne; camera_link -> camera_color_frame -> optical frame), some
on /tf_static and some on /tf. ``TransformTree`` keeps every edge it is given (child ->
parent, the latest of each) and composes the path between two frames through their
common ancestor, as tf2 does for a static lookup. Frame names are normalised (a leading
"/" from ROS 1 descriptions is dropped), and a failed lookup says which link is missing,
so a diagnostic can name it.

The time of a /tf edge is not interpolated: sensor mounts do not move between frames on
the robots this package serves, and a moving one (a pan-tilt head) takes its newest pose.
Edges are only ever added or replaced, so a wrong edge is corrected by publishing again.
"""

from __future__ import annotations

import numpy as np

MAX_DEPTH = 64  # a deeper chain is a loop in the description


class TransformError(LookupError):
    """No transform between two frames; ``str`` names the missing link."""


def normalise(frame_id: str) -> str:
    """tf2's name for a frame: no leading slash."""
    return frame_id.lstrip("/")


class TransformTree:
    def __init__(self) -> None:
        self._parent: dict[str, tuple[str, np.ndarray]] = {}  # child -> (parent, T_parent_child)
        self.version = 0  # bumped on every change, so users can cache lookups

    def __len__(self) -> int:
        return len(self._parent)

    def add(self, parent: str, child: str, T_parent_child: np.ndarray) -> None:
        """One edge; a later one for the same child replaces it (a re-published mount)."""
        parent, child = normalise(parent), normalise(child)
        if not parent or not child:
            raise ValueError("a transform needs a parent and a child frame name")
        if parent == child:
            raise ValueError(f"a transform from {child!r} to itself")
        matrix = np.asarray(T_parent_child, dtype=np.float64)
        known = self._parent.get(child)
        if known is not None and known[0] == parent and np.array_equal(known[1], matrix):
            return  # the same mount again (/tf repeats static ones at its rate)
        self._parent[child] = (parent, matrix)
        self.version += 1

    def frames(self) -> set[str]:
        return set(self._parent) | {parent for parent, _ in self._parent.values()}

    def _to_root(self, frame: str) -> tuple[list[str], np.ndarray]:
        """The frames from ``frame`` up to its root, and T_root_frame."""
        chain, matrix = [frame], np.eye(4)
        while chain[-1] in self._parent:
            if len(chain) > MAX_DEPTH:
                raise TransformError(f"the tf tree loops through {chain[-1]!r}")
            parent, edge = self._parent[chain[-1]]
            matrix = edge @ matrix
            chain.append(parent)
        return chain, matrix

    def lookup(self, target: str, source: str) -> np.ndarray:
        """T_target_source (4x4): a point in ``source`` to ``target``. TransformError when
        they are not connected, naming the frame where each chain stops."""
        target, source = normalise(target), normalise(source)
        if target == source:
            return np.eye(4)
        source_chain, T_root_source = self._to_root(source)
        target_chain, T_root_target = self._to_root(target)
        if source_chain[-1] == target_chain[-1]:
            return np.linalg.inv(T_root_target) @ T_root_source
        if source not in self.frames():
            raise TransformError(f"frame {source!r} is in no transform received")
        if target not in self.frames():
            raise TransformError(
                f"no transform names {target!r}; {source!r} connects up to {source_chain[-1]!r}"
            )
        raise TransformError(
            f"{source!r} connects up to {source_chain[-1]!r} and {target!r} up to "
            f"{target_chain[-1]!r}: no transform links {source_chain[-1]!r} to the tree"
        )
