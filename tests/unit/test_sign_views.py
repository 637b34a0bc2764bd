"""Test-time views built into a sign classifier's ONNX graph (models.training.sign_views)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from models._errors import ModelError, SignatureMismatch
from models.training.sign_views import VIEWS, VIEWS_KEY, with_views
from operators.signs import DEFAULT_MODEL


def pixels_model(*, input_name: str = "images") -> onnx.ModelProto:
    """A stand-in classifier whose 'scores' are the crop's own pixels, [N, 32 * 32 * 3]:
    the views the wrapped graph draws can be read back from its output."""
    nodes = [
        helper.make_node("Cast", [input_name], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["f", "flat"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "pixels",
        [helper.make_tensor_value_info(input_name, TensorProto.UINT8, ["n", 32, 32, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 3072])],
        [onnx.numpy_helper.from_array(np.array([-1, 3072], np.int64), "flat")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def run(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images})[0]


def crops(n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def shifted(images: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``images`` moved ``dx`` px right and ``dy`` px down, edge pixels replicated."""
    rows = np.clip(np.arange(32) - dy, 0, 31)
    cols = np.clip(np.arange(32) - dx, 0, 31)
    return images[:, rows][:, :, cols]


def test_one_identity_view_gives_the_model_own_scores():
    images = crops()
    out = run(with_views(pixels_model(), ((1.0, 0, 0),)), images)
    np.testing.assert_array_equal(out, images.reshape(4, -1).astype(np.float32))


def test_scores_are_the_mean_over_shifted_views_of_each_crop():
    images = crops()
    views = ((1.0, 0, 0), (1.0, 1, 0), (1.0, 0, -2))
    out = run(with_views(pixels_model(), views), images)
    expected = np.mean([shifted(images, dx, dy).astype(np.float32) for _, dx, dy in views], 0)
    np.testing.assert_allclose(out, expected.reshape(4, -1), atol=1e-3)


def test_a_zoomed_view_magnifies_the_crop_about_its_centre():
    images = np.zeros((1, 32, 32, 3), np.uint8)
    images[:, 12:20, 12:20] = 255  # an 8-pixel square in the middle
    [out] = run(with_views(pixels_model(), ((2.0, 0, 0),)), images).reshape(1, 32, 32, 3)
    bright = np.argwhere(out[..., 0] >= 128)
    assert bright.min(0).tolist() == [8, 8] and bright.max(0).tolist() == [23, 23]


def test_an_empty_batch_gives_no_rows():
    out = run(with_views(pixels_model()), np.zeros((0, 32, 32, 3), np.uint8))
    assert out.shape == (0, 3072)


def test_a_wrapped_model_lists_its_views_and_refuses_a_second_wrap():
    wrapped = with_views(pixels_model())
    meta = {p.key: p.value for p in wrapped.metadata_props}
    assert meta[VIEWS_KEY] == "[[1.0, 0.0, 0.0], [1.1, 0.0, 0.0], [0.9, 0.0, 0.0]]"
    with pytest.raises(ModelError, match="has test-time views already"):
        with_views(wrapped)


def test_a_model_of_another_interface_or_no_views_is_refused():
    with pytest.raises(SignatureMismatch, match=r"expected one input 'images'.*\['crops'\]"):
        with_views(pixels_model(input_name="crops"))
    with pytest.raises(ModelError, match="no views given"):
        with_views(pixels_model(), ())
    with pytest.raises(ModelError, match="zoom must be > 0"):
        with_views(pixels_model(), ((0.0, 0, 0),))


def test_the_committed_classifier_averages_the_default_views():
    meta = {p.key: p.value for p in onnx.load(str(DEFAULT_MODEL)).metadata_props}
    assert [tuple(v) for v in json.loads(meta[VIEWS_KEY])] == list(VIEWS)
