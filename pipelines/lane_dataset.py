"""A lane dataset in the TuSimple-style layout, made with the driving simulator.

``write_lane_dataset`` drives scenarios of ``operators.driving`` and writes, for every
``every``-th camera frame, ``image/<name>.png`` (the camera frame) and
``gt_binary_image/<name>.png`` (uint8, 255 on the ego lane's two boundary lines drawn
``thickness`` px wide from the simulator's truth polylines, 0 elsewhere), plus
``camera.json`` (``K`` and ``T_cam_ego``) so an evaluation can use the exact camera
geometry. ``edgeray eval lanes DIR`` (``pipelines.eval_lanes``) reads it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from operators import Context
from operators.driving import DrivingSimulator


def ego_lane_mask(truth: dict, shape: tuple[int, int], *, thickness: int = 3) -> np.ndarray:
    """uint8 mask (0 / 255) of the ego lane's two boundaries from a camera frame's truth.

    ``truth``: the simulator's camera truth (``lanes`` (L, P, 2) image points, NaN out of
    view; ``lane_offsets`` m from the ego); ``shape``: (height, width). The boundaries are
    the nearest one left (offset > 0) and right (offset < 0) of the ego.
    """
    mask = np.zeros(shape, np.uint8)
    offsets = np.asarray(truth["lane_offsets"])
    for side in (offsets > 0, offsets < 0):
        if not side.any():
            continue
        idx = np.flatnonzero(side)[np.argmin(np.abs(offsets[side]))]
        pts = np.asarray(truth["lanes"][idx])
        pts = pts[np.isfinite(pts).all(axis=1)]
        if len(pts) >= 2:
            cv2.polylines(mask, [np.round(pts).astype(np.int32)], False, 255, thickness)
    return mask


def write_lane_dataset(
    out_dir: str | os.PathLike[str],
    *,
    scenarios: Sequence[str] = ("lane_curve", "car_following"),
    seed: int = 0,
    every: int = 30,
    max_per_scenario: int = 10,
    thickness: int = 3,
) -> Path:
    """Write a TuSimple-style lane dataset from simulator ``scenarios`` under ``out_dir``.

    ``seed``: the scenarios' variant; ``every``: keep one camera frame in ``every``;
    ``max_per_scenario``: at most this many frames each; ``thickness``: mask line width
    (px). Returns the directory. Only the camera is simulated at full rate.
    """
    root = Path(out_dir)
    (root / "image").mkdir(parents=True, exist_ok=True)
    (root / "gt_binary_image").mkdir(parents=True, exist_ok=True)
    camera = None
    for name in scenarios:
        sim = DrivingSimulator(name, seed=seed, lidar_hz=1e-3, ego_hz=1e-3)
        sim.setup(Context())
        kept = 0
        while kept < max_per_scenario and (out := sim.poll(0)) is not None:
            for port, message in out:
                frame = message.payload.get("frame", 0)
                if port != "camera" or frame % every or kept >= max_per_scenario:
                    continue
                image = message.payload["image"]
                stem = f"{name}_s{seed}_{frame:05d}.png"
                cv2.imwrite(str(root / "image" / stem), image)
                mask = ego_lane_mask(message.truth, image.shape[:2], thickness=thickness)
                cv2.imwrite(str(root / "gt_binary_image" / stem), mask)
                camera = {k: np.asarray(message.payload[k]).tolist() for k in ("K", "T_cam_ego")}
                kept += 1
    if camera is not None:
        (root / "camera.json").write_text(json.dumps(camera))
    return root
