"""``edgeray eval signs DIR``: traffic-sign classification accuracy on a labelled folder.

Layout (as ``../shared/data/signs-gtsrb``): ``DIR/images/`` and ``DIR/labels.csv`` with at
least the columns ``Filename`` and ``ClassId`` (GTSRB ids 0..42). Optional columns
``OrigWidth``, ``OrigHeight`` and ``OrigRoi.X1 .. OrigRoi.Y2`` (GTSRB's region of interest
in the original image) place the sign's box; without them the whole image is the box.

Each image is classified by the model ``SignRecognizer`` uses (the committed
``gtsrb-signs`` ONNX model unless ``model`` says otherwise), cut around its box the way
the operator cuts a region (``SignFolder.sign_crops``). Reported: accuracy, per-class
recall, and the most frequent confusions (true class -> predicted class, count).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models import EdgerayError
from operators import Context
from operators.signs import DEFAULT_MODEL, NUM_CLASSES, SignRecognizer, sign_names
from pipelines.sign_dataset import read_sign_folder, scenario_sign_crops


class SignEvalError(EdgerayError):
    """A sign evaluation folder that is not laid out as ``eval signs`` expects."""


@dataclass(frozen=True)
class SignEval:
    """True and predicted class per image, with the image names."""

    files: tuple[str, ...]
    truth: np.ndarray  # (N,) int64
    predicted: np.ndarray  # (N,) int64

    @property
    def accuracy(self) -> float:
        return float((self.truth == self.predicted).mean()) if len(self.truth) else 0.0

    def recall_per_class(self) -> dict[int, float]:
        """Recall of each class present in the folder."""
        return {int(c): round(float((self.predicted[self.truth == c] == c).mean()), 4)
                for c in np.unique(self.truth)}  # fmt: skip

    def confusions(self, top: int = 10) -> list[tuple[int, int, int]]:
        """The ``top`` most frequent ``(true, predicted, count)`` with true != predicted."""
        wrong = Counter(
            (int(t), int(p)) for t, p in zip(self.truth, self.predicted, strict=True) if t != p
        )
        return [(t, p, n) for (t, p), n in wrong.most_common(top)]

    def summary(self) -> dict:
        return {
            "images": len(self.truth),
            "accuracy": round(self.accuracy, 4),
            "recall_per_class": {str(c): r for c, r in self.recall_per_class().items()},
            "confusions": [
                {"true": t, "predicted": p, "count": n} for t, p, n in self.confusions()
            ],
        }


def evaluate_signs(
    directory: str | os.PathLike[str], *, model: str | os.PathLike[str] = DEFAULT_MODEL
) -> SignEval:
    """Classify every image of ``directory`` (layout above) with ``model`` and score it.

    Raises ``SignEvalError`` for a folder without ``labels.csv``, without the needed
    columns, with an unreadable image or a class id outside 0..42; the model errors of
    ``SignRecognizer.setup`` (``NotAnOnnxModel``, ``SignatureMismatch``) for a bad model.
    """
    root = Path(directory)
    try:
        folder = read_sign_folder(root)
    except ValueError as err:
        raise SignEvalError(f"{err}; expected DIR/images/ and DIR/labels.csv with Filename, "
                            "ClassId (like signs-gtsrb)") from err  # fmt: skip
    bad = folder.class_ids[(folder.class_ids < 0) | (folder.class_ids >= NUM_CLASSES)]
    if len(bad):
        raise SignEvalError(f"{root / 'labels.csv'}: ClassId {int(bad[0])} is not a GTSRB "
                            f"class (0..{NUM_CLASSES - 1})")  # fmt: skip
    recognizer = SignRecognizer(model=model)
    recognizer.setup(Context(operator="eval-signs"))
    predicted = recognizer.classify(folder.sign_crops()).argmax(axis=1).astype(np.int64)
    return SignEval(folder.files, folder.class_ids, predicted)


def evaluate_scenarios(
    scenarios: tuple[str, ...] = ("stop_sign", "speed_limit_change", "car_following", "lane_curve"),
    *,
    model: str | os.PathLike[str] = DEFAULT_MODEL,
    seed: int = 0,
) -> SignEval:
    """Classify every sign the camera sees in held-out driving ``scenarios`` (truth boxes,
    cut as the operator cuts them: ``pipelines.sign_dataset.scenario_sign_crops``)."""
    X, y = scenario_sign_crops(scenarios, seed=seed, held_out=True)
    recognizer = SignRecognizer(model=model)
    recognizer.setup(Context(operator="eval-signs"))
    predicted = recognizer.classify(X).argmax(axis=1).astype(np.int64)
    return SignEval(tuple(f"crop-{i}" for i in range(len(y))), y, predicted)


def report(evaluation: SignEval) -> str:
    """Per-class recall and the top confusions as text, then the JSON summary last."""
    names = sign_names()
    rows = [f"{'class':<52} {'images':>6} {'recall':>6}"]
    for c, r in evaluation.recall_per_class().items():
        n = int((evaluation.truth == c).sum())
        rows.append(f"{c:>2} {names[c]:<49} {n:>6} {r:>6.2f}")
    for t, p, n in evaluation.confusions():
        rows.append(f"confused {n}x: {t} {names[t]} -> {p} {names[p]}")
    rows.append(f"accuracy {evaluation.accuracy:.4f} over {len(evaluation.truth)} images")
    rows.append(json.dumps(evaluation.summary()))
    return "\n".join(rows)


__all__ = ["SignEval", "SignEvalError", "evaluate_scenarios", "evaluate_signs", "report"]
