"""Energy: what each stem, head and overhead costs per frame, and the meters that measure it.

The gate plans with the *profile* (``config/energy_profile.yaml``), joules per frame of
every component measured once on the target by ``dynfusion profile``; planning needs a
price before anything runs. A *meter* measures what a frame really spent, reported
beside the planned figure. Meters say whether they can work here and why not:

- ``model``: process CPU time x a configured power per busy core. Always available; the
  default where no power sensor is readable.
- ``rapl``: Intel RAPL package counters under ``/sys/class/powercap`` (whole package).
- ``nvml``: NVIDIA GPU energy counter through ``pynvml``, when importable.
- ``jetson``: INA3221 power rails of a Jetson board, from sysfs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dynfusion_ros.core.branches.registry import BRANCHES, branch, stems_for

PROFILE_FORMAT = 1
DEFAULT_MODEL_WATTS = 10.0


class EnergyProfileError(ValueError):
    """A profile that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class EnergyProfile:
    """Joules per frame of every component, and where they were measured."""

    stems_j: Mapping[str, float]
    heads_j: Mapping[str, float]
    # a head's price includes decoding and its share of late fusion
    overhead_j: Mapping[str, float] = field(default_factory=dict)  # context, gate
    odometry_j: Mapping[str, float] = field(default_factory=dict)
    measured: Mapping[str, object] = field(default_factory=dict)  # machine, meter, date...
    source: str = "<memory>"

    def __post_init__(self) -> None:
        for table in ("stems_j", "heads_j", "overhead_j", "odometry_j"):
            for name, joules in getattr(self, table).items():
                if not (isinstance(joules, int | float) and math.isfinite(joules) and joules >= 0):
                    raise EnergyProfileError(
                        f"{self.source}: {table}.{name} must be a non-negative number of "
                        f"joules, got {joules!r}"
                    )

    def check_covers(self, branch_names: Iterable[str]) -> None:
        """Every stem and head these branches need must have a price."""
        for name in branch_names:
            for stem in branch(name).stem_names:
                if stem not in self.stems_j:
                    raise EnergyProfileError(
                        f"{self.source}: no energy for stem {stem!r}, which branch {name!r} "
                        "needs; run `dynfusion profile` to measure it"
                    )
            if name not in self.heads_j:
                raise EnergyProfileError(
                    f"{self.source}: no energy for head {name!r}; run `dynfusion profile`"
                )

    @property
    def overhead_total_j(self) -> float:
        return float(sum(self.overhead_j.values()))

    def selection_energy_j(self, branch_names: Iterable[str]) -> float:
        """Union of the stems plus every head, plus the per-frame overhead."""
        names = list(branch_names)
        stems = sum(self.stems_j[stem.value] for stem in stems_for(names))
        return float(stems + sum(self.heads_j[name] for name in names) + self.overhead_total_j)

    def odometry_energy_j(self, corrections: Iterable[str]) -> float:
        """The odometry corrections' price; one without a measured price is an error
        naming it (the budget cannot hold what it cannot price)."""
        total = 0.0
        for name in corrections:
            if name not in self.odometry_j:
                raise EnergyProfileError(
                    f"{self.source}: no energy for odometry correction {name!r}; run "
                    "`dynfusion profile` to measure it"
                )
            total += float(self.odometry_j[name])
        return total

    def components_j(
        self, stems: Iterable[str], heads: Iterable[str], corrections: Iterable[str] = ()
    ) -> dict[str, float]:
        """Per component that ran, its price: ``stem/<name>``, ``head/<name>``,
        ``odometry/<name>``, ``overhead``."""
        parts = {f"stem/{s}": float(self.stems_j[s]) for s in stems}
        parts.update({f"head/{h}": float(self.heads_j[h]) for h in heads})
        parts.update({f"odometry/{c}": self.odometry_energy_j([c]) for c in corrections})
        parts["overhead"] = self.overhead_total_j
        return parts

    def branch_energy_j(self, heads: Iterable[str]) -> dict[str, float]:
        """Each branch's head plus an equal share of every stem it reads."""
        heads = list(heads)
        readers: dict[str, int] = {}
        for name in heads:
            for stem in branch(name).stem_names:
                readers[stem] = readers.get(stem, 0) + 1
        return {
            name: float(
                self.heads_j[name]
                + sum(self.stems_j[s] / readers[s] for s in branch(name).stem_names)
            )
            for name in heads
        }

    def to_mapping(self) -> dict:
        return {
            "format_version": PROFILE_FORMAT,
            "measured": dict(self.measured),
            "stems_j": {k: float(v) for k, v in self.stems_j.items()},
            "heads_j": {k: float(v) for k, v in self.heads_j.items()},
            "overhead_j": {k: float(v) for k, v in self.overhead_j.items()},
            "odometry_j": {k: float(v) for k, v in self.odometry_j.items()},
        }

    def save(self, path: Path) -> None:
        header = (
            "# dynfusion_ros energy profile: joules per frame of each component, measured by\n"
            "# `dynfusion profile` on the machine and with the meter named under `measured`.\n"
        )
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(header + yaml.safe_dump(self.to_mapping(), sort_keys=False))

    @classmethod
    def load(cls, path: Path) -> EnergyProfile:
        path = Path(path)
        try:
            document = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise EnergyProfileError(f"{path}: energy profile not found") from None
        except (OSError, yaml.YAMLError) as error:
            raise EnergyProfileError(f"{path}: cannot read the energy profile: {error}") from None
        if not isinstance(document, dict):
            raise EnergyProfileError(f"{path}: expected a mapping, got {type(document).__name__}")
        if document.get("format_version") != PROFILE_FORMAT:
            raise EnergyProfileError(
                f"{path}: format_version {document.get('format_version')!r}, "
                f"this version reads {PROFILE_FORMAT}"
            )
        tables = {}
        for key in ("stems_j", "heads_j", "overhead_j", "odometry_j"):
            table = document.get(key) or {}
            if not isinstance(table, dict):
                raise EnergyProfileError(f"{path}: {key} must be a mapping of name: joules")
            tables[key] = table
        profile = cls(**tables, measured=document.get("measured") or {}, source=str(path))
        profile.check_covers(BRANCHES)
        return profile


