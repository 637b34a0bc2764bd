"""``edgeray eval signs DIR`` (pipelines.eval_signs) on real GTSRB and simulator folders."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from models._errors import NotAnOnnxModel
from pipelines.data import data_path
from pipelines.eval_signs import SignEval, SignEvalError, evaluate_signs, report
from pipelines.sign_dataset import gtsrb_split, read_sign_folder, write_sign_folder


@pytest.fixture(scope="module")
def held_out_gtsrb(tmp_path_factory):
    """The real GTSRB images the committed model never trained on, as a folder of their own."""
    try:
        source = data_path("signs-gtsrb")
    except FileNotFoundError:
        pytest.skip("shared GTSRB data absent")
    folder = read_sign_folder(source)
    held_out = {f for f, s in zip(folder.files, gtsrb_split(folder.files, folder.class_ids),
                                  strict=True) if s == "test"}  # fmt: skip
    root = tmp_path_factory.mktemp("gtsrb-test")
    (root / "images").mkdir()
    with (source / "labels.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r["Filename"] in held_out]
        fields = reader.fieldnames
    with (root / "labels.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        shutil.copy(source / "images" / row["Filename"], root / "images" / row["Filename"])
    return root


def test_real_held_out_images_report_accuracy_recall_and_confusions(held_out_gtsrb):
    evaluation = evaluate_signs(held_out_gtsrb)

    summary = json.loads(report(evaluation).splitlines()[-1])
    assert summary["images"] == 129 == len(evaluation.truth)
    assert summary["accuracy"] == round(evaluation.accuracy, 4)
    assert len(summary["recall_per_class"]) == 43
    wrong = int((evaluation.truth != evaluation.predicted).sum())
    assert sum(c["count"] for c in summary["confusions"]) <= wrong
    assert evaluation.accuracy >= 0.85  # MANIFEST.md of the model states the measured figure


def test_a_simulator_written_folder_is_recognised(tmp_path):
    write_sign_folder(tmp_path, per_class=2, seed=11)

    evaluation = evaluate_signs(tmp_path)

    assert len(evaluation.truth) == 86
    assert evaluation.accuracy >= 0.85, report(evaluation)  # MANIFEST.md: 90.3 % on such crops


def test_summary_figures_from_known_predictions():
    evaluation = SignEval(("a", "b", "c", "d"), np.array([1, 1, 2, 2]), np.array([1, 2, 1, 1]))
    summary = evaluation.summary()
    assert summary["accuracy"] == 0.25
    assert summary["recall_per_class"] == {"1": 0.5, "2": 0.0}
    assert summary["confusions"] == [{"true": 2, "predicted": 1, "count": 2},
                                     {"true": 1, "predicted": 2, "count": 1}]  # fmt: skip


def test_bad_folders_and_models_are_refused_with_the_reason(tmp_path):
    with pytest.raises(SignEvalError, match=r"labels\.csv' not found"):
        evaluate_signs(tmp_path)
    good = write_sign_folder(tmp_path / "good", per_class=1)
    junk = tmp_path / "model.onnx"
    junk.write_bytes(b"junk")
    with pytest.raises(NotAnOnnxModel, match=r"model\.onnx"):
        evaluate_signs(good, model=junk)
    labels = good / "labels.csv"
    labels.write_text(labels.read_text().replace(".ppm,0\n", ".ppm,50\n"))
    with pytest.raises(SignEvalError, match="ClassId 50 is not a GTSRB class"):
        evaluate_signs(good)
