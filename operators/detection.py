"""``ObjectDetector``: YOLOX object detection with ONNX Runtime, and its pure kernels.

Pre- and post-processing follow the YOLOX layout (``../shared/data/MANIFEST.md``):
``letterbox`` resizes keeping the aspect ratio (``r = min(416/h, 416/w)``) and
pads to 416x416 with 114 at the top-left, BGR, raw 0-255 float32 NCHW;
``decode`` turns the ``[1, 3549, 85]`` output (grids of strides 8, 16, 32,
row-major) into boxes and ``obj x cls`` scores. A fully convolutional model whose input
height and width are free runs on a ``(height, width)`` input too (``input_size``), e.g.
256x416 for a 16:9 camera: the same scale as 416x416, without the padding rows (~40 %
less compute); ``postprocess`` keeps each
cell's best class, filters classes and scores, divides by ``r`` and runs
class-aware NMS (``cv2.dnn.NMSBoxesBatched``, IoU 0.45).

>>> import numpy as np
>>> blob, r = letterbox(np.zeros((208, 832, 3), np.uint8))
>>> blob.shape, blob.dtype, r, float(blob[0, 0, 0, 0]), float(blob[0, 0, -1, 0])
((1, 3, 416, 416), dtype('float32'), 0.5, 0.0, 114.0)
>>> out = np.zeros((1, 3549, 85), np.float32)
>>> out[0, 0, :5] = [0.5, 0.5, np.log(2), np.log(2), 0.9]; out[0, 0, 5 + 2] = 1.0  # a car
>>> boxes, scores, classes = postprocess(out, r=0.5, score_threshold=0.3, image_size=(208, 832))
>>> boxes.tolist(), [round(float(s), 2) for s in scores], classes.tolist()  # clipped
([[0.0, 0.0, 24.0, 24.0]], [0.9], [2])
>>> letterbox(np.zeros((360, 640, 3), np.uint8), (256, 416))[0].shape
(1, 3, 256, 416)
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterable
from typing import Any

import cv2
import numpy as np

import models
from models.inference import ModelSignature
from models.registry import Manifest
from operators._errors import OperatorError
from operators._message import Message
from operators._models import open_model
from operators._operator import Context, Field, Operator, Outputs, Port, Resources

#: YOLOX-nano's input side and output strides.
INPUT_SIZE = 416
#: The project's own detector for the driving simulator's world (vehicle, pedestrian, sign),
#: in YOLOX's layout with 3 classes; its MANIFEST.md says how it was made and how it scores.
SIM_DETECTOR = pathlib.Path(models.__file__).parent / "artifacts" / "sim-detector" / "model.onnx"
#: The same weights with the input's height and width free (``python -m models.free_input``),
#: to run at ``input_for(frame_hw)`` instead of 416x416.
SIM_DETECTOR_HW = SIM_DETECTOR.parent.parent / "sim-detector-hw" / "model.onnx"
STRIDES = (8, 16, 32)
PAD_VALUE = 114
#: COCO classes a vehicle cares about: person, bicycle, car, motorbike, bus, truck,
#: traffic light, stop sign.
COCO_OF_INTEREST = (0, 1, 2, 3, 5, 7, 9, 11)


def input_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` of a model input given as one side (square) or ``(height, width)``."""
    height, width = (size, size) if isinstance(size, int | np.integer) else size
    if height % max(STRIDES) or width % max(STRIDES) or height <= 0 or width <= 0:
        raise ValueError(
            f"detector input {height}x{width} (height x width): both sides must be positive "
            f"multiples of the largest stride {max(STRIDES)}, e.g. 416 or (256, 416)"
        )
    return int(height), int(width)


