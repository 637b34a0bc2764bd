"""Record any stream and replay it: ``Recorder`` (a sink) and ``Replay`` (a source).

A recording is a directory of Arrow IPC **stream** files (``.arrows``, read
with ``pyarrow.ipc.open_stream``), or of Parquet files with
``Recorder(format="parquet")``. Each row is one message as
``operators.messages_to_table`` writes it (identity, ``event_ts``,
``ingest_ts``, meta, every payload and truth field, losslessly) plus a
``port`` column: the Recorder input it arrived on, which ``Replay`` emits it
on. Name a Recorder's inputs after the output ports they record
(``kitti.camera -> rec.camera``) and the replay has the same ports as the
original source.

>>> import tempfile
>>> import numpy as np
>>> from operators import Context, Message
>>> out = tempfile.mkdtemp()
>>> rec = Recorder(out, ports=("camera",), batch_rows=2)
>>> rec.setup(Context(operator="rec", replica=0))
>>> for i in range(3):
...     _ = rec.process("camera", Message("cam@car-1", i, i * 1000, {"image": np.full((2, 2), i)}))
>>> rec.teardown()                       # writes the last, partial batch
>>> replay = Replay(out)                 # ports come from the recording
>>> replay.outputs
('camera',)
>>> replay.setup(Context())
>>> [(port, m.key, m.event_ts, m.payload["image"].sum()) for port, m in replay.poll(0)]
[('camera', ('cam@car-1', 0, 0), 0, np.int64(0))]
>>> [m.seq for _ in range(3) for port, m in (replay.poll(0) or ())]
[1, 2]
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from operators._arrow import messages_to_table, table_to_messages
from operators._errors import OperatorError
from operators._files import FileSink, write_parquet_atomically
from operators._message import Message
from operators._operator import Context, Outputs, Source

IPC_SUFFIX = ".arrows"
PARQUET_SUFFIX = ".parquet"
#: Schema metadata keys: the format version and the Recorder's ports (JSON list).
META_FORMAT = b"edgeray.recording"
META_PORTS = b"edgeray.ports"
FORMAT_VERSION = b"1"
PORT_COLUMN = "port"
#: The port a recording without a ``port`` column (e.g. ParquetSink files) replays on.
DEFAULT_PORT = "out"


class Recorder(FileSink):
    """Records every message it receives, with its input port, to Arrow IPC or Parquet.

    Inputs:
      ``in`` by default; ``ports`` declares others (one per recorded stream,
      named after the output port it records, e.g. ``("camera", "lidar")``).
      Any message; one row per message.
    Outputs: none.
    Parameters:
      ``directory``: where the files go (created in ``setup``, on the node where
      the sink runs).
      ``ports`` (keyword-only): the input port names; stored in the files, so
      ``Replay`` declares the same outputs.
      ``batch_rows`` (keyword-only): messages buffered before a batch is written;
      ``flush()`` (graceful stop, ``snapshot``, ``teardown``) writes the rest.
      ``format`` (keyword-only): ``"ipc"`` (default): one Arrow IPC stream file
      per replica, ``<operator>-<replica>-<segment>.arrows``, appended batch by
      batch and flushed to the OS after each; ``"parquet"``: one Parquet file
      per batch (``<operator>-<replica>-<index>.parquet``, written under a
      hidden name and renamed). ``operators.parquet_sink.ParquetSink`` writes
      Parquet too, but drops images by default and keeps no port.

    An IPC stream has one schema. Each batch is fitted to the file's schema
    (fields it lacks are null); a batch that brings a new payload field or a
    different type starts a new segment file whose schema is the union, so a
    replica's recording is one file unless its payloads change shape (e.g. a
    first batch of camera frames only, then lidar scans too: two files).
    A file cut short by a crash loses at most the batch being written.
    """

    what = "recording directory"
    inputs = ("in",)

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        ports: Sequence[str] = ("in",),
        batch_rows: int = 64,
        format: Literal["ipc", "parquet"] = "ipc",
    ) -> None:
        if batch_rows < 1:
            raise OperatorError(f"batch_rows={batch_rows}; use 1 or more")
        if format not in ("ipc", "parquet"):
            raise OperatorError(f"format={format!r}; use 'ipc' (Arrow IPC stream) or 'parquet'")
        if not ports or len(set(ports)) != len(ports):
            raise OperatorError(f"ports={tuple(ports)!r}; name one or more distinct input ports")
        self.inputs = tuple(ports)
        self.format = format
        self._init_files(directory, batch_rows=batch_rows)
        self._schema: pa.Schema | None = None
        self._file: Any = None
        self._writer: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # An open file cannot be pickled; a copy starts a new segment.
        return {**self.__dict__, "_file": None, "_writer": None, "_schema": None}

    def _suffix(self) -> str:
        return PARQUET_SUFFIX if self.format == "parquet" else IPC_SUFFIX

    def process(self, port: str, message: Message) -> Outputs:
        self._add((port, message))
        return ()

    def teardown(self) -> None:
        super().teardown()
        self._close()

    # -- internals ----------------------------------------------------------------------------
    def _metadata(self) -> dict[bytes, bytes]:
        return {META_FORMAT: FORMAT_VERSION, META_PORTS: json.dumps(list(self.inputs)).encode()}

    def _write_ipc(self, table: pa.Table) -> None:
        fitted = None if self._writer is None else _fit(table, self._schema)
        if fitted is None:
            self._close()
            self._schema = _union(self._schema, table.schema).with_metadata(self._metadata())
            self._open_segment()
            fitted = _fit(table, self._schema)
        self._writer.write_table(fitted)
        self._file.flush()

    def _write(self, batch: list[tuple[str, Message]]) -> None:
        table = messages_to_table(m for _, m in batch)
        table = table.add_column(0, PORT_COLUMN, pa.array([p for p, _ in batch], pa.string()))
        if self.format == "parquet":
            path = self._next_file()
            table = table.replace_schema_metadata(self._metadata())
            write_parquet_atomically(table, path, compression="zstd")
            self.files.append(str(path))
        else:
            self._write_ipc(table)

    def _open_segment(self) -> None:
        while True:
            path = self._next_file()
            try:
                self._file = open(path, "xb")  # noqa: SIM115 (closed in _close)
                break
            except FileExistsError:
                continue  # another instance of this replica wrote it: never overwrite
        self._writer = pa.ipc.new_stream(self._file, self._schema)
        self.files.append(str(path))

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._file.close()
        self._writer = self._file = None


class Replay(Source):
    """Replays a recording: the recorded messages, on the ports they were recorded from.

    Inputs: none.
    Outputs: the recording's ports (the ``Recorder``'s inputs, read from the files'
    metadata when the Replay is built), e.g. ``camera`` and ``lidar``; ``out`` for
    files without a port column (a ``ParquetSink`` directory).
    Each message keeps its recorded ``source``, ``seq``, ``part``, ``event_ts``,
    payload, QoS, lineage and truth, so its key is the original's; the runtime
    re-stamps ``ingest_ts`` (and ``meta.producer``) as it does for any source.
    Parameters:
      ``path``: a recording directory (every ``.arrows`` and ``.parquet`` file in
      it, in name order) or one file.
      ``ports`` (keyword-only): the output ports (``None``: read from the recording,
      which must then be readable where the pipeline is built).
      ``pace`` (keyword-only): ``"fast"``: each poll emits the next event time's
      messages (one step), so the replay runs as fast as the pipeline polls it
      (declare no rate, or any rate); ``"recorded"``: the recorded rate. Give the
      source a poll rate in the pipeline (``rate_hz``: the timing resolution, e.g.
      100); the first poll's ``now`` anchors the first message's event time, and
      each poll emits every message whose event time, measured from the first
      message's, is due by ``(now - first poll's now) * speed``. ``now`` is the
      wall clock the runtime polls on, in wall-time and event-time pipelines
      alike, so recorded pace works in both (ticks and deadlines downstream
      follow the replayed event times in an event-time pipeline). Nothing sleeps:
      a poll with nothing due returns no messages. Under a ``FakeClock`` the
      simulated emission times are exact to the poll period.
      ``speed`` (keyword-only): recorded-rate multiplier (2.0: twice as fast).

    Messages are replayed in event-time order (recorded order among equal event
    times). The files are memory-mapped in ``setup``, which raises an
    ``OperatorError`` naming the file when one is truncated or corrupt;
    messages are decoded one at a time as they are emitted. ``snapshot()`` is the
    position and the pacing anchor.
    """

    outputs = (DEFAULT_PORT,)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        ports: Sequence[str] | None = None,
        pace: Literal["fast", "recorded"] = "fast",
        speed: float = 1.0,
    ) -> None:
        if pace not in ("fast", "recorded"):
            raise OperatorError(f"pace={pace!r}; use 'fast' or 'recorded'")
        if not speed > 0:
            raise OperatorError(f"speed={speed}; use a positive multiplier of the recorded rate")
        self.path = os.fspath(path)
        self.pace = pace
        self.speed = speed
        self.outputs = tuple(ports) if ports is not None else recorded_ports(self.path)
        self.position = 0  # index in event-time order of the next message
        self.start_now: int | None = None  # the first poll's now (recorded pace)
        self.start_event: int | None = None  # the first message's event time
        self._tables: list[pa.Table] = []
        self._order = np.zeros((0, 3), np.int64)  # rows of (event_ts, file, row), sorted
        self._ready = False

    def __getstate__(self) -> dict[str, Any]:
        # Memory-mapped tables stay behind; a copy maps the files again in its setup().
        empty = np.zeros((0, 3), np.int64)
        return {**self.__dict__, "_tables": [], "_order": empty, "_ready": False}

    def setup(self, ctx: Context) -> None:
        files = recording_files(self.path)
        self._tables = [_read(f) for f in files]
        rows = []
        for i, (file, table) in enumerate(zip(files, self._tables, strict=True)):
            ports = _ports_of(table)
            unknown = sorted(set(ports) - set(self.outputs))
            if unknown:
                raise OperatorError(
                    f"recording file {file!r} holds messages on ports {unknown} that this Replay "
                    f"does not declare (outputs: {', '.join(self.outputs)}); pass "
                    f"ports={tuple(sorted(set(ports) | set(self.outputs)))!r}",
                    operator=ctx.operator,
                )
            events = table.column("event_ts").to_numpy(zero_copy_only=False)
            rows.append(np.column_stack([events, np.full(len(events), i), np.arange(len(events))]))
        order = np.concatenate(rows) if rows else np.zeros((0, 3), np.int64)
        self._order = order[np.argsort(order[:, 0], kind="stable")].astype(np.int64)
        self._ready = True

    def snapshot(self) -> dict[str, int | None]:
        return {"position": self.position, "start_now": self.start_now,
                "start_event": self.start_event}  # fmt: skip

    def restore(self, state: dict[str, int | None]) -> None:
        self.position = int(state["position"])
        self.start_now = state["start_now"]
        self.start_event = state["start_event"]

    def poll(self, now: int) -> Outputs | None:
        if not self._ready:
            raise OperatorError("poll() before setup(ctx): the recording is read in setup")
        if self.position >= len(self._order):
            return None
        events = self._order[:, 0]
        if self.pace == "fast":
            due = int(events[self.position])
        else:
            if self.start_now is None:
                self.start_now, self.start_event = now, int(events[0])
            due = self.start_event + int((now - self.start_now) * self.speed)
        end = int(np.searchsorted(events, due, side="right"))
        out = [self._message(i) for i in range(self.position, max(end, self.position))]
        self.position = max(end, self.position)
        return out

    def _message(self, index: int) -> tuple[str, Message]:
        _, file, row = (int(v) for v in self._order[index])
        table = self._tables[file]
        [message] = table_to_messages(table.slice(row, 1))
        port = table.column(PORT_COLUMN)[row].as_py() if PORT_COLUMN in table.column_names else None
        return (port or DEFAULT_PORT), message


# -- reading --------------------------------------------------------------------------------------
def recording_files(path: str | os.PathLike[str]) -> list[str]:
    """The files of a recording (a directory, in name order, or one file)."""
    p = pathlib.Path(path)
    if p.is_file():
        return [str(p)]
    if p.is_dir():
        return [
            str(f)
            for f in sorted(p.iterdir())
            if f.suffix in (IPC_SUFFIX, PARQUET_SUFFIX) and not f.name.startswith(".")
        ]
    raise OperatorError(
        f"no recording at {os.fspath(path)!r} (working directory {os.getcwd()!r}); pass the "
        "directory a Recorder wrote to, or one of its .arrows / .parquet files"
    )


def recorded_ports(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """The ports a recording was made on (from the files' metadata); ``("out",)`` when none."""
    files = recording_files(path)
    if not files:
        raise OperatorError(
            f"recording directory {os.fspath(path)!r} holds no .arrows or .parquet files; "
            "record into it first, or pass ports=(...) to declare the outputs"
        )
    ports: dict[str, None] = {}
    for file in files:
        metadata = _schema(file).metadata or {}
        for port in json.loads(metadata.get(META_PORTS, b"[]")):
            ports[port] = None
    return tuple(ports) or (DEFAULT_PORT,)


def read_recording(path: str | os.PathLike[str]) -> list[tuple[str, Message]]:
    """Every ``(port, message)`` of a recording, file by file, in recorded order."""
    out = []
    for file in recording_files(path):
        table = _read(file)
        ports = _ports_of(table)
        out += list(zip(ports, table_to_messages(table), strict=True))
    return out


def _ports_of(table: pa.Table) -> list[str]:
    if PORT_COLUMN not in table.column_names:
        return [DEFAULT_PORT] * table.num_rows
    return [p or DEFAULT_PORT for p in table.column(PORT_COLUMN).to_pylist()]


def _schema(file: str) -> pa.Schema:
    try:
        if file.endswith(PARQUET_SUFFIX):
            return pq.read_schema(file)
        with pa.ipc.open_stream(pa.memory_map(file)) as reader:
            return reader.schema
    except (pa.ArrowInvalid, OSError) as err:
        raise _corrupt(file, err) from err


def _read(file: str) -> pa.Table:
    try:
        if file.endswith(PARQUET_SUFFIX):
            return pq.read_table(file, memory_map=True)
        with pa.ipc.open_stream(pa.memory_map(file)) as reader:
            return reader.read_all()
    except (pa.ArrowInvalid, OSError) as err:
        raise _corrupt(file, err) from err


def _corrupt(file: str, err: Exception) -> OperatorError:
    kind = "Parquet" if file.endswith(PARQUET_SUFFIX) else "Arrow IPC stream"
    return OperatorError(
        f"recording file {file!r} is truncated or corrupt: it is not a readable {kind} ({err}); "
        "replay the other files by moving it out of the directory, or record again"
    )


# -- fitting batches to one stream schema ---------------------------------------------------
def _fit(table: pa.Table, schema: pa.Schema | None) -> pa.Table | None:
    """``table`` in ``schema`` (missing fields null), or ``None`` when it does not fit."""
    if schema is None or not set(table.column_names) <= set(schema.names):
        return None
    columns = []
    for f in schema:
        if f.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, f.type))
            continue
        column = table.column(f.name)
        if column.type != f.type:
            if column.null_count != len(column):
                return None
            column = pa.nulls(table.num_rows, f.type)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def _union(old: pa.Schema | None, new: pa.Schema) -> pa.Schema:
    """``old``'s fields (new types where ``new`` has a real one) then ``new``'s new fields."""
    if old is None:
        return new
    fields = []
    for f in old:
        if f.name in new.names:
            g = new.field(f.name)
            fields.append(f if pa.types.is_null(g.type) else g)
        else:
            fields.append(f)
    fields += [g for g in new if g.name not in old.names]
    return pa.schema(fields)


def write_recording(
    directory: str | os.PathLike[str],
    items: Iterable[tuple[str, Message]],
    *,
    ports: Sequence[str] | None = None,
    format: Literal["ipc", "parquet"] = "ipc",
) -> list[str]:
    """Record ``(port, message)`` pairs without a pipeline (e.g. to build test recordings)."""
    items = list(items)
    ports = tuple(ports or dict.fromkeys(p for p, _ in items)) or (DEFAULT_PORT,)
    recorder = Recorder(directory, ports=ports, format=format)
    recorder.setup(Context(operator="recording", replica=0))
    for port, message in items:
        recorder.process(port, message)
    recorder.teardown()
    return recorder.files
