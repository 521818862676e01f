"""What the fused detector can run: every stem at one of its compute levels, or not at all.

A *level* is one way of getting a stem's BEV features for this frame, each with its own
price in the energy profile:

- ``full``: the whole stem on the frame's input;
- ``half`` (camera): the image at half resolution, a quarter of the pixels (the survey's
  dynamic resolution);
- ``early`` (lidar): the stem's features after its first two layers, before the last
  two (an early exit);
- ``reuse``: the stem does not run; its last features are warped to now by the ego
  motion, their age an input of the fusion (temporal reuse).

An *option* is a stem at a level, named ``<stem>`` for full and ``<stem>_<level>``
otherwise (``camera_half``, ``lidar_early``, ``radar_reuse``). A *configuration* is at
most one option per stem, written with ``+`` (``camera_half+lidar+radar_reuse``); one
shared head reads whatever a configuration produced.

One configuration runs nothing at all: ``tracks``, the detector's last detections moved
to now by their tracked velocities and the ego motion (``core/tracking.py``): temporal
reuse of the whole detector's output, for the frames a tight budget skips.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dynfusion_ros.core.types import Modality

STEMS: tuple[Modality, ...] = (Modality.CAMERA, Modality.LIDAR, Modality.RADAR)
FULL, HALF, EARLY, REUSE = "full", "half", "early", "reuse"
TRACKS = "tracks"

STEM_LEVELS: Mapping[Modality, tuple[str, ...]] = {
    Modality.CAMERA: (FULL, HALF, REUSE),
    Modality.LIDAR: (FULL, EARLY, REUSE),
    Modality.RADAR: (FULL, REUSE),
}
"""The levels of each stem, richest first."""


@dataclass(frozen=True, order=True)
class Option:
    """One stem at one level."""

    stem: Modality
    level: str

    @property
    def name(self) -> str:
        return self.stem.value if self.level == FULL else f"{self.stem.value}_{self.level}"

    @property
    def runs_stem(self) -> bool:
        """Whether the stem's network runs (every level but reuse)."""
        return self.level != REUSE


OPTIONS: Mapping[str, Option] = {
    option.name: option
    for option in (Option(stem, level) for stem in STEMS for level in STEM_LEVELS[stem])
}
"""Every option by name, stem by stem, richest level first."""


CHOICE_NAMES: tuple[str, ...] = (*OPTIONS, TRACKS)
"""What a frame's selection names: every option, and ``tracks``."""


def option(name: str) -> Option:
    try:
        return OPTIONS[name]
    except KeyError:
        raise ValueError(f"unknown option {name!r}; known: {', '.join(CHOICE_NAMES)}") from None


@dataclass(frozen=True)
class Configuration:
    """At most one option per stem; a stem left out is off. ``tracks``: no stem and no
    head, the last detections predicted to now instead."""

    options: tuple[Option, ...]
    tracks: bool = False

    def __post_init__(self) -> None:
        if self.tracks and self.options:
            raise ValueError(f"{TRACKS!r} runs no stem: it cannot go with {self.text!r}")
        stems = [o.stem for o in self.options]
        if len(set(stems)) != len(stems):
            raise ValueError(f"configuration {self.text!r} gives a stem two levels")
        object.__setattr__(self, "options", tuple(sorted(self.options, key=_option_order)))

    @classmethod
    def of(cls, names: Iterable[str]) -> Configuration:
        names = [name.strip() for name in names]
        if TRACKS in names:
            if len(names) > 1:
                others = "+".join(n for n in names if n != TRACKS)
                raise ValueError(f"{TRACKS!r} runs no stem: it cannot go with {others!r}")
            return TRACKS_CONFIGURATION
        return cls(tuple(option(name) for name in names))

    @classmethod
    def parse(cls, text: str) -> Configuration:
        """``camera_half+lidar`` and the like; ValueError naming what is wrong."""
        names = [name for name in text.split("+") if name.strip()]
        if not names:
            raise ValueError(f"configuration {text!r} names no option")
        return cls.of(names)

    @property
    def text(self) -> str:
        return "+".join(self.names)

    @property
    def names(self) -> tuple[str, ...]:
        """The options' names; ``("tracks",)`` for the tracks configuration."""
        return (TRACKS,) if self.tracks else tuple(o.name for o in self.options)

    @property
    def detects(self) -> bool:
        """Whether the network runs (a stem and the head): all but ``tracks``."""
        return bool(self.options)

    def level(self, stem: Modality) -> str | None:
        """The stem's level here, None when it is off."""
        return next((o.level for o in self.options if o.stem is stem), None)

    @property
    def stems(self) -> tuple[Modality, ...]:
        return tuple(o.stem for o in self.options)

    @property
    def runs(self) -> tuple[Modality, ...]:
        """The stems whose networks run (not reused)."""
        return tuple(o.stem for o in self.options if o.runs_stem)

    def __bool__(self) -> bool:
        return bool(self.options) or self.tracks


def _option_order(value: Option) -> int:
    return list(OPTIONS.values()).index(value)


def all_configurations() -> tuple[Configuration, ...]:
    """Every configuration that runs the network, fewest stems first, then richest levels
    first; ``TRACKS_CONFIGURATION`` is not among them (see ``choices``)."""
    choices = [(None, *(Option(stem, level) for level in STEM_LEVELS[stem])) for stem in STEMS]
    found = [
        Configuration(tuple(o for o in combo if o is not None))
        for combo in itertools.product(*choices)
    ]
    found = [c for c in found if c]
    return tuple(sorted(found, key=lambda c: len(c.options)))


FULL_CONFIGURATION = Configuration(tuple(Option(stem, FULL) for stem in STEMS))
TRACKS_CONFIGURATION = Configuration((), tracks=True)


def choices() -> tuple[Configuration, ...]:
    """What a frame may run: every configuration of the network, then ``tracks``."""
    return (*all_configurations(), TRACKS_CONFIGURATION)
