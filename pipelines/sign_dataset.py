"""A traffic-sign crop dataset over the 43 GTSRB classes: simulator renderings and real images.

``write_sign_dataset(out_dir)`` writes one Parquet file, ``signs.parquet``, that the
training code in ``models/`` reads with ``models.datasets.read_image_dataset``:

=========  ==========================  ===================================================
column     type                        meaning
=========  ==========================  ===================================================
image      fixed_size_binary[3072]     a 32x32x3 uint8 BGR crop, row-major (``CROP``)
class_id   int64                       GTSRB class, 0..42
origin     string                      ``"sim"`` (rendered here) or ``"gtsrb"`` (real)
seed       int64                       the seed that renders this crop again; -1 for real
split      string                      ``"train"`` or ``"test"``
=========  ==========================  ===================================================

Simulator crops are drawn by the driving simulator itself (``operators.driving``): half
are cut from full camera frames (``render`` of a road with one sign at 5-45 m, the
camera's own perspective, lighting and noise), half from a plate drawn with
``draw_plate`` on a cluttered background and warped in perspective. Both then get the
augmentations a roadside camera produces: exposure and colour cast, blur, a low
resolution, sensor noise and partial occlusion. A test crop comes from the *held-out*
draw (its own seed stream, darker light), so it never equals a training crop.

Real images: the GTSRB folder (``signs-gtsrb``, 5 images per class), each cut around its
region of interest as ``SignRecognizer`` cuts a region (``SignFolder.sign_crops``), split
by a fixed rule, ``gtsrb_split``: per class, the first ``REAL_TRAIN_PER_CLASS`` (2) file
names in sorted order are ``train``, the other 3 are ``test``; training never sees a
test image.

Run it as ``python -m pipelines.sign_dataset OUT_DIR [--per-class N] [--test-per-class N]``.
"""

from __future__ import annotations

import argparse
import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from operators import Context
from operators.driving import DrivingSimulator, PinholeCamera, Road, SignSpec, World, render
from operators.driving.camera import draw_plate
from operators.driving.world import EgoState
from operators.signs import CROP, NUM_CLASSES, sign_crops
from pipelines.data import data_path

#: Real GTSRB images per class used for training; the rest of each class is held out.
REAL_TRAIN_PER_CLASS = 2
FILE_NAME = "signs.parquet"
SCHEMA = pa.schema(
    [
        ("image", pa.binary(CROP * CROP * 3)),
        ("class_id", pa.int64()),
        ("origin", pa.string()),
        ("seed", pa.int64()),
        ("split", pa.string()),
    ]
)
_CAMERA = PinholeCamera()


# -- simulator crops -----------------------------------------------------------------------
def render_sign_crop(class_id: int, seed: int, *, held_out: bool = False) -> np.ndarray:
    """A 32x32x3 uint8 BGR crop of GTSRB class ``class_id``, the same for the same arguments.

    ``held_out`` draws from a separate seed stream with darker light (for test crops).
    """
    if not 0 <= class_id < NUM_CLASSES:
        raise ValueError(f"class_id {class_id} is not a GTSRB class (0..{NUM_CLASSES - 1})")
    rng = np.random.default_rng([class_id, seed, int(held_out)])
    crop = _scene_crop(class_id, rng) if rng.random() < 0.5 else _plate_crop(class_id, rng)
    return _camera_effects(crop, rng, held_out=held_out)


def _scene_crop(class_id: int, rng: np.random.Generator) -> np.ndarray:
    """The sign as the driving camera sees it, cut from a full frame around its truth box."""
    while True:
        ahead = float(rng.uniform(5.0, 45.0))
        side = 1.0 if rng.random() < 0.3 else -1.0
        d = side * float(rng.uniform(3.0, max(3.2, min(7.5, 0.55 * ahead))))
        sign = SignSpec(1, class_id, s=10.0 + ahead, d=d, height=float(rng.uniform(1.6, 2.8)),
                        size=float(rng.uniform(0.6, 0.95)))  # fmt: skip
        road = Road(segments=((20.0, 0.0), (400.0, float(rng.uniform(-1, 1)) / 300)))
        world = World(road=road, signs=(sign,), length=10.0 + ahead + 60.0)
        ego = EgoState(s=10.0, d=float(rng.uniform(-1.0, 1.0)), psi=float(rng.uniform(-0.03, 0.03)))
        frame = render(_CAMERA, world.scene(0.0, ego), noise=float(rng.uniform(0, 3)), rng=rng)
        signs = np.flatnonzero(frame.truth["sign_classes"] == class_id)
        if len(signs):
            return _cut(frame.image, frame.truth["boxes"][signs[0]], rng)


