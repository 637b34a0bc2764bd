"""The annotated video: overlays drawn where they belong, clips and a strip written."""

from __future__ import annotations

import cv2
import numpy as np

from operators import Context, Message
from operators.annotate import AnnotatedVideo, Annotator, draw_frame


def test_boxes_and_command_are_drawn_where_they_belong():
    image = np.zeros((180, 320, 3), np.uint8)
    objects = {
        "boxes": np.array([[100, 60, 200, 140]], np.float32),
        "classes": np.array([1], np.int32),
        "distance_m": np.array([7.0], np.float32),
    }
    out = draw_frame(image, objects=objects, control={"brake": 1.0, "reason": "AEB"},
                     class_names=("vehicle", "pedestrian"))  # fmt: skip
    assert not image.any()  # the input is left alone (frames arrive read-only)
    assert out[100, 100].any() and out[100, 200].any()  # the box's sides
    assert not out[100, 150].any()  # its inside
    assert out[170:, :].any()  # the command line at the bottom


def test_a_stale_overlay_is_not_drawn():
    ann = Annotator(max_age_ms=100)
    boxes = {"boxes": np.array([[10, 10, 50, 50]], np.float32), "classes": np.array([0])}
    ann.process("objects", Message("cam", 0, 0, boxes))
    frame = {"image": np.zeros((90, 160, 3), np.uint8)}
    [(_, fresh)] = ann.process("camera", Message("cam", 1, 50_000_000, frame))
    [(_, stale)] = ann.process("camera", Message("cam", 2, 500_000_000, frame))
    assert fresh.payload["image"].any() and not stale.payload["image"].any()


def test_clips_and_strip_are_written_and_read_back(tmp_path):
    sink = AnnotatedVideo(tmp_path, fps=10, clip_frames=4, strip_every=2, strip_frames=3)
    sink.setup(Context(operator="video"))
    for i in range(10):
        image = np.full((72, 128, 3), 20 * i, np.uint8)
        sink.process("annotated", Message("cam", i, i, {"image": image}))
    sink.teardown()
    clips = sorted(tmp_path.glob("video-0-*.mp4"))
    assert [c.name for c in clips] == [f"video-0-{i:06d}.mp4" for i in range(3)]
    counts = []
    for clip in clips:
        cap = cv2.VideoCapture(str(clip))
        counts.append(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        cap.release()
    assert counts == [4, 4, 2]
    strip = cv2.imread(str(tmp_path / "video-0-strip.png"))
    assert strip.shape == (72 * 320 // 128, 320 * 4, 3)  # 3 newest of frames 0,2,..,8 + 1 blank
    assert strip[:, : 320 * 3].any() and not strip[:, 320 * 3 :].any()
