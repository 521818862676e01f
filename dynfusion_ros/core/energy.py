"""Energy: what each detector option, the head and the overhead cost per frame, and
the meters that measure it.

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

from dynfusion_ros.core.detector.levels import CHOICE_NAMES, Configuration

PROFILE_FORMAT = 2
DEFAULT_MODEL_WATTS = 10.0
HEADS = ("fused", "late_fusion")
"""``fused``: the fusion, the head, decoding and the update of the object tracks, once per
configuration run; ``late_fusion``: merging several configurations' detections (the
late-fusion baseline)."""


class EnergyProfileError(ValueError):
    """A profile that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class EnergyProfile:
    """Joules per frame of every component, and where they were measured.

    ``options_j``: each stem at each level (``levels.py``); a reuse option's price is
    the warp of the remembered map; ``tracks`` is the prediction of the object tracks
    (the configuration that runs no stem and no head). ``head_j``: see ``HEADS``.
    """

    options_j: Mapping[str, float]
    head_j: Mapping[str, float]
    overhead_j: Mapping[str, float] = field(default_factory=dict)  # context, gate, filter
    odometry_j: Mapping[str, float] = field(default_factory=dict)
    measured: Mapping[str, object] = field(default_factory=dict)  # machine, meter, date...
    source: str = "<memory>"

    def __post_init__(self) -> None:
        for table in ("options_j", "head_j", "overhead_j", "odometry_j"):
            for name, joules in getattr(self, table).items():
                if not (isinstance(joules, int | float) and math.isfinite(joules) and joules >= 0):
                    raise EnergyProfileError(
                        f"{self.source}: {table}.{name} must be a non-negative number of "
                        f"joules, got {joules!r}"
                    )

    def check_complete(self) -> None:
        """Every option and head must have a price: the gate cannot budget the unpriced."""
        for table, names in (("options_j", CHOICE_NAMES), ("head_j", HEADS)):
            missing = [name for name in names if name not in getattr(self, table)]
            if missing:
                raise EnergyProfileError(
                    f"{self.source}: no energy in {table} for {', '.join(missing)}; run "
                    "`dynfusion profile` to measure it"
                )

    @property
    def overhead_total_j(self) -> float:
        return float(sum(self.overhead_j.values()))

    def run_energy_j(self, configurations: Iterable[Configuration]) -> float:
        """What running these configurations costs on one frame, overhead included:
        every option once, the head once per configuration and, for more than one, the
        late fusion of their outputs. One configuration is the detector's normal frame."""
        return float(sum(self.components_j(configurations).values()))

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
        self, configurations: Iterable[Configuration], corrections: Iterable[str] = ()
    ) -> dict[str, float]:
        """Per component that runs, its price: ``option/<name>``, ``head/fused``,
        ``head/late_fusion``, ``odometry/<name>``, ``overhead``."""
        configurations = [c for c in configurations if c]
        names = dict.fromkeys(name for c in configurations for name in c.names)
        parts = {f"option/{name}": float(self.options_j[name]) for name in names}
        detecting = sum(c.detects for c in configurations)
        if detecting:
            parts["head/fused"] = detecting * float(self.head_j["fused"])
        if len(configurations) > 1:
            parts["head/late_fusion"] = float(self.head_j["late_fusion"])
        parts.update({f"odometry/{c}": self.odometry_energy_j([c]) for c in corrections})
        parts["overhead"] = self.overhead_total_j
        return parts

    def option_energy_j(self, configurations: Iterable[Configuration]) -> dict[str, float]:
        """Each option that runs, with an equal share of the heads: these add up to the
        frame's energy less overhead and odometry."""
        parts = self.components_j(configurations)
        options = {k.split("/", 1)[1]: v for k, v in parts.items() if k.startswith("option/")}
        heads = sum(v for k, v in parts.items() if k.startswith("head/"))
        return {name: joules + heads / len(options) for name, joules in options.items()}

    def to_mapping(self) -> dict:
        return {
            "format_version": PROFILE_FORMAT,
            "measured": dict(self.measured),
            "options_j": {k: float(v) for k, v in self.options_j.items()},
            "head_j": {k: float(v) for k, v in self.head_j.items()},
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
                f"{path}: format_version {document.get('format_version')!r}, this version "
                f"reads {PROFILE_FORMAT}; run `dynfusion profile` to measure a new one"
            )
        tables = {}
        for key in ("options_j", "head_j", "overhead_j", "odometry_j"):
            table = document.get(key) or {}
            if not isinstance(table, dict):
                raise EnergyProfileError(f"{path}: {key} must be a mapping of name: joules")
            tables[key] = table
        profile = cls(**tables, measured=document.get("measured") or {}, source=str(path))
        profile.check_complete()
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
