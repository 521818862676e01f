"""Pictures of a simulated drive, to look at before trusting it.

- ``frame_NNNN_camera.png``: the camera image with the ground-truth boxes drawn on it
  (projected through the published camera model and extrinsics: if they miss the
  rendered objects, the geometry is wrong);
- ``frame_NNNN_bev.png``: bird's-eye view of the lidar sweep, the radar detections
  (coloured by doppler) and the ground-truth boxes, in base_link;
- ``contexts.png``: one contact sheet with the same place under every context.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import itertools

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Polygon

from dynfusion_ros.core.types import ObjectClass
from dynfusion_ros.sim import raycast
from dynfusion_ros.sim.drive import SimFrame, Simulation
from dynfusion_ros.sim.scenario import CONTEXTS, Phase, Scenario

CLASS_COLOURS = {
    ObjectClass.CAR: "tab:blue",
    ObjectClass.PEDESTRIAN: "tab:red",
    ObjectClass.CYCLIST: "tab:green",
}
CLASS_BGR = {
    ObjectClass.CAR: (255, 160, 40),
    ObjectClass.PEDESTRIAN: (60, 60, 255),
    ObjectClass.CYCLIST: (60, 220, 60),
}
EDGES = (
    (0, 1),
    (1, 2),
    (2, 3),
    (3, 0),
    (4, 5),
    (5, 6),
    (6, 7),
    (7, 4),
    (0, 4),
    (1, 5),
    (2, 6),
    (3, 7),
)


def box_corners(box) -> np.ndarray:
    """(8, 3) corners of a base_link Box3D: bottom four, then top four."""
    bottom, top = np.array([box.z - box.height / 2]), np.array([box.z + box.height / 2])
    half_length, half_width = np.array([box.length / 2]), np.array([box.width / 2])
    centre = np.array([[box.x, box.y]])
    return raycast.box_corners(centre, np.array([box.yaw]), half_length, half_width, (bottom, top))[
        0
    ]


def camera_with_boxes(frame: SimFrame, sim: Simulation) -> np.ndarray:
    """BGR image with each ground-truth box projected as a wireframe."""
    image = np.ascontiguousarray(frame.camera.image[:, :, ::-1])
    T_camera_base = np.linalg.inv(sim.rig.T_base_camera)
    camera = sim.rig.camera
    for obj in frame.objects:
        corners = box_corners(obj.box) @ T_camera_base[:3, :3].T + T_camera_base[:3, 3]
        if (corners[:, 2] < 0.5).any():
            continue
        uv, _ = camera.project(corners)
        for a, b in EDGES:
            cv2.line(
                image,
                tuple(np.round(uv[a]).astype(int)),
                tuple(np.round(uv[b]).astype(int)),
                CLASS_BGR[obj.object_class],
                1,
                cv2.LINE_AA,
            )
    return image


def draw_bev(ax, frame: SimFrame, sim: Simulation, title: str) -> None:
    lidar = frame.lidar.points
    T = sim.rig.T_base_lidar
    xyz = np.c_[lidar["x"], lidar["y"], lidar["z"]] @ T[:3, :3].T + T[:3, 3]
    ax.scatter(
        xyz[:, 0],
        xyz[:, 1],
        s=0.3,
        c=np.clip(lidar["intensity"], 0, 120),
        cmap="Greys_r",
        vmin=-60,
        vmax=120,
        linewidths=0,
    )
    _, scan = frame.radar[0]
    R = sim.rig.T_base_radar
    radar_xy = np.c_[scan.points["x"], scan.points["y"]] + R[:2, 3]
    sc = ax.scatter(
        radar_xy[:, 0],
        radar_xy[:, 1],
        s=14,
        c=scan.points["doppler"],
        cmap="coolwarm",
        vmin=-15,
        vmax=15,
        marker="D",
        edgecolors="k",
        linewidths=0.3,
    )
    for obj in frame.objects:
        ax.add_patch(
            Polygon(
                box_corners(obj.box)[:4, :2],
                closed=True,
                fill=False,
                edgecolor=CLASS_COLOURS[obj.object_class],
                linewidth=1.2,
            )
        )
    ax.add_patch(
        Polygon(
            [[-1.0, -0.95], [3.7, -0.95], [3.7, 0.95], [-1.0, 0.95]], closed=True, color="orange"
        )
    )
    ax.set_xlim(-20, 80)
    ax.set_ylim(-40, 40)
    ax.set_aspect("equal")
    ax.set_facecolor("#202020")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("x forward (m)")
    ax.set_ylabel("y left (m)")
    return sc


def save_frame(frame: SimFrame, sim: Simulation, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    camera_path = folder / f"frame_{frame.index:04d}_camera.png"
    cv2.imwrite(str(camera_path), camera_with_boxes(frame, sim))
    fig, ax = plt.subplots(figsize=(7, 6))
    title = (
        f"t={frame.t_s:.1f}s  {frame.context.label}  lidar {len(frame.lidar.points)} pts, "
        f"radar {len(frame.radar[0][1].points)} dets, {len(frame.objects)} objects"
    )
    sc = draw_bev(ax, frame, sim, title)
    fig.colorbar(sc, ax=ax, label="radar doppler (m/s)", shrink=0.8)
    bev_path = folder / f"frame_{frame.index:04d}_bev.png"
    fig.savefig(bev_path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return [camera_path, bev_path]


def preview_indices(sim: Simulation, count: int = 4) -> set[int]:
    """Frames to preview: the middle of every phase, else evenly spread."""
    starts = [p.start for p in sim.scenario.phases] + [1.0]
    fractions = [(a + b) / 2 for a, b in itertools.pairwise(starts)]
    if len(fractions) < count:
        fractions = list(np.linspace(0.1, 0.9, count))
    return {min(int(f * sim.frame_count), sim.frame_count - 1) for f in fractions}


def contact_sheet(seed: int, folder: Path, at_s: float = 4.0) -> Path:
    """The same drive, place and moment under every context, camera above BEV."""
    contexts = list(CONTEXTS)
    fig, axes = plt.subplots(
        2,
        len(contexts),
        figsize=(4.2 * len(contexts), 7.5),
        gridspec_kw={"height_ratios": [1, 1.6]},
    )
    for column, name in enumerate(contexts):
        sim = Simulation(Scenario(name, name, (Phase(0.0, name),)), at_s + 1.0, seed)
        index = int(at_s * sim.rig.camera_rate_hz)
        for k in range(index):  # camera only, so that auto-exposure settles
            t = k / sim.rig.camera_rate_hz
            _, scene = sim.scene(t, sim.ego.at(t).xy[0])
            context = sim.scenario.at(t, sim.duration_s)
            sim.camera.render(
                t, sim.ego, scene.boxes, sim.ground, context=context, rng=sim.rngs["camera"]
            )
        frame = sim.frame(index)
        axes[0, column].imshow(camera_with_boxes(frame, sim)[:, :, ::-1])
        axes[0, column].set_title(name, fontsize=12)
        axes[0, column].axis("off")
        draw_bev(
            axes[1, column],
            frame,
            sim,
            f"lidar {len(frame.lidar.points)} pts, radar {len(frame.radar[0][1].points)} dets",
        )
    fig.tight_layout()
    path = folder / "contexts.png"
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
