"""Test-time views for the sign classifier, built into its ONNX graph.

A sign crop is cut around a box that a detector or a colour threshold found, so the sign
in it is a little larger, smaller or off-centre from one crop to the next. The exported
classifier therefore scores a few *views* of each crop (the crop itself, zoomed in and
out, shifted) and returns the mean of their softmax scores. The views are made inside
the graph, so ``model.onnx`` keeps its interface (uint8 ``[N, 32, 32, 3]`` BGR in,
``[N, 43]`` probabilities out) and every caller gets them; the cost is one network pass
per view.

``with_views(model, views)`` wraps any such classifier: one ONNX ``GridSample`` draws all
views of all crops (bilinear, edges replicated, as ``sign_crops`` replicates them), the
original network scores the ``len(views) * N`` view crops as one batch, and a mean over
views gives the scores. A view is ``(zoom, dx, dy)``: the crop magnified ``zoom`` times
about its centre, then moved ``dx``, ``dy`` pixels (right, down).

Run it on an exported classifier (the training command does this itself)::

    python -m models.training.sign_views models/artifacts/gtsrb-signs/model.onnx
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models._errors import ModelError, SignatureMismatch

#: The views the committed classifier averages: the crop, 1.1x larger, 0.9x smaller.
#: Chosen on the real validation images and the simulator test split (MANIFEST.md).
VIEWS: tuple[tuple[float, float, float], ...] = ((1.0, 0.0, 0.0), (1.1, 0.0, 0.0), (0.9, 0.0, 0.0))
#: The metadata key under which a wrapped model lists its views (so it is not wrapped twice).
VIEWS_KEY = "test_time_views"
INPUT_NAME, OUTPUT_NAME = "images", "scores"


def view_grid(views, size: int = 32) -> np.ndarray:
    """The ``GridSample`` grid, float32 ``[1, size, size * len(views), 2]``: for each view
    side by side, where each of its pixels samples the crop (x, y in [-1, 1], pixel
    centres as ``align_corners=0`` places them)."""
    if not views:
        raise ModelError("no views given: at least one (zoom, dx, dy) is needed, e.g. (1, 0, 0)")
    centres = (2 * np.arange(size, dtype=np.float64) + 1) / size - 1
    ys, xs = np.meshgrid(centres, centres, indexing="ij")
    grids = []
    for zoom, dx, dy in views:
        if zoom <= 0:
            raise ModelError(f"view {(zoom, dx, dy)}: zoom must be > 0")
        grids.append(np.stack([(xs - 2 * dx / size) / zoom, (ys - 2 * dy / size) / zoom], -1))
    return np.concatenate(grids, axis=1)[None].astype(np.float32)


def with_views(model: onnx.ModelProto, views=VIEWS) -> onnx.ModelProto:
    """A copy of the classifier ``model`` whose ``scores`` are the mean over ``views``.

    ``model`` must take ``images`` (uint8 NHWC, square crops of a fixed side) and give
    ``scores`` ``[N, C]`` (else ``SignatureMismatch``); a model that has views already, or
    an empty list of views, raises ``ModelError``.
    """
    meta = {p.key: p.value for p in model.metadata_props}
    if VIEWS_KEY in meta:
        raise ModelError(f"the model has test-time views already ({meta[VIEWS_KEY]})")
    graph = model.graph
    names = [i.name for i in graph.input], [o.name for o in graph.output]
    if names != ([INPUT_NAME], [OUTPUT_NAME]):
        raise SignatureMismatch(
            f"expected one input {INPUT_NAME!r} and one output {OUTPUT_NAME!r}, "
            f"the model has inputs {names[0]} and outputs {names[1]}"
        )
    dims = graph.input[0].type.tensor_type.shape.dim
    size = dims[1].dim_value
    if len(dims) != 4 or size <= 0 or dims[2].dim_value != size:
        raise SignatureMismatch(f"{INPUT_NAME!r} must be [N, S, S, C] with a fixed side S")
    if not any(o.domain in ("", "ai.onnx") and o.version >= 16 for o in model.opset_import):
        raise ModelError("GridSample needs ONNX opset >= 16: export the network with opset 17")
    k, classes = len(views), graph.output[0].type.tensor_type.shape.dim[1].dim_value

    wrapped = onnx.ModelProto()
    wrapped.CopyFrom(model)
    g = wrapped.graph
    for node in g.node:  # the network now reads the views and writes one score row each
        node.input[:] = ["view_images" if n == INPUT_NAME else n for n in node.input]
        node.output[:] = ["view_scores" if n == OUTPUT_NAME else n for n in node.output]
    const = lambda name, value: numpy_helper.from_array(np.asarray(value), name)  # noqa: E731
    g.initializer.extend([
        const("views_grid", view_grid(views, size)),
        const("views_planes", np.array([1, -1, size, size], np.int64)),
        const("views_split", np.array([-1, dims[3].dim_value, size, k, size], np.int64)),
        const("views_batch", np.array([-1, size, size, dims[3].dim_value], np.int64)),
        const("views_scores", np.array([k, -1, classes], np.int64)),
    ])  # fmt: skip
    make = helper.make_node
    before = [
        make("Cast", [INPUT_NAME], ["views_f"], to=TensorProto.FLOAT),
        make("Transpose", ["views_f"], ["views_nchw"], perm=[0, 3, 1, 2]),
        # every channel of every crop is one plane: one GridSample draws all views of all crops
        make("Reshape", ["views_nchw", "views_planes"], ["views_in"]),
        make(
            "GridSample",
            ["views_in", "views_grid"],
            ["views_out"],
            mode="bilinear",
            padding_mode="border",
            align_corners=0,
        ),
        make("Reshape", ["views_out", "views_split"], ["views_split_out"]),  # [N, C, S, k, S]
        make("Transpose", ["views_split_out"], ["views_nhwc"], perm=[3, 0, 2, 4, 1]),
        make("Reshape", ["views_nhwc", "views_batch"], ["views_flat"]),  # [k * N, S, S, C]
        make("Round", ["views_flat"], ["views_round"]),
        make("Cast", ["views_round"], ["view_images"], to=TensorProto.UINT8),
    ]
    after = [
        make("Reshape", ["view_scores", "views_scores"], ["views_per_view"]),  # [k, N, classes]
        make("ReduceMean", ["views_per_view"], [OUTPUT_NAME], axes=[0], keepdims=0),
    ]
    nodes = [*before, *g.node, *after]
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    helper.set_model_props(wrapped, {**meta, VIEWS_KEY: json.dumps([list(v) for v in views])})
    onnx.checker.check_model(wrapped, full_check=True)
    return wrapped


def add_views(path: str | os.PathLike[str], views=VIEWS) -> Path:
    """Rewrite the classifier at ``path`` with test-time ``views``; returns the path."""
    out = Path(path)
    onnx.save(with_views(onnx.load(str(out)), views), str(out))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="model.onnx of a sign classifier, rewritten in place")
    args = parser.parse_args(argv)
    path = add_views(args.model)
    print(json.dumps({"model": str(path), "views": [list(v) for v in VIEWS],
                      "bytes": path.stat().st_size}))  # fmt: skip


if __name__ == "__main__":
    main()
