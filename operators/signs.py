"""``SignRecognizer``: traffic signs in camera frames, classified over the 43 GTSRB classes.

Three steps, each a pure function here and one call in the operator:

1. Candidate regions: ``colour_candidates`` finds red rims and blue discs (HSV
   thresholds, then connected components of a roughly square size), and/or the sign boxes
   of an upstream ``ObjectDetector`` (``ObjectDetector(keep_image=True)`` sends the frame
   with its boxes).
2. Classification: each region is cut as a square with a margin (``sign_crops``, the way
   ``pipelines.sign_dataset`` cut the training crops) and run through the project's
   ONNX classifier (``models/artifacts/gtsrb-signs/model.onnx``: uint8 ``[N, 32, 32, 3]``
   BGR in, ``[N, 43]`` class probabilities out).
3. Temporal voting: ``SignTracks`` links each region to the track of the same sign in
   earlier frames (overlap or nearby centre) and sums its class probabilities, weighted
   by the region's size; a track's voted class is the best sum once the track has
   ``min_hits`` frames and that class holds ``min_vote`` of the weight.

>>> names = sign_names()
>>> len(names), names[14], names[2]
(43, 'Stop', 'Speed limit (50km/h)')
>>> tracks = SignTracks(min_hits=2)
>>> p = np.eye(43, dtype=np.float32)[[14]]
>>> [tracks.update(np.array([[10, 10, 30, 30]], np.float32), p, t)[1].tolist() for t in (0, 1)]
[[-1], [14]]
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

import models
from models.inference import ModelSignature
from models.registry import Manifest
from operators._errors import MalformedMessage, OperatorError
from operators._message import Message
from operators._models import open_model
from operators._operator import Context, Field, Operator, Outputs, Port, Resources

NUM_CLASSES = 43
CROP = 32
#: The committed classifier (see its MANIFEST.md for data, command and accuracy).
DEFAULT_MODEL = pathlib.Path(models.__file__).parent / "artifacts" / "gtsrb-signs" / "model.onnx"
#: What ``SignRecognizer`` needs of its classifier.
SIGN_SIGNATURE = ModelSignature(
    input_name="images",
    shape=(None, CROP, CROP, 3),
    dtype="uint8",
    output_name="scores",
    output_shape=(None, NUM_CLASSES),
    preprocessing="32x32 square crop with a margin around the sign, BGR uint8, NHWC",
)
_IMAGE = Field("uint8", (None, None, 3))
#: The signs of one frame (what ``SignRecognizer`` emits on ``signs``).
SIGNS_SCHEMA = {
    "boxes": Field("float32", (None, 4)),
    "class_ids": Field("int32", (None,)),
    "scores": Field("float32", (None,)),
    "track_ids": Field("int32", (None,)),
    "voted_classes": Field("int32", (None,)),
    "classes": Field("int32", (None,)),
}
_NAMES = (
    "Speed limit (20km/h)", "Speed limit (30km/h)", "Speed limit (50km/h)",
    "Speed limit (60km/h)", "Speed limit (70km/h)", "Speed limit (80km/h)",
    "End of speed limit (80km/h)", "Speed limit (100km/h)", "Speed limit (120km/h)",
    "No passing", "No passing for vehicles over 3.5 metric tons",
    "Right-of-way at the next intersection", "Priority road", "Yield", "Stop", "No vehicles",
    "Vehicles over 3.5 metric tons prohibited", "No entry", "General caution",
    "Dangerous curve to the left", "Dangerous curve to the right", "Double curve",
    "Bumpy road", "Slippery road", "Road narrows on the right", "Road work",
    "Traffic signals", "Pedestrians", "Children crossing", "Bicycles crossing",
    "Beware of ice/snow", "Wild animals crossing", "End of all speed and passing limits",
    "Turn right ahead", "Turn left ahead", "Ahead only", "Go straight or right",
    "Go straight or left", "Keep right", "Keep left", "Roundabout mandatory",
    "End of no passing", "End of no passing by vehicles over 3.5 metric tons",
)  # fmt: skip


def sign_names() -> tuple[str, ...]:
    """The 43 GTSRB class names, index = class id (as in ``signs-gtsrb/signnames.csv``)."""
    return _NAMES


# -- candidate regions ----------------------------------------------------------------------
def colour_candidates(image: np.ndarray, *, min_side: int = 12, max_side: int = 200) -> np.ndarray:
    """Boxes (N, 4) float32 ``x1, y1, x2, y2`` of red or blue blobs shaped like a sign.

    Red: hue within 10 of 0/180, saturation > 90; blue: hue 100-130, saturation > 120;
    both value > 40. A blob counts when its box is ``min_side``..``max_side`` pixels,
    roughly square (sides within a factor 1.5) and not a filled rectangle: a plate (disc,
    triangle, octagon, diamond) leaves at least two of its box's corners empty, a car
    body does not.
    """
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    bright = v > 40
    red = ((h <= 10) | (h >= 170)) & (s > 90) & bright
    blue = (h >= 100) & (h <= 130) & (s > 120) & bright
    kernel = np.ones((3, 3), np.uint8)
    boxes = []
    for mask in (red, blue):
        closed = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, kernel)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
        for n, (x, y, w, hgt, _area) in enumerate(stats[1:count], start=1):
            small, large = min(w, hgt), max(w, hgt)
            if small < min_side or large > max_side or large > 1.5 * small:
                continue
            if _filled_corners(labels[y : y + hgt, x : x + w] == n) <= 2:
                boxes.append((x, y, x + w, y + hgt))
    return np.array(boxes, np.float32).reshape(-1, 4)


def _filled_corners(blob: np.ndarray) -> int:
    """How many of the four corner patches (15 % of each side) the blob mostly fills."""
    ph, pw = max(round(blob.shape[0] * 0.15), 1), max(round(blob.shape[1] * 0.15), 1)
    patches = (blob[:ph, :pw], blob[:ph, -pw:], blob[-ph:, :pw], blob[-ph:, -pw:])
    return sum(float(p.mean()) > 0.6 for p in patches)


def sign_crops(image: np.ndarray, boxes: np.ndarray, *, margin: float = 0.12) -> np.ndarray:
    """(N, 32, 32, 3) uint8 crops: the square around each box, ``margin`` of its side added
    on every side, resized (edges replicated where it leaves the image)."""
    crops = np.empty((len(boxes), CROP, CROP, 3), np.uint8)
    for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, np.float64)):
        side = max(x1 - x0, y1 - y0, 1.0) * (1.0 + 2 * margin)
        cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, side / 2
        src = np.float32([[cx - half, cy - half], [cx + half, cy - half], [cx - half, cy + half]])
        dst = np.float32([[0, 0], [CROP, 0], [0, CROP]])
        flags = cv2.INTER_AREA if side > CROP else cv2.INTER_LINEAR
        crops[i] = cv2.warpAffine(image, cv2.getAffineTransform(src, dst), (CROP, CROP),
                                  flags=flags, borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    return crops


# -- temporal voting ------------------------------------------------------------------------
def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass(kw_only=True)
class SignTracks:
    """Tracks of the same sign over frames, and the class each track votes for.

    A region joins the unmatched track whose last box overlaps it most (IoU >= ``min_iou``)
    or, failing that, the nearest whose centre is within 1.5 box sides; otherwise it starts
    a track. A track unseen for ``max_age`` time units ends. Its vote sums the class
    probabilities of its regions, each weighted by the region's side in pixels (a near view
    says more than a far one). ``update`` returns, per region, its track id, the voted
    class (-1 until the track has ``min_hits`` regions) and the vote's share of the weight.
    Plain data: ``state()`` / ``restore(state)``.
    """

    min_hits: int = 3
    max_age: int = 500_000_000
    min_iou: float = 0.1
    tracks: dict[int, dict[str, Any]] = field(default_factory=dict)
    next_id: int = 0

    def update(self, boxes: np.ndarray, probs: np.ndarray, now: int) -> tuple[np.ndarray, ...]:
        """``(track_ids int32, voted_classes int32, vote_shares float32)``, one per box."""
        self.tracks = {k: t for k, t in self.tracks.items() if now - t["seen"] <= self.max_age}
        n = len(boxes)
        ids, voted, shares = np.empty(n, np.int32), np.empty(n, np.int32), np.zeros(n, np.float32)
        free = set(self.tracks)
        for i, box in enumerate(np.asarray(boxes, np.float64)):
            k = self._match(box, free)
            if k is None:
                k, self.next_id = self.next_id, self.next_id + 1
                self.tracks[k] = {"votes": [0.0] * len(probs[i]), "weight": 0.0, "hits": 0}
            free.discard(k)
            track = self.tracks[k]
            side = float(max(box[2] - box[0], box[3] - box[1], 1.0))
            track["votes"] = [v + side * float(p) for v, p in zip(track["votes"], probs[i],
                                                                   strict=True)]  # fmt: skip
            track.update(box=box.tolist(), seen=int(now), hits=track["hits"] + 1,
                         weight=track["weight"] + side)  # fmt: skip
            best = int(np.argmax(track["votes"]))
            ids[i] = k
            voted[i] = best if track["hits"] >= self.min_hits else -1
            shares[i] = track["votes"][best] / track["weight"]
        return ids, voted, shares

    def _match(self, box: np.ndarray, free: set[int]) -> int | None:
        best, best_iou = None, self.min_iou
        for k in free:
            iou = _iou(box, np.asarray(self.tracks[k]["box"]))
            if iou >= best_iou:
                best, best_iou = k, iou
        if best is not None:
            return best
        centre, nearest = (box[:2] + box[2:]) / 2, None
        for k in sorted(free):
            other = np.asarray(self.tracks[k]["box"])
            side = max(box[2] - box[0], box[3] - box[1], other[2] - other[0], other[3] - other[1])
            gap = float(np.linalg.norm((other[:2] + other[2:]) / 2 - centre))
            if gap <= 1.5 * side and (nearest is None or gap < nearest[1]):
                nearest = (k, gap)
        return None if nearest is None else nearest[0]

    def state(self) -> dict[str, Any]:
        return {"tracks": {k: dict(t) for k, t in self.tracks.items()}, "next_id": self.next_id}

    def restore(self, state: dict[str, Any]) -> None:
        self.tracks = {int(k): dict(t) for k, t in state["tracks"].items()}
        self.next_id = int(state["next_id"])


# -- the operator ---------------------------------------------------------------------------
class SignRecognizer(Operator):
    """Recognises traffic signs in camera frames and votes over each sign's track.

    Inputs:
      ``camera``: ``{"image": uint8 HxWx3 BGR}``; candidates by colour (red rims, blue
      discs). ``detections``: what ``ObjectDetector(keep_image=True)`` emits (``image``,
      ``boxes`` float32 Nx4, ``classes`` int32 N); its boxes of class ``sign_class`` are the
      candidates (plus colour candidates when ``colour`` is on). A payload of another
      dtype or shape is dead-lettered with the reason (port schema, or
      ``MalformedMessage`` for boxes and classes that do not pair up).
    Outputs:
      ``signs``: ``{"boxes" float32 Nx4, "class_ids" int32 N (this frame's best class),
      "names" (N,) str, "scores" float32 N, "track_ids" int32 N, "voted_classes" int32 N
      (the track's vote, -1 until the track is confirmed), "classes" int32
      (the voted class of each confirmed track in view, what ``DecisionMaker`` reads),
      "distances_m" float32 (the same tracks' distances from the box height when the
      frame carries the camera matrix ``K``, else NaN)}``. Identity and times are the
      frame's.
    Parameters (keyword-only):
      ``model``: ONNX path or registry reference (``NAME@VERSION|ALIAS`` through
      ``ctx.models``), default the committed ``gtsrb-signs`` model; ``score_threshold``
      (0.5): a region of an unconfirmed track is emitted when its best probability
      reaches it; a track is confirmed after ``min_hits`` (3) frames while its voted
      class holds ``min_vote`` (0.3) of its weight; ``max_age_ns`` (0.5 s of event
      time) ends a track;
      ``colour`` (True): look for colour candidates; ``sign_class``: the detector class
      of signs (2, the simulator detector's "sign"; 11 for YOLOX's COCO "stop sign");
      ``plate_m`` (0.8): sign size for distances;
      ``intra_op_threads`` (1).

    ``setup`` refuses a file that is not ONNX (``NotAnOnnxModel``) or a model whose input
    is not uint8 ``[N, 32, 32, 3]`` with a ``[N, 43]`` ``scores`` output
    (``SignatureMismatch``).

    >>> import pickle
    >>> op = SignRecognizer(score_threshold=0.6)
    >>> pickle.loads(pickle.dumps(op)).score_threshold
    0.6
    """

    inputs = (
        Port("camera", {"image": _IMAGE}),
        Port("detections", {"image": _IMAGE, "boxes": Field("float32", (None, 4)),
                            "classes": Field("int32", (None,))}),
    )  # fmt: skip
    outputs = (Port("signs", SIGNS_SCHEMA),)
    resources = Resources(num_cpus=0.5)
    signature: ModelSignature = SIGN_SIGNATURE

    def __init__(
        self,
        *,
        model: str | os.PathLike = DEFAULT_MODEL,
        score_threshold: float = 0.5,
        min_hits: int = 3,
        min_vote: float = 0.3,
        max_age_ns: int = 500_000_000,
        colour: bool = True,
        sign_class: int = 2,
        plate_m: float = 0.8,
        intra_op_threads: int = 1,
    ) -> None:
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        self.model = str(model)
        self.score_threshold = float(score_threshold)
        self.min_vote = float(min_vote)
        self.colour = bool(colour)
        self.sign_class = int(sign_class)
        self.plate_m = float(plate_m)
        self.intra_op_threads = int(intra_op_threads)
        self.tracks = SignTracks(min_hits=min_hits, max_age=max_age_ns)
        self.manifest: Manifest | None = None
        self._session: Any = None
        self._name = type(self).__name__

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_session": None}  # a copy opens its own session in setup()

    def setup(self, ctx: Context) -> None:
        self._name = ctx.operator
        self._session, self.manifest = open_model(
            self.model, self.signature, ctx, intra_op_threads=self.intra_op_threads
        )

    def teardown(self) -> None:
        self._session = None

    def snapshot(self) -> dict[str, Any]:
        return self.tracks.state()

    def restore(self, state: dict[str, Any]) -> None:
        self.tracks.restore(state)

    def classify(self, crops: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 43) float32 of uint8 (N, 32, 32, 3) BGR crops."""
        if self._session is None:
            raise OperatorError(
                "classify() before setup(ctx) opened the model", operator=self._name
            )
        crops = np.asarray(crops)
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (CROP, CROP, 3):
            raise MalformedMessage(
                f"sign crops must be uint8 (N, {CROP}, {CROP}, 3) BGR, got "
                f"{crops.dtype}{crops.shape}", operator=self._name,
            )  # fmt: skip
        if len(crops) == 0:
            return np.zeros((0, NUM_CLASSES), np.float32)
        (scores,) = self._session.run(["scores"], {"images": np.ascontiguousarray(crops)})
        return np.asarray(scores, np.float32)

    def process(self, port: str, message: Message) -> Outputs:
        p = message.payload
        image = np.asarray(p["image"])
        boxes = self._candidates(port, p, image)
        probs = self.classify(sign_crops(image, boxes))
        best = probs.argmax(axis=1).astype(np.int32)
        scores = probs.max(axis=1) if len(probs) else np.zeros(0, np.float32)
        ids, voted, shares = self.tracks.update(boxes, probs, message.event_ts)
        voted = np.where(shares >= self.min_vote, voted, -1).astype(np.int32)
        keep = (voted >= 0) | (scores >= self.score_threshold)
        boxes, best, scores, ids, voted = (
            boxes[keep],
            best[keep],
            scores[keep],
            ids[keep],
            voted[keep],
        )
        yield "signs", message.derive({
            "boxes": boxes.astype(np.float32), "class_ids": best,
            "names": np.array([_NAMES[c] for c in best], dtype="<U64").reshape(-1),
            "scores": scores.astype(np.float32), "track_ids": ids, "voted_classes": voted,
            "classes": voted[voted >= 0],
            "distances_m": self._distances(p, boxes[voted >= 0]),
        })  # fmt: skip

    def _candidates(self, port: str, p: Any, image: np.ndarray) -> np.ndarray:
        found = [colour_candidates(image)] if self.colour else []
        if port == "detections":
            boxes, classes = np.asarray(p["boxes"]), np.asarray(p["classes"])
            if len(boxes) != len(classes):
                raise MalformedMessage(
                    f"detections carry {len(boxes)} boxes but {len(classes)} classes; expected "
                    "one class per box (ObjectDetector's payload)", operator=self._name,
                )  # fmt: skip
            found.append(boxes[classes == self.sign_class].astype(np.float32))
        return _dedup(np.concatenate(found) if found else np.zeros((0, 4), np.float32))

    def _distances(self, p: Any, boxes: np.ndarray) -> np.ndarray:
        if "K" not in p or len(boxes) == 0:
            return np.full(len(boxes), np.nan, np.float32)
        focal = float(np.asarray(p["K"])[1, 1])
        height = np.maximum(boxes[:, 3] - boxes[:, 1], 1.0)
        return (focal * self.plate_m / height).astype(np.float32)


def _dedup(boxes: np.ndarray, iou: float = 0.5) -> np.ndarray:
    """``boxes`` without the ones overlapping an earlier, kept box by ``iou`` or more."""
    kept: list[np.ndarray] = []
    for box in boxes:
        if all(_iou(box, k) < iou for k in kept):
            kept.append(box)
    return np.array(kept, np.float32).reshape(-1, 4)
