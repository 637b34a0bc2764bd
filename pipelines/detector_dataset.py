"""Object-detection datasets made with the driving simulator: Parquet for training, KITTI for eval.

``sim_frames`` drives scripted scenarios (``operators.driving``) with only the camera
simulated at ``camera_hz`` and yields each frame with its ground truth. Two writers:

- ``write_parquet``: one row per frame, the image downscaled by ``scale`` and stored as
  JPEG bytes (``cv2.imencode``), boxes in the stored image's pixels. Read back with
  ``read_parquet`` (or by ``models.training.detector``, which never imports the
  simulator). Columns: ``scenario``, ``seed``, ``held_out``, ``frame``, ``image``
  (JPEG), ``width``, ``height``, ``scale`` (stored / rendered pixels), ``boxes``
  (list of ``[x1, y1, x2, y2]``), ``classes`` (index into ``CLASSES``), ``visible``,
  ``distances`` (m) and ``dont_care``.
- ``write_kitti``: a KITTI-layout folder, ``image_2/NNNNNN.png`` (full-size frames) and
  ``label_2/NNNNNN.txt`` in the KITTI label format with the simulator's class names
  (``vehicle``, ``pedestrian``, ``sign``) as the type; objects that are too small or too
  hidden to ask a detector for (``dont_care``) are written as ``DontCare``. This is what
  ``edgeray eval detect DIR`` reads.

An object is *don't care* when its box is under ``MIN_HEIGHT_PX`` pixels tall in the
rendered 640x360 frame, or (vehicles and pedestrians) less than ``MIN_VISIBLE`` of it is
visible. Train and held-out scenarios differ in seeds and lighting ranges
(``scenario(..., held_out=True)``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from operators import Context
from operators.driving import CLASSES, SCENARIOS, DrivingSimulator

#: Boxes shorter than this (pixels, rendered frame) are DontCare.
MIN_HEIGHT_PX = 12.0
#: Vehicles / pedestrians with less than this fraction visible are DontCare.
MIN_VISIBLE = 0.4
#: The simulator's sign class (its silhouette visibility is not meaningful for the rule above).
SIGN = CLASSES.index("sign")
#: The training scale: 640x360 frames become 416x234, YOLOX's letterbox of them at 416.
TRAIN_SCALE = 0.65


@dataclass(frozen=True)
class SimFrame:
    """One rendered camera frame and the object truth an evaluation needs."""

    scenario: str
    seed: int
    held_out: bool
    frame: int
    image: np.ndarray  # uint8 HxWx3 BGR
    boxes: np.ndarray  # float32 Nx4 x1, y1, x2, y2
    classes: np.ndarray  # int32 N, index into CLASSES
    visible: np.ndarray  # float32 N
    distances: np.ndarray  # float32 N
    object_ids: np.ndarray  # int32 N, the scenario's actor / sign ids

    @property
    def dont_care(self) -> np.ndarray:
        """bool N: objects too small or too hidden to score a detector on."""
        return dont_care(self.boxes, self.classes, self.visible)


def dont_care(boxes: np.ndarray, classes: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """bool N: box under ``MIN_HEIGHT_PX`` tall, or a non-sign under ``MIN_VISIBLE`` visible."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    small = (boxes[:, 3] - boxes[:, 1]) < MIN_HEIGHT_PX
    hidden = (np.asarray(visible) < MIN_VISIBLE) & (np.asarray(classes) != SIGN)
    return small | hidden


def sim_frames(
    *,
    scenarios: Sequence[str] = tuple(SCENARIOS),
    seeds: Sequence[int] = (0,),
    held_out: bool = False,
    camera_hz: float = 2.0,
) -> Iterator[SimFrame]:
    """Camera frames of every scenario x seed, ``camera_hz`` frames per simulated second."""
    for name in scenarios:
        for seed in seeds:
            sim = DrivingSimulator(name, seed=seed, held_out=held_out, poll_hz=camera_hz,
                                   camera_hz=camera_hz, lidar_hz=1e-3, ego_hz=1e-3)  # fmt: skip
            sim.setup(Context(operator="detector-dataset"))
            while (out := sim.poll(0)) is not None:
                for port, message in out:
                    if port != "camera":
                        continue
                    t = message.truth
                    yield SimFrame(name, seed, held_out, int(message.payload["frame"]),
                                   message.payload["image"], t["boxes"], t["classes"],
                                   t["visible"], t["distances"], t["object_ids"])  # fmt: skip


