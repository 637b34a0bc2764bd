"""``ParquetSink`` records messages as Parquet files in a directory; ``read_parquet_dir`` reads.

>>> import tempfile
>>> import numpy as np
>>> from operators import Context, Message
>>> out = tempfile.mkdtemp()
>>> sink = ParquetSink(out, rows_per_file=2)
>>> sink.setup(Context(operator="store", replica=0))
>>> image = np.zeros((4, 4, 3), np.uint8)
>>> for i in range(3):
...     _ = sink.process("in", Message("cam", i, i, {"n": i, "image": image}))
>>> sink.teardown()                      # flushes the last, partial file
>>> sorted(p.name for p in pathlib.Path(out).iterdir())
['store-0-000000.parquet', 'store-0-000001.parquet']
>>> [(m.seq, dict(m.payload)) for m in read_parquet_dir(out)]   # "image" was dropped
[(0, {'n': 0}), (1, {'n': 1}), (2, {'n': 2})]
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence
from dataclasses import replace

import pyarrow.parquet as pq

from operators._arrow import messages_to_table, table_to_messages
from operators._errors import OperatorError
from operators._files import next_free_index, output_directory, replica_prefix
from operators._message import Message
from operators._operator import Context, Outputs, Sink

SUFFIX = ".parquet"


class ParquetSink(Sink):
    """Buffers messages and writes them as Parquet files into a directory.

    Inputs:
      ``in``: any message; one row per message (``operators.messages_to_table``).
    Outputs: none.
    Parameters:
      ``directory``: where the files go (created in ``setup``, on the node
      where the sink runs).
      ``rows_per_file`` (keyword-only): a file is written whenever this many
      messages are buffered; ``flush()`` (graceful stop, ``teardown``) writes
      the rest.
      ``drop_fields`` (keyword-only): payload fields left out of the files
      (default ``("image",)``: keep big arrays out).
      ``compression`` (keyword-only): the Parquet codec.

    Files are named ``<operator>-<replica>-<index>.parquet`` from the ``Context``,
    so replicas of one sink never collide, and a restarted replica continues
    after the highest index already in the directory. A file appears
    atomically (written under a hidden name, then renamed). ``snapshot()``
    flushes first, so a replacement replica starts with nothing pending.
    """

    inputs = ("in",)

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        rows_per_file: int = 1000,
        drop_fields: Sequence[str] = ("image",),
        compression: str = "zstd",
    ) -> None:
        if rows_per_file < 1:
            raise OperatorError(f"rows_per_file={rows_per_file}; use 1 or more")
        self.directory = os.fspath(directory)
        self.rows_per_file = rows_per_file
        self.drop_fields = tuple(drop_fields)
        self.compression = compression
        self.prefix = "sink-0"
        self.next_index = 0
        self.rows_written = 0
        self.files: list[str] = []
        self._buffer: list[Message] = []
        self._ready = False

    def setup(self, ctx: Context) -> None:
        self.prefix = replica_prefix(ctx.operator, ctx.replica)
        path = output_directory(self.directory, operator=ctx.operator, what="output directory")
        self.next_index = max(self.next_index, next_free_index(path, self.prefix, SUFFIX))
        self._ready = True

    def process(self, port: str, message: Message) -> Outputs:
        if self.drop_fields and any(f in message.payload for f in self.drop_fields):
            kept = {k: v for k, v in message.payload.items() if k not in self.drop_fields}
            message = replace(message, payload=kept)
        self._buffer.append(message)
        if len(self._buffer) >= self.rows_per_file:
            self.flush()
        return ()

    def flush(self) -> None:
        """Write everything buffered as one file (nothing when the buffer is empty)."""
        if not self._buffer:
            return
        if not self._ready:
            raise OperatorError(
                f"flush() before setup(ctx): {len(self._buffer)} messages are buffered but the "
                "output directory is not set up; call setup(ctx) first"
            )
        table = messages_to_table(self._buffer)
        name = f"{self.prefix}-{self.next_index:06d}{SUFFIX}"
        final = pathlib.Path(self.directory) / name
        partial = final.with_name(f".{name}.partial")
        pq.write_table(table, partial, compression=self.compression)
        os.replace(partial, final)
        self.next_index += 1
        self.rows_written += len(self._buffer)
        self.files.append(str(final))
        self._buffer = []

    def snapshot(self) -> dict[str, int]:
        self.flush()
        return {"next_index": self.next_index, "rows_written": self.rows_written}

    def restore(self, state: dict[str, int]) -> None:
        self.next_index = max(self.next_index, int(state["next_index"]))
        self.rows_written = int(state["rows_written"])

    def teardown(self) -> None:
        self.flush()


def read_parquet_dir(path: str | os.PathLike[str]) -> list[Message]:
    """The messages in a directory of Parquet files (or one file), file by file, in name order."""
    path = pathlib.Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == SUFFIX and p.name[0] != ".")
    else:
        raise FileNotFoundError(
            f"no Parquet directory or file at {str(path)!r}; pass the directory a ParquetSink "
            "wrote to"
        )
    return [m for f in files for m in table_to_messages(pq.read_table(f))]
