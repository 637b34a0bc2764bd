"""SignRecognizer (operators.signs) without Ray: simulator drives, real GTSRB images, bad input."""

from __future__ import annotations

import collections

import cv2
import numpy as np
import pytest

from models._errors import NotAnOnnxModel, SignatureMismatch
from operators import Context, MalformedMessage, Message
from operators.driving import DrivingSimulator
from operators.signs import (
    DEFAULT_MODEL,
    SignRecognizer,
    SignTracks,
    colour_candidates,
    sign_crops,
)
from pipelines.data import data_path
from pipelines.sign_dataset import gtsrb_split, read_sign_folder, render_sign_crop
from pipelines.testing import ListSink, ListSource, Pipeline, run_local
from tests.unit._onnx_files import UINT8, identity_model

STOP, YIELD, NO_ENTRY, SPEED_30, SPEED_50 = 14, 13, 17, 1, 2


@pytest.fixture(scope="module")
def recognizer() -> SignRecognizer:
    op = SignRecognizer()
    op.setup(Context())
    return op


def recognise(op: SignRecognizer, payload: dict, *, port: str = "camera", t: int = 0) -> dict:
    """The payload ``op`` emits for one frame (at ``t`` tenths of a second)."""
    [(out_port, out)] = op.process(port, Message("cam", t, t * 100_000_000, payload))
    assert out_port == "signs"
    return out.payload


def drive(scenario: str, *, seed: int = 0) -> tuple[list[int], set[int]]:
    """Run a held-out scenario's camera (10 Hz) through a fresh recognizer.

    Returns the confirmed (voted) classes in the order tracks were confirmed, and the
    sign classes the simulator's truth had in view."""
    op = SignRecognizer()
    op.setup(Context())
    sim = DrivingSimulator(scenario, seed=seed, held_out=True, camera_hz=10.0, lidar_hz=1e-3,
                           ego_hz=1e-3)  # fmt: skip
    sim.setup(Context())
    confirmed: dict[int, int] = {}
    in_view: set[int] = set()
    while (out := sim.poll(0)) is not None:
        for port, message in out:
            if port != "camera":
                continue
            in_view |= {int(c) for c in message.truth["sign_classes"] if c >= 0}
            [(_, signs)] = op.process("camera", message)
            p = signs.payload
            for track, voted in zip(p["track_ids"], p["voted_classes"], strict=True):
                if voted >= 0:
                    confirmed[int(track)] = int(voted)
    return list(confirmed.values()), in_view


def test_stop_sign_scenario_confirms_the_stop_yield_and_no_entry_signs():
    voted, in_view = drive("stop_sign")
    assert in_view == {STOP, YIELD, NO_ENTRY}
    assert STOP in voted and YIELD in voted and NO_ENTRY in voted, voted
    assert set(voted) <= in_view, f"confirmed a sign that is not there: {voted}"


def test_speed_limit_scenario_confirms_50_then_30_then_50():
    voted, in_view = drive("speed_limit_change")
    assert in_view == {SPEED_30, SPEED_50}
    limits = [c for i, c in enumerate(voted) if i == 0 or c != voted[i - 1]]
    assert limits == [SPEED_50, SPEED_30, SPEED_50], voted


def test_decision_maker_reads_confirmed_classes_with_distances(recognizer):
    image = np.full((120, 160, 3), 90, np.uint8)
    image[40:72, 60:92] = render_sign_crop(STOP, 1)
    K = np.array([[480.0, 0, 80], [0, 480.0, 60], [0, 0, 1]])
    op = SignRecognizer(min_hits=2)
    op.setup(Context())
    first, second = (recognise(op, {"image": image, "K": K}, t=t) for t in range(2))
    assert first["classes"].tolist() == [] and second["classes"].tolist() == [STOP]
    assert second["names"].tolist() == ["Stop"]
    assert 0.8 * 480 * 0.8 / 32 < second["distances_m"][0] < 1.25 * 480 * 0.8 / 24


def test_held_out_real_gtsrb_images_classified_by_the_operator(recognizer):
    try:
        folder = read_sign_folder(data_path("signs-gtsrb"))
    except FileNotFoundError:
        pytest.skip("shared GTSRB data absent")
    test = np.array(gtsrb_split(folder.files, folder.class_ids)) == "test"
    probs = recognizer.classify(folder.images[test])
    accuracy = float((probs.argmax(axis=1) == folder.class_ids[test]).mean())
    # MANIFEST.md of the committed model: 89.1 % on these 129 images uncut and ROI-cut alike.
    assert accuracy >= 0.85, accuracy


def test_detector_boxes_are_classified_even_without_colour(recognizer):
    image = np.full((96, 128, 3), 120, np.uint8)
    image[20:52, 40:72] = render_sign_crop(STOP, 3)
    detections = {"image": image, "boxes": np.array([[42, 22, 70, 50], [0, 0, 9, 9]], np.float32),
                  "classes": np.array([2, 0], np.int32)}  # fmt: skip
    op = SignRecognizer(colour=False, min_hits=1)
    op.setup(Context())
    out = recognise(op, detections, port="detections")
    assert out["boxes"].tolist() == [[42, 22, 70, 50]]
    assert out["class_ids"].tolist() == [STOP]


