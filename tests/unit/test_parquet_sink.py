"""ParquetSink: files per flush / rows_per_file, names per replica, round trip, errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from operators import Context, Message, OperatorError
from operators.parquet_sink import ParquetSink, read_parquet_dir
from pipelines.testing import ListSource, Pipeline, run_local


def frame(seq: int, **payload) -> Message:
    payload.setdefault("image", np.full((6, 8, 3), seq, np.uint8))
    return Message("cam@car-1", seq, seq * 40_000_000, {"frame": seq, **payload})


def started(sink: ParquetSink, operator: str = "store", replica: int = 0) -> ParquetSink:
    sink.setup(Context(operator=operator, replica=replica))
    return sink


def names(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_writes_a_file_every_rows_per_file_and_the_rest_on_teardown(tmp_path):
    sink = started(ParquetSink(tmp_path / "out", rows_per_file=2))

    for seq in range(5):
        sink.process("in", frame(seq))
    before_teardown = names(tmp_path / "out")
    sink.teardown()

    assert before_teardown == ["store-0-000000.parquet", "store-0-000001.parquet"]
    assert names(tmp_path / "out") == [*before_teardown, "store-0-000002.parquet"]
    assert [m.seq for m in read_parquet_dir(tmp_path / "out")] == [0, 1, 2, 3, 4]
    assert sink.rows_written == 5


def test_round_trip_keeps_payload_and_identity_but_drops_the_image(tmp_path):
    sink = started(ParquetSink(tmp_path))
    sent = [
        frame(0, left=np.array([1.5, 540, 400, 324], np.float32), found=1),
        frame(1, left=np.zeros(0, np.float32), found=0),
    ]

    for m in sent:
        sink.process("in", m)
    sink.flush()
    back = read_parquet_dir(tmp_path)

    assert [m.key for m in back] == [m.key for m in sent]
    assert [m.event_ts for m in back] == [0, 40_000_000]
    assert [set(m.payload) for m in back] == [{"frame", "left", "found"}] * 2
    np.testing.assert_array_equal(back[0].payload["left"], sent[0].payload["left"])
    assert back[1].payload["left"].dtype == np.float32
    assert back[1].payload["left"].shape == (0,)


def test_drop_fields_can_keep_everything(tmp_path):
    sink = started(ParquetSink(tmp_path, drop_fields=()))

    sink.process("in", frame(7))
    sink.teardown()
    [back] = read_parquet_dir(tmp_path)

    np.testing.assert_array_equal(back.payload["image"], np.full((6, 8, 3), 7, np.uint8))


def test_flushes_with_different_payloads_read_back_together(tmp_path):
    sink = started(ParquetSink(tmp_path))

    sink.process("in", frame(0, note="a"))
    sink.flush()
    sink.process("in", frame(1, score=0.5))
    sink.flush()
    sink.flush()  # nothing buffered: no empty file

    assert len(names(tmp_path)) == 2
    assert [dict(m.payload) for m in read_parquet_dir(tmp_path)] == [
        {"frame": 0, "note": "a"},
        {"frame": 1, "score": 0.5},
    ]


def test_replicas_in_one_directory_never_collide(tmp_path):
    sinks = [started(ParquetSink(tmp_path), "store", replica) for replica in (0, 1)]

    for seq in range(6):
        sinks[seq % 2].process("in", frame(seq))
    for sink in sinks:
        sink.teardown()

    assert names(tmp_path) == ["store-0-000000.parquet", "store-1-000000.parquet"]
    assert sorted(m.seq for m in read_parquet_dir(tmp_path)) == list(range(6))


def test_replicas_through_the_local_runner(tmp_path):
    p = Pipeline("rec")
    p.source("src", ListSource([{"n": i} for i in range(10)]))
    p.sink("store", ParquetSink(tmp_path, rows_per_file=3), replicas=2)
    p.connect("src", "store")

    run_local(p)

    assert {n.split("-")[1] for n in names(tmp_path)} == {"0", "1"}
    assert sorted(m.payload["n"] for m in read_parquet_dir(tmp_path)) == list(range(10))


def test_a_restarted_replica_continues_after_its_last_file(tmp_path):
    first = started(ParquetSink(tmp_path))
    first.process("in", frame(0))
    first.teardown()
    restarted = started(ParquetSink(tmp_path))

    restarted.process("in", frame(1))
    restarted.teardown()

    assert names(tmp_path) == ["store-0-000000.parquet", "store-0-000001.parquet"]
    assert [m.seq for m in read_parquet_dir(tmp_path)] == [0, 1]


def test_snapshot_flushes_and_restore_keeps_counting(tmp_path):
    sink = started(ParquetSink(tmp_path))
    sink.process("in", frame(0))

    state = sink.snapshot()
    successor = ParquetSink(tmp_path)
    successor.restore(state)
    started(successor).process("in", frame(1))
    successor.teardown()

    assert state == {"next_index": 1, "rows_written": 1}
    assert [m.seq for m in read_parquet_dir(tmp_path)] == [0, 1]
    assert successor.rows_written == 2


def test_pickles_with_what_it_has_buffered(tmp_path):
    sink = started(ParquetSink(tmp_path))
    sink.process("in", frame(0))

    copy = pickle.loads(pickle.dumps(sink))
    copy.flush()

    assert [m.seq for m in read_parquet_dir(tmp_path)] == [0]


def test_flush_before_setup_says_to_call_setup(tmp_path):
    sink = ParquetSink(tmp_path)
    sink.process("in", frame(0))

    with pytest.raises(OperatorError, match=r"flush\(\) before setup\(ctx\): 1 messages"):
        sink.flush()


def test_rows_per_file_must_be_positive(tmp_path):
    with pytest.raises(OperatorError, match="rows_per_file=0; use 1 or more"):
        ParquetSink(tmp_path, rows_per_file=0)


def test_unwritable_directory_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")

    with pytest.raises(OperatorError, match=r"cannot create the output directory '.*file/out'"):
        started(ParquetSink(blocker / "out"))


def test_reading_a_missing_directory_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no Parquet directory or file at '.*missing'"):
        read_parquet_dir(tmp_path / "missing")