class EnergyMeter:
    """Measures energy between two moments. ``sample()`` then ``joules_since(sample)``."""

    name = "meter"

    def unavailable_reason(self) -> str | None:
        """None when the meter works on this machine, else why not."""
        return None

    def sample(self) -> object:
        raise NotImplementedError

    def joules_since(self, sample: object) -> float:
        raise NotImplementedError


class ModelMeter(EnergyMeter):
    """CPU time of this process (every thread) x ``watts`` per fully busy core."""

    name = "model"

    def __init__(self, watts: float = DEFAULT_MODEL_WATTS) -> None:
        if not (math.isfinite(watts) and watts > 0):
            raise ValueError(f"model meter watts must be a positive number, got {watts}")
        self.watts = watts

    def sample(self) -> float:
        return time.process_time()

    def joules_since(self, sample: float) -> float:
        return (time.process_time() - sample) * self.watts


class RaplMeter(EnergyMeter):
    """Sum of the package-level RAPL energy counters (microjoules, wrapping)."""

    name = "rapl"

    def __init__(self, root: Path = Path("/sys/class/powercap")) -> None:
        self.zones = sorted(p for p in Path(root).glob("intel-rapl:*") if p.name.count(":") == 1)

    def unavailable_reason(self) -> str | None:
        if not self.zones:
            return "no intel-rapl package zones under /sys/class/powercap"
        try:
            self.sample()
        except (OSError, ValueError) as error:
            return f"cannot read RAPL energy counters: {error}"
        return None

    def sample(self) -> list[int]:
        return [int((zone / "energy_uj").read_text()) for zone in self.zones]

    def joules_since(self, sample: list[int]) -> float:
        total = 0
        for zone, before, now in zip(self.zones, sample, self.sample(), strict=True):
            delta = now - before
            if delta < 0:  # the counter wrapped
                delta += int((zone / "max_energy_range_uj").read_text())
            total += delta
        return total / 1e6


