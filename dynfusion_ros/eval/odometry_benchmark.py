"""The odometry half of `dynfusion benchmark`: every odometry policy on every drive of
the suite, scored with evo, with the energy each spends and the filter's consistency.

Odometry needs the sensor data of every frame in order (the detection sweep replays a
record of branch outputs, which has none), so each worker reads a drive once and, for
every policy, steps ``DynamicFusionPipeline.choose`` (the corrections are planned under
the budget there, as on the robot) and the ``OdometryEstimator`` frame by frame. Drives
go in parallel.

A failure run takes one sensor away half-way through a drive: from then on its frames
have no data from it, as when a cable comes loose.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dynfusion_ros import strict_json

POLICIES = (  # (label, odometry policy, budget as a share of the full configuration, failed sensor)
    ("IMU only", "none", None, ""),
    ("radar", "radar", None, ""),
    ("camera", "camera", None, ""),
    ("lidar", "lidar", None, ""),
    ("every correction, every frame", "all", None, ""),
    ("dynamic @ 25%", "dynamic", 0.25, ""),
    ("dynamic @ 50%", "dynamic", 0.5, ""),
    ("dynamic @ 100%", "dynamic", 1.0, ""),
    ("dynamic @ 50%, radar fails", "dynamic", 0.5, "radar"),
    ("dynamic @ 50%, lidar fails", "dynamic", 0.5, "lidar"),
)
HEADLINE = "dynamic @ 50%"  # the policy the target is held to: the default budget's share
SINGLES = ("radar", "camera", "lidar")
FAILURES = ("radar", "lidar")  # a failing camera changes nothing while the radar works
PLOTTED = ("IMU only", "radar", "camera", HEADLINE)


@dataclass
class OdometryRun:
    drive: str
    label: str
    ate_rmse_m: float
    ate_pct: float
    rpe_trans_pct: float
    path_length_m: float
    energy_j_per_frame: float  # the IMU filter and the corrections that ran, by the profile
    usage: dict[str, float]  # share of frames each correction ran
    velocity_nees: float
    velocity_nees_bounds: tuple[float, float]
    position_nees: float
    position_nees_bounds: tuple[float, float]
    xy_truth: list = field(default_factory=list, repr=False)  # for the plots
    xy_estimate: list = field(default_factory=list, repr=False)


_worker: dict = {}


def _load(profile_path: Path, gate_path: Path | None, values: dict | None) -> None:
    from dynfusion_ros.core.pipeline import load_gate

    _worker["gate"] = load_gate(profile_path, gate_path)
    _worker["values"] = values


def _run_drive(bag: Path) -> list[OdometryRun]:
    """Every policy of POLICIES on one drive, read once."""
    from dynfusion_ros.eval.trajectory import read_odometry_messages
    from dynfusion_ros.ros.bag_frames import read_frames

    frames = [labelled.frame for labelled in read_frames(bag, values=_worker["values"])]
    truth = read_odometry_messages(bag)
    return [_run(bag.name, frames, truth, policy) for policy in POLICIES]


def _run(drive: str, frames: list, truth: list, policy: tuple) -> OdometryRun:
    """One entry of POLICIES on a drive's frames, scored against its truth."""
    from dynfusion_ros.core.odometry.estimator import CORRECTIONS, OdometryEstimator
    from dynfusion_ros.core.pipeline import DynamicFusionPipeline
    from dynfusion_ros.eval.trajectory import (
        Trajectory,
        aligned,
        position_consistency,
        trajectory_errors,
        velocity_consistency,
    )

    label, policy, share, failed = policy
    gate = _worker["gate"]
    gate.reset()
    budget = share * gate.full_energy_j() if share is not None else None
    pipeline = DynamicFusionPipeline(None, gate, budget_j=budget, odometry_policy=policy)
    estimator, estimates, energy = OdometryEstimator(), [], []
    for index, recorded in enumerate(frames):
        frame = recorded
        if failed and index >= len(frames) // 2:
            frame = copy.copy(recorded)  # the drive's frames serve every policy
            setattr(frame, failed, None)
        corrections = pipeline.choose(frame).selection.odometry_corrections
        step = estimator.step(frame, corrections)
        energy.append(gate.profile.odometry_energy_j(step.ran))
        if step.estimate is not None:
            estimates.append(step.estimate)
    truth_poses, estimated = Trajectory.from_estimates(truth), Trajectory.from_estimates(estimates)
    errors = trajectory_errors(truth_poses, estimated)
    velocity = velocity_consistency(truth, estimates)
    position = position_consistency(truth, estimates)
    run = OdometryRun(
        drive,
        label,
        errors.ate_rmse_m,
        errors.ate_pct,
        errors.rpe_trans_pct,
        errors.path_length_m,
        float(np.mean(energy)) + gate.profile.overhead_j.get("imu_filter", 0.0),
        {
            c: sum(n for (name, _), n in estimator.outcomes.items() if name == c) / len(frames)
            for c in CORRECTIONS
        },
        velocity.mean_nees,
        (velocity.low, velocity.high),
        position.mean_nees,
        (position.low, position.high),
    )
    if label in PLOTTED:
        reference, moved = aligned(truth_poses, estimated)
        run.xy_truth = reference.positions_xyz[:, :2].tolist()
        run.xy_estimate = moved.positions_xyz[:, :2].tolist()
    return run