def test_colour_candidates_find_red_and_blue_plates_only():
    image = np.full((100, 200, 3), 100, np.uint8)
    cv2.circle(image, (25, 25), 15, (30, 30, 200), 3)  # a red ring
    cv2.circle(image, (115, 65), 15, (170, 80, 20), -1)  # a blue disc
    image[5:9, 150:190] = (30, 30, 200)  # a red bar: not sign-shaped
    image[60:90, 160:190] = (170, 80, 20)  # a blue car body: a filled rectangle
    image[50:55, 50:55] = (30, 30, 200)  # too small
    boxes = colour_candidates(image)
    assert sorted(boxes.tolist()) == [[8, 8, 43, 43], [100, 50, 131, 81]]


def test_sign_crops_are_squares_around_the_box():
    image = np.zeros((64, 64, 3), np.uint8)
    image[16:48, 16:48] = 255
    (crop,) = sign_crops(image, np.array([[16, 16, 48, 48]], np.float32), margin=0.0)
    assert crop.shape == (32, 32, 3) and crop.min() == 255


def test_tracks_vote_over_frames_and_end_when_unseen():
    tracks = SignTracks(min_hits=3, max_age=10)
    box = np.array([[100, 50, 120, 70]], np.float32)
    stop, yield_ = np.eye(43, dtype=np.float32)[[STOP]], np.eye(43, dtype=np.float32)[[YIELD]]
    votes = []
    for t, p in enumerate([stop, yield_, stop, stop]):
        ids, voted, _ = tracks.update(box + t, p * 0.9, t)
        votes.append((int(ids[0]), int(voted[0])))
    assert votes == [(0, -1), (0, -1), (0, STOP), (0, STOP)]
    ids, voted, _ = tracks.update(box, stop, 100)  # long unseen: a new track
    assert (int(ids[0]), int(voted[0])) == (1, -1)


def test_snapshot_restore_continues_the_vote(recognizer):
    image = np.full((80, 80, 3), 90, np.uint8)
    image[20:52, 20:52] = render_sign_crop(NO_ENTRY, 5)
    a = SignRecognizer()
    a.setup(Context())
    recognise(a, {"image": image}, t=0)
    recognise(a, {"image": image}, t=1)
    b = SignRecognizer()
    b.setup(Context())
    b.restore(a.snapshot())
    assert recognise(b, {"image": image}, t=2)["voted_classes"].tolist() == [NO_ENTRY]


def test_a_model_that_is_not_onnx_or_does_not_fit_is_refused(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(NotAnOnnxModel, match="is not an ONNX model"):
        SignRecognizer(model=junk).setup(Context())
    nchw = identity_model(tmp_path / "nchw.onnx", shape=(None, 3, 32, 32), elem_type=UINT8)
    with pytest.raises(SignatureMismatch, match=r"has shape \[d0, 3, 32, 32\], expected"):
        SignRecognizer(model=nchw).setup(Context())
    no_scores = identity_model(tmp_path / "id.onnx", shape=(None, 32, 32, 3), elem_type=UINT8)
    with pytest.raises(SignatureMismatch, match="expected an output 'scores'"):
        SignRecognizer(model=no_scores).setup(Context())


def test_bad_crops_and_detections_raise_malformed_message(recognizer):
    with pytest.raises(MalformedMessage, match=r"uint8 \(N, 32, 32, 3\) BGR, got float32"):
        recognizer.classify(np.zeros((2, 32, 32, 3), np.float32))
    bad = {"image": np.zeros((40, 40, 3), np.uint8), "boxes": np.zeros((2, 4), np.float32),
           "classes": np.zeros(1, np.int32)}  # fmt: skip
    with pytest.raises(MalformedMessage, match="2 boxes but 1 classes"):
        list(recognizer.process("detections", Message("det", 0, 0, bad)))


def test_frames_of_the_wrong_dtype_or_shape_are_dead_lettered():
    frames = [{"image": np.zeros((48, 64, 3), np.uint8)},
              {"image": np.zeros((48, 64, 3), np.float32)},
              {"image": np.zeros((48, 64), np.uint8)}]  # fmt: skip
    p = Pipeline("signs")
    p.source("camera", ListSource(frames), rate_hz=10)
    p.operator("signs", SignRecognizer())
    p.sink("out", ListSink())
    p.connect("camera", "signs.camera")
    p.connect("signs", "out")

    run = run_local(p)

    assert [m.seq for m in run.sink("out")] == [0]
    causes = collections.Counter(
        "dtype" if "float32[48, 64, 3]" in d.cause else "shape" if "uint8[48, 64]" in d.cause
        else d.cause for d in run.dead_letters
    )  # fmt: skip
    assert causes == {"dtype": 1, "shape": 1}


def test_the_committed_model_is_small():
    assert DEFAULT_MODEL.stat().st_size < 2_000_000