class NvmlMeter(EnergyMeter):
    """Total energy counter of one NVIDIA GPU (millijoules), through pynvml."""

    name = "nvml"

    def __init__(self, index: int = 0) -> None:
        self.index, self.handle, self.problem = index, None, None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._read = pynvml.nvmlDeviceGetTotalEnergyConsumption
            self._read(self.handle)
        except ImportError:
            self.problem = "pynvml is not installed"
        except Exception as error:  # pynvml raises NVMLError subclasses for every cause
            self.problem = f"NVML cannot read GPU {index}: {error}"

    def unavailable_reason(self) -> str | None:
        return self.problem

    def sample(self) -> int:
        return int(self._read(self.handle))

    def joules_since(self, sample: int) -> float:
        return (self.sample() - sample) / 1e3


class JetsonMeter(EnergyMeter):
    """Power of the INA3221 rails on a Jetson, integrated over time (W x s).

    Reads the hwmon interface (``in<N>_input`` mV and ``curr<N>_input`` mA) or, on older
    kernels, the iio one (``in_power<N>_input`` mW). Two readings bracket the interval,
    so the figure is the interval times their mean power.
    """

    name = "jetson"

    def __init__(self, root: Path = Path("/sys")) -> None:
        drivers = Path(root) / "bus" / "i2c" / "drivers"
        self.hwmon = sorted(drivers.glob("ina3221*/*/hwmon/hwmon*"))
        self.iio = sorted(drivers.glob("ina3221*/*/iio:device*"))

    def unavailable_reason(self) -> str | None:
        if not self.hwmon and not self.iio:
            return "no INA3221 power monitor under /sys/bus/i2c/drivers"
        try:
            self.power_w()
        except (OSError, ValueError) as error:
            return f"cannot read the INA3221 rails: {error}"
        return None

    def power_w(self) -> float:
        watts = 0.0
        for device in self.hwmon:
            for volts in device.glob("in*_input"):
                channel = volts.name[2:].split("_")[0]
                current = device / f"curr{channel}_input"
                if current.exists():
                    watts += float(volts.read_text()) * float(current.read_text()) / 1e6
        for device in self.iio:
            watts += sum(float(p.read_text()) / 1e3 for p in device.glob("in_power*_input"))
        return watts

    def sample(self) -> tuple[float, float]:
        return time.monotonic(), self.power_w()

    def joules_since(self, sample: tuple[float, float]) -> float:
        start, power = sample
        now, power_now = self.sample()
        return (now - start) * (power + power_now) / 2


METERS = ("model", "rapl", "nvml", "jetson")


def make_meter(name: str, *, watts: float = DEFAULT_MODEL_WATTS) -> EnergyMeter:
    """The named meter, or for ``auto`` the first that works of nvml, rapl, jetson, model.
    A named meter that cannot work here is a ValueError saying why."""
    builders = {"model": lambda: ModelMeter(watts), "rapl": RaplMeter, "nvml": NvmlMeter}
    builders["jetson"] = JetsonMeter
    if name == "auto":
        for candidate in ("nvml", "rapl", "jetson"):
            meter = builders[candidate]()
            if meter.unavailable_reason() is None:
                return meter
        return ModelMeter(watts)
    if name not in builders:
        raise ValueError(f"unknown energy meter {name!r}; choose from auto, {', '.join(METERS)}")
    meter = builders[name]()
    reason = meter.unavailable_reason()
    if reason is not None:
        raise ValueError(f"energy meter {name!r} is not available here: {reason}")
    return meter
