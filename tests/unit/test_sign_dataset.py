"""The sign crop dataset (pipelines.sign_dataset) and its reader (models.datasets)."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models._errors import DatasetError
from models.datasets import read_image_dataset
from operators.driving.camera import draw_plate
from pipelines.data import data_path
from pipelines.sign_dataset import (
    NUM_CLASSES,
    REAL_TRAIN_PER_CLASS,
    gtsrb_split,
    read_sign_folder,
    render_sign_crop,
    scenario_sign_crops,
    write_sign_dataset,
    write_sign_folder,
)


@pytest.fixture(scope="module")
def gtsrb():
    try:
        return data_path("signs-gtsrb")
    except FileNotFoundError:
        pytest.skip("shared GTSRB data absent")


def test_every_class_is_drawn_differently():
    plates = []
    for c in range(NUM_CLASSES):
        img = np.full((100, 100, 3), 90, np.uint8)
        draw_plate(img, c, 50.0, 50.0, 40.0)
        plates.append(img.astype(np.int32))
    closest = min(
        np.abs(a - b).mean() for a, b in itertools.combinations(plates, 2)
    )  # mean absolute difference of the two most alike plates
    assert closest > 1.0


def test_a_crop_is_32x32_bgr_and_reproducible():
    a = render_sign_crop(14, 7)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, render_sign_crop(14, 7))
    assert not np.array_equal(a, render_sign_crop(14, 7, held_out=True))
    assert not np.array_equal(a, render_sign_crop(14, 8))


def test_a_class_outside_gtsrb_is_refused():
    with pytest.raises(ValueError, match="43 is not a GTSRB class"):
        render_sign_crop(43, 0)


def test_dataset_holds_sim_and_real_with_a_fixed_real_split(tmp_path, gtsrb):
    path = write_sign_dataset(tmp_path, per_class=1, test_per_class=1, seed=3, real=gtsrb)

    X, y = read_image_dataset(path, origin="sim", split="train")
    assert X.shape == (NUM_CLASSES, 32, 32, 3) and sorted(y.tolist()) == list(range(NUM_CLASSES))
    assert read_image_dataset(path, origin="sim", split="test")[0].shape[0] == NUM_CLASSES
    real_train = read_image_dataset(path, origin="gtsrb", split="train")
    real_test = read_image_dataset(path, origin="gtsrb", split="test")
    assert np.bincount(real_train[1], minlength=NUM_CLASSES).tolist() == [2] * NUM_CLASSES
    assert np.bincount(real_test[1], minlength=NUM_CLASSES).tolist() == [3] * NUM_CLASSES
    table = pq.read_table(path)
    assert table.schema.field("image").type == pa.binary(32 * 32 * 3)
    assert set(table.column("seed").to_pylist()) == {-1, 3 * 1_000_003}


def test_real_images_are_stored_cut_to_their_roi_and_never_in_both_splits(tmp_path, gtsrb):
    folder = read_sign_folder(gtsrb)
    splits = gtsrb_split(folder.files, folder.class_ids)
    path = write_sign_dataset(tmp_path, per_class=0, test_per_class=0, real=gtsrb)

    X, y = read_image_dataset(path, origin="gtsrb", split="test")
    held_out = [i for i, s in enumerate(splits) if s == "test"]
    assert np.array_equal(X, folder.sign_crops()[held_out])
    assert (folder.boxes[:, :2] > 1).all() and (folder.boxes[:, 2:] < 31).all()  # GTSRB ROIs
    assert np.array_equal(y, folder.class_ids[held_out])
    train_files = {f for f, s in zip(folder.files, splits, strict=True) if s == "train"}
    assert train_files.isdisjoint(folder.files[i] for i in held_out)


def test_gtsrb_split_takes_the_first_sorted_names_of_each_class():
    files = ("c.ppm", "a.ppm", "b.ppm", "z.ppm")
    classes = np.array([0, 0, 0, 1])
    split = gtsrb_split(files, classes)
    assert REAL_TRAIN_PER_CLASS == 2
    assert split == ["test", "train", "train", "train"]


def test_sim_folder_in_gtsrb_layout_reads_back(tmp_path):
    write_sign_folder(tmp_path, per_class=1, seed=2)
    folder = read_sign_folder(tmp_path)
    assert folder.images.shape == (NUM_CLASSES, 32, 32, 3)
    assert np.array_equal(folder.images[14], render_sign_crop(14, 2 * 1_000_003, held_out=True))


def test_sign_folder_without_labels_or_columns_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"labels\.csv.*not found"):
        read_sign_folder(tmp_path)
    (tmp_path / "labels.csv").write_text("Filename,Class\na.ppm,1\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['ClassId'\]"):
        read_sign_folder(tmp_path)
    (tmp_path / "labels.csv").write_text("Filename,ClassId\na.ppm,1\n")
    with pytest.raises(ValueError, match=r"a\.ppm.*missing or not an image"):
        read_sign_folder(tmp_path)


def _write(path, image_column):
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(image_column)
    pq.write_table(pa.table({"image": image_column, "class_id": list(range(n))}), path)
    return path


def test_reader_accepts_a_list_column_and_a_directory(tmp_path):
    image = np.arange(3072, dtype=np.uint8) % 251
    as_list = pa.array([image.tolist()], pa.list_(pa.uint8()))
    _write(tmp_path / "list.parquet", as_list)
    for part in range(2):
        _write(tmp_path / "parts" / f"part-{part}.parquet", pa.array([image.tobytes()] * 2))

    X_list, _ = read_image_dataset(tmp_path / "list.parquet")
    X, y = read_image_dataset(tmp_path / "parts")
    assert np.array_equal(X_list.ravel(), image)
    assert X.shape == (4, 32, 32, 3) and sorted(y.tolist()) == [0, 0, 1, 1]
    assert all(np.array_equal(x.ravel(), image) for x in X)


def test_reader_refuses_bad_datasets_with_the_reason(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        read_image_dataset(tmp_path / "absent.parquet")
    bad_size = _write(tmp_path / "small.parquet", pa.array([bytes(100)], pa.binary()))
    with pytest.raises(DatasetError, match=r"images of \[100\] bytes; expected 3072"):
        read_image_dataset(bad_size)
    bad_type = _write(tmp_path / "floats.parquet", pa.array([1.5], pa.float64()))
    with pytest.raises(DatasetError, match="column 'image' is double"):
        read_image_dataset(bad_type)
    with pytest.raises(DatasetError, match=r"lacks column\(s\) \['split'\]"):
        read_image_dataset(bad_type, split="train")


def test_scenario_crops_are_the_signs_in_view():
    X, y = scenario_sign_crops(("lane_curve",), camera_hz=2.0)
    assert len(y) > 0 and X.shape == (len(y), 32, 32, 3)
    assert set(y.tolist()) == {2}  # the lane_curve scenario's one sign: 50 km/h


# -- training-time synthesis (models.training.sign_synthesis) --------------------------------
def test_plate_masks_follow_each_class_outline():
    from models.training.sign_synthesis import plate_masks

    disc, warning, yield_, stop = plate_masks(np.array([2, 18, 13, 14]))
    assert disc.shape == (32, 32) and disc.dtype == np.float32
    assert disc[16, 16] == 1.0 and disc[0, 0] == 0.0 and disc[31, 31] == 0.0
    assert warning[27, 4] > 0.5 and warning[5, 4] == 0.0  # points up: full base, empty top
    assert yield_[5, 4] > 0.5 and yield_[27, 4] == 0.0  # points down
    assert stop[16, 5] == 1.0 and not np.allclose(stop, disc)


def test_real_views_and_camera_effects_are_seeded_uint8_batches():
    torch = pytest.importorskip("torch")
    from models.training.sign_synthesis import camera_effects, plate_masks, real_views

    crops = torch.from_numpy(np.stack([render_sign_crop(c, 0) for c in (2, 14, 35)]))
    masks = torch.from_numpy(plate_masks(np.array([2, 14, 35])))

    def draw(seed: int):
        generator = torch.Generator().manual_seed(seed)
        return camera_effects(real_views(crops, masks, generator), generator)

    views = draw(0)
    assert views.shape == crops.shape and views.dtype == torch.uint8
    assert torch.equal(views, draw(0)) and not torch.equal(views, draw(1))
    assert not torch.equal(views, crops)


def test_mirrored_templates_swap_left_and_right_and_skip_asymmetric_signs():
    from models.training.sign_synthesis import mirror_templates

    images = np.stack([render_sign_crop(c, 0) for c in (33, 2, 13)])  # turn right, 50, yield
    mirrored, classes = mirror_templates(images, np.array([33, 2, 13]))
    assert classes.tolist() == [34, 13]  # turn left ahead; yield stays; "50" has no mirror
    assert np.array_equal(mirrored[0], images[0][:, ::-1])
    assert np.array_equal(mirrored[1], images[2][:, ::-1])


def test_validation_holds_out_the_last_real_training_image_of_each_class():
    from models.training.signs import held_out_real

    held = held_out_real(np.array([3, 3, 5, 5, 7]))
    assert held.tolist() == [False, True, False, True, True]
