"""`dynfusion benchmark`: every policy over a sweep of budgets on a simulated suite, as a
markdown table and an accuracy-energy plot; then every odometry policy on every drive
(``odometry_benchmark``), with trajectory and ATE-energy plots.

Every configuration of the detector runs once per frame (the record, cached in the output
folder); each policy and budget is then a replay of that record through
``DynamicFusionPipeline``, so the sweep costs choosing and scoring only, and all policies
see identical detections.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from dynfusion_ros.command_args import UsageError, shown_path
from dynfusion_ros.core.detector.levels import STEMS

BUDGET_SHARES = (0.2, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dynfusion_ros.command_args import add_params_argument
    from dynfusion_ros.eval.evaluate_command import add_pipeline_arguments

    parser.add_argument("--suite", default="heldout", help="simulated suite (default heldout)")
    parser.add_argument("--out", type=Path, required=True, help="folder for table, plot, JSON")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("data/sim"),
        help="where suites live (<data>/<suite>); missing drives are simulated there",
    )
    parser.add_argument(
        "--shares",
        type=float,
        nargs="+",
        default=list(BUDGET_SHARES),
        help="budgets as shares of the full configuration's energy (default 0.2 ... 1.0)",
    )
    parser.add_argument(
        "--processes", type=int, default=os.cpu_count() or 1, help="parallel replays"
    )
    parser.add_argument(
        "--only",
        choices=("detection", "odometry"),
        help="run one half of the benchmark (default: both)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_params_argument(parser)
    add_pipeline_arguments(parser)


@dataclass
class Row:
    label: str  # e.g. "dynamic @ 50%"
    family: str  # dynamic, oracle, full, late, static, equal-energy, failure
    share: float | None
    evaluation: object  # Evaluation


def _suite_bags(args: argparse.Namespace) -> list[Path]:
    from dynfusion_ros.sim.command import add_arguments as sim_arguments
    from dynfusion_ros.sim.command import run as simulate
    from dynfusion_ros.sim.suites import SUITES

    if args.suite not in SUITES:
        raise UsageError(f"unknown suite {args.suite!r}; known: {', '.join(SUITES)}")
    folder = args.data / args.suite
    if any(not (folder / d.name / "metadata.yaml").exists() for d in SUITES[args.suite]):
        print(f"simulating the missing drives of suite {args.suite} into {folder}")
        parser = argparse.ArgumentParser()
        sim_arguments(parser)
        quiet = ["--quiet"] if args.quiet else []
        if simulate(parser.parse_args(["--suite", args.suite, "--out", str(folder), *quiet])):
            raise UsageError(f"could not simulate suite {args.suite}")
    return [folder / d.name for d in SUITES[args.suite]]


def _record(args: argparse.Namespace, bags: list[Path], detector: Path, values: dict) -> None:
    """Make ``<out>/record.npz`` cover the bags read with ``values`` (the sensor
    parameters)."""
    from dynfusion_ros.core.detector.runner import DetectorRunner
    from dynfusion_ros.eval.records import cached_record, record_configurations

    path = args.out / "record.npz"
    record = cached_record(path, bags, values)
    if record is not None:
        print(f"using the recorded detector outputs in {path} ({len(record)} frames)")
        return
    print(f"running every configuration on every frame of {len(bags)} drives (recorded once)")
    runner = DetectorRunner.load(detector)
    record = record_configurations(runner, bags, progress=not args.quiet, values=values)
    record.save(path)


FAILURE_SHARES = (0.5, 1.0)  # the sensor-failure runs: a tight and a loose budget


def plan(gate, shares) -> list[tuple[str, str, float | None, str, str]]:
    """(label, family, budget share, policy text, failed sensor) of every run of the
    sweep: `full` (early fusion of everything), `late` (every stem alone, fused late:
    HydraFusion's baseline) and `dynamic` at its energy; `dynamic` and `oracle` at every
    share; every static configuration; then `full`, and `dynamic` at each of
    ``FAILURE_SHARES``, with each sensor failed throughout."""
    from dynfusion_ros.core.gate import SINGLE_STEMS, static_configurations

    runs = [("full", "full", None, "full", ""), ("late", "late", None, "late", "")]
    for share in shares:
        runs.append((f"dynamic @ {share:.0%}", "dynamic", share, "dynamic", ""))
        runs.append((f"oracle @ {share:.0%}", "oracle", share, "oracle", ""))
    share = gate.profile.run_energy_j(SINGLE_STEMS) / gate.full_energy_j()
    runs.append(("dynamic @ energy of late", "equal-energy", share, "dynamic", ""))
    for configuration in static_configurations():
        text = f"static:{configuration.text}"
        runs.append((text, "static", None, text, ""))
    for sensor in STEMS:
        failed = f", {sensor.value} failed"
        runs.append(("full" + failed, "failure", None, "full", sensor.value))
        for share in FAILURE_SHARES:
            label = f"dynamic @ {share:.0%}{failed}"
            runs.append((label, "failure", share, "dynamic", sensor.value))
    return runs


_worker: dict = {}


def _load_worker(record_path: Path, profile_path: Path, gate_path: Path | None) -> None:
    from dynfusion_ros.core.energy import EnergyProfile
    from dynfusion_ros.core.gate import Gate, GateModel
    from dynfusion_ros.eval.records import DetectionRecord

    _worker["record"] = DetectionRecord.load(record_path)
    model = GateModel.load(gate_path) if gate_path else None
    _worker["gate"] = Gate(EnergyProfile.load(profile_path), model)


def _replay(run: tuple[str, str, float | None, str, str]) -> Row:
    from dynfusion_ros.core.types import Modality
    from dynfusion_ros.eval.evaluation import recorded_pipeline, replay_record
    from dynfusion_ros.eval.records import without_sensor

    label, family, share, policy, failed = run
    record, gate = _worker["record"], _worker["gate"]
    if failed:
        record = without_sensor(record, Modality(failed))
    gate.reset()
    budget = share * gate.full_energy_j() if share is not None else None
    pipeline = recorded_pipeline(record, gate, policy=policy, budget_j=budget)
    return Row(label, family, share, replay_record(pipeline, record))


def sweep(files: tuple[Path, Path, Path | None], runs, processes: int, progress: bool) -> list[Row]:
    """Replay the record (``files``: record, profile, gate) under every run, in parallel."""
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    with ProcessPoolExecutor(processes, initializer=_load_worker, initargs=files) as pool:
        return list(
            tqdm(pool.map(_replay, runs), total=len(runs), desc="policies", disable=not progress)
        )


def markdown(rows: list[Row], everything: float) -> str:
    from dynfusion_ros.eval.detection_metrics import classes_left_out

    contexts = list(rows[0].evaluation.map_per_context)
    head = ["policy", "budget", "mAP", "NDS-3", "mAP old rule", "J/frame", "p95 J", "viol."]
    head += [*contexts, "options run"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 2) + "---|"]
    for row in rows:
        e = row.evaluation
        budget = (
            "—"
            if e.budget_j is None
            else f"{e.budget_j * 1e3:.1f} mJ ({e.budget_j / everything:.0%})"
        )
        usage = ", ".join(f"{o} {u:.0%}" for o, u in e.option_usage.items() if u > 0)
        cells = [
            row.label,
            budget,
            f"{100 * e.map:.1f}",
            f"{100 * e.nds3:.1f}",
            f"{100 * e.map_all_points:.1f}",
            f"{1e3 * e.energy_j_per_frame:.1f} mJ",
            f"{1e3 * e.energy_j_per_frame_p95:.1f}",
            str(e.budget_violations),
            *(
                f"{100 * e.map_per_context[c]:.1f}" if not math.isnan(e.map_per_context[c]) else "—"
                for c in contexts
            ),
            usage,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    note = classes_left_out(rows[0].evaluation.classes_without_truth)
    return "\n".join(lines + ([f"\n{note}"] if note else []))


def summary(rows: list[Row]) -> str:
    """The comparisons a reader looks for, computed from the rows."""
    by_label = {r.label: r.evaluation for r in rows}
    everything, late = by_label["full"], by_label["late"]
    statics = [r.evaluation for r in rows if r.family == "static"]
    lines = [
        f"- `full`: mAP {100 * everything.map:.1f} at "
        f"{1e3 * everything.energy_j_per_frame:.1f} mJ; `late`: mAP {100 * late.map:.1f} at "
        f"{1e3 * late.energy_j_per_frame:.1f} mJ"
    ]
    for row in rows:
        if row.family not in ("dynamic", "equal-energy"):
            continue
        e = row.evaluation
        fitting = [s for s in statics if s.energy_j_per_frame <= e.budget_j * (1 + 1e-9)]
        best = max(fitting, key=lambda s: s.map, default=None)
        oracle = by_label.get(f"oracle @ {row.share:.0%}")
        text = (
            f"- {row.label}: mAP {100 * e.map:.1f} ({100 * (e.map - everything.map):+.1f} vs full)"
        )
        if best is not None:
            text += f", best static that fits `{best.policy}` {100 * best.map:.1f}"
        if oracle is not None and row.family == "dynamic":
            text += f", oracle {100 * oracle.map:.1f}"
            beaten = [s for s in fitting if s.map > oracle.map + 1e-9]
            if beaten:
                text += " (below static " + ", ".join(f"`{s.policy}`" for s in beaten) + ")"
        lines.append(text + f"; {e.budget_violations} budget violations")
    for sensor in STEMS:
        failed = f", {sensor.value} failed"
        text = (
            f"- {sensor.value} failed throughout: `full` loses "
            f"{100 * (everything.map - by_label['full' + failed].map):.1f} points"
        )
        for share in FAILURE_SHARES:
            intact = by_label.get(f"dynamic @ {share:.0%}")
            if intact is not None:  # the sweep's shares may leave this budget out
                lost = intact.map - by_label[f"dynamic @ {share:.0%}{failed}"].map
                text += f", `dynamic @ {share:.0%}` loses {100 * lost:.1f}"
        lines.append(text)
    return "\n".join(lines)


def plot(rows: list[Row], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 6))
    statics = [r for r in rows if r.family == "static"]
    axes.scatter(
        [1e3 * r.evaluation.energy_j_per_frame for r in statics],
        [100 * r.evaluation.map for r in statics],
        s=14,
        color="0.6",
        label="static configurations",
        zorder=2,
    )
    for r in statics:
        point = (1e3 * r.evaluation.energy_j_per_frame, 100 * r.evaluation.map)
        axes.annotate(r.label[7:], point, fontsize=6, color="0.35")
    styles = {
        "dynamic": ("tab:blue", "o-"),
        "oracle": ("tab:green", "s--"),
        "full": ("tab:red", "*"),
        "late": ("tab:orange", "^"),
        "equal-energy": ("tab:purple", "D"),
    }
    for family, (colour, style) in styles.items():
        chosen = [r for r in rows if r.family == family]
        axes.plot(
            [1e3 * r.evaluation.energy_j_per_frame for r in chosen],
            [100 * r.evaluation.map for r in chosen],
            style,
            color=colour,
            markersize=12 if family == "full" else 6,
            label="dynamic at late's energy" if family == "equal-energy" else family,
            zorder=3,
        )
    axes.set_xlabel("energy per frame, mean (mJ, energy profile)")
    axes.set_ylabel("nuScenes mAP (%, BEV centre distance)")
    axes.set_title("Accuracy against energy, held-out suite")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def run(args: argparse.Namespace) -> int:
    from dynfusion_ros.command_args import sensor_values
    from dynfusion_ros.core.detector.weights import WeightsError
    from dynfusion_ros.core.energy import EnergyProfile
    from dynfusion_ros.core.gate import Gate, GateModel, GateModelError
    from dynfusion_ros.eval.evaluate_command import pipeline_files

    try:
        if any(not s > 0 for s in args.shares):
            raise UsageError("--shares must all be positive")
        if args.processes < 1:
            raise UsageError(f"--processes must be at least 1, got {args.processes}")
        args.out.mkdir(parents=True, exist_ok=True)
        values = sensor_values(args)
        bags = _suite_bags(args)
        detector, profile_path, gate_path = pipeline_files(args)
        profile = EnergyProfile.load(profile_path)
        gate = Gate(profile, GateModel.load(gate_path) if gate_path else None)
        if args.only != "odometry":
            _record(args, bags, detector, values)
    except (UsageError, ValueError, WeightsError, GateModelError) as error:
        print(f"dynfusion benchmark: error: {error}", file=sys.stderr)
        return 2
    if args.only != "odometry":
        _detection(args, gate, profile, (args.out / "record.npz", profile_path, gate_path))
    if args.only != "detection":
        _odometry(args, bags, (profile_path, gate_path, values))
    return 0


def _odometry(args: argparse.Namespace, bags: list[Path], files) -> None:
    from dynfusion_ros.eval import odometry_benchmark

    runs = odometry_benchmark.run_all(bags, files, args.processes, progress=not args.quiet)
    written = odometry_benchmark.write(runs, args.out)
    print(odometry_benchmark.markdown(runs))
    print(odometry_benchmark.summary(runs))
    print("wrote " + ", ".join(str(path) for path in written))


def _detection(args: argparse.Namespace, gate, profile, files) -> None:
    runs = plan(gate, args.shares)
    rows = sweep(files, runs, args.processes, progress=not args.quiet)
    everything = gate.full_energy_j()
    table = markdown(rows, everything)
    (args.out / "benchmark.md").write_text(
        f"Full configuration: {1e3 * everything:.1f} mJ per frame ({shown_path(profile.source)})."
        "\n\n" + summary(rows) + "\n\n" + table + "\n"
    )
    (args.out / "benchmark.json").write_text(
        "[\n" + ",\n".join(r.evaluation.to_json().strip() for r in rows) + "\n]\n"
    )
    figure = plot(rows, args.out / "accuracy_energy.png")
    (args.out / "configurations.md").write_text(configuration_table(files[0]) + "\n")
    print(table)
    print(summary(rows))
    written = ("benchmark.md", "benchmark.json", "configurations.md")
    print(f"wrote {', '.join(str(args.out / name) for name in written)} and {figure}")


def configuration_table(record_path: Path) -> str:
    """nuScenes mAP of each of the 47 configurations, and of tracks, per context, every
    recorded frame (reuse and tracks from the previous frame's full run), from the
    record: no network runs."""
    from dynfusion_ros.eval.detector_report import DetectorReport
    from dynfusion_ros.eval.records import DetectionRecord, RecordFrames

    record = DetectionRecord.load(record_path)
    metrics = RecordFrames(record).configuration_metrics(range(len(record)))
    frames = dict(sorted(Counter(record.situations.tolist()).items()))
    frames["all"] = len(record)
    table = DetectorReport(metrics, frames, {}, float("nan")).markdown()
    return (
        f"{table}\n\nEach configuration exactly as named: where one of its sensors was"
        " silent it detects nothing (a policy runs what remains instead), reuse reads"
        " the previous frame's full-level features, and tracks predict the previous"
        " frame's full detections."
    )
