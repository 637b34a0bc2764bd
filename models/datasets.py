"""Reading training data: image datasets stored as Parquet.

An image dataset is one Parquet file, or a directory of them, with at least the columns
``image`` (a 32x32x3 uint8 image, row-major: ``fixed_size_binary[3072]``, ``binary`` or a
list of uint8 with 3072 items), ``class_id`` (integer) and, for filtering, ``split`` and
``origin`` (strings). ``pipelines.sign_dataset`` writes such a dataset (simulator crops and
real GTSRB images); this module reads it without knowing where it came from.

>>> import tempfile, pyarrow as pa, pyarrow.parquet as pq
>>> path = os.path.join(tempfile.mkdtemp(), "d.parquet")
>>> pq.write_table(pa.table({"image": [bytes(3072)] * 2, "class_id": [3, 4],
...                          "origin": ["sim", "gtsrb"], "split": ["train", "test"]}), path)
>>> X, y = read_image_dataset(path, origin="sim")
>>> X.shape, X.dtype, y.tolist()
((1, 32, 32, 3), dtype('uint8'), [3])
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from models._errors import DatasetError

#: Shape of one image in an image dataset (height, width, channels).
IMAGE_SHAPE = (32, 32, 3)
_IMAGE_BYTES = int(np.prod(IMAGE_SHAPE))


def read_image_dataset(
    path_or_dir: str | os.PathLike[str],
    *,
    split: str | None = None,
    origin: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)``: images (N, 32, 32, 3) uint8 and their class ids (N,) int64.

    ``split`` / ``origin``: keep only the rows whose column has that value (``None``: all).
    Raises ``DatasetError`` when the path is missing, a column is missing or an image does
    not hold 32x32x3 bytes.
    """
    if not os.path.exists(path_or_dir):
        raise DatasetError(f"image dataset {str(path_or_dir)!r} not found")
    dataset = ds.dataset(os.fspath(path_or_dir), format="parquet")
    wanted = {"image", "class_id"} | {k for k, v in (("split", split), ("origin", origin)) if v}
    missing = wanted - set(dataset.schema.names)
    if missing:
        raise DatasetError(
            f"image dataset {str(path_or_dir)!r} lacks column(s) {sorted(missing)}; it has "
            f"{dataset.schema.names} (write one with pipelines.sign_dataset)"
        )
    where = None
    for column, value in (("split", split), ("origin", origin)):
        if value is not None:
            test = pc.field(column) == value
            where = test if where is None else where & test
    table = dataset.to_table(columns=["image", "class_id"], filter=where)
    images = _image_bytes(table.column("image"), path_or_dir)
    X = images.reshape(-1, *IMAGE_SHAPE)
    y = table.column("class_id").to_numpy().astype(np.int64)
    return X, y


def _image_bytes(column: pa.ChunkedArray, where: str | os.PathLike[str]) -> np.ndarray:
    """The ``image`` column as one (N, 3072) uint8 array, checking every image's size."""
    kind = column.type
    if pa.types.is_fixed_size_binary(kind) or pa.types.is_binary(kind):
        values = column.to_pylist()
        sizes = {len(v) for v in values}
        flat = np.frombuffer(b"".join(values), np.uint8)
    elif pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind):
        sizes = set(pc.list_value_length(column).to_numpy().tolist())
        flat = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.uint8)
    else:
        raise DatasetError(
            f"image dataset {str(where)!r}: column 'image' is {kind}; expected 32x32x3 uint8 "
            "images as fixed_size_binary[3072], binary or a list of 3072 uint8"
        )
    if sizes - {_IMAGE_BYTES}:
        raise DatasetError(
            f"image dataset {str(where)!r}: images of {sorted(sizes)} bytes; expected "
            f"{_IMAGE_BYTES} (32x32x3 uint8)"
        )
    return flat.reshape(-1, _IMAGE_BYTES)
