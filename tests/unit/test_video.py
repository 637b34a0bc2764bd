"""VideoSource: frames, times, ends, looping, snapshot / restore and errors."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest

from operators import Context, OperatorError
from operators.video import VideoSource

FPS = 10.0
SIZE = (48, 32)  # width, height


@pytest.fixture
def clip(tmp_path):
    """A 12-frame MJPG clip at 10 fps; frame i is a flat gray of value 20 * i."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, SIZE)
    for i in range(12):
        writer.write(np.full((SIZE[1], SIZE[0], 3), 20 * i, np.uint8))
    writer.release()
    return path


def drain(source: VideoSource, limit: int = 1000) -> list:
    out = []
    for _ in range(limit):
        polled = source.poll(0)
        if polled is None:
            return out
        out += [m for _, m in polled]
    raise AssertionError(f"source did not end within {limit} polls")


def opened(source: VideoSource) -> VideoSource:
    source.setup(Context(operator="camera"))
    return source


def test_reads_every_frame_then_ends(clip):
    source = opened(VideoSource(clip))

    messages = drain(source)

    assert [m.seq for m in messages] == list(range(12))
    assert [m.payload["frame"] for m in messages] == list(range(12))
    assert [m.event_ts for m in messages] == [i * 100_000_000 for i in range(12)]
    assert {(m.payload["image"].dtype, m.payload["image"].shape) for m in messages} == {
        (np.dtype("uint8"), (32, 48, 3))
    }
    assert [int(m.payload["image"].mean().round(-1)) for m in messages[:3]] == [0, 20, 40]
    assert {m.source for m in messages} == {""}  # the runtime stamps it
    assert source.poll(0) is None


def test_max_frames_and_source_id(clip):
    source = opened(VideoSource(clip, max_frames=5, source_id="front@car-1"))

    messages = drain(source)

    assert [m.seq for m in messages] == [0, 1, 2, 3, 4]
    assert {m.source for m in messages} == {"front@car-1"}


def test_loop_restarts_the_file_with_increasing_seq_and_event_time(clip):
    source = opened(VideoSource(clip, loop=True, max_frames=30))

    messages = drain(source)

    assert [m.seq for m in messages] == list(range(30))
    assert [m.payload["frame"] for m in messages] == [i % 12 for i in range(30)]
    times = [m.event_ts for m in messages]
    assert times == [i * 100_000_000 for i in range(30)]


def test_restore_continues_at_the_same_frame(clip):
    first = opened(VideoSource(clip))
    for _ in range(4):
        first.poll(0)
    state = first.snapshot()
    expected = [m for _ in range(3) for _, m in first.poll(0)]
    restored_before_setup = VideoSource(clip)
    restored_after_setup = opened(VideoSource(clip))

    restored_before_setup.restore(state)
    opened(restored_before_setup)
    restored_after_setup.restore(state)
    got = [
        [m for _ in range(3) for _, m in source.poll(0)]
        for source in (restored_before_setup, restored_after_setup)
    ]

    assert state["frame"] == 4
    for messages in got:
        assert [(m.seq, m.event_ts, m.payload["frame"]) for m in messages] == [
            (m.seq, m.event_ts, m.payload["frame"]) for m in expected
        ]
        for m, e in zip(messages, expected, strict=True):
            np.testing.assert_array_equal(m.payload["image"], e.payload["image"])


def test_pickles_before_setup_and_while_open(clip):
    source = VideoSource(clip, max_frames=3)
    before = pickle.loads(pickle.dumps(source))
    opened(source)
    source.poll(0)

    copy = opened(pickle.loads(pickle.dumps(source)))

    assert before.max_frames == 3
    assert [m.payload["frame"] for m in drain(copy)] == [1, 2]


def test_missing_file_names_the_path_and_the_fix(tmp_path):
    source = VideoSource(tmp_path / "nope.mp4")

    expected = r"operator 'camera': video file .*nope\.mp4' does not exist.*pass an existing file"

    with pytest.raises(OperatorError, match=expected):
        opened(source)


def test_undecodable_file_says_opencv_cannot_open_it(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("not a video")

    with pytest.raises(
        OperatorError, match=r"video file .*notes\.mp4' could not be opened by OpenCV"
    ):
        opened(VideoSource(path))


def test_poll_before_setup_is_an_error(clip):
    with pytest.raises(OperatorError, match=r"poll\(\) before setup\(ctx\)"):
        VideoSource(clip).poll(0)


def test_negative_max_frames_is_rejected(clip):
    with pytest.raises(OperatorError, match="max_frames=-1; use None or a count of 0 or more"):
        VideoSource(clip, max_frames=-1)


def test_real_clip_has_every_frame_at_25_fps(requires_data):
    path = requires_data("lanes-udacity", "p1", "test_videos", "solidWhiteRight.mp4")
    source = opened(VideoSource(path))

    messages = drain(source)
    source.teardown()

    assert len(messages) == 221
    assert messages[0].payload["image"].shape == (540, 960, 3)
    assert [m.event_ts for m in messages[:3]] == [0, 40_000_000, 80_000_000]
    assert messages[-1].event_ts == 220 * 40_000_000