# -- Parquet --------------------------------------------------------------------------------
SCHEMA = pa.schema(
    [
        ("scenario", pa.string()),
        ("seed", pa.int32()),
        ("held_out", pa.bool_()),
        ("frame", pa.int32()),
        ("image", pa.binary()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("scale", pa.float32()),
        ("boxes", pa.list_(pa.list_(pa.float32(), 4))),
        ("classes", pa.list_(pa.int32())),
        ("visible", pa.list_(pa.float32())),
        ("distances", pa.list_(pa.float32())),
        ("dont_care", pa.list_(pa.bool_())),
    ],
    metadata={"class_names": json.dumps(CLASSES)},
)


def _row(f: SimFrame, scale: float, jpeg_quality: int) -> dict:
    height, width = f.image.shape[:2]
    size = (round(width * scale), round(height * scale))
    small = cv2.resize(f.image, size, interpolation=cv2.INTER_LINEAR) if scale != 1 else f.image
    ok, jpeg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    if not ok:
        raise ValueError(f"cv2.imencode could not encode frame {f.frame} of {f.scenario}")
    return {
        "scenario": f.scenario, "seed": f.seed, "held_out": f.held_out, "frame": f.frame,
        "image": jpeg.tobytes(), "width": size[0], "height": size[1], "scale": scale,
        "boxes": (f.boxes * scale).tolist(), "classes": f.classes.tolist(),
        "visible": f.visible.tolist(), "distances": f.distances.tolist(),
        "dont_care": f.dont_care.tolist(),
    }  # fmt: skip


def write_parquet(
    path: str | os.PathLike[str],
    frames: Iterator[SimFrame],
    *,
    scale: float = TRAIN_SCALE,
    jpeg_quality: int = 85,
    rows_per_group: int = 512,
) -> int:
    """Write ``frames`` to the Parquet file ``path`` (schema ``SCHEMA``); returns the row count."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    count, batch = 0, []
    with pq.ParquetWriter(str(path), SCHEMA) as writer:
        for f in frames:
            batch.append(_row(f, scale, jpeg_quality))
            if len(batch) == rows_per_group:
                writer.write_table(pa.Table.from_pylist(batch, SCHEMA))
                count, batch = count + len(batch), []
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, SCHEMA))
            count += len(batch)
    return count


def read_parquet(path: str | os.PathLike[str]) -> list[dict]:
    """The rows of a dataset file with ``image`` decoded (uint8 BGR) and ``boxes`` as Nx4 arrays."""
    rows = pq.read_table(str(path)).to_pylist()
    for row in rows:
        row["image"] = cv2.imdecode(np.frombuffer(row["image"], np.uint8), cv2.IMREAD_COLOR)
        row["boxes"] = np.asarray(row["boxes"], np.float32).reshape(-1, 4)
        row["classes"] = np.asarray(row["classes"], np.int32)
        row["dont_care"] = np.asarray(row["dont_care"], bool)
    return rows


# -- KITTI ----------------------------------------------------------------------------------
def kitti_label_lines(f: SimFrame) -> list[str]:
    """KITTI label lines of one frame: the 2-D box is real; 3-D fields hold KITTI's unknowns.

    ``occluded`` is 0 / 1 / 2 for more than 80 % / 50 % / less visible; ``truncated`` 0.
    """
    lines = []
    for box, cls, vis, ignore in zip(f.boxes, f.classes, f.visible, f.dont_care, strict=True):
        kind = "DontCare" if ignore else CLASSES[int(cls)]
        occluded = -1 if ignore else 0 if vis > 0.8 else 1 if vis > 0.5 else 2
        truncated = -1.0 if ignore else 0.0
        corners = " ".join(f"{float(v):.2f}" for v in box)
        unknown_3d = "-1 -1 -1 -1000 -1000 -1000 -10"
        lines.append(f"{kind} {truncated:.2f} {occluded} -10 {corners} {unknown_3d}")
    return lines


def write_kitti(out_dir: str | os.PathLike[str], frames: Iterator[SimFrame]) -> Path:
    """Write ``frames`` as ``out_dir/image_2/NNNNNN.png`` + ``out_dir/label_2/NNNNNN.txt``."""
    root = Path(out_dir)
    (root / "image_2").mkdir(parents=True, exist_ok=True)
    (root / "label_2").mkdir(parents=True, exist_ok=True)
    for n, f in enumerate(frames):
        cv2.imwrite(str(root / "image_2" / f"{n:06d}.png"), f.image)
        lines = kitti_label_lines(f)
        (root / "label_2" / f"{n:06d}.txt").write_text("".join(f"{x}\n" for x in lines))
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipelines.detector_dataset OUT``: train / held-out Parquet and a KITTI folder."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("out", help="output folder")
    ap.add_argument("--train-seeds", type=int, default=20, help="seeds 0..N-1 of each scenario")
    ap.add_argument(
        "--extra-pedestrian-seeds",
        type=int,
        default=40,
        help="more pedestrian_crossing seeds (the only scenario with pedestrians)",
    )
    ap.add_argument("--held-out-seeds", type=int, default=3, help="held-out seeds 0..N-1")
    ap.add_argument("--camera-hz", type=float, default=2.0, help="frames per simulated second")
    args = ap.parse_args(argv)
    out = Path(args.out)

    def train() -> Iterator[SimFrame]:
        yield from sim_frames(seeds=range(args.train_seeds), camera_hz=args.camera_hz)
        extra = range(args.train_seeds, args.train_seeds + args.extra_pedestrian_seeds)
        yield from sim_frames(scenarios=("pedestrian_crossing",), seeds=extra,
                              camera_hz=args.camera_hz)  # fmt: skip

    def held_out() -> Iterator[SimFrame]:
        return sim_frames(seeds=range(args.held_out_seeds), held_out=True,
                          camera_hz=args.camera_hz)  # fmt: skip

    print("train rows", write_parquet(out / "train.parquet", train()))
    print("held-out rows", write_parquet(out / "held_out.parquet", held_out()))
    print("kitti", write_kitti(out / "held_out_kitti", held_out()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "MIN_HEIGHT_PX",
    "MIN_VISIBLE",
    "SCHEMA",
    "SIGN",
    "TRAIN_SCALE",
    "SimFrame",
    "dont_care",
    "kitti_label_lines",
    "read_parquet",
    "sim_frames",
    "write_kitti",
    "write_parquet",
]
