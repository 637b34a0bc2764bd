"""The simulator's detection datasets: the DontCare rule, the Parquet round trip, KITTI folders."""

from __future__ import annotations

import itertools
import json

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from operators.driving import CLASSES
from pipelines.detector_dataset import (
    TRAIN_SCALE,
    dont_care,
    read_parquet,
    sim_frames,
    write_kitti,
    write_parquet,
)
from pipelines.eval_detect import read_labels

VEHICLE, PEDESTRIAN, SIGN = (CLASSES.index(c) for c in ("vehicle", "pedestrian", "sign"))


@pytest.fixture(scope="module")
def frames():
    scenarios = ("car_following", "pedestrian_crossing")
    return list(itertools.islice(sim_frames(scenarios=scenarios, seeds=(7,), camera_hz=0.5), 12))


def test_dont_care_marks_small_and_hidden_objects_but_not_hidden_signs():
    boxes = np.array([[0, 0, 10, 11.9], [0, 0, 10, 12], [0, 0, 10, 40], [0, 0, 10, 40],
                      [0, 0, 10, 40]], np.float32)  # fmt: skip
    classes = np.array([VEHICLE, VEHICLE, PEDESTRIAN, SIGN, VEHICLE])
    visible = np.array([1.0, 1.0, 0.39, 0.0, 0.4])

    assert dont_care(boxes, classes, visible).tolist() == [True, False, True, False, False]


def test_frames_carry_objects_of_every_class(frames):
    classes = np.concatenate([f.classes for f in frames])

    assert len(frames) == 12
    assert {VEHICLE, PEDESTRIAN} <= set(classes.tolist())
    assert all(f.image.shape == (360, 640, 3) and len(f.boxes) == len(f.classes) for f in frames)


def test_parquet_round_trip(tmp_path, frames):
    path = tmp_path / "d.parquet"

    count = write_parquet(path, iter(frames), rows_per_group=5)
    rows = read_parquet(path)

    assert count == len(rows) == len(frames)
    names = json.loads(pq.read_schema(path).metadata[b"class_names"])
    assert tuple(names) == CLASSES
    for row, f in zip(rows, frames, strict=True):
        assert (row["scenario"], row["seed"], row["frame"]) == (f.scenario, 7, f.frame)
        assert row["image"].shape == (234, 416, 3) and (row["width"], row["height"]) == (416, 234)
        np.testing.assert_allclose(row["boxes"], f.boxes * TRAIN_SCALE, atol=1e-3)
        assert row["classes"].tolist() == f.classes.tolist()
        assert row["dont_care"].tolist() == f.dont_care.tolist()
        small = cv2.resize(f.image, (416, 234), interpolation=cv2.INTER_LINEAR)
        assert np.abs(row["image"].astype(int) - small).mean() < 4  # JPEG, quality 85


def test_kitti_folder_has_an_image_and_a_label_file_per_frame(tmp_path, frames):
    root = write_kitti(tmp_path / "kitti", iter(frames))

    images = sorted((root / "image_2").glob("*.png"))
    assert [p.stem for p in images] == [f"{n:06d}" for n in range(len(frames))]
    for path, f in zip(images, frames, strict=True):
        assert np.array_equal(cv2.imread(str(path)), f.image)  # PNG: lossless
        labels = read_labels(root / "label_2" / f"{path.stem}.txt")
        kinds = [CLASSES[c] for c in f.classes]
        expected = ["DontCare" if dc else k for k, dc in zip(kinds, f.dont_care, strict=True)]
        assert [t for t, _ in labels] == expected
        np.testing.assert_allclose([b for _, b in labels] or np.zeros((0, 4)), f.boxes,
                                   atol=0.006)  # fmt: skip


def test_held_out_frames_differ_from_training_ones():
    train = next(sim_frames(scenarios=("cut_in",), seeds=(0,), camera_hz=0.5))
    held = next(sim_frames(scenarios=("cut_in",), seeds=(0,), held_out=True, camera_hz=0.5))

    assert held.held_out and not train.held_out
    assert not np.array_equal(train.image, held.image)


def test_the_training_reader_sees_what_the_writer_wrote(tmp_path, frames):
    from models.training.detector import MIN_TRAIN_VISIBLE, DetectionData  # needs no torch

    write_parquet(tmp_path / "d.parquet", iter(frames))
    data = DetectionData.read(tmp_path / "d.parquet")

    assert data.images.shape == (len(frames), 234, 416, 3) and data.class_names == CLASSES
    for target, f in zip(data.targets, frames, strict=True):
        rows = target[target[:, 6] > 0]
        assert rows[:, 0].tolist() == f.classes.tolist()
        np.testing.assert_allclose(rows[:, 1:5], f.boxes * TRAIN_SCALE, atol=1e-3)
        hidden = (f.visible < MIN_TRAIN_VISIBLE) & (f.classes != SIGN)
        assert rows[:, 5].astype(bool).tolist() == hidden.tolist()


def test_the_training_reader_names_missing_columns(tmp_path):
    from models._errors import DatasetError
    from models.training.detector import DetectionData

    pq.write_table(pa.table({"image": [b""]}), tmp_path / "bad.parquet")

    with pytest.raises(DatasetError, match=r"lacks column\(s\) \['boxes', 'classes'"):
        DetectionData.read(tmp_path / "bad.parquet")
