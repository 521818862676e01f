"""Energy profile and meters; the sysfs meters read fake sysfs trees."""

from __future__ import annotations

import time

import pytest

from dynfusion_ros.core.detector.levels import Configuration
from dynfusion_ros.core.energy import (
    EnergyProfile,
    EnergyProfileError,
    JetsonMeter,
    ModelMeter,
    NvmlMeter,
    RaplMeter,
    make_meter,
)

OPTIONS_J = {
    "camera": 0.10,
    "camera_half": 0.05,
    "camera_reuse": 0.002,
    "lidar": 0.05,
    "lidar_early": 0.03,
    "lidar_reuse": 0.002,
    "radar": 0.01,
    "radar_reuse": 0.001,
    "tracks": 0.0005,
}
HEAD_J = {"fused": 0.02, "late_fusion": 0.004}


def profile(**changes) -> EnergyProfile:
    tables = {"options_j": OPTIONS_J, "head_j": HEAD_J, "overhead_j": {"gate": 0.001}} | changes
    return EnergyProfile(**tables)


def test_a_configuration_pays_its_options_one_head_and_the_overhead():
    energy = profile().run_energy_j([Configuration.parse("camera_half+lidar_reuse")])
    assert energy == pytest.approx(0.05 + 0.002 + 0.02 + 0.001)


def test_tracks_pay_their_prediction_and_the_overhead_but_no_head():
    tracks = Configuration.parse("tracks")
    assert profile().run_energy_j([tracks]) == pytest.approx(0.0005 + 0.001)
    assert profile().option_energy_j([tracks]) == {"tracks": pytest.approx(0.0005)}


def test_late_fusion_pays_a_head_per_configuration_and_the_merge():
    singles = [Configuration.parse(name) for name in ("camera", "lidar", "radar")]
    energy = profile().run_energy_j(singles)
    assert energy == pytest.approx(0.10 + 0.05 + 0.01 + 3 * 0.02 + 0.004 + 0.001)


def test_option_energy_shares_the_heads_and_adds_up():
    p = profile()
    ran = [Configuration.parse("camera"), Configuration.parse("lidar")]
    shares = p.option_energy_j(ran)
    assert shares["camera"] == pytest.approx(0.10 + (2 * 0.02 + 0.004) / 2)
    components = p.components_j(ran, ())
    assert sum(shares.values()) + components["overhead"] == pytest.approx(sum(components.values()))


def test_profile_round_trip(tmp_path):
    path = tmp_path / "energy.yaml"
    p = profile(measured={"meter": "model", "machine": "test"})
    p.save(path)
    loaded = EnergyProfile.load(path)
    assert dict(loaded.options_j) == OPTIONS_J and dict(loaded.head_j) == HEAD_J
    assert loaded.measured["meter"] == "model" and loaded.source == str(path)


def test_profile_missing_an_option_names_it(tmp_path):
    path = tmp_path / "energy.yaml"
    profile(options_j={k: v for k, v in OPTIONS_J.items() if k != "lidar_early"}).save(path)
    with pytest.raises(EnergyProfileError, match="no energy in options_j for lidar_early"):
        EnergyProfile.load(path)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("format_version: 2\noptions_j: {camera: -1}\n", "non-negative"),
        ("format_version: 1\n", "format_version 1, this version reads 2"),
        ("[1, 2]\n", "expected a mapping"),
        ("format_version: 2\noptions_j: {camera: [1\n", "cannot read"),
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