def run_all(
    bags: list[Path],
    files: tuple[Path, Path | None, dict | None],
    processes: int,
    progress: bool,
) -> list[OdometryRun]:
    """Every policy of POLICIES on every drive (``files``: profile, gate, the sensor
    parameters the bags are read with), in parallel."""
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    with ProcessPoolExecutor(processes, initializer=_load, initargs=files) as pool:
        drives = tqdm(
            pool.map(_run_drive, bags),
            total=len(bags),
            desc=f"odometry drives ({len(POLICIES)} policies each)",
            disable=not progress,
        )
        return [run for runs in drives for run in runs]


def markdown(runs: list[OdometryRun]) -> str:
    """ATE (% of path) per drive and policy, then the energy and consistency columns."""
    drives = list(dict.fromkeys(r.drive for r in runs))
    labels = [policy[0] for policy in POLICIES]
    cell = {(r.drive, r.label): r for r in runs}
    head = ["policy", "mJ/frame", *drives]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for label in labels:
        row = [cell[d, label] for d in drives]
        energy = np.mean([r.energy_j_per_frame for r in row])
        lines.append(
            f"| {label} | {1e3 * energy:.1f} | "
            + " | ".join(f"{r.ate_pct:.2f}" for r in row)
            + " |"
        )
    lines += [
        "",
        "| drive | policy | ATE m | RPE % | usage | velocity NEES (95 %) | position NEES (95 %) |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for r in runs:
        if r.label != HEADLINE:
            continue
        usage = ", ".join(f"{c} {u:.0%}" for c, u in r.usage.items())
        lines.append(
            f"| {r.drive} | {r.label} | {r.ate_rmse_m:.2f} | {r.rpe_trans_pct:.2f} | {usage} | "
            f"{r.velocity_nees:.2f} ({r.velocity_nees_bounds[0]:.2f}-"
            f"{r.velocity_nees_bounds[1]:.2f}) | {r.position_nees:.2f} "
            f"({r.position_nees_bounds[0]:.2f}-{r.position_nees_bounds[1]:.2f}) |"
        )
    return "\n".join(lines)


def summary(runs: list[OdometryRun]) -> str:
    """The issue's targets, checked from the runs."""
    by = {(r.drive, r.label): r for r in runs}
    drives = list(dict.fromkeys(r.drive for r in runs))
    headline = [by[d, HEADLINE] for d in drives]
    worst = max(headline, key=lambda r: r.ate_pct)
    lines = [
        f"- `{HEADLINE}`: ATE at most {worst.ate_pct:.2f}% of path ({worst.drive}); "
        f"{sum(r.ate_pct <= 1.0 for r in headline)} of {len(drives)} drives within 1%"
    ]
    baselines = ("IMU only", *SINGLES)
    for drive in (d for d in drives if d.startswith("mixed")):
        others = {label: by[drive, label].ate_pct for label in baselines}
        lines.append(_against(drive, by[drive, HEADLINE].ate_pct, others))
    mean = {
        label: float(np.mean([by[d, label].ate_pct for d in drives]))
        for label in (HEADLINE, *baselines)
    }
    lines.append(_against("mean over the suite", mean.pop(HEADLINE), mean))
    for sensor in FAILURES:
        failed = [by[d, f"{HEADLINE}, {sensor} fails"] for d in drives]
        worst = max(failed, key=lambda r: r.ate_pct)
        lines.append(
            f"- {sensor} failing half-way: ATE at most {worst.ate_pct:.2f}% ({worst.drive}); "
            f"{sum(r.ate_pct <= 2.0 for r in failed)} of {len(drives)} drives within 2%"
        )
    inside = sum(
        r.velocity_nees_bounds[0] <= r.velocity_nees <= r.velocity_nees_bounds[1] for r in headline
    )
    lines.append(
        f"- velocity NEES (3-D) of `{HEADLINE}`: mean over drives "
        f"{np.mean([r.velocity_nees for r in headline]):.2f}, inside its 95% bounds on "
        f"{inside} of {len(drives)} drives; position NEES (2-D): mean "
        f"{np.mean([r.position_nees for r in headline]):.2f}"
    )
    return "\n".join(lines)


def _against(where: str, headline_pct: float, others: dict[str, float]) -> str:
    """The headline policy's ATE beside each baseline's, and whether it beats them all."""
    text = ", ".join(f"{label} {pct:.2f}%" for label, pct in others.items())
    verdict = "lower than each" if headline_pct < min(others.values()) else "NOT lower than each"
    return f"- {where}: `{HEADLINE}` {headline_pct:.2f}% against {text}: {verdict}"


def plot_trajectories(runs: list[OdometryRun], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drives = list(dict.fromkeys(r.drive for r in runs))
    columns = 3
    rows = math.ceil(len(drives) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 4.2 * rows), squeeze=False)
    colours = {
        "IMU only": "tab:red",
        "radar": "tab:orange",
        "camera": "tab:green",
        HEADLINE: "tab:blue",
    }
    for axis, drive in zip(axes.flat, drives, strict=False):
        for r in runs:
            if r.drive != drive or not r.xy_estimate:
                continue
            if r.label == HEADLINE:
                truth = np.array(r.xy_truth)
                axis.plot(truth[:, 0], truth[:, 1], color="black", lw=2.5, label="ground truth")
            estimate = np.array(r.xy_estimate)
            axis.plot(
                estimate[:, 0],
                estimate[:, 1],
                color=colours[r.label],
                lw=1.2,
                label=f"{r.label} ({r.ate_pct:.2f}%)",
            )
        axis.set_title(drive, fontsize=10)
        axis.set_aspect("equal", adjustable="datalim")
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    for axis in axes.flat[len(drives) :]:
        axis.set_visible(False)
    figure.suptitle("Odometry against ground truth (aligned, m); ATE as % of path")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_ate_energy(runs: list[OdometryRun], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(10.5, 5.5))
    points: dict[tuple[float, float], list[str]] = {}  # policies that land on one point
    for label, *_ in POLICIES:
        chosen = [r for r in runs if r.label == label]
        energy = 1e3 * np.mean([r.energy_j_per_frame for r in chosen])
        ate = np.mean([r.ate_pct for r in chosen])
        points.setdefault((round(energy, 1), round(ate, 3)), []).append(label)
    # named in the legend, not beside the points: the dynamic policies lie within a few
    # millijoules and hundredths of a percent of each other, and their labels overlapped
    for (energy, ate), labels in points.items():
        failure = all("fails" in label for label in labels)
        marker = "x" if failure else "o"
        axis.scatter(energy, ate, s=40, zorder=3, marker=marker, label=" = ".join(labels))
    axis.axhline(1.0, color="0.5", ls="--", lw=1, label="1% target")
    axis.set_yscale("log")
    axis.set_xlabel("odometry energy per frame, mean (mJ, energy profile)")
    axis.set_ylabel("ATE RMSE, mean over drives (% of path)")
    axis.set_title("Odometry accuracy against energy, per policy")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write(runs: list[OdometryRun], out: Path) -> list[Path]:
    """odometry.md, odometry.json and the two plots into ``out``."""
    report = out / "odometry.md"
    report.write_text(summary(runs) + "\n\n" + markdown(runs) + "\n")
    data = out / "odometry.json"
    data.write_text(
        strict_json.dumps(
            [
                {k: v for k, v in asdict(r).items() if k not in ("xy_truth", "xy_estimate")}
                for r in runs
            ],
            indent=1,
        )
        + "\n"
    )
    return [
        report,
        data,
        plot_trajectories(runs, out / "odometry_trajectories.png"),
        plot_ate_energy(runs, out / "odometry_ate_energy.png"),
    ]