def _plate_crop(class_id: int, rng: np.random.Generator) -> np.ndarray:
    """The plate drawn on clutter and seen at an angle (a perspective warp of the canvas)."""
    size = 96
    canvas = _clutter(size, rng)
    r = float(rng.uniform(26, 36))
    u, v = size / 2 + rng.uniform(-3, 3, 2)
    draw_plate(canvas, class_id, float(u), float(v), r)
    corners = np.float32([[0, 0], [size, 0], [size, size], [0, size]])
    moved = corners + rng.uniform(-0.1, 0.1, (4, 2)).astype(np.float32) * size
    warp = cv2.getPerspectiveTransform(corners, moved)
    canvas = cv2.warpPerspective(canvas, warp, (size, size), borderMode=cv2.BORDER_REFLECT)
    centre = cv2.perspectiveTransform(np.float32([[[u, v]]]), warp)[0, 0]
    box = np.array([centre[0] - r, centre[1] - r, centre[0] + r, centre[1] + r])
    return _cut(canvas, box, rng)


def _clutter(size: int, rng: np.random.Generator) -> np.ndarray:
    """A background: a colour gradient with random bars and blobs (foliage, buildings, sky)."""
    top, bottom = rng.integers(20, 235, (2, 3))
    t = np.linspace(0.0, 1.0, size)[:, None, None]
    img = ((1 - t) * top + t * bottom).repeat(size, axis=1).astype(np.uint8)
    for _ in range(int(rng.integers(0, 8))):
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        x0, y0, x1, y1 = (int(c) for c in rng.integers(0, size, 4))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x0, y0), (x1, y1), color, -1)
        else:
            cv2.circle(img, (x0, y0), int(rng.integers(3, size // 3)), color, -1)
    return cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 2.5)))


