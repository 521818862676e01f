"""Energy profile and meters; the sysfs meters read fake sysfs trees."""

from __future__ import annotations

import time

import pytest

from dynfusion_ros.core.energy import (
    EnergyProfile,
    EnergyProfileError,
    JetsonMeter,
    ModelMeter,
    NvmlMeter,
    RaplMeter,
    make_meter,
)

STEMS = {"camera": 0.10, "lidar": 0.05, "radar": 0.01}
HEADS = {
    "camera": 0.02,
    "lidar": 0.02,
    "radar": 0.01,
    "camera_lidar": 0.03,
    "camera_radar": 0.03,
    "lidar_radar": 0.03,
}


def profile(**changes) -> EnergyProfile:
    tables = {"stems_j": STEMS, "heads_j": HEADS, "overhead_j": {"gate": 0.001}} | changes
    return EnergyProfile(**tables)


def test_selection_energy_counts_a_shared_stem_once():
    energy = profile().selection_energy_j(["camera", "camera_lidar"])
    assert energy == pytest.approx(0.10 + 0.05 + 0.02 + 0.03 + 0.001)


def test_branch_energy_splits_shared_stems_and_adds_up():
    p = profile()
    shares = p.branch_energy_j(["camera", "camera_lidar"])
    assert shares["camera"] == pytest.approx(0.05 + 0.02)
    assert shares["camera_lidar"] == pytest.approx(0.05 + 0.05 + 0.03)
    components = p.components_j(["camera", "lidar"], ["camera", "camera_lidar"])
    assert sum(shares.values()) + components["overhead"] == pytest.approx(sum(components.values()))


def test_profile_round_trip(tmp_path):
    path = tmp_path / "energy.yaml"
    p = profile(measured={"meter": "model", "machine": "test"})
    p.save(path)
    loaded = EnergyProfile.load(path)
    assert dict(loaded.stems_j) == STEMS and dict(loaded.heads_j) == HEADS
    assert loaded.measured["meter"] == "model" and loaded.source == str(path)


def test_profile_missing_a_stem_names_it_and_the_branch(tmp_path):
    path = tmp_path / "energy.yaml"
    profile(stems_j={"camera": 0.1, "radar": 0.01}).save(path)
    with pytest.raises(EnergyProfileError, match="stem 'lidar', which branch 'lidar' needs"):
        EnergyProfile.load(path)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("format_version: 1\nstems_j: {camera: -1}\n", "non-negative"),
        ("format_version: 7\n", "format_version 7"),
        ("[1, 2]\n", "expected a mapping"),
        ("format_version: 1\nstems_j: {camera: [1\n", "cannot read"),
    ],
)
def test_bad_profiles_are_clear_errors(tmp_path, text, problem):
    path = tmp_path / "energy.yaml"
    path.write_text(text)
    with pytest.raises(EnergyProfileError, match=problem):
        EnergyProfile.load(path)
    with pytest.raises(EnergyProfileError, match="not found"):
        EnergyProfile.load(tmp_path / "absent.yaml")


def test_model_meter_charges_cpu_time():
    meter = ModelMeter(watts=20.0)
    sample = meter.sample()
    start = time.process_time()
    while time.process_time() - start < 0.05:
        pass
    assert meter.joules_since(sample) == pytest.approx(20.0 * 0.05, rel=0.5)
    with pytest.raises(ValueError, match="positive"):
        ModelMeter(watts=0)


def _write(path, text) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_rapl_meter_sums_packages_and_handles_wraparound(tmp_path):
    root = tmp_path / "powercap"
    for package, energy in (("intel-rapl:0", 1_000_000), ("intel-rapl:1", 999_000_000)):
        _write(root / package / "energy_uj", str(energy))
        _write(root / package / "max_energy_range_uj", "1000000000")
    _write(root / "intel-rapl:0:0" / "energy_uj", "5")  # a core sub-zone: not summed
    meter = RaplMeter(root)
    assert meter.unavailable_reason() is None
    sample = meter.sample()
    _write(root / "intel-rapl:0" / "energy_uj", "3500000")  # +2.5 J
    _write(root / "intel-rapl:1" / "energy_uj", "1000000")  # wrapped: +2 J
    assert meter.joules_since(sample) == pytest.approx(4.5)


def test_rapl_meter_says_why_it_is_unavailable(tmp_path):
    assert "no intel-rapl" in RaplMeter(tmp_path).unavailable_reason()
    (tmp_path / "intel-rapl:0").mkdir()
    assert "cannot read" in RaplMeter(tmp_path).unavailable_reason()


def test_jetson_meter_reads_hwmon_and_iio_rails(tmp_path):
    drivers = tmp_path / "bus" / "i2c" / "drivers"
    hwmon = drivers / "ina3221" / "1-0040" / "hwmon" / "hwmon3"
    _write(hwmon / "in1_input", "5000")  # mV
    _write(hwmon / "curr1_input", "1000")  # mA -> 5 W
    _write(hwmon / "in2_input", "5000")
    _write(hwmon / "curr2_input", "400")  # 2 W
    _write(hwmon / "in7_input", "5000")  # a voltage with no current channel: ignored
    iio = drivers / "ina3221x" / "0-0041" / "iio:device0"
    _write(iio / "in_power0_input", "3000")  # mW -> 3 W
    meter = JetsonMeter(tmp_path)
    assert meter.unavailable_reason() is None
    assert meter.power_w() == pytest.approx(10.0)
    two_seconds_ago = (time.monotonic() - 2.0, 10.0)
    assert meter.joules_since(two_seconds_ago) == pytest.approx(20.0, rel=0.05)
    assert "no INA3221" in JetsonMeter(tmp_path / "empty").unavailable_reason()


def test_meter_choice():
    assert make_meter("model", watts=5.0).watts == 5.0
    if RaplMeter().unavailable_reason() is not None:
        with pytest.raises(ValueError, match="'rapl' is not available here"):
            make_meter("rapl")
    assert make_meter("auto").unavailable_reason() is None
    with pytest.raises(ValueError, match="unknown energy meter 'joulemeter'"):
        make_meter("joulemeter")
    nvml = NvmlMeter()
    assert (
        nvml.unavailable_reason() is None
        or "pynvml" in nvml.unavailable_reason()
        or ("NVML" in nvml.unavailable_reason())
    )
