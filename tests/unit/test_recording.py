"""Recorder and Replay: record a run, replay it bit-identically, pace it, and corrupt files."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest

from operators import Context, Message, Operator, OperatorError
from operators.recording import Recorder, Replay, read_recording, recorded_ports, write_recording
from pipelines.testing import FakeClock, ListSink, ListSource, Pipeline, run_local


class Features(Operator):
    """Test operator: derived arrays of several dtypes from ``x``. Input ``in``, output ``out``."""

    inputs = ("in",)
    outputs = ("out",)

    def process(self, port, message):
        x = message.payload["x"]
        yield "out", message.derive({
            "mean": np.float64(x.mean()), "scaled": (x * 0.5).astype(np.float32),
            "mask": x > 2, "label": message.payload["label"].upper(), "n": int(x.size),
        })  # fmt: skip


class Fuse(Operator):
    """Test operator: projects each lidar scan with its frame's camera calibration.

    Inputs ``camera`` and ``lidar`` (the same seq), output ``out``.
    """

    inputs = ("camera", "lidar")
    outputs = ("out",)

    def __init__(self) -> None:
        self.pending: dict[int, Message] = {}

    def process(self, port, message):
        self.pending.setdefault(message.seq, {})[port] = message
        got = self.pending[message.seq]
        if len(got) < 2:
            return
        from operators.calibration import Calibration

        camera, lidar = got.pop("camera"), got.pop("lidar")
        keys = ("P2", "R0_rect", "Tr_velo_to_cam")
        calib = Calibration(**{k: camera.payload[k] for k in keys})
        uv, depth = calib.velo_to_image(lidar.payload["points"])
        h, w = camera.payload["image"].shape[:2]
        seen = (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
        yield "out", camera.derive({
            "uv": uv[seen].astype(np.float32), "depth": depth[seen].astype(np.float32),
            "colour": camera.payload["image"][uv[seen, 1].astype(int), uv[seen, 0].astype(int)],
        }, merged=(lidar,))  # fmt: skip


def items(n: int = 6) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {"x": rng.integers(0, 9, size=(3, 4)).astype(np.int16), "label": f"n{i}",
         "img": rng.integers(0, 255, size=(4, 5, 3), dtype=np.uint8)}
        for i in range(n)
    ]  # fmt: skip


def assert_bit_identical(replayed: list[Message], original: list[Message]) -> None:
    assert [m.key for m in replayed] == [m.key for m in original]
    assert [m.event_ts for m in replayed] == [m.event_ts for m in original]
    for a, b in zip(replayed, original, strict=True):
        assert list(a.payload) == list(b.payload)
        for name in b.payload:
            x, y = a.payload[name], b.payload[name]
            assert type(x) is type(y), name
            if isinstance(y, np.ndarray | np.generic):
                assert (x.dtype, np.shape(x)) == (y.dtype, np.shape(y)), name
                assert np.asarray(x).tobytes() == np.asarray(y).tobytes(), name
            else:
                assert x == y, name
        assert (a.truth is None) == (b.truth is None)
        for name in b.truth or {}:
            assert np.asarray(a.truth[name]).tobytes() == np.asarray(b.truth[name]).tobytes()
        assert a.meta.lineage == b.meta.lineage


# -- record a run, replay it through the same pipeline -------------------------------------------
def test_replay_through_the_same_pipeline_gives_bit_identical_outputs(tmp_path):
    # prepare: numbers -> features -> out, and numbers recorded
    original = Pipeline("orig")
    original.source("numbers", ListSource(items()), rate_hz=10)
    original.operator("features", Features())
    original.sink("out", ListSink())
    original.sink("rec", Recorder(tmp_path, ports=("out",), batch_rows=4))
    original.connect("numbers", "features")
    original.connect("features", "out")
    original.connect("numbers.out", "rec.out")
    first = run_local(original)

    # execute: replay -> features -> out, as fast as possible
    replayed = Pipeline("replay")
    replayed.source("numbers", Replay(tmp_path, pace="fast"))
    replayed.operator("features", Features())
    replayed.sink("out", ListSink())
    replayed.connect("numbers", "features")
    replayed.connect("features", "out")
    second = run_local(replayed, clock=FakeClock(start_ns=7_000_000_000))

    # assert
    assert len(first.sink("out")) == 6 and first.dead_letters == []
    assert second.dead_letters == []
    assert_bit_identical(second.sink("out"), first.sink("out"))
    assert {m.source for m in second.sink("out")} == {"numbers@local"}
    assert [m.ingest_ts for m in second.sink("out")] == [7_000_000_000] * 6  # re-stamped


def test_the_recording_keeps_identity_times_payload_meta_and_truth(tmp_path):
    # prepare
    sent = [
        Message("cam@car-1", i, 1_000 * i, {"x": np.arange(i, dtype=np.uint16), "name": "a"},
                part=i % 2, ingest_ts=5_000 + i, truth={"boxes": np.ones((i, 4), np.float32)})
        for i in range(3)
    ]  # fmt: skip

    # execute
    files = write_recording(tmp_path, [("camera", m) for m in sent])
    back = read_recording(tmp_path)

    # assert: one IPC stream file, readable with plain pyarrow too
    assert [f.rsplit("/", 1)[1] for f in files] == ["recording-0-000000.arrows"]
    assert pa.ipc.open_stream(files[0]).read_all().num_rows == 3
    assert [p for p, _ in back] == ["camera"] * 3
    assert [m.ingest_ts for _, m in back] == [5_000, 5_001, 5_002]
    assert [m.part for _, m in back] == [0, 1, 0]
    assert_bit_identical([m for _, m in back], sent)


def test_kitti_run_replays_bit_identically_on_both_ports(tmp_path, requires_data):
    # prepare: kitti -> fuse -> out, kitti.camera and kitti.lidar recorded
    from operators.kitti import KittiSource

    kitti = requires_data("kitti-sample")
    original = Pipeline("orig")
    original.source("kitti", KittiSource(kitti), rate_hz=10)
    original.operator("fuse", Fuse())
    original.sink("out", ListSink())
    original.sink("rec", Recorder(tmp_path / "rec", ports=("camera", "lidar"), batch_rows=2))
    for port in ("camera", "lidar"):
        original.connect(f"kitti.{port}", f"fuse.{port}")
        original.connect(f"kitti.{port}", f"rec.{port}")
    original.connect("fuse", "out")
    first = run_local(original)

    # execute: the replay declares the recorded ports
    replay = Replay(tmp_path / "rec", pace="recorded")
    replayed = Pipeline("replay")
    replayed.source("kitti", replay, rate_hz=100)
    replayed.operator("fuse", Fuse())
    replayed.sink("out", ListSink())
    for port in ("camera", "lidar"):
        replayed.connect(f"kitti.{port}", f"fuse.{port}")
    replayed.connect("fuse", "out")
    second = run_local(replayed)

    # assert
    assert replay.outputs == ("camera", "lidar")
    out = first.sink("out")
    assert len(out) == 3 and all(len(m.payload["uv"]) > 10_000 for m in out)
    assert_bit_identical(second.sink("out"), out)
    assert [m.truth["classes"] for m in second.sink("out")] == [m.truth["classes"] for m in out]
    assert second.summary.sources == {"kitti": 6}


# -- pace ---------------------------------------------------------------------------------------
def recorded_at(tmp_path, events_ns: list[int]) -> None:
    write_recording(
        tmp_path, [("out", Message("s", i, t, {"i": i})) for i, t in enumerate(events_ns)]
    )


@pytest.mark.parametrize(
    ("speed", "expected_ms"), [(1.0, [0, 100, 250, 1000]), (2.0, [0, 50, 130, 500])]
)
def test_recorded_pace_emits_at_the_recorded_offsets_in_simulated_time(
    tmp_path, speed, expected_ms
):
    # prepare: event times 3.0 s, 3.1 s, 3.25 s, 4.0 s; polled at 100 Hz from t=10 s
    recorded_at(tmp_path, [3_000_000_000, 3_100_000_000, 3_250_000_000, 4_000_000_000])
    p = Pipeline("paced")
    p.source("replay", Replay(tmp_path, pace="recorded", speed=speed), rate_hz=100)
    p.sink("out", ListSink())
    p.connect("replay", "out")

    # execute
    run = run_local(p, clock=FakeClock(start_ns=10_000_000_000))

    # assert: ingest_ts is the simulated time of the poll that emitted each message
    got = [(m.ingest_ts - 10_000_000_000) / 1e6 for m in run.sink("out")]
    assert [m.seq for m in run.sink("out")] == [0, 1, 2, 3]
    assert got == expected_ms  # 125 ms at speed 2 is due at the 130 ms poll (10 ms polls)
    assert run.sink("out")[0].event_ts == 3_000_000_000


def test_fast_pace_emits_one_event_time_per_poll_and_recorded_pace_never_blocks(tmp_path):
    # prepare
    recorded_at(tmp_path, [0, 0, 500, 900])
    fast = Replay(tmp_path, pace="fast")
    paced = Replay(tmp_path, pace="recorded")
    for r in (fast, paced):
        r.setup(Context())

    # execute
    fast_steps = [[m.seq for _, m in out] for out in iter(lambda: fast.poll(0), None)]
    paced_steps = [[m.seq for _, m in paced.poll(now)] for now in (100, 200, 600, 600, 1_000)]

    # assert
    assert fast_steps == [[0, 1], [2], [3]]
    assert paced_steps == [[0, 1], [], [2], [], [3]]
    assert paced.poll(2_000) is None


def test_snapshot_restore_carries_position_and_pacing_anchor(tmp_path):
    # prepare
    recorded_at(tmp_path, [0, 100, 200, 300])
    replay = Replay(tmp_path, pace="recorded")
    replay.setup(Context())
    replay.poll(1_000)  # anchors: now 1000 <-> event 0
    replay.poll(1_100)

    # execute
    moved = pickle.loads(pickle.dumps(replay))
    moved.setup(Context())
    moved.restore(pickle.loads(pickle.dumps(replay.snapshot())))

    # assert
    assert [m.seq for _, m in moved.poll(1_250)] == [2]
    assert [m.seq for _, m in moved.poll(1_300)] == [3]


# -- formats and files ----------------------------------------------------------------------------
def test_parquet_format_replays_the_same_messages(tmp_path):
    # prepare
    sent = [Message("s", i, i, {"img": np.full((2, 3), i, np.uint8)}) for i in range(5)]
    rec = Recorder(tmp_path, format="parquet", batch_rows=2, ports=("frames",))
    rec.setup(Context(operator="rec", replica=1))

    # execute
    for m in sent:
        rec.process("frames", m)
    rec.teardown()
    replay = Replay(tmp_path)
    replay.setup(Context())
    back = [m for out in iter(lambda: replay.poll(0), None) for _, m in out]

    # assert
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"rec-1-00000{i}.parquet" for i in range(3)
    ]
    assert replay.outputs == ("frames",)
    assert_bit_identical(back, sent)


def test_a_new_payload_field_starts_a_new_segment_with_the_union_schema(tmp_path):
    # prepare: camera-only batch, then camera + lidar, then camera only again
    rec = Recorder(tmp_path, ports=("camera", "lidar"), batch_rows=2)
    rec.setup(Context(operator="rec", replica=0))
    cam = [Message("c", i, i, {"image": np.zeros((2, 2), np.uint8)}) for i in range(6)]
    lidar = Message("l", 0, 2, {"points": np.ones((3, 4), np.float32), "note": None})

    # execute
    for port, m in [("camera", cam[0]), ("camera", cam[1]), ("camera", cam[2]), ("lidar", lidar),
                    ("camera", cam[3]), ("camera", cam[4])]:  # fmt: skip
        rec.process(port, m)
    rec.teardown()

    # assert
    assert [f.rsplit("-", 1)[1] for f in rec.files] == ["000000.arrows", "000001.arrows"]
    back = read_recording(tmp_path)
    assert [(p, m.source, m.seq) for p, m in back] == [
        ("camera", "c", 0), ("camera", "c", 1), ("camera", "c", 2), ("lidar", "l", 0),
        ("camera", "c", 3), ("camera", "c", 4),
    ]  # fmt: skip
    assert set(back[3][1].payload) == {"points", "note"} and back[3][1].payload["note"] is None
    assert set(back[4][1].payload) == {"image"}


def test_a_restarted_recorder_never_overwrites_its_earlier_files(tmp_path):
    # prepare
    write_recording(tmp_path, [("out", Message("s", 0, 0, {"i": 0}))])

    # execute
    write_recording(tmp_path, [("out", Message("s", 1, 1, {"i": 1}))])

    # assert
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "recording-0-000000.arrows", "recording-0-000001.arrows"
    ]  # fmt: skip
    assert [m.seq for _, m in read_recording(tmp_path)] == [0, 1]


def test_truncated_recording_names_the_file(tmp_path):
    # prepare: cut the last 40 bytes (the end-of-stream marker and the end of the batch)
    [path] = write_recording(
        tmp_path, [("out", Message("s", i, i, {"x": np.arange(50)})) for i in range(3)]
    )
    with open(path, "r+b") as f:
        f.truncate(f.seek(0, 2) - 40)
    replay = Replay(tmp_path)  # the schema at the start is intact

    # execute / assert
    with pytest.raises(
        OperatorError,
        match=r"recording file '.*recording-0-000000\.arrows' is truncated or corrupt",
    ):
        replay.setup(Context())


def test_garbage_recording_names_the_file_when_the_replay_is_built(tmp_path):
    # prepare
    (tmp_path / "bad.arrows").write_bytes(b"this is not arrow" * 4)

    # execute / assert
    with pytest.raises(
        OperatorError,
        match=r"bad\.arrows' is truncated or corrupt: it is not a readable Arrow IPC stream",
    ):
        Replay(tmp_path)


def test_ports_the_replay_does_not_declare_are_an_error_saying_what_to_pass(tmp_path):
    # prepare
    write_recording(
        tmp_path, [("camera", Message("c", 0, 0, {})), ("lidar", Message("l", 0, 0, {}))]
    )
    replay = Replay(tmp_path, ports=("camera",))

    # execute / assert
    assert recorded_ports(tmp_path) == ("camera", "lidar")
    with pytest.raises(OperatorError, match=r"ports \['lidar'\].*pass ports=\('camera', 'lidar'\)"):
        replay.setup(Context())


def test_bad_options_and_missing_recording(tmp_path):
    # execute / assert
    with pytest.raises(OperatorError, match="pace='slow'"):
        Replay(tmp_path, pace="slow", ports=("out",))
    with pytest.raises(OperatorError, match=r"holds no \.arrows or \.parquet files"):
        Replay(tmp_path)
    with pytest.raises(OperatorError, match="no recording at"):
        Replay(tmp_path / "nowhere")
    with pytest.raises(OperatorError, match="batch_rows=0"):
        Recorder(tmp_path, batch_rows=0)