def _cut(image: np.ndarray, box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The square around ``box`` (x1, y1, x2, y2) with a random margin and offset, 32x32."""
    side = float(max(box[2] - box[0], box[3] - box[1]))
    shifted = np.asarray(box, np.float64) + np.tile(rng.uniform(-0.06, 0.06, 2) * side, 2)
    return sign_crops(image, shifted[None], margin=float(rng.uniform(0.05, 0.22)))[0]


def _camera_effects(crop: np.ndarray, rng: np.random.Generator, *, held_out: bool) -> np.ndarray:
    """Exposure, colour cast, blur, low resolution, noise and occlusion on a 32x32 crop."""
    img = crop.astype(np.float32)
    gain = float(rng.uniform(0.2, 1.1) if held_out else rng.uniform(0.25, 1.5))
    img = img * gain * rng.uniform(0.85, 1.15, 3) + rng.uniform(-20, 30)
    if rng.random() < 0.6:
        sigma = float(rng.uniform(0.3, 1.3))
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    if rng.random() < 0.4:  # seen from far away: fewer pixels
        low = int(rng.integers(12, 24))
        img = cv2.resize(cv2.resize(img, (low, low), interpolation=cv2.INTER_AREA), (CROP, CROP))
    img = img + rng.normal(0.0, float(rng.uniform(0, 8)), img.shape)
    if rng.random() < 0.2:  # a branch or another sign in front
        w, h = (int(x) for x in rng.integers(4, 12, 2))
        x, y = int(rng.integers(0, CROP - w)), int(rng.choice([0, CROP - h]))
        img[y : y + h, x : x + w] = rng.integers(0, 200, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def scenario_sign_crops(
    scenarios: tuple[str, ...] = ("stop_sign", "speed_limit_change", "car_following"),
    *,
    seed: int = 0,
    held_out: bool = True,
    camera_hz: float = 10.0,
    min_side: float = 12.0,
    min_visible: float = 0.8,
) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)``: crops of every sign in the camera frames of driving ``scenarios``.

    Each frame's truth box of a sign at least ``min_side`` px tall (12: the smallest region
    ``SignRecognizer`` looks at) and ``min_visible`` unoccluded is cut as the operator cuts
    a region (``sign_crops``); ``y`` is its GTSRB class. The default held-out scenarios
    are for evaluation only.
    """
    crops, classes = [], []
    for name in scenarios:
        sim = DrivingSimulator(name, seed=seed, held_out=held_out, camera_hz=camera_hz,
                               lidar_hz=1e-3, ego_hz=1e-3)  # fmt: skip
        sim.setup(Context())
        while (out := sim.poll(0)) is not None:
            for port, message in out:
                if port != "camera":
                    continue
                t = message.truth
                boxes = np.asarray(t["boxes"])
                keep = (np.asarray(t["sign_classes"]) >= 0) & (
                    np.asarray(t["visible"]) >= min_visible
                )
                keep &= (boxes[:, 3] - boxes[:, 1]) >= min_side
                crops.append(sign_crops(message.payload["image"], boxes[keep]))
                classes.append(np.asarray(t["sign_classes"])[keep])
    X = np.concatenate(crops) if crops else np.zeros((0, CROP, CROP, 3), np.uint8)
    y = np.concatenate(classes).astype(np.int64) if classes else np.zeros(0, np.int64)
    return X, y


# -- real GTSRB images ---------------------------------------------------------------------
_ROI = ("OrigRoi.X1", "OrigRoi.Y1", "OrigRoi.X2", "OrigRoi.Y2")


@dataclass(frozen=True)
class SignFolder:
    """Images and labels read from a GTSRB-style folder (``images/`` + ``labels.csv``).

    ``boxes`` (N, 4) float32: the sign in each 32x32 image, GTSRB's region of interest
    (``OrigRoi.*`` scaled from ``OrigWidth`` x ``OrigHeight``) where ``labels.csv`` has
    it, else the whole image.
    """

    images: np.ndarray  # (N, 32, 32, 3) uint8 BGR
    class_ids: np.ndarray  # (N,) int64
    files: tuple[str, ...]
    boxes: np.ndarray

    def sign_crops(self) -> np.ndarray:
        """Each image cut around its box as ``SignRecognizer`` cuts a region."""
        crops = [sign_crops(i, b[None]) for i, b in zip(self.images, self.boxes, strict=True)]
        return np.concatenate(crops) if crops else np.zeros((0, CROP, CROP, 3), np.uint8)


def read_sign_folder(folder: str | os.PathLike[str]) -> SignFolder:
    """Read ``labels.csv`` (at least ``Filename`` and ``ClassId``) and its ``images/``.

    Images of another size are resized to 32x32; a missing column or an unreadable image
    raises ``ValueError`` naming the file.
    """
    root = Path(folder)
    labels = root / "labels.csv"
    if not labels.is_file():
        raise ValueError(f"{str(labels)!r} not found: a sign folder holds images/ and labels.csv")
    with labels.open(newline="") as f:
        rows = list(csv.DictReader(f))
    missing = {"Filename", "ClassId"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"{str(labels)!r} lacks column(s) {sorted(missing)}")
    images, classes, boxes = [], [], []
    for row in rows:
        path = root / "images" / row["Filename"]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{str(path)!r} (listed in labels.csv) is missing or not an image")
        if image.shape[:2] != (CROP, CROP):
            image = cv2.resize(image, (CROP, CROP), interpolation=cv2.INTER_AREA)
        images.append(image)
        classes.append(int(row["ClassId"]))
        boxes.append(_roi(row))
    return SignFolder(
        np.array(images, np.uint8).reshape(-1, CROP, CROP, 3),
        np.array(classes, np.int64),
        tuple(row["Filename"] for row in rows),
        np.array(boxes, np.float32).reshape(-1, 4),
    )


def _roi(row: dict[str, str]) -> tuple[float, ...]:
    """The sign's box in the 32x32 image: GTSRB's ROI scaled, else the whole image."""
    if not all(row.get(k) for k in (*_ROI, "OrigWidth", "OrigHeight")):
        return (0.0, 0.0, float(CROP), float(CROP))
    sx, sy = CROP / float(row["OrigWidth"]), CROP / float(row["OrigHeight"])
    x0, y0, x1, y1 = (float(row[k]) for k in _ROI)
    return (x0 * sx, y0 * sy, (x1 + 1) * sx, (y1 + 1) * sy)


def gtsrb_split(files: tuple[str, ...], class_ids: np.ndarray) -> list[str]:
    """``"train"`` for the first ``REAL_TRAIN_PER_CLASS`` sorted file names of each class,
    ``"test"`` for the rest."""
    split = ["test"] * len(files)
    for c in np.unique(class_ids):
        members = sorted(np.flatnonzero(class_ids == c), key=lambda i: files[i])
        for i in members[:REAL_TRAIN_PER_CLASS]:
            split[i] = "train"
    return split


# -- writing -------------------------------------------------------------------------------
def _sim_rows(per_class: int, test_per_class: int, seed: int) -> Iterator[tuple]:
    for split, count, held_out in (("train", per_class, False), ("test", test_per_class, True)):
        for k in range(count):
            crop_seed = seed * 1_000_003 + k
            for c in range(NUM_CLASSES):
                yield render_sign_crop(c, crop_seed, held_out=held_out), c, "sim", crop_seed, split


def _table(rows) -> pa.Table:
    images, classes, origins, seeds, splits = zip(*rows, strict=True) if rows else ([],) * 5
    return pa.table(
        {
            "image": pa.array([np.ascontiguousarray(i).tobytes() for i in images], SCHEMA[0].type),
            "class_id": pa.array(classes, pa.int64()),
            "origin": pa.array(origins, pa.string()),
            "seed": pa.array(seeds, pa.int64()),
            "split": pa.array(splits, pa.string()),
        },
        schema=SCHEMA,
    )


def write_sign_dataset(
    out_dir: str | os.PathLike[str],
    *,
    per_class: int = 300,
    test_per_class: int = 40,
    seed: int = 0,
    real: str | os.PathLike[str] | None = "default",
) -> Path:
    """Write ``signs.parquet`` under ``out_dir`` and return its path.

    ``per_class`` / ``test_per_class``: simulator crops per class for training / testing;
    ``seed``: picks the crops (the same seed writes the same file); ``real``: the GTSRB
    folder to add (``"default"``: the shared ``signs-gtsrb`` when present; ``None``: none).
    """
    rows = list(_sim_rows(per_class, test_per_class, seed))
    folder = _real_folder(real)
    if folder is not None:
        signs = read_sign_folder(folder)
        splits = gtsrb_split(signs.files, signs.class_ids)
        real_rows = zip(signs.sign_crops(), signs.class_ids, splits, strict=True)
        rows += [(img, int(c), "gtsrb", -1, s) for img, c, s in real_rows]
    path = Path(out_dir) / FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(_table(rows), path)
    return path


def _real_folder(real: str | os.PathLike[str] | None) -> Path | None:
    if real is None:
        return None
    if str(real) != "default":
        return Path(real)
    try:
        return data_path("signs-gtsrb")
    except FileNotFoundError:
        return None


def write_sign_folder(
    out_dir: str | os.PathLike[str], *, per_class: int = 3, seed: int = 0, held_out: bool = True
) -> Path:
    """Write simulator crops in the GTSRB layout (``images/*.ppm``, ``labels.csv``).

    ``edgeray eval signs`` reads this layout; returns ``out_dir``.
    """
    root = Path(out_dir)
    (root / "images").mkdir(parents=True, exist_ok=True)
    with (root / "labels.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Filename", "ClassId"])
        for k in range(per_class):
            for c in range(NUM_CLASSES):
                name = f"sim_{c:02d}_{seed}_{k:04d}.ppm"
                cv2.imwrite(str(root / "images" / name), render_sign_crop(c, seed * 1_000_003 + k,
                            held_out=held_out))  # fmt: skip
                writer.writerow([name, c])
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--test-per-class", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-real", action="store_true", help="simulator crops only")
    args = parser.parse_args(argv)
    path = write_sign_dataset(
        args.out_dir, per_class=args.per_class, test_per_class=args.test_per_class,
        seed=args.seed, real=None if args.no_real else "default",
    )  # fmt: skip
    print(f"wrote {pq.read_metadata(path).num_rows} crops to {path}")


if __name__ == "__main__":
    main()
