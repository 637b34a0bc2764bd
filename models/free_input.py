"""Free the height and width of a fully convolutional ONNX model's image input.

A detector exported at one square size (``[1, 3, 416, 416]``) whose graph has no size
baked in (convolutions, resizes by scale, reshapes from ``Shape``) runs on any input
whose sides are multiples of its largest stride. On a 16:9 camera, a 416x416 letterbox
is 44 % padding; the same model on a 256x416 input sees the frame at the same scale and
spends ~40 % less compute. This writes a copy of the model whose input height and width
(and the output's cell count) are symbolic, with the weights untouched, and checks that
ONNX Runtime runs it at ``check_hw``. Whether the detections stay as good is for the
model's evaluation to say (``bench.driving`` scores the driving pipeline's detector at
the size the pipeline runs it).

Run: ``python -m models.free_input SRC.onnx DST.onnx [--check 256 416]``.
"""

from __future__ import annotations

import argparse
import os
import pathlib

import numpy as np
import onnx

from models._errors import NotAnOnnxModel


def free_image_sides(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    check_hw: tuple[int, int] = (256, 416),
) -> pathlib.Path:
    """Write ``src`` to ``dst`` with input dims 2, 3 named ``height`` / ``width``; check it.

    Raises ``NotAnOnnxModel`` when the input is not ``[N, C, H, W]`` or the freed model does
    not run at ``check_hw`` (``(height, width)``).
    """
    model = onnx.load(os.fspath(src))
    weights = {t.name for t in model.graph.initializer}
    (image,) = [i for i in model.graph.input if i.name not in weights]
    dims = image.type.tensor_type.shape.dim
    if len(dims) != 4:
        raise NotAnOnnxModel(
            f"{src}: input {image.name!r} has {len(dims)} dims, expected [N, C, H, W]", path=src
        )
    for dim, name in ((dims[2], "height"), (dims[3], "width")):
        dim.ClearField("dim_value")
        dim.dim_param = name
    for output in model.graph.output:
        for i, dim in enumerate(output.type.tensor_type.shape.dim[1:-1], start=1):
            dim.ClearField("dim_value")
            dim.dim_param = f"{output.name}_{i}"
    del model.graph.value_info[:]  # inferred for the old size; ONNX Runtime infers again
    onnx.checker.check_model(model)
    out = pathlib.Path(dst)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, os.fspath(out))
    _check(out, image.name, check_hw)
    return out


def _check(dst: pathlib.Path, name: str, hw: tuple[int, int]) -> None:
    """Run the freed model once at ``hw``: a graph with a size baked in fails here."""
    from models.inference import open_session

    blob = np.full((1, 3, *hw), 114.0, np.float32)
    try:
        open_session(dst).run(None, {name: blob})
    except Exception as err:  # ORT raises its own pybind classes
        raise NotAnOnnxModel(
            f"{dst}: the freed model does not run at {hw[0]}x{hw[1]} (HxW): {err}; its graph "
            "has a size baked in, so it only runs at the size it was exported at",
            path=dst,
        ) from err


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m models.free_input", description=__doc__)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--check", nargs=2, type=int, default=(256, 416), metavar=("H", "W"))
    args = ap.parse_args(argv)
    print(free_image_sides(args.src, args.dst, check_hw=tuple(args.check)))


if __name__ == "__main__":
    main()