def input_for(frame_hw: tuple[int, int], side: int = INPUT_SIZE) -> tuple[int, int]:
    """The smallest ``(height, width)`` input that holds a ``frame_hw`` frame letterboxed to
    ``side`` on its longer side (the scale a square ``side`` model sees it at).

    >>> input_for((360, 640))
    (256, 416)
    """
    stride = max(STRIDES)
    r = side / max(frame_hw)
    height, width = (-(-round(n * r) // stride) * stride for n in frame_hw)
    return height, width


def yolox_signature(
    size: int | tuple[int, int] = INPUT_SIZE, num_classes: int = 80
) -> ModelSignature:
    """A YOLOX-layout model's signature: ``[1, 3, height, width]`` in, ``[1, N, 5 + C]`` out."""
    height, width = input_hw(size)
    return ModelSignature(
        input_name="images",
        shape=(1, 3, height, width),
        dtype="float32",
        output_name="output",
        output_shape=(1, None, 5 + num_classes),
        preprocessing=f"letterbox to {height}x{width} (HxW) top-left, pad 114, BGR, float32 "
        "0-255, NCHW",
    )


#: What ``ObjectDetector`` needs of its model by default (YOLOX-nano, COCO's 80 classes).
YOLOX_SIGNATURE = yolox_signature()

#: The detections of one frame (also what ``ObjectDetector`` emits).
DETECTIONS_SCHEMA = {
    "boxes": Field("float32", (None, 4)),
    "scores": Field("float32", (None,)),
    "classes": Field("int32", (None,)),
}


# -- kernels --------------------------------------------------------------------------------------
def letterbox(
    image: np.ndarray, size: int | tuple[int, int] = INPUT_SIZE
) -> tuple[np.ndarray, float]:
    """``(blob, r)``: the image resized by ``r``, padded top-left to ``size`` (a side, or
    ``(height, width)``): 1x3xHxW float32."""
    out_h, out_w = input_hw(size)
    height, width = image.shape[:2]
    r = min(out_h / height, out_w / width)
    new_w, new_h = round(width * r), round(height * r)
    padded = np.full((out_h, out_w, 3), PAD_VALUE, np.uint8)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    padded[:new_h, :new_w] = resized
    blob = np.ascontiguousarray(padded.transpose(2, 0, 1)[None], dtype=np.float32)
    return blob, r


def _grids(size: tuple[int, int], strides: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
    xy, stride_of = [], []
    for stride in strides:
        rows, cols = size[0] // stride, size[1] // stride
        ys, xs = np.mgrid[0:rows, 0:cols]
        xy.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        stride_of.append(np.full(rows * cols, stride))
    return np.concatenate(xy).astype(np.float32), np.concatenate(stride_of).astype(np.float32)


def decode(
    output: np.ndarray,
    size: int | tuple[int, int] = INPUT_SIZE,
    strides: Iterable[int] = STRIDES,
) -> tuple[np.ndarray, np.ndarray]:
    """``(boxes, scores)`` of a raw YOLOX output: xyxy in input pixels, ``obj x cls`` (N x C).

    ``size``: the model input's side, or ``(height, width)``."""
    rows = np.asarray(output, np.float32).reshape(-1, output.shape[-1])
    height, width = input_hw(size)
    grid, stride = _grids((height, width), strides)
    if len(grid) != len(rows):
        raise ValueError(
            f"YOLOX output has {len(rows)} rows, expected {len(grid)} for a {height}x{width} "
            f"(HxW) input with strides {tuple(strides)}"
        )
    centre = (rows[:, 0:2] + grid) * stride[:, None]
    half = np.exp(rows[:, 2:4]) * stride[:, None] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    return boxes, rows[:, 4:5] * rows[:, 5:]


def postprocess(
    output: np.ndarray,
    *,
    r: float,
    score_threshold: float = 0.3,
    nms_iou: float = 0.45,
    classes: Iterable[int] | None = None,
    max_detections: int = 100,
    image_size: tuple[int, int] | None = None,
    size: int | tuple[int, int] = INPUT_SIZE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(boxes float32 Nx4 xyxy, scores float32 N, classes int32 N)`` in original pixels.

    Each grid cell keeps its best class; ``classes`` (``None``: all) filters
    them; boxes are divided by the letterbox ratio ``r`` (and clipped to
    ``image_size`` = ``(height, width)`` when given); NMS is per class. ``size``: the
    model's input side, or ``(height, width)``.
    """
    boxes, scores = decode(output, size)
    best = scores.argmax(axis=1)
    score = scores[np.arange(len(best)), best]
    keep = score >= score_threshold
    if classes is not None:
        keep &= np.isin(best, np.asarray(tuple(classes), np.int64))
    boxes, score, best = boxes[keep] / r, score[keep], best[keep]
    if image_size is not None:
        height, width = image_size
        boxes = np.clip(boxes, 0.0, [width, height, width, height])
    if len(boxes) == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    picked = cv2.dnn.NMSBoxesBatched(
        xywh.tolist(), score.tolist(), best.tolist(), score_threshold, nms_iou
    )
    picked = np.asarray(picked, np.int64).reshape(-1)[:max_detections]
    return (
        boxes[picked].astype(np.float32),
        score[picked].astype(np.float32),
        best[picked].astype(np.int32),
    )


# -- the operator ---------------------------------------------------------------------------------
class ObjectDetector(Operator):
    """Detects objects in camera frames with a YOLOX ONNX model (ONNX Runtime).

    Inputs:
      ``camera``: payload ``{"image": uint8 HxWx3 BGR}``; a frame of another
      dtype or shape is dead-lettered by the port schema.
    Outputs:
      ``detections``: payload ``{"boxes": float32 Nx4 xyxy in image pixels,
      "scores": float32 N (obj x cls), "classes": int32 N (COCO ids),
      "image_size": int32 [height, width]}``, plus every ``carry`` key the
      frame has (by default its ``frame`` index and calibration ``P2``,
      ``R0_rect``, ``Tr_velo_to_cam``, so ``SensorFusion`` can project lidar
      into it) and ``"image"`` when ``keep_image``. Identity and times are the
      frame's (``Message.derive``).
    Parameters (keyword-only):
      ``model``: path of the ONNX file, or a registry reference
      ``NAME@VERSION`` / ``NAME@ALIAS`` (``"yolox@stable"``) resolved in
      ``setup`` through ``ctx.models`` (the pipeline's ``ModelResolver``: the
      node's cache, fetched once per node); opened on the node where the
      operator runs, and the operator pickles without it. ``manifest`` is the
      registry version in use after ``setup`` (``None`` for a path). ``score_threshold``
      (default 0.3), ``nms_iou`` (0.45), ``classes``: COCO ids to keep (default
      ``COCO_OF_INTEREST``; ``None``: all 80), ``max_detections`` (100),
      ``intra_op_threads``: ONNX Runtime threads (1; declare as many CPUs in
      the pipeline when raising it), ``keep_image``, ``carry``. Another model in
      the YOLOX layout: ``input_size`` (416, or ``(height, width)`` for a model whose
      input sides are free, e.g. ``input_for(frame_hw)``) and ``num_classes`` (80), e.g.
      the project's simulator detector (``models/artifacts/sim-detector``) with
      ``num_classes=3, classes=None``.

    ``signature`` is the model it needs (``YOLOX_SIGNATURE`` by default); ``setup`` refuses
    a model that does not fit it (``SignatureMismatch``) and a file that is not
    ONNX (``NotAnOnnxModel``), naming the file. Stateless between frames.

    >>> import pickle
    >>> detector = ObjectDetector(model="yolox_nano.onnx", score_threshold=0.25)
    >>> pickle.loads(pickle.dumps(detector)).score_threshold  # no session until setup(ctx)
    0.25
    >>> ObjectDetector.signature.input_name, ObjectDetector.signature.shape
    ('images', (1, 3, 416, 416))
    """

    inputs = (Port("camera", {"image": Field("uint8", (None, None, 3))}),)
    outputs = (Port("detections", DETECTIONS_SCHEMA),)
    resources = Resources(num_cpus=1.0)
    signature: ModelSignature = YOLOX_SIGNATURE

    def __init__(
        self,
        *,
        model: str | os.PathLike,
        score_threshold: float = 0.3,
        nms_iou: float = 0.45,
        classes: tuple[int, ...] | None = COCO_OF_INTEREST,
        max_detections: int = 100,
        intra_op_threads: int = 1,
        keep_image: bool = False,
        carry: tuple[str, ...] = ("frame", "P2", "R0_rect", "Tr_velo_to_cam"),
        input_size: int | tuple[int, int] = INPUT_SIZE,
        num_classes: int = 80,
    ) -> None:
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        self.model = str(model)
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.classes = None if classes is None else tuple(int(c) for c in classes)
        self.max_detections = int(max_detections)
        self.intra_op_threads = int(intra_op_threads)
        self.keep_image = keep_image
        if keep_image:  # the frame travels on with the boxes (e.g. to SignRecognizer)
            image = Field("uint8", (None, None, 3))
            self.outputs = (Port("detections", {**DETECTIONS_SCHEMA, "image": image}),)
        self.carry = tuple(carry)
        self.input_size = input_hw(input_size)
        self.signature = yolox_signature(self.input_size, int(num_classes))
        self._session: Any = None
        self.manifest: Manifest | None = None  # the registry version in use, after setup
        self._name = type(self).__name__

    def __getstate__(self) -> dict[str, Any]:
        # A session cannot be pickled; a copy opens its own in setup().
        return {**self.__dict__, "_session": None}

    def setup(self, ctx: Context) -> None:
        self._name = ctx.operator
        self._session, self.manifest = open_model(
            self.model, self.signature, ctx, intra_op_threads=self.intra_op_threads
        )

    def teardown(self) -> None:
        self._session = None

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(boxes, scores, classes)`` of one BGR image (after ``setup``)."""
        if self._session is None:
            raise OperatorError("detect() before setup(ctx) opened the model", operator=self._name)
        blob, r = letterbox(image, self.input_size)
        (output,) = self._session.run(
            [self.signature.output_name], {self.signature.input_name: blob}
        )
        return postprocess(
            output,
            r=r,
            score_threshold=self.score_threshold,
            nms_iou=self.nms_iou,
            classes=self.classes,
            max_detections=self.max_detections,
            image_size=image.shape[:2],
            size=self.input_size,
        )

    def process(self, port: str, message: Message) -> Outputs:
        image = message.payload["image"]
        boxes, scores, classes = self.detect(image)
        payload: dict[str, Any] = {
            key: message.payload[key] for key in self.carry if key in message.payload
        }
        payload |= {
            "boxes": boxes,
            "scores": scores,
            "classes": classes,
            "image_size": np.array(image.shape[:2], np.int32),
        }
        if self.keep_image:
            payload["image"] = image
        yield "detections", message.derive(payload)
